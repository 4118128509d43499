//! Offers: matching waiting run slots to offers (oldest run first), failed launches,
//! and asking for offers only while something waits for them.

use chrono::{DateTime, Duration, Utc};
use mezzo_sdk::matching::{OfferSpace, TaskResources};
use mezzo_sdk::{v1, Effect};
use tracing::info;

use super::{Core, RunKey};
use crate::run::JobRun;

/// While tasks wait for offers, revive again this often (filters may hide offers).
pub const REVIVE_EVERY_SECS: i64 = 5;
/// Resources of an accepted offer that its tasks leave unused are refused this long.
pub const ACCEPT_REFUSE_SECONDS: f64 = 1.0;
/// Offers with nothing to launch are refused this long (a revive clears it).
pub const DECLINE_REFUSE_SECONDS: f64 = 5.0;

impl Core {
    /// Uses offers for waiting slots, oldest run first: a `Launch` per offer used (its
    /// runs' writes queued before it) and one `Decline` for the rest.
    pub fn on_offers(&mut self, offers: Vec<v1::Offer>, now: DateTime<Utc>) {
        let mut demand = self.demand(now);
        let mut declines = Vec::new();
        for offer in offers {
            let tasks = self.fill(&offer, &mut demand, now);
            if tasks.is_empty() {
                declines.push(offer.id);
            } else {
                self.effect(Effect::Launch {
                    offer_id: offer.id,
                    tasks,
                    refuse_seconds: Some(ACCEPT_REFUSE_SECONDS),
                });
            }
        }
        if !declines.is_empty() {
            self.effect(Effect::Decline {
                offer_ids: declines,
                refuse_seconds: DECLINE_REFUSE_SECONDS,
            });
        }
        self.adjust_offers(now);
    }

    /// Waiting slots, oldest run first.
    fn demand(&self, now: DateTime<Utc>) -> Vec<(RunKey, u32)> {
        let mut order: Vec<&JobRun> = self.runs.values().collect();
        order.sort_by_key(|r| r.created_at);
        order
            .into_iter()
            .flat_map(|run| {
                run.launchable(now)
                    .into_iter()
                    .map(|slot| ((run.job_id.clone(), run.id.clone()), slot))
            })
            .collect()
    }

    /// Launches as many waiting slots as fit in one offer; each run launched on is
    /// queued for writing (before the launch effect the caller queues).
    fn fill(
        &mut self,
        offer: &v1::Offer,
        demand: &mut Vec<(RunKey, u32)>,
        now: DateTime<Utc>,
    ) -> Vec<v1::TaskInfo> {
        let mut space = OfferSpace::new(offer);
        let mut tasks = Vec::new();
        let mut dirty: Vec<RunKey> = Vec::new();
        demand.retain(|(key, slot)| {
            let Some(run) = self.runs.get_mut(key) else {
                return false;
            };
            let need = TaskResources {
                cpus: run.spec.cpus,
                mem: run.spec.mem,
                disk: run.spec.disk,
                ports: 0,
            };
            if !crate::constraints::satisfied(&run.spec.placement.constraints, offer) {
                return true;
            }
            let Some(resources) = space.try_fit(&need) else {
                return true;
            };
            let task_id = run.launch(*slot, &offer.agent_id, now);
            tasks.push(task_info(run, &task_id, &offer.agent_id, &resources));
            info!(task.id = %task_id, "launching");
            self.tasks.insert(task_id, key.clone());
            if !dirty.contains(key) {
                dirty.push(key.clone());
            }
            false
        });
        if !tasks.is_empty() {
            self.count("tasks.launched", tasks.len() as u64);
        }
        for key in &dirty {
            self.save_run(key);
        }
        tasks
    }

    /// Launches that were not sent (the offer was gone): their slots wait again.
    pub fn on_launch_failed(&mut self, task_ids: &[String], now: DateTime<Utc>) {
        for task_id in task_ids {
            let Some(key) = self.tasks.remove(task_id) else {
                continue;
            };
            if let Some(run) = self.runs.get_mut(&key) {
                run.launch_failed(task_id, now);
            }
            self.save_run(&key);
        }
        self.adjust_offers(now);
    }

    /// Revives when slots wait for offers (again every [`REVIVE_EVERY_SECS`] while they
    /// do), suppresses when none do.
    pub(crate) fn adjust_offers(&mut self, now: DateTime<Utc>) {
        if !self.subscribed {
            return;
        }
        let wanted = self.runs.values().any(|r| !r.launchable(now).is_empty());
        let stale = self
            .last_revive
            .is_none_or(|t| now - t >= Duration::seconds(REVIVE_EVERY_SECS));
        if wanted && (!self.revived || stale) {
            self.revived = true;
            self.last_revive = Some(now);
            self.effect(Effect::Revive);
        } else if !wanted && self.revived {
            self.revived = false;
            self.effect(Effect::Suppress);
        }
    }
}

/// The `TaskInfo` for a run's task.
fn task_info(
    run: &JobRun,
    task_id: &str,
    agent_id: &str,
    resources: &mezzo_sdk::Resources,
) -> v1::TaskInfo {
    let spec = &run.spec;
    let mut info = match (&spec.cmd, &spec.args) {
        (Some(cmd), _) => {
            mezzo_sdk::matching::task_info(task_id, &run.job_id, agent_id, cmd, resources)
        }
        (None, args) => {
            let args = args.clone().unwrap_or_default();
            let mut t =
                mezzo_sdk::matching::task_info(task_id, &run.job_id, agent_id, "", resources);
            if let Some(cmd) = t.command.as_mut() {
                cmd.shell = false;
                cmd.value = args.first().cloned().unwrap_or_default();
                cmd.arguments = args;
            }
            t
        }
    };
    if let Some(cmd) = info.command.as_mut() {
        cmd.environment = spec
            .env
            .iter()
            .map(|(name, value)| v1::EnvironmentVariable {
                name: name.clone(),
                value: value.clone(),
            })
            .collect();
        cmd.user = spec.user.clone().unwrap_or_default();
    }
    info.kill_grace_period_seconds = spec.task_kill_grace_period_seconds;
    info.labels = vec![
        v1::Label {
            key: "jobId".into(),
            value: run.job_id.clone(),
        },
        v1::Label {
            key: "runId".into(),
            value: run.id.clone(),
        },
    ];
    info
}
