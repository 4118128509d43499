//! The subscription and task status updates.

use chrono::{DateTime, Utc};
use mezzo_sdk::{task_state, v1, Effect};
use tracing::{debug, info, warn};

use super::{Core, StoreWrite, FRAMEWORK_ID_KEY};

impl Core {
    /// Subscribed (again) as `framework_id`: persist a new id, explicitly reconcile
    /// every task believed live, and act on everything due.
    pub fn on_subscribed(&mut self, framework_id: &str, now: DateTime<Utc>) {
        info!(framework.id = %framework_id, "subscribed");
        self.subscribed = true;
        // A fresh subscription is not suppressed.
        self.revived = true;
        self.last_revive = Some(now);
        if self.framework_id.as_deref() != Some(framework_id) {
            // Raw bytes, not JSON: the layout older versions wrote and read.
            self.out.writes.push(StoreWrite::Put {
                key: FRAMEWORK_ID_KEY.to_string(),
                value: framework_id.as_bytes().to_vec(),
            });
            self.framework_id = Some(framework_id.to_string());
        }
        self.reconcile();
        self.tick(now);
    }

    /// Asks the master for the state of every task believed live (explicit
    /// reconciliation), if there is any.
    pub fn reconcile(&mut self) {
        let live: Vec<(String, String)> = self
            .runs
            .values()
            .chain(self.jobs.values().flat_map(|j| j.finished.iter()))
            .flat_map(|r| r.live_tasks().map(|t| (t.id.clone(), t.agent_id.clone())))
            .collect();
        if !live.is_empty() {
            info!(tasks = live.len(), "reconciling");
            self.effect(Effect::Reconcile(live));
        }
    }

    /// The connection to the master is gone; offers are wanted again after the next
    /// subscription.
    pub fn on_disconnected(&mut self) {
        self.subscribed = false;
        self.revived = false;
    }

    /// A task's status update: recorded in its run (which may finish, retry or kill
    /// other tasks). Tasks that are not ours and not over are killed.
    pub fn on_update(&mut self, status: &v1::TaskStatus, now: DateTime<Utc>) {
        let state = task_state(status);
        let Some(key) = self.tasks.get(&status.task_id).cloned() else {
            if !state.is_terminal() {
                // Not ours (e.g. its job was deleted): nothing should run it.
                warn!(task.id = %status.task_id, "update for an unknown task; killing it");
                self.effect(Effect::Kill {
                    task_id: status.task_id.clone(),
                    agent_id: status.agent_id.clone(),
                    grace: None,
                });
            }
            return;
        };
        let reason =
            v1::StatusReason::try_from(status.reason).unwrap_or(v1::StatusReason::ReasonNone);
        let source =
            v1::StatusSource::try_from(status.source).unwrap_or(v1::StatusSource::SourceMaster);
        debug!(task.id = %status.task_id, state = state.as_str_name(), "update");
        let update = |run: &mut crate::run::JobRun| {
            run.update(
                &status.task_id,
                state,
                reason,
                source,
                status.exit_code,
                &status.message,
                now,
            )
        };
        if let Some(run) = self.runs.get_mut(&key) {
            let grace = run.spec.task_kill_grace_period_seconds;
            let actions = update(run);
            let finished = run.is_finished();
            self.execute(actions, grace);
            if finished {
                self.finish_run(&key, now);
            } else {
                self.save_run(&key);
            }
            self.adjust_offers(now);
            return;
        }
        // A task of a finished run (e.g. the KILLED after a stop): record it.
        let Some(job) = self.jobs.get_mut(&key.0) else {
            return;
        };
        if let Some(run) = job.finished.iter_mut().find(|r| r.id == key.1) {
            update(run);
            self.save_job(&key.0);
        }
    }
}
