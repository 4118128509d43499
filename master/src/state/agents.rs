//! Agents: registration and re-registration (with the tasks they report),
//! their messages and status updates, disconnection, and becoming
//! unreachable.

use std::collections::HashSet;
use std::sync::Arc;

use mezzo_proto::v1::{self, agent_message, master_message, TaskState};
use mezzo_proto::Resources;
use tracing::{debug, info, warn};

use super::{Agent, ConnId, Master, Task, Time};
use crate::registry::AdmittedAgent;
use crate::MasterError;

impl Master {
    pub(super) fn attach_agent(
        &mut self,
        conn: ConnId,
        register: v1::RegisterAgent,
    ) -> Result<String, MasterError> {
        let info = register
            .info
            .ok_or_else(|| MasterError::InvalidArgument("register.info is required".into()))?;
        if info.hostname.is_empty() {
            return Err(MasterError::InvalidArgument(
                "register.info.hostname is required".into(),
            ));
        }
        let total = Resources::from_proto(&info.resources);
        if total.is_empty() {
            return Err(MasterError::InvalidArgument(
                "register.info.resources must not be empty".into(),
            ));
        }
        let now = self.now();
        let wall = self.wall();
        let reregister = !info.id.is_empty();
        let id = if reregister {
            info.id.clone()
        } else {
            self.next_agent += 1;
            format!("{}-S{}", self.info.id, self.next_agent - 1)
        };
        let existing = self.agents.contains_key(&id);
        let agent = self.agents.entry(id.clone()).or_insert_with(|| Agent {
            id: id.clone(),
            info: info.clone(),
            total: total.clone(),
            used: Resources::new(),
            offered: Resources::new(),
            connected: false,
            conn,
            last_seen: now,
            last_ping: now,
            reachable: true,
            registered_time: wall,
            reregistered_time: None,
        });
        // A stream the agent replaced ends (its sender is dropped).
        let old_conn = (agent.connected && agent.conn != conn).then_some(agent.conn);
        agent.info = v1::AgentInfo {
            id: id.clone(),
            ..info
        };
        agent.total = total;
        agent.connected = true;
        agent.conn = conn;
        agent.last_seen = now;
        agent.last_ping = now;
        agent.reachable = true;
        if existing || reregister {
            agent.reregistered_time = Some(wall);
        }
        info!(agent.id = %id, hostname = %agent.info.hostname, resources = %agent.total, reregister, "agent registered");
        let admitted = AdmittedAgent {
            hostname: agent.info.hostname.clone(),
            port: agent.info.port,
            resources: agent.total.to_string(),
        };
        if let Some(old) = old_conn {
            self.close(old, None);
        }
        self.send_agent(
            conn,
            master_message::Message::Registered(v1::AgentRegistered {
                agent_id: id.clone(),
                master: Some(self.info.clone()),
                ping_interval_seconds: self.config.agent_ping_timeout.as_secs_f64(),
            }),
        );
        self.expected_agents.remove(&id);
        if self.registry.agents.get(&id) != Some(&admitted) {
            let key = id.clone();
            self.registry_update(|r| {
                r.agents.insert(key, admitted);
            });
        }
        if existing || reregister {
            self.metrics.agent_reregistrations += 1;
        } else {
            self.metrics.agent_registrations += 1;
        }
        self.reconcile_agent_tasks(&id, register.tasks, &register.frameworks);
        self.allocate_now = true;
        Ok(id)
    }

