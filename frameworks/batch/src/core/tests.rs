//! Unit tests of the core: no I/O, a clock the test moves, sequential run ids.

use chrono::{DateTime, Duration, TimeZone, Utc};
use mezzo_sdk::{v1, Effect, Resources};
use serde_json::{json, Value};

use super::*;
use crate::ids::SequentialRunIds;
use crate::run::RunStatus;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
}

fn spec(v: Value) -> JobSpec {
    serde_json::from_value(v).unwrap()
}

fn job(id: &str, run: Value) -> JobSpec {
    spec(json!({"id": id, "run": run}))
}

fn schedule(v: Value) -> ScheduleSpec {
    serde_json::from_value(v).unwrap()
}

fn offer(id: &str, res: &str) -> v1::Offer {
    v1::Offer {
        id: id.into(),
        agent_id: "agent-1".into(),
        hostname: "node-1".into(),
        resources: Resources::parse(res).unwrap().to_proto(),
        ..Default::default()
    }
}

/// A core at a time the test moves, subscribed unless said otherwise.
struct H {
    core: Core,
    now: DateTime<Utc>,
}

impl H {
    fn new() -> H {
        let mut core = Core::new(Box::new(SequentialRunIds::default()));
        core.on_subscribed("fw-1", t0());
        core.take_output();
        H { core, now: t0() }
    }

    fn at(&mut self, secs: i64) -> DateTime<Utc> {
        self.now = t0() + Duration::seconds(secs);
        self.now
    }

    fn out(&mut self) -> Output {
        self.core.take_output()
    }

    fn create(&mut self, spec: JobSpec) {
        self.core.create_job(spec, self.now).unwrap();
        self.out();
    }

    fn start(&mut self, job: &str) -> String {
        let id = self.core.start_run(job, self.now).unwrap().id.clone();
        self.out();
        id
    }

    /// Offers one big offer; returns the task ids launched.
    fn offer(&mut self) -> Vec<String> {
        self.core
            .on_offers(vec![offer("o1", "cpus:8;mem:8192;disk:1000")], self.now);
        self.out()
            .effects
            .iter()
            .flat_map(Effect::launched_task_ids)
            .collect()
    }

    fn update(&mut self, task: &str, state: v1::TaskState) -> Output {
        let status = v1::TaskStatus {
            task_id: task.into(),
            agent_id: "agent-1".into(),
            state: state as i32,
            source: v1::StatusSource::SourceExecutor as i32,
            exit_code: Some(if state == v1::TaskState::TaskFinished {
                0
            } else {
                1
            }),
            ..Default::default()
        };
        self.core.on_update(&status, self.now);
        self.out()
    }

    fn tick(&mut self) -> Output {
        self.core.tick(self.now);
        self.out()
    }

    fn run(&self, job: &str, run: &str) -> crate::run::JobRun {
        self.core.run(job, run).unwrap().clone()
    }
}

fn keys(out: &Output) -> Vec<String> {
    out.writes
        .iter()
        .map(|w| match w {
            StoreWrite::Put { key, .. } => format!("put {key}"),
            StoreWrite::Delete { key } => format!("delete {key}"),
        })
        .collect()
}

fn kills(out: &Output) -> Vec<String> {
    out.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Kill { task_id, .. } => Some(task_id.clone()),
            _ => None,
        })
        .collect()
}

