//! The actor: the one task that owns the [`Core`]. HTTP handlers send it closures
//! ([`Handle::call`]), the SDK scheduler sends it offers and updates ([`Sched`]), and a
//! timer makes it plan. After each message it persists what changed, performs the
//! effects (driver calls), publishes events, and only then answers the caller.
//!
//! An actor lives for one leadership term ([`TermGuard`]): it stops the moment leadership
//! is lost, checks leadership before every driver call, and never performs effects whose
//! state could not be persisted (the term then ends and the next one reloads the store).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mezzo_runtime::Shutdown;
use mezzo_sdk::election::TermGuard;
use mezzo_sdk::{async_trait, v1, Driver, Scheduler};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::state::{ApiError, AppRecord, Core, Deployment, IdGen, Instance, Settings};
use crate::MarathonError;
use mezzo_sdk::store::{key_segment, Store};

type Reply = Box<dyn FnOnce() + Send>;
type Job = Box<dyn FnOnce(&mut Core, DateTime<Utc>) -> Reply + Send>;

pub(crate) enum Msg {
    Job(Job),
    Subscribed(String),
    Offers(Vec<v1::Offer>),
    Update(Box<v1::TaskStatus>),
    Disconnected,
}

/// The mailbox of the current term's actor (`None` while not leading).
pub(crate) type Mailbox = Option<mpsc::UnboundedSender<Msg>>;

/// A cloneable handle to the actor of the current leadership term.
#[derive(Clone)]
pub(crate) struct Handle {
    tx: watch::Receiver<Mailbox>,
    events: broadcast::Sender<(String, Value)>,
}

impl Handle {
    /// Runs `f` on the actor's state; the answer comes after the changes are durable.
    pub(crate) async fn call<R, F>(&self, f: F) -> Result<R, ApiError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Core, DateTime<Utc>) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |core, now| {
            let r = f(core, now);
            Box::new(move || {
                let _ = tx.send(r);
            })
        });
        let tx = self.tx.borrow().clone();
        tx.ok_or_else(|| ApiError::Unavailable("not the leader".into()))?
            .send(Msg::Job(job))
            .map_err(|_| ApiError::Unavailable("not the leader (any more)".into()))?;
        rx.await
            .map_err(|_| ApiError::Unavailable("not the leader (any more)".into()))
    }

    /// A handle whose actor is whatever `tx` holds; `events` outlive terms.
    pub(crate) fn new(
        tx: watch::Receiver<Mailbox>,
        events: broadcast::Sender<(String, Value)>,
    ) -> Handle {
        Handle { tx, events }
    }

    /// A receiver of every event from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<(String, Value)> {
        self.events.subscribe()
    }
}

/// The SDK scheduler: forwards everything to the actor and returns at once.
pub(crate) struct Sched {
    tx: mpsc::UnboundedSender<Msg>,
}

impl Sched {
    pub(crate) fn new(tx: mpsc::UnboundedSender<Msg>) -> Sched {
        Sched { tx }
    }
}

#[async_trait]
impl Scheduler for Sched {
    async fn subscribed(&mut self, _driver: &Driver, framework_id: &str, _m: &v1::MasterInfo) {
        info!(framework.id = framework_id, "subscribed");
        let _ = self.tx.send(Msg::Subscribed(framework_id.to_string()));
    }

    async fn offers(&mut self, _driver: &Driver, offers: Vec<v1::Offer>) {
        let _ = self.tx.send(Msg::Offers(offers));
    }

    async fn update(&mut self, _driver: &Driver, status: &v1::TaskStatus) {
        let _ = self.tx.send(Msg::Update(Box::new(status.clone())));
    }

    async fn error(&mut self, _driver: &Driver, message: &str) {
        warn!(%message, "error from the master");
    }

    async fn disconnected(&mut self, _driver: &Driver) {
        warn!("disconnected from the master");
        let _ = self.tx.send(Msg::Disconnected);
    }
}

/// Random v4 UUIDs: ids unique across restarts and failovers of the framework.
#[derive(Debug)]
struct RandomIds;

