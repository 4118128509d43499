//! `mezzo local`: the whole system on one machine — a standalone master, one
//! agent, the Marathon and batch frameworks — started in order, announced
//! as one block of URLs once everything answers, and stopped in reverse
//! order on Ctrl-C (or SIGTERM): frameworks flush their stores, the agent
//! its checkpoints, the master its registry. Tasks keep running for the
//! next `mezzo local` to recover, unless `--clean` asked to stop them and
//! remove the work directory.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::{agent_config, flatten, master_config, stop_on_signals, LocalArgs};

/// How long each component gets to drain before `mezzo local` stops waiting.
const DRAIN: Duration = Duration::from_secs(10);
/// How long `--clean` waits for the tasks it killed to end.
const CLEAN_WAIT: Duration = Duration::from_secs(30);

/// Task states that still hold a process on the agent.
const LIVE_STATES: [&str; 4] = ["staging", "starting", "running", "killing"];

pub(crate) async fn run(args: LocalArgs) -> Result<()> {
    let mut config = master_config(
        SocketAddr::from(([127, 0, 0, 1], args.port)),
        Some("127.0.0.1".into()),
        &args.master,
    )?;
    config.work_dir = Some(args.work_dir.join("master"));
    // A signal only asks; `root` stops the components once the tasks are
    // counted (or, with --clean, stopped) through the still-running master.
    let asked = stop_on_signals();
    let root = mezzo_runtime::Shutdown::new();
    config.shutdown = root.child();
    let master = mezzo_master::start(config).await?;
    let master_url = format!("http://{}", master.addr);
    let mut agent = agent_config(master.addr.to_string(), args.work_dir.clone(), &args.agent)?;
    agent.hostname = args
        .agent
        .hostname
        .clone()
        .unwrap_or_else(|| "127.0.0.1".into());
    agent.http_listen = Some(SocketAddr::from(([127, 0, 0, 1], args.agent_port)));
    let work_line = format!(
        "{} ({}, {})",
        agent.work_dir.display(),
        agent.resources,
        agent.isolation
    );
    let state_root = agent.work_dir.join("frameworks");
    agent.shutdown = root.child();
    let running_agent = mezzo_agent::start(agent).await.context("agent")?;
    let agent_addr = running_agent.http_addr;
    let mut agent_task = tokio::spawn(running_agent.wait());
    let mut batch_config = mezzo_batch::BatchConfig::new(
        master.addr.to_string(),
        SocketAddr::from(([127, 0, 0, 1], args.batch_port)),
        state_root.join("batch"),
    );
    batch_config.shutdown = root.child();
    let batch = mezzo_batch::start(batch_config)
        .await
        .context("starting the batch framework")?;
    let marathon = mezzo_marathon::start_with(
        mezzo_marathon::MarathonConfig::new(
            master.addr.to_string(),
            SocketAddr::from(([127, 0, 0, 1], args.marathon_port)),
            state_root.join("marathon"),
        ),
        root.child(),
    )
    .await
    .context("starting the Marathon framework")?;
    // The URLs come last, as one block, so they are not lost among logs.
    let urls = Urls {
        master: &master_url,
        agent: agent_addr,
        marathon: marathon.addr,
        batch: batch.addr,
        work: &work_line,
    };
    println!("{}", announcement(&urls, args.clean));

    let client = reqwest::Client::new();
    let mut master_task = tokio::spawn(master.wait());
    let mut frameworks = Box::pin(async move {
        // Each returns once the shutdown trips (or it ends on its own).
        let (_, m) = tokio::join!(batch.wait(), marathon.wait());
        m
    });
    let result = tokio::select! {
        r = &mut master_task => return flatten(r).context("master server"),
        r = &mut agent_task => return flatten(r).context("agent"),
        r = &mut frameworks => r.context("marathon"),
        _ = asked.wait() => Ok(()),
    };
    report_and_clean(&client, &master_url, &args).await;
    // The frameworks drain their APIs and flush their stores first; the
    // agent then its checkpoints and the master its registry.
    root.trigger();
    if let Ok(Err(e)) = tokio::time::timeout(DRAIN, &mut frameworks).await {
        tracing::warn!(error = %e, "marathon stopped with an error");
    }
    if let Ok(r) = tokio::time::timeout(DRAIN, agent_task).await {
        flatten(r).context("agent")?;
    }
    if let Ok(r) = tokio::time::timeout(DRAIN, master_task).await {
        flatten(r).context("master server")?;
    }
    if args.clean {
        remove_work_dir(&args.work_dir)?;
    }
    result
}

