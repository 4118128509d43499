//! The driver: [`SchedulerDriver`] holds the subscription and delivers events to a
//! [`Scheduler`]; [`Driver`] is the cheap handle that makes calls to the master.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use mezzo_proto::v1;
use mezzo_proto::v1::scheduler_client::SchedulerClient;
use rand::Rng;
use tokio::sync::watch;
use tokio::time::{timeout, timeout_at, Instant};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::config::{endpoint, DEFAULT_HEARTBEAT, LEADER_METADATA_KEY};
use crate::{DriverConfig, Scheduler, SdkError};

/// First delay between (re)subscription attempts; it doubles up to `max_backoff`.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Redirects followed in a row without backing off (guards against a redirect loop).
const MAX_IMMEDIATE_REDIRECTS: u32 = 3;

/// Where the driver is in its life; `stop()` and `teardown()` move it forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifecycle {
    Running,
    /// A `Teardown` call is in flight: the master will close the stream, which must
    /// not be mistaken for a lost connection.
    TearingDown,
    /// Stopped by [`Driver::stop`].
    Stopped,
    /// Stopped by a successful [`Driver::teardown`]: the framework no longer exists.
    TornDown,
}

impl Lifecycle {
    fn is_stopped(self) -> bool {
        matches!(self, Lifecycle::Stopped | Lifecycle::TornDown)
    }
}

/// The master calls currently go to. The channel is created on first use because
/// creating a tonic channel spawns a task, which needs a running Tokio runtime.
struct Master {
    endpoint: Endpoint,
    client: Option<SchedulerClient<Channel>>,
}

/// State shared by every clone of a [`Driver`] and the event loop.
struct Shared {
    framework_id: Mutex<Option<String>>,
    master: Mutex<Master>,
    lifecycle: watch::Sender<Lifecycle>,
    request_timeout: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values stay consistent even if a holder panicked.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A handle for making calls to the master on behalf of the framework.
///
/// Cheap to clone (an `Arc` and a tonic channel); every clone talks to the same
/// subscription. Callbacks receive one; code outside callbacks gets one from
/// [`SchedulerDriver::driver`] before calling [`SchedulerDriver::run`]. Calls that
/// need the framework id fail with [`SdkError::NotSubscribed`] until the master has
/// assigned one.
#[derive(Clone)]
pub struct Driver {
    shared: Arc<Shared>,
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("framework_id", &self.framework_id())
            .field("master", &lock(&self.shared.master).endpoint.uri())
            .field("lifecycle", &*self.shared.lifecycle.borrow())
            .finish()
    }
}

impl Driver {
    /// The framework id the master assigned (or the one configured for a failover),
    /// `None` before the first subscription.
    pub fn framework_id(&self) -> Option<String> {
        lock(&self.shared.framework_id).clone()
    }

    /// True once [`Driver::stop`] was called or a [`Driver::teardown`] succeeded.
    pub fn is_stopped(&self) -> bool {
        self.shared.lifecycle.borrow().is_stopped()
    }

    /// Makes [`SchedulerDriver::run`] return `Ok` as soon as the current callback (if
    /// any) returns. The framework stays registered with the master, which keeps its
    /// tasks for `failover_timeout`: a new driver with the same framework id can take
    /// over. Use [`Driver::teardown`] to remove the framework instead. Idempotent.
    pub fn stop(&self) {
        info!("driver stopping");
        self.shared.lifecycle.send_if_modified(|state| {
            let running = !state.is_stopped();
            if running {
                *state = Lifecycle::Stopped;
            }
            running
        });
    }

    /// Accepts offers with operations (launches). Every offer in `offer_ids` must be
    /// from the same agent; resources of the offers not used by the operations are
    /// declined with `filters`.
    pub async fn accept(
        &self,
        offer_ids: Vec<String>,
        operations: Vec<v1::Operation>,
        filters: Option<v1::Filters>,
    ) -> Result<(), SdkError> {
        let request = v1::AcceptRequest {
            framework_id: self.require_id()?,
            offer_ids,
            operations,
            filters,
        };
        debug!(offers = ?request.offer_ids, operations = request.operations.len(), "accept");
        let mut client = self.client();
        self.call("accept", client.accept(request)).await
    }

