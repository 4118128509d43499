//! The reliable status-update streams, as a pure state machine: per task an
//! ordered queue of updates the framework has not acknowledged yet.
//!
//! Only a stream's head is ever in flight. It is sent once its checkpoint is
//! durable, re-sent every retry interval until the acknowledgement for its
//! uuid comes back, and then the next update is due at once. A terminal
//! update is no different: it stays until acknowledged, so a task is never
//! forgotten before its framework knows how it ended.
//!
//! Time is an input (a [`Duration`] on the agent's monotonic clock, e.g.
//! since it started) and so is the checkpoint watermark; nothing here does
//! I/O or reads a clock.
#![deny(clippy::disallowed_methods)]

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use mezzo_proto::v1;

/// A task: (framework id, task id).
pub(crate) type TaskKey = (String, String);

/// A checkpoint sequence number: an update may leave the agent once the
/// checkpoint write with this number (or a later one) is durable.
pub(crate) type Seq = u64;

struct Pending {
    status: v1::TaskStatus,
    /// The checkpoint write that records this update.
    seq: Seq,
    /// When the head was last sent; `None` if it is due at once.
    sent_at: Option<Duration>,
}

/// One task's queue of unacknowledged updates, oldest first.
#[derive(Default)]
pub(crate) struct UpdateStream {
    queue: VecDeque<Pending>,
}

impl UpdateStream {
    /// True when every update was acknowledged.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The queued updates, head first (what a checkpoint records).
    pub(crate) fn statuses(&self) -> impl Iterator<Item = &v1::TaskStatus> {
        self.queue.iter().map(|p| &p.status)
    }

    /// True when an update with this uuid is queued.
    pub(crate) fn contains(&self, uuid: &[u8]) -> bool {
        self.queue.iter().any(|p| p.status.uuid == uuid)
    }

    /// True when a terminal update is queued.
    pub(crate) fn has_terminal(&self) -> bool {
        self.statuses()
            .any(|s| mezzo_proto::task_state(s).is_terminal())
    }

    fn push(&mut self, status: v1::TaskStatus, seq: Seq) {
        self.queue.push_back(Pending {
            status,
            seq,
            sent_at: None,
        });
    }

    /// The head, if it is durable and never sent or its retry is due; it
    /// is then counted as sent at `now`.
    fn due(&mut self, now: Duration, durable: Seq, retry: Duration) -> Option<&v1::TaskStatus> {
        let head = self.queue.front_mut()?;
        if head.seq > durable {
            return None;
        }
        if head
            .sent_at
            .is_some_and(|at| now.saturating_sub(at) < retry)
        {
            return None;
        }
        head.sent_at = Some(now);
        Some(&head.status)
    }

    /// When the head is next due (`None` if the queue is empty or the head
    /// waits for its checkpoint).
    fn next_due(&self, durable: Seq, retry: Duration) -> Option<Duration> {
        let head = self.queue.front()?;
        if head.seq > durable {
            return None;
        }
        Some(head.sent_at.map_or(Duration::ZERO, |at| at + retry))
    }
}

/// What an acknowledgement did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Acked {
    /// The head matched and was removed; this was its status.
    Popped(v1::TaskStatus),
    /// No such task, or the uuid is not the head's (a stale or duplicate
    /// acknowledgement): nothing changed.
    Ignored,
}

/// The update streams of every task on the agent.
#[derive(Default)]
pub(crate) struct Updates {
    streams: BTreeMap<TaskKey, UpdateStream>,
}

impl Updates {
    /// Queues `status` behind the task's earlier updates; `seq` is the
    /// checkpoint write that records it.
    pub(crate) fn push(&mut self, key: &TaskKey, status: v1::TaskStatus, seq: Seq) {
        self.streams
            .entry(key.clone())
            .or_default()
            .push(status, seq);
    }

    /// The task's stream (empty if it has none).
    pub(crate) fn stream(&self, key: &TaskKey) -> Option<&UpdateStream> {
        self.streams.get(key)
    }

