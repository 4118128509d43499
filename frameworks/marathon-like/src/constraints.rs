//! Marathon placement constraints, evaluated purely against an offer's hostname and
//! attributes and the places the app's tasks already run.
//!
//! Operators (as Marathon's `docs/constraints.md`): `UNIQUE`, `CLUSTER`, `GROUP_BY`,
//! `LIKE`, `UNLIKE`, `MAX_PER`, `IS`. The field is `hostname` (or `@hostname`) or an
//! agent attribute (`@region` / `@zone` read the `region` / `zone` attributes). An
//! offer without the attribute satisfies only `UNLIKE`.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::Value;

/// A parsed constraint.
#[derive(Debug, Clone)]
pub struct Constraint {
    /// Field: `hostname` or an attribute name.
    pub field: String,
    /// The operator and its argument.
    pub op: Operator,
}

/// A constraint operator.
#[derive(Debug, Clone)]
pub enum Operator {
    /// Every task on a different value.
    Unique,
    /// Every task on this value (or, without one, on the value of the first task).
    Cluster(Option<String>),
    /// Spread evenly across values (optionally over at least this many values).
    GroupBy(Option<usize>),
    /// The value fully matches the regex.
    Like(Regex),
    /// The value does not fully match the regex (or is missing).
    Unlike(Regex),
    /// At most this many tasks per value.
    MaxPer(usize),
    /// The value equals this text.
    Is(String),
}

/// Where a task runs (or would run): hostname and attributes as text.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Placement {
    /// Agent hostname.
    pub hostname: String,
    /// Agent attributes as text.
    pub attributes: BTreeMap<String, String>,
}

impl Placement {
    /// The value of `field` at this place.
    pub fn value(&self, field: &str) -> Option<&str> {
        match field {
            "hostname" | "@hostname" => Some(self.hostname.as_str()),
            f => self
                .attributes
                .get(f.strip_prefix('@').unwrap_or(f))
                .map(String::as_str),
        }
    }
}

fn full_regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| format!("'{pattern}' is not a valid regular expression: {e}"))
}

impl Constraint {
    /// Parses `[field, OPERATOR]` or `[field, OPERATOR, value]` (strings; numbers are
    /// accepted as values). The error is Marathon-style text for a 422 detail.
    pub fn parse(parts: &[Value]) -> Result<Constraint, String> {
        let text: Vec<String> = parts
            .iter()
            .map(|p| match p {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err("Each constraint element must be a string".to_string()),
            })
            .collect::<Result<_, _>>()?;
        if !(2..=3).contains(&text.len()) {
            return Err("Each constraint must have either 2 or 3 fields".into());
        }
        let field = text[0].clone();
        if field.is_empty() {
            return Err("Missing field for constraint declaration".into());
        }
        let value = text.get(2).cloned();
        let need = |v: &Option<String>, op: &str| {
            v.clone()
                .ok_or_else(|| format!("Value is required for operator {op}"))
        };
        let int = |v: &Option<String>, op: &str| -> Result<usize, String> {
            need(v, op)?
                .parse::<usize>()
                .map_err(|_| format!("Value was not a valid integer for operator {op}"))
        };
        let op = match text[1].to_ascii_uppercase().as_str() {
            "UNIQUE" => {
                if value.is_some() {
                    return Err("Value specified but not used".into());
                }
                Operator::Unique
            }
            "CLUSTER" => Operator::Cluster(value.filter(|v| !v.is_empty())),
            "GROUP_BY" => match value {
                None => Operator::GroupBy(None),
                Some(_) => Operator::GroupBy(Some(int(&value, "GROUP_BY")?)),
            },
            "LIKE" => Operator::Like(full_regex(&need(&value, "LIKE")?)?),
            "UNLIKE" => Operator::Unlike(full_regex(&need(&value, "UNLIKE")?)?),
            "MAX_PER" => Operator::MaxPer(int(&value, "MAX_PER")?),
            "IS" => Operator::Is(need(&value, "IS")?),
            other => {
                return Err(format!(
                    "Constraint operator '{other}' is not one of UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE, MAX_PER, IS"
                ))
            }
        };
        Ok(Constraint { field, op })
    }

    /// True when a new task of the app may run at `offer`, given where the app's
    /// other tasks run (`placed`).
    pub fn admits(&self, offer: &Placement, placed: &[Placement]) -> bool {
        let value = offer.value(&self.field);
        let Some(value) = value else {
            return matches!(self.op, Operator::Unlike(_));
        };
        let values = || placed.iter().filter_map(|p| p.value(&self.field));
        match &self.op {
            Operator::Unique => values().all(|v| v != value),
            Operator::Cluster(Some(want)) => value == want,
            Operator::Cluster(None) => values().next().is_none_or(|first| first == value),
            Operator::GroupBy(min_groups) => {
                let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
                for v in values() {
                    *counts.entry(v).or_default() += 1;
                }
                let Some(&here) = counts.get(value) else {
                    return true; // a value with no task yet is always the emptiest
                };
                let known_min = counts.values().copied().min().unwrap_or(0);
                let min = if min_groups.is_some_and(|n| counts.len() < n) {
                    0
                } else {
                    known_min
                };
                here <= min
            }
            Operator::Like(re) => re.is_match(value),
            Operator::Unlike(re) => !re.is_match(value),
            Operator::MaxPer(n) => values().filter(|v| *v == value).count() < *n,
            Operator::Is(want) => value == want,
        }
    }
}