    /// Accepts offers with one `Launch` operation of `tasks`.
    pub async fn launch(
        &self,
        offer_ids: Vec<String>,
        tasks: Vec<v1::TaskInfo>,
        filters: Option<v1::Filters>,
    ) -> Result<(), SdkError> {
        let launch = v1::Operation {
            operation: Some(v1::operation::Operation::Launch(v1::operation::Launch {
                task_infos: tasks,
            })),
        };
        self.accept(offer_ids, vec![launch], filters).await
    }

    /// Declines offers; their resources are not offered to this framework again for
    /// `refuse_seconds` (the master's default, 5 s as in Mesos, when `None`).
    pub async fn decline(
        &self,
        offer_ids: Vec<String>,
        refuse_seconds: Option<f64>,
    ) -> Result<(), SdkError> {
        let request = v1::DeclineRequest {
            framework_id: self.require_id()?,
            offer_ids,
            filters: refuse_seconds.map(|s| v1::Filters {
                refuse_seconds: Some(s),
            }),
        };
        debug!(offers = ?request.offer_ids, ?refuse_seconds, "decline");
        let mut client = self.client();
        self.call("decline", client.decline(request)).await
    }

    /// Removes offer filters and resumes offers for `roles` (empty: every role of the
    /// framework).
    pub async fn revive(&self, roles: Vec<String>) -> Result<(), SdkError> {
        let request = v1::RolesRequest {
            framework_id: self.require_id()?,
            roles,
        };
        debug!(roles = ?request.roles, "revive");
        let mut client = self.client();
        self.call("revive", client.revive(request)).await
    }

    /// Stops offers for `roles` (empty: every role of the framework) until
    /// [`Driver::revive`].
    pub async fn suppress(&self, roles: Vec<String>) -> Result<(), SdkError> {
        let request = v1::RolesRequest {
            framework_id: self.require_id()?,
            roles,
        };
        debug!(roles = ?request.roles, "suppress");
        let mut client = self.client();
        self.call("suppress", client.suppress(request)).await
    }

    /// Kills a task: SIGTERM, then SIGKILL after `grace` seconds (the task's own
    /// `kill_grace_period_seconds` when `None`). The outcome arrives as an update.
    pub async fn kill(
        &self,
        task_id: &str,
        agent_id: &str,
        grace: Option<f64>,
    ) -> Result<(), SdkError> {
        let request = v1::KillRequest {
            framework_id: self.require_id()?,
            task_id: task_id.to_string(),
            agent_id: agent_id.to_string(),
            grace_period_seconds: grace,
        };
        debug!(task.id = task_id, agent.id = agent_id, ?grace, "kill");
        let mut client = self.client();
        self.call("kill", client.kill(request)).await
    }

    /// Acknowledges a status update so the agent stops re-sending it. Updates without
    /// a `uuid` (generated by the master, e.g. for reconciliation) must not be
    /// acknowledged: for those this does nothing and returns `Ok`.
    pub async fn acknowledge(&self, status: &v1::TaskStatus) -> Result<(), SdkError> {
        if status.uuid.is_empty() {
            debug!(task.id = %status.task_id, "update has no uuid: nothing to acknowledge");
            return Ok(());
        }
        let request = v1::AcknowledgeRequest {
            framework_id: self.require_id()?,
            agent_id: status.agent_id.clone(),
            task_id: status.task_id.clone(),
            uuid: status.uuid.clone(),
        };
        debug!(task.id = %status.task_id, "acknowledge");
        let mut client = self.client();
        self.call("acknowledge", client.acknowledge(request)).await
    }

    /// Asks the master for the latest state of tasks, given as `(task_id, agent_id)`
    /// (the agent id may be empty). An empty list is implicit reconciliation: the master
    /// sends the state of every task it knows for the framework. Answers arrive as
    /// updates without a `uuid`.
    pub async fn reconcile(&self, tasks: Vec<(String, String)>) -> Result<(), SdkError> {
        let request = v1::ReconcileRequest {
            framework_id: self.require_id()?,
            tasks: tasks
                .into_iter()
                .map(|(task_id, agent_id)| v1::reconcile_request::Task { task_id, agent_id })
                .collect(),
        };
        debug!(tasks = request.tasks.len(), "reconcile");
        let mut client = self.client();
        self.call("reconcile", client.reconcile(request)).await
    }

