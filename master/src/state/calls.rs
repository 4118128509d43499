//! Scheduler calls: accept (launch), decline, revive, suppress, kill,
//! acknowledge, reconcile, teardown.

use std::collections::HashSet;
use std::sync::Arc;

use mezzo_proto::v1::{self, event, master_message, operation, TaskState};
use mezzo_proto::Resources;
use tracing::{info, warn};

use super::{refuse_duration, Call, Master, Task};
use crate::MasterError;

/// One launch operation of an accept: its tasks, all-or-nothing if a group.
struct LaunchOp {
    group: bool,
    tasks: Vec<v1::TaskInfo>,
}

fn launch_ops(operations: Vec<v1::Operation>) -> Vec<LaunchOp> {
    operations
        .into_iter()
        .filter_map(|op| match op.operation {
            Some(operation::Operation::Launch(l)) => Some(LaunchOp {
                group: false,
                tasks: l.task_infos,
            }),
            Some(operation::Operation::LaunchGroup(g)) => Some(LaunchOp {
                group: true,
                tasks: g.task_infos,
            }),
            None => None,
        })
        .collect()
}

impl Master {
    pub(super) fn call(&mut self, call: Call) -> Result<(), MasterError> {
        let fid = call.framework_id().to_string();
        let Some(fw) = self.frameworks.get(&fid) else {
            return Err(MasterError::NotFound(format!(
                "framework '{fid}' is not subscribed"
            )));
        };
        // An operator may tear down a disconnected framework (within its
        // failover timeout); every other call needs the live subscription.
        if !fw.connected && !matches!(call, Call::Teardown(_)) {
            return Err(MasterError::FailedPrecondition(format!(
                "framework '{fid}' is not connected: subscribe first"
            )));
        }
        *self.metrics.calls.entry(call.metric()).or_default() += 1;
        match call {
            Call::Accept(a) => self.accept(a)?,
            Call::Decline(d) => self.decline(&fid, d)?,
            Call::Revive(_) => {
                if let Some(fw) = self.frameworks.get_mut(&fid) {
                    fw.filters.clear();
                    fw.suppressed = false;
                }
                self.allocate_now = true;
            }
            Call::Suppress(_) => {
                if let Some(fw) = self.frameworks.get_mut(&fid) {
                    fw.suppressed = true;
                }
            }
            Call::Kill(k) => self.kill(&fid, k),
            Call::Acknowledge(a) => self.acknowledge(&fid, a)?,
            Call::Reconcile(r) => self.reconcile(&fid, r),
            Call::Teardown(_) => self.remove_framework(&fid),
        }
        Ok(())
    }

    fn decline(&mut self, fid: &str, d: v1::DeclineRequest) -> Result<(), MasterError> {
        let refuse = refuse_duration(d.filters.as_ref())?;
        for offer_id in &d.offer_ids {
            if self
                .offers
                .get(offer_id)
                .is_some_and(|o| o.framework_id != fid)
            {
                continue;
            }
            if let Some(o) = self.remove_offer(offer_id) {
                self.add_filter(fid, &o.agent_id, refuse);
            }
        }
        Ok(())
    }

    /// Checks that the offers are known, this framework's, and on one
    /// agent; returns that agent, or why not.
    fn check_offers(&self, fid: &str, offer_ids: &[String]) -> Result<Option<String>, String> {
        if offer_ids.is_empty() {
            return Err("no offer_ids given".into());
        }
        let mut agent_id: Option<String> = None;
        let mut seen = HashSet::new();
        for offer_id in offer_ids {
            if !seen.insert(offer_id) {
                return Err(format!("offer {offer_id} appears more than once"));
            }
            match self.offers.get(offer_id) {
                None => return Err(format!("Offer {offer_id} is no longer valid")),
                Some(o) if o.framework_id != fid => {
                    return Err(format!("Offer {offer_id} belongs to another framework"))
                }
                Some(o) => match &agent_id {
                    Some(a) if *a != o.agent_id => {
                        return Err("Aggregated offers must belong to one agent".into())
                    }
                    _ => agent_id = Some(o.agent_id.clone()),
                },
            }
        }
        Ok(agent_id)
    }