    /// True when the task has no unacknowledged update.
    pub(crate) fn is_empty(&self, key: &TaskKey) -> bool {
        self.streams.get(key).is_none_or(UpdateStream::is_empty)
    }

    /// Acknowledges the task's head if `uuid` is the head's.
    pub(crate) fn ack(&mut self, key: &TaskKey, uuid: &[u8]) -> Acked {
        let Some(stream) = self.streams.get_mut(key) else {
            return Acked::Ignored;
        };
        if stream.queue.front().is_none_or(|h| h.status.uuid != uuid) {
            return Acked::Ignored;
        }
        let popped = stream.queue.pop_front().map(|p| p.status);
        if let Some(next) = stream.queue.front_mut() {
            next.sent_at = None;
        }
        match popped {
            Some(s) => Acked::Popped(s),
            None => Acked::Ignored,
        }
    }

    /// Every head to send at `now` (first sends and retries), given that
    /// checkpoints up to `durable` are on disk. Each returned head counts
    /// as sent at `now`.
    pub(crate) fn due(
        &mut self,
        now: Duration,
        durable: Seq,
        retry: Duration,
    ) -> Vec<(TaskKey, v1::TaskStatus)> {
        self.streams
            .iter_mut()
            .filter_map(|(k, s)| s.due(now, durable, retry).map(|st| (k.clone(), st.clone())))
            .collect()
    }

    /// The earliest time a head becomes due, if any is waiting.
    pub(crate) fn next_due(&self, durable: Seq, retry: Duration) -> Option<Duration> {
        self.streams
            .values()
            .filter_map(|s| s.next_due(durable, retry))
            .min()
    }

    /// After (re-)registering with a master, possibly a new one, every head
    /// is due at once: the new master has seen none of them.
    pub(crate) fn reconnected(&mut self) {
        for s in self.streams.values_mut() {
            if let Some(h) = s.queue.front_mut() {
                h.sent_at = None;
            }
        }
    }