    /// Removes the framework from the master: its tasks are killed and its offers
    /// rescinded. On success [`SchedulerDriver::run`] returns `Ok`; on failure the driver
    /// keeps running.
    pub async fn teardown(&self) -> Result<(), SdkError> {
        let framework_id = self.require_id()?;
        self.shared.lifecycle.send_if_modified(|state| {
            let running = *state == Lifecycle::Running;
            if running {
                *state = Lifecycle::TearingDown;
            }
            running
        });
        info!(framework.id = %framework_id, "teardown");
        let mut client = self.client();
        let result = self
            .call(
                "teardown",
                client.teardown(v1::TeardownRequest { framework_id }),
            )
            .await;
        match &result {
            Ok(()) => {
                self.shared.lifecycle.send_replace(Lifecycle::TornDown);
            }
            Err(e) => {
                warn!(error = %e, "teardown failed");
                self.shared.lifecycle.send_if_modified(|state| {
                    let tearing_down = *state == Lifecycle::TearingDown;
                    if tearing_down {
                        *state = Lifecycle::Running;
                    }
                    tearing_down
                });
            }
        }
        result
    }

    fn require_id(&self) -> Result<String, SdkError> {
        self.framework_id().ok_or(SdkError::NotSubscribed)
    }

    fn set_framework_id(&self, id: String) {
        *lock(&self.shared.framework_id) = Some(id);
    }

    /// A client for the current master (clones share one HTTP/2 connection).
    fn client(&self) -> SchedulerClient<Channel> {
        let mut master = lock(&self.shared.master);
        let endpoint = master.endpoint.clone();
        master
            .client
            .get_or_insert_with(|| SchedulerClient::new(endpoint.connect_lazy()))
            .clone()
    }

    /// Points calls (and the next subscription) at `endpoint`, over a new connection:
    /// after a loss the old HTTP/2 connection may be half-dead (a vanished host sends
    /// no reset), and reusing it would stall the next call.
    fn set_master(&self, endpoint: Endpoint) {
        let mut master = lock(&self.shared.master);
        if master.endpoint.uri() != endpoint.uri() {
            info!(master = %endpoint.uri(), "switching master");
        }
        *master = Master {
            endpoint,
            client: None,
        };
    }

    fn master_uri(&self) -> String {
        lock(&self.shared.master).endpoint.uri().to_string()
    }

    /// Runs one unary call with the request timeout.
    async fn call(
        &self,
        name: &'static str,
        call: impl Future<Output = Result<tonic::Response<v1::CallResponse>, Status>>,
    ) -> Result<(), SdkError> {
        let limit = self.shared.request_timeout;
        let status = match timeout(limit, call).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(status)) => status,
            Err(_) => Status::deadline_exceeded(format!("no answer within {limit:?}")),
        };
        Err(SdkError::Call { call: name, status })
    }
}

/// Runs a framework: subscribes to the master and delivers its events to a
/// [`Scheduler`] until stopped.
///
/// Create it with [`SchedulerDriver::new`], take [`Driver`] handles with
/// [`SchedulerDriver::driver`] if code outside the callbacks needs one (e.g. to
/// [`stop`](Driver::stop) from another task), then await [`SchedulerDriver::run`].
/// The free function [`run`] does all three in one call.
pub struct SchedulerDriver {
    config: DriverConfig,
    endpoints: Vec<Endpoint>,
    /// Set when `master` is `zk://...`: the leader is looked up there.
    zk: Option<mezzo_zk::ZkUrl>,
    driver: Driver,
}

impl fmt::Debug for SchedulerDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchedulerDriver")
            .field("config", &self.config)
            .field("driver", &self.driver)
            .finish()
    }
}

