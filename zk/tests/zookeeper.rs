//! mezzo-zk against a real ZooKeeper server (Debian `zookeeper` package).

mod common;

use std::time::{Duration, Instant};

use common::ZkServer;
use mezzo_zk::{
    election_node_path, Contender, Detector, Error, LeaderInfo, Leadership, ZkStore, ZkUrl,
};
use tokio::sync::watch;
use zookeeper_client::{Acls, Client, CreateMode};

const WAIT: Duration = Duration::from_secs(15);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "mezzo_zk=info,zookeeper_client=warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Waits until the receiver's value satisfies `pred`, returning it.
async fn wait_for<T: Clone + std::fmt::Debug>(
    what: &str,
    rx: &mut watch::Receiver<T>,
    pred: impl FnMut(&T) -> bool,
) -> T {
    let result = match tokio::time::timeout(WAIT, rx.wait_for(pred)).await {
        Ok(Ok(v)) => Ok(v.clone()),
        Ok(Err(_)) => Err("sender dropped"),
        Err(_) => Err("timed out"),
    };
    result.unwrap_or_else(|why| panic!("{what}: {why}; last value {:?}", *rx.borrow()))
}

fn master_info(id: &str, port: u16) -> Vec<u8> {
    serde_json::json!({
        "id": id, "ip": 16777343u32, "port": port, "hostname": "localhost",
        "pid": format!("master@127.0.0.1:{port}"), "version": "1.11.0",
        "address": {"hostname": "localhost", "ip": "127.0.0.1", "port": port}
    })
    .to_string()
    .into_bytes()
}

fn is_standby_of(l: &Leadership, epoch: u64) -> bool {
    matches!(l, Leadership::Standby { leader: Some(LeaderInfo { epoch: e, .. }) } if *e == epoch)
}

