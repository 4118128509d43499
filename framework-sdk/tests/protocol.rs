//! Protocol tests: the driver against a scripted in-process `Scheduler` gRPC server.
//!
//! The test master records every call and lets the test push events into, or close,
//! the current subscription stream. Waiting is always polling with a deadline.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{within, TestMaster};
use mezzo_sdk::v1::event::Event as E;
use mezzo_sdk::{async_trait, v1, Driver, DriverConfig, Scheduler, SchedulerDriver, SdkError};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::{Code, Status};

/// A callback the recording scheduler received.
#[derive(Debug, Clone, PartialEq)]
enum Cb {
    Subscribed {
        framework_id: String,
        epoch: u64,
    },
    Offers(Vec<String>),
    Rescinded(String),
    Update {
        task_id: String,
        uuid: Vec<u8>,
    },
    Failure {
        agent_id: String,
        executor_id: String,
        status: Option<i32>,
    },
    Error(String),
    Disconnected,
}

/// Forwards every callback to the test.
struct Recorder(mpsc::UnboundedSender<Cb>);

impl Recorder {
    fn record(&self, cb: Cb) {
        let _ = self.0.send(cb);
    }
}

#[async_trait]
impl Scheduler for Recorder {
    async fn subscribed(&mut self, _: &Driver, framework_id: &str, master: &v1::MasterInfo) {
        self.record(Cb::Subscribed {
            framework_id: framework_id.into(),
            epoch: master.epoch,
        });
    }
    async fn offers(&mut self, _: &Driver, offers: Vec<v1::Offer>) {
        self.record(Cb::Offers(offers.into_iter().map(|o| o.id).collect()));
    }
    async fn rescinded(&mut self, _: &Driver, offer_id: &str) {
        self.record(Cb::Rescinded(offer_id.into()));
    }
    async fn update(&mut self, _: &Driver, status: &v1::TaskStatus) {
        self.record(Cb::Update {
            task_id: status.task_id.clone(),
            uuid: status.uuid.clone(),
        });
    }
    async fn failure(
        &mut self,
        _: &Driver,
        agent_id: &str,
        executor_id: &str,
        status: Option<i32>,
    ) {
        self.record(Cb::Failure {
            agent_id: agent_id.into(),
            executor_id: executor_id.into(),
            status,
        });
    }
    async fn error(&mut self, _: &Driver, message: &str) {
        self.record(Cb::Error(message.into()));
    }
    async fn disconnected(&mut self, _: &Driver) {
        self.record(Cb::Disconnected);
    }
}

/// A driver running against a test master.
struct Fixture {
    master: TestMaster,
    driver: Driver,
    callbacks: mpsc::UnboundedReceiver<Cb>,
    run: JoinHandle<Result<Recorder, SdkError>>,
    server: JoinHandle<()>,
}

impl Fixture {
    async fn start(master: TestMaster, configure: impl FnOnce(&mut DriverConfig)) -> Fixture {
        let (addr, server) = master.serve().await;
        let (driver, callbacks, run) = start_driver(&addr.to_string(), configure);
        Fixture {
            master,
            driver,
            callbacks,
            run,
            server,
        }
    }

    async fn next(&mut self) -> Cb {
        within("a callback", self.callbacks.recv())
            .await
            .expect("the driver dropped the scheduler")
    }

    async fn expect_subscribed(&mut self) {
        match self.next().await {
            Cb::Subscribed { framework_id, .. } => assert_eq!(framework_id, "fw-1"),
            other => panic!("expected subscribed, got {other:?}"),
        }
    }

    async fn finish(self) -> Result<Recorder, SdkError> {
        let result = within("run to return", self.run).await.unwrap();
        self.server.abort();
        result
    }
}

fn framework() -> v1::FrameworkInfo {
    v1::FrameworkInfo {
        name: "test".into(),
        failover_timeout: 60.0,
        ..Default::default()
    }
}

