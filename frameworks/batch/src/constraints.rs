//! Placement constraints (`run.placement.constraints`) checked against an offer's
//! hostname and agent attributes. Pure: a thin adapter from Metronome's
//! `{attribute, operator, value}` shape to the SDK's one engine
//! ([`mezzo_sdk::constraints`]).

use mezzo_sdk::constraints::{Constraint, ConstraintError, Placement};
use mezzo_sdk::v1;
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

impl Operator {
    /// The SDK's name of the operator (EQ is Marathon's IS).
    fn sdk_name(self) -> &'static str {
        match self {
            Operator::Is | Operator::Eq => "IS",
            Operator::Like => "LIKE",
            Operator::Unlike => "UNLIKE",
        }
    }
}

/// The SDK constraint for `attribute op value`; a missing value is the empty text,
/// as Metronome compares it.
fn to_sdk(attribute: &str, op: Operator, value: &str) -> Result<Constraint, ConstraintError> {
    // An empty attribute never matches an offer (it names no attribute); the SDK
    // refuses it, so look it up under a name no agent has instead.
    let field = if attribute.is_empty() { "@" } else { attribute };
    Constraint::new(field, op.sdk_name(), Some(value))
}

/// Checks that `value` is usable with `op` (a valid regular expression for LIKE/UNLIKE).
pub fn check_value(op: Operator, value: &str) -> Result<(), String> {
    match to_sdk("hostname", op, value) {
        Ok(_) => Ok(()),
        Err(ConstraintError::Regex { source, .. }) => {
            Err(format!("invalid regular expression: {source}"))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// True when `offer` satisfies every constraint.
pub fn satisfied(constraints: &[ConstraintSpec], offer: &v1::Offer) -> bool {
    let place = Placement::of_offer(offer);
    constraints.iter().all(|c| {
        let value = c.value.as_deref().unwrap_or_default();
        // An invalid pattern (refused by validation) admits nothing.
        to_sdk(&c.attribute, c.operator, value).is_ok_and(|k| k.admits(&place, &[]))
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
