//! Mesos' v1 HTTP scheduler API (`POST /api/v1/scheduler`), so unmodified
//! Mesos framework clients (pymesos, mesos-rxjava, ...) run against Mezzo.
//!
//! One implementation underneath, two encodings: every call is converted to
//! the same `mezzo_proto::v1` request the gRPC `Scheduler` service sends to
//! the actor (`Command::Subscribe`, `Command::Call`), and every `v1::Event`
//! the actor emits is converted back to the protobuf JSON mapping of Mesos'
//! `mesos.v1.scheduler.Event`, framed with RecordIO (`<length>\n<json>`).
//!
//! The conversions ([`parse_call`], [`event_json`], [`record`],
//! [`RecordIoDecoder`], [`base64_encode`]/[`base64_decode`]) are pure and unit
//! tested below; the handlers only route.
//!
//! Stream ids: SUBSCRIBE answers with a fresh `Mesos-Stream-Id`; every other
//! call must carry the id of the framework's *current* HTTP subscription.
//! The `sessions` map (framework id -> stream id, actor connection number)
//! is connection bookkeeping of this adapter, not cluster state: an entry is
//! added when the actor accepts a subscription and removed when that
//! subscription's response body is dropped.
//!
//! Status codes: SUBSCRIBE 200 (chunked stream); other calls 202; malformed
//! JSON, unknown call type, missing field, missing `Mesos-Stream-Id` 400;
//! wrong stream id or framework not subscribed (over HTTP) 403; non-JSON body
//! 415; non-leading master 307 with `Location` of the leader.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures::Stream;
use mezzo_proto::v1::{self, event, operation};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info};

use crate::actor::Command;
use crate::grpc::Handle;
use crate::state::Call;
use crate::view::{master_info_json, Snapshot};

/// The header carrying the subscription's stream id.
pub(crate) const STREAM_ID_HEADER: &str = "mesos-stream-id";

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

fn bad(msg: impl Into<String>) -> BadCall {
    BadCall(msg.into())
}

// ------------------------------------------------------------------ base64

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding: how protobuf's JSON mapping writes `bytes`
/// (status update uuids, message data).
pub(crate) fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard or URL-safe base64, padded or not (protobuf's JSON
/// parsers accept both alphabets).
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    // A single leftover sextet cannot encode a byte.
    if text.len() % 4 == 1 {
        return None;
    }
    Some(out)
}

// ---------------------------------------------------------------- RecordIO

/// One RecordIO record: `<length of json in bytes>\n<json>`.
pub(crate) fn record(event: &Value) -> Bytes {
    let data = event.to_string();
    Bytes::from(format!("{}\n{}", data.len(), data))
}

/// Incremental RecordIO decoder: feed bytes as they arrive (HTTP chunk
/// boundaries mean nothing), take out complete records. The master only
/// encodes; this is the reference decoder its tests check the framing with.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct RecordIoDecoder {
    buf: Vec<u8>,
}

#[cfg(test)]
impl RecordIoDecoder {
    /// Appends `data` and returns every record now complete.
    pub(crate) fn push(&mut self, data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        loop {
            let Some(nl) = self.buf.iter().position(|&b| b == b'\n') else {
                if self.buf.len() > 20 || !self.buf.iter().all(u8::is_ascii_digit) {
                    return Err("invalid RecordIO length prefix".into());
                }
                return Ok(out);
            };
            let len: usize = std::str::from_utf8(&self.buf[..nl])
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| "invalid RecordIO length prefix".to_string())?;
            if self.buf.len() < nl + 1 + len {
                return Ok(out);
            }
            let rec = self.buf[nl + 1..nl + 1 + len].to_vec();
            self.buf.drain(..nl + 1 + len);
            out.push(rec);
        }
    }
}

// ------------------------------------------------------------- JSON reader

/// A JSON value with its path in the call, for error messages that name the
/// field (`accept.operations[0].launch.task_infos[1].task_id`).
struct J<'a> {
    v: &'a Value,
    path: String,
}

impl<'a> J<'a> {
    fn root(v: &'a Value) -> Self {
        J {
            v,
            path: String::new(),
        }
    }

    fn name(&self) -> &str {
        if self.path.is_empty() {
            "call"
        } else {
            &self.path
        }
    }

    fn child_path(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    fn obj(&self) -> Result<&'a Map<String, Value>, BadCall> {
        self.v
            .as_object()
            .ok_or_else(|| bad(format!("'{}' must be a JSON object", self.name())))
    }

