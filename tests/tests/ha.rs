//! High availability with a real ZooKeeper: election, failover of the
//! leading master, redirects, and a leader that loses its session.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mezzo_proto::v1::TaskState;
use mezzo_tests::zk::ZkServer;
use mezzo_tests::*;

const T: Duration = Duration::from_secs(40);

fn start_master(zk: &str) -> Result<MasterProc> {
    MasterProc::start(&["--zk", zk, "--zk-session-timeout", "2s", "--quorum", "2"])
}

async fn elected(master: &MasterProc) -> bool {
    get_json(&format!("{}/metrics/snapshot", master.url()))
        .await
        .is_ok_and(|m| m["master/elected"] == 1)
}

/// Index of the one leading master, once exactly one leads.
async fn the_leader(masters: &[Option<MasterProc>]) -> Result<usize> {
    eventually(T, "exactly one leading master", || async {
        let mut leaders = Vec::new();
        for (i, m) in masters.iter().enumerate() {
            if let Some(m) = m {
                if elected(m).await {
                    leaders.push(i);
                }
            }
        }
        (leaders.len() == 1).then(|| leaders[0])
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_keeps_running_tasks() -> Result<()> {
    init_logs();
    let zk = ZkServer::start()?;
    let url = zk.url("/mezzo");
    let mut masters: Vec<Option<MasterProc>> = (0..3)
        .map(|_| start_master(&url).map(Some))
        .collect::<Result<_>>()?;
    let first = the_leader(&masters).await?;

    // The leader's znode is plain MasterInfo JSON any ZooKeeper client reads.
    let zk_cli = |args: &[&str]| -> Result<String> {
        let out = std::process::Command::new("java")
            .args([
                "-cp",
                "/usr/share/java/*:/etc/zookeeper/conf",
                "org.apache.zookeeper.ZooKeeperMain",
                "-server",
            ])
            .arg(zk.connect_string())
            .args(args)
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    };
    let listing = zk_cli(&["ls", "/mezzo"])?;
    let mut nodes: Vec<String> = listing
        .split(|c: char| c == '[' || c == ']' || c == ',' || c.is_whitespace())
        .filter(|n| n.starts_with("json.info_"))
        .map(String::from)
        .collect();
    nodes.sort();
    assert_eq!(nodes.len(), 3, "znodes: {listing}");
    let data = zk_cli(&["get", &format!("/mezzo/{}", nodes[0])])?;
    let line = data
        .lines()
        .find(|l| l.trim_start().starts_with('{'))
        .context("no JSON in the znode")?;
    let info: serde_json::Value = serde_json::from_str(line)?;
    let leader_addr = masters[first].as_ref().context("leader")?.addr.clone();
    assert_eq!(
        format!(
            "{}:{}",
            info["address"]["ip"].as_str().unwrap_or(""),
            info["port"]
        ),
        leader_addr,
        "{info}"
    );
    assert!(
        info["id"].is_string() && info["ip"].is_u64() && info["hostname"].is_string(),
        "{info}"
    );
    assert_eq!(info["address"]["port"], info["port"]);
    assert!(
        info["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("1.")),
        "{info}"
    );

    // A standby redirects to the leader.
    let standby = (first + 1) % 3;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let r = client
        .get(format!(
            "{}/master/redirect",
            masters[standby].as_ref().context("standby")?.url()
        ))
        .send()
        .await?;
    assert_eq!(r.status(), 307);
    let leader_addr = masters[first].as_ref().context("leader")?.addr.clone();
    assert_eq!(
        r.headers()["location"].to_str()?,
        format!("//{leader_addr}/master")
    );

    let agent = AgentProc::start(&url, "cpus:4;mem:4096", &["--isolation", "posix"])?;
    let mut fw = TestFramework::start(
        &url,
        FrameworkOpts {
            failover_timeout: 120.0,
            ..Default::default()
        },
    )
    .await?;
    fw.launch_many("ha", 20, "sleep 600").await?;

    // kill -9 the leader.
    let killed_at = Instant::now();
    if let Some(mut m) = masters[first].take() {
        m.proc.kill();
    }
    let second = the_leader(&masters).await?;
    let new_leader = masters[second].as_ref().context("new leader")?;
    let running = eventually(
        T,
        "all 20 tasks known RUNNING by the new leader",
        || async {
            let s = new_leader.state().await.ok()?;
            let n = task_ids_in_state(&s, "TASK_RUNNING").len();
            let fw_connected = s["frameworks"]
                .as_array()?
                .iter()
                .any(|f| f["id"] == fw.id.as_str() && f["connected"] == true);
            (n == 20 && fw_connected).then_some(n)
        },
    )
    .await?;
    let failover = killed_at.elapsed();
    println!(
        "master failover: new leader with {running} running tasks after {:.2}s",
        failover.as_secs_f64()
    );
    assert_eq!(
        agent.log().matches("launching task").count(),
        20,
        "tasks were relaunched"
    );

    // And it schedules new work.
    fw.launch("after-failover", "sleep 600", 0.1, 32.0).await?;
    fw.wait_state("after-failover", TaskState::TaskRunning, T)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_leader_without_zookeeper_and_recovery_after_it_returns() -> Result<()> {
    init_logs();
    let mut zk = ZkServer::start()?;
    let url = zk.url("/mezzo");
    let masters: Vec<Option<MasterProc>> = (0..2)
        .map(|_| start_master(&url).map(Some))
        .collect::<Result<_>>()?;
    the_leader(&masters).await?;
    let _agent = AgentProc::start(&url, "cpus:2;mem:1024", &["--isolation", "posix"])?;
    let mut fw = TestFramework::start(
        &url,
        FrameworkOpts {
            failover_timeout: 120.0,
            ..Default::default()
        },
    )
    .await?;
    fw.launch("survivor", "sleep 600", 0.1, 32.0).await?;
    fw.wait_state("survivor", TaskState::TaskRunning, T).await?;

    zk.stop();
    eventually(T, "no master acts as leader", || async {
        for m in masters.iter().flatten() {
            if elected(m).await {
                return None;
            }
        }
        Some(())
    })
    .await?;

    zk.restart()?;
    let leader = the_leader(&masters).await?;
    let m = masters[leader].as_ref().context("leader")?;
    eventually(T, "the task known RUNNING again", || async {
        let s = m.state().await.ok()?;
        task_ids_in_state(&s, "TASK_RUNNING")
            .iter()
            .any(|id| id == "survivor")
            .then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_registry_refuses_a_stale_writer_and_a_deposed_leader() -> Result<()> {
    use mezzo_master::registry::{Registry, RegistryError, RegistryState, ZkRegistry};
    init_logs();
    let zk = ZkServer::start()?;
    let url = mezzo_zk::ZkUrl::parse(&zk.url("/mezzo"))?;
    let store = mezzo_zk::ZkStore::connect(&url, Duration::from_secs(5)).await?;
    let a = ZkRegistry::new(store.clone(), None);
    let b = ZkRegistry::new(store.clone(), None);
    let (_, va) = a.load().await?;
    let (_, vb) = b.load().await?;
    let mut s = RegistryState::default();
    s.removed_frameworks.insert("fw-a".into());
    let v0 = a.store(&s, va).await?;
    // b read the registry before a wrote it: its write is refused.
    let err = b.store(&RegistryState::default(), vb).await.unwrap_err();
    assert!(matches!(err, RegistryError::Conflict { .. }), "{err}");
    let (seen, v) = b.load().await?;
    assert_eq!(seen, s);
    assert_eq!(v, Some(v0));
    // A writer fenced by an election node that is gone (a deposed leader).
    let deposed = ZkRegistry::new(store, Some(mezzo_zk::election_node_path(&url.path, 12345)));
    let err = deposed.store(&s, Some(v0)).await.unwrap_err();
    assert!(matches!(err, RegistryError::Fenced), "{err}");
    Ok(())
}

/// A standalone master restarted on its work dir remembers the frameworks
/// it removed (they may not come back) and the ones it registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_registry_survives_a_master_restart() -> Result<()> {
    init_logs();
    let dir = tempfile::tempdir()?;
    let port = free_port()?.to_string();
    let work = dir.path().display().to_string();
    let args = [
        "--port",
        port.as_str(),
        "--work-dir",
        work.as_str(),
        "--agent-reregister-timeout",
        "2s",
    ];
    let mut master = MasterProc::start(&args)?;
    let _agent = AgentProc::start(&master.addr, "cpus:2;mem:1024", &["--isolation", "posix"])?;
    // An agent that will not come back after the master restart.
    let mut lost_agent =
        AgentProc::start(&master.addr, "cpus:1;mem:512", &["--isolation", "posix"])?;
    let mut keep = TestFramework::start(
        &master.addr,
        FrameworkOpts {
            name: "keep".into(),
            failover_timeout: 120.0,
            ..Default::default()
        },
    )
    .await?;
    keep.launch("kept", "sleep 600", 0.1, 32.0).await?;
    keep.wait_state("kept", TaskState::TaskRunning, T).await?;
    let gone = TestFramework::start(
        &master.addr,
        FrameworkOpts {
            name: "gone".into(),
            ..Default::default()
        },
    )
    .await?;
    gone.driver.teardown().await?;
    let (keep_id, gone_id) = (keep.id.clone(), gone.id.clone());
    drop(keep);
    drop(gone);
    eventually(T, "the registry file written", || async {
        let text = std::fs::read_to_string(dir.path().join("registry.json")).ok()?;
        (text.contains(&keep_id) && text.contains(&gone_id)).then_some(())
    })
    .await?;

    eventually(T, "both agents admitted in the registry", || async {
        let text = std::fs::read_to_string(dir.path().join("registry.json")).ok()?;
        let r: serde_json::Value = serde_json::from_str(&text).ok()?;
        (r["state"]["agents"].as_object()?.len() == 2).then_some(())
    })
    .await?;
    lost_agent.kill();
    master.proc.kill();
    master = MasterProc::start(&args)?;
    let refused = TestFramework::start(
        &master.addr,
        FrameworkOpts {
            name: "gone".into(),
            id: gone_id,
            ..Default::default()
        },
    )
    .await;
    assert!(
        refused.is_err(),
        "a torn-down framework came back after the master restart"
    );
    let mut back = TestFramework::start(
        &master.addr,
        FrameworkOpts {
            name: "keep".into(),
            failover_timeout: 120.0,
            id: keep_id.clone(),
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(back.id, keep_id);
    // Tasks come back with their agent's re-registration; then reconcile.
    eventually(T, "the agent re-registered with its task", || async {
        let s = master.state().await.ok()?;
        task_ids_in_state(&s, "TASK_RUNNING")
            .iter()
            .any(|id| id == "kept")
            .then_some(())
    })
    .await?;
    back.driver.reconcile(vec![]).await?;
    back.wait_state("kept", TaskState::TaskRunning, T).await?;
    // The agent that never re-registered is unreachable after the timeout.
    eventually(T, "the missing agent marked unreachable", || async {
        let s = master.state().await.ok()?;
        (s["unreachable_slaves"] == 1 && s["activated_slaves"] == 1).then_some(())
    })
    .await?;
    Ok(())
}

/// Mesos' SplitBrainMasters case: a leader frozen past its ZooKeeper
/// session comes back after a new leader took over; it must not act.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_that_wakes_up_does_not_act() -> Result<()> {
    init_logs();
    let zk = ZkServer::start()?;
    let url = zk.url("/mezzo");
    let masters: Vec<Option<MasterProc>> = (0..2)
        .map(|_| start_master(&url).map(Some))
        .collect::<Result<_>>()?;
    let first = the_leader(&masters).await?;
    let agent = AgentProc::start(&url, "cpus:2;mem:1024", &["--isolation", "posix"])?;
    let mut fw = TestFramework::start(
        &url,
        FrameworkOpts {
            failover_timeout: 120.0,
            ..Default::default()
        },
    )
    .await?;
    for i in 0..3 {
        fw.launch(&format!("steady-{i}"), "sleep 600", 0.1, 32.0)
            .await?;
        fw.wait_state(&format!("steady-{i}"), TaskState::TaskRunning, T)
            .await?;
    }
    let old = masters[first].as_ref().context("leader")?;
    old.proc.signal(libc::SIGSTOP);
    let second = eventually(T, "another master elected", || async {
        for (i, m) in masters.iter().enumerate() {
            if i != first && elected(m.as_ref()?).await {
                return Some(i);
            }
        }
        None
    })
    .await;
    let second = match second {
        Ok(s) => s,
        Err(e) => {
            old.proc.signal(libc::SIGCONT);
            return Err(e);
        }
    };
    let new = masters[second].as_ref().context("new leader")?;
    eventually(T, "agent and framework with the new leader", || async {
        let s = new.state().await.ok()?;
        let running = task_ids_in_state(&s, "TASK_RUNNING").len();
        (running == 3 && s["frameworks"][0]["connected"] == true).then_some(())
    })
    .await?;
    let launches_before = agent.log().matches("launching task").count();
    let updates_before = fw.updates.len();

    old.proc.signal(libc::SIGCONT);
    eventually(T, "the woken master to stand down", || async {
        let m = get_json(&format!("{}/metrics/snapshot", old.url()))
            .await
            .ok()?;
        (m["master/elected"] == 0
            && m["master/slaves_active"] == 0
            && m["master/frameworks_active"] == 0)
            .then_some(())
    })
    .await?;
    // Give a woken leader's timers every chance to misbehave: a few of its
    // allocation and maintenance rounds pass while we watch the cluster.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        assert!(elected(new).await, "the new leader lost its leadership");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = agent.log();
    assert_eq!(
        log.matches("launching task").count(),
        launches_before,
        "a task was launched"
    );
    // No task was killed or lost on the framework's side.
    let bad: Vec<_> = fw.updates[updates_before..]
        .iter()
        .filter(|s| mezzo_proto::task_state(s).is_terminal())
        .collect();
    assert!(
        bad.is_empty(),
        "tasks ended after the old leader woke up: {bad:?}"
    );
    // The cluster still works under the new leader.
    fw.launch("after-wakeup", "sleep 600", 0.1, 32.0).await?;
    fw.wait_state("after-wakeup", TaskState::TaskRunning, T)
        .await?;
    Ok(())
}

/// Mesos' guarantee across a master failover: an update the agent holds
/// unacknowledged when the leader dies reaches the framework through the
/// next leader, once on its new subscription, and the rest follow in order.
/// (The agent retries every 10 s by default; the framework acknowledges
/// well before, so a second copy would come from the failover itself: the
/// agent's resend on re-registration and the master's on re-subscription.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_update_is_delivered_once_by_the_next_leader() -> Result<()> {
    use mezzo_tests::Ev;
    init_logs();
    let zk = ZkServer::start()?;
    let url = zk.url("/mezzo");
    let mut masters: Vec<Option<MasterProc>> = (0..3)
        .map(|_| start_master(&url).map(Some))
        .collect::<Result<_>>()?;
    let first = the_leader(&masters).await?;
    let _agent = AgentProc::start(&url, "cpus:2;mem:1024", &["--isolation", "posix"])?;
    let mut fw = TestFramework::start(
        &url,
        FrameworkOpts {
            auto_ack: false,
            failover_timeout: 120.0,
            ..Default::default()
        },
    )
    .await?;
    fw.launch("held", "sleep 600", 0.1, 32.0).await?;
    let is_held = |ev: &Ev| matches!(ev, Ev::Update(s) if s.task_id == "held");
    let Ev::Update(head) = fw.wait_event(T, is_held).await? else {
        unreachable!("the predicate matched an update");
    };
    assert!(!head.uuid.is_empty(), "an agent's update carries a uuid");

    if let Some(mut m) = masters[first].take() {
        m.proc.kill();
    }
    the_leader(&masters).await?;
    let mut seen = Vec::new();
    loop {
        let ev = fw.wait_event(T, |_| true).await?;
        let done = matches!(&ev, Ev::Update(s) if s.uuid == head.uuid);
        seen.push(ev);
        if done {
            break;
        }
    }
    assert!(
        seen.iter().any(|e| matches!(e, Ev::Subscribed(_))),
        "the update came before re-subscribing: {:?}",
        updates_of(&seen)
    );
    fw.driver.acknowledge(&head).await?;
    let Ev::Update(next) = fw.wait_event(T, is_held).await? else {
        unreachable!("the predicate matched an update");
    };
    assert_ne!(next.uuid, head.uuid, "the head again after its ack");
    fw.driver.acknowledge(&next).await?;
    // Nothing more for the task: no duplicate of either update.
    let quiet = Instant::now() + Duration::from_millis(2500);
    let mut after = Vec::new();
    while let Ok(ev) = fw
        .wait_event(quiet.saturating_duration_since(Instant::now()), |_| true)
        .await
    {
        after.push(ev);
    }
    let late = updates_of(&after);
    assert!(
        late.iter().all(|(task, _)| task != "held"),
        "duplicates after the failover: {late:?}"
    );
    println!(
        "held update {} re-delivered once by the new leader, then {}",
        mezzo_proto::task_state(&head).as_str_name(),
        mezzo_proto::task_state(&next).as_str_name()
    );
    Ok(())
}

/// (task, state) of the updates among `events`.
fn updates_of(events: &[mezzo_tests::Ev]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            mezzo_tests::Ev::Update(s) => Some((
                s.task_id.clone(),
                mezzo_proto::task_state(s).as_str_name().to_string(),
            )),
            _ => None,
        })
        .collect()
}

/// The failover time with default flags (10 s ZooKeeper session): kill -9
/// of the leader of three masters until the new leader reports the one
/// agent active and offers outstanding. Prints one summary line; no
/// assertion on the figure (run by `bench/failover.sh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: bench/failover.sh runs it"]
async fn failover_time_with_default_flags() -> Result<()> {
    init_logs();
    let zk = ZkServer::start()?;
    let url = zk.url("/mezzo");
    let mut masters: Vec<Option<MasterProc>> = (0..3)
        .map(|_| MasterProc::start(&["--zk", &url, "--quorum", "2"]).map(Some))
        .collect::<Result<_>>()?;
    let first = the_leader(&masters).await?;
    let _agent = AgentProc::start(&url, "cpus:2;mem:1024", &["--isolation", "posix"])?;
    // Holds every offer it gets, so outstanding offers show that offers flow.
    let _fw = TestFramework::start(
        &url,
        FrameworkOpts {
            failover_timeout: 120.0,
            ..Default::default()
        },
    )
    .await?;
    let leader = masters[first].as_ref().context("leader")?;
    eventually(T, "the agent active and offers out", || async {
        let m = get_json(&format!("{}/metrics/snapshot", leader.url()))
            .await
            .ok()?;
        (m["master/slaves_active"] == 1 && m["master/outstanding_offers"].as_u64()? >= 1)
            .then_some(())
    })
    .await?;
    let killed = Instant::now();
    if let Some(mut m) = masters[first].take() {
        m.proc.kill();
    }
    let (mut elected_at, mut agent_at, mut offers_at) = (None, None, None);
    let limit = Duration::from_secs(90);
    while offers_at.is_none() && killed.elapsed() < limit {
        for m in masters.iter().flatten() {
            let Ok(s) = get_json(&format!("{}/metrics/snapshot", m.url())).await else {
                continue;
            };
            if s["master/elected"] != 1 {
                continue;
            }
            let t = killed.elapsed().as_secs_f64();
            elected_at.get_or_insert(t);
            if s["master/slaves_active"] == 1 {
                agent_at.get_or_insert(t);
                if s["master/outstanding_offers"].as_u64().unwrap_or(0) >= 1 {
                    offers_at.get_or_insert(t);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = |t: Option<f64>| t.map_or("never".to_string(), |t| format!("{t:.1}s"));
    println!(
        "failover (3 masters, zk session 10s, 1 agent): new leader elected {}, agent re-registered (slaves_active=1) {}, offers flowing {} after kill -9",
        secs(elected_at),
        secs(agent_at),
        secs(offers_at)
    );
    Ok(())
}
