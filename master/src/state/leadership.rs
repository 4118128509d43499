//! Leadership: what a master does when it is elected, deposed or loses its
//! ZooKeeper session, and how a new term takes over the registry.

use mezzo_proto::v1;
use tracing::{info, warn};

use super::{LeaderState, Master};
use crate::registry::RegistryState;

/// Why every stream closes when a master stops leading.
const NOT_LEADER: &str = "master is no longer the leader";

impl Master {
    pub(super) fn leadership(&mut self, state: LeaderState) {
        match state {
            LeaderState::Leading { epoch, registry } => {
                if self.leading && self.info.epoch == epoch {
                    return;
                }
                info!(epoch, "elected leading master");
                // Nothing from an earlier term survives: peers re-register
                // and re-subscribe with this epoch.
                self.drop_all_state();
                self.info.epoch = epoch;
                self.leading = true;
                self.leader_hint = Some(format!("{}:{}", self.info.ip, self.info.port));
                self.elected_time = Some(self.wall());
                if let Some(r) = registry {
                    self.adopt_registry(r);
                }
            }
            LeaderState::Following { leader } => {
                if self.leading {
                    warn!("lost leadership: now a standby");
                    self.drop_all_state();
                }
                self.leading = false;
                self.leader_hint = leader;
            }
            LeaderState::Lost => {
                if self.leading {
                    warn!("lost the ZooKeeper session: stopped acting as leader");
                    self.drop_all_state();
                }
                self.leading = false;
                self.leader_hint = None;
            }
        }
    }

    /// Takes over what the registry remembers from earlier terms: frameworks
    /// (their failover timeouts start now, as in Mesos), removed framework
    /// ids, and agents that get `agent_reregister_timeout` to come back.
    pub fn adopt_registry(&mut self, state: RegistryState) {
        let deadline = self.now() + self.config.agent_reregister_timeout;
        for (id, f) in &state.frameworks {
            if self.frameworks.contains_key(id) {
                continue;
            }
            let info = v1::FrameworkInfo {
                id: id.clone(),
                name: f.name.clone(),
                user: f.user.clone(),
                failover_timeout: f.failover_timeout,
                roles: vec![f.role.clone()],
                capabilities: f.capabilities.clone(),
                ..Default::default()
            };
            let fw = self.new_framework(id.clone(), info);
            self.frameworks.insert(id.clone(), fw);
        }
        for (id, a) in &state.agents {
            if !self.agents.contains_key(id) {
                self.expected_agents
                    .insert(id.clone(), (a.clone(), deadline));
            }
        }
        info!(
            frameworks = state.frameworks.len(),
            agents = state.agents.len(),
            removed = state.removed_frameworks.len(),
            "recovered the registry"
        );
        self.registry = state;
        self.registry_dirty = false;
    }

    /// Forgets every agent, framework and offer and closes their streams,
    /// so a master that stopped leading can send nothing more to anyone.
    fn drop_all_state(&mut self) {
        let conns: Vec<u64> = self
            .agents
            .values()
            .filter(|a| a.connected)
            .map(|a| a.conn)
            .chain(
                self.frameworks
                    .values()
                    .filter(|f| f.connected)
                    .map(|f| f.conn),
            )
            .collect();
        for conn in conns {
            self.close(conn, Some(NOT_LEADER));
        }
        self.agents.clear();
        self.frameworks.clear();
        self.completed_frameworks.clear();
        self.offers.clear();
        self.expected_agents.clear();
        self.removals.clear();
        // The next term loads the registry afresh; this one's writes are fenced.
        self.registry = RegistryState::default();
        self.registry_dirty = false;
        self.allocate_now = false;
    }
}
