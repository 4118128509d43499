//! The checkpoint I/O: a writer thread that makes records durable off the
//! actor's thread, and the reads a restarted agent does.
//!
//! The actor submits writes and removals; each gets a sequence number. The
//! writer drains what is queued, keeps only the last operation per file
//! (a burst of updates for one task costs one fsync'd write), performs them
//! with [`mezzo_runtime::fs::write_atomic`] and then reports the highest
//! sequence number of the batch. Because operations are taken in order,
//! that number is a watermark: every write numbered at or below it is
//! durable. The actor sends nothing that a checkpoint records (a status
//! update to the master, an acknowledgement to an executor, a launch)
//! before its write is below the watermark.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use mezzo_proto::v1;
use tracing::{debug, warn};

use crate::checkpoint::{self, Layout};
use crate::updates::Seq;

/// One file operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Replace the file with these bytes, durably.
    Write(PathBuf, Vec<u8>),
    /// Remove the file (a missing file is fine).
    Remove(PathBuf),
}

impl Op {
    fn path(&self) -> &Path {
        match self {
            Op::Write(p, _) | Op::Remove(p) => p,
        }
    }
}

/// Keeps the last operation per path of a batch taken in sequence order,
/// in the order of those last operations; returns them with the batch's
/// highest sequence number.
pub(crate) fn coalesce(batch: Vec<(Seq, Op)>) -> (Vec<Op>, Seq) {
    let top = batch.iter().map(|(s, _)| *s).max().unwrap_or(0);
    let mut last: HashMap<PathBuf, usize> = HashMap::new();
    for (i, (_, op)) in batch.iter().enumerate() {
        last.insert(op.path().to_path_buf(), i);
    }
    let ops = batch
        .into_iter()
        .enumerate()
        .filter(|(i, (_, op))| last.get(op.path()) == Some(i))
        .map(|(_, (_, op))| op)
        .collect();
    (ops, top)
}

fn perform(op: &Op) {
    match op {
        Op::Write(path, data) => {
            // A failed write is logged and the watermark still advances:
            // holding the task's updates back forever would be worse than
            // what a crash could lose.
            if let Err(e) = mezzo_runtime::fs::write_atomic(path, data) {
                warn!(path = %path.display(), error = %e, "cannot write checkpoint");
            }
        }
        Op::Remove(path) => match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(path = %path.display(), error = %e, "cannot remove checkpoint"),
        },
    }
}

/// The actor's handle on the writer thread.
pub(crate) struct Writer {
    tx: Option<mpsc::Sender<(Seq, Op)>>,
    last: Seq,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread; `durable(seq)` is called from it after
    /// each batch.
    pub(crate) fn start(durable: impl Fn(Seq) + Send + 'static) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel::<(Seq, Op)>();
        let thread = std::thread::Builder::new()
            .name("mezzo-checkpoint".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    let n = batch.len();
                    let (ops, top) = coalesce(batch);
                    for op in &ops {
                        perform(op);
                    }
                    debug!(ops = n, files = ops.len(), seq = top, "checkpoints durable");
                    durable(top);
                }
            })?;
        Ok(Writer {
            tx: Some(tx),
            last: 0,
            thread: Some(thread),
        })
    }

    /// Queues `op`; returns its sequence number.
    pub(crate) fn submit(&mut self, op: Op) -> Seq {
        self.last += 1;
        let sent = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send((self.last, op)).is_ok());
        if !sent {
            warn!("checkpoint writer stopped; write dropped");
        }
        self.last
    }

    /// The number of the last submitted operation: once it is durable,
    /// everything submitted so far is.
    pub(crate) fn last(&self) -> Seq {
        self.last
    }

    /// Finishes every queued operation and stops the thread.
    pub(crate) async fn close(mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            if tokio::task::spawn_blocking(move || t.join()).await.is_err() {
                warn!("checkpoint writer did not finish cleanly");
            }
        }
    }
}

/// The checkpointed agent id (empty if there is none).
pub(crate) fn read_agent_id(layout: &Layout) -> String {
    std::fs::read(layout.agent_id())
        .map(|b| checkpoint::decode_agent_id(&b))
        .unwrap_or_default()
}

/// A boot id file's contents (the kernel's or the record), None if it is
/// missing, unreadable or empty.
pub(crate) fn read_boot_id(path: &Path) -> Option<String> {
    match std::fs::read(path) {
        Ok(b) => checkpoint::decode_boot_id(&b),
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(path = %path.display(), error = %e, "cannot read boot id");
            }
            None
        }
    }
}

/// The agent info recorded at the last start, if any.
pub(crate) fn read_agent_info(layout: &Layout) -> Option<v1::AgentInfo> {
    let path = layout.agent_info();
    let bytes = std::fs::read(&path).ok()?;
    match checkpoint::decode_agent_info(&bytes) {
        Ok(info) => Some(info),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "unreadable agent info record ignored");
            None
        }
    }
}