    fn opt(&self, name: &str) -> Result<Option<J<'a>>, BadCall> {
        match self.obj()?.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => Ok(Some(J {
                v,
                path: self.child_path(name),
            })),
        }
    }

    fn req(&self, name: &str) -> Result<J<'a>, BadCall> {
        self.opt(name)?.ok_or_else(|| {
            bad(format!(
                "Missing required field '{}'",
                self.child_path(name)
            ))
        })
    }

    fn string(&self) -> Result<String, BadCall> {
        self.v
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| bad(format!("'{}' must be a string", self.name())))
    }

    fn f64(&self) -> Result<f64, BadCall> {
        let v = match self.v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        };
        v.filter(|x: &f64| x.is_finite())
            .ok_or_else(|| bad(format!("'{}' must be a number", self.name())))
    }

    fn u64(&self) -> Result<u64, BadCall> {
        let v = match self.v {
            Value::Number(n) => n.as_u64(),
            // protobuf's JSON mapping writes 64-bit integers as strings.
            Value::String(s) => s.parse().ok(),
            _ => None,
        };
        v.ok_or_else(|| bad(format!("'{}' must be a non-negative integer", self.name())))
    }

    fn i64(&self) -> Result<i64, BadCall> {
        let v = match self.v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        };
        v.ok_or_else(|| bad(format!("'{}' must be an integer", self.name())))
    }

    fn bool(&self) -> Result<bool, BadCall> {
        self.v
            .as_bool()
            .ok_or_else(|| bad(format!("'{}' must be true or false", self.name())))
    }

    fn items(&self) -> Result<Vec<J<'a>>, BadCall> {
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
    fn id(&self) -> Result<String, BadCall> {
        let v = self.req("value")?.string()?;
        if v.is_empty() {
            return Err(bad(format!("'{}.value' must not be empty", self.path)));
        }
        Ok(v)
    }

    fn opt_id(&self, name: &str) -> Result<String, BadCall> {
        Ok(match self.opt(name)? {
            Some(j) => j.id()?,
            None => String::new(),
        })
    }

    fn opt_string(&self, name: &str) -> Result<String, BadCall> {
        Ok(match self.opt(name)? {
            Some(j) => j.string()?,
            None => String::new(),
        })
    }

    fn opt_f64(&self, name: &str) -> Result<Option<f64>, BadCall> {
        self.opt(name)?.map(|j| j.f64()).transpose()
    }

    fn strings(&self) -> Result<Vec<String>, BadCall> {
        self.items()?.iter().map(J::string).collect()
    }

    fn opt_strings(&self, name: &str) -> Result<Vec<String>, BadCall> {
        Ok(match self.opt(name)? {
            Some(j) => j.strings()?,
            None => Vec::new(),
        })
    }

    fn opt_items(&self, name: &str) -> Result<Vec<J<'a>>, BadCall> {
        Ok(match self.opt(name)? {
            Some(j) => j.items()?,
            None => Vec::new(),
        })
    }

    /// An enum written as its name or its number.
    fn enum_name(&self, table: &[(&'static str, i64)]) -> Result<&'static str, BadCall> {
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

// ----------------------------------------------------------- JSON -> Call

/// Mesos' `scheduler::Call::Type`, with Mesos' numbers.
const CALL_TYPES: &[(&str, i64)] = &[
    ("SUBSCRIBE", 1),
    ("TEARDOWN", 2),
    ("ACCEPT", 3),
    ("DECLINE", 4),
    ("REVIVE", 5),
    ("KILL", 6),
    ("SHUTDOWN", 7),
    ("ACKNOWLEDGE", 8),
    ("RECONCILE", 9),
    ("MESSAGE", 10),
    ("REQUEST", 11),
    ("SUPPRESS", 12),
    ("ACCEPT_INVERSE_OFFERS", 13),
    ("DECLINE_INVERSE_OFFERS", 14),
    ("ACKNOWLEDGE_OPERATION_STATUS", 15),
    ("RECONCILE_OPERATIONS", 16),
    ("UPDATE_FRAMEWORK", 17),
];

/// Mesos' `Offer.Operation.Type`.
const OPERATION_TYPES: &[(&str, i64)] = &[
    ("LAUNCH", 1),
    ("RESERVE", 2),
    ("UNRESERVE", 3),
    ("CREATE", 4),
    ("DESTROY", 5),
    ("LAUNCH_GROUP", 6),
    ("GROW_VOLUME", 11),
    ("SHRINK_VOLUME", 12),
    ("CREATE_DISK", 13),
    ("DESTROY_DISK", 14),
];

const VALUE_TYPES: &[(&str, i64)] = &[("SCALAR", 0), ("RANGES", 1), ("SET", 2), ("TEXT", 3)];

const HEALTH_TYPES: &[(&str, i64)] = &[("UNKNOWN", 0), ("COMMAND", 1), ("HTTP", 2), ("TCP", 3)];

/// What a parsed call asks for.
#[derive(Debug)]
pub(crate) enum Action {
    /// Open the event stream.
    Subscribe(v1::SubscribeRequest),
    /// One of the actor's scheduler calls (same as the gRPC unary RPCs).
    Actor(Call),
    /// Valid, and nothing to do in Mezzo (MESSAGE to a command executor,
    /// REQUEST, inverse offers): answered 202 as Mesos does.
    Nothing(&'static str),
}

/// A validated call.
#[derive(Debug)]
pub(crate) struct ParsedCall {
    /// Mesos' name of the call type, e.g. `ACCEPT`.
    pub kind: &'static str,
    /// `framework_id.value` (required on every call but SUBSCRIBE).
    pub framework_id: String,
    pub action: Action,
}

/// Converts a JSON `mesos.v1.scheduler.Call` into what the actor takes.
pub(crate) fn parse_call(v: &Value) -> Result<ParsedCall, BadCall> {
    let root = J::root(v);
    root.obj()?;
    let kind = match root.opt("type")? {
        Some(t) => t.enum_name(CALL_TYPES).map_err(|_| {
            bad(format!(
                "Unknown call type {}; expected one of {}",
                t.v,
                CALL_TYPES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?,
        None => return Err(bad("Expecting 'type' to be present")),
    };
    let framework_id = root.opt_id("framework_id")?;
    if kind != "SUBSCRIBE" && framework_id.is_empty() {
        return Err(bad("Expecting 'framework_id' to be present"));
    }
    let fid = framework_id.clone();
    let action = match kind {
        "SUBSCRIBE" => {
            let s = root.req("subscribe")?;
            let mut info = framework_info(&s.req("framework_info")?)?;
            match (framework_id.is_empty(), info.id.is_empty()) {
                (false, true) => info.id = framework_id.clone(),
                (false, false) if info.id != framework_id => {
                    return Err(bad(
                        "'framework_id' differs from 'subscribe.framework_info.id'",
                    ))
                }
                _ => {}
            }
            Action::Subscribe(v1::SubscribeRequest {
                framework_info: Some(info),
                suppressed_roles: s.opt_strings("suppressed_roles")?,
            })
        }
        "TEARDOWN" => Action::Actor(Call::Teardown(v1::TeardownRequest { framework_id: fid })),
        "ACCEPT" => {
            let a = root.req("accept")?;
            let mut operations = Vec::new();
            for op in a.opt_items("operations")? {
                operations.push(offer_operation(&op)?);
            }
            Action::Actor(Call::Accept(v1::AcceptRequest {
                framework_id: fid,
                offer_ids: ids(&a, "offer_ids")?,
                operations,
                filters: filters(&a)?,
            }))
        }
        "DECLINE" => {
            let d = root.req("decline")?;
            Action::Actor(Call::Decline(v1::DeclineRequest {
                framework_id: fid,
                offer_ids: ids(&d, "offer_ids")?,
                filters: filters(&d)?,
            }))
        }
        "REVIVE" | "SUPPRESS" => {
            let field = kind.to_ascii_lowercase();
            let roles = match root.opt(&field)? {
                Some(r) => r.opt_strings("roles")?,
                None => Vec::new(),
            };
            let req = v1::RolesRequest {
                framework_id: fid,
                roles,
            };
            Action::Actor(if kind == "REVIVE" {
                Call::Revive(req)
            } else {
                Call::Suppress(req)
            })
        }
        "KILL" => {
            let k = root.req("kill")?;
            Action::Actor(Call::Kill(v1::KillRequest {
                framework_id: fid,
                task_id: k.req("task_id")?.id()?,
                agent_id: k.opt_id("agent_id")?,
                grace_period_seconds: kill_policy(&k)?,
            }))
        }
        "SHUTDOWN" => {
            // Every Mezzo task runs under its own executor whose id is the
            // task id, so shutting the executor down is killing that task.
            let s = root.req("shutdown")?;
            Action::Actor(Call::Kill(v1::KillRequest {
                framework_id: fid,
                task_id: s.req("executor_id")?.id()?,
                agent_id: s.req("agent_id")?.id()?,
                grace_period_seconds: None,
            }))
        }
        "ACKNOWLEDGE" => {
            let a = root.req("acknowledge")?;
            let uuid_j = a.req("uuid")?;
            let uuid = base64_decode(&uuid_j.string()?)
                .filter(|u| !u.is_empty())
                .ok_or_else(|| bad("'acknowledge.uuid' must be non-empty base64"))?;
            Action::Actor(Call::Acknowledge(v1::AcknowledgeRequest {
                framework_id: fid,
                agent_id: a.req("agent_id")?.id()?,
                task_id: a.req("task_id")?.id()?,
                uuid,
            }))
        }
        "RECONCILE" => {
            let mut tasks = Vec::new();
            if let Some(r) = root.opt("reconcile")? {
                for t in r.opt_items("tasks")? {
                    tasks.push(v1::reconcile_request::Task {
                        task_id: t.req("task_id")?.id()?,
                        agent_id: t.opt_id("agent_id")?,
                    });
                }
            }
            Action::Actor(Call::Reconcile(v1::ReconcileRequest {
                framework_id: fid,
                tasks,
            }))
        }
        "MESSAGE" => {
            let m = root.req("message")?;
            m.req("agent_id")?.id()?;
            m.req("executor_id")?.id()?;
            base64_decode(&m.req("data")?.string()?)
                .ok_or_else(|| bad("'message.data' must be base64"))?;
            // Mezzo's executors are command executors, which (as in Mesos)
            // ignore framework messages.
            Action::Nothing("framework messages are dropped: Mezzo runs command executors only")
        }
        "REQUEST" => {
            let r = root.req("request")?;
            r.opt_items("requests")?;
            // Mesos' hierarchical allocator ignores requests too.
            Action::Nothing("resource requests are ignored by the allocator")
        }
        "ACCEPT_INVERSE_OFFERS" | "DECLINE_INVERSE_OFFERS" => {
            Action::Nothing("Mezzo makes no inverse offers")
        }
        other => return Err(bad(format!("Call type {other} is not supported by Mezzo"))),
    };
    Ok(ParsedCall {
        kind,
        framework_id,
        action,
    })
}

fn ids(j: &J, name: &str) -> Result<Vec<String>, BadCall> {
    j.opt_items(name)?.iter().map(J::id).collect()
}

fn filters(j: &J) -> Result<Option<v1::Filters>, BadCall> {
    Ok(match j.opt("filters")? {
        Some(f) => Some(v1::Filters {
            refuse_seconds: f.opt_f64("refuse_seconds")?,
        }),
        None => None,
    })
}

/// `kill_policy.grace_period.nanoseconds` as seconds.
fn kill_policy(j: &J) -> Result<Option<f64>, BadCall> {
    let Some(kp) = j.opt("kill_policy")? else {
        return Ok(None);
    };
    let Some(gp) = kp.opt("grace_period")? else {
        return Ok(None);
    };
    let ns = gp.req("nanoseconds")?.i64()?;
    if ns < 0 {
        return Err(bad(format!(
            "'{}.nanoseconds' must not be negative",
            gp.path
        )));
    }
    Ok(Some(ns as f64 / 1e9))
}

fn framework_info(j: &J) -> Result<v1::FrameworkInfo, BadCall> {
    let name = j.req("name")?.string()?;
    let mut capabilities = Vec::new();
    for c in j.opt_items("capabilities")? {
        capabilities.push(c.req("type")?.string()?);
    }
    Ok(v1::FrameworkInfo {
        user: j.opt_string("user")?,
        name,
        id: j.opt_id("id")?,
        failover_timeout: j.opt_f64("failover_timeout")?.unwrap_or(0.0),
        checkpoint: j
            .opt("checkpoint")?
            .map(|b| b.bool())
            .transpose()?
            .unwrap_or(false),
        role: j.opt_string("role")?,
        roles: j.opt_strings("roles")?,
        hostname: j.opt_string("hostname")?,
        principal: j.opt_string("principal")?,
        webui_url: j.opt_string("webui_url")?,
        capabilities,
        labels: labels(j)?,
    })
}

fn labels(j: &J) -> Result<Vec<v1::Label>, BadCall> {
    let Some(l) = j.opt("labels")? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for x in l.opt_items("labels")? {
        out.push(v1::Label {
            key: x.req("key")?.string()?,
            value: x.opt_string("value")?,
        });
    }
    Ok(out)
}

fn offer_operation(j: &J) -> Result<v1::Operation, BadCall> {
    let kind = match j.opt("type")? {
        Some(t) => t.enum_name(OPERATION_TYPES)?,
        None if j.opt("launch")?.is_some() => "LAUNCH",
        None if j.opt("launch_group")?.is_some() => "LAUNCH_GROUP",
        None => {
            return Err(bad(format!(
                "Missing required field '{}'",
                j.child_path("type")
            )))
        }
    };
    let op = match kind {
        "LAUNCH" => {
            let l = j.req("launch")?;
            let mut task_infos = Vec::new();
            for t in l.opt_items("task_infos")? {
                task_infos.push(task_info(&t)?);
            }
            operation::Operation::Launch(operation::Launch { task_infos })
        }
        "LAUNCH_GROUP" => {
            // The group's (default) executor is implied: each task runs
            // under its own Mezzo executor, the group launches atomically.
            let g = j.req("launch_group")?;
            let tg = g.req("task_group")?;
            let mut task_infos = Vec::new();
            for t in tg.opt_items("tasks")? {
                task_infos.push(task_info(&t)?);
            }
            operation::Operation::LaunchGroup(operation::LaunchGroup { task_infos })
        }
        other => {
            return Err(bad(format!(
                "'{}': operation {other} is not supported by Mezzo (only LAUNCH and LAUNCH_GROUP)",
                j.child_path("type")
            )))
        }
    };
    Ok(v1::Operation {
        operation: Some(op),
    })
}

fn task_info(j: &J) -> Result<v1::TaskInfo, BadCall> {
    let name = j.req("name")?.string()?;
    let task_id = j.req("task_id")?.id()?;
    let agent_id = j.req("agent_id")?.id()?;
    let mut resources = Vec::new();
    for r in j.opt_items("resources")? {
        resources.push(resource(&r)?);
    }
    let mut command = j.opt("command")?.map(|c| command_info(&c)).transpose()?;
    if let Some(ex) = j.opt("executor")? {
        // A custom executor: Mezzo runs its command as the task's command
        // under Mezzo's own executor, with the executor's resources added.
        for r in ex.opt_items("resources")? {
            resources.push(resource(&r)?);
        }
        if command.is_none() {
            command = ex.opt("command")?.map(|c| command_info(&c)).transpose()?;
        }
    }
    Ok(v1::TaskInfo {
        name,
        task_id,
        agent_id,
        resources,
        command,
        kill_grace_period_seconds: kill_policy(j)?,
        labels: labels(j)?,
        health_check: j
            .opt("health_check")?
            .map(|h| health_check(&h))
            .transpose()?,
    })
}

fn resource(j: &J) -> Result<v1::Resource, BadCall> {
    let name = j.req("name")?.string()?;
    let kind = match j.opt("type")? {
        Some(t) => t.enum_name(VALUE_TYPES)?,
        None if j.opt("scalar")?.is_some() => "SCALAR",
        None if j.opt("ranges")?.is_some() => "RANGES",
        None if j.opt("set")?.is_some() => "SET",
        None => {
            return Err(bad(format!(
                "Missing required field '{}'",
                j.child_path("type")
            )))
        }
    };
    // Refined reservations (Mesos >= 1.4) win over the deprecated `role`.
    let mut role = j.opt_string("role")?;
    for r in j.opt_items("reservations")? {
        let rr = r.opt_string("role")?;
        if !rr.is_empty() {
            role = rr;
        }
    }
    if role.is_empty() {
        role = "*".into();
    }
    let mut out = v1::Resource {
        name,
        role,
        ..Default::default()
    };
    match kind {
        "SCALAR" => {
            out.r#type = v1::ValueType::Scalar as i32;
            out.scalar = j.req("scalar")?.req("value")?.f64()?;
        }
        "RANGES" => {
            out.r#type = v1::ValueType::Ranges as i32;
            for r in j.req("ranges")?.opt_items("range")? {
                let begin = r.req("begin")?.u64()?;
                let end = r.req("end")?.u64()?;
                if begin > end {
                    return Err(bad(format!("'{}': begin is after end", r.path)));
                }
                out.ranges.push(v1::Range { begin, end });
            }
        }
        "SET" => {
            out.r#type = v1::ValueType::Set as i32;
            out.set = j.req("set")?.opt_strings("item")?;
        }
        _ => {
            return Err(bad(format!(
                "'{}': resources of type {kind} are not supported",
                j.child_path("type")
            )))
        }
    }
    Ok(out)
}

fn command_info(j: &J) -> Result<v1::CommandInfo, BadCall> {
    let mut environment = Vec::new();
    if let Some(env) = j.opt("environment")? {
        for var in env.opt_items("variables")? {
            environment.push(v1::EnvironmentVariable {
                name: var.req("name")?.string()?,
                value: var.opt_string("value")?,
            });
        }
    }
    if !j.opt_items("uris")?.is_empty() {
        // Mezzo has no fetcher; the command runs without them.
        debug!(path = %j.path, "command.uris ignored: Mezzo does not fetch URIs");
    }
    Ok(v1::CommandInfo {
        value: j.opt_string("value")?,
        // Mesos' default is a shell command.
        shell: j
            .opt("shell")?
            .map(|b| b.bool())
            .transpose()?
            .unwrap_or(true),
        arguments: j.opt_strings("arguments")?,
        environment,
        user: j.opt_string("user")?,
    })
}

fn health_check(j: &J) -> Result<v1::HealthCheck, BadCall> {
    let kind = match j.opt("type")? {
        Some(t) => t.enum_name(HEALTH_TYPES)?,
        None if j.opt("command")?.is_some() => "COMMAND",
        None if j.opt("http")?.is_some() => "HTTP",
        None if j.opt("tcp")?.is_some() => "TCP",
        None => "UNKNOWN",
    };
    // Mesos' defaults (mesos.proto HealthCheck).
    let mut h = v1::HealthCheck {
        delay_seconds: j.opt_f64("delay_seconds")?.unwrap_or(15.0),
        interval_seconds: j.opt_f64("interval_seconds")?.unwrap_or(10.0),
        timeout_seconds: j.opt_f64("timeout_seconds")?.unwrap_or(20.0),
        consecutive_failures: match j.opt("consecutive_failures")? {
            Some(n) => u32::try_from(n.u64()?).unwrap_or(u32::MAX),
            None => 3,
        },
        grace_period_seconds: j.opt_f64("grace_period_seconds")?.unwrap_or(10.0),
        ..Default::default()
    };
    let port = |p: &J| -> Result<u32, BadCall> {
        u32::try_from(p.req("port")?.u64()?)
            .map_err(|_| bad(format!("'{}.port' is out of range", p.path)))
    };
    match kind {
        "COMMAND" => {
            h.r#type = v1::HealthCheckType::HealthCheckCommand as i32;
            h.command = j.req("command")?.req("value")?.string()?;
        }
        "HTTP" => {
            let http = j.req("http")?;
            h.r#type = v1::HealthCheckType::HealthCheckHttp as i32;
            h.port = port(&http)?;
            h.path = http.opt_string("path")?;
            if h.path.is_empty() {
                h.path = "/".into();
            }
        }
        "TCP" => {
            let tcp = j.req("tcp")?;
            h.r#type = v1::HealthCheckType::HealthCheckTcp as i32;
            h.port = port(&tcp)?;
        }
        _ => {
            return Err(bad(format!(
                "Missing required field '{}'",
                j.child_path("type")
            )))
        }
    }
    Ok(h)
}

// ----------------------------------------------------------- Event -> JSON

fn id_json(v: &str) -> Value {
    json!({ "value": v })
}

/// A resource in Mesos' v1 JSON; `allocation_role` is set inside offers.
pub(crate) fn resource_json(r: &v1::Resource, allocation_role: Option<&str>) -> Value {
    let kind = v1::ValueType::try_from(r.r#type).unwrap_or(v1::ValueType::Scalar);
    let mut m = Map::new();
    m.insert("name".into(), json!(r.name));
    m.insert("type".into(), json!(kind.as_str_name()));
    match kind {
        v1::ValueType::Scalar => {
            m.insert("scalar".into(), json!({ "value": r.scalar }));
        }
        v1::ValueType::Ranges => {
            let range: Vec<Value> = r
                .ranges
                .iter()
                .map(|x| json!({"begin": x.begin, "end": x.end}))
                .collect();
            m.insert("ranges".into(), json!({ "range": range }));
        }
        v1::ValueType::Set => {
            m.insert("set".into(), json!({ "item": r.set }));
        }
        v1::ValueType::Text => {}
    }
    let role = if r.role.is_empty() { "*" } else { &r.role };
    m.insert("role".into(), json!(role));
    if let Some(a) = allocation_role {
        m.insert("allocation_info".into(), json!({ "role": a }));
    }
    Value::Object(m)
}

pub(crate) fn attribute_json(a: &v1::Attribute) -> Value {
    let kind = v1::ValueType::try_from(a.r#type).unwrap_or(v1::ValueType::Text);
    match kind {
        v1::ValueType::Scalar => json!({
            "name": a.name, "type": "SCALAR", "scalar": {"value": a.scalar},
        }),
        _ => json!({ "name": a.name, "type": "TEXT", "text": {"value": a.text} }),
    }
}

fn offer_json(o: &v1::Offer) -> Value {
    let role = if o.role.is_empty() { "*" } else { &o.role };
    json!({
        "id": id_json(&o.id),
        "framework_id": id_json(&o.framework_id),
        "agent_id": id_json(&o.agent_id),
        "hostname": o.hostname,
        "resources": o.resources.iter().map(|r| resource_json(r, Some(role))).collect::<Vec<_>>(),
        "attributes": o.attributes.iter().map(attribute_json).collect::<Vec<_>>(),
        "allocation_info": {"role": role},
    })
}

/// A TaskStatus in Mesos' v1 JSON. `uuid` (base64) is present only on
/// updates that must be acknowledged, exactly as clients expect.
pub(crate) fn status_json(s: &v1::TaskStatus) -> Value {
    let state = v1::TaskState::try_from(s.state).unwrap_or(v1::TaskState::TaskUnknown);
    let source = v1::StatusSource::try_from(s.source).unwrap_or(v1::StatusSource::SourceMaster);
    let mut m = Map::new();
    m.insert("task_id".into(), id_json(&s.task_id));
    m.insert("state".into(), json!(state.as_str_name()));
    m.insert("source".into(), json!(source.as_str_name()));
    if let Ok(reason) = v1::StatusReason::try_from(s.reason) {
        if reason != v1::StatusReason::ReasonNone {
            m.insert("reason".into(), json!(reason.as_str_name()));
        }
    }
    if !s.message.is_empty() {
        m.insert("message".into(), json!(s.message));
    }
    if !s.agent_id.is_empty() {
        m.insert("agent_id".into(), id_json(&s.agent_id));
    }
    // Every Mezzo task has its own executor, named after the task.
    let executor_id = if !s.executor_id.is_empty() {
        Some(s.executor_id.as_str())
    } else if source != v1::StatusSource::SourceMaster {
        Some(s.task_id.as_str())
    } else {
        None
    };
    if let Some(e) = executor_id {
        m.insert("executor_id".into(), id_json(e));
    }
    m.insert("timestamp".into(), json!(s.timestamp));
    if !s.uuid.is_empty() {
        m.insert("uuid".into(), json!(base64_encode(&s.uuid)));
    }
    if let Some(h) = s.healthy {
        m.insert("healthy".into(), json!(h));
    }
    Value::Object(m)
}

/// A `mesos.v1.scheduler.Event` in JSON (`None` for an empty event).
pub(crate) fn event_json(ev: &v1::Event) -> Option<Value> {
    Some(match ev.event.as_ref()? {
        event::Event::Subscribed(s) => {
            let mut sub = Map::new();
            sub.insert("framework_id".into(), id_json(&s.framework_id));
            sub.insert(
                "heartbeat_interval_seconds".into(),
                json!(s.heartbeat_interval_seconds),
            );
            if let Some(mi) = &s.master_info {
                sub.insert("master_info".into(), master_info_json(mi));
            }
            json!({"type": "SUBSCRIBED", "subscribed": sub})
        }
        event::Event::Offers(o) => json!({
            "type": "OFFERS",
            "offers": {"offers": o.offers.iter().map(offer_json).collect::<Vec<_>>()},
        }),
        event::Event::Rescind(r) => json!({
            "type": "RESCIND",
            "rescind": {"offer_id": id_json(&r.offer_id)},
        }),
        event::Event::Update(u) => {
            let status = u.status.as_ref().map(status_json).unwrap_or(Value::Null);
            json!({"type": "UPDATE", "update": {"status": status}})
        }
        event::Event::Failure(f) => {
            let mut m = Map::new();
            if !f.agent_id.is_empty() {
                m.insert("agent_id".into(), id_json(&f.agent_id));
            }
            if !f.executor_id.is_empty() {
                m.insert("executor_id".into(), id_json(&f.executor_id));
            }
            if let Some(st) = f.status {
                m.insert("status".into(), json!(st));
            }
            json!({"type": "FAILURE", "failure": m})
        }
        event::Event::Error(e) => error_event(&e.message),
        event::Event::Heartbeat(_) => json!({"type": "HEARTBEAT"}),
    })
}

fn error_event(message: &str) -> Value {
    json!({"type": "ERROR", "error": {"message": message}})
}

// --------------------------------------------------------------- handlers

#[derive(Clone, Debug)]
struct Session {
    stream_id: String,
    conn: u64,
}

type Sessions = Arc<Mutex<HashMap<String, Session>>>;

#[derive(Clone)]
pub(crate) struct ApiState {
    handle: Handle,
    pub(crate) snapshot: watch::Receiver<Snapshot>,
    sessions: Sessions,
}

/// The routes of the v1 scheduler and operator APIs (also under `/master`,
/// as Mesos serves them).
pub(crate) fn router(handle: Handle, snapshot: watch::Receiver<Snapshot>) -> Router {
    let state = ApiState {
        handle,
        snapshot,
        sessions: Arc::default(),
    };
    Router::new()
        .route("/api/v1/scheduler", post(scheduler))
        .route("/master/api/v1/scheduler", post(scheduler))
        .route("/api/v1", post(crate::operator_http::operator))
        .route("/api/v1/", post(crate::operator_http::operator))
        .route("/master/api/v1", post(crate::operator_http::operator))
        .with_state(state)
}

/// Where a non-leading master sends clients: `Some("host:port")` of the
/// leader when this master is a standby that knows it. (A standby that
/// knows no leader lets the call through; the actor answers NotLeader,
/// which becomes a 503.)
pub(crate) fn leader_redirect(state: &ApiState) -> Option<String> {
    let snap = state.snapshot.borrow();
    if snap.leading {
        None
    } else {
        snap.leader.clone()
    }
}

fn plain(code: StatusCode, msg: impl Into<String>) -> Response {
    let msg = msg.into();
    (
        code,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        msg,
    )
        .into_response()
}

/// 307 to the leader, as Mesos answers on a standby master.
pub(crate) fn redirect(leader: &str, path: &str) -> Response {
    let location = format!("//{leader}{path}");
    match HeaderValue::from_str(&location) {
        Ok(v) => (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, v)]).into_response(),
        Err(_) => plain(StatusCode::SERVICE_UNAVAILABLE, "no leading master"),
    }
}

/// Checks `Content-Type` is JSON (400 when missing, 415 otherwise) and
/// parses the body; the error is the response to send.
pub(crate) fn json_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, Box<Response>> {
    json_body_inner(headers, body).map_err(|(code, msg)| Box::new(plain(code, msg)))
}

fn json_body_inner(headers: &HeaderMap, body: &[u8]) -> Result<Value, (StatusCode, String)> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Err((
            StatusCode::BAD_REQUEST,
            "Expecting 'Content-Type' to be present".into(),
        ));
    };
    let media = ct
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media != "application/json" {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Unsupported Content-Type '{media}'; Mezzo accepts application/json only"),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("Failed to parse body into JSON: {e}"),
        )
    })
}

/// The event stream's content type for the request's `Accept` header, or
/// `None` when the client accepts nothing we produce (406).
fn stream_content_type(headers: &HeaderMap) -> Option<&'static str> {
    let accept: Vec<String> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|v| !v.is_empty())
        .collect();
    if accept.is_empty()
        || accept
            .iter()
            .any(|a| a == "application/json" || a == "*/*" || a == "application/*")
    {
        Some("application/json")
    } else if accept.iter().any(|a| a == "application/recordio") {
        Some("application/recordio")
    } else {
        None
    }
}

fn status_response(status: &tonic::Status) -> Response {
    // A standby actor answers NotLeader, carrying the leader's address in
    // the `mezzo-leader` metadata: Mesos clients expect a 307 to it.
    if status.code() == tonic::Code::Unavailable {
        if let Some(leader) = status
            .metadata()
            .get("mezzo-leader")
            .and_then(|v| v.to_str().ok())
        {
            return redirect(leader, "/api/v1/scheduler");
        }
    }
    let code = match status.code() {
        tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
        tonic::Code::NotFound | tonic::Code::FailedPrecondition => StatusCode::FORBIDDEN,
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    plain(code, status.message())
}

async fn scheduler(State(st): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(leader) = leader_redirect(&st) {
        return redirect(&leader, "/api/v1/scheduler");
    }
    let value = match json_body(&headers, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let call = match parse_call(&value) {
        Ok(c) => c,
        Err(e) => {
            debug!(error = %e, "rejected scheduler call");
            return plain(StatusCode::BAD_REQUEST, format!("Invalid call: {e}"));
        }
    };
    let stream_id = headers.get(STREAM_ID_HEADER);
    match call.action {
        Action::Subscribe(request) => {
            if stream_id.is_some() {
                return plain(
                    StatusCode::BAD_REQUEST,
                    "Subscribe calls should not include the 'Mesos-Stream-Id' header",
                );
            }
            subscribe(st, &headers, request).await
        }
        action => {
            let Some(sid) = stream_id else {
                return plain(
                    StatusCode::BAD_REQUEST,
                    "All non-subscribe calls should include the 'Mesos-Stream-Id' header",
                );
            };
            let sid = sid.to_str().unwrap_or("");
            let current = lock(&st.sessions).get(&call.framework_id).cloned();
            match current {
                None => {
                    return plain(
                        StatusCode::FORBIDDEN,
                        format!(
                            "Framework '{}' is not subscribed over HTTP",
                            call.framework_id
                        ),
                    )
                }
                Some(s) if s.stream_id != sid => {
                    return plain(
                        StatusCode::FORBIDDEN,
                        format!(
                            "The stream ID '{sid}' included in this request didn't match the stream ID currently associated with framework ID '{}'",
                            call.framework_id
                        ),
                    )
                }
                Some(_) => {}
            }
            match action {
                Action::Actor(Call::Kill(k))
                    if call.kind == "SHUTDOWN" && !executor_running(&st.snapshot.borrow(), &k) =>
                {
                    // Mesos forwards a shutdown of an unknown executor to the
                    // agent, which ignores it: no update either way.
                    debug!(framework.id = %call.framework_id, executor.id = %k.task_id, "SHUTDOWN of an executor that is not running ignored");
                    StatusCode::ACCEPTED.into_response()
                }
                Action::Actor(c) => {
                    debug!(framework.id = %call.framework_id, call = call.kind, "scheduler call over HTTP");
                    match st
                        .handle
                        .ask(|reply| Command::Call { call: c, reply })
                        .await
                    {
                        Ok(()) => StatusCode::ACCEPTED.into_response(),
                        Err(s) => status_response(&s),
                    }
                }
                Action::Nothing(why) => {
                    debug!(framework.id = %call.framework_id, call = call.kind, "{why}");
                    StatusCode::ACCEPTED.into_response()
                }
                Action::Subscribe(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "unreachable"),
            }
        }
    }
}

/// Whether the state document shows the executor (= task) a SHUTDOWN names
/// as live for that framework.
fn executor_running(snap: &Snapshot, k: &v1::KillRequest) -> bool {
    // Unreachable tasks are live tasks too (their executors may still run).
    snap.frameworks
        .get(&k.framework_id)
        .is_some_and(|f| f.tasks.contains_key(&k.task_id))
}

fn lock(s: &Sessions) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn subscribe(st: ApiState, headers: &HeaderMap, request: v1::SubscribeRequest) -> Response {
    let Some(content_type) = stream_content_type(headers) else {
        return plain(
            StatusCode::NOT_ACCEPTABLE,
            "Mezzo streams events as application/json (or application/recordio with JSON records)",
        );
    };
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let (framework_id, conn) = match st
        .handle
        .ask(|reply| Command::Subscribe {
            request,
            tx: ev_tx,
            reply,
        })
        .await
    {
        Ok(r) => r,
        Err(s) => return status_response(&s),
    };
    let stream_id = uuid::Uuid::new_v4().to_string();
    {
        let mut sessions = lock(&st.sessions);
        // Subscriptions race only with each other; the actor's connection
        // numbers tell which one is current.
        let newer = sessions.get(&framework_id).is_none_or(|s| s.conn < conn);
        if newer {
            sessions.insert(
                framework_id.clone(),
                Session {
                    stream_id: stream_id.clone(),
                    conn,
                },
            );
        }
    }
    info!(framework.id = %framework_id, stream.id = %stream_id, "framework subscribed over HTTP");
    let stream = EventStream {
        rx: ev_rx,
        done: false,
        _guard: SessionGuard {
            tx: st.handle.tx.clone(),
            sessions: st.sessions.clone(),
            framework_id,
            conn,
        },
    };
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if content_type == "application/recordio" {
        h.insert(
            "message-content-type",
            HeaderValue::from_static("application/json"),
        );
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&stream_id) {
        h.insert(STREAM_ID_HEADER, v);
    }
    resp
}

/// The body of a SUBSCRIBE response: the actor's events as RecordIO
/// records. It ends when the actor drops the subscription (teardown,
/// failover to a newer connection).
struct EventStream {
    rx: mpsc::UnboundedReceiver<Result<v1::Event, tonic::Status>>,
    /// Set after an error from the actor: the stream ends after reporting it.
    done: bool,
    _guard: SessionGuard,
}

impl Stream for EventStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            return match this.rx.poll_recv(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Ready(Some(Ok(ev))) => match event_json(&ev) {
                    Some(j) => Poll::Ready(Some(Ok(record(&j)))),
                    None => continue,
                },
                Poll::Ready(Some(Err(s))) => {
                    this.done = true;
                    Poll::Ready(Some(Ok(record(&error_event(s.message())))))
                }
            };
        }
    }
}

/// Dropped with the response body (the client went away, or the stream
/// ended): forgets the session and tells the actor, like the gRPC adapter.
struct SessionGuard {
    tx: mpsc::Sender<Command>,
    sessions: Sessions,
    framework_id: String,
    conn: u64,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        {
            let mut sessions = lock(&self.sessions);
            if sessions
                .get(&self.framework_id)
                .is_some_and(|s| s.conn == self.conn)
            {
                sessions.remove(&self.framework_id);
            }
        }
        debug!(framework.id = %self.framework_id, "HTTP event stream closed");
        let cmd = Command::FrameworkClosed {
            framework_id: std::mem::take(&mut self.framework_id),
            conn: self.conn,
        };
        if let Err(mpsc::error::TrySendError::Full(cmd)) = self.tx.try_send(cmd) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let tx = self.tx.clone();
                rt.spawn(async move {
                    let _ = tx.send(cmd).await;
                });
            }
        }
    }
}