    /// Merges the tasks an agent reports on (re-)registration with what the
    /// master knows: unknown running tasks are adopted (master failover),
    /// tasks the master thought live there but the agent lacks are lost.
    fn reconcile_agent_tasks(
        &mut self,
        agent_id: &str,
        reported: Vec<v1::TaskAndState>,
        frameworks: &[v1::FrameworkInfo],
    ) {
        let mut seen: HashSet<(String, String)> = HashSet::new();
        for ts in reported {
            let Some(task) = ts.task else { continue };
            let state = TaskState::try_from(ts.state).unwrap_or(TaskState::TaskUnknown);
            seen.insert((ts.framework_id.clone(), task.task_id.clone()));
            if !self.frameworks.contains_key(&ts.framework_id) {
                // A framework we do not know yet (master failover): it gets
                // its tasks back when it re-subscribes with its id.
                let info = frameworks
                    .iter()
                    .find(|f| f.id == ts.framework_id)
                    .cloned()
                    .unwrap_or_else(|| v1::FrameworkInfo {
                        id: ts.framework_id.clone(),
                        ..Default::default()
                    });
                let fw = self.new_framework(ts.framework_id.clone(), info);
                self.frameworks.insert(fw.id.clone(), fw);
            }
            self.reported_task(agent_id, &ts.framework_id, task, state);
        }
        // Tasks the master believes are on this agent but the agent lost.
        let mut lost = Vec::new();
        for fw in self.frameworks.values() {
            for t in fw.tasks.values() {
                if t.agent_id == agent_id
                    && !t.state.is_terminal()
                    && t.state != TaskState::TaskStaging
                    && !seen.contains(&(fw.id.clone(), t.info.task_id.clone()))
                {
                    lost.push((fw.id.clone(), t.info.task_id.clone(), fw.lost_state()));
                }
            }
        }
        for (fid, tid, state) in lost {
            self.master_update(
                &fid,
                &tid,
                state,
                v1::StatusReason::ReasonAgentRestarted,
                "Task not found on re-registered agent",
            );
        }
    }

    /// One task a (re-)registering agent reports.
    fn reported_task(
        &mut self,
        agent_id: &str,
        framework_id: &str,
        task: v1::TaskInfo,
        state: TaskState,
    ) {
        let wall = self.wall();
        let Some(fw) = self.frameworks.get_mut(framework_id) else {
            return;
        };
        let declared_gone = fw.completed.iter().any(|c| c.info.task_id == task.task_id);
        match fw.tasks.get_mut(&task.task_id) {
            Some(t) if t.state == TaskState::TaskUnreachable && !state.is_terminal() => {
                t.state = state;
                t.statuses.push((state, wall));
                let healthy = t.healthy;
                let mut status = self.master_status(
                    framework_id,
                    &task.task_id,
                    agent_id,
                    state,
                    v1::StatusReason::ReasonReconciliation,
                    "Agent re-registered",
                );
                status.healthy = healthy;
                self.send_update(framework_id, status);
            }
            Some(_) => {}
            None if declared_gone && !state.is_terminal() => {
                // The framework was told the task is gone (TASK_LOST to a
                // non-partition-aware framework): Mesos kills such tasks
                // when their agent comes back.
                self.tell_agent(
                    agent_id,
                    master_message::Message::KillTask(v1::KillTask {
                        framework_id: framework_id.to_string(),
                        task_id: task.task_id.clone(),
                        grace_period_seconds: None,
                    }),
                );
            }
            None if !state.is_terminal() => {
                let resources = Resources::from_proto(&task.resources);
                fw.used.add(&resources);
                fw.tasks.insert(
                    task.task_id.clone(),
                    Task {
                        framework_id: fw.id.clone(),
                        agent_id: agent_id.to_string(),
                        resources: resources.clone(),
                        state,
                        statuses: vec![(state, wall)],
                        last_status: None,
                        healthy: None,
                        unacked: None,
                        info: Arc::new(task),
                    },
                );
                if let Some(a) = self.agents.get_mut(agent_id) {
                    a.used.add(&resources);
                }
            }
            None => {}
        }
    }

    pub(super) fn agent_message(
        &mut self,
        agent_id: &str,
        conn: ConnId,
        msg: agent_message::Message,
    ) {
        let now = self.now();
        let Some(agent) = self.agents.get_mut(agent_id) else {
            return;
        };
        if agent.conn != conn {
            return;
        }
        agent.last_seen = now;
        match msg {
            agent_message::Message::Heartbeat(_) => {}
            agent_message::Message::Register(_) => {
                warn!(agent.id = %agent_id, "duplicate register on an attached stream ignored");
            }
            agent_message::Message::StatusUpdate(update) => self.status_update(agent_id, update),
        }
    }

    pub(super) fn agent_closed(&mut self, agent_id: &str, conn: ConnId) {
        let Some(a) = self.agents.get_mut(agent_id) else {
            return;
        };
        if a.conn != conn {
            return;
        }
        info!(agent.id = %agent_id, "agent disconnected");
        let was_connected = std::mem::replace(&mut a.connected, false);
        if was_connected {
            self.close(conn, None);
        }
        // Its tasks keep running: the agent reconnects, or the health check
        // marks it unreachable after the ping timeouts.
        self.rescind_offers_on_agent(agent_id);
    }

