//! `v1::Event` → JSON `mesos.v1.scheduler.Event`, the records of the
//! SUBSCRIBE stream. Pure; the shared message encoders live in
//! [`crate::view`] so the operator API renders the same shapes.

use mezzo_proto::v1::{self, event};
use serde_json::{json, Map, Value};

use crate::view::{attribute_json, id_json, master_info_json, resource_json, status_json};

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

/// The ERROR event a stream ends with when the actor closes it with an error.
pub(crate) fn error_event(message: &str) -> Value {
    json!({"type": "ERROR", "error": {"message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;

    fn base64_decode(text: &str) -> Option<Vec<u8>> {
        STANDARD.decode(text).ok()
    }

    #[test]
    fn subscribed_uses_mesos_json_shapes() {
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
    }

    #[test]
    fn offers_carry_allocation_info_and_v1_resources() {
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
    }

    #[test]
    fn updates_carry_uuid_only_when_acknowledgeable() {
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
    }

    #[test]
    fn rescind_error_heartbeat_failure_and_empty_events() {
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
}
