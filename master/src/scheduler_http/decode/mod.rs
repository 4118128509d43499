//! JSON `mesos.v1.scheduler.Call` → what the actor takes: the same
//! `mezzo_proto::v1` requests the gRPC `Scheduler` service sends.
//!
//! Pure and unit tested below; a rejection is a [`BadCall`] (HTTP 400)
//! whose message names the field, as Mesos' validation does.

mod reader;
mod task;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use mezzo_proto::v1;
use serde_json::Value;

use crate::state::Call;
pub(crate) use reader::BadCall;
use reader::{bad, J};
use task::{filters, framework_info, ids, kill_policy, offer_operation};

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

/// Protobuf's JSON parsers accept standard and URL-safe base64, padded or
/// not (and Mesos clients send both), so decoding maps the URL-safe
/// alphabet onto the standard one and ignores padding.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// Decodes a protobuf JSON `bytes` field (status update uuids, message data).
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let standard = text
        .trim_end_matches('=')
        .replace('-', "+")
        .replace('_', "/");
    LENIENT.decode(standard).ok()
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
        "SUBSCRIBE" => subscribe(&root, &framework_id)?,
        "TEARDOWN" => Action::Actor(Call::Teardown(v1::TeardownRequest { framework_id: fid })),
        "ACCEPT" => accept(&root, fid)?,
        "DECLINE" => {
            let d = root.req("decline")?;
            Action::Actor(Call::Decline(v1::DeclineRequest {
                framework_id: fid,
                offer_ids: ids(&d, "offer_ids")?,
                filters: filters(&d)?,
            }))
        }
        "REVIVE" | "SUPPRESS" => revive_or_suppress(&root, kind, fid)?,
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
        "ACKNOWLEDGE" => acknowledge(&root, fid)?,
        "RECONCILE" => reconcile(&root, fid)?,
        "MESSAGE" | "REQUEST" | "ACCEPT_INVERSE_OFFERS" | "DECLINE_INVERSE_OFFERS" => {
            ignored(&root, kind)?
        }
        other => return Err(bad(format!("Call type {other} is not supported by Mezzo"))),
    };
    Ok(ParsedCall {
        kind,
        framework_id,
        action,
    })
}

/// SUBSCRIBE: a top-level `framework_id` alone is a failover too.
fn subscribe(root: &J, framework_id: &str) -> Result<Action, BadCall> {
    let s = root.req("subscribe")?;
    let mut info = framework_info(&s.req("framework_info")?)?;
    match (framework_id.is_empty(), info.id.is_empty()) {
        (false, true) => info.id = framework_id.to_string(),
        (false, false) if info.id != framework_id => {
            return Err(bad(
                "'framework_id' differs from 'subscribe.framework_info.id'",
            ))
        }
        _ => {}
    }
    Ok(Action::Subscribe(v1::SubscribeRequest {
        framework_info: Some(info),
        suppressed_roles: s.opt_strings("suppressed_roles")?,
    }))
}

fn accept(root: &J, framework_id: String) -> Result<Action, BadCall> {
    let a = root.req("accept")?;
    let mut operations = Vec::new();
    for op in a.opt_items("operations")? {
        operations.push(offer_operation(&op)?);
    }
    Ok(Action::Actor(Call::Accept(v1::AcceptRequest {
        framework_id,
        offer_ids: ids(&a, "offer_ids")?,
        operations,
        filters: filters(&a)?,
    })))
}

fn revive_or_suppress(root: &J, kind: &str, framework_id: String) -> Result<Action, BadCall> {
    let field = kind.to_ascii_lowercase();
    let roles = match root.opt(&field)? {
        Some(r) => r.opt_strings("roles")?,
        None => Vec::new(),
    };
    let req = v1::RolesRequest {
        framework_id,
        roles,
    };
    Ok(Action::Actor(if kind == "REVIVE" {
        Call::Revive(req)
    } else {
        Call::Suppress(req)
    }))
}

fn acknowledge(root: &J, framework_id: String) -> Result<Action, BadCall> {
    let a = root.req("acknowledge")?;
    let uuid_j = a.req("uuid")?;
    let uuid = base64_decode(&uuid_j.string()?)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| bad("'acknowledge.uuid' must be non-empty base64"))?;
    Ok(Action::Actor(Call::Acknowledge(v1::AcknowledgeRequest {
        framework_id,
        agent_id: a.req("agent_id")?.id()?,
        task_id: a.req("task_id")?.id()?,
        uuid,
    })))
}

fn reconcile(root: &J, framework_id: String) -> Result<Action, BadCall> {
    let mut tasks = Vec::new();
    if let Some(r) = root.opt("reconcile")? {
        for t in r.opt_items("tasks")? {
            tasks.push(v1::reconcile_request::Task {
                task_id: t.req("task_id")?.id()?,
                agent_id: t.opt_id("agent_id")?,
            });
        }
    }
    Ok(Action::Actor(Call::Reconcile(v1::ReconcileRequest {
        framework_id,
        tasks,
    })))
}

/// Calls that are validated and then answered 202 with nothing to do.
fn ignored(root: &J, kind: &str) -> Result<Action, BadCall> {
    Ok(match kind {
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
        _ => Action::Nothing("Mezzo makes no inverse offers"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use mezzo_proto::v1::operation;
    use serde_json::json;

    fn base64_encode(data: &[u8]) -> String {
        STANDARD.encode(data)
    }

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
}
