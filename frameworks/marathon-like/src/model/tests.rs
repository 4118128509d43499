//! Parsing, defaults and validation of app definitions.

use super::*;
use serde_json::json;

#[test]
fn defaults_follow_marathon() {
    let app = App::from_json(&json!({"id": "web", "cmd": "sleep 1"})).unwrap();
    assert_eq!(app.id, "/web");
    assert_eq!(
        (app.cpus, app.mem, app.disk, app.instances),
        (1.0, 128.0, 0.0, 1)
    );
    assert_eq!(app.backoff_factor, 1.15);
    assert_eq!(app.port_defs().len(), 1, "one dynamic port by default");
    assert_eq!(app.upgrade_strategy, UpgradeStrategy::default());
    assert!(app.validate().is_empty());
    let none = App::from_json(&json!({"id": "w", "cmd": "x", "portDefinitions": []})).unwrap();
    assert!(none.port_defs().is_empty());
    let legacy = App::from_json(&json!({"id": "w", "cmd": "x", "ports": [0, 0]})).unwrap();
    assert_eq!(legacy.port_defs().len(), 2);
}

#[test]
fn type_errors_are_invalid_json() {
    let err = App::from_json(&json!({"id": "w", "cmd": "x", "cpus": "lots"})).unwrap_err();
    match err {
        ParseError::InvalidJson(v) => assert_eq!(v[0].path, "/cpus"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn validation_reports_paths() {
    let cases = [
        (json!({"id": "w", "cmd": "x", "cpus": -1}), "/cpus"),
        (json!({"id": "w", "cmd": "x", "mem": -1}), "/mem"),
        (
            json!({"id": "w", "cmd": "x", "instances": -1}),
            "/instances",
        ),
        (json!({"id": "Bad_Id", "cmd": "x"}), "/id"),
        (json!({"id": "w"}), "/"),
        (json!({"id": "w", "cmd": "x", "args": ["y"]}), "/"),
        (
            json!({"id": "w", "cmd": "x", "upgradeStrategy": {"minimumHealthCapacity": 1.5}}),
            "/upgradeStrategy/minimumHealthCapacity",
        ),
        (
            json!({"id": "w", "cmd": "x", "constraints": [["hostname", "BOGUS"]]}),
            "/constraints(0)",
        ),
        (
            json!({"id": "w", "cmd": "x", "portDefinitions": [], "healthChecks": [{"protocol": "HTTP"}]}),
            "/healthChecks(0)/portIndex",
        ),
        (
            json!({"id": "w", "cmd": "x", "backoffFactor": 0.5}),
            "/backoffFactor",
        ),
        (
            json!({"id": "w", "cmd": "x", "killSelection": "RANDOM"}),
            "/killSelection",
        ),
    ];
    for (body, path) in cases {
        let app = App::from_json(&body).unwrap();
        let v = app.validate();
        assert!(v.iter().any(|x| x.path == path), "{body}: {v:?}");
    }
}

#[test]
fn restart_needed_only_for_config_changes() {
    let a = App::from_json(&json!({"id": "w", "cmd": "x"})).unwrap();
    let mut b = a.clone();
    b.instances = 5;
    b.version = Some("v2".into());
    assert!(!a.needs_restart(&b));
    b.cmd = Some("y".into());
    assert!(a.needs_restart(&b));
}

#[test]
fn timestamps_use_millis_and_z() {
    let t = DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    assert_eq!(timestamp(t), "2026-11-24T12:00:00.000Z");
}