impl SchedulerDriver {
    /// Checks the configuration. Nothing connects until [`SchedulerDriver::run`] (the
    /// connection is made lazily), so this needs no runtime and no reachable master.
    pub fn new(config: DriverConfig) -> Result<Self, SdkError> {
        let zk = if config.master.trim().starts_with("zk://") {
            Some(mezzo_zk::ZkUrl::parse(config.master.trim()).map_err(|e| {
                SdkError::InvalidMaster {
                    address: config.master.clone(),
                    reason: e.to_string(),
                }
            })?)
        } else {
            None
        };
        // With ZooKeeper the endpoint is replaced by the elected leader's
        // before the first subscription; this one is never dialled.
        let endpoints = match zk {
            Some(_) => vec![endpoint("127.0.0.1:5050", config.connect_timeout)?],
            None => config.endpoints()?,
        };
        let framework_id = (!config.framework.id.is_empty()).then(|| config.framework.id.clone());
        let shared = Shared {
            framework_id: Mutex::new(framework_id),
            master: Mutex::new(Master {
                endpoint: endpoints[0].clone(),
                client: None,
            }),
            lifecycle: watch::Sender::new(Lifecycle::Running),
            request_timeout: config.request_timeout,
        };
        Ok(SchedulerDriver {
            config,
            endpoints,
            zk,
            driver: Driver {
                shared: Arc::new(shared),
            },
        })
    }

    /// A handle for calls to the master, usable before and while `run` runs.
    pub fn driver(&self) -> Driver {
        self.driver.clone()
    }

    /// Subscribes and delivers events to `scheduler` until the driver stops, then gives
    /// the scheduler back.
    ///
    /// * Subscribes with the configured `FrameworkInfo`, its `id` set to the known
    ///   framework id once there is one (framework failover).
    /// * Delivers events in order; acknowledges updates that carry a `uuid` after
    ///   [`Scheduler::update`] returns, unless `auto_acknowledge` is off.
    /// * Drops events whose `epoch` is lower than the highest seen (a deposed master).
    /// * When the stream ends, fails, or stays silent for `missed_heartbeats` heartbeat
    ///   intervals, calls [`Scheduler::disconnected`] and re-subscribes with exponential
    ///   backoff (100 ms doubling to `max_backoff`, with jitter), trying the configured
    ///   masters in turn and following a standby's redirect to the leader.
    ///
    /// Returns `Ok(scheduler)` after [`Driver::stop`] or a successful
    /// [`Driver::teardown`]. Returns [`SdkError::Refused`] (after calling
    /// [`Scheduler::error`]) when the master answers with `INVALID_ARGUMENT`,
    /// `PERMISSION_DENIED`, `FAILED_PRECONDITION` or `UNAUTHENTICATED`, which retrying
    /// cannot fix. Any other failure is retried.
    pub async fn run<S: Scheduler>(self, scheduler: S) -> Result<S, SdkError> {
        let span = info_span!("framework", name = %self.config.framework.name);
        let lifecycle = self.driver.shared.lifecycle.subscribe();
        let backoff = Backoff::new(INITIAL_BACKOFF, self.config.max_backoff);
        EventLoop {
            config: self.config,
            endpoints: self.endpoints,
            zk: self.zk,
            next_endpoint: 0,
            driver: self.driver,
            lifecycle,
            highest_epoch: 0,
            heartbeat: DEFAULT_HEARTBEAT,
            backoff,
        }
        .run(scheduler)
        .instrument(span)
        .await
    }
}

/// Runs `scheduler` against the master of `config` until the driver stops: shorthand for
/// `SchedulerDriver::new(config)?.run(scheduler)`. Callbacks get the [`Driver`]; use
/// [`SchedulerDriver`] directly when code outside the callbacks needs one.
pub async fn run<S: Scheduler>(config: DriverConfig, scheduler: S) -> Result<S, SdkError> {
    SchedulerDriver::new(config)?.run(scheduler).await
}

/// Why one subscription attempt ended.
enum SessionEnd {
    Stopped,
    /// Retry after backoff; `connected` when the stream had been open.
    Lost {
        connected: bool,
        reason: String,
    },
    /// A standby named the leader.
    Redirect {
        leader: String,
        connected: bool,
    },
    /// The master refused for good.
    Refused(Status),
}

/// Sorts an error status from `Subscribe` or the event stream.
fn classify(status: Status, connected: bool) -> SessionEnd {
    if let Some(leader) = status
        .metadata()
        .get(LEADER_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        return SessionEnd::Redirect {
            leader: leader.to_string(),
            connected,
        };
    }
    match status.code() {
        Code::InvalidArgument
        | Code::PermissionDenied
        | Code::FailedPrecondition
        | Code::Unauthenticated => SessionEnd::Refused(status),
        _ => SessionEnd::Lost {
            connected,
            reason: format!("{}: {}", status.code(), status.message()),
        },
    }
}

