//! The resource model: a set of named scalars (`cpus`, `mem`, `disk`, ...) and
//! range sets (`ports`), with Mesos' text syntax, arithmetic and containment.
//!
//! Scalars are kept in fixed point with three decimals, as Mesos does, so that
//! repeated add/subtract never drifts (`0.1 + 0.2 - 0.3` is exactly zero).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::v1;

/// Why a resource or attribute string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A `name:value` item is malformed; `part` is the offending text.
    #[error("invalid resource '{part}': {reason}")]
    Resource {
        /// The `;`-separated item that failed.
        part: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An attribute item is malformed.
    #[error("invalid attribute '{part}': {reason}")]
    Attribute {
        /// The `;`-separated item that failed.
        part: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Scalars are stored as thousandths.
const SCALE: f64 = 1000.0;

fn to_fixed(v: f64) -> i64 {
    (v * SCALE).round() as i64
}

fn from_fixed(v: i64) -> f64 {
    v as f64 / SCALE
}

/// A sorted, coalesced set of inclusive `[begin, end]` ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet(Vec<(u64, u64)>);

impl RangeSet {
    /// Builds a set from arbitrary (possibly overlapping) ranges.
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut v: Vec<(u64, u64)> = ranges
            .into_iter()
            .map(|(a, b)| if a <= b { (a, b) } else { (b, a) })
            .collect();
        v.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
        for (b, e) in v {
            match out.last_mut() {
                Some(last) if b <= last.1.saturating_add(1) => last.1 = last.1.max(e),
                _ => out.push((b, e)),
            }
        }
        RangeSet(out)
    }

    /// The ranges, sorted and disjoint.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.0
    }

    /// Number of values in the set.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|(b, e)| e - b + 1).sum()
    }

    /// True when the set has no values.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Union.
    pub fn union(&self, other: &RangeSet) -> RangeSet {
        RangeSet::from_ranges(self.0.iter().chain(other.0.iter()).copied())
    }

    /// Values of `self` not in `other`.
    pub fn difference(&self, other: &RangeSet) -> RangeSet {
        let mut out = Vec::new();
        for &(mut b, e) in &self.0 {
            for &(ob, oe) in &other.0 {
                if oe < b || ob > e {
                    continue;
                }
                if ob > b {
                    out.push((b, ob - 1));
                }
                if oe >= e {
                    b = e.saturating_add(1);
                    break;
                }
                b = oe + 1;
            }
            if b <= e {
                out.push((b, e));
            }
        }
        RangeSet(out)
    }

    /// True when every value of `other` is in `self`.
    pub fn contains(&self, other: &RangeSet) -> bool {
        other.difference(self).is_empty()
    }

    /// The first `n` values of the set, lowest first; `None` when it holds fewer.
    pub fn take(&self, n: u64) -> Option<RangeSet> {
        let mut left = n;
        let mut out = Vec::new();
        for &(b, e) in &self.0 {
            if left == 0 {
                break;
            }
            let len = e - b + 1;
            if len >= left {
                out.push((b, b + left - 1));
                left = 0;
            } else {
                out.push((b, e));
                left -= len;
            }
        }
        (left == 0).then_some(RangeSet(out))
    }

    /// Iterates over every value.
    pub fn values(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().flat_map(|&(b, e)| b..=e)
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, (b, e)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{b}-{e}")?;
        }
        f.write_str("]")
    }
}

/// A bundle of unreserved resources.
///
/// The maps sit behind a shared, copy-on-write pointer: the master copies
/// bundles far more often than it changes them (every offer is a copy of an
/// agent's free resources, every snapshot and view shares task resources),
/// so a clone is a reference-count increment and only a mutation of a shared
/// bundle copies its maps. `None` is the empty bundle, so `Resources::new()`
/// and the many empty `used`/`offered` fields allocate nothing.
#[derive(Clone, Default)]
pub struct Resources {
    inner: Option<Arc<Inner>>,
}

