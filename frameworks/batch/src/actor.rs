//! The actor shell around the [`Core`]: it owns the mailbox, the timer, the store and
//! the queue of driver calls, and does nothing the core did not decide.
//!
//! After each burst of messages it takes the core's [`Output`](crate::core::Output),
//! makes its store writes durable in order, and only then answers the callers (an
//! HTTP reply, or the SDK's acknowledgement of an update, never precedes the write)
//! and hands the effects to a worker that performs them in order, so the actor never
//! awaits the master. If a write fails, nothing of that burst is acted on: callers get
//! an error, offers it meant to use are declined, and the core is reloaded from the
//! store (losing sync with the store is repaired by reloading, not by guessing).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mezzo_runtime::Shutdown;
use mezzo_sdk::store::Store;
use mezzo_sdk::{async_trait, v1, Driver, Effect, Scheduler};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::clock::Clock;
use crate::core::{Core, Restored, StoreWrite, FRAMEWORK_ID_KEY};
use crate::run::JobRun;
use crate::BatchError;

/// Why the actor could not serve a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActorError {
    /// The actor is gone (shutting down).
    #[error("batch framework is shutting down")]
    Unavailable,
    /// The call's changes could not be made durable (and were undone).
    #[error("store: {0}")]
    NotPersisted(String),
}

/// Answers a caller once the burst's writes are durable (`Ok`) or failed.
type Reply = Box<dyn FnOnce(Result<(), ActorError>) + Send>;
/// A function run on the core; returns how to answer.
type Call = Box<dyn FnOnce(&mut Core, DateTime<Utc>) -> Reply + Send>;

/// Messages to the actor.
pub(crate) enum Msg {
    Call(Call),
    Subscribed(String, oneshot::Sender<()>),
    Offers(Vec<v1::Offer>),
    LaunchFailed(Vec<String>),
    Update(Box<v1::TaskStatus>, oneshot::Sender<()>),
    Disconnected,
}

/// A cloneable way to run calls on the actor's core.
#[derive(Clone)]
pub(crate) struct Handle {
    tx: mpsc::Sender<Msg>,
}