fn start_driver(
    master: &str,
    configure: impl FnOnce(&mut DriverConfig),
) -> (
    Driver,
    mpsc::UnboundedReceiver<Cb>,
    JoinHandle<Result<Recorder, SdkError>>,
) {
    let mut config = DriverConfig::new(master, framework());
    config.max_backoff = Duration::from_millis(200);
    configure(&mut config);
    let sd = SchedulerDriver::new(config).unwrap();
    let driver = sd.driver();
    let (tx, rx) = mpsc::unbounded_channel();
    let run = tokio::spawn(sd.run(Recorder(tx)));
    (driver, rx, run)
}

fn update(task_id: &str, uuid: &[u8]) -> E {
    E::Update(v1::event::Update {
        status: Some(v1::TaskStatus {
            task_id: task_id.into(),
            agent_id: "a1".into(),
            state: v1::TaskState::TaskRunning as i32,
            uuid: uuid.to_vec(),
            ..Default::default()
        }),
    })
}

fn offers(ids: &[&str]) -> E {
    E::Offers(v1::event::Offers {
        offers: ids
            .iter()
            .map(|id| v1::Offer {
                id: (*id).into(),
                agent_id: "a1".into(),
                ..Default::default()
            })
            .collect(),
    })
}

#[tokio::test]
async fn subscribes_delivers_events_in_order_and_stop_ends_run() {
    let mut f = Fixture::start(TestMaster::new(), |_| {}).await;
    assert_eq!(f.driver.framework_id(), None);
    assert_eq!(
        f.next().await,
        Cb::Subscribed {
            framework_id: "fw-1".into(),
            epoch: 1
        }
    );
    assert_eq!(f.driver.framework_id().as_deref(), Some("fw-1"));
    {
        let script = f.master.script();
        let first = &script.seen.subscribes[0];
        let info = first.framework_info.as_ref().unwrap();
        assert_eq!((info.name.as_str(), info.id.as_str()), ("test", ""));
    }

    f.master.send(1, offers(&["o1", "o2"]));
    f.master.send(
        1,
        E::Rescind(v1::event::Rescind {
            offer_id: "o1".into(),
        }),
    );
    f.master.send(1, E::Heartbeat(v1::event::Heartbeat {}));
    f.master.send(
        1,
        E::Failure(v1::event::Failure {
            agent_id: "a1".into(),
            executor_id: "e1".into(),
            status: Some(137),
        }),
    );
    f.master.send(
        1,
        E::Error(v1::event::Error {
            message: "boom".into(),
        }),
    );
    assert_eq!(f.next().await, Cb::Offers(vec!["o1".into(), "o2".into()]));
    assert_eq!(f.next().await, Cb::Rescinded("o1".into()));
    assert_eq!(
        f.next().await,
        Cb::Failure {
            agent_id: "a1".into(),
            executor_id: "e1".into(),
            status: Some(137)
        }
    );
    assert_eq!(f.next().await, Cb::Error("boom".into()));

    f.driver.stop();
    assert!(f.driver.is_stopped());
    assert!(f.finish().await.is_ok());
}

#[tokio::test]
async fn acknowledges_only_updates_with_a_uuid() {
    let mut f = Fixture::start(TestMaster::new(), |_| {}).await;
    f.expect_subscribed().await;
    // The master-generated update (no uuid) comes first: had it been acked, that ack
    // would precede the one for the reliable update.
    f.master.send(1, update("t-master", b""));
    f.master.send(1, update("t-agent", b"uuid-1"));
    assert_eq!(
        f.next().await,
        Cb::Update {
            task_id: "t-master".into(),
            uuid: vec![]
        }
    );
    assert_eq!(
        f.next().await,
        Cb::Update {
            task_id: "t-agent".into(),
            uuid: b"uuid-1".to_vec()
        }
    );
    f.master
        .wait_until("an acknowledgement", |s| !s.acks.is_empty())
        .await;
    {
        let script = f.master.script();
        assert_eq!(script.seen.acks.len(), 1);
        let ack = &script.seen.acks[0];
        assert_eq!(ack.framework_id, "fw-1");
        assert_eq!(ack.task_id, "t-agent");
        assert_eq!(ack.agent_id, "a1");
        assert_eq!(ack.uuid, b"uuid-1");
    }
    f.driver.stop();
    f.finish().await.unwrap();
}

