//! Placement constraints, the one engine every framework uses: Marathon's seven
//! operators (as Marathon's `docs/constraints.md`) `UNIQUE`, `CLUSTER`, `GROUP_BY`,
//! `LIKE`, `UNLIKE`, `MAX_PER`, `IS`, evaluated purely against an offer's hostname and
//! attributes ([`Placement`]) and the places a group's tasks already run.
//!
//! The field is `hostname` (or `@hostname`) or an agent attribute (`@region` / `@zone`
//! read the `region` / `zone` attributes). An offer without the attribute satisfies
//! only `UNLIKE`. Each framework keeps its own JSON shape (Marathon's
//! `[field, OP, value]` arrays, Metronome's `{attribute, operator, value}`) and builds
//! a [`Constraint`] with [`Constraint::new`].
//!
//! ```
//! use mezzo_sdk::constraints::{Constraint, Placement};
//!
//! let unique = Constraint::new("hostname", "UNIQUE", None).unwrap();
//! let a = Placement::new("a");
//! assert!(unique.admits(&a, &[]));
//! assert!(!unique.admits(&a, &[Placement::new("a")]));
//! ```

use std::collections::BTreeMap;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::matching::offer_attribute;
use crate::v1;

/// The operator names, in Marathon's order (for error messages and docs).
pub const OPERATORS: [&str; 7] = [
    "UNIQUE", "CLUSTER", "GROUP_BY", "LIKE", "UNLIKE", "MAX_PER", "IS",
];

/// Why a constraint is not valid. The texts are Marathon's, fit for a 422 detail.
#[derive(Debug, thiserror::Error)]
pub enum ConstraintError {
    /// The field is empty.
    #[error("Missing field for constraint declaration")]
    MissingField,
    /// The operator needs a value and has none.
    #[error("Value is required for operator {0}")]
    MissingValue(&'static str),
    /// The operator takes no value and has one.
    #[error("Value specified but not used")]
    UnusedValue,
    /// The operator needs a non-negative integer.
    #[error("Value was not a valid integer for operator {0}")]
    NotAnInteger(&'static str),
    /// LIKE / UNLIKE with a pattern that does not compile.
    #[error("'{pattern}' is not a valid regular expression: {source}")]
    Regex {
        /// The pattern as given.
        pattern: String,
        /// What the regex parser said.
        #[source]
        source: regex::Error,
    },
    /// Not one of [`OPERATORS`].
    #[error(
        "Constraint operator '{0}' is not one of UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE, MAX_PER, IS"
    )]
    UnknownOperator(String),
}

/// A constraint operator and its argument.
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

/// A parsed constraint: a field and an operator.
#[derive(Debug, Clone)]
pub struct Constraint {
    /// Field: `hostname` or an attribute name.
    pub field: String,
    /// The operator and its argument.
    pub op: Operator,
}

/// Where a task runs (or would run): hostname and attributes as text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// Agent hostname.
    pub hostname: String,
    /// Agent attributes as text.
    pub attributes: BTreeMap<String, String>,
}

impl Placement {
    /// A place with a hostname and no attributes.
    pub fn new(hostname: impl Into<String>) -> Placement {
        Placement {
            hostname: hostname.into(),
            attributes: BTreeMap::new(),
        }
    }

    /// Where a task launched from `offer` runs: its hostname and its agent's
    /// attributes as text (`level:3` gives `"3"`).
    pub fn of_offer(offer: &v1::Offer) -> Placement {
        Placement {
            hostname: offer.hostname.clone(),
            attributes: offer
                .attributes
                .iter()
                .map(|a| {
                    let text = offer_attribute(offer, &a.name).unwrap_or_default();
                    (a.name.clone(), text)
                })
                .collect(),
        }
    }

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

/// A regex that must match the whole value, as Marathon's LIKE / UNLIKE do.
fn full_regex(pattern: &str) -> Result<Regex, ConstraintError> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|source| ConstraintError::Regex {
        pattern: pattern.to_string(),
        source,
    })
}