    fn accept(&mut self, req: v1::AcceptRequest) -> Result<(), MasterError> {
        let fid = req.framework_id.clone();
        let refuse = refuse_duration(req.filters.as_ref())?;
        let ops = launch_ops(req.operations);
        let agent_id = match self.check_offers(&fid, &req.offer_ids) {
            Ok(Some(a)) => a,
            Ok(None) => return Ok(()),
            Err(why) => {
                self.refuse_accept(&fid, &req.offer_ids, &ops, &why);
                return Ok(());
            }
        };
        let mut pool = Resources::new();
        let now = self.now();
        for offer_id in &req.offer_ids {
            if let Some(o) = self.remove_offer(offer_id) {
                self.metrics
                    .timings
                    .offer_accept(now.saturating_sub(o.created).as_secs_f64());
                pool.add(&o.resources);
            }
        }
        let framework_info = self
            .frameworks
            .get(&fid)
            .map(|f| f.info.clone())
            .unwrap_or_default();
        for op in ops {
            self.launch_op(&fid, &agent_id, &framework_info, op, &mut pool);
        }
        // Whatever was not used is declined with the given filter.
        if !pool.is_empty() {
            self.add_filter(&fid, &agent_id, refuse);
        }
        Ok(())
    }

    /// Invalid offers: valid ones among them are recovered (as Mesos does)
    /// and every task is dropped (or lost, for frameworks that are not
    /// partition-aware).
    fn refuse_accept(&mut self, fid: &str, offer_ids: &[String], ops: &[LaunchOp], why: &str) {
        for offer_id in offer_ids {
            if self
                .offers
                .get(offer_id)
                .is_some_and(|o| o.framework_id == fid)
            {
                self.remove_offer(offer_id);
            }
        }
        let state = if self
            .frameworks
            .get(fid)
            .is_some_and(super::Framework::partition_aware)
        {
            TaskState::TaskDropped
        } else {
            TaskState::TaskLost
        };
        let tasks: Vec<&v1::TaskInfo> = ops.iter().flat_map(|op| op.tasks.iter()).collect();
        for t in &tasks {
            self.send_invalid(fid, t, state, v1::StatusReason::ReasonInvalidOffers, why);
        }
        self.metrics.invalid_launches += tasks.len() as u64;
    }

    /// Validates one operation's tasks against what is left of the offers
    /// (a group launches all or nothing) and launches the valid ones.
    fn launch_op(
        &mut self,
        fid: &str,
        agent_id: &str,
        framework_info: &v1::FrameworkInfo,
        op: LaunchOp,
        pool: &mut Resources,
    ) {
        let mut ok = Vec::new();
        let mut trial = pool.clone();
        let mut group_error = None;
        for mut t in op.tasks {
            t.agent_id = agent_id.to_string();
            match self.validate_task(fid, &t, &trial, &ok) {
                Ok(res) => {
                    trial.subtract(&res);
                    ok.push((t, res));
                }
                Err(why) => {
                    self.metrics.invalid_launches += 1;
                    let (state, reason) =
                        (TaskState::TaskError, v1::StatusReason::ReasonTaskInvalid);
                    self.send_invalid(fid, &t, state, reason, &why);
                    if op.group {
                        group_error = Some(why);
                    }
                }
            }
        }
        if let Some(why) = group_error {
            let msg = format!("Task group is invalid: {why}");
            for (t, _) in ok {
                let (state, reason) = (TaskState::TaskError, v1::StatusReason::ReasonTaskInvalid);
                self.send_invalid(fid, &t, state, reason, &msg);
            }
            return;
        }
        *pool = trial;
        for (t, res) in ok {
            self.launch_task(fid, agent_id, framework_info, t, res);
        }
    }