/// The parsed constraints of an app; invalid ones (already rejected by validation)
/// are skipped.
pub fn parse_all(raw: &[Vec<Value>]) -> Vec<Constraint> {
    raw.iter()
        .filter_map(|c| Constraint::parse(c).ok())
        .collect()
}

/// True when every constraint admits the offer.
pub fn admits_all(constraints: &[Constraint], offer: &Placement, placed: &[Placement]) -> bool {
    constraints.iter().all(|c| c.admits(offer, placed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn c(v: Value) -> Constraint {
        Constraint::parse(v.as_array().unwrap()).unwrap()
    }

    fn host(h: &str) -> Placement {
        Placement {
            hostname: h.into(),
            attributes: BTreeMap::new(),
        }
    }

    fn rack(h: &str, r: &str) -> Placement {
        Placement {
            hostname: h.into(),
            attributes: [("rack".to_string(), r.to_string())].into(),
        }
    }

    #[test]
    fn unique_hostname() {
        let u = c(json!(["hostname", "UNIQUE"]));
        assert!(u.admits(&host("a"), &[]));
        assert!(u.admits(&host("b"), &[host("a")]));
        assert!(!u.admits(&host("a"), &[host("a")]));
        assert!(rack("a", "r1").value("zone").is_none());
        let by_rack = c(json!(["rack", "UNIQUE"]));
        assert!(!by_rack.admits(&rack("b", "r1"), &[rack("a", "r1")]));
        assert!(!by_rack.admits(&host("b"), &[]), "missing attribute");
    }

    #[test]
    fn cluster_with_and_without_value() {
        let fixed = c(json!(["rack", "CLUSTER", "r1"]));
        assert!(fixed.admits(&rack("a", "r1"), &[]));
        assert!(!fixed.admits(&rack("a", "r2"), &[]));
        let first = c(json!(["hostname", "CLUSTER"]));
        assert!(first.admits(&host("a"), &[]));
        assert!(first.admits(&host("a"), &[host("a")]));
        assert!(!first.admits(&host("b"), &[host("a")]));
    }

    #[test]
    fn group_by_spreads_evenly() {
        let g = c(json!(["rack", "GROUP_BY"]));
        let placed = [rack("a", "r1"), rack("b", "r1"), rack("c", "r2")];
        assert!(!g.admits(&rack("d", "r1"), &placed), "r1 is fuller");
        assert!(g.admits(&rack("d", "r2"), &placed));
        assert!(g.admits(&rack("d", "r3"), &placed), "new value");
        let g2 = c(json!(["rack", "GROUP_BY", "2"]));
        assert!(
            !g2.admits(&rack("b", "r1"), &[rack("a", "r1")]),
            "r2 not seen yet"
        );
    }

    #[test]
    fn like_and_unlike_full_match() {
        let like = c(json!(["rack", "LIKE", "r[12]"]));
        assert!(like.admits(&rack("a", "r1"), &[]));
        assert!(!like.admits(&rack("a", "r10"), &[]), "full match only");
        assert!(!like.admits(&host("a"), &[]), "missing attribute");
        let unlike = c(json!(["hostname", "UNLIKE", "bad.*"]));
        assert!(unlike.admits(&host("good"), &[]));
        assert!(!unlike.admits(&host("bad1"), &[]));
        let unlike_attr = c(json!(["rack", "UNLIKE", "r1"]));
        assert!(
            unlike_attr.admits(&host("a"), &[]),
            "missing attribute passes"
        );
    }

    #[test]
    fn max_per_counts_tasks_per_value() {
        let m = c(json!(["hostname", "MAX_PER", "2"]));
        assert!(m.admits(&host("a"), &[host("a")]));
        assert!(!m.admits(&host("a"), &[host("a"), host("a")]));
        assert!(m.admits(&host("b"), &[host("a"), host("a")]));
    }

    #[test]
    fn is_matches_exact_text() {
        let i = c(json!(["rack", "IS", "r1"]));
        assert!(i.admits(&rack("a", "r1"), &[]));
        assert!(!i.admits(&rack("a", "r11"), &[]));
    }

    #[test]
    fn parse_errors() {
        for bad in [
            json!(["hostname"]),
            json!(["hostname", "BOGUS"]),
            json!(["hostname", "UNIQUE", "x"]),
            json!(["hostname", "LIKE"]),
            json!(["hostname", "LIKE", "("]),
            json!(["hostname", "MAX_PER", "x"]),
            json!(["hostname", "IS"]),
            json!(["a", "b", "c", "d"]),
        ] {
            assert!(Constraint::parse(bad.as_array().unwrap()).is_err(), "{bad}");
        }
    }
}