    /// Drops a forgotten task's stream.
    pub(crate) fn remove(&mut self, key: &TaskKey) {
        self.streams.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETRY: Duration = Duration::from_secs(10);

    fn key(t: &str) -> TaskKey {
        ("fw".into(), t.into())
    }

    fn status(task: &str, state: v1::TaskState, uuid: u8) -> v1::TaskStatus {
        v1::TaskStatus {
            task_id: task.into(),
            state: state as i32,
            uuid: vec![uuid],
            framework_id: "fw".into(),
            ..Default::default()
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn uuids(due: &[(TaskKey, v1::TaskStatus)]) -> Vec<u8> {
        due.iter().map(|(_, s)| s.uuid[0]).collect()
    }

    #[test]
    fn head_is_sent_once_and_not_again_before_its_retry_time() {
        let mut u = Updates::default();
        u.push(&key("a"), status("a", v1::TaskState::TaskRunning, 1), 1);
        assert_eq!(uuids(&u.due(secs(0), 1, RETRY)), [1]);
        assert!(u.due(secs(0), 1, RETRY).is_empty());
        assert!(u.due(secs(9), 1, RETRY).is_empty());
        assert_eq!(u.next_due(1, RETRY), Some(secs(10)));
    }

    #[test]
    fn head_is_resent_once_its_retry_time_passed() {
        let mut u = Updates::default();
        u.push(&key("a"), status("a", v1::TaskState::TaskRunning, 1), 1);
        u.due(secs(0), 1, RETRY);
        assert_eq!(uuids(&u.due(secs(10), 1, RETRY)), [1]);
        assert!(u.due(secs(15), 1, RETRY).is_empty());
        assert_eq!(uuids(&u.due(secs(20), 1, RETRY)), [1]);
    }

    #[test]
    fn nothing_is_sent_before_its_checkpoint_is_durable() {
        let mut u = Updates::default();
        u.push(&key("a"), status("a", v1::TaskState::TaskRunning, 1), 5);
        assert!(u.due(secs(0), 4, RETRY).is_empty());
        assert_eq!(u.next_due(4, RETRY), None);
        assert_eq!(uuids(&u.due(secs(0), 5, RETRY)), [1]);
    }

    #[test]
    fn ack_by_the_head_uuid_pops_and_the_next_is_due_at_once() {
        let mut u = Updates::default();
        let k = key("a");
        u.push(&k, status("a", v1::TaskState::TaskStarting, 1), 1);
        u.push(&k, status("a", v1::TaskState::TaskRunning, 2), 2);
        assert_eq!(uuids(&u.due(secs(0), 2, RETRY)), [1]);
        assert!(matches!(u.ack(&k, &[1]), Acked::Popped(s) if s.uuid == [1]));
        assert_eq!(uuids(&u.due(secs(1), 2, RETRY)), [2]);
    }

    #[test]
    fn a_wrong_or_stale_uuid_is_ignored() {
        let mut u = Updates::default();
        let k = key("a");
        u.push(&k, status("a", v1::TaskState::TaskStarting, 1), 1);
        u.push(&k, status("a", v1::TaskState::TaskRunning, 2), 2);
        u.due(secs(0), 2, RETRY);
        // Not the head's uuid (the second update), unknown, and unknown task.
        assert_eq!(u.ack(&k, &[2]), Acked::Ignored);
        assert_eq!(u.ack(&k, &[9]), Acked::Ignored);
        assert_eq!(u.ack(&key("b"), &[1]), Acked::Ignored);
        assert!(
            u.due(secs(1), 2, RETRY).is_empty(),
            "the head's retry moved"
        );
        assert!(matches!(u.ack(&k, &[1]), Acked::Popped(_)));
        // Acknowledging the popped update again changes nothing.
        assert_eq!(u.ack(&k, &[1]), Acked::Ignored);
        assert_eq!(uuids(&u.due(secs(1), 2, RETRY)), [2]);
    }

    #[test]
    fn order_is_preserved_and_only_the_head_is_in_flight() {
        let mut u = Updates::default();
        let k = key("a");
        for i in 1..=4 {
            u.push(&k, status("a", v1::TaskState::TaskRunning, i), u64::from(i));
        }
        let mut sent = Vec::new();
        for t in 0..4 {
            let due = u.due(secs(t), 4, RETRY);
            assert_eq!(due.len(), 1, "only the head goes");
            sent.extend(uuids(&due));
            assert!(matches!(u.ack(&k, &due[0].1.uuid), Acked::Popped(_)));
        }
        assert_eq!(sent, [1, 2, 3, 4]);
        assert!(u.is_empty(&k));
    }

    #[test]
    fn a_terminal_update_stays_until_acknowledged() {
        let mut u = Updates::default();
        let k = key("a");
        u.push(&k, status("a", v1::TaskState::TaskFinished, 1), 1);
        assert!(u.stream(&k).is_some_and(UpdateStream::has_terminal));
        for t in [0, 10, 20, 30] {
            assert_eq!(uuids(&u.due(secs(t), 1, RETRY)), [1]);
        }
        assert!(!u.is_empty(&k));
        assert!(matches!(u.ack(&k, &[1]), Acked::Popped(_)));
        assert!(u.is_empty(&k));
    }

    #[test]
    fn reregistration_resends_every_head_at_once() {
        let mut u = Updates::default();
        u.push(&key("a"), status("a", v1::TaskState::TaskRunning, 1), 1);
        u.push(&key("a"), status("a", v1::TaskState::TaskFinished, 2), 1);
        u.push(&key("b"), status("b", v1::TaskState::TaskRunning, 3), 1);
        assert_eq!(uuids(&u.due(secs(0), 1, RETRY)), [1, 3]);
        assert!(u.due(secs(1), 1, RETRY).is_empty());
        u.reconnected();
        assert_eq!(uuids(&u.due(secs(1), 1, RETRY)), [1, 3]);
    }

    #[test]
    fn stream_answers_what_a_checkpoint_and_dedup_need() {
        let mut u = Updates::default();
        let k = key("a");
        u.push(&k, status("a", v1::TaskState::TaskRunning, 1), 1);
        u.push(&k, status("a", v1::TaskState::TaskFailed, 2), 2);
        let s = u
            .stream(&k)
            .map(|s| s.statuses().map(|s| s.uuid[0]).collect::<Vec<_>>());
        assert_eq!(s, Some(vec![1, 2]));
        assert!(u
            .stream(&k)
            .is_some_and(|s| s.contains(&[2]) && !s.contains(&[3])));
        u.remove(&k);
        assert!(u.is_empty(&k));
    }

    /// One step of a random run against the streams.
    #[derive(Debug, Clone)]
    enum Step {
        Push(u8),
        AckHead(u8),
        AckRandom(u8, u8),
        Advance(u64),
        Durable,
        Reconnect,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            (0u8..3).prop_map(Step::Push),
            (0u8..3).prop_map(Step::AckHead),
            (0u8..3, any::<u8>()).prop_map(|(t, u)| Step::AckRandom(t, u)),
            (0u64..15).prop_map(Step::Advance),
            Just(Step::Durable),
            Just(Step::Reconnect),
        ]
    }

    proptest::proptest! {
        /// Whatever the interleaving: only a durable head is ever sent, an
        /// update goes only once every earlier one of its task was
        /// acknowledged, and an acknowledged update is never sent again.
        #[test]
        fn only_durable_heads_go_in_order_and_acked_never_return(
            steps in proptest::collection::vec(step(), 1..120)
        ) {
            let mut u = Updates::default();
            let (mut now, mut seq, mut durable) = (0u64, 0u64, 0u64);
            let mut next_uuid = 0u8;
            let mut pushed: BTreeMap<TaskKey, Vec<(u8, Seq)>> = BTreeMap::new();
            let mut acked: Vec<u8> = Vec::new();
            for s in steps {
                match s {
                    Step::Push(t) => {
                        seq += 1;
                        next_uuid = next_uuid.wrapping_add(1);
                        let k = key(&t.to_string());
                        u.push(&k, status("x", v1::TaskState::TaskRunning, next_uuid), seq);
                        pushed.entry(k).or_default().push((next_uuid, seq));
                    }
                    Step::AckHead(t) => {
                        let k = key(&t.to_string());
                        let head = u.stream(&k).and_then(|s| s.statuses().next()).map(|s| s.uuid.clone());
                        if let Some(h) = head {
                            proptest::prop_assert!(matches!(u.ack(&k, &h), Acked::Popped(_)));
                            acked.push(h[0]);
                        }
                    }
                    Step::AckRandom(t, uuid) => {
                        let k = key(&t.to_string());
                        let head = u.stream(&k).and_then(|s| s.statuses().next()).map(|s| s.uuid[0]);
                        let r = u.ack(&k, &[uuid]);
                        proptest::prop_assert_eq!(matches!(r, Acked::Popped(_)), head == Some(uuid));
                        if head == Some(uuid) {
                            acked.push(uuid);
                        }
                    }
                    Step::Advance(s) => now += s,
                    Step::Durable => durable = seq,
                    Step::Reconnect => u.reconnected(),
                }
                for (k, st) in u.due(secs(now), durable, RETRY) {
                    let id = st.uuid[0];
                    proptest::prop_assert!(!acked.contains(&id), "acked {} re-sent", id);
                    let p = pushed.get(&k).and_then(|v| v.iter().find(|(x, _)| *x == id));
                    proptest::prop_assert!(p.is_some_and(|(_, s)| *s <= durable), "not durable");
                    // Everything pushed before it on its task was acknowledged.
                    let before = pushed[&k].iter().take_while(|(x, _)| *x != id);
                    for (x, _) in before {
                        proptest::prop_assert!(acked.contains(x), "{} sent before {} was acked", id, x);
                    }
                }
            }
        }
    }
}
