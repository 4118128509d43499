//! Query parameters as Marathon's clients send them: booleans and label selectors.

use std::collections::BTreeMap;

/// Parses a query boolean the way Marathon's clients send them (`True`, `false`, `1`).
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// One term of a label selector (`a`, `b==x`, `c!=y`, `d in (x, y)`, `e notin (x)`).
#[derive(Debug, Clone, PartialEq)]
pub enum LabelSelector {
    /// Key present.
    Exists(String),
    /// Key equals one of the values.
    In(String, Vec<String>),
    /// Key absent or not one of the values.
    NotIn(String, Vec<String>),
}

impl LabelSelector {
    /// True when `labels` satisfy this term.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            LabelSelector::Exists(k) => labels.contains_key(k),
            LabelSelector::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            LabelSelector::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
        }
    }
}

/// Parses Marathon's label selector syntax; unparsable terms are ignored.
pub fn parse_label_selector(text: &str) -> Vec<LabelSelector> {
    // Split at commas outside parentheses.
    let mut terms = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    terms.push(cur);
    let list = |s: &str| -> Vec<String> {
        s.trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect()
    };
    terms
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(|t| {
            if let Some((k, v)) = t.split_once("!=") {
                LabelSelector::NotIn(k.trim().into(), vec![v.trim().into()])
            } else if let Some((k, v)) = t.split_once("==") {
                LabelSelector::In(k.trim().into(), vec![v.trim().into()])
            } else if let Some((k, v)) = t.split_once(" notin ") {
                LabelSelector::NotIn(k.trim().into(), list(v))
            } else if let Some((k, v)) = t.split_once(" in ") {
                LabelSelector::In(k.trim().into(), list(v))
            } else {
                LabelSelector::Exists(t.into())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors() {
        let labels: BTreeMap<String, String> = [("env".to_string(), "prod".to_string())].into();
        let ok = |s: &str| parse_label_selector(s).iter().all(|x| x.matches(&labels));
        assert!(ok("env"));
        assert!(ok("env==prod"));
        assert!(!ok("env!=prod"));
        assert!(ok("env in (dev, prod)"));
        assert!(!ok("env notin (prod)"));
        assert!(!ok("tier"));
        assert!(ok("env,env==prod"));
    }

    #[test]
    fn query_booleans_ignore_case() {
        assert_eq!(parse_bool("False"), Some(false));
        assert_eq!(parse_bool("TRUE"), Some(true));
        assert_eq!(parse_bool("maybe"), None);
    }
}
