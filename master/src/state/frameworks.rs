//! Frameworks: subscription (and failing over to a new connection),
//! disconnection, failover timeouts and removal.

use std::collections::HashMap;
use std::time::Duration;

use imbl::{OrdMap, OrdSet, Vector};
use mezzo_proto::v1::{self, event, master_message, TaskState};
use mezzo_proto::Resources;
use tracing::info;

use super::{ConnId, Framework, Master, Time, MAX_SECS};
use crate::registry::{RegisteredFramework, MAX_REMOVED_FRAMEWORKS};
use crate::MasterError;

/// Completed frameworks kept for `/master/state` (Mesos' default).
pub(crate) const MAX_COMPLETED_FRAMEWORKS: usize = 50;

/// Checks what a framework subscribes with; fills in Mesos' defaults.
fn validate_framework_info(info: &mut v1::FrameworkInfo) -> Result<(), MasterError> {
    if info.name.is_empty() {
        return Err(MasterError::InvalidArgument(
            "framework_info.name is required".into(),
        ));
    }
    if !(info.failover_timeout.is_finite() && info.failover_timeout >= 0.0) {
        return Err(MasterError::InvalidArgument(
            "framework_info.failover_timeout must be a non-negative number".into(),
        ));
    }
    if info.roles.len() > 1 {
        return Err(MasterError::InvalidArgument(
            "framework_info.roles: only one role per framework is supported".into(),
        ));
    }
    for role in info.roles.iter().chain(std::iter::once(&info.role)) {
        if role.contains(['/', ' ', '\n']) && role != "*" {
            return Err(MasterError::InvalidArgument(format!(
                "framework_info.roles: invalid role '{role}'"
            )));
        }
    }
    if info.user.is_empty() {
        info.user = "root".into();
    }
    Ok(())
}

impl Master {
    pub(super) fn new_framework(&self, id: String, info: v1::FrameworkInfo) -> Framework {
        let role = info
            .roles
            .first()
            .cloned()
            .or_else(|| (!info.role.is_empty()).then(|| info.role.clone()))
            .unwrap_or_else(|| "*".to_string());
        Framework {
            id,
            info,
            role,
            connected: false,
            conn: 0,
            disconnected_at: Some(self.now()),
            suppressed: false,
            offers: OrdSet::new(),
            tasks: OrdMap::new(),
            completed: Vector::new(),
            used: Resources::new(),
            offered: Resources::new(),
            filters: HashMap::new(),
            registered_time: self.wall(),
            unregistered_time: None,
        }
    }

    pub(super) fn subscribe(
        &mut self,
        conn: ConnId,
        request: v1::SubscribeRequest,
    ) -> Result<String, MasterError> {
        let mut info = request
            .framework_info
            .ok_or_else(|| MasterError::InvalidArgument("framework_info is required".into()))?;
        validate_framework_info(&mut info)?;
        if self.completed_frameworks.iter().any(|f| f.id == info.id)
            || (!info.id.is_empty() && self.registry.removed_frameworks.contains(&info.id))
        {
            return Err(MasterError::FailedPrecondition(format!(
                "framework {} has been removed (torn down or failover timeout)",
                info.id
            )));
        }
        let id = if info.id.is_empty() {
            self.next_framework += 1;
            format!("{}-{:04}", self.info.id, self.next_framework - 1)
        } else {
            info.id.clone()
        };
        info.id = id.clone();
        if !self.frameworks.contains_key(&id) {
            let fw = self.new_framework(id.clone(), info.clone());
            self.frameworks.insert(id.clone(), fw);
        }
        // Offers made to the old connection are void.
        let old_offers: Vec<String> = self
            .frameworks
            .get(&id)
            .map(|f| f.offers.iter().cloned().collect())
            .unwrap_or_default();
        for o in old_offers {
            self.remove_offer(&o);
        }
        let Some(fw) = self.frameworks.get_mut(&id) else {
            return Err(MasterError::Internal("framework vanished".into()));
        };
        let old_conn = fw.connected.then_some(fw.conn);
        fw.info = info;
        fw.connected = true;
        fw.conn = conn;
        fw.disconnected_at = None;
        fw.suppressed = !request.suppressed_roles.is_empty();
        fw.unregistered_time = None;
        info!(framework.id = %id, name = %fw.info.name, role = %fw.role, "framework subscribed");
        let registered = RegisteredFramework {
            name: fw.info.name.clone(),
            role: fw.role.clone(),
            failover_timeout: fw.info.failover_timeout,
            user: fw.info.user.clone(),
            capabilities: fw.info.capabilities.clone(),
        };
        if let Some(old) = old_conn {
            self.send_framework(
                old,
                event::Event::Error(event::Error {
                    message: "Framework failed over".into(),
                }),
            );
            self.close(old, None);
        }
        self.send_framework(
            conn,
            event::Event::Subscribed(event::Subscribed {
                framework_id: id.clone(),
                heartbeat_interval_seconds: self.config.framework_heartbeat_interval.as_secs_f64(),
                master_info: Some(self.info.clone()),
            }),
        );
        self.send_unacked_updates(&id, conn);
        if self.registry.frameworks.get(&id) != Some(&registered) {
            let key = id.clone();
            self.registry_update(|r| {
                r.frameworks.insert(key, registered);
            });
        }
        self.allocate_now = true;
        Ok(id)
    }