impl Handle {
    /// Runs `f` on the core; the answer comes once its changes are durable.
    pub(crate) async fn call<R, F>(&self, f: F) -> Result<R, ActorError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Core, DateTime<Utc>) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let call: Call = Box::new(move |core, now| {
            let r = f(core, now);
            Box::new(move |flushed| {
                let _ = tx.send(flushed.map(|()| r));
            })
        });
        self.tx
            .send(Msg::Call(call))
            .await
            .map_err(|_| ActorError::Unavailable)?;
        rx.await.map_err(|_| ActorError::Unavailable)?
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, BatchError> {
    serde_json::from_slice(bytes).map_err(|e| BatchError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// Reads the durable state.
pub(crate) async fn load(store: &dyn Store) -> Result<Restored, BatchError> {
    let mut restored = Restored {
        framework_id: store
            .get(FRAMEWORK_ID_KEY)
            .await?
            .map(|v| String::from_utf8_lossy(&v.data).trim().to_string()),
        ..Restored::default()
    };
    for id in store.list("jobs").await? {
        let key = format!("jobs/{id}");
        if let Some(v) = store.get(&key).await? {
            restored.jobs.insert(id, decode(&key, &v.data)?);
        }
    }
    for job in store.list("runs").await? {
        for run in store.list(&format!("runs/{job}")).await? {
            let key = format!("runs/{job}/{run}");
            if let Some(v) = store.get(&key).await? {
                restored.runs.push(decode::<JobRun>(&key, &v.data)?);
            }
        }
    }
    Ok(restored)
}

/// Makes `writes` durable in order; stops at the first failure.
async fn write_all(store: &dyn Store, writes: Vec<StoreWrite>) -> Result<(), String> {
    for write in writes {
        let result = match &write {
            StoreWrite::Put { key, value } => store.put(key, value, None).await.map(|_| ()),
            StoreWrite::Delete { key } => store.delete(key).await,
        };
        if let Err(e) = result {
            error!(key = write.key(), error = %e, "persisting state failed");
            return Err(e.to_string());
        }
    }
    Ok(())
}

/// Reload attempts after a failed write before the framework gives up and stops.
const RESYNC_ATTEMPTS: u32 = 5;

/// The actor (see the module docs).
pub(crate) struct Actor {
    core: Core,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    effects: mpsc::UnboundedSender<Effect>,
    /// Tripped when the store cannot be read back: the framework cannot go on.
    fatal: Shutdown,
}

impl Actor {
    /// An actor for `core`, already restored from `store`.
    pub(crate) fn new(
        core: Core,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        effects: mpsc::UnboundedSender<Effect>,
        fatal: Shutdown,
    ) -> Actor {
        Actor {
            core,
            store,
            clock,
            effects,
            fatal,
        }
    }

    /// Runs until `stop` trips (then answers what is queued, flushes and returns) or
    /// every sender is gone.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Msg>, tick: Duration, stop: Shutdown) {
        // Writes queued by the restore (stale run records) go first.
        self.settle(Vec::new()).await;
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut replies = Vec::new();
            tokio::select! {
                biased;
                () = stop.wait() => break,
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    self.handle(msg, &mut replies);
                    // Take whatever else waits, so one flush serves a burst.
                    while let Ok(msg) = rx.try_recv() {
                        self.handle(msg, &mut replies);
                    }
                }
                _ = interval.tick() => self.core.tick(self.clock.now()),
            }
            self.settle(replies).await;
        }
        rx.close();
        let mut replies = Vec::new();
        while let Some(msg) = rx.recv().await {
            self.handle(msg, &mut replies);
        }
        self.settle(replies).await;
        debug!("batch actor stopped");
    }

    fn handle(&mut self, msg: Msg, replies: &mut Vec<Reply>) {
        let now = self.clock.now();
        let done = |tx: oneshot::Sender<()>| -> Reply {
            Box::new(move |_| {
                let _ = tx.send(());
            })
        };
        match msg {
            Msg::Call(call) => replies.push(call(&mut self.core, now)),
            Msg::Subscribed(id, tx) => {
                self.core.on_subscribed(&id, now);
                replies.push(done(tx));
            }
            Msg::Offers(offers) => self.core.on_offers(offers, now),
            Msg::LaunchFailed(ids) => self.core.on_launch_failed(&ids, now),
            Msg::Update(status, tx) => {
                self.core.on_update(&status, now);
                replies.push(done(tx));
            }
            Msg::Disconnected => self.core.on_disconnected(),
        }
    }

    /// Makes the core's writes durable, then answers and queues its effects; on a
    /// failed write, answers with the error, keeps only harmless effects and reloads.
    async fn settle(&mut self, replies: Vec<Reply>) {
        let out = self.core.take_output();
        let written = match out.encode_error {
            Some(e) => Err(e),
            None => write_all(self.store.as_ref(), out.writes).await,
        };
        match written {
            Ok(()) => {
                for reply in replies {
                    reply(Ok(()));
                }
                for effect in out.effects {
                    self.perform(effect);
                }
            }
            Err(why) => {
                for reply in replies {
                    reply(Err(ActorError::NotPersisted(why.clone())));
                }
                for effect in out.effects {
                    match effect {
                        // Its tasks are not durable: never launch them.
                        Effect::Launch { offer_id, .. } => self.perform(Effect::Decline {
                            offer_ids: vec![offer_id],
                            refuse_seconds: crate::core::DECLINE_REFUSE_SECONDS,
                        }),
                        // Decided on state that is being thrown away.
                        Effect::Kill { .. } => {}
                        other => self.perform(other),
                    }
                }
                self.resync().await;
            }
        }
    }

    fn perform(&self, effect: Effect) {
        if self.effects.send(effect).is_err() {
            warn!("effect worker gone");
        }
    }

    /// Reloads the core from the store after a failed write, and asks the master for
    /// the state of every live task (updates of the failed burst may be lost).
    async fn resync(&mut self) {
        for attempt in 1..=RESYNC_ATTEMPTS {
            match load(self.store.as_ref()).await {
                Ok(restored) => {
                    self.core.restore(restored);
                    self.core.reconcile();
                    info!(attempt, "state reloaded from the store");
                    return;
                }
                Err(e) => {
                    error!(attempt, error = %e, "reloading state failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        error!("the store cannot be read back; stopping the batch framework");
        self.fatal.trigger();
    }
}

/// Performs effects in order. A failed launch goes back to the actor (its slots wait
/// again); other failures are logged: the core's level-triggered tick repeats what
/// matters (kills are re-sent, revive is repeated).
pub(crate) async fn perform_effects(
    driver: Driver,
    mut rx: mpsc::UnboundedReceiver<Effect>,
    actor: mpsc::WeakSender<Msg>,
) {
    while let Some(effect) = rx.recv().await {
        let launched = effect.launched_task_ids();
        debug!(?effect, "effect");
        if let Err(e) = effect.perform(&driver).await {
            warn!(error = %e, "driver call failed");
            if let (false, Some(tx)) = (launched.is_empty(), actor.upgrade()) {
                let _ = tx.send(Msg::LaunchFailed(launched)).await;
            }
        }
    }
}

/// Feeds the SDK's callbacks into the actor.
pub(crate) struct Glue {
    pub(crate) tx: mpsc::Sender<Msg>,
}

impl Glue {
    /// A handle for HTTP calls on the same mailbox.
    pub(crate) fn handle(&self) -> Handle {
        Handle {
            tx: self.tx.clone(),
        }
    }
}

#[async_trait]
impl Scheduler for Glue {
    async fn subscribed(&mut self, _driver: &Driver, framework_id: &str, _master: &v1::MasterInfo) {
        let (tx, rx) = oneshot::channel();
        if self
            .tx
            .send(Msg::Subscribed(framework_id.to_string(), tx))
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    async fn offers(&mut self, driver: &Driver, offers: Vec<v1::Offer>) {
        if let Err(mpsc::error::SendError(Msg::Offers(offers))) =
            self.tx.send(Msg::Offers(offers)).await
        {
            // The actor is gone: give the offers back at once.
            let ids = offers.into_iter().map(|o| o.id).collect();
            let _ = driver
                .decline(ids, Some(crate::core::DECLINE_REFUSE_SECONDS))
                .await;
        }
    }

    async fn update(&mut self, _driver: &Driver, status: &v1::TaskStatus) {
        // The SDK acknowledges after this returns, i.e. after the update is durable.
        let (tx, rx) = oneshot::channel();
        let msg = Msg::Update(Box::new(status.clone()), tx);
        if self.tx.send(msg).await.is_ok() {
            let _ = rx.await;
        }
    }

    async fn error(&mut self, _driver: &Driver, message: &str) {
        warn!(%message, "error from the master");
    }

    async fn disconnected(&mut self, _driver: &Driver) {
        warn!("disconnected from the master; re-subscribing");
        let _ = self.tx.send(Msg::Disconnected).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use chrono::TimeZone;
    use mezzo_sdk::store::{MemoryStore, StoreError, Version, Versioned};
    use mezzo_sdk::Resources;

    use super::*;
    use crate::core::CoreError;
    use crate::ids::SequentialRunIds;
    use crate::model::JobSpec;

    /// A memory store whose writes fail while `fail` is set.
    #[derive(Default)]
    struct FlakyStore {
        inner: MemoryStore,
        fail: AtomicBool,
    }

    #[async_trait]
    impl Store for FlakyStore {
        async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
            self.inner.get(key).await
        }
        async fn put(
            &self,
            key: &str,
            data: &[u8],
            v: Option<Version>,
        ) -> Result<Version, StoreError> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(StoreError::Backend("disk full".into()));
            }
            self.inner.put(key, data, v).await
        }
        async fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.inner.delete(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
            self.inner.list(prefix).await
        }
    }

    struct FixedClock;

    impl Clock for FixedClock {
        fn now(&self) -> DateTime<Utc> {
            Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
        }
    }

    struct Running {
        glue: Glue,
        effects: mpsc::UnboundedReceiver<Effect>,
        stop: Shutdown,
        actor: tokio::task::JoinHandle<()>,
    }

    fn actor(
        store: Arc<dyn Store>,
    ) -> (
        Actor,
        Glue,
        mpsc::Receiver<Msg>,
        mpsc::UnboundedReceiver<Effect>,
    ) {
        let (tx, rx) = mpsc::channel(16);
        let (effects_tx, effects) = mpsc::unbounded_channel();
        let core = Core::new(Box::new(SequentialRunIds::default()));
        let actor = Actor::new(
            core,
            store,
            Arc::new(FixedClock),
            effects_tx,
            Shutdown::new(),
        );
        (actor, Glue { tx }, rx, effects)
    }

    fn spawn(store: Arc<dyn Store>) -> Running {
        let (actor, glue, rx, effects) = actor(store);
        let stop = Shutdown::new();
        // A tick far away: the tests drive everything by messages.
        let task = tokio::spawn(actor.run(rx, Duration::from_secs(3600), stop.clone()));
        Running {
            glue,
            effects,
            stop,
            actor: task,
        }
    }

    fn job(id: &str) -> JobSpec {
        serde_json::from_value(serde_json::json!({"id": id, "run": {"cmd": "true"}})).unwrap()
    }

    fn offer(id: &str) -> v1::Offer {
        v1::Offer {
            id: id.into(),
            agent_id: "agent-1".into(),
            resources: Resources::parse("cpus:4;mem:4096").unwrap().to_proto(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn replies_and_launches_follow_their_durable_writes() {
        let store = Arc::new(MemoryStore::new());
        let mut a = spawn(store.clone());
        let h = a.glue.handle();
        let created = h.call(|core, now| core.create_job(job("a"), now).map(|_| ()));
        assert_eq!(created.await, Ok(Ok(())));
        assert!(
            store.get("jobs/a").await.unwrap().is_some(),
            "durable before the reply"
        );
        let run = h
            .call(|core, now| core.start_run("a", now).map(|r| r.id.clone()))
            .await
            .unwrap()
            .unwrap();
        a.glue
            .tx
            .send(Msg::Offers(vec![offer("o1")]))
            .await
            .unwrap();
        let effect = a.effects.recv().await.unwrap();
        let Effect::Launch { tasks, .. } = effect else {
            panic!("expected a launch, got {effect:?}")
        };
        let stored = store.get(&format!("runs/a/{run}")).await.unwrap().unwrap();
        let stored: JobRun = serde_json::from_slice(&stored.data).unwrap();
        assert_eq!(
            stored.tasks[0].id, tasks[0].task_id,
            "the task is durable before its launch"
        );
        a.stop.trigger();
        a.actor.await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_write_answers_an_error_declines_launches_and_reloads() {
        let store = Arc::new(FlakyStore::default());
        let mut a = spawn(store.clone());
        let h = a.glue.handle();
        let created = h.call(|core, now| core.create_job(job("a"), now).map(|_| ()));
        assert_eq!(created.await, Ok(Ok(())));
        h.call(|core, now| core.start_run("a", now).map(|_| ()))
            .await
            .unwrap()
            .unwrap();
        store.fail.store(true, Ordering::SeqCst);
        let lost = h.call(|core, now| core.create_job(job("b"), now).map(|_| ()));
        assert_eq!(
            lost.await,
            Err(ActorError::NotPersisted("store backend: disk full".into()))
        );
        a.glue
            .tx
            .send(Msg::Offers(vec![offer("o1")]))
            .await
            .unwrap();
        let effect = a.effects.recv().await.unwrap();
        assert_eq!(
            effect,
            Effect::Decline {
                offer_ids: vec!["o1".into()],
                refuse_seconds: crate::core::DECLINE_REFUSE_SECONDS
            },
            "a launch whose task is not durable is never sent"
        );
        store.fail.store(false, Ordering::SeqCst);
        let b = h.call(|core, _| core.job("b").map(|_| ())).await;
        assert_eq!(b, Ok(Err(CoreError::JobNotFound("b".into()))), "reloaded");
        let tasks = h
            .call(|core, _| {
                core.active_runs("a")
                    .iter()
                    .map(|r| r.tasks.len())
                    .sum::<usize>()
            })
            .await;
        assert_eq!(tasks, Ok(0), "the undurable launch was forgotten");
        a.stop.trigger();
        a.actor.await.unwrap();
    }

    #[tokio::test]
    async fn stopping_answers_what_is_queued_and_flushes_it() {
        let store = Arc::new(MemoryStore::new());
        let (actor, glue, rx, _effects) = actor(store.clone());
        let h = glue.handle();
        let pending = tokio::spawn(async move {
            h.call(|core, now| core.create_job(job("a"), now).map(|_| ()))
                .await
        });
        while glue.tx.capacity() == glue.tx.max_capacity() {
            tokio::task::yield_now().await;
        }
        let stop = Shutdown::new();
        stop.trigger();
        actor.run(rx, Duration::from_secs(3600), stop).await;
        assert_eq!(pending.await.unwrap(), Ok(Ok(())));
        assert!(store.get("jobs/a").await.unwrap().is_some());
    }
}
