//! Agent removals, rate-limited as Mesos' `--agent_removal_rate_limit`:
//! agents that missed their pings, or that the registry knows but that did
//! not re-register within `--agent-reregister-timeout` after a failover,
//! join a queue; the queue releases one removal per `period / permits`.
//! A mass timeout (a network blip, a failover nobody followed) then takes
//! the cluster down slowly enough for an operator to notice, and an agent
//! that comes back while it waits is not removed at all.
//!
//! Without a limit the queue drains on the tick that filled it, in the
//! order agents timed out: the behaviour of an unlimited master.

use std::collections::{HashSet, VecDeque};

use tracing::info;

use super::{Master, Time};

/// Agents waiting to be removed, oldest first.
#[derive(Debug, Default)]
pub(super) struct RemovalQueue {
    order: VecDeque<String>,
    queued: HashSet<String>,
    /// The earliest time the next removal may happen.
    next_at: Time,
}

impl RemovalQueue {
    /// Queues `agent_id` unless it already waits; true if it was added.
    fn push(&mut self, agent_id: &str) -> bool {
        if !self.queued.insert(agent_id.to_string()) {
            return false;
        }
        self.order.push_back(agent_id.to_string());
        true
    }

    fn pop(&mut self) -> Option<String> {
        let id = self.order.pop_front()?;
        self.queued.remove(&id);
        Some(id)
    }

    /// How many agents wait.
    pub(super) fn len(&self) -> usize {
        self.order.len()
    }

    pub(super) fn clear(&mut self) {
        *self = RemovalQueue::default();
    }
}

impl Master {
    /// Queues an agent that timed out for removal (once).
    pub(super) fn schedule_removal(&mut self, agent_id: &str) {
        if self.removals.push(agent_id) {
            self.metrics.agent_removals_scheduled += 1;
            if self.config.agent_removal_rate_limit.is_some() {
                info!(agent.id = %agent_id, queued = self.removals.len(), "agent removal scheduled (rate-limited)");
            }
        }
    }

    /// Removes queued agents that are still due, as fast as the rate limit
    /// allows; agents that came back meanwhile leave the queue untouched.
    pub(super) fn remove_queued_agents(&mut self, now: Time) {
        let limit = self.config.agent_removal_rate_limit;
        while let Some(id) = self.removals.order.front().cloned() {
            if !self.still_due_for_removal(&id, now) {
                self.removals.pop();
                self.metrics.agent_removals_canceled += 1;
                info!(agent.id = %id, "agent came back: its removal is canceled");
                continue;
            }
            if limit.is_some() && now < self.removals.next_at {
                break;
            }
            self.removals.pop();
            if let Some(l) = limit {
                self.removals.next_at = now + l.interval();
            }
            if self.expected_agents.contains_key(&id) {
                self.remove_expected_agent(&id, now);
            } else {
                self.mark_unreachable(&id);
            }
        }
    }

    /// An agent the registry expects is due while it has not re-registered
    /// (its deadline passed when it was queued); a known agent while it is
    /// still reachable and still silent past the ping deadline.
    fn still_due_for_removal(&self, agent_id: &str, now: Time) -> bool {
        if self.expected_agents.contains_key(agent_id) {
            return !self.agents.contains_key(agent_id);
        }
        let deadline = self.config.agent_ping_timeout * self.config.max_agent_ping_timeouts.max(1);
        self.agents
            .get(agent_id)
            .is_some_and(|a| a.reachable && now.saturating_sub(a.last_seen) >= deadline)
    }
}