    fn status_update(&mut self, agent_id: &str, update: v1::StatusUpdate) {
        self.metrics.status_updates += 1;
        let Some(mut status) = update.status else {
            return;
        };
        let state = mezzo_proto::task_state(&status);
        status.agent_id = agent_id.to_string();
        status.framework_id = update.framework_id.clone();
        if !self.frameworks.contains_key(&update.framework_id) {
            // The framework is gone for good: acknowledge on its behalf so
            // the agent stops retrying (Mesos does the same on teardown).
            self.tell_agent(
                agent_id,
                master_message::Message::Acknowledge(v1::AcknowledgeUpdate {
                    framework_id: update.framework_id,
                    task_id: status.task_id,
                    uuid: status.uuid,
                }),
            );
            return;
        }
        let wall = self.wall();
        let mut released = None;
        let mut launch_latency = None;
        let mut forward = true;
        let agent_conn = self.agents.get(agent_id).map_or(0, |a| a.conn);
        let fw = self.frameworks.get_mut(&update.framework_id);
        let subscription = fw.as_ref().and_then(|f| f.connected.then_some(f.conn));
        if let Some(t) = fw.and_then(|fw| fw.tasks.get_mut(&status.task_id)) {
            if !status.uuid.is_empty() {
                // A re-registered agent resends its heads at once: the
                // subscription that already has this update (sent when it
                // subscribed, or before the agent reconnected) does not get
                // it again. Timed retries on the same stream go through.
                let resent_on_reregistration = t.unacked.as_ref().is_some_and(|u| {
                    u.status.uuid == status.uuid
                        && u.sent_on.is_some()
                        && u.sent_on == subscription
                        && u.agent_conn != agent_conn
                });
                forward = !resent_on_reregistration;
                t.unacked = Some(super::Unacked {
                    status: status.clone(),
                    sent_on: if forward {
                        subscription
                    } else {
                        t.unacked.as_ref().and_then(|u| u.sent_on)
                    },
                    agent_conn,
                });
            }
            if !t.state.is_terminal() {
                if state == TaskState::TaskRunning && t.state != TaskState::TaskRunning {
                    launch_latency = t.statuses.first().map(|(_, staged)| wall - staged);
                }
                t.state = state;
                t.statuses.push((state, status.timestamp));
                if state.is_terminal() {
                    released = Some(t.resources.clone());
                }
            }
            if status.healthy.is_some() {
                t.healthy = status.healthy;
            }
            t.last_status = Some(status.clone());
        } else if self.already_acknowledged(&update.framework_id, &status) {
            // The framework acknowledged this terminal update but the ack
            // never reached the agent (it was cut off): answer the agent's
            // resend on the framework's behalf instead of delivering it again.
            self.tell_agent(
                agent_id,
                master_message::Message::Acknowledge(v1::AcknowledgeUpdate {
                    framework_id: update.framework_id,
                    task_id: status.task_id,
                    uuid: status.uuid,
                }),
            );
            return;
        } else if !state.is_terminal() {
            debug!(task.id = %status.task_id, "status update for unknown task");
        }
        if let Some(secs) = launch_latency {
            self.metrics.timings.launch(secs);
        }
        if let Some(res) = released {
            self.release(&update.framework_id, agent_id, &res);
        }
        if !forward {
            debug!(task.id = %status.task_id, state = ?state, "update resent by a re-registered agent: this subscription has it");
            return;
        }
        debug!(task.id = %status.task_id, state = ?state, "status update");
        // Undelivered (framework disconnected) updates wait in `unacked`
        // for the framework's next subscription; the agent retries too.
        self.send_update(&update.framework_id, status);
    }

    /// True when `status` is the terminal update the framework already
    /// acknowledged for a completed task (acknowledging it completed the task).
    fn already_acknowledged(&self, framework_id: &str, status: &v1::TaskStatus) -> bool {
        !status.uuid.is_empty()
            && self.frameworks.get(framework_id).is_some_and(|fw| {
                fw.completed.iter().rev().any(|c| {
                    c.info.task_id == status.task_id
                        && c.last_status
                            .as_ref()
                            .is_some_and(|l| l.uuid == status.uuid)
                })
            })
    }

    /// Returns a terminal task's resources to its framework and agent.
    pub(super) fn release(&mut self, framework_id: &str, agent_id: &str, res: &Resources) {
        if let Some(fw) = self.frameworks.get_mut(framework_id) {
            fw.used.subtract(res);
        }
        if let Some(a) = self.agents.get_mut(agent_id) {
            a.used.subtract(res);
        }
    }

