//! A path-tracking reader over a JSON call, so every rejection names the
//! offending field (`accept.operations[0].launch.task_infos[1].task_id`).
//!
//! Protobuf's JSON mapping is lenient (64-bit integers as strings, enums as
//! names or numbers); the accessors accept exactly those spellings.

use serde_json::{Map, Value};

// ------------------------------------------------------------------ errors

/// A call the master rejects before it reaches the actor (HTTP 400); the
/// message names the offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadCall(pub String);

impl std::fmt::Display for BadCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn bad(msg: impl Into<String>) -> BadCall {
    BadCall(msg.into())
}

// ------------------------------------------------------------- JSON reader

/// A JSON value with its path in the call, for error messages that name the
/// field (`accept.operations[0].launch.task_infos[1].task_id`).
pub(crate) struct J<'a> {
    pub(crate) v: &'a Value,
    pub(crate) path: String,
}

impl<'a> J<'a> {
    pub(crate) fn root(v: &'a Value) -> Self {
        J {
            v,
            path: String::new(),
        }
    }

    pub(crate) fn name(&self) -> &str {
        if self.path.is_empty() {
            "call"
        } else {
            &self.path
        }
    }

    pub(crate) fn child_path(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    pub(crate) fn obj(&self) -> Result<&'a Map<String, Value>, BadCall> {
        self.v
            .as_object()
            .ok_or_else(|| bad(format!("'{}' must be a JSON object", self.name())))
    }

    pub(crate) fn opt(&self, name: &str) -> Result<Option<J<'a>>, BadCall> {
        match self.obj()?.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => Ok(Some(J {
                v,
                path: self.child_path(name),
            })),
        }
    }

    pub(crate) fn req(&self, name: &str) -> Result<J<'a>, BadCall> {
        self.opt(name)?.ok_or_else(|| {
            bad(format!(
                "Missing required field '{}'",
                self.child_path(name)
            ))
        })
    }

    pub(crate) fn string(&self) -> Result<String, BadCall> {
        self.v
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| bad(format!("'{}' must be a string", self.name())))
    }

    pub(crate) fn f64(&self) -> Result<f64, BadCall> {
        let v = match self.v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        };
        v.filter(|x: &f64| x.is_finite())
            .ok_or_else(|| bad(format!("'{}' must be a number", self.name())))
    }

    pub(crate) fn u64(&self) -> Result<u64, BadCall> {
        let v = match self.v {
            Value::Number(n) => n.as_u64(),
            // protobuf's JSON mapping writes 64-bit integers as strings.
            Value::String(s) => s.parse().ok(),
            _ => None,
        };
        v.ok_or_else(|| bad(format!("'{}' must be a non-negative integer", self.name())))
    }

    pub(crate) fn i64(&self) -> Result<i64, BadCall> {
        let v = match self.v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        };
        v.ok_or_else(|| bad(format!("'{}' must be an integer", self.name())))
    }

    pub(crate) fn bool(&self) -> Result<bool, BadCall> {
        self.v
            .as_bool()
            .ok_or_else(|| bad(format!("'{}' must be true or false", self.name())))
    }

    pub(crate) fn items(&self) -> Result<Vec<J<'a>>, BadCall> {
        let arr = self
            .v
            .as_array()
            .ok_or_else(|| bad(format!("'{}' must be an array", self.name())))?;
        Ok(arr
            .iter()
            .enumerate()
            .map(|(i, v)| J {
                v,
                path: format!("{}[{i}]", self.path),
            })
            .collect())
    }

    /// A Mesos id message: `{"value": "..."}`.
    pub(crate) fn id(&self) -> Result<String, BadCall> {
        let v = self.req("value")?.string()?;
        if v.is_empty() {
            return Err(bad(format!("'{}.value' must not be empty", self.path)));
        }
        Ok(v)
    }

    pub(crate) fn opt_id(&self, name: &str) -> Result<String, BadCall> {
        Ok(match self.opt(name)? {
            Some(j) => j.id()?,
            None => String::new(),
        })
    }

    pub(crate) fn opt_string(&self, name: &str) -> Result<String, BadCall> {
        Ok(match self.opt(name)? {
            Some(j) => j.string()?,
            None => String::new(),
        })
    }

    pub(crate) fn opt_f64(&self, name: &str) -> Result<Option<f64>, BadCall> {
        self.opt(name)?.map(|j| j.f64()).transpose()
    }

    pub(crate) fn strings(&self) -> Result<Vec<String>, BadCall> {
        self.items()?.iter().map(J::string).collect()
    }

    pub(crate) fn opt_strings(&self, name: &str) -> Result<Vec<String>, BadCall> {
        Ok(match self.opt(name)? {
            Some(j) => j.strings()?,
            None => Vec::new(),
        })
    }

    pub(crate) fn opt_items(&self, name: &str) -> Result<Vec<J<'a>>, BadCall> {
        Ok(match self.opt(name)? {
            Some(j) => j.items()?,
            None => Vec::new(),
        })
    }

    /// An enum written as its name or its number.
    pub(crate) fn enum_name(&self, table: &[(&'static str, i64)]) -> Result<&'static str, BadCall> {
        let found = match self.v {
            Value::String(s) => table.iter().find(|(n, _)| n == s),
            Value::Number(n) => n.as_i64().and_then(|n| table.iter().find(|(_, x)| *x == n)),
            _ => None,
        };
        found.map(|(n, _)| *n).ok_or_else(|| {
            bad(format!(
                "'{}' has an unknown value {}; expected one of {}",
                self.name(),
                self.v,
                table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ))
        })
    }
}