/// The contents of a [`Resources`]; zero scalars and empty range sets are
/// removed by `subtract`, so equal bundles have equal maps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Inner {
    /// `scalars` of [`KNOWN`], in that order, kept in step with the map:
    /// the allocator reads these for every agent of a round, and an array
    /// next to the reference count costs one cache line where the map costs
    /// a walk over nodes and name strings.
    known: [i64; 4],
    scalars: BTreeMap<String, i64>,
    ranges: BTreeMap<String, RangeSet>,
}

/// The scalars every cluster has, read in O(1) by [`Resources::scalar_millis`].
const KNOWN: [&str; 4] = ["cpus", "mem", "disk", "gpus"];

fn known_index(name: &str) -> Option<usize> {
    KNOWN.iter().position(|k| *k == name)
}

impl Inner {
    /// Re-reads `known` from the map after a change.
    fn refresh_known(&mut self) {
        for (slot, name) in self.known.iter_mut().zip(KNOWN) {
            *slot = self.scalars.get(name).copied().unwrap_or(0);
        }
    }
}

/// What an empty bundle reads as.
static EMPTY: Inner = Inner {
    known: [0; 4],
    scalars: BTreeMap::new(),
    ranges: BTreeMap::new(),
};

impl PartialEq for Resources {
    fn eq(&self, other: &Self) -> bool {
        let same_pointer = match (&self.inner, &other.inner) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        same_pointer || self.get() == other.get()
    }
}

impl Eq for Resources {}

impl fmt::Debug for Resources {
    // The same text as the derive on the former plain struct, so logs and
    // test failures read as before.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resources")
            .field("scalars", &self.get().scalars)
            .field("ranges", &self.get().ranges)
            .finish()
    }
}

impl Resources {
    /// No resources.
    pub fn new() -> Self {
        Self::default()
    }

    fn get(&self) -> &Inner {
        self.inner.as_deref().unwrap_or(&EMPTY)
    }

    /// The maps for writing: copied first only if another bundle shares them.
    fn get_mut(&mut self) -> &mut Inner {
        Arc::make_mut(self.inner.get_or_insert_with(Default::default))
    }