    /// A master-generated update (no uuid: not retried, not acknowledged).
    pub(super) fn master_update(
        &mut self,
        framework_id: &str,
        task_id: &str,
        state: TaskState,
        reason: v1::StatusReason,
        message: &str,
    ) {
        let wall = self.wall();
        let Some(fw) = self.frameworks.get_mut(framework_id) else {
            return;
        };
        let mut agent_id = String::new();
        let mut released = None;
        if let Some(t) = fw.tasks.get_mut(task_id) {
            agent_id = t.agent_id.clone();
            if !t.state.is_terminal() {
                // Unreachable tasks keep their resources: the agent may come back.
                released = state.is_terminal().then(|| t.resources.clone());
                t.state = state;
                t.statuses.push((state, wall));
                // What the master says now supersedes the agent's older
                // update: a re-subscribing framework is not sent it again
                // (the agent still retries it if it comes back).
                t.unacked = None;
            }
        }
        if let Some(res) = released {
            self.release(framework_id, &agent_id, &res);
        }
        let status = self.master_status(framework_id, task_id, &agent_id, state, reason, message);
        if let Some(t) = self
            .frameworks
            .get_mut(framework_id)
            .and_then(|fw| fw.tasks.get_mut(task_id))
        {
            t.last_status = Some(status.clone());
        }
        self.send_update(framework_id, status);
        if state.is_terminal() {
            self.complete_task(framework_id, task_id);
        }
    }

    /// Moves a terminal task to the framework's completed list.
    pub(super) fn complete_task(&mut self, framework_id: &str, task_id: &str) {
        let max = self.config.max_completed_tasks_per_framework;
        if let Some(fw) = self.frameworks.get_mut(framework_id) {
            if let Some(t) = fw.tasks.remove(task_id) {
                fw.completed.push_back(t);
                while fw.completed.len() > max {
                    fw.completed.pop_front();
                }
            }
        }
    }

    pub(super) fn mark_unreachable(&mut self, agent_id: &str) {
        warn!(agent.id = %agent_id, "agent missed its pings: marking unreachable");
        self.metrics.agent_removals += 1;
        if let Some(a) = self.agents.get_mut(agent_id) {
            a.reachable = false;
            let conn = a.conn;
            if std::mem::replace(&mut a.connected, false) {
                self.close(conn, None);
            }
        }
        self.rescind_offers_on_agent(agent_id);
        let mut affected = Vec::new();
        for fw in self.frameworks.values() {
            for t in fw.tasks.values() {
                if t.agent_id == agent_id && !t.state.is_terminal() {
                    affected.push((fw.id.clone(), t.info.task_id.clone(), fw.lost_state()));
                }
            }
        }
        for (fid, tid, state) in affected {
            self.master_update(
                &fid,
                &tid,
                state,
                v1::StatusReason::ReasonAgentRemoved,
                "Agent is unreachable",
            );
        }
    }

    /// Agents from the registry that did not re-register in time are
    /// queued for removal (Mesos' `--agent_reregister_timeout`); they stay
    /// expected until their turn comes, so a late one is still welcome.
    pub(super) fn expire_expected_agents(&mut self, now: Time) {
        let mut expired: Vec<(Time, String)> = self
            .expected_agents
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(id, (_, deadline))| (*deadline, id.clone()))
            .collect();
        // The map's order is arbitrary: queue by deadline, then id, so a
        // rate-limited run is reproducible.
        expired.sort();
        for (_, id) in expired {
            self.schedule_removal(&id);
        }
    }

    /// Records an agent that never re-registered as unreachable.
    pub(super) fn remove_expected_agent(&mut self, id: &str, now: Time) {
        let Some((a, _)) = self.expected_agents.remove(id) else {
            return;
        };
        let wall = self.wall();
        warn!(agent.id = %id, "agent did not re-register after the failover: unreachable");
        let total = Resources::parse(&a.resources).unwrap_or_default();
        self.agents.insert(
            id.to_string(),
            Agent {
                id: id.to_string(),
                info: v1::AgentInfo {
                    id: id.to_string(),
                    hostname: a.hostname.clone(),
                    port: a.port,
                    resources: total.to_proto(),
                    attributes: Vec::new(),
                },
                total,
                used: Resources::new(),
                offered: Resources::new(),
                connected: false,
                conn: 0,
                last_seen: now,
                last_ping: now,
                reachable: false,
                registered_time: wall,
                reregistered_time: None,
            },
        );
    }
}