impl IdGen for RandomIds {
    fn next_id(&mut self) -> String {
        uuid::Uuid::new_v4().to_string()
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, MarathonError> {
    serde_json::from_slice(bytes).map_err(|e| MarathonError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// Reads the stored state.
pub(crate) async fn load(store: &dyn Store, settings: Settings) -> Result<Core, MarathonError> {
    let mut core = Core::new(settings, Box::new(RandomIds));
    if let Some(v) = store.get("framework-id").await? {
        let id = String::from_utf8_lossy(&v.data).trim().to_string();
        if !id.is_empty() {
            core.framework_id = Some(id);
        }
    }
    for name in store.list("apps").await? {
        let key = format!("apps/{name}");
        if let Some(v) = store.get(&key).await? {
            let r: AppRecord = decode(&key, &v.data)?;
            core.apps.insert(r.app.id.clone(), r);
        }
    }
    for name in store.list("tasks").await? {
        let key = format!("tasks/{name}");
        if let Some(v) = store.get(&key).await? {
            let i: Instance = decode(&key, &v.data)?;
            core.instances.insert(i.task_id.clone(), i);
        }
    }
    for name in store.list("deployments").await? {
        let key = format!("deployments/{name}");
        if let Some(v) = store.get(&key).await? {
            let d: Deployment = decode(&key, &v.data)?;
            core.deployments.push(d);
        }
    }
    core.deployments.sort_by(|a, b| a.version.cmp(&b.version));
    for name in store.list("groups").await? {
        let key = format!("groups/{name}");
        if let Some(v) = store.get(&key).await? {
            let (id, deps): (String, Vec<String>) = decode(&key, &v.data)?;
            core.groups.insert(id, deps);
        }
    }
    info!(
        apps = core.apps.len(),
        tasks = core.instances.len(),
        deployments = core.deployments.len(),
        "state loaded"
    );
    Ok(core)
}

/// What one term's actor needs.
pub(crate) struct Term {
    pub(crate) core: Core,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) driver: Driver,
    pub(crate) events: broadcast::Sender<(String, Value)>,
    pub(crate) guard: TermGuard,
    pub(crate) tick: Duration,
}

/// Starts the actor of one term; it ends on `stop`, on loss of leadership, or when
/// its state could not be persisted.
pub(crate) fn spawn(term: Term, stop: Shutdown) -> (mpsc::UnboundedSender<Msg>, JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let actor = Actor {
        core: term.core,
        store: term.store,
        driver: term.driver,
        events: term.events,
        guard: term.guard,
    };
    (tx, tokio::spawn(actor.run(rx, term.tick, stop)))
}

struct Actor {
    core: Core,
    store: Arc<dyn Store>,
    driver: Driver,
    events: broadcast::Sender<(String, Value)>,
    guard: TermGuard,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>, tick: Duration, stop: Shutdown) {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lost = self.guard.clone();
        let why = loop {
            let mut replies: Vec<Reply> = Vec::new();
            tokio::select! {
                biased;
                _ = lost.lost() => break "leadership lost",
                _ = stop.wait() => break "stopped",
                msg = rx.recv() => {
                    let Some(msg) = msg else { break "mailbox closed" };
                    self.handle(msg, &mut replies);
                    // Take whatever else is waiting, so one flush serves a burst.
                    while let Ok(msg) = rx.try_recv() {
                        self.handle(msg, &mut replies);
                    }
                }
                _ = interval.tick() => self.core.tick(Utc::now()),
            }
            // Nothing is answered or done that is not durable: on a failed write the
            // callers get 503 (dropped replies) and the term ends; the next term reloads.
            if !self.flush().await {
                break "persisting state failed";
            }
            for reply in replies {
                reply();
            }
            if !self.perform().await {
                break "leadership lost";
            }
            // Effects may have changed state (failed launches): persist that too.
            if !self.flush().await {
                break "persisting state failed";
            }
            for (kind, body) in self.core.events.drain(..) {
                let _ = self.events.send((kind, body));
            }
        };
        if why == "stopped" && !self.flush().await {
            warn!("persisting state on shutdown failed");
        }
        info!(
            epoch = self.guard.epoch(),
            reason = why,
            "marathon actor stopped"
        );
    }

    fn handle(&mut self, msg: Msg, replies: &mut Vec<Reply>) {
        let now = Utc::now();
        match msg {
            Msg::Job(job) => replies.push(job(&mut self.core, now)),
            Msg::Subscribed(id) => self.core.on_subscribed(&id, now),
            Msg::Offers(offers) => {
                // Plan first, so the queue reflects the latest updates.
                self.core.tick(now);
                self.core.on_offers(offers, now);
            }
            Msg::Update(status) => {
                self.core.on_update(&status, now);
                self.core.tick(now);
            }
            Msg::Disconnected => self.core.on_disconnected(),
        }
    }

    /// Persists what changed; false if a write failed (the state in memory is then
    /// ahead of the store and must not be acted on).
    async fn flush(&mut self) -> bool {
        let dirty = std::mem::take(&mut self.core.dirty);
        if dirty.is_empty() {
            return true;
        }
        let store = self.store.as_ref();
        let mut writes: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        for id in &dirty.apps {
            let value = self
                .core
                .apps
                .get(id)
                .and_then(|r| serde_json::to_vec(r).ok());
            writes.push((format!("apps/{}", key_segment(id)), value));
        }
        for id in &dirty.instances {
            let value = self
                .core
                .instances
                .get(id)
                .and_then(|r| serde_json::to_vec(r).ok());
            writes.push((format!("tasks/{}", key_segment(id)), value));
        }
        for id in &dirty.deployments {
            let value = self
                .core
                .deployments
                .iter()
                .find(|d| &d.id == id)
                .and_then(|d| serde_json::to_vec(d).ok());
            writes.push((format!("deployments/{}", key_segment(id)), value));
        }
        for id in &dirty.groups {
            let value = self
                .core
                .groups
                .get(id)
                .and_then(|deps| serde_json::to_vec(&(id, deps)).ok());
            writes.push((format!("groups/{}", key_segment(id)), value));
        }
        if dirty.framework_id {
            if let Some(id) = &self.core.framework_id {
                writes.push(("framework-id".into(), Some(id.as_bytes().to_vec())));
            }
        }
        for (key, value) in writes {
            let result = match &value {
                Some(bytes) => store.put(&key, bytes, None).await.map(|_| ()),
                None => store.delete(&key).await,
            };
            if let Err(e) = result {
                error!(%key, error = %e, "persisting state failed");
                return false;
            }
        }
        true
    }

    /// Performs the effects while leadership holds; false (and nothing more done) once
    /// it does not.
    async fn perform(&mut self) -> bool {
        let effects = std::mem::take(&mut self.core.effects);
        for effect in effects {
            if !self.guard.holds() {
                warn!(
                    epoch = self.guard.epoch(),
                    "leadership lost: dropping pending launches and kills"
                );
                return false;
            }
            debug!(?effect, "effect");
            let launched = effect.launched_task_ids();
            let result = effect.perform(&self.driver).await;
            if result.is_err() && !launched.is_empty() {
                self.core.on_launch_failed(&launched);
            }
            if let Err(e) = result {
                warn!(error = %e, "driver call failed");
            }
        }
        true
    }
}
