//! Reading requests: query strings (`?embed=`, flags) and JSON bodies. Parsing is the
//! HTTP edge's job; what a parsed definition means is checked by the core.

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::ApiError;
use crate::model::Violation;

/// Which extras `?embed=` asked for (repeatable or comma-separated; unknown ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Embed {
    /// `activeRuns`.
    pub active_runs: bool,
    /// `schedules`.
    pub schedules: bool,
    /// `history`.
    pub history: bool,
    /// `historySummary`.
    pub history_summary: bool,
}

/// Minimal percent-decoding for query values (`%2C`, `+`).
pub(crate) fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every value of `name` in a raw query string, comma-separated values split.
pub(crate) fn query_values(query: Option<&str>, name: &str) -> Vec<String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k) == name).then(|| decode(v))
        })
        .flat_map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// `?embed=` of a request.
pub(crate) fn embed(query: Option<&str>) -> Embed {
    let mut e = Embed::default();
    for v in query_values(query, "embed") {
        match v.as_str() {
            "activeRuns" => e.active_runs = true,
            "schedules" => e.schedules = true,
            "history" => e.history = true,
            "historySummary" => e.history_summary = true,
            _ => {}
        }
    }
    e
}

/// True when `name=true` (or `1`) is in the query.
pub(crate) fn flag(query: Option<&str>, name: &str) -> bool {
    query_values(query, name)
        .iter()
        .any(|v| v == "true" || v == "1")
}

/// Fields Mezzo cannot honour: rejected rather than silently ignored.
const UNSUPPORTED_RUN_FIELDS: [&str; 5] = ["docker", "ucr", "artifacts", "secrets", "volumes"];

/// Parses a JSON body: 400 when it is not JSON, 422 when it does not fit `T` or names
/// a run field Mezzo does not support.
pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(400, "Invalid JSON")
            .with("details", json!([{"path": "/", "errors": [e.to_string()]}]))
    })?;
    if !value.is_object() {
        return Err(ApiError::invalid("/", "expected a JSON object"));
    }
    if let Some(run) = value.get("run").and_then(Value::as_object) {
        let bad: Vec<Violation> = UNSUPPORTED_RUN_FIELDS
            .iter()
            .filter(|f| run.get(**f).is_some_and(|v| !v.is_null()))
            .map(|f| Violation {
                path: format!("/run/{f}"),
                errors: vec!["is not supported by Mezzo".into()],
            })
            .collect();
        if !bad.is_empty() {
            return Err(ApiError::violations(bad));
        }
    }
    serde_json::from_value(value).map_err(|e| ApiError::invalid("/", &e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{JobSpec, ScheduleSpec};

    #[test]
    fn query_parsing() {
        let e = embed(Some("embed=activeRuns&embed=history%2Cschedules&x=1"));
        assert_eq!(
            e,
            Embed {
                active_runs: true,
                schedules: true,
                history: true,
                history_summary: false
            }
        );
        assert!(flag(Some("stopCurrentJobRuns=true"), "stopCurrentJobRuns"));
        assert!(!flag(None, "stopCurrentJobRuns"));
        assert_eq!(decode("a%2"), "a%2");
    }

    #[test]
    fn body_errors() {
        let job = |b: &[u8]| parse::<JobSpec>(b);
        assert_eq!(job(b"{not json").unwrap_err().status, 400);
        assert_eq!(job(b"[]").unwrap_err().status, 422);
        assert_eq!(job(br#"{"id": "a"}"#).unwrap_err().status, 422);
        assert_eq!(
            job(br#"{"id": "a", "run": {"cmd": "x", "cpus": "lots"}}"#)
                .unwrap_err()
                .status,
            422
        );
        let e = job(br#"{"id": "a", "run": {"cmd": "x", "docker": {"image": "i"}}}"#).unwrap_err();
        assert_eq!((e.status, e.details[0].path.as_str()), (422, "/run/docker"));
        assert!(job(br#"{"id": "a", "run": {"cmd": "x"}}"#).is_ok());
        let e =
            parse::<ScheduleSpec>(br#"{"id": "s", "cron": "* * * * *", "concurrencyPolicy": "X"}"#)
                .unwrap_err();
        assert_eq!(e.status, 422);
    }
}
