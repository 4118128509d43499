//! `mezzo_proto::v1` messages in Mesos' v1 JSON (protobuf's JSON mapping of
//! `mesos.v1.*`): ids, resources, attributes and task statuses.
//!
//! Shared by the scheduler API's event stream and the operator API, so both
//! speak one dialect; this module knows no HTTP.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use mezzo_proto::v1;
use serde_json::{json, Map, Value};

/// A Mesos id message: `{"value": "..."}`.
pub(crate) fn id_json(v: &str) -> Value {
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

/// An agent attribute: SCALAR when numeric, TEXT otherwise.
pub(crate) fn attribute_json(a: &v1::Attribute) -> Value {
    let kind = v1::ValueType::try_from(a.r#type).unwrap_or(v1::ValueType::Text);
    match kind {
        v1::ValueType::Scalar => json!({
            "name": a.name, "type": "SCALAR", "scalar": {"value": a.scalar},
        }),
        _ => json!({ "name": a.name, "type": "TEXT", "text": {"value": a.text} }),
    }
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
        m.insert("uuid".into(), json!(STANDARD.encode(&s.uuid)));
    }
    if let Some(h) = s.healthy {
        m.insert("healthy".into(), json!(h));
    }
    Value::Object(m)
}