/// Says how many tasks keep running, or with `--clean` stops them, while
/// the master still answers.
async fn report_and_clean(client: &reqwest::Client, master_url: &str, args: &LocalArgs) {
    let live = live_tasks(client, master_url).await;
    if args.clean {
        eprintln!(
            "stopping {} task(s) and removing {}",
            live.unwrap_or(0),
            args.work_dir.display()
        );
        clean_tasks(client, master_url).await;
        return;
    }
    match live {
        Some(n) => eprintln!("{n} task(s) keep running; the next `mezzo local` recovers them"),
        None => eprintln!("tasks keep running; the next `mezzo local` recovers them"),
    }
}

/// Where everything listens, for the announcement.
struct Urls<'a> {
    master: &'a str,
    agent: Option<SocketAddr>,
    marathon: SocketAddr,
    batch: SocketAddr,
    work: &'a str,
}

/// The block `mezzo local` prints once everything answers: one
/// `<component>: <url>` line each.
fn announcement(u: &Urls<'_>, clean: bool) -> String {
    let master = u.master;
    let mut block = vec![
        format!("master: {master}"),
        format!("dashboard: {master}/"),
        format!("master state: {master}/master/state"),
    ];
    if let Some(addr) = u.agent {
        block.push(format!("agent: http://{addr}"));
    }
    block.push(format!("marathon: http://{}", u.marathon));
    block.push(format!("batch: http://{}/v1/jobs", u.batch));
    block.push(format!("work dir: {}", u.work));
    block.push("logs: this terminal's stderr (--log debug for more)".into());
    block.push(format!(
        "try: cargo run --release -p mezzo-sdk --example launch -- --master {} --tasks 50",
        master.trim_start_matches("http://")
    ));
    let stop_hint = if clean {
        "Ctrl-C stops every task and removes the work dir (--clean)"
    } else {
        "Ctrl-C stops Mezzo; tasks keep running and the next `mezzo local` recovers them"
    };
    format!("\nMezzo is running. {stop_hint}.\n{}", block.join("\n"))
}

/// Tasks that still hold a process, from the master's metrics.
async fn live_tasks(client: &reqwest::Client, master_url: &str) -> Option<u64> {
    let m: Value = client
        .get(format!("{master_url}/metrics/snapshot"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(
        LIVE_STATES
            .iter()
            .filter_map(|s| m.get(format!("master/tasks_{s}")).and_then(Value::as_u64))
            .sum(),
    )
}

/// Tears down every framework (the master kills their tasks) and waits,
/// bounded, until no task holds a process.
async fn clean_tasks(client: &reqwest::Client, master_url: &str) {
    let frameworks: Vec<String> = match client
        .get(format!("{master_url}/master/frameworks"))
        .send()
        .await
    {
        Ok(r) => r
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| v.get("frameworks").and_then(Value::as_array).cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|f| f.get("id").and_then(Value::as_str).map(str::to_string))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list frameworks to tear down");
            Vec::new()
        }
    };
    for id in frameworks {
        let r = client
            .post(format!("{master_url}/master/teardown"))
            .form(&[("frameworkId", id.as_str())])
            .send()
            .await;
        if let Err(e) = r {
            tracing::warn!(framework.id = %id, error = %e, "teardown failed");
        }
    }
    let deadline = tokio::time::Instant::now() + CLEAN_WAIT;
    while tokio::time::Instant::now() < deadline {
        if live_tasks(client, master_url).await.unwrap_or(0) == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tracing::warn!("some tasks did not end within {CLEAN_WAIT:?}");
}

fn remove_work_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
    }
}