fn invalid_paths(e: CoreError) -> Vec<String> {
    match e {
        CoreError::Invalid { details } => details.into_iter().map(|v| v.path).collect(),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn creating_a_job_validates_it_and_writes_its_record() {
    let mut h = H::new();
    let e = h
        .core
        .create_job(job("a", json!({"cmd": "true", "mem": 8})), t0())
        .unwrap_err();
    assert_eq!(invalid_paths(e), ["/run/mem"]);
    let e = h
        .core
        .create_job(job("Bad_Id", json!({"cmd": "true"})), t0())
        .unwrap_err();
    assert_eq!(invalid_paths(e), ["/id"]);
    assert!(
        h.out().writes.is_empty(),
        "a refused request writes nothing"
    );
    let with_schedule = spec(json!({"id": "a", "run": {"cmd": "true"},
        "schedules": [{"id": "s", "cron": "0 * * * *"}]}));
    let record = h.core.create_job(with_schedule, t0()).unwrap();
    assert_eq!(record.schedules.len(), 1, "inline schedules are kept apart");
    assert!(record.spec.schedules.is_empty());
    let out = h.out();
    assert_eq!(keys(&out), ["put jobs/a"]);
    let StoreWrite::Put { value, .. } = &out.writes[0] else {
        unreachable!()
    };
    let stored: JobRecord = serde_json::from_slice(value).unwrap();
    assert_eq!(&stored, h.core.job("a").unwrap());
    let e = h
        .core
        .create_job(job("a", json!({"cmd": "true"})), t0())
        .unwrap_err();
    assert_eq!(e, CoreError::JobExists("a".into()));
}

#[test]
fn updating_a_job_checks_its_id_and_keeps_its_schedules() {
    let mut h = H::new();
    h.create(job("a", json!({"cmd": "true"})));
    h.core
        .create_schedule("a", schedule(json!({"id": "s", "cron": "* * * * *"})), t0())
        .unwrap();
    h.out();
    let e = h
        .core
        .update_job("a", job("b", json!({"cmd": "true"})))
        .unwrap_err();
    assert_eq!(invalid_paths(e), ["/id"]);
    let e = h
        .core
        .update_job("a", job("a", json!({"cmd": "true", "cpus": 0})))
        .unwrap_err();
    assert_eq!(invalid_paths(e), ["/run/cpus"]);
    let e = h
        .core
        .update_job("zz", job("zz", json!({"cmd": "true"})))
        .unwrap_err();
    assert_eq!(e, CoreError::JobNotFound("zz".into()));
    assert!(h.out().writes.is_empty());
    let updated = h
        .core
        .update_job("a", job("a", json!({"cmd": "false", "mem": 64})))
        .unwrap();
    assert_eq!(updated.spec.run.cmd.as_deref(), Some("false"));
    assert_eq!(updated.schedules.len(), 1, "PUT keeps the schedules");
    assert_eq!(keys(&h.out()), ["put jobs/a"]);
}

#[test]
fn deleting_a_job_with_active_runs_needs_stop_current_runs() {
    let mut h = H::new();
    h.create(job("a", json!({"cmd": "sleep 60"})));
    let run = h.start("a");
    let task = h.offer().remove(0);
    let e = h.core.delete_job("a", false, h.now).unwrap_err();
    assert_eq!(e, CoreError::ActiveRuns("a".into()));
    assert!(h.out().writes.is_empty());
    let deleted = h.core.delete_job("a", true, h.now).unwrap();
    assert_eq!(deleted.finished.len(), 1);
    assert_eq!(deleted.finished[0].status, RunStatus::Failed);
    let out = h.out();
    assert_eq!(
        keys(&out),
        [
            "put jobs/a".to_string(),
            format!("delete runs/a/{run}"),
            "delete jobs/a".to_string()
        ]
    );
    // Killed as the run stops, and again as a task of the deleted job.
    let killed = kills(&out);
    assert!(
        !killed.is_empty() && killed.iter().all(|k| *k == task),
        "{killed:?}"
    );
    assert_eq!(
        h.core.job("a").unwrap_err(),
        CoreError::JobNotFound("a".into())
    );
    // Its task is forgotten: a late update for it is an unknown task's.
    let out = h.update(&task, v1::TaskState::TaskRunning);
    assert_eq!(kills(&out), [task]);
    assert_eq!(
        h.core.delete_job("a", true, h.now).unwrap_err(),
        CoreError::JobNotFound("a".into())
    );
}

#[test]
fn schedules_are_validated_and_report_their_next_run() {
    let mut h = H::new();
    h.create(job("a", json!({"cmd": "true"})));
    let bad = schedule(json!({"id": "s", "cron": "61 * * * *"}));
    assert_eq!(
        invalid_paths(h.core.create_schedule("a", bad, t0()).unwrap_err()),
        ["/cron"]
    );
    let hourly = schedule(json!({"id": "s", "cron": "0 * * * *", "timezone": "Europe/Paris"}));
    let e = h
        .core
        .create_schedule("zz", hourly.clone(), t0())
        .unwrap_err();
    assert_eq!(e, CoreError::JobNotFound("zz".into()));
    let now = h.at(90);
    let record = h.core.create_schedule("a", hourly.clone(), now).unwrap();
    assert_eq!(next_run_at(&record, now), Some(t0() + Duration::hours(1)));
    assert_eq!(keys(&h.out()), ["put jobs/a"]);
    assert_eq!(
        h.core.create_schedule("a", hourly, now).unwrap_err(),
        CoreError::ScheduleExists("s".into())
    );
    let other = schedule(json!({"id": "t", "cron": "* * * * *"}));
    assert_eq!(
        invalid_paths(h.core.update_schedule("a", "s", other, now).unwrap_err()),
        ["/id"]
    );
    let disabled = schedule(json!({"id": "s", "cron": "* * * * *", "enabled": false}));
    let record = h.core.update_schedule("a", "s", disabled, now).unwrap();
    assert_eq!(next_run_at(&record, now), None);
    assert_eq!(h.core.schedules("a").unwrap().len(), 1);
    h.core.delete_schedule("a", "s").unwrap();
    assert_eq!(
        h.core.schedule("a", "s").unwrap_err(),
        CoreError::ScheduleNotFound("s".into())
    );
    assert_eq!(
        h.core.delete_schedule("a", "s").unwrap_err(),
        CoreError::ScheduleNotFound("s".into())
    );
}

#[test]
fn a_cron_tick_is_written_before_its_run_and_fires_once() {
    let mut h = H::new();
    h.create(job("a", json!({"cmd": "true"})));
    let every_minute = schedule(json!({"id": "m", "cron": "* * * * *"}));
    h.core.create_schedule("a", every_minute, t0()).unwrap();
    h.out();
    h.at(59);
    assert!(h.tick().writes.is_empty(), "nothing due before the minute");
    h.at(60);
    let out = h.tick();
    let run_id = "2024010100010000001";
    assert_eq!(
        keys(&out),
        ["put jobs/a".to_string(), format!("put runs/a/{run_id}")],
        "the handled tick is durable before the run exists"
    );
    assert_eq!(
        h.core.job("a").unwrap().schedules[0].last_tick,
        t0() + Duration::seconds(60)
    );
    let run = h.run("a", run_id);
    assert_eq!(run.schedule_id.as_deref(), Some("m"));
    assert_eq!(run.status, RunStatus::Starting);
    assert_eq!(
        run.starting_deadline,
        Some(t0() + Duration::seconds(60 + 900))
    );
    h.at(61);
    assert!(h.tick().writes.is_empty(), "one run per tick");
    assert_eq!(h.core.active_runs("a").len(), 1);
    assert_eq!(h.core.counters()["schedule.ticks.fired"], 1);
    let s = &h.core.job("a").unwrap().schedules[0];
    assert_eq!(next_run_at(s, h.now), Some(t0() + Duration::seconds(120)));
}

#[test]
fn forbid_skips_a_tick_while_a_run_is_active_and_replace_stops_it() {
    let mut h = H::new();
    h.create(job("a", json!({"cmd": "sleep 600"})));
    let forbid = schedule(json!({"id": "m", "cron": "* * * * *", "concurrencyPolicy": "FORBID"}));
    h.core.create_schedule("a", forbid, t0()).unwrap();
    h.at(60);
    h.tick();
    let first = h.core.active_runs("a")[0].id.clone();
    h.at(120);
    let out = h.tick();
    assert_eq!(keys(&out), ["put jobs/a"], "tick handled, no run");
    assert_eq!(h.core.active_runs("a").len(), 1);
    assert_eq!(h.core.counters()["schedule.ticks.skipped"], 1);

    let replace = schedule(json!({"id": "m", "cron": "* * * * *", "concurrencyPolicy": "REPLACE"}));
    h.core.update_schedule("a", "m", replace, h.now).unwrap();
    h.at(180);
    h.tick();
    let active = h.core.active_runs("a");
    assert_eq!(active.len(), 1);
    assert_ne!(active[0].id, first);
    let old = h.run("a", &first);
    assert_eq!(old.status, RunStatus::Failed);
    assert!(old.reason.unwrap().contains("REPLACE"));
}

#[test]
fn a_manual_run_launches_on_an_offer_after_its_task_is_written() {
    let mut h = H::new();
    h.create(job(
        "a",
        json!({"cmd": "echo $X", "cpus": 0.5, "mem": 64, "env": {"X": "1"}}),
    ));
    let run = h.core.start_run("a", t0()).unwrap().clone();
    assert_eq!(run.status, RunStatus::Starting);
    assert_eq!(keys(&h.out()), [format!("put runs/a/{}", run.id)]);
    assert_eq!(h.core.queued_runs(t0()).len(), 1);
    h.core.on_offers(
        vec![offer("o1", "cpus:1;mem:128"), offer("o2", "cpus:1;mem:128")],
        t0(),
    );
    let out = h.out();
    let task_id = format!("a_{}.0.1", run.id);
    assert_eq!(keys(&out), [format!("put runs/a/{}", run.id)]);
    let StoreWrite::Put { value, .. } = &out.writes[0] else {
        unreachable!()
    };
    let stored: crate::run::JobRun = serde_json::from_slice(value).unwrap();
    assert_eq!(stored.tasks[0].id, task_id, "the task is durable first");
    let Effect::Launch {
        offer_id,
        tasks,
        refuse_seconds,
    } = &out.effects[0]
    else {
        panic!("expected a launch first: {:?}", out.effects)
    };
    assert_eq!((offer_id.as_str(), *refuse_seconds), ("o1", Some(1.0)));
    assert_eq!(tasks[0].task_id, task_id);
    let cmd = tasks[0].command.as_ref().unwrap();
    assert_eq!(cmd.value, "echo $X");
    assert_eq!(cmd.environment[0].name, "X");
    assert!(tasks[0]
        .labels
        .iter()
        .any(|l| l.key == "runId" && l.value == run.id));
    assert_eq!(
        out.effects[1..],
        [
            Effect::Decline {
                offer_ids: vec!["o2".into()],
                refuse_seconds: DECLINE_REFUSE_SECONDS
            },
            Effect::Suppress
        ],
        "the unused offer is declined; nothing else waits, so offers stop"
    );
    assert_eq!(h.run("a", &run.id).status, RunStatus::Active);
    assert_eq!(h.core.counters()["tasks.launched"], 1);
}

#[test]
fn forbid_refuses_a_manual_run_while_one_is_active() {
    let mut h = H::new();
    h.create(job("a", json!({"cmd": "sleep 600"})));
    let forbid = schedule(json!({"id": "m", "cron": "0 0 1 1 *", "concurrencyPolicy": "FORBID"}));
    h.core.create_schedule("a", forbid, t0()).unwrap();
    let first = h.start("a");
    match h.core.start_run("a", t0()).unwrap_err() {
        CoreError::ConcurrentRunForbidden { job, active } => {
            assert_eq!(job, "a");
            assert_eq!(active[0].id, first);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(h.out().writes.is_empty());
    assert_eq!(
        h.core.start_run("zz", t0()).unwrap_err(),
        CoreError::JobNotFound("zz".into())
    );
    // Without FORBID, runs may overlap.
    h.create(job("b", json!({"cmd": "sleep 600"})));
    h.start("b");
    h.start("b");
    assert_eq!(h.core.active_runs("b").len(), 2);
}

#[test]
fn on_failure_retries_with_backoff_until_the_active_deadline() {
    let mut h = H::new();
    h.create(job(
        "a",
        json!({"cmd": "exit 1", "restart": {"policy": "ON_FAILURE", "activeDeadlineSeconds": 5}}),
    ));
    let run = h.start("a");
    let first = h.offer();
    assert_eq!(first.len(), 1);
    h.update(&first[0], v1::TaskState::TaskRunning);
    let out = h.update(&first[0], v1::TaskState::TaskFailed);
    assert_eq!(keys(&out), [format!("put runs/a/{run}")]);
    assert_eq!(h.run("a", &run).status, RunStatus::Active);
    assert!(h.offer().is_empty(), "no relaunch within the backoff");
    h.at(1);
    let second = h.offer();
    assert_eq!(second, [format!("a_{run}.0.2")]);
    h.update(&second[0], v1::TaskState::TaskFailed);
    h.at(2);
    assert!(h.offer().is_empty(), "the backoff doubled");
    h.at(3);
    let third = h.offer();
    assert_eq!(third.len(), 1);
    h.update(&third[0], v1::TaskState::TaskFailed);
    // The next try would be at 7 s, past the 5 s deadline: the run fails at 5 s.
    h.at(4);
    assert!(h.tick().writes.is_empty());
    h.at(5);
    let out = h.tick();
    assert_eq!(
        keys(&out),
        ["put jobs/a".to_string(), format!("delete runs/a/{run}")]
    );
    let done = h.run("a", &run);
    assert_eq!(done.status, RunStatus::Failed);
    assert_eq!(done.tasks.len(), 3);
    assert!(done.reason.unwrap().contains("activeDeadlineSeconds"));
    assert_eq!(h.core.job("a").unwrap().history.failure_count, 1);
}

#[test]
fn the_active_deadline_kills_a_running_task() {
    let mut h = H::new();
    h.create(job(
        "a",
        json!({"cmd": "sleep 600", "taskKillGracePeriodSeconds": 2,
               "restart": {"activeDeadlineSeconds": 3}}),
    ));
    let run = h.start("a");
    let task = h.offer().remove(0);
    h.update(&task, v1::TaskState::TaskRunning);
    h.at(2);
    assert!(kills(&h.tick()).is_empty());
    h.at(3);
    let out = h.tick();
    assert_eq!(
        out.effects[0],
        Effect::Kill {
            task_id: task.clone(),
            agent_id: "agent-1".into(),
            grace: Some(2.0)
        }
    );
    assert_eq!(h.run("a", &run).status, RunStatus::Failed);
    // Unanswered kills are re-sent, from the finished run, until the task ends.
    h.at(4);
    assert!(kills(&h.tick()).is_empty());
    h.at(8);
    assert_eq!(kills(&h.tick()), std::slice::from_ref(&task));
    let out = h.update(&task, v1::TaskState::TaskKilled);
    assert_eq!(keys(&out), ["put jobs/a"], "recorded in the history");
    assert_eq!(h.run("a", &run).tasks[0].status, "TASK_KILLED");
    h.at(20);
    assert!(kills(&h.tick()).is_empty());
}

#[test]
fn task_finished_finishes_the_run_into_its_history() {
    let mut h = H::new();
    h.create(job("a", json!({"cmd": "true", "parallelism": 2})));
    let run = h.start("a");
    let tasks = h.offer();
    assert_eq!(tasks.len(), 2);
    h.update(&tasks[0], v1::TaskState::TaskRunning);
    h.update(&tasks[0], v1::TaskState::TaskFinished);
    assert_eq!(h.run("a", &run).status, RunStatus::Active, "one slot left");
    h.at(7);
    let out = h.update(&tasks[1], v1::TaskState::TaskFinished);
    assert_eq!(
        keys(&out),
        ["put jobs/a".to_string(), format!("delete runs/a/{run}")],
        "history is durable before the active record goes"
    );
    let done = h.run("a", &run);
    assert_eq!(done.status, RunStatus::Success);
    assert_eq!(done.completed_at, Some(h.now));
    assert_eq!(done.tasks[0].exit_code, Some(0));
    let job = h.core.job("a").unwrap();
    assert_eq!(job.history.success_count, 1);
    assert_eq!(job.history.last_success_at, Some(h.now));
    assert!(h.core.active_runs("a").is_empty());
    assert_eq!(h.core.runs("a", true).unwrap()[0].id, run);
    assert!(h.core.runs("a", false).unwrap().is_empty());
    assert_eq!(h.core.counters()["runs.succeeded"], 1);
    // Redelivery after the end changes nothing.
    h.update(&tasks[1], v1::TaskState::TaskFailed);
    assert_eq!(h.run("a", &run).tasks[1].status, "TASK_FINISHED");
}

#[test]
fn history_keeps_the_latest_finished_runs() {
    let mut h = H::new();
    h.create(job("a", json!({"cmd": "false"})));
    let mut ids = Vec::new();
    for i in 0..(KEPT_FINISHED_RUNS + 3) {
        h.at(i as i64);
        let run = h.start("a");
        let task = h.offer().remove(0);
        h.update(&task, v1::TaskState::TaskFailed);
        ids.push(run);
    }
    let job = h.core.job("a").unwrap();
    assert_eq!(job.history.failure_count, (KEPT_FINISHED_RUNS + 3) as u64);
    assert_eq!(job.finished.len(), KEPT_FINISHED_RUNS);
    assert_eq!(
        job.finished.back().map(|r| r.id.as_str()),
        ids.last().map(String::as_str)
    );
    assert_eq!(
        h.core.run("a", &ids[0]).unwrap_err(),
        CoreError::RunNotFound {
            job: "a".into(),
            run: ids[0].clone()
        }
    );
    let listed = h.core.runs("a", true).unwrap();
    assert_eq!(listed[0].id, ids[ids.len() - 1], "most recent first");
}

/// What a store holding `core`'s state would give back at start-up.
fn restored(core: &Core) -> Restored {
    Restored {
        framework_id: core.framework_id().map(str::to_string),
        jobs: core.jobs.clone(),
        runs: core.runs.values().cloned().collect(),
    }
}

#[test]
fn starting_deadline_after_a_restart() {
    let mut h = H::new();
    h.create(job("a", json!({"cmd": "true"})));
    h.create(job("b", json!({"cmd": "true"})));
    let sched = |id: &str| {
        schedule(json!({"id": id, "cron": "*/10 * * * *", "startingDeadlineSeconds": 120}))
    };
    h.core.create_schedule("a", sched("x"), t0()).unwrap();
    h.core.create_schedule("b", sched("y"), t0()).unwrap();
    let before = restored(&h.core);

    // Down from 00:00 to 00:11 for `a`: the 00:10 tick is within its deadline and
    // fires (once); ticks before it are collapsed into it.
    let mut up = Core::new(Box::new(SequentialRunIds::default()));
    up.restore(before);
    up.on_subscribed("fw-1", t0() + Duration::minutes(11));
    assert_eq!(up.active_runs("a").len(), 1);
    assert_eq!(up.active_runs("b").len(), 1);
    let run = up.active_runs("a")[0].clone();
    assert_eq!(run.starting_deadline, Some(t0() + Duration::minutes(12)));

    // Down until 00:45: every tick is past its deadline; none fires, all are handled.
    let mut late = Core::new(Box::new(SequentialRunIds::default()));
    late.restore(restored(&h.core));
    late.tick(t0() + Duration::minutes(45));
    assert!(late.active_runs("a").is_empty());
    assert_eq!(late.counters()["schedule.ticks.missed"], 8);
    assert_eq!(
        late.job("a").unwrap().schedules[0].last_tick,
        t0() + Duration::minutes(40)
    );

    // A scheduled run not launched by its starting deadline fails.
    up.take_output();
    up.tick(t0() + Duration::minutes(12));
    let failed = up.run("a", &run.id).unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    assert!(failed
        .reason
        .as_deref()
        .unwrap_or_default()
        .contains("startingDeadlineSeconds"));
}

#[test]
fn restore_drops_stale_runs_and_subscribing_reconciles_live_tasks() {
    let mut h = H::new();
    h.create(job("a", json!({"cmd": "sleep 600"})));
    let run = h.start("a");
    let task = h.offer().remove(0);
    h.update(&task, v1::TaskState::TaskRunning);
    let mut state = restored(&h.core);
    // A run whose job is gone, and a run already moved to history.
    let mut orphan = state.runs[0].clone();
    orphan.job_id = "gone".into();
    state.runs.push(orphan);
    let mut core = Core::new(Box::new(SequentialRunIds::default()));
    core.restore(state);
    assert_eq!(
        keys(&core.take_output()),
        [format!("delete runs/gone/{run}")]
    );
    assert_eq!(core.framework_id(), Some("fw-1"));
    core.on_subscribed("fw-1", h.now);
    let out = core.take_output();
    assert!(out.writes.is_empty(), "same framework id: nothing to write");
    assert_eq!(
        out.effects,
        [
            Effect::Reconcile(vec![(task.clone(), "agent-1".into())]),
            Effect::Suppress
        ],
        "nothing waits for offers"
    );
    // A new framework id is written (raw, as before).
    core.on_subscribed("fw-2", h.now);
    let out = core.take_output();
    assert_eq!(
        out.writes,
        [StoreWrite::Put {
            key: FRAMEWORK_ID_KEY.into(),
            value: b"fw-2".to_vec()
        }]
    );
    // The restored task's updates reach its run.
    let status = v1::TaskStatus {
        task_id: task.clone(),
        state: v1::TaskState::TaskFinished as i32,
        source: v1::StatusSource::SourceExecutor as i32,
        ..Default::default()
    };
    core.on_update(&status, h.now);
    assert_eq!(core.run("a", &run).unwrap().status, RunStatus::Success);
}

#[test]
fn a_failed_launch_puts_the_slot_back_and_revives() {
    let mut h = H::new();
    h.create(job("a", json!({"cmd": "true"})));
    let run = h.start("a");
    let task = h.offer().remove(0);
    h.core.on_launch_failed(std::slice::from_ref(&task), h.now);
    let out = h.out();
    assert_eq!(keys(&out), [format!("put runs/a/{run}")]);
    assert_eq!(out.effects, [Effect::Revive], "offers are wanted again");
    let r = h.run("a", &run);
    assert_eq!(r.status, RunStatus::Starting);
    assert!(r.tasks.is_empty());
    assert_eq!(h.offer(), [format!("a_{run}.0.2")]);
}

#[test]
fn offers_are_wanted_only_while_slots_wait() {
    let mut h = H::new();
    h.create(job("a", json!({"cmd": "true"})));
    // Nothing waited when it subscribed (H::new), so offers were suppressed.
    h.core.start_run("a", h.now).unwrap();
    assert_eq!(h.out().effects, [Effect::Revive]);
    h.at(REVIVE_EVERY_SECS - 1);
    assert!(h.tick().effects.is_empty(), "revived recently");
    h.at(REVIVE_EVERY_SECS);
    assert_eq!(
        h.tick().effects,
        [Effect::Revive],
        "revived again while waiting"
    );
    h.offer();
    h.at(REVIVE_EVERY_SECS * 3);
    assert!(h.tick().effects.is_empty(), "suppressed once nothing waits");
    h.core.on_disconnected();
    h.create(job("b", json!({"cmd": "true"})));
    h.core.start_run("b", h.now).unwrap();
    assert!(
        h.out().effects.is_empty(),
        "nothing asked while disconnected"
    );
}

#[test]
fn stopping_a_run_kills_it_and_conflicts_once_finished() {
    let mut h = H::new();
    h.create(job("a", json!({"cmd": "sleep 600"})));
    let run = h.start("a");
    let task = h.offer().remove(0);
    let stopped = h.core.stop_run("a", &run, h.now).unwrap();
    assert_eq!(stopped.status, RunStatus::Failed);
    assert_eq!(kills(&h.out()), [task]);
    assert_eq!(
        h.core.stop_run("a", &run, h.now).unwrap_err(),
        CoreError::RunFinished {
            job: "a".into(),
            run: run.clone()
        }
    );
    assert_eq!(
        h.core.stop_run("a", "nope", h.now).unwrap_err(),
        CoreError::RunNotFound {
            job: "a".into(),
            run: "nope".into()
        }
    );
}

#[test]
fn updates_for_unknown_tasks_kill_them_unless_over() {
    let mut h = H::new();
    assert_eq!(
        kills(&h.update("stray", v1::TaskState::TaskRunning)),
        ["stray"]
    );
    assert!(h
        .update("stray", v1::TaskState::TaskFinished)
        .effects
        .is_empty());
}