    /// Parses Mesos' text syntax: `cpus:4;mem:8192;disk:10000;ports:[31000-32000]`.
    /// `name(*):value` is accepted; reservations for other roles are not (yet).
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut r = Resources::new();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let err = |reason: &str| ParseError::Resource {
                part: part.to_string(),
                reason: reason.to_string(),
            };
            let (name, value) = part
                .split_once(':')
                .ok_or_else(|| err("expected name:value"))?;
            let mut name = name.trim();
            if let Some(open) = name.find('(') {
                let role = name[open..]
                    .strip_prefix('(')
                    .and_then(|s| s.strip_suffix(')'))
                    .ok_or_else(|| err("unbalanced role parentheses"))?;
                if role != "*" {
                    return Err(err("reservations for a role are not supported"));
                }
                name = name[..open].trim();
            }
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
            {
                return Err(err("invalid resource name"));
            }
            let value = value.trim();
            if let Some(inner) = value.strip_prefix('[') {
                let inner = inner
                    .strip_suffix(']')
                    .ok_or_else(|| err("missing ']' after ranges"))?;
                let mut ranges = Vec::new();
                for item in inner.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let (b, e) = item
                        .split_once('-')
                        .ok_or_else(|| err("expected a range like 31000-32000"))?;
                    let b: u64 = b
                        .trim()
                        .parse()
                        .map_err(|_| err("range bound is not an integer"))?;
                    let e: u64 = e
                        .trim()
                        .parse()
                        .map_err(|_| err("range bound is not an integer"))?;
                    if b > e {
                        return Err(err("range begins after it ends"));
                    }
                    ranges.push((b, e));
                }
                r.add_ranges(name, &RangeSet::from_ranges(ranges));
            } else if value.starts_with('{') {
                return Err(err("set resources are not supported"));
            } else {
                let v: f64 = value.parse().map_err(|_| err("value is not a number"))?;
                if !v.is_finite() || v < 0.0 {
                    return Err(err("value must be a non-negative number"));
                }
                r.add_scalar(name, v);
            }
        }
        Ok(r)
    }

    /// Converts from the wire form; reserved or set resources are skipped.
    pub fn from_proto(resources: &[v1::Resource]) -> Self {
        let mut r = Resources::new();
        for res in resources {
            if !(res.role.is_empty() || res.role == "*") {
                continue;
            }
            match v1::ValueType::try_from(res.r#type) {
                Ok(v1::ValueType::Scalar) if res.scalar.is_finite() && res.scalar > 0.0 => {
                    r.add_scalar(&res.name, res.scalar);
                }
                Ok(v1::ValueType::Ranges) => {
                    let set = RangeSet::from_ranges(res.ranges.iter().map(|x| (x.begin, x.end)));
                    r.add_ranges(&res.name, &set);
                }
                _ => {}
            }
        }
        r
    }

    /// The wire form.
    pub fn to_proto(&self) -> Vec<v1::Resource> {
        let inner = self.get();
        let mut out = Vec::with_capacity(inner.scalars.len() + inner.ranges.len());
        for (name, v) in &inner.scalars {
            out.push(v1::Resource {
                name: name.clone(),
                r#type: v1::ValueType::Scalar as i32,
                scalar: from_fixed(*v),
                role: "*".into(),
                ..Default::default()
            });
        }
        for (name, set) in &inner.ranges {
            out.push(v1::Resource {
                name: name.clone(),
                r#type: v1::ValueType::Ranges as i32,
                ranges: set
                    .ranges()
                    .iter()
                    .map(|&(begin, end)| v1::Range { begin, end })
                    .collect(),
                role: "*".into(),
                ..Default::default()
            });
        }
        out
    }

    /// Adds `v` of scalar `name`.
    pub fn add_scalar(&mut self, name: &str, v: f64) {
        let f = to_fixed(v);
        if f == 0 {
            return;
        }
        let inner = self.get_mut();
        // `get_mut` first: a name already present is not allocated again.
        match inner.scalars.get_mut(name) {
            Some(cur) => *cur += f,
            None => {
                inner.scalars.insert(name.to_string(), f);
            }
        }
        inner.refresh_known();
    }

    /// Adds ranges to resource `name`.
    pub fn add_ranges(&mut self, name: &str, set: &RangeSet) {
        if set.is_empty() {
            return;
        }
        let cur = self.get_mut().ranges.entry(name.to_string()).or_default();
        *cur = cur.union(set);
    }

    /// Builder-style [`Resources::add_scalar`].
    pub fn with_scalar(mut self, name: &str, v: f64) -> Self {
        self.add_scalar(name, v);
        self
    }

    /// Builder-style [`Resources::add_ranges`].
    pub fn with_ranges(mut self, name: &str, set: RangeSet) -> Self {
        self.add_ranges(name, &set);
        self
    }

    /// The amount of scalar `name` (0 when absent).
    pub fn scalar(&self, name: &str) -> f64 {
        from_fixed(self.scalar_millis(name))
    }

    /// The amount of scalar `name` in thousandths, the fixed-point form it
    /// is kept in (0 when absent); `cpus`, `mem`, `disk` and `gpus` are read
    /// without a map lookup. Equals `(self.scalar(name) * 1000).round()`.
    pub fn scalar_millis(&self, name: &str) -> i64 {
        let inner = self.get();
        match known_index(name) {
            Some(i) => inner.known[i],
            None => inner.scalars.get(name).copied().unwrap_or(0),
        }
    }

    /// `[cpus, mem, disk, gpus]` in thousandths when the bundle holds
    /// nothing else (no other scalar, no ranges), as most task bundles do:
    /// renderers then write them without walking the maps.
    pub fn common_scalars_only(&self) -> Option<[i64; 4]> {
        let inner = self.get();
        let present = inner.known.iter().filter(|v| **v != 0).count();
        (inner.ranges.is_empty() && inner.scalars.len() == present).then_some(inner.known)
    }

    /// The ranges of `name` (empty when absent).
    pub fn ranges(&self, name: &str) -> RangeSet {
        self.get().ranges.get(name).cloned().unwrap_or_default()
    }

    /// Iterates over `(name, amount)` of every scalar.
    pub fn scalars(&self) -> impl Iterator<Item = (&str, f64)> {
        self.get()
            .scalars
            .iter()
            .map(|(k, v)| (k.as_str(), from_fixed(*v)))
    }

    /// Iterates over `(name, ranges)` of every range resource.
    pub fn range_resources(&self) -> impl Iterator<Item = (&str, &RangeSet)> {
        self.get().ranges.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// True when there is nothing in the bundle.
    pub fn is_empty(&self) -> bool {
        let inner = self.get();
        inner.scalars.values().all(|v| *v <= 0) && inner.ranges.values().all(RangeSet::is_empty)
    }

    /// `self += other`.
    pub fn add(&mut self, other: &Resources) {
        let Some(theirs) = &other.inner else {
            return;
        };
        if self.inner.is_none() {
            // Adding to nothing: share `other`'s maps instead of copying them.
            self.inner = Some(Arc::clone(theirs));
            return;
        }
        let mine = self.get_mut();
        for (k, v) in &theirs.scalars {
            match mine.scalars.get_mut(k) {
                Some(cur) => *cur += v,
                None => {
                    mine.scalars.insert(k.clone(), *v);
                }
            }
        }
        mine.refresh_known();
        for (k, set) in &theirs.ranges {
            self.add_ranges(k, set);
        }
    }

    /// `self -= other`, never going below zero.
    pub fn subtract(&mut self, other: &Resources) {
        // Nothing to take, or nothing to take from: leave shared maps shared.
        let (Some(theirs), Some(_)) = (&other.inner, &self.inner) else {
            return;
        };
        if self
            .inner
            .as_ref()
            .is_some_and(|mine| Arc::ptr_eq(mine, theirs))
        {
            // `x - x`: everything goes (the loops below would also empty it).
            self.inner = None;
            return;
        }
        let mine = self.get_mut();
        for (k, v) in &theirs.scalars {
            if let Some(cur) = mine.scalars.get_mut(k) {
                *cur = (*cur - v).max(0);
                if *cur == 0 {
                    mine.scalars.remove(k);
                }
            }
        }
        mine.refresh_known();
        for (k, set) in &theirs.ranges {
            if let Some(cur) = mine.ranges.get_mut(k) {
                *cur = cur.difference(set);
                if cur.is_empty() {
                    mine.ranges.remove(k);
                }
            }
        }
    }

    /// `self + other` as a new value.
    pub fn plus(&self, other: &Resources) -> Resources {
        let mut r = self.clone();
        r.add(other);
        r
    }

    /// `self - other` as a new value.
    pub fn minus(&self, other: &Resources) -> Resources {
        let mut r = self.clone();
        r.subtract(other);
        r
    }

    /// True when `other` fits inside `self`.
    pub fn contains(&self, other: &Resources) -> bool {
        let (mine, theirs) = (self.get(), other.get());
        theirs
            .scalars
            .iter()
            .all(|(k, v)| *v <= 0 || mine.scalars.get(k).is_some_and(|m| m >= v))
            && theirs.ranges.iter().all(|(k, set)| {
                set.is_empty() || mine.ranges.get(k).is_some_and(|m| m.contains(set))
            })
    }

    /// Names of the resources of `other` that do not fit in `self`.
    pub fn shortfall(&self, other: &Resources) -> Vec<String> {
        let (mine, theirs) = (self.get(), other.get());
        let mut out = Vec::new();
        for (k, v) in &theirs.scalars {
            if *v > 0 && mine.scalars.get(k).is_none_or(|m| m < v) {
                out.push(k.clone());
            }
        }
        for (k, set) in &theirs.ranges {
            if !set.is_empty() && !mine.ranges.get(k).is_some_and(|m| m.contains(set)) {
                out.push(k.clone());
            }
        }
        out
    }
}