// ------------------------------------------------------------------ tests

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<ParsedCall, BadCall> {
        parse_call(&v)
    }

    fn err(v: Value) -> String {
        match parse_call(&v) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn base64_round_trips_and_matches_the_standard() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(&[0xfb, 0xff]), "+/8=");
        for n in 0..40u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37).wrapping_add(n)).collect();
            assert_eq!(base64_decode(&base64_encode(&data)), Some(data));
        }
        assert_eq!(base64_decode("-_8"), Some(vec![0xfb, 0xff]));
        assert_eq!(base64_decode("Zm9v!"), None);
        assert_eq!(base64_decode("Z"), None);
    }

    #[test]
    fn recordio_frames_and_decodes_across_arbitrary_chunks() {
        let a = json!({"type": "HEARTBEAT"});
        let b = json!({"type": "ERROR", "error": {"message": "héllo"}});
        let mut wire = record(&a).to_vec();
        wire.extend_from_slice(&record(&b));
        let text = String::from_utf8(wire.clone()).unwrap();
        assert!(
            text.starts_with("20\n{\"type\":\"HEARTBEAT\"}45\n"),
            "{text}"
        );
        for split in 1..wire.len() {
            let mut d = RecordIoDecoder::default();
            let mut got = d.push(&wire[..split]).unwrap();
            got.extend(d.push(&wire[split..]).unwrap());
            let vals: Vec<Value> = got
                .iter()
                .map(|r| serde_json::from_slice(r).unwrap())
                .collect();
            assert_eq!(vals, vec![a.clone(), b.clone()], "split at {split}");
        }
        assert!(RecordIoDecoder::default().push(b"x\n{}").is_err());
    }

    #[test]
    fn subscribe_carries_framework_info_and_failover_id() {
        let c = parse(json!({
            "type": "SUBSCRIBE",
            "framework_id": {"value": "fw-1"},
            "subscribe": {"framework_info": {
                "user": "root", "name": "pymesos", "id": {"value": "fw-1"},
                "failover_timeout": 100, "roles": ["web"], "checkpoint": true,
                "capabilities": [{"type": "PARTITION_AWARE"}, {"type": "GPU_RESOURCES"}],
                "labels": {"labels": [{"key": "k", "value": "v"}]},
            }, "suppressed_roles": ["web"]},
        }))
        .unwrap();
        assert_eq!(c.kind, "SUBSCRIBE");
        let Action::Subscribe(s) = c.action else {
            panic!()
        };
        let info = s.framework_info.unwrap();
        assert_eq!(info.id, "fw-1");
        assert_eq!(info.name, "pymesos");
        assert_eq!(info.failover_timeout, 100.0);
        assert_eq!(info.roles, ["web"]);
        assert!(info.checkpoint);
        assert_eq!(info.capabilities, ["PARTITION_AWARE", "GPU_RESOURCES"]);
        assert_eq!(info.labels[0].key, "k");
        assert_eq!(s.suppressed_roles, ["web"]);

        // framework_id alone is a failover too.
        let c = parse(json!({"type": "SUBSCRIBE", "framework_id": {"value": "x"},
            "subscribe": {"framework_info": {"user": "", "name": "n"}}}))
        .unwrap();
        let Action::Subscribe(s) = c.action else {
            panic!()
        };
        assert_eq!(s.framework_info.unwrap().id, "x");

        assert!(
            err(json!({"type": "SUBSCRIBE", "framework_id": {"value": "x"},
            "subscribe": {"framework_info": {"name": "n", "id": {"value": "y"}}}}))
            .contains("differs")
        );
        assert_eq!(
            err(json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "u"}}})),
            "Missing required field 'subscribe.framework_info.name'"
        );
        assert_eq!(
            err(json!({"type": "SUBSCRIBE"})),
            "Missing required field 'subscribe'"
        );
    }

    #[test]
    fn type_and_framework_id_are_validated() {
        assert_eq!(err(json!({})), "Expecting 'type' to be present");
        assert!(err(json!({"type": "DANCE"})).starts_with("Unknown call type \"DANCE\""));
        assert_eq!(err(json!([1])), "'call' must be a JSON object");
        assert_eq!(
            err(json!({"type": "REVIVE"})),
            "Expecting 'framework_id' to be present"
        );
        assert_eq!(
            err(json!({"type": "KILL", "framework_id": {"value": 5}})),
            "'framework_id.value' must be a string"
        );
        // Numbers work as enum values, as in protobuf's JSON mapping.
        assert_eq!(
            parse(json!({"type": 5, "framework_id": {"value": "f"}}))
                .unwrap()
                .kind,
            "REVIVE"
        );
        assert!(
            err(json!({"type": "UPDATE_FRAMEWORK", "framework_id": {"value": "f"}}))
                .contains("not supported")
        );
    }

    fn pymesos_task(id: &str) -> Value {
        json!({
            "task_id": {"value": id},
            "agent_id": {"value": "a-S0"},
            "name": format!("task {id}"),
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}, "role": "*",
                 "allocation_info": {"role": "*"}},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
                {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": "31001"}]}},
            ],
            "command": {"value": "sleep 1", "environment": {"variables": [{"name": "A", "value": "1"}]}},
            "labels": {"labels": [{"key": "l", "value": "v"}]},
            "kill_policy": {"grace_period": {"nanoseconds": 2_500_000_000_i64}},
            "health_check": {"type": "HTTP", "http": {"port": 8080, "path": "/ok"}, "interval_seconds": 2},
        })
    }

    #[test]
    fn accept_with_launch_converts_task_infos() {
        let c = parse(json!({
            "type": "ACCEPT", "framework_id": {"value": "f"},
            "accept": {
                "offer_ids": [{"value": "o1"}, {"value": "o2"}],
                "operations": [{"type": "LAUNCH", "launch": {"task_infos": [pymesos_task("t1")]}}],
                "filters": {"refuse_seconds": 0.5},
            },
        }))
        .unwrap();
        let Action::Actor(Call::Accept(a)) = c.action else {
            panic!()
        };
        assert_eq!(a.framework_id, "f");
        assert_eq!(a.offer_ids, ["o1", "o2"]);
        assert_eq!(a.filters.unwrap().refuse_seconds, Some(0.5));
        let Some(operation::Operation::Launch(l)) = &a.operations[0].operation else {
            panic!()
        };
        let t = &l.task_infos[0];
        assert_eq!(t.task_id, "t1");
        assert_eq!(t.agent_id, "a-S0");
        assert_eq!(t.name, "task t1");
        let cmd = t.command.as_ref().unwrap();
        assert_eq!(cmd.value, "sleep 1");
        assert!(cmd.shell, "Mesos' CommandInfo.shell defaults to true");
        assert_eq!(cmd.environment[0].name, "A");
        let res = mezzo_proto::Resources::from_proto(&t.resources);
        assert_eq!(res.scalar("cpus"), 0.1);
        assert_eq!(res.scalar("mem"), 32.0);
        assert_eq!(res.ranges("ports").count(), 2);
        assert_eq!(t.kill_grace_period_seconds, Some(2.5));
        assert_eq!(t.labels[0].value, "v");
        let h = t.health_check.as_ref().unwrap();
        assert_eq!(h.r#type, v1::HealthCheckType::HealthCheckHttp as i32);
        assert_eq!((h.port, h.path.as_str()), (8080, "/ok"));
        assert_eq!(h.interval_seconds, 2.0);
        assert_eq!(h.delay_seconds, 15.0);
    }

    #[test]
    fn executor_command_becomes_the_task_command() {
        let mut t = pymesos_task("t");
        let obj = t.as_object_mut().unwrap();
        obj.remove("command");
        obj.insert(
            "executor".into(),
            json!({
                "executor_id": {"value": "e"},
                "command": {"value": "python executor.py", "shell": true},
                "resources": [{"name": "mem", "type": "SCALAR", "scalar": {"value": 16}}],
            }),
        );
        let c = parse(json!({"type": "ACCEPT", "framework_id": {"value": "f"},
            "accept": {"offer_ids": [{"value": "o"}], "operations": [{"launch": {"task_infos": [t]}}]}}))
        .unwrap();
        let Action::Actor(Call::Accept(a)) = c.action else {
            panic!()
        };
        let Some(operation::Operation::Launch(l)) = &a.operations[0].operation else {
            panic!()
        };
        let t = &l.task_infos[0];
        assert_eq!(t.command.as_ref().unwrap().value, "python executor.py");
        assert_eq!(
            mezzo_proto::Resources::from_proto(&t.resources).scalar("mem"),
            48.0
        );
    }

    #[test]
    fn launch_group_and_unsupported_operations() {
        let c = parse(json!({"type": "ACCEPT", "framework_id": {"value": "f"},
            "accept": {"offer_ids": [{"value": "o"}], "operations": [{"type": "LAUNCH_GROUP",
                "launch_group": {"executor": {"type": "DEFAULT", "executor_id": {"value": "e"}},
                                 "task_group": {"tasks": [pymesos_task("a"), pymesos_task("b")]}}}]}}))
        .unwrap();
        let Action::Actor(Call::Accept(a)) = c.action else {
            panic!()
        };
        let Some(operation::Operation::LaunchGroup(g)) = &a.operations[0].operation else {
            panic!()
        };
        assert_eq!(g.task_infos.len(), 2);
        let e = err(json!({"type": "ACCEPT", "framework_id": {"value": "f"},
            "accept": {"offer_ids": [], "operations": [{"type": "RESERVE"}]}}));
        assert!(
            e.contains("accept.operations[0].type") && e.contains("RESERVE"),
            "{e}"
        );
    }

    #[test]
    fn missing_task_fields_are_named() {
        let mut t = pymesos_task("t");
        t.as_object_mut().unwrap().remove("task_id");
        let e = err(json!({"type": "ACCEPT", "framework_id": {"value": "f"},
            "accept": {"offer_ids": [{"value": "o"}],
                "operations": [{"type": "LAUNCH", "launch": {"task_infos": [pymesos_task("ok"), t]}}]}}));
        assert_eq!(
            e,
            "Missing required field 'accept.operations[0].launch.task_infos[1].task_id'"
        );
        let mut t = pymesos_task("t");
        t["resources"][0]["scalar"] = json!({"value": "lots"});
        let e = err(json!({"type": "ACCEPT", "framework_id": {"value": "f"},
            "accept": {"operations": [{"type": "LAUNCH", "launch": {"task_infos": [t]}}]}}));
        assert_eq!(
            e,
            "'accept.operations[0].launch.task_infos[0].resources[0].scalar.value' must be a number"
        );
    }

    #[test]
    fn decline_revive_suppress_kill_shutdown_reconcile() {
        let f = json!({"value": "f"});
        let c = parse(json!({"type": "DECLINE", "framework_id": f,
            "decline": {"offer_ids": [{"value": "o"}], "filters": {"refuse_seconds": 30}}}))
        .unwrap();
        let Action::Actor(Call::Decline(d)) = c.action else {
            panic!()
        };
        assert_eq!(
            (d.offer_ids, d.filters.unwrap().refuse_seconds),
            (vec!["o".to_string()], Some(30.0))
        );

        let c = parse(json!({"type": "REVIVE", "framework_id": f, "revive": {"roles": ["r"]}}))
            .unwrap();
        assert!(matches!(c.action, Action::Actor(Call::Revive(ref r)) if r.roles == ["r"]));
        let c = parse(json!({"type": "SUPPRESS", "framework_id": f})).unwrap();
        assert!(matches!(c.action, Action::Actor(Call::Suppress(ref r)) if r.roles.is_empty()));

        let c = parse(
            json!({"type": "KILL", "framework_id": f, "kill": {"task_id": {"value": "t"},
            "kill_policy": {"grace_period": {"nanoseconds": "1000000000"}}}}),
        )
        .unwrap();
        let Action::Actor(Call::Kill(k)) = c.action else {
            panic!()
        };
        assert_eq!(
            (k.task_id.as_str(), k.grace_period_seconds),
            ("t", Some(1.0))
        );
        assert_eq!(
            err(json!({"type": "KILL", "framework_id": f, "kill": {}})),
            "Missing required field 'kill.task_id'"
        );

        let c = parse(json!({"type": "SHUTDOWN", "framework_id": f,
            "shutdown": {"executor_id": {"value": "t"}, "agent_id": {"value": "a"}}}))
        .unwrap();
        let Action::Actor(Call::Kill(k)) = c.action else {
            panic!()
        };
        assert_eq!((k.task_id.as_str(), k.agent_id.as_str()), ("t", "a"));

        let c = parse(json!({"type": "RECONCILE", "framework_id": f,
            "reconcile": {"tasks": [{"task_id": {"value": "t"}}]}}))
        .unwrap();
        let Action::Actor(Call::Reconcile(r)) = c.action else {
            panic!()
        };
        assert_eq!(r.tasks[0].task_id, "t");
        let c = parse(json!({"type": "RECONCILE", "framework_id": f, "reconcile": {"tasks": []}}))
            .unwrap();
        assert!(matches!(c.action, Action::Actor(Call::Reconcile(ref r)) if r.tasks.is_empty()));
    }

    #[test]
    fn acknowledge_decodes_the_uuid() {
        let uuid = uuid::Uuid::new_v4();
        let c = parse(
            json!({"type": "ACKNOWLEDGE", "framework_id": {"value": "f"},
            "acknowledge": {"agent_id": {"value": "a"}, "task_id": {"value": "t"},
                            "uuid": base64_encode(uuid.as_bytes())}}),
        )
        .unwrap();
        let Action::Actor(Call::Acknowledge(a)) = c.action else {
            panic!()
        };
        assert_eq!(a.uuid, uuid.as_bytes());
        assert_eq!((a.agent_id.as_str(), a.task_id.as_str()), ("a", "t"));
        let e = err(
            json!({"type": "ACKNOWLEDGE", "framework_id": {"value": "f"},
            "acknowledge": {"agent_id": {"value": "a"}, "task_id": {"value": "t"}, "uuid": "%%"}}),
        );
        assert!(e.contains("acknowledge.uuid"), "{e}");
        let e = err(
            json!({"type": "ACKNOWLEDGE", "framework_id": {"value": "f"},
            "acknowledge": {"task_id": {"value": "t"}, "uuid": "AA=="}}),
        );
        assert_eq!(e, "Missing required field 'acknowledge.agent_id'");
    }

    #[test]
    fn message_and_request_are_accepted_without_action() {
        let c = parse(json!({"type": "MESSAGE", "framework_id": {"value": "f"},
            "message": {"agent_id": {"value": "a"}, "executor_id": {"value": "e"}, "data": "aGk="}}))
        .unwrap();
        assert!(matches!(c.action, Action::Nothing(_)));
        assert!(
            err(json!({"type": "MESSAGE", "framework_id": {"value": "f"},
            "message": {"agent_id": {"value": "a"}, "executor_id": {"value": "e"}}}))
            .contains("message.data")
        );
        let c = parse(json!({"type": "REQUEST", "framework_id": {"value": "f"},
            "request": {"requests": []}}))
        .unwrap();
        assert!(matches!(c.action, Action::Nothing(_)));
    }

    #[test]
    fn events_use_mesos_json_shapes() {
        let info = v1::MasterInfo {
            id: "m".into(),
            ip: "127.0.0.1".into(),
            port: 5050,
            hostname: "localhost".into(),
            version: "1.11.0".into(),
            epoch: 1,
        };
        let sub = event_json(&v1::Event {
            epoch: 1,
            event: Some(event::Event::Subscribed(event::Subscribed {
                framework_id: "f".into(),
                heartbeat_interval_seconds: 15.0,
                master_info: Some(info),
            })),
        })
        .unwrap();
        assert_eq!(sub["type"], "SUBSCRIBED");
        assert_eq!(sub["subscribed"]["framework_id"]["value"], "f");
        assert_eq!(sub["subscribed"]["heartbeat_interval_seconds"], 15.0);
        let mi = &sub["subscribed"]["master_info"];
        assert_eq!(mi["ip"], u32::from_ne_bytes([127, 0, 0, 1]));
        assert_eq!(mi["address"]["ip"], "127.0.0.1");
        assert_eq!(mi["port"], 5050);

        let offers = event_json(&v1::Event {
            epoch: 1,
            event: Some(event::Event::Offers(event::Offers {
                offers: vec![v1::Offer {
                    id: "o".into(),
                    framework_id: "f".into(),
                    agent_id: "a".into(),
                    hostname: "h".into(),
                    resources: mezzo_proto::Resources::parse("cpus:2;ports:[31000-31005]")
                        .unwrap()
                        .to_proto(),
                    attributes: mezzo_proto::resources::parse_attributes("rack:r1;level:3")
                        .unwrap(),
                    role: "web".into(),
                }],
            })),
        })
        .unwrap();
        let o = &offers["offers"]["offers"][0];
        assert_eq!(o["id"]["value"], "o");
        assert_eq!(o["agent_id"]["value"], "a");
        assert_eq!(o["allocation_info"]["role"], "web");
        let cpus = &o["resources"][0];
        assert_eq!(
            (cpus["name"].as_str(), cpus["type"].as_str()),
            (Some("cpus"), Some("SCALAR"))
        );
        assert_eq!(cpus["scalar"]["value"], 2.0);
        assert_eq!(cpus["role"], "*");
        assert_eq!(cpus["allocation_info"]["role"], "web");
        let ports = &o["resources"][1];
        assert_eq!(ports["type"], "RANGES");
        assert_eq!(
            ports["ranges"]["range"][0],
            json!({"begin": 31000, "end": 31005})
        );
        let attrs = o["attributes"].as_array().unwrap();
        assert!(attrs.contains(&json!({"name": "rack", "type": "TEXT", "text": {"value": "r1"}})));
        assert!(
            attrs.contains(&json!({"name": "level", "type": "SCALAR", "scalar": {"value": 3.0}}))
        );

        let uuid = uuid::Uuid::new_v4();
        let up = event_json(&v1::Event {
            epoch: 1,
            event: Some(event::Event::Update(event::Update {
                status: Some(v1::TaskStatus {
                    task_id: "t".into(),
                    state: v1::TaskState::TaskRunning as i32,
                    source: v1::StatusSource::SourceExecutor as i32,
                    agent_id: "a".into(),
                    timestamp: 12.5,
                    uuid: uuid.as_bytes().to_vec(),
                    healthy: Some(true),
                    ..Default::default()
                }),
            })),
        })
        .unwrap();
        let s = &up["update"]["status"];
        assert_eq!(s["task_id"]["value"], "t");
        assert_eq!(s["state"], "TASK_RUNNING");
        assert_eq!(s["source"], "SOURCE_EXECUTOR");
        assert_eq!(s["executor_id"]["value"], "t");
        assert_eq!(s["agent_id"]["value"], "a");
        assert_eq!(s["healthy"], true);
        assert!(s.get("reason").is_none());
        assert_eq!(
            base64_decode(s["uuid"].as_str().unwrap()).unwrap(),
            uuid.as_bytes()
        );

        // Master-generated updates carry no uuid: clients must not ack them.
        let lost = status_json(&v1::TaskStatus {
            task_id: "t".into(),
            state: v1::TaskState::TaskLost as i32,
            reason: v1::StatusReason::ReasonInvalidOffers as i32,
            message: "Offer o is no longer valid".into(),
            ..Default::default()
        });
        assert!(lost.get("uuid").is_none());
        assert!(lost.get("executor_id").is_none());
        assert_eq!(lost["reason"], "REASON_INVALID_OFFERS");
        assert_eq!(lost["source"], "SOURCE_MASTER");

        let ev = |e| {
            event_json(&v1::Event {
                epoch: 1,
                event: Some(e),
            })
            .unwrap()
        };
        assert_eq!(
            ev(event::Event::Rescind(event::Rescind {
                offer_id: "o".into()
            })),
            json!({"type": "RESCIND", "rescind": {"offer_id": {"value": "o"}}})
        );
        assert_eq!(
            ev(event::Event::Error(event::Error {
                message: "bye".into()
            })),
            json!({"type": "ERROR", "error": {"message": "bye"}})
        );
        assert_eq!(
            ev(event::Event::Heartbeat(event::Heartbeat {})),
            json!({"type": "HEARTBEAT"})
        );
        assert_eq!(
            ev(event::Event::Failure(event::Failure {
                agent_id: "a".into(),
                executor_id: "e".into(),
                status: Some(137),
            })),
            json!({"type": "FAILURE", "failure": {"agent_id": {"value": "a"},
                "executor_id": {"value": "e"}, "status": 137}})
        );
        assert!(event_json(&v1::Event {
            epoch: 1,
            event: None
        })
        .is_none());
    }

    #[test]
    fn shutdown_targets_only_live_executors() {
        use crate::sim::{task, Sim};
        let mut sim = Sim::new(crate::config::MasterConfig::default(), 1);
        sim.add_agent("a", "cpus:4;mem:1024").unwrap();
        let f = sim.subscribe("f", "*").unwrap();
        let g = sim.subscribe("g", "*").unwrap();
        sim.allocate();
        let offer = sim.frameworks["f"].offers.keys().next().cloned().unwrap();
        sim.launch(
            "f",
            &offer,
            vec![task("live", "cpus:1;mem:32"), task("done", "cpus:1;mem:32")],
        )
        .unwrap();
        sim.agent_update("a", &f, "done", mezzo_proto::v1::TaskState::TaskFinished);
        let snap = Snapshot::of(&sim.master);
        let k = |fw: &str, t: &str| v1::KillRequest {
            framework_id: fw.into(),
            task_id: t.into(),
            ..Default::default()
        };
        assert!(executor_running(&snap, &k(&f, "live")));
        assert!(!executor_running(&snap, &k(&f, "done")));
        assert!(!executor_running(&snap, &k(&g, "live")));
        assert!(!executor_running(&snap, &k(&f, "gone")));
        assert!(!executor_running(&Snapshot::default(), &k(&f, "live")));
    }

    #[test]
    fn accept_header_negotiation() {
        let mut h = HeaderMap::new();
        assert_eq!(stream_content_type(&h), Some("application/json"));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert_eq!(stream_content_type(&h), Some("application/json"));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/recordio"),
        );
        assert_eq!(stream_content_type(&h), Some("application/recordio"));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/x-protobuf"),
        );
        assert_eq!(stream_content_type(&h), None);
    }
}