#[tokio::test]
async fn no_automatic_acks_when_opted_out() {
    let mut f = Fixture::start(TestMaster::new(), |c| c.auto_acknowledge = false).await;
    f.expect_subscribed().await;
    f.master.send(1, update("t-1", b"uuid-1"));
    // An auto-ack would be sent before the next event is delivered.
    f.master.send(1, offers(&["sentinel"]));
    let status = match f.next().await {
        Cb::Update { task_id, uuid } => v1::TaskStatus {
            task_id,
            uuid,
            agent_id: "a1".into(),
            ..Default::default()
        },
        other => panic!("expected an update, got {other:?}"),
    };
    assert_eq!(f.next().await, Cb::Offers(vec!["sentinel".into()]));
    assert!(f.master.script().seen.acks.is_empty());

    // Manual acknowledgement still works, and is a no-op without a uuid.
    f.driver
        .acknowledge(&v1::TaskStatus {
            task_id: "t-2".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    f.driver.acknowledge(&status).await.unwrap();
    let acks: Vec<_> = f
        .master
        .script()
        .seen
        .acks
        .iter()
        .map(|a| a.task_id.clone())
        .collect();
    assert_eq!(acks, vec!["t-1".to_string()]);
    f.driver.stop();
    f.finish().await.unwrap();
}

#[tokio::test]
async fn drops_events_from_stale_epochs() {
    let master = TestMaster::new();
    master.script().epoch = 5;
    let mut f = Fixture::start(master, |_| {}).await;
    assert_eq!(
        f.next().await,
        Cb::Subscribed {
            framework_id: "fw-1".into(),
            epoch: 5
        }
    );
    f.master.send(4, offers(&["stale"]));
    f.master.send(5, offers(&["current"]));
    f.master.send(7, offers(&["newer"]));
    f.master.send(6, offers(&["stale-again"]));
    f.master.send(7, offers(&["last"]));
    assert_eq!(f.next().await, Cb::Offers(vec!["current".into()]));
    assert_eq!(f.next().await, Cb::Offers(vec!["newer".into()]));
    assert_eq!(f.next().await, Cb::Offers(vec!["last".into()]));
    f.driver.stop();
    f.finish().await.unwrap();
}

#[tokio::test]
async fn resubscribes_with_the_framework_id_after_the_stream_closes() {
    let mut f = Fixture::start(TestMaster::new(), |_| {}).await;
    f.expect_subscribed().await;
    f.master.close_stream();
    assert_eq!(f.next().await, Cb::Disconnected);
    f.expect_subscribed().await;
    {
        let script = f.master.script();
        assert_eq!(script.seen.subscribes.len(), 2);
        let info = script.seen.subscribes[1].framework_info.as_ref().unwrap();
        assert_eq!(info.id, "fw-1");
        assert_eq!(info.name, "test");
    }
    // The new stream works.
    f.master.send(1, offers(&["o-after"]));
    assert_eq!(f.next().await, Cb::Offers(vec!["o-after".into()]));
    f.driver.stop();
    f.finish().await.unwrap();
}

#[tokio::test]
async fn missed_heartbeats_count_as_a_disconnection() {
    let master = TestMaster::new();
    master.script().heartbeat_seconds = 0.05;
    let mut f = Fixture::start(master, |c| c.missed_heartbeats = 3).await;
    f.expect_subscribed().await;
    // The master says nothing more: after 3 × 50 ms the driver gives up on the stream.
    assert_eq!(f.next().await, Cb::Disconnected);
    f.expect_subscribed().await;
    {
        let script = f.master.script();
        let info = script.seen.subscribes[1].framework_info.as_ref().unwrap();
        assert_eq!(info.id, "fw-1");
    }
    f.driver.stop();
    f.finish().await.unwrap();
}

#[tokio::test]
async fn a_refused_subscription_reports_an_error_and_ends_run() {
    let master = TestMaster::new();
    master.script().refuse = Some(Status::failed_precondition(
        "framework fw-0 has been removed",
    ));
    let mut f = Fixture::start(master, |c| c.framework.id = "fw-0".into()).await;
    // A configured id is used from the start (scheduler failover).
    assert_eq!(f.driver.framework_id().as_deref(), Some("fw-0"));
    assert_eq!(
        f.next().await,
        Cb::Error("framework fw-0 has been removed".into())
    );
    match f.finish().await {
        Err(SdkError::Refused(status)) => assert_eq!(status.code(), Code::FailedPrecondition),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn retryable_errors_are_retried() {
    let master = TestMaster::new();
    master.script().refuse = Some(Status::unavailable("electing"));
    let mut f = Fixture::start(master, |_| {}).await;
    f.master
        .wait_until("two attempts", |s| s.subscribes.len() >= 2)
        .await;
    f.master.script().refuse = None;
    f.expect_subscribed().await;
    f.driver.stop();
    f.finish().await.unwrap();
}

#[tokio::test]
async fn teardown_ends_run_without_a_disconnection() {
    let mut f = Fixture::start(TestMaster::new(), |_| {}).await;
    f.expect_subscribed().await;
    f.driver.teardown().await.unwrap();
    assert!(f.driver.is_stopped());
    let teardowns: Vec<_> = f
        .master
        .script()
        .seen
        .teardowns
        .iter()
        .map(|t| t.framework_id.clone())
        .collect();
    assert_eq!(teardowns, vec!["fw-1".to_string()]);
    let master = f.master.clone();
    let mut callbacks = std::mem::replace(&mut f.callbacks, mpsc::unbounded_channel().1);
    f.finish().await.unwrap();
    assert_eq!(
        callbacks.try_recv().ok(),
        None,
        "no callback after teardown"
    );
    assert_eq!(
        master.script().seen.subscribes.len(),
        1,
        "no re-subscription"
    );
}

#[tokio::test]
async fn calls_carry_the_framework_id() {
    let mut f = Fixture::start(TestMaster::new(), |_| {}).await;
    f.expect_subscribed().await;
    let d = &f.driver;
    let task =
        mezzo_sdk::matching::task_info("t-1", "t", "a1", "true", &mezzo_sdk::Resources::new());
    d.launch(
        vec!["o1".into()],
        vec![task],
        Some(v1::Filters {
            refuse_seconds: Some(2.0),
        }),
    )
    .await
    .unwrap();
    d.decline(vec!["o2".into()], Some(1.0)).await.unwrap();
    d.revive(vec!["web".into()]).await.unwrap();
    d.suppress(vec![]).await.unwrap();
    d.kill("t-1", "a1", Some(0.5)).await.unwrap();
    d.reconcile(vec![]).await.unwrap();
    d.reconcile(vec![("t-1".into(), "a1".into())])
        .await
        .unwrap();
    {
        let s = f.master.script();
        let s = &s.seen;
        let accept = &s.accepts[0];
        assert_eq!(accept.framework_id, "fw-1");
        assert_eq!(accept.offer_ids, vec!["o1".to_string()]);
        assert_eq!(
            accept.filters.as_ref().and_then(|f| f.refuse_seconds),
            Some(2.0)
        );
        match &accept.operations[..] {
            [v1::Operation {
                operation: Some(v1::operation::Operation::Launch(l)),
            }] => assert_eq!(l.task_infos[0].task_id, "t-1"),
            other => panic!("expected one launch, got {other:?}"),
        }
        assert_eq!(s.declines[0].framework_id, "fw-1");
        assert_eq!(
            s.declines[0]
                .filters
                .as_ref()
                .and_then(|f| f.refuse_seconds),
            Some(1.0)
        );
        assert_eq!(
            (
                s.revives[0].framework_id.as_str(),
                s.revives[0].roles.as_slice()
            ),
            ("fw-1", &["web".to_string()][..])
        );
        assert_eq!(s.suppresses[0].framework_id, "fw-1");
        assert!(s.suppresses[0].roles.is_empty());
        let kill = &s.kills[0];
        assert_eq!(
            (
                kill.framework_id.as_str(),
                kill.task_id.as_str(),
                kill.agent_id.as_str(),
                kill.grace_period_seconds
            ),
            ("fw-1", "t-1", "a1", Some(0.5))
        );
        assert!(s.reconciles[0].tasks.is_empty());
        assert_eq!(s.reconciles[1].tasks[0].task_id, "t-1");
        assert_eq!(s.reconciles[1].tasks[0].agent_id, "a1");
    }
    f.driver.stop();
    f.finish().await.unwrap();
}

#[tokio::test]
async fn calls_before_subscription_fail_cleanly() {
    let sd = SchedulerDriver::new(DriverConfig::new("127.0.0.1:1", framework())).unwrap();
    let d = sd.driver();
    assert!(matches!(
        d.decline(vec!["o".into()], None).await,
        Err(SdkError::NotSubscribed)
    ));
    assert!(matches!(d.teardown().await, Err(SdkError::NotSubscribed)));
    assert!(!d.is_stopped());
    assert!(matches!(
        SchedulerDriver::new(DriverConfig::new("", framework())),
        Err(SdkError::InvalidMaster { .. })
    ));
}

/// An address nothing listens on.
async fn dead_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn stop_ends_run_while_the_master_is_unreachable() {
    let dead = dead_address().await;
    let (driver, _callbacks, run) = start_driver(&dead.to_string(), |c| {
        c.max_backoff = Duration::from_secs(60)
    });
    driver.stop();
    assert!(within("run to return", run).await.unwrap().is_ok());
}

#[tokio::test]
async fn tries_each_configured_master_in_turn() {
    let dead = dead_address().await;
    let master = TestMaster::new();
    let (live, server) = master.serve().await;
    let (driver, mut callbacks, run) = start_driver(&format!("{dead},http://{live}"), |_| {});
    let cb = within("subscribed", callbacks.recv()).await;
    assert!(matches!(cb, Some(Cb::Subscribed { .. })), "{cb:?}");
    driver.stop();
    within("run to return", run).await.unwrap().unwrap();
    server.abort();
}

#[tokio::test]
async fn follows_a_standby_redirect_to_the_leader() {
    let leader = TestMaster::new();
    let (leader_addr, leader_server) = leader.serve().await;
    let standby = TestMaster::new();
    let mut redirect = Status::unavailable("not the leading master");
    redirect.metadata_mut().insert(
        mezzo_sdk::LEADER_METADATA_KEY,
        leader_addr.to_string().parse().unwrap(),
    );
    standby.script().refuse = Some(redirect);
    let mut f = Fixture::start(standby, |_| {}).await;
    f.expect_subscribed().await;
    assert_eq!(f.master.script().seen.subscribes.len(), 1);
    assert_eq!(leader.script().seen.subscribes.len(), 1);
    // Calls now go to the leader.
    f.driver.suppress(vec![]).await.unwrap();
    assert_eq!(leader.script().seen.suppresses.len(), 1);
    f.driver.stop();
    f.finish().await.unwrap();
    leader_server.abort();
}

/// Tears the framework down from inside the update callback.
struct TearDownOnUpdate;

#[async_trait]
impl Scheduler for TearDownOnUpdate {
    async fn offers(&mut self, _: &Driver, _: Vec<v1::Offer>) {}
    async fn update(&mut self, driver: &Driver, _: &v1::TaskStatus) {
        driver.teardown().await.unwrap();
    }
}

#[tokio::test]
async fn no_acknowledgement_after_a_teardown_in_the_update_callback() {
    let master = TestMaster::new();
    let (addr, server) = master.serve().await;
    let sd = SchedulerDriver::new(DriverConfig::new(addr.to_string(), framework())).unwrap();
    let run = tokio::spawn(sd.run(TearDownOnUpdate));
    master
        .wait_until("a subscription", |s| !s.subscribes.is_empty())
        .await;
    master.send(1, update("t-1", b"uuid-1"));
    within("run to return", run).await.unwrap().unwrap();
    let script = master.script();
    assert_eq!(script.seen.teardowns.len(), 1);
    assert!(
        script.seen.acks.is_empty(),
        "the framework is gone: nothing to acknowledge"
    );
    server.abort();
}
