//! Scenario tests of the core: deployments, offers, updates and ticks together.
//! The wall clock stands in for the actor's.
#![allow(clippy::disallowed_methods)]

use super::*;

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn offer(id: &str, host: &str, res: &str) -> v1::Offer {
    v1::Offer {
        id: id.into(),
        agent_id: format!("agent-{host}"),
        hostname: host.into(),
        resources: Resources::parse(res).unwrap().to_proto(),
        ..Default::default()
    }
}

fn running(core: &mut Core, healthy: Option<bool>) {
    let ids: Vec<(String, String)> = core
        .instances
        .values()
        .map(|i| (i.task_id.clone(), i.agent_id.clone()))
        .collect();
    for (t, a) in ids {
        core.on_update(
            &v1::TaskStatus {
                task_id: t,
                agent_id: a,
                state: v1::TaskState::TaskRunning as i32,
                healthy,
                ..Default::default()
            },
            now(),
        );
    }
}

#[test]
fn create_launch_run_and_finish_a_deployment() {
    let mut core = Core::new(Settings::default(), Box::new(SequentialIds::default()));
    core.connected = true;
    let body = json!({"id": "web", "cmd": "sleep 100", "instances": 2, "cpus": 0.1, "mem": 16});
    let (app, result) = core.create_app(&body, false, now()).unwrap();
    assert_eq!(app["id"], "/web");
    assert_eq!(app["deployments"][0]["id"], json!(result.deployment_id));
    core.tick(now());
    assert_eq!(core.queue["/web"].count, 2);
    assert!(core.effects.contains(&Effect::Revive));
    core.effects.clear();
    core.on_offers(
        vec![offer("o1", "h1", "cpus:1;mem:100;ports:[31000-31010]")],
        now(),
    );
    assert_eq!(core.instances.len(), 2);
    assert!(matches!(
        &core.effects[0],
        Effect::Launch { tasks, refuse_seconds: Some(r), .. } if tasks.len() == 2 && *r == 1.0
    ));
    running(&mut core, None);
    core.tick(now());
    assert!(core.deployments.is_empty(), "{:?}", core.deployments);
    assert!(core.effects.contains(&Effect::Suppress));
    // A second change while idle is fine; a third while that one runs is a 409.
    let (_, _) = core
        .update_app("/web", &json!({"cmd": "sleep 200"}), true, false, now())
        .unwrap();
    let err = core
        .update_app("/web", &json!({"instances": 3}), true, false, now())
        .unwrap_err();
    assert!(matches!(err, ApiError::Conflict { .. }));
    assert!(core
        .update_app("/web", &json!({"instances": 3}), true, true, now())
        .is_ok());
}