    fn launch_task(
        &mut self,
        fid: &str,
        agent_id: &str,
        framework_info: &v1::FrameworkInfo,
        t: v1::TaskInfo,
        res: Resources,
    ) {
        self.metrics.launched_tasks += 1;
        let wall = self.wall();
        info!(framework.id = %fid, task.id = %t.task_id, agent.id = %agent_id, resources = %res, "launching task");
        if let Some(a) = self.agents.get_mut(agent_id) {
            a.used.add(&res);
            if a.connected {
                let conn = a.conn;
                self.send_agent(
                    conn,
                    master_message::Message::RunTask(v1::RunTask {
                        framework: Some(framework_info.clone()),
                        task: Some(t.clone()),
                    }),
                );
            }
        }
        if let Some(fw) = self.frameworks.get_mut(fid) {
            fw.used.add(&res);
            fw.tasks.insert(
                t.task_id.clone(),
                Task {
                    framework_id: fid.to_string(),
                    agent_id: agent_id.to_string(),
                    resources: res,
                    state: TaskState::TaskStaging,
                    statuses: vec![(TaskState::TaskStaging, wall)],
                    last_status: None,
                    unacked: None,
                    healthy: None,
                    info: Arc::new(t),
                },
            );
        }
    }

    fn validate_task(
        &self,
        fid: &str,
        t: &v1::TaskInfo,
        pool: &Resources,
        batch: &[(v1::TaskInfo, Resources)],
    ) -> Result<Resources, String> {
        if t.task_id.is_empty() {
            return Err("Task ID must not be empty".into());
        }
        if t.task_id.contains(['/', '\0'])
            || t.task_id.len() > 255
            || t.task_id == "."
            || t.task_id == ".."
        {
            return Err(format!(
                "Task ID '{}' contains invalid characters",
                t.task_id
            ));
        }
        let duplicate = self.frameworks.get(fid).is_some_and(|f| {
            f.tasks
                .get(&t.task_id)
                .is_some_and(|x| !x.state.is_terminal())
        }) || batch.iter().any(|(b, _)| b.task_id == t.task_id);
        if duplicate {
            return Err(format!("Task ID '{}' is already in use", t.task_id));
        }
        match &t.command {
            Some(c) if !c.value.is_empty() => {}
            _ => return Err("Task must have a command (command.value)".into()),
        }
        if let Some(g) = t.kill_grace_period_seconds {
            if !(g.is_finite() && g >= 0.0) {
                return Err("kill_grace_period_seconds must be a non-negative number".into());
            }
        }
        for r in &t.resources {
            if r.r#type == v1::ValueType::Scalar as i32
                && !(r.scalar.is_finite() && r.scalar >= 0.0)
            {
                return Err(format!(
                    "Resource '{}' has an invalid value {}",
                    r.name, r.scalar
                ));
            }
        }
        let res = Resources::from_proto(&t.resources);
        if res.is_empty() {
            return Err("Task uses no resources".into());
        }
        if !pool.contains(&res) {
            return Err(format!(
                "Task uses more resources ({res}) than available ({pool}); short of: {}",
                pool.shortfall(&res).join(", ")
            ));
        }
        Ok(res)
    }

    fn send_invalid(
        &mut self,
        fid: &str,
        t: &v1::TaskInfo,
        state: TaskState,
        reason: v1::StatusReason,
        why: &str,
    ) {
        warn!(framework.id = %fid, task.id = %t.task_id, state = ?state, "{why}");
        let status = self.master_status(fid, &t.task_id, &t.agent_id, state, reason, why);
        self.send_update(fid, status);
    }

