//! Placement constraints (`run.placement.constraints`) checked against an offer's
//! hostname and agent attributes. Pure.

use mezzo_sdk::matching::offer_attribute;
use mezzo_sdk::v1;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::model::ConstraintSpec;

/// A constraint operator, as Metronome names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operator {
    /// The attribute equals the value.
    Is,
    /// Same as IS (Metronome's older name).
    Eq,
    /// The attribute fully matches the regular expression.
    Like,
    /// The attribute does not fully match the regular expression (a missing attribute
    /// satisfies it).
    Unlike,
}

/// Checks that `value` is usable with `op` (a valid regular expression for LIKE/UNLIKE).
pub fn check_value(op: Operator, value: &str) -> Result<(), String> {
    match op {
        Operator::Like | Operator::Unlike => full_match(value)
            .map(|_| ())
            .map_err(|e| format!("invalid regular expression: {e}")),
        Operator::Is | Operator::Eq => Ok(()),
    }
}

fn full_match(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

/// The offer's value for a constraint attribute: its hostname for `hostname` /
/// `@hostname`, else the agent attribute of that name.
fn attribute_of(offer: &v1::Offer, attribute: &str) -> Option<String> {
    match attribute {
        "hostname" | "@hostname" => Some(offer.hostname.clone()),
        name => offer_attribute(offer, name.trim_start_matches('@')),
    }
}

/// True when `offer` satisfies every constraint.
pub fn satisfied(constraints: &[ConstraintSpec], offer: &v1::Offer) -> bool {
    constraints.iter().all(|c| {
        let value = c.value.as_deref().unwrap_or_default();
        let actual = attribute_of(offer, &c.attribute);
        match (c.operator, actual) {
            (Operator::Is | Operator::Eq, Some(a)) => a == value,
            (Operator::Like, Some(a)) => full_match(value).is_ok_and(|r| r.is_match(&a)),
            (Operator::Unlike, Some(a)) => full_match(value).is_ok_and(|r| !r.is_match(&a)),
            (Operator::Unlike, None) => true,
            (_, None) => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mezzo_sdk::v1::{Attribute, ValueType};

    fn offer() -> v1::Offer {
        v1::Offer {
            hostname: "node-1.example".into(),
            attributes: vec![Attribute {
                name: "rack".into(),
                r#type: ValueType::Text as i32,
                text: "r1".into(),
                scalar: 0.0,
            }],
            ..Default::default()
        }
    }

    fn c(attribute: &str, operator: Operator, value: &str) -> ConstraintSpec {
        ConstraintSpec {
            attribute: attribute.into(),
            operator,
            value: Some(value.into()),
        }
    }

    #[test]
    fn operators() {
        let o = offer();
        assert!(satisfied(
            &[c("hostname", Operator::Is, "node-1.example")],
            &o
        ));
        assert!(!satisfied(&[c("hostname", Operator::Eq, "node-2")], &o));
        assert!(satisfied(
            &[c("hostname", Operator::Like, "node-[0-9]+\\..*")],
            &o
        ));
        assert!(
            !satisfied(&[c("hostname", Operator::Like, "node")], &o),
            "full match only"
        );
        assert!(satisfied(&[c("hostname", Operator::Unlike, "other.*")], &o));
        assert!(satisfied(&[c("rack", Operator::Is, "r1")], &o));
        assert!(
            !satisfied(&[c("zone", Operator::Is, "a")], &o),
            "missing attribute"
        );
        assert!(
            satisfied(&[c("zone", Operator::Unlike, "a")], &o),
            "missing attribute"
        );
        assert!(satisfied(&[], &o));
        assert!(check_value(Operator::Like, "(").is_err());
    }
}