async fn plain_client(zk: &ZkServer) -> Client {
    Client::connector()
        .with_session_timeout(Duration::from_secs(5))
        .connect(&zk.connect_string())
        .await
        .expect("plain client connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_contenders_elect_the_lowest_and_fail_over_on_withdraw() {
    init_tracing();
    let zk = ZkServer::start().expect("zookeeper starts");
    let url = ZkUrl::parse(&zk.url("/mezzo/three")).unwrap();
    // A non-election child (as Mesos' replicated log keeps) must be ignored.
    let plain = plain_client(&zk).await;
    plain
        .mkdir(
            "/mezzo/three/log_replicas",
            &CreateMode::Persistent.with_acls(Acls::anyone_all()),
        )
        .await
        .unwrap();

    let timeout = Duration::from_secs(5);
    let datas: Vec<Vec<u8>> = (0..3)
        .map(|i| master_info(&format!("m{i}"), 5050 + i))
        .collect();
    let mut contenders = Vec::new();
    let mut rxs = Vec::new();
    for data in &datas {
        let (c, rx) = Contender::start(&url, data.clone(), timeout);
        contenders.push(Some(c));
        rxs.push(rx);
    }
    // Everyone settles: one leader, two standbys naming it.
    for (i, rx) in rxs.iter_mut().enumerate() {
        wait_for(&format!("contender {i} settles"), rx, |l| {
            l.is_leader() || matches!(l, Leadership::Standby { leader: Some(_) })
        })
        .await;
    }
    let leaders: Vec<usize> = (0..3).filter(|i| rxs[*i].borrow().is_leader()).collect();
    assert_eq!(
        leaders.len(),
        1,
        "exactly one leader: {:?}",
        rxs.iter().map(|r| r.borrow().clone()).collect::<Vec<_>>()
    );
    let li = leaders[0];
    let epoch = rxs[li].borrow().leader_epoch().unwrap();

    // A plain client sees the leader as the lowest json.info_ node, holding the bytes given.
    let mut children = plain.list_children("/mezzo/three").await.unwrap();
    children.sort();
    let election: Vec<&String> = children
        .iter()
        .filter(|c| c.starts_with("json.info_"))
        .collect();
    assert_eq!(election.len(), 3, "{children:?}");
    assert_eq!(*election[0], format!("json.info_{epoch:010}"));
    assert!(children.contains(&"log_replicas".to_string()));
    let (data, _) = plain
        .get_data(&election_node_path("/mezzo/three", epoch))
        .await
        .unwrap();
    assert_eq!(data, datas[li]);
    let parsed: serde_json::Value = serde_json::from_slice(&data).unwrap();
    assert_eq!(parsed["id"], format!("m{li}"));

    for (i, rx) in rxs.iter_mut().enumerate() {
        if i != li {
            let l = wait_for("standby names the leader", rx, |l| is_standby_of(l, epoch)).await;
            let Leadership::Standby { leader: Some(info) } = l else {
                unreachable!()
            };
            assert_eq!(info.data, datas[li]);
            assert_eq!(info.json["id"], format!("m{li}"));
        }
    }

    // Withdraw the leader: the next one leads with a higher epoch.
    let t0 = Instant::now();
    contenders[li].take().unwrap().withdraw().await;
    assert_eq!(*rxs[li].borrow(), Leadership::Lost);
    let rest: Vec<usize> = (0..3).filter(|i| *i != li).collect();
    let next = loop {
        if let Some(i) = rest.iter().copied().find(|i| rxs[*i].borrow().is_leader()) {
            break i;
        }
        assert!(t0.elapsed() < WAIT, "no new leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let new_epoch = rxs[next].borrow().leader_epoch().unwrap();
    assert!(new_epoch > epoch, "new epoch {new_epoch} > {epoch}");
    println!("failover after withdraw took {:?}", t0.elapsed());
    let other = rest.into_iter().find(|i| *i != next).unwrap();
    wait_for(
        "the remaining standby names the new leader",
        &mut rxs[other],
        |l| is_standby_of(l, new_epoch),
    )
    .await;
    assert!(!rxs[other].borrow().is_leader());

    // Dropping a contender removes its node at once (session closed).
    drop(contenders[next].take());
    assert_eq!(*rxs[next].borrow(), Leadership::Lost);
    wait_for("last contender leads", &mut rxs[other], |l| l.is_leader()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contender_reports_lost_at_once_and_recontends_after_session_expiry() {
    init_tracing();
    let mut zk = ZkServer::start().expect("zookeeper starts");
    let url = ZkUrl::parse(&zk.url("/ha")).unwrap();
    let session_timeout = Duration::from_secs(2);
    let (contender, mut rx) = Contender::start(&url, master_info("m1", 5050), session_timeout);
    let mut detector = Detector::start(&url, session_timeout);
    let first = wait_for("leads", &mut rx, |l| l.is_leader()).await;
    let epoch = first.leader_epoch().unwrap();
    wait_for("detector sees it", &mut detector, |d| {
        d.as_ref().map(|l| l.epoch) == Some(epoch)
    })
    .await;

    // ZooKeeper dies: Lost must come at once, not after the session timeout.
    let t0 = Instant::now();
    tokio::task::block_in_place(|| zk.stop());
    wait_for("lost after ZooKeeper stops", &mut rx, |l| {
        *l == Leadership::Lost
    })
    .await;
    let lost_after = t0.elapsed();
    println!("Lost published {lost_after:?} after ZooKeeper was killed");
    assert!(lost_after < session_timeout, "Lost after {lost_after:?}");
    wait_for("detector forgets the leader", &mut detector, |d| {
        d.is_none()
    })
    .await;

    // Stay down past the session timeout so the session expires, then come back.
    tokio::time::sleep(session_timeout * 2).await;
    assert_eq!(
        *rx.borrow(),
        Leadership::Lost,
        "never leader while ZooKeeper is down"
    );
    tokio::task::block_in_place(|| zk.restart()).expect("zookeeper restarts");
    let again = wait_for("leads again", &mut rx, |l| l.is_leader()).await;
    let new_epoch = again.leader_epoch().unwrap();
    assert!(
        new_epoch > epoch,
        "a new session contends with a new node: {new_epoch} > {epoch}"
    );
    let Leadership::Leader { session_id: s2, .. } = again else {
        unreachable!()
    };
    let Leadership::Leader { session_id: s1, .. } = first else {
        unreachable!()
    };
    assert_ne!(s1, s2, "new session");
    wait_for("detector sees the new leader", &mut detector, |d| {
        d.as_ref().map(|l| l.epoch) == Some(new_epoch)
    })
    .await;
    println!("re-elected {:?} after restart began", t0.elapsed());
    contender.withdraw().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detector_follows_leader_changes() {
    init_tracing();
    let zk = ZkServer::start().expect("zookeeper starts");
    let url = ZkUrl::parse(&zk.url("/det/mezzo")).unwrap();
    let timeout = Duration::from_secs(4);
    // Started before the path exists.
    let mut det = Detector::start(&url, timeout);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(det.borrow().is_none());

    let (a, mut arx) = Contender::start(&url, master_info("a", 1), timeout);
    let ea = wait_for("a leads", &mut arx, |l| l.is_leader())
        .await
        .leader_epoch()
        .unwrap();
    let seen = wait_for("detector sees a", &mut det, |d| d.is_some())
        .await
        .unwrap();
    assert_eq!(seen.epoch, ea);
    assert_eq!(seen.data, master_info("a", 1));
    assert_eq!(seen.json["id"], "a");

    let (b, mut brx) = Contender::start(&url, master_info("b", 2), timeout);
    wait_for("b stands by", &mut brx, |l| is_standby_of(l, ea)).await;
    assert_eq!(det.borrow().as_ref().map(|l| l.epoch), Some(ea));

    a.withdraw().await;
    let seen = wait_for("detector follows to b", &mut det, |d| {
        d.as_ref().is_some_and(|l| l.epoch != ea)
    })
    .await
    .unwrap();
    assert!(seen.epoch > ea);
    assert_eq!(seen.json["id"], "b");
    wait_for("b leads", &mut brx, |l| {
        l.leader_epoch() == Some(seen.epoch)
    })
    .await;

    drop(b);
    wait_for("no leader left", &mut det, |d| d.is_none()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_compare_and_set_refuses_stale_writers() {
    init_tracing();
    let zk = ZkServer::start().expect("zookeeper starts");
    let url = ZkUrl::parse(&zk.url("/store/mezzo")).unwrap();
    let timeout = Duration::from_secs(4);
    let w1 = ZkStore::connect(&url, timeout).await.unwrap();
    let w2 = ZkStore::connect(&url, timeout).await.unwrap();

    assert_eq!(w1.get("registry").await.unwrap(), None);
    assert_eq!(w1.create("registry", b"v0").await.unwrap(), 0);
    assert!(matches!(
        w2.create("registry", b"other").await,
        Err(Error::AlreadyExists { .. })
    ));

    // Both read version 0; the first write wins, the second is stale.
    let (d1, v1) = w1.get("registry").await.unwrap().unwrap();
    let (d2, v2) = w2.get("registry").await.unwrap().unwrap();
    assert_eq!((d1.as_slice(), v1), (&b"v0"[..], 0));
    assert_eq!((d2.as_slice(), v2), (&b"v0"[..], 0));
    assert_eq!(w1.set("registry", b"from w1", v1).await.unwrap(), 1);
    let stale = w2.set("registry", b"from w2", v2).await;
    assert!(
        matches!(stale, Err(Error::BadVersion { expected: 0, .. })),
        "{stale:?}"
    );
    assert_eq!(
        w2.get("registry").await.unwrap(),
        Some((b"from w1".to_vec(), 1))
    );
    assert!(matches!(
        w2.delete("registry", 0).await,
        Err(Error::BadVersion { .. })
    ));
    assert!(matches!(
        w2.set("missing", b"x", 0).await,
        Err(Error::NoNode { .. })
    ));

    // Nested keys create their parents; list by prefix.
    w1.create("frameworks/fw-1", b"{}").await.unwrap();
    w1.create("frameworks/fw-2", b"{}").await.unwrap();
    w1.create("frameworks/other", b"{}").await.unwrap();
    assert_eq!(
        w2.list("frameworks/fw-").await.unwrap(),
        vec!["frameworks/fw-1", "frameworks/fw-2"]
    );
    assert_eq!(w2.list("frameworks/").await.unwrap().len(), 3);
    assert_eq!(w2.list("nothing/").await.unwrap(), Vec::<String>::new());
    w2.delete("frameworks/fw-1", 0).await.unwrap();
    assert_eq!(w1.get("frameworks/fw-1").await.unwrap(), None);

    // Values over 1 MB are refused clearly; 1 MB itself fits.
    let big = vec![b'x'; mezzo_zk::MAX_VALUE_BYTES + 1];
    assert!(matches!(
        w1.set("registry", &big, 1).await,
        Err(Error::TooLarge { .. })
    ));
    let max = vec![b'x'; mezzo_zk::MAX_VALUE_BYTES];
    assert_eq!(w1.set("registry", &max, 1).await.unwrap(), 2);
    assert!(matches!(
        w1.get("bad//key").await,
        Err(Error::InvalidKey { .. })
    ));

    // Fenced writes succeed while the writer's election node exists, and not after.
    let (leader, mut lrx) = Contender::start(&url, master_info("m", 1), timeout);
    let epoch = wait_for("leads", &mut lrx, |l| l.is_leader())
        .await
        .leader_epoch()
        .unwrap();
    let fenced = w1.fenced(election_node_path(&url.path, epoch));
    assert_eq!(fenced.set("registry", b"fenced", 2).await.unwrap(), 3);
    fenced.create("agents/a1", b"{}").await.unwrap();
    // The election node is not a key.
    assert_eq!(
        w1.list("").await.unwrap(),
        vec!["agents", "frameworks", "registry"]
    );
    leader.withdraw().await;
    let refused = fenced.set("registry", b"deposed", 3).await;
    assert!(matches!(refused, Err(Error::Fenced { .. })), "{refused:?}");
    assert!(matches!(
        fenced.delete("agents/a1", 0).await,
        Err(Error::Fenced { .. })
    ));
    assert_eq!(
        w2.get("registry").await.unwrap(),
        Some((b"fenced".to_vec(), 3))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brief_disconnect_keeps_the_session_and_the_same_epoch() {
    init_tracing();
    let mut zk = ZkServer::start().expect("zookeeper starts");
    let url = ZkUrl::parse(&zk.url("/brief")).unwrap();
    // Long enough for the server to come back before the session expires (the server
    // restores sessions from its data dir with a fresh timeout).
    let session_timeout = Duration::from_secs(9);
    let (contender, mut rx) = Contender::start(&url, master_info("m1", 5050), session_timeout);
    let first = wait_for("leads", &mut rx, |l| l.is_leader()).await;
    assert_eq!(
        contender.confirm_leadership().await,
        Ok(first.leader_epoch().unwrap())
    );

    tokio::task::block_in_place(|| zk.stop());
    wait_for("lost while disconnected", &mut rx, |l| {
        *l == Leadership::Lost
    })
    .await;
    assert!(
        contender.confirm_leadership().await.is_err(),
        "no confirmation while disconnected"
    );
    tokio::task::block_in_place(|| zk.restart()).expect("zookeeper restarts");
    let again = wait_for("leads again", &mut rx, |l| l.is_leader()).await;
    assert_eq!(again, first, "same session, same node, same epoch");
    assert_eq!(
        contender.confirm_leadership().await,
        Ok(first.leader_epoch().unwrap())
    );
    contender.withdraw().await;
}
