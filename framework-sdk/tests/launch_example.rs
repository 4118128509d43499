//! Runs the `launch` example (built by `cargo test` with the other examples) against
//! the scripted master, which offers resources and "runs" the tasks it is given.

mod common;

use std::path::PathBuf;
use std::process::Stdio;

use common::{within, TestMaster};
use mezzo_sdk::v1;

/// `target/<profile>/examples/launch`, next to this test's `deps/` directory.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let bin = dir
        .join("examples")
        .join(format!("launch{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run the whole `cargo test -p mezzo-sdk`, which builds the examples",
        bin.display()
    );
    bin
}

struct Outcome {
    code: Option<i32>,
    stdout: String,
}

async fn launch(master: &TestMaster, args: &[&str]) -> Outcome {
    let (addr, server) = master.serve().await;
    let child = tokio::process::Command::new(example_binary())
        .arg("--master")
        .arg(addr.to_string())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = within("the example to exit", child.wait_with_output())
        .await
        .unwrap();
    server.abort();
    Outcome {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
    }
}

#[tokio::test]
async fn launches_every_task_packing_offers_and_tears_down() {
    let master = TestMaster::new();
    // Room for two tasks of 0.1 cpus / 32 MB per offer.
    master.script().offer = Some("cpus:0.25;mem:1024".into());
    let out = launch(&master, &["--tasks", "5", "--cmd", "echo hello"]).await;
    assert_eq!(out.code, Some(0), "stdout:\n{}", out.stdout);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert!(lines[..5]
        .iter()
        .all(|l| l.starts_with("task launch-") && l.ends_with(" TASK_FINISHED")));
    assert_eq!(lines[5], "launched 5 tasks: 5 TASK_FINISHED");

    let script = master.script();
    let seen = &script.seen;
    let per_offer: Vec<usize> = seen
        .accepts
        .iter()
        .map(|a| match &a.operations[..] {
            [v1::Operation {
                operation: Some(v1::operation::Operation::Launch(l)),
            }] => l.task_infos.len(),
            other => panic!("unexpected operations {other:?}"),
        })
        .collect();
    assert_eq!(per_offer, vec![2, 2, 1]);
    assert_eq!(
        seen.suppresses.len(),
        1,
        "suppresses once everything is launched"
    );
    assert_eq!(seen.teardowns.len(), 1);
    // Every reliable update but the very last (answered by the teardown) was acked.
    assert_eq!(seen.acks.len(), 9);
}

#[tokio::test]
async fn a_failed_task_makes_the_exit_status_1() {
    let master = TestMaster::new();
    master.script().offer = Some("cpus:4;mem:4096".into());
    let out = launch(&master, &["--tasks", "3", "--cmd", "false"]).await;
    assert_eq!(out.code, Some(1), "stdout:\n{}", out.stdout);
    assert_eq!(
        out.stdout.lines().last(),
        Some("launched 3 tasks: 3 TASK_FAILED")
    );
    assert_eq!(master.script().seen.teardowns.len(), 1);
}

#[tokio::test]
async fn gives_up_with_exit_status_2_on_timeout() {
    let master = TestMaster::new();
    // Too small for any task: every offer is declined.
    master.script().offer = Some("cpus:0.05;mem:16".into());
    let out = launch(&master, &["--tasks", "2", "--timeout-secs", "1"]).await;
    assert_eq!(out.code, Some(2), "stdout:\n{}", out.stdout);
    assert_eq!(
        out.stdout.lines().last(),
        Some("launched 0 tasks: 0 TASK_FINISHED, 2 unfinished")
    );
    let script = master.script();
    assert!(!script.seen.declines.is_empty());
    assert_eq!(
        script.seen.declines[0]
            .filters
            .as_ref()
            .and_then(|f| f.refuse_seconds),
        Some(1.0)
    );
    assert_eq!(script.seen.teardowns.len(), 1);
}