/// The heartbeat interval a master announced, bounded to something sane.
fn heartbeat_interval(seconds: f64) -> Duration {
    if seconds.is_finite() && seconds > 0.0 {
        Duration::from_secs_f64(seconds.clamp(0.01, 3600.0))
    } else {
        DEFAULT_HEARTBEAT
    }
}

/// Waits until the driver is stopped.
async fn wait_stopped(lifecycle: &mut watch::Receiver<Lifecycle>) {
    // The sender lives in `Shared`, which the event loop keeps alive, so an error
    // (sender dropped) cannot happen; treat it as stopped anyway.
    let _ = lifecycle.wait_for(|s| s.is_stopped()).await;
}

/// Exponential backoff with jitter: each delay is drawn from `[d/2, d]`, where `d`
/// starts at `initial` and doubles up to `max`.
#[derive(Debug)]
struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.min(max);
        Backoff {
            initial,
            max,
            current: initial,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = self.current.saturating_mul(2).min(self.max);
        base.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// Session timeout of the driver's ZooKeeper client (leader detection).
const ZK_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// The state of a running driver, owned by the task that runs it.
struct EventLoop {
    config: DriverConfig,
    endpoints: Vec<Endpoint>,
    zk: Option<mezzo_zk::ZkUrl>,
    next_endpoint: usize,
    driver: Driver,
    lifecycle: watch::Receiver<Lifecycle>,
    /// Highest leadership epoch seen; events from lower epochs are stale.
    highest_epoch: u64,
    heartbeat: Duration,
    backoff: Backoff,
}

impl EventLoop {
    async fn run<S: Scheduler>(mut self, mut scheduler: S) -> Result<S, SdkError> {
        let mut redirects = 0u32;
        let mut leader_epoch: Option<u64> = None;
        let mut detector = self
            .zk
            .take()
            .map(|url| mezzo_zk::Detector::start(&url, ZK_SESSION_TIMEOUT));
        loop {
            if self.lifecycle.borrow().is_stopped() {
                return Ok(scheduler);
            }
            if let Some(rx) = detector.as_mut() {
                // Subscribe to whoever ZooKeeper says leads, once one does.
                let leader = tokio::select! {
                    biased;
                    () = wait_stopped(&mut self.lifecycle) => return Ok(scheduler),
                    l = rx.wait_for(|l| l.as_ref().and_then(mezzo_zk::LeaderInfo::address).is_some()) => {
                        l.ok().and_then(|l| l.as_ref().and_then(mezzo_zk::LeaderInfo::address))
                    }
                };
                let epoch = rx.borrow_and_update().as_ref().map(|l| l.epoch);
                leader_epoch = epoch;
                match leader.map(|l| endpoint(&l, self.config.connect_timeout)) {
                    Some(Ok(e)) => self.driver.set_master(e),
                    Some(Err(e)) => warn!(error = %e, "unusable leader address in ZooKeeper"),
                    None => return Ok(scheduler),
                }
            }
            let end = match detector.as_mut() {
                // A newly elected leader ends the session with the old one.
                // (Losing ZooKeeper alone is no reason to drop a working stream.)
                Some(rx) => tokio::select! {
                    end = self.session(&mut scheduler) => end,
                    _ = rx.wait_for(|l| l.as_ref().is_some_and(|l| Some(l.epoch) != leader_epoch)) => {
                        SessionEnd::Lost { connected: true, reason: "the leading master changed".into() }
                    }
                },
                None => self.session(&mut scheduler).await,
            };
            let (connected, back_off) = match end {
                SessionEnd::Stopped => return Ok(scheduler),
                SessionEnd::Refused(status) => {
                    // A framework being torn down is refused when it re-subscribes:
                    // that is the teardown succeeding, not an error.
                    if self.settle_teardown().await.is_stopped() {
                        return Ok(scheduler);
                    }
                    warn!(code = %status.code(), message = status.message(), "subscription refused");
                    scheduler.error(&self.driver, status.message()).await;
                    return Err(SdkError::Refused(status));
                }
                SessionEnd::Lost { connected, reason } => {
                    warn!(master = %self.driver.master_uri(), %reason, "subscription lost");
                    redirects = 0;
                    self.next_master();
                    (connected, true)
                }
                SessionEnd::Redirect { leader, connected } => {
                    info!(%leader, "redirected to the leading master");
                    match endpoint(&leader, self.config.connect_timeout) {
                        Ok(endpoint) => self.driver.set_master(endpoint),
                        Err(e) => {
                            warn!(error = %e, "ignoring an unusable redirect");
                            self.next_master();
                        }
                    }
                    redirects += 1;
                    (connected, redirects > MAX_IMMEDIATE_REDIRECTS)
                }
            };
            if connected {
                // The master closes the stream of a framework it tears down: wait for
                // the call's verdict rather than reporting a disconnection.
                if self.settle_teardown().await.is_stopped() {
                    return Ok(scheduler);
                }
                scheduler.disconnected(&self.driver).await;
            }
            if back_off {
                let delay = self.backoff.next_delay();
                debug!(?delay, "backing off before re-subscribing");
                tokio::select! {
                    biased;
                    () = wait_stopped(&mut self.lifecycle) => return Ok(scheduler),
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }

    /// Waits while a teardown is in flight; returns the state it settles in.
    async fn settle_teardown(&mut self) -> Lifecycle {
        match self
            .lifecycle
            .wait_for(|s| *s != Lifecycle::TearingDown)
            .await
        {
            Ok(state) => *state,
            Err(_) => Lifecycle::Stopped,
        }
    }

    /// Moves to the next configured master (the same one when there is only one),
    /// on a fresh connection.
    fn next_master(&mut self) {
        if self.endpoints.len() > 1 {
            self.next_endpoint = (self.next_endpoint + 1) % self.endpoints.len();
        }
        self.driver
            .set_master(self.endpoints[self.next_endpoint].clone());
    }

    /// How long the stream may stay silent before the master counts as gone.
    fn silence_limit(&self) -> Duration {
        self.heartbeat
            .saturating_mul(self.config.missed_heartbeats.max(1))
    }

    fn deadline(&self) -> Instant {
        let now = Instant::now();
        now.checked_add(self.silence_limit())
            .unwrap_or_else(|| now + Duration::from_secs(86_400))
    }

    /// One subscription: subscribe, then deliver events until the stream ends.
    async fn session<S: Scheduler>(&mut self, scheduler: &mut S) -> SessionEnd {
        let mut framework_info = self.config.framework.clone();
        if let Some(id) = self.driver.framework_id() {
            framework_info.id = id;
        }
        info!(
            master = %self.driver.master_uri(),
            framework.id = %framework_info.id,
            "subscribing"
        );
        let request = v1::SubscribeRequest {
            framework_info: Some(framework_info),
            suppressed_roles: self.config.suppressed_roles.clone(),
        };
        let mut client = self.driver.client();
        let limit = self.config.request_timeout;
        let answer = tokio::select! {
            biased;
            () = wait_stopped(&mut self.lifecycle) => return SessionEnd::Stopped,
            answer = timeout(limit, client.subscribe(request)) => answer,
        };
        let mut stream = match answer {
            Err(_) => {
                return SessionEnd::Lost {
                    connected: false,
                    reason: format!("no answer to subscribe within {limit:?}"),
                }
            }
            Ok(Err(status)) => return classify(status, false),
            Ok(Ok(response)) => response.into_inner(),
        };
        debug!("event stream open");
        let mut deadline = self.deadline();
        loop {
            let next = tokio::select! {
                biased;
                () = wait_stopped(&mut self.lifecycle) => return SessionEnd::Stopped,
                next = timeout_at(deadline, stream.message()) => next,
            };
            let event = match next {
                Ok(Ok(Some(event))) => event,
                Ok(Ok(None)) => {
                    return SessionEnd::Lost {
                        connected: true,
                        reason: "the master closed the event stream".into(),
                    }
                }
                Ok(Err(status)) => return classify(status, true),
                Err(_) => {
                    return SessionEnd::Lost {
                        connected: true,
                        reason: format!(
                            "no event for {:?} ({} missed heartbeats)",
                            self.silence_limit(),
                            self.config.missed_heartbeats
                        ),
                    }
                }
            };
            if event.epoch < self.highest_epoch {
                // Fencing: a deposed master may still be talking. Stale events do not
                // count as signs of life either.
                debug!(
                    epoch = event.epoch,
                    highest = self.highest_epoch,
                    "dropping an event from a stale master"
                );
                continue;
            }
            self.highest_epoch = event.epoch;
            self.dispatch(scheduler, event).await;
            // Silence is measured while waiting, not while a callback runs.
            deadline = self.deadline();
        }
    }

    /// Delivers one event to the scheduler.
    async fn dispatch<S: Scheduler>(&mut self, scheduler: &mut S, event: v1::Event) {
        use v1::event::Event as E;
        let driver = &self.driver;
        match event.event {
            Some(E::Subscribed(subscribed)) => {
                if subscribed.framework_id.is_empty() {
                    warn!("the master subscribed us without a framework id");
                } else {
                    driver.set_framework_id(subscribed.framework_id.clone());
                }
                self.heartbeat = heartbeat_interval(subscribed.heartbeat_interval_seconds);
                self.backoff.reset();
                info!(
                    framework.id = %subscribed.framework_id,
                    epoch = event.epoch,
                    heartbeat = ?self.heartbeat,
                    "subscribed"
                );
                let master = subscribed.master_info.unwrap_or_default();
                scheduler
                    .subscribed(driver, &subscribed.framework_id, &master)
                    .await;
            }
            Some(E::Offers(offers)) => {
                debug!(count = offers.offers.len(), "offers");
                scheduler.offers(driver, offers.offers).await;
            }
            Some(E::Rescind(rescind)) => {
                debug!(offer.id = %rescind.offer_id, "offer rescinded");
                scheduler.rescinded(driver, &rescind.offer_id).await;
            }
            Some(E::Update(update)) => {
                let Some(status) = update.status else {
                    warn!("ignoring an update event without a status");
                    return;
                };
                debug!(
                    task.id = %status.task_id,
                    state = mezzo_proto::task_state(&status).as_str_name(),
                    reliable = !status.uuid.is_empty(),
                    "status update"
                );
                scheduler.update(driver, &status).await;
                // After a teardown the framework and its updates are gone: nothing to ack.
                let torn_down = *self.lifecycle.borrow() == Lifecycle::TornDown;
                if self.config.auto_acknowledge && !status.uuid.is_empty() && !torn_down {
                    if let Err(e) = driver.acknowledge(&status).await {
                        // The agent re-sends unacknowledged updates, so this heals.
                        warn!(task.id = %status.task_id, error = %e, "could not acknowledge an update");
                    }
                }
            }
            Some(E::Failure(failure)) => {
                debug!(agent.id = %failure.agent_id, executor.id = %failure.executor_id, "failure");
                scheduler
                    .failure(
                        driver,
                        &failure.agent_id,
                        &failure.executor_id,
                        failure.status,
                    )
                    .await;
            }
            Some(E::Error(error)) => {
                warn!(message = %error.message, "error from the master");
                scheduler.error(driver, &error.message).await;
            }
            Some(E::Heartbeat(_)) => debug!("heartbeat"),
            None => debug!("ignoring an event of a kind this SDK does not know"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        for base in [100u64, 200, 400, 500, 500] {
            let d = b.next_delay();
            let base = Duration::from_millis(base);
            assert!(
                d >= base / 2 && d <= base,
                "{d:?} outside [{:?}, {base:?}]",
                base / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn statuses_are_sorted_into_retry_refuse_redirect() {
        assert!(matches!(
            classify(Status::permission_denied("no"), false),
            SessionEnd::Refused(_)
        ));
        assert!(matches!(
            classify(Status::unavailable("down"), true),
            SessionEnd::Lost {
                connected: true,
                ..
            }
        ));
        let mut status = Status::unavailable("not the leader");
        status
            .metadata_mut()
            .insert(LEADER_METADATA_KEY, "10.0.0.2:5050".parse().unwrap());
        assert!(matches!(
            classify(status, false),
            SessionEnd::Redirect { leader, .. } if leader == "10.0.0.2:5050"
        ));
    }

    #[test]
    fn heartbeat_interval_is_bounded() {
        assert_eq!(heartbeat_interval(0.0), DEFAULT_HEARTBEAT);
        assert_eq!(heartbeat_interval(f64::NAN), DEFAULT_HEARTBEAT);
        assert_eq!(heartbeat_interval(-1.0), DEFAULT_HEARTBEAT);
        assert_eq!(heartbeat_interval(1e300), Duration::from_secs(3600));
        assert_eq!(heartbeat_interval(2.5), Duration::from_millis(2500));
    }
}
