//! High availability with a real ZooKeeper: election, failover of the
//! leading master, redirects, and a leader that loses its session.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mezzo_proto::v1::{self, TaskState};
use mezzo_sdk::matching::{task_info, OfferSpace, TaskResources};
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
    let out = std::process::Command::new("java")
        .args([
            "-cp",
            "/usr/share/java/*:/etc/zookeeper/conf",
            "org.apache.zookeeper.ZooKeeperMain",
            "-server",
        ])
        .arg(zk.connect_string())
        .args(["ls", "/mezzo"])
        .output()?;
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("json.info_"), "znodes: {listing}");

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
    let mut launched = 0;
    while launched < 20 {
        for o in fw.next_offers(T).await? {
            let mut space = OfferSpace::new(&o);
            let mut tasks = Vec::new();
            while launched + tasks.len() < 20 {
                let Some(res) = space.try_fit(&TaskResources::new(0.1, 32.0)) else {
                    break;
                };
                let id = format!("ha-{}", launched + tasks.len());
                tasks.push(task_info(&id, &id, &o.agent_id, "sleep 600", &res));
            }
            launched += tasks.len();
            fw.driver
                .launch(
                    vec![o.id.clone()],
                    tasks,
                    Some(v1::Filters {
                        refuse_seconds: Some(0.0),
                    }),
                )
                .await?;
        }
    }
    for i in 0..20 {
        fw.wait_state(&format!("ha-{i}"), TaskState::TaskRunning, T)
            .await?;
    }

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
            let n = s["frameworks"]
                .as_array()?
                .iter()
                .flat_map(|f| f["tasks"].as_array().cloned().unwrap_or_default())
                .filter(|t| t["state"] == "TASK_RUNNING")
                .count();
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
        s["frameworks"]
            .as_array()?
            .iter()
            .flat_map(|f| f["tasks"].as_array().cloned().unwrap_or_default())
            .any(|t| t["id"] == "survivor" && t["state"] == "TASK_RUNNING")
            .then_some(())
    })
    .await?;
    Ok(())
}
