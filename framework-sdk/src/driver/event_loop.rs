//! The task behind a running [`SchedulerDriver`](super::SchedulerDriver): finds the
//! leading master, subscribes, delivers events in order, watches heartbeats, and
//! re-subscribes with backoff after failures, fencing stale masters by epoch.

use super::*;

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
pub(super) struct EventLoop {
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
    /// The loop of a driver that has not subscribed yet.
    pub(super) fn new(
        config: DriverConfig,
        endpoints: Vec<Endpoint>,
        zk: Option<mezzo_zk::ZkUrl>,
        driver: Driver,
    ) -> EventLoop {
        let lifecycle = driver.shared.lifecycle.subscribe();
        let backoff = Backoff::new(INITIAL_BACKOFF, config.max_backoff);
        EventLoop {
            config,
            endpoints,
            zk,
            next_endpoint: 0,
            driver,
            lifecycle,
            highest_epoch: 0,
            heartbeat: DEFAULT_HEARTBEAT,
            backoff,
        }
    }

    /// Subscribes, delivers events and re-subscribes until the driver stops.
    pub(super) async fn run<S: Scheduler>(mut self, mut scheduler: S) -> Result<S, SdkError> {
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
                // A dead leader's znode outlives it by a session timeout, so
                // the backoff has grown by the time a successor is elected:
                // a new leader in ZooKeeper ends the wait at once.
                let new_leader = |l: &Option<mezzo_zk::LeaderInfo>| {
                    l.as_ref()
                        .is_some_and(|l| Some(l.epoch) != leader_epoch && l.address().is_some())
                };
                let elected = async {
                    match detector.as_mut() {
                        Some(rx) => {
                            if rx.wait_for(new_leader).await.is_err() {
                                std::future::pending::<()>().await;
                            }
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    biased;
                    () = wait_stopped(&mut self.lifecycle) => return Ok(scheduler),
                    () = tokio::time::sleep(delay) => {}
                    () = elected => {
                        info!("a new leading master was elected: re-subscribing");
                        self.backoff.reset();
                    }
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
