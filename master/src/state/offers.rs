//! Offers and timers: allocation rounds (the pure DRF allocator turns free
//! resources into offers), rescinds, refuse filters, and the periodic
//! housekeeping of pings, timeouts and heartbeats.

use std::collections::BTreeMap;
use std::time::Duration;

use mezzo_proto::v1::{self, event, master_message};
use tracing::{debug, info};

use super::frameworks::failover_expired;
use super::{Master, OfferRec};
use crate::allocator::{self, AgentSlot, AllocatorConfig, FrameworkSlot, Round};

impl Master {
    pub(super) fn rescind_offers_on_agent(&mut self, agent_id: &str) {
        let ids: Vec<String> = self
            .offers
            .iter()
            .filter(|(_, o)| o.agent_id == agent_id)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.rescind(&id);
        }
    }

    /// Withdraws an outstanding offer and returns its resources.
    fn rescind(&mut self, offer_id: &str) {
        if let Some(o) = self.remove_offer(offer_id) {
            self.tell_framework(
                &o.framework_id,
                event::Event::Rescind(event::Rescind {
                    offer_id: offer_id.to_string(),
                }),
            );
        }
    }

    pub(super) fn remove_offer(&mut self, offer_id: &str) -> Option<OfferRec> {
        let o = self.offers.remove(offer_id)?;
        if let Some(a) = self.agents.get_mut(&o.agent_id) {
            a.offered.subtract(&o.resources);
        }
        if let Some(fw) = self.frameworks.get_mut(&o.framework_id) {
            fw.offers.remove(offer_id);
            fw.offered.subtract(&o.resources);
        }
        Some(o)
    }

    pub(super) fn add_filter(&mut self, framework_id: &str, agent_id: &str, refuse: Duration) {
        if refuse.is_zero() {
            return;
        }
        let until = self.now() + refuse;
        if let Some(fw) = self.frameworks.get_mut(framework_id) {
            fw.filters.insert(agent_id.to_string(), until);
        }
    }

    /// Periodic housekeeping: agent health, offer timeouts, framework
    /// failover timeouts, heartbeats and filter expiry.
    pub(super) fn maintain(&mut self) {
        let now = self.now();
        self.expire_expected_agents(now);
        self.ping_agents();
        self.remove_queued_agents(now);
        if let Some(timeout) = self.config.offer_timeout {
            let expired: Vec<String> = self
                .offers
                .iter()
                .filter(|(_, o)| now.saturating_sub(o.created) >= timeout)
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                debug!(offer.id = %id, "offer timed out");
                self.rescind(&id);
            }
        }
        let failed: Vec<String> = self
            .frameworks
            .values()
            .filter(|f| !f.connected && failover_expired(f, now))
            .map(|f| f.id.clone())
            .collect();
        for id in failed {
            info!(framework.id = %id, "framework failover timeout elapsed");
            self.remove_framework(&id);
        }
        // Only frameworks with an expired filter are touched: a write to a
        // persistent map copies what a published snapshot still shares.
        let stale: Vec<String> = self
            .frameworks
            .values()
            .filter(|f| f.filters.values().any(|until| *until <= now))
            .map(|f| f.id.clone())
            .collect();
        for id in stale {
            if let Some(fw) = self.frameworks.get_mut(&id) {
                fw.filters.retain(|_, until| *until > now);
            }
        }
        if now.saturating_sub(self.last_heartbeat) >= self.config.framework_heartbeat_interval {
            self.last_heartbeat = now;
            let conns: Vec<u64> = self
                .frameworks
                .values()
                .filter(|f| f.connected)
                .map(|f| f.conn)
                .collect();
            for conn in conns {
                self.send_framework(conn, event::Event::Heartbeat(event::Heartbeat {}));
            }
        }
    }

    /// Pings agents due a ping; queues those silent past the deadline for
    /// removal (see `removals.rs`).
    fn ping_agents(&mut self) {
        let now = self.now();
        let ping = self.config.agent_ping_timeout;
        let deadline = ping * self.config.max_agent_ping_timeouts.max(1);
        let mut pings = Vec::new();
        let mut unreachable = Vec::new();
        for a in self.agents.values() {
            if !a.reachable {
                continue;
            }
            if now.saturating_sub(a.last_ping) >= ping {
                pings.push(a.id.clone());
            }
            if now.saturating_sub(a.last_seen) >= deadline {
                unreachable.push(a.id.clone());
            }
        }
        for id in pings {
            if let Some(a) = self.agents.get_mut(&id) {
                a.last_ping = now;
            }
            self.tell_agent(&id, master_message::Message::Ping(v1::Ping {}));
        }
        for agent_id in unreachable {
            self.schedule_removal(&agent_id);
        }
    }

    /// One allocation round: turn free resources into offers.
    pub(super) fn allocate(&mut self) {
        self.allocate_now = false;
        let now = self.now();
        let agents: Vec<&super::Agent> = self.agents.values().filter(|a| a.active()).collect();
        let fws: Vec<&super::Framework> =
            self.frameworks.values().filter(|f| f.connected).collect();
        if agents.is_empty() || fws.is_empty() {
            return;
        }
        let mut total = mezzo_proto::Resources::new();
        for a in &agents {
            total.add(&a.total);
        }
        let slots: Vec<AgentSlot> = agents
            .iter()
            .map(|a| AgentSlot {
                id: a.id.clone(),
                available: a.available(),
            })
            .collect();
        let fslots: Vec<FrameworkSlot> = fws
            .iter()
            .map(|f| FrameworkSlot {
                id: f.id.clone(),
                role: f.role.clone(),
                allocated: f.used.plus(&f.offered),
                suppressed: f.suppressed,
            })
            .collect();
        let is_filtered = |fi: usize, ai: usize| -> bool {
            fws[fi]
                .filters
                .get(&slots[ai].id)
                .is_some_and(|until| *until > now)
        };
        let round = Round {
            agents: &slots,
            frameworks: &fslots,
            weights: &self.config.weights,
            total: &total,
            is_filtered: &is_filtered,
        };
        let allocations = allocator::allocate(&AllocatorConfig::default(), &round, &mut self.rng);
        let mut by_framework: BTreeMap<usize, Vec<v1::Offer>> = BTreeMap::new();
        let mut new_offers = Vec::new();
        for alloc in allocations {
            let fw = &fslots[alloc.framework];
            let agent = agents[alloc.agent];
            self.next_offer += 1;
            let id = format!("{}-O{}", self.info.id, self.next_offer - 1);
            by_framework
                .entry(alloc.framework)
                .or_default()
                .push(v1::Offer {
                    id: id.clone(),
                    framework_id: fw.id.clone(),
                    agent_id: agent.id.clone(),
                    hostname: agent.info.hostname.clone(),
                    resources: alloc.resources.to_proto(),
                    attributes: agent.info.attributes.clone(),
                    role: fw.role.clone(),
                });
            new_offers.push((
                id,
                OfferRec {
                    framework_id: fw.id.clone(),
                    agent_id: agent.id.clone(),
                    resources: alloc.resources,
                    created: now,
                },
            ));
        }
        let sends: Vec<(String, Vec<v1::Offer>)> = by_framework
            .into_iter()
            .map(|(fi, offers)| (fslots[fi].id.clone(), offers))
            .collect();
        self.record_offers(new_offers);
        for (fid, offers) in sends {
            debug!(framework.id = %fid, count = offers.len(), "sending offers");
            self.tell_framework(&fid, event::Event::Offers(event::Offers { offers }));
        }
        self.metrics.allocation_runs += 1;
    }

    fn record_offers(&mut self, new_offers: Vec<(String, OfferRec)>) {
        for (id, o) in new_offers {
            if let Some(a) = self.agents.get_mut(&o.agent_id) {
                a.offered.add(&o.resources);
            }
            if let Some(f) = self.frameworks.get_mut(&o.framework_id) {
                f.offered.add(&o.resources);
                f.offers.insert(id.clone());
            }
            self.offers.insert(id, o);
        }
    }
}