impl Constraint {
    /// Builds `field OPERATOR [value]`; the operator name is case-insensitive.
    pub fn new(
        field: &str,
        operator: &str,
        value: Option<&str>,
    ) -> Result<Constraint, ConstraintError> {
        if field.is_empty() {
            return Err(ConstraintError::MissingField);
        }
        let need = |op: &'static str| value.ok_or(ConstraintError::MissingValue(op));
        let int = |op: &'static str| -> Result<usize, ConstraintError> {
            need(op)?
                .parse::<usize>()
                .map_err(|_| ConstraintError::NotAnInteger(op))
        };
        let name = operator.to_ascii_uppercase();
        let op = match name.as_str() {
            "UNIQUE" if value.is_some() => return Err(ConstraintError::UnusedValue),
            "UNIQUE" => Operator::Unique,
            "CLUSTER" => Operator::Cluster(value.filter(|v| !v.is_empty()).map(str::to_string)),
            "GROUP_BY" => match value {
                None => Operator::GroupBy(None),
                Some(_) => Operator::GroupBy(Some(int("GROUP_BY")?)),
            },
            "LIKE" => Operator::Like(full_regex(need("LIKE")?)?),
            "UNLIKE" => Operator::Unlike(full_regex(need("UNLIKE")?)?),
            "MAX_PER" => Operator::MaxPer(int("MAX_PER")?),
            "IS" => Operator::Is(need("IS")?.to_string()),
            _ => return Err(ConstraintError::UnknownOperator(name)),
        };
        Ok(Constraint {
            field: field.to_string(),
            op,
        })
    }

    /// True when a new task may run at `offer`, given where the group's other tasks
    /// run (`placed`; empty for operators that only look at the offer).
    pub fn admits(&self, offer: &Placement, placed: &[Placement]) -> bool {
        let Some(value) = offer.value(&self.field) else {
            return matches!(self.op, Operator::Unlike(_));
        };
        let values = || placed.iter().filter_map(|p| p.value(&self.field));
        match &self.op {
            Operator::Unique => values().all(|v| v != value),
            Operator::Cluster(Some(want)) => value == want,
            Operator::Cluster(None) => values().next().is_none_or(|first| first == value),
            Operator::GroupBy(min_groups) => group_by_admits(value, values(), *min_groups),
            Operator::Like(re) => re.is_match(value),
            Operator::Unlike(re) => !re.is_match(value),
            Operator::MaxPer(n) => values().filter(|v| *v == value).count() < *n,
            Operator::Is(want) => value == want,
        }
    }
}

/// GROUP_BY: the offer's value must hold no more tasks than the emptiest value (a
/// value with no task yet always qualifies; so does any value while fewer than
/// `min_groups` values are known).
fn group_by_admits<'a>(
    value: &str,
    values: impl Iterator<Item = &'a str>,
    min_groups: Option<usize>,
) -> bool {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    let Some(&here) = counts.get(value) else {
        return true;
    };
    let known_min = counts.values().copied().min().unwrap_or(0);
    let min = if min_groups.is_some_and(|n| counts.len() < n) {
        0
    } else {
        known_min
    };
    here <= min
}