#[test]
fn unreachable_task_waits_for_inactive_then_is_replaced_and_the_surplus_goes_on_return() {
    let mut core = Core::new(Settings::default(), Box::new(SequentialIds::default()));
    core.connected = true;
    let body = json!({
        "id": "web", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 16,
        "healthChecks": [{"protocol": "COMMAND", "command": {"value": "true"}, "maxConsecutiveFailures": 1}],
        "unreachableStrategy": {"inactiveAfterSeconds": 5, "expungeAfterSeconds": 100}
    });
    core.create_app(&body, false, now()).unwrap();
    core.tick(now());
    core.on_offers(
        vec![offer("o1", "h1", "cpus:1;mem:100;ports:[31000-31010]")],
        now(),
    );
    running(&mut core, Some(false));
    let t0 = now() - chrono::Duration::seconds(6);
    let first = core.instances.keys().next().unwrap().clone();
    let agent = core.instances[&first].agent_id.clone();
    let status = |state: v1::TaskState| v1::TaskStatus {
        task_id: first.clone(),
        agent_id: agent.clone(),
        state: state as i32,
        ..Default::default()
    };
    // Launched well before its replacement will be (killSelection compares ages).
    core.instances.get_mut(&first).unwrap().staged_at = t0;
    core.effects.clear();
    core.on_update(&status(v1::TaskState::TaskUnreachable), t0);
    core.tick(t0 + chrono::Duration::seconds(1));
    // Kept, not healthy, not killed for its (failed) health, not replaced yet.
    assert_eq!(core.instances[&first].state, "TASK_UNREACHABLE");
    assert!(core.instances[&first].kill_requested_at.is_none());
    assert_eq!(core.counts("/web"), (0, 0, 0, 0));
    assert!(!core.queue.contains_key("/web"));
    assert!(!core
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Kill { .. })));
    // Inactive: a replacement is queued; the task itself is left alone.
    core.tick(now());
    assert_eq!(core.queue["/web"].count, 1);
    core.on_offers(
        vec![offer("o2", "h2", "cpus:1;mem:100;ports:[31000-31010]")],
        now(),
    );
    let second = core
        .instances
        .keys()
        .find(|k| **k != first)
        .unwrap()
        .clone();
    core.on_update(
        &v1::TaskStatus {
            task_id: second.clone(),
            agent_id: "agent-h2".into(),
            state: v1::TaskState::TaskRunning as i32,
            healthy: Some(true),
            ..Default::default()
        },
        now(),
    );
    core.tick(now());
    assert!(core.instances[&first].kill_requested_at.is_none());
    // Back: running again, it counts, and the surplus is killed (youngest first).
    core.on_update(&status(v1::TaskState::TaskRunning), now());
    assert!(core.instances[&first].unreachable_since.is_none());
    core.on_update(
        &v1::TaskStatus {
            healthy: Some(true),
            ..status(v1::TaskState::TaskRunning)
        },
        now(),
    );
    core.tick(now());
    assert!(core.instances[&first].kill_requested_at.is_none());
    assert_eq!(
        core.instances[&second].kill_reason.as_deref(),
        Some("ScaleDown")
    );
}

#[test]
fn unreachable_task_is_expunged_after_expunge_after_seconds() {
    let mut core = Core::new(Settings::default(), Box::new(SequentialIds::default()));
    core.connected = true;
    let body = json!({
        "id": "web", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 16,
        "unreachableStrategy": {"inactiveAfterSeconds": 1, "expungeAfterSeconds": 2}
    });
    core.create_app(&body, false, now()).unwrap();
    core.tick(now());
    core.on_offers(
        vec![offer("o1", "h1", "cpus:1;mem:100;ports:[31000-31010]")],
        now(),
    );
    running(&mut core, None);
    let t0 = now();
    let id = core.instances.keys().next().unwrap().clone();
    let unreachable = v1::TaskStatus {
        task_id: id.clone(),
        agent_id: "agent-h1".into(),
        state: v1::TaskState::TaskUnreachable as i32,
        ..Default::default()
    };
    core.on_update(&unreachable, t0);
    core.tick(t0 + chrono::Duration::seconds(3));
    assert!(!core.instances.contains_key(&id));
    // Should it come back, it is unknown: killed.
    core.effects.clear();
    core.on_update(
        &v1::TaskStatus {
            state: v1::TaskState::TaskRunning as i32,
            ..unreachable
        },
        now(),
    );
    assert!(core
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Kill { task_id, .. } if *task_id == id)));
}

#[test]
fn unreachable_strategy_defaults_and_validation() {
    let app = Core::parse_app(&json!({"id": "a", "cmd": "x"})).unwrap();
    assert_eq!(app.unreachable_after(), Some((300.0, 600.0)));
    let app = Core::parse_app(&json!({"id": "a", "cmd": "x", "unreachableStrategy": "disabled"}))
        .unwrap();
    assert_eq!(app.unreachable_after(), None);
    let app = Core::parse_app(
        &json!({"id": "a", "cmd": "x", "unreachableStrategy": {"inactiveAfterSeconds": 0}}),
    )
    .unwrap();
    assert_eq!(app.unreachable_after(), Some((0.0, 600.0)));
    let bad = json!({"id": "a", "cmd": "x", "unreachableStrategy": {"inactiveAfterSeconds": 10, "expungeAfterSeconds": 5}});
    assert!(matches!(Core::parse_app(&bad), Err(ApiError::Invalid(_))));
}

