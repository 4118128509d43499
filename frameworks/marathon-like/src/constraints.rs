//! Marathon's JSON shape of placement constraints, `[field, OPERATOR]` or
//! `[field, OPERATOR, value]`, over the SDK's one constraint engine
//! ([`mezzo_sdk::constraints`], which documents the operators).

use serde_json::Value;

pub use mezzo_sdk::constraints::{admits_all, Constraint, Operator, Placement};

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
    match text.as_slice() {
        [field, op] => Constraint::new(field, op, None),
        [field, op, value] => Constraint::new(field, op, Some(value)),
        _ => return Err("Each constraint must have either 2 or 3 fields".into()),
    }
    .map_err(|e| e.to_string())
}

/// The parsed constraints of an app; invalid ones (already rejected by validation)
/// are skipped.
pub fn parse_all(raw: &[Vec<Value>]) -> Vec<Constraint> {
    raw.iter().filter_map(|c| parse(c).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_arrays_parse_with_numbers_as_values() {
        let c = parse(json!(["hostname", "MAX_PER", 2]).as_array().unwrap()).unwrap();
        assert!(matches!(c.op, Operator::MaxPer(2)));
        assert!(c.admits(&Placement::new("a"), &[Placement::new("a")]));
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
            json!(["hostname", true]),
        ] {
            assert!(parse(bad.as_array().unwrap()).is_err(), "{bad}");
        }
        assert_eq!(
            parse(json!(["hostname"]).as_array().unwrap()).unwrap_err(),
            "Each constraint must have either 2 or 3 fields"
        );
    }
}