/// True when every constraint admits the offer.
pub fn admits_all(constraints: &[Constraint], offer: &Placement, placed: &[Placement]) -> bool {
    constraints.iter().all(|c| c.admits(offer, placed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(field: &str, op: &str, value: Option<&str>) -> Constraint {
        Constraint::new(field, op, value).unwrap()
    }

    fn host(h: &str) -> Placement {
        Placement::new(h)
    }

    fn rack(h: &str, r: &str) -> Placement {
        Placement {
            hostname: h.into(),
            attributes: [("rack".to_string(), r.to_string())].into(),
        }
    }

    #[test]
    fn unique_hostname() {
        let u = c("hostname", "UNIQUE", None);
        assert!(u.admits(&host("a"), &[]));
        assert!(u.admits(&host("b"), &[host("a")]));
        assert!(!u.admits(&host("a"), &[host("a")]));
        assert!(rack("a", "r1").value("zone").is_none());
        let by_rack = c("rack", "UNIQUE", None);
        assert!(!by_rack.admits(&rack("b", "r1"), &[rack("a", "r1")]));
        assert!(!by_rack.admits(&host("b"), &[]), "missing attribute");
    }

    #[test]
    fn cluster_with_and_without_value() {
        let fixed = c("rack", "CLUSTER", Some("r1"));
        assert!(fixed.admits(&rack("a", "r1"), &[]));
        assert!(!fixed.admits(&rack("a", "r2"), &[]));
        let first = c("hostname", "CLUSTER", None);
        assert!(first.admits(&host("a"), &[]));
        assert!(first.admits(&host("a"), &[host("a")]));
        assert!(!first.admits(&host("b"), &[host("a")]));
        let empty = c("hostname", "CLUSTER", Some(""));
        assert!(!empty.admits(&host("b"), &[host("a")]), "empty: like none");
    }

    #[test]
    fn group_by_spreads_evenly() {
        let g = c("rack", "GROUP_BY", None);
        let placed = [rack("a", "r1"), rack("b", "r1"), rack("c", "r2")];
        assert!(!g.admits(&rack("d", "r1"), &placed), "r1 is fuller");
        assert!(g.admits(&rack("d", "r2"), &placed));
        assert!(g.admits(&rack("d", "r3"), &placed), "new value");
        let g2 = c("rack", "GROUP_BY", Some("2"));
        assert!(
            !g2.admits(&rack("b", "r1"), &[rack("a", "r1")]),
            "r2 not seen yet"
        );
    }

    #[test]
    fn like_and_unlike_full_match() {
        let like = c("rack", "LIKE", Some("r[12]"));
        assert!(like.admits(&rack("a", "r1"), &[]));
        assert!(!like.admits(&rack("a", "r10"), &[]), "full match only");
        assert!(!like.admits(&host("a"), &[]), "missing attribute");
        let unlike = c("hostname", "UNLIKE", Some("bad.*"));
        assert!(unlike.admits(&host("good"), &[]));
        assert!(!unlike.admits(&host("bad1"), &[]));
        let unlike_attr = c("rack", "UNLIKE", Some("r1"));
        assert!(
            unlike_attr.admits(&host("a"), &[]),
            "missing attribute passes"
        );
    }

    #[test]
    fn max_per_counts_tasks_per_value() {
        let m = c("hostname", "MAX_PER", Some("2"));
        assert!(m.admits(&host("a"), &[host("a")]));
        assert!(!m.admits(&host("a"), &[host("a"), host("a")]));
        assert!(m.admits(&host("b"), &[host("a"), host("a")]));
    }

    #[test]
    fn is_matches_exact_text() {
        let i = c("rack", "IS", Some("r1"));
        assert!(i.admits(&rack("a", "r1"), &[]));
        assert!(!i.admits(&rack("a", "r11"), &[]));
        assert!(c("@hostname", "is", Some("a")).admits(&host("a"), &[]));
    }

    #[test]
    fn every_listed_operator_parses() {
        for op in OPERATORS {
            let value = match op {
                "UNIQUE" => None,
                _ => Some("1"),
            };
            assert!(Constraint::new("rack", op, value).is_ok(), "{op}");
        }
    }

    #[test]
    fn parse_errors_name_the_problem() {
        let err = |f: &str, op: &str, v: Option<&str>| {
            Constraint::new(f, op, v)
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("", "UNIQUE", None),
            "Missing field for constraint declaration"
        );
        assert!(err("hostname", "BOGUS", None).starts_with("Constraint operator 'BOGUS'"));
        assert_eq!(
            err("hostname", "UNIQUE", Some("x")),
            "Value specified but not used"
        );
        assert_eq!(
            err("hostname", "LIKE", None),
            "Value is required for operator LIKE"
        );
        assert!(err("hostname", "LIKE", Some("(")).contains("not a valid regular expression"));
        assert_eq!(
            err("hostname", "MAX_PER", Some("x")),
            "Value was not a valid integer for operator MAX_PER"
        );
        assert_eq!(
            err("hostname", "IS", None),
            "Value is required for operator IS"
        );
    }

    #[test]
    fn placement_of_an_offer_reads_text_and_scalar_attributes() {
        let offer = v1::Offer {
            hostname: "h1".into(),
            attributes: mezzo_proto::resources::parse_attributes("rack:r1;level:3")
                .unwrap_or_default(),
            ..Default::default()
        };
        let p = Placement::of_offer(&offer);
        assert_eq!(p.value("hostname"), Some("h1"));
        assert_eq!(p.value("@rack"), Some("r1"));
        assert_eq!(p.value("level"), Some("3"));
        assert_eq!(p.value("zone"), None);
    }
}