#[test]
fn unused_offers_are_counted_per_reason() {
    let mut core = Core::new(Settings::default(), Box::new(SequentialIds::default()));
    core.connected = true;
    let body = json!({"id": "big", "cmd": "x", "cpus": 4, "mem": 16});
    core.create_app(&body, false, now()).unwrap();
    core.tick(now());
    core.on_offers(
        vec![offer("o1", "h1", "cpus:1;mem:100;ports:[31000-31010]")],
        now(),
    );
    let q = core.queue_json(now());
    let reasons = &q["queue"][0]["processedOffersSummary"]["rejectSummaryLastOffers"];
    let cpus = reasons
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["reason"] == "InsufficientCpus")
        .unwrap();
    assert_eq!(cpus["declined"], 1);
    assert!(matches!(core.effects.last(), Some(Effect::Decline { .. })));
}

#[test]
fn rollback_restores_the_previous_config_without_touching_its_tasks() {
    let mut core = Core::new(Settings::default(), Box::new(SequentialIds::default()));
    core.connected = true;
    let body = json!({"id": "web", "cmd": "good", "instances": 1, "cpus": 0.1, "mem": 16});
    core.create_app(&body, false, now()).unwrap();
    core.tick(now());
    core.on_offers(
        vec![offer("o1", "h1", "cpus:1;mem:100;ports:[31000-31010]")],
        now(),
    );
    running(&mut core, None);
    core.tick(now());
    let old_task = core.instances.keys().next().unwrap().clone();
    let (_, d) = core
        .update_app("/web", &json!({"cmd": "bad"}), true, false, now())
        .unwrap();
    let rollback = core
        .delete_deployment(&d.deployment_id, false, now())
        .unwrap()
        .unwrap();
    assert_ne!(rollback.deployment_id, d.deployment_id);
    assert_eq!(core.apps["/web"].app.cmd.as_deref(), Some("good"));
    core.tick(now());
    assert!(core.instances[&old_task].kill_requested_at.is_none());
    assert!(core.deployments.is_empty(), "converged at once");
}

#[test]
fn periodic_implicit_reconciliation_finds_and_kills_tasks_this_framework_does_not_know() {
    let settings = Settings {
        reconciliation_initial_delay: 15.0,
        reconciliation_interval: 600.0,
        ..Settings::default()
    };
    let mut core = Core::new(settings, Box::new(SequentialIds::default()));
    let t0 = now();
    core.on_subscribed("fw-1", t0);
    // On subscribing: implicit reconciliation at once (no task known yet).
    assert_eq!(core.effects, vec![Effect::Reconcile(Vec::new())]);
    core.effects.clear();
    let reconciles = |core: &Core| {
        core.effects
            .iter()
            .filter(|e| matches!(e, Effect::Reconcile(t) if t.is_empty()))
            .count()
    };
    core.tick(t0 + chrono::Duration::seconds(10));
    assert_eq!(reconciles(&core), 0, "not before the initial delay");
    core.tick(t0 + chrono::Duration::seconds(16));
    assert_eq!(reconciles(&core), 1, "after the initial delay");
    core.effects.clear();
    core.tick(t0 + chrono::Duration::seconds(300));
    assert_eq!(reconciles(&core), 0, "then every interval");
    core.tick(t0 + chrono::Duration::seconds(617));
    assert_eq!(reconciles(&core), 1);
    core.effects.clear();
    // The master's answer names a task this framework never launched (an
    // agent came back after a failover with a task replaced meanwhile).
    core.on_update(
        &v1::TaskStatus {
            task_id: "web.orphan".into(),
            agent_id: "agent-h1".into(),
            state: v1::TaskState::TaskRunning as i32,
            reason: v1::StatusReason::ReasonReconciliation as i32,
            ..Default::default()
        },
        t0 + chrono::Duration::seconds(617),
    );
    assert!(core.effects.contains(&Effect::Kill {
        task_id: "web.orphan".into(),
        agent_id: "agent-h1".into(),
        grace: None,
    }));
    // Nothing while disconnected.
    core.effects.clear();
    core.on_disconnected();
    core.tick(t0 + chrono::Duration::seconds(2000));
    assert_eq!(reconciles(&core), 0);
}
