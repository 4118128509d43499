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

mod event_loop;

use event_loop::EventLoop;

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
        EventLoop::new(self.config, self.endpoints, self.zk, self.driver)
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