/// A value in Mesos' flat resource JSON: a number, or ranges as text.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum FlatValue {
    /// A scalar amount.
    Number(f64),
    /// Ranges in Mesos text syntax, `[31000-32000]`.
    Text(String),
}

impl Resources {
    /// Mesos' flat resource JSON (`{"cpus": 2.0, "mem": 1024.0, "ports":
    /// "[31000-32000]"}`), with cpus, mem, disk and gpus always present.
    pub fn mesos_flat(&self) -> BTreeMap<String, FlatValue> {
        let mut m = BTreeMap::new();
        for k in ["cpus", "mem", "disk", "gpus"] {
            m.insert(k.to_string(), FlatValue::Number(self.scalar(k)));
        }
        for (k, v) in self.scalars() {
            m.insert(k.to_string(), FlatValue::Number(v));
        }
        for (k, set) in self.range_resources() {
            m.insert(k.to_string(), FlatValue::Text(set.to_string()));
        }
        m
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.get();
        let mut first = true;
        for (k, v) in &inner.scalars {
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            write!(f, "{k}:{}", from_fixed(*v))?;
        }
        for (k, set) in &inner.ranges {
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            write!(f, "{k}:{set}")?;
        }
        Ok(())
    }
}

/// Parses agent attributes in Mesos' syntax: `rack:r1;zone:a;level:3`.
/// Numbers become SCALAR attributes, anything else TEXT.
pub fn parse_attributes(text: &str) -> Result<Vec<v1::Attribute>, ParseError> {
    let mut out = Vec::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let err = |reason: &str| ParseError::Attribute {
            part: part.to_string(),
            reason: reason.to_string(),
        };
        let (name, value) = part
            .split_once(':')
            .ok_or_else(|| err("expected name:value"))?;
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() {
            return Err(err("empty attribute name"));
        }
        if value.is_empty() {
            return Err(err("empty attribute value"));
        }
        let attr = match value.parse::<f64>() {
            Ok(v) if v.is_finite() => v1::Attribute {
                name: name.into(),
                r#type: v1::ValueType::Scalar as i32,
                scalar: v,
                text: value.into(),
            },
            _ => v1::Attribute {
                name: name.into(),
                r#type: v1::ValueType::Text as i32,
                text: value.into(),
                scalar: 0.0,
            },
        };
        out.push(attr);
    }
    Ok(out)
}