/// Moves the records a reboot made obsolete (task records, run dirs, and
/// the agent id unless it is kept) to `meta/archive/<name>[-n]/`, where an
/// operator can still read them and nothing replays them. Renames within
/// the work dir, so each move is atomic. Returns the archive directory.
pub(crate) fn archive(
    layout: &Layout,
    name: &str,
    agent_id_too: bool,
) -> Result<PathBuf, crate::AgentError> {
    let base = layout.archive_dir();
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut dest = base.join(&safe);
    let mut n = 1;
    while dest.exists() {
        dest = base.join(format!("{safe}-{n}"));
        n += 1;
    }
    std::fs::create_dir_all(&dest).map_err(|e| crate::AgentError::io(&dest, e))?;
    let mut moves = vec![
        (layout.tasks_dir(), dest.join("tasks")),
        (layout.runs_dir(), dest.join("runs")),
    ];
    if agent_id_too {
        moves.push((layout.agent_id(), dest.join("agent_id")));
    }
    for (from, to) in moves {
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(crate::AgentError::io(&from, e)),
        }
    }
    Ok(dest)
}

/// Every readable task record; unreadable ones are logged and skipped.
pub(crate) fn read_tasks(layout: &Layout) -> Vec<v1::CheckpointedTask> {
    let dir = layout.tasks_dir();
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let path = e.path();
        if !Layout::is_task_record(&path) {
            continue;
        }
        let decoded = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| checkpoint::decode_task(&b).map_err(|e| e.to_string()));
        match decoded {
            Ok(r) => out.push(r),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "unreadable task checkpoint skipped")
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(p: &str, d: &str) -> Op {
        Op::Write(PathBuf::from(p), d.as_bytes().to_vec())
    }

    #[test]
    fn coalescing_keeps_the_last_operation_per_file() {
        let batch = vec![
            (3, w("a", "1")),
            (4, w("b", "1")),
            (5, w("a", "2")),
            (6, Op::Remove("b".into())),
            (7, w("c", "1")),
        ];
        let (ops, top) = coalesce(batch);
        assert_eq!(top, 7);
        assert_eq!(ops, vec![w("a", "2"), Op::Remove("b".into()), w("c", "1")]);
        assert_eq!(coalesce(Vec::new()), (Vec::new(), 0));
    }

    #[tokio::test]
    async fn the_watermark_covers_every_submitted_write_and_close_flushes(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut writer = Writer::start(move |s| {
            let _ = tx.send(s);
        })?;
        let path = dir.path().join("meta").join("x.pb");
        for i in 0..20u8 {
            writer.submit(Op::Write(path.clone(), vec![i]));
        }
        let last = writer.last();
        assert_eq!(last, 20);
        let mut seen = 0;
        while seen < last {
            seen = rx.recv().await.ok_or("writer stopped")?;
        }
        assert_eq!(std::fs::read(&path)?, vec![19]);
        writer.submit(Op::Remove(path.clone()));
        writer.submit(Op::Write(dir.path().join("y"), b"y".to_vec()));
        writer.close().await;
        assert!(!path.exists());
        assert_eq!(std::fs::read(dir.path().join("y"))?, b"y");
        Ok(())
    }

    #[test]
    fn records_on_disk_are_read_back_and_garbage_skipped() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let layout = Layout::new(dir.path());
        assert_eq!(read_agent_id(&layout), "");
        assert!(read_tasks(&layout).is_empty());
        mezzo_runtime::fs::write_atomic(&layout.agent_id(), b"agent-1\n")?;
        let task = v1::TaskInfo {
            task_id: "t".into(),
            ..Default::default()
        };
        let good = checkpoint::encode_task(checkpoint::TaskRecord {
            framework: None,
            task: &task,
            state: v1::TaskState::TaskRunning,
            container_id: "c1",
            pending: std::iter::empty(),
            executor_exited: false,
        });
        mezzo_runtime::fs::write_atomic(&layout.task("c1"), &good)?;
        mezzo_runtime::fs::write_atomic(&layout.task("c2"), &[0xff, 0xff])?;
        std::fs::write(layout.tasks_dir().join("c3.pb.tmp"), &good)?;
        assert_eq!(read_agent_id(&layout), "agent-1");
        let tasks = read_tasks(&layout);
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].container_id, "c1");
        Ok(())
    }

    #[test]
    fn archiving_moves_the_records_out_of_recovery() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let layout = Layout::new(dir.path());
        mezzo_runtime::fs::write_atomic(&layout.agent_id(), b"agent-1")?;
        mezzo_runtime::fs::write_atomic(&layout.task("c1"), b"x")?;
        mezzo_runtime::fs::write_atomic(&layout.executor_pid("c1"), b"42")?;
        let dest = archive(&layout, "boot/1", false)?;
        assert_eq!(dest, layout.archive_dir().join("boot_1"));
        assert!(read_tasks(&layout).is_empty());
        assert!(dest.join("tasks").join("c1.pb").is_file());
        assert!(dest.join("runs").join("c1").join("executor.pid").is_file());
        assert_eq!(read_agent_id(&layout), "agent-1", "kept");
        // A second archive of the same name does not overwrite the first.
        let again = archive(&layout, "boot/1", true)?;
        assert_eq!(again, layout.archive_dir().join("boot_1-1"));
        assert_eq!(read_agent_id(&layout), "");
        assert!(again.join("agent_id").is_file());

        let boot = dir.path().join("boot_id");
        assert_eq!(read_boot_id(&boot), None);
        std::fs::write(&boot, "b-1\n")?;
        assert_eq!(read_boot_id(&boot).as_deref(), Some("b-1"));
        assert_eq!(read_agent_info(&layout), None);
        Ok(())
    }
}
