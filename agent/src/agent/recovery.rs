//! Recovery after an agent restart: checkpointed tasks are reloaded, live
//! executors reconnect by themselves, a task whose executor died has its
//! container destroyed and is reported TASK_FAILED, a reboot (new boot id)
//! archives the old records, and every orphan container is destroyed.

use super::*;

impl Agent {
    /// Loads checkpointed tasks after a restart. Live executors reconnect
    /// by themselves; a task whose executor died meanwhile without a
    /// terminal update has its container destroyed, then is reported
    /// TASK_FAILED. After a reboot nothing is reconnected: the old records
    /// are archived and the unfinished tasks fail ("unknown container").
    /// Every other container found on the host is an orphan and destroyed.
    pub(super) fn recover(&mut self) {
        let layout = self.layout.clone();
        let boot_id = checkpoint_io::read_boot_id(&self.config.boot_id_path);
        let plan = checkpoint::reboot_plan(
            checkpoint_io::read_boot_id(&layout.boot_id()).as_deref(),
            boot_id.as_deref(),
            checkpoint_io::read_agent_info(&layout).as_ref(),
            &self.info,
        );
        let records = checkpoint_io::read_tasks(&layout);
        let (recovered, failure): (Vec<Recovered>, &'static str) = match &plan {
            RebootPlan::Recover => (
                records
                    .into_iter()
                    .filter_map(|r| checkpoint::recover(r, |c| launcher::live_executor(&layout, c)))
                    .collect(),
                "Executor terminated while the agent was down",
            ),
            RebootPlan::Rebooted { previous, keep_id } => {
                warn!(previous_boot = %previous, boot = ?boot_id, keep_id, "the host rebooted since the agent last ran: its executors are gone");
                let recovered = if *keep_id {
                    records
                        .into_iter()
                        .filter_map(checkpoint::recover_after_reboot)
                        .collect()
                } else {
                    // A new agent id: the old agent's tasks are the
                    // master's to declare lost, not ours to report.
                    Vec::new()
                };
                match checkpoint_io::archive(&layout, previous, !keep_id) {
                    Ok(dir) => {
                        info!(archive = %dir.display(), "archived the checkpoints of the previous boot")
                    }
                    Err(e) => {
                        warn!(error = %e, "cannot archive the checkpoints of the previous boot")
                    }
                }
                if !keep_id {
                    self.agent_id.clear();
                }
                (recovered, checkpoint::UNKNOWN_CONTAINER)
            }
        };
        let rebooted = plan != RebootPlan::Recover;
        let mut live = HashSet::new();
        let mut dead = Vec::new();
        for r in recovered {
            let key = (r.framework.id.clone(), r.task.task_id.clone());
            let pid = match r.executor {
                ExecutorFate::Reconnect { pid } => {
                    live.insert(r.container_id.clone());
                    Some(pid)
                }
                ExecutorFate::FailTask => {
                    dead.push(r.container_id.clone());
                    None
                }
                ExecutorFate::Gone => None,
            };
            info!(task.id = %key.1, state = ?r.state, executor_alive = pid.is_some(), "recovered task");
            self.frameworks.insert(key.0.clone(), r.framework);
            self.containers.insert(r.container_id.clone(), key.clone());
            for status in r.pending {
                // Read from disk: durable already.
                self.updates.push(&key, status, 0);
            }
            self.tasks.insert(
                key.clone(),
                TaskEntry {
                    framework_id: key.0.clone(),
                    info: r.task,
                    state: r.state,
                    container_id: r.container_id,
                    executor: None,
                    kill_pending: None,
                    executor_exited: pid.is_none(),
                    recovered_pid: pid,
                },
            );
            if rebooted {
                // Its record went to the archive: write it afresh.
                self.checkpoint(&key);
            }
        }
        for container_id in dead {
            self.destroy(&container_id, AfterDestroy::Fail(failure));
        }
        match self.destroyer.found() {
            Ok(found) => {
                for container_id in checkpoint::orphans(&found, &live) {
                    if !self.destroying.contains_key(&container_id) {
                        warn!(container = %container_id, "destroying an orphan container");
                        self.destroy(&container_id, AfterDestroy::Orphan);
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot list containers to find orphans"),
        }
        // Recorded after the task records above, so a crash in between
        // finds the old boot id and archives again rather than replays.
        if let Some(id) = &boot_id {
            self.writer
                .submit(Op::Write(layout.boot_id(), checkpoint::encode_boot_id(id)));
        }
        self.writer.submit(Op::Write(
            layout.agent_info(),
            checkpoint::encode_agent_info(&self.info),
        ));
    }

    /// Recovered executors are not our children: poll whether they live.
    pub(super) fn check_recovered_executors(&mut self) {
        let gone: Vec<String> = self
            .tasks
            .values()
            .filter_map(|t| {
                let pid = t.recovered_pid?;
                (!launcher::executor_alive(pid, &t.container_id)).then(|| t.container_id.clone())
            })
            .collect();
        for container_id in gone {
            self.executor_exited(&container_id, None);
        }
    }
}