    fn kill(&mut self, fid: &str, k: v1::KillRequest) {
        let Some(fw) = self.frameworks.get(fid) else {
            return;
        };
        let Some(t) = fw.tasks.get(&k.task_id) else {
            let state = fw.unknown_state();
            let status = self.master_status(
                fid,
                &k.task_id,
                &k.agent_id,
                state,
                v1::StatusReason::ReasonTaskUnknown,
                "Attempted to kill an unknown task",
            );
            self.send_update(fid, status);
            return;
        };
        let last = t.last_status.clone().unwrap_or_default();
        let lost_state = fw.lost_state();
        let agent_live = self
            .agents
            .get(&t.agent_id)
            .is_some_and(|a| a.connected && a.reachable);
        if t.state.is_terminal() {
            // Already terminal: repeat its last state so the caller converges.
            self.send_update(
                fid,
                v1::TaskStatus {
                    uuid: Vec::new(),
                    ..last
                },
            );
        } else if agent_live {
            info!(framework.id = %fid, task.id = %k.task_id, "killing task");
            let agent_id = t.agent_id.clone();
            self.tell_agent(
                &agent_id,
                master_message::Message::KillTask(v1::KillTask {
                    framework_id: fid.to_string(),
                    task_id: k.task_id.clone(),
                    grace_period_seconds: k.grace_period_seconds,
                }),
            );
        } else if lost_state == TaskState::TaskUnreachable {
            // The task may still run; say so again (Mesos answers a kill of
            // an unreachable task with its state).
            self.send_update(
                fid,
                v1::TaskStatus {
                    uuid: Vec::new(),
                    ..last
                },
            );
        } else {
            self.master_update(
                fid,
                &k.task_id,
                lost_state,
                v1::StatusReason::ReasonAgentRemoved,
                "Agent is not connected",
            );
        }
    }

    fn acknowledge(&mut self, fid: &str, a: v1::AcknowledgeRequest) -> Result<(), MasterError> {
        if a.uuid.is_empty() {
            return Err(MasterError::InvalidArgument(
                "acknowledge.uuid is required".into(),
            ));
        }
        let task = self
            .frameworks
            .get(fid)
            .and_then(|f| f.tasks.get(&a.task_id));
        let agent_id = match task {
            Some(t) => t.agent_id.clone(),
            None => a.agent_id.clone(),
        };
        let terminal_acked = task.is_some_and(|t| {
            t.state.is_terminal() && t.last_status.as_ref().is_some_and(|s| s.uuid == a.uuid)
        });
        let task_id = a.task_id.clone();
        let acks_head =
            task.is_some_and(|t| t.unacked.as_ref().is_some_and(|u| u.status.uuid == a.uuid));
        if acks_head {
            if let Some(t) = self
                .frameworks
                .get_mut(fid)
                .and_then(|f| f.tasks.get_mut(&task_id))
            {
                t.unacked = None;
            }
        }
        self.tell_agent(
            &agent_id,
            master_message::Message::Acknowledge(v1::AcknowledgeUpdate {
                framework_id: fid.to_string(),
                task_id: a.task_id,
                uuid: a.uuid,
            }),
        );
        if terminal_acked {
            self.complete_task(fid, &task_id);
        }
        Ok(())
    }

    fn reconcile(&mut self, fid: &str, r: v1::ReconcileRequest) {
        let Some(fw) = self.frameworks.get(fid) else {
            return;
        };
        let status_of = |t: &Task| {
            let mut s = self.master_status(
                fid,
                &t.info.task_id,
                &t.agent_id,
                t.state,
                v1::StatusReason::ReasonReconciliation,
                "Reconciliation: latest task state",
            );
            s.healthy = t.healthy;
            s.exit_code = t.last_status.as_ref().and_then(|s| s.exit_code);
            s
        };
        let mut out = Vec::new();
        if r.tasks.is_empty() {
            out.extend(fw.tasks.values().map(status_of));
        } else {
            for q in &r.tasks {
                let known = fw.tasks.get(&q.task_id).or_else(|| {
                    fw.completed
                        .iter()
                        .rev()
                        .find(|t| t.info.task_id == q.task_id)
                });
                out.push(match known {
                    Some(t) => status_of(t),
                    None => self.master_status(
                        fid,
                        &q.task_id,
                        &q.agent_id,
                        fw.unknown_state(),
                        v1::StatusReason::ReasonReconciliation,
                        "Reconciliation: task is unknown",
                    ),
                });
            }
        }
        for s in out {
            self.tell_framework(fid, event::Event::Update(event::Update { status: Some(s) }));
        }
    }
}