    /// Sends a framework that just subscribed on `conn` every update its
    /// tasks' agents hold unacknowledged (at most one per task, the head),
    /// so it need not wait for the agents' next retry: after a master
    /// failover that retry can be `--status-update-retry-interval` away.
    fn send_unacked_updates(&mut self, framework_id: &str, conn: ConnId) {
        let pending: Vec<String> = self
            .frameworks
            .get(framework_id)
            .map(|f| {
                f.tasks
                    .values()
                    .filter(|t| t.unacked.is_some())
                    .map(|t| t.info.task_id.clone())
                    .collect()
            })
            .unwrap_or_default();
        for task_id in pending {
            let Some(status) = self
                .frameworks
                .get_mut(framework_id)
                .and_then(|f| f.tasks.get_mut(&task_id))
                .and_then(|t| t.unacked.as_mut())
                .map(|u| {
                    u.sent_on = Some(conn);
                    u.status.clone()
                })
            else {
                continue;
            };
            self.send_framework(
                conn,
                event::Event::Update(event::Update {
                    status: Some(status),
                }),
            );
        }
    }

    pub(super) fn framework_closed(&mut self, framework_id: &str, conn: ConnId) {
        let now = self.now();
        let wall = self.wall();
        let Some(fw) = self.frameworks.get_mut(framework_id) else {
            return;
        };
        if fw.conn != conn || !fw.connected {
            return;
        }
        info!(framework.id = %framework_id, failover_timeout = fw.info.failover_timeout, "framework disconnected");
        fw.connected = false;
        fw.disconnected_at = Some(now);
        fw.unregistered_time = Some(wall);
        let offers: Vec<String> = fw.offers.iter().cloned().collect();
        let expired = failover_expired(fw, now);
        self.close(conn, None);
        for o in offers {
            self.remove_offer(&o);
        }
        if expired {
            self.remove_framework(framework_id);
        }
    }

    /// Kills a framework's tasks and forgets it (teardown or failover timeout).
    pub(super) fn remove_framework(&mut self, framework_id: &str) {
        let Some(fw) = self.frameworks.get(framework_id) else {
            return;
        };
        info!(framework.id = %framework_id, "removing framework");
        let offers: Vec<String> = fw.offers.iter().cloned().collect();
        let agents: std::collections::BTreeSet<String> =
            fw.tasks.values().map(|t| t.agent_id.clone()).collect();
        for o in offers {
            self.remove_offer(&o);
        }
        for agent_id in &agents {
            self.tell_agent(
                agent_id,
                master_message::Message::ShutdownFramework(v1::ShutdownFramework {
                    framework_id: framework_id.to_string(),
                }),
            );
        }
        let Some(mut fw) = self.frameworks.remove(framework_id) else {
            return;
        };
        let wall = self.wall();
        for t in fw.tasks.values() {
            if !t.state.is_terminal() {
                if let Some(a) = self.agents.get_mut(&t.agent_id) {
                    a.used.subtract(&t.resources);
                }
            }
        }
        for (_, mut t) in std::mem::take(&mut fw.tasks) {
            if !t.state.is_terminal() {
                t.state = TaskState::TaskKilled;
                t.statuses.push((TaskState::TaskKilled, wall));
            }
            fw.completed.push_back(t);
        }
        fw.used = Resources::new();
        if std::mem::replace(&mut fw.connected, false) {
            self.send_framework(
                fw.conn,
                event::Event::Error(event::Error {
                    message: "Framework has been removed".into(),
                }),
            );
            self.close(fw.conn, None);
        }
        fw.unregistered_time = Some(wall);
        self.completed_frameworks.push_back(fw);
        while self.completed_frameworks.len() > MAX_COMPLETED_FRAMEWORKS {
            self.completed_frameworks.pop_front();
        }
        let id = framework_id.to_string();
        self.registry_update(|r| {
            r.frameworks.remove(&id);
            r.removed_frameworks.insert(id);
            while r.removed_frameworks.len() > MAX_REMOVED_FRAMEWORKS {
                r.removed_frameworks.pop_first();
            }
        });
        self.allocate_now = true;
    }
}

/// True when a disconnected framework's failover timeout has run out.
pub(super) fn failover_expired(fw: &Framework, now: Time) -> bool {
    let Some(at) = fw.disconnected_at else {
        return false;
    };
    let timeout =
        Duration::try_from_secs_f64(fw.info.failover_timeout.min(MAX_SECS)).unwrap_or_default();
    now.saturating_sub(at) >= timeout
}