/// The attribute's value as text (`r1`, `3`).
pub fn attribute_text(a: &v1::Attribute) -> String {
    if a.r#type == v1::ValueType::Scalar as i32 && a.text.is_empty() {
        a.scalar.to_string()
    } else {
        a.text.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_mesos_syntax() {
        let r = Resources::parse("cpus:4;mem:8192;disk:10000;ports:[31000-32000]").unwrap();
        assert_eq!(r.scalar("cpus"), 4.0);
        assert_eq!(r.scalar("mem"), 8192.0);
        assert_eq!(r.ranges("ports").count(), 1001);
        assert_eq!(
            r.to_string(),
            "cpus:4; disk:10000; mem:8192; ports:[31000-32000]"
        );
        let r = Resources::parse("cpus(*):0.5; ports:[1-2,5-6]").unwrap();
        assert_eq!(r.scalar("cpus"), 0.5);
        assert_eq!(r.ranges("ports").ranges(), &[(1, 2), (5, 6)]);
    }

    #[test]
    fn rejects_bad_parts_by_name() {
        for (text, bad) in [
            ("cpus:4;mem", "mem"),
            ("cpus:x", "cpus:x"),
            ("cpus:-1", "cpus:-1"),
            ("ports:[31000-]", "ports:[31000-]"),
            ("ports:[5-1]", "ports:[5-1]"),
            ("ports:[1-2", "ports:[1-2"),
            ("cpus(web):2", "cpus(web):2"),
        ] {
            match Resources::parse(text) {
                Err(ParseError::Resource { part, .. }) => assert_eq!(part, bad, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn fixed_point_does_not_drift() {
        let mut r = Resources::new().with_scalar("cpus", 0.3);
        r.subtract(&Resources::new().with_scalar("cpus", 0.1));
        r.subtract(&Resources::new().with_scalar("cpus", 0.2));
        assert!(r.is_empty());
    }

    #[test]
    fn ranges_take_and_difference() {
        let s = RangeSet::from_ranges([(31000, 31002), (31010, 31010)]);
        assert_eq!(
            s.take(4).unwrap().ranges(),
            &[(31000, 31002), (31010, 31010)]
        );
        assert!(s.take(5).is_none());
        let d = s.difference(&RangeSet::from_ranges([(31001, 31001)]));
        assert_eq!(
            d.ranges(),
            &[(31000, 31000), (31002, 31002), (31010, 31010)]
        );
    }

    #[test]
    fn attributes() {
        let a = parse_attributes("rack:r1;level:3").unwrap();
        assert_eq!(a[0].text, "r1");
        assert_eq!(a[1].r#type, v1::ValueType::Scalar as i32);
        assert!(parse_attributes("rack").is_err());
    }

    fn arb_resources() -> impl Strategy<Value = Resources> {
        (
            0u32..10_000,
            0u32..100_000,
            proptest::collection::vec((0u64..200, 0u64..20), 0..5),
        )
            .prop_map(|(c, m, rs)| {
                Resources::new()
                    .with_scalar("cpus", c as f64 / 1000.0)
                    .with_scalar("mem", m as f64)
                    .with_ranges(
                        "ports",
                        RangeSet::from_ranges(rs.into_iter().map(|(b, l)| (b, b + l))),
                    )
            })
    }

    proptest! {
        #[test]
        fn add_then_subtract_is_identity(a in arb_resources(), b in arb_resources()) {
            let sum = a.plus(&b);
            prop_assert!(sum.contains(&a));
            prop_assert!(sum.contains(&b));
            // Ranges may overlap, so only scalars round-trip exactly.
            let back = sum.minus(&b);
            prop_assert_eq!(back.scalar("cpus"), a.scalar("cpus"));
            prop_assert_eq!(back.scalar("mem"), a.scalar("mem"));
        }

        #[test]
        fn known_scalars_follow_the_map(a in arb_resources(), b in arb_resources(), gpus in 0u32..4) {
            let a = a.with_scalar("gpus", gpus as f64);
            for r in [a.plus(&b), a.minus(&b), b.minus(&a), a.clone()] {
                let common = r.common_scalars_only();
                let others = r.scalars().any(|(k, _)| !KNOWN.contains(&k)) || r.range_resources().next().is_some();
                prop_assert_eq!(common.is_some(), !others);
                for name in KNOWN {
                    let from_map = r.scalars().find(|(k, _)| *k == name).map(|(_, v)| v);
                    prop_assert_eq!(r.scalar_millis(name), to_fixed(from_map.unwrap_or(0.0)));
                }
            }
        }

        #[test]
        fn difference_is_disjoint(a in arb_resources(), b in arb_resources()) {
            let d = a.ranges("ports").difference(&b.ranges("ports"));
            for v in d.values() {
                prop_assert!(!b.ranges("ports").values().any(|x| x == v));
                prop_assert!(a.ranges("ports").values().any(|x| x == v));
            }
        }
    }
}
