//! The deployment planner: a pure function from an app's current tasks and its target
//! definition to what to do now (how many tasks to launch, which to kill) and whether
//! the app has converged.
//!
//! It is level-triggered: called again after every change, it never needs to remember
//! what it decided before. The rules follow Marathon's `TaskReplaceActor`
//! (`computeRestartStrategy`):
//!
//! * `minHealthy = ceil(instances * minimumHealthCapacity)` tasks stay healthy (running
//!   when the app has no health check) during an upgrade: an old task is killed only
//!   while more than `minHealthy` tasks are healthy; unhealthy old tasks go first.
//! * `maxCapacity = floor(instances * (1 + maximumOverCapacity))` tasks exist at most;
//!   when it equals `minHealthy`, one extra task is allowed so the upgrade can progress.
//! * Without an upgrade (scale, self-healing) every task counts, whatever its version.
//! * A task whose health check failed past `maxConsecutiveFailures` is replaced: the
//!   replacement starts first and the unhealthy task is killed once enough healthy
//!   tasks run, when capacity leaves no room, or after `unhealthy_grace`.
//! * A task on an unreachable agent keeps its place (no replacement) but is never
//!   healthy nor killed for its health; once inactive (`unreachableStrategy`) the caller
//!   leaves it out, so it is replaced; when it returns, the surplus goes by
//!   `killSelection`.

/// Where a task is in its life, as far as planning goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Launched, not running yet (staging / starting).
    Starting,
    /// Running.
    Running,
    /// On an unreachable agent (TASK_UNREACHABLE, not yet inactive): it keeps its place
    /// but is not healthy, and is never killed for its health.
    Unreachable,
}

/// One task of the app, as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    /// Task id.
    pub id: String,
    /// Launched with the target's config version.
    pub current: bool,
    /// Staging/starting or running.
    pub phase: Phase,
    /// Latest health report (`None`: none yet).
    pub healthy: Option<bool>,
    /// A kill was already requested: the task no longer counts.
    pub killing: bool,
    /// Staging time (ms since the epoch), for `killSelection`.
    pub staged_at: i64,
    /// Seconds since the health check declared it unhealthy (when it is).
    pub unhealthy_for: Option<f64>,
}

/// What the app should look like.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Wanted instances.
    pub instances: usize,
    /// `upgradeStrategy.minimumHealthCapacity`.
    pub minimum_health_capacity: f64,
    /// `upgradeStrategy.maximumOverCapacity`.
    pub maximum_over_capacity: f64,
    /// The app has a health check: "healthy" means a passed check, not just running.
    pub health_checked: bool,
    /// Unhealthy tasks are killed (`maxConsecutiveFailures > 0`).
    pub kill_unhealthy: bool,
    /// `killSelection` is `OLDEST_FIRST` (default is youngest first).
    pub oldest_first: bool,
}

/// Input of [`plan`].
#[derive(Debug, Clone, PartialEq)]
pub struct PlanInput {
    /// The target.
    pub target: Target,
    /// Every known non-terminal task of the app.
    pub tasks: Vec<TaskView>,
    /// A deployment replaces tasks of other config versions (rolling upgrade). Without
    /// one, only the count is kept (as Marathon does after a forced cancel).
    pub upgrading: bool,
    /// Seconds an unhealthy task may wait for its replacement before it is killed
    /// anyway.
    pub unhealthy_grace: f64,
}

/// Why the planner kills a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    /// Old config version replaced by a rolling upgrade.
    Upgrade,
    /// More tasks than wanted.
    ScaleDown,
    /// Failed its health check.
    Unhealthy,
}

/// Output of [`plan`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// How many new tasks (of the target version) to launch now.
    pub launch: usize,
    /// Tasks to kill now.
    pub kill: Vec<(String, KillReason)>,
    /// The app has converged: exactly `instances` healthy tasks of the target version
    /// and nothing else (not even tasks still being killed).
    pub done: bool,
}

fn considered_healthy(t: &TaskView, health_checked: bool) -> bool {
    t.phase == Phase::Running && (!health_checked || t.healthy == Some(true))
}

/// Orders tasks for killing: unhealthy and not-yet-running first, then by age
/// according to `killSelection`.
fn kill_order(tasks: &mut [&TaskView], target: &Target) {
    tasks.sort_by_key(|t| {
        let rank = if considered_healthy(t, target.health_checked) {
            2
        } else if t.phase == Phase::Starting {
            1
        } else {
            0
        };
        let age = if target.oldest_first {
            t.staged_at
        } else {
            -t.staged_at
        };
        (rank, age)
    });
}

/// Decides what to do for one app now. Pure: same input, same plan.
pub fn plan(input: &PlanInput) -> Plan {
    let target = &input.target;
    let n = target.instances;
    let hc = target.health_checked;
    let active: Vec<&TaskView> = input.tasks.iter().filter(|t| !t.killing).collect();
    // A kill of an unreachable task takes effect only when its agent returns: it holds
    // nothing we could use meanwhile, so it neither takes capacity nor blocks the end.
    let killing = input
        .tasks
        .iter()
        .filter(|t| t.killing && t.phase != Phase::Unreachable)
        .count();
    let is_doomed = |t: &TaskView| {
        target.kill_unhealthy && t.phase == Phase::Running && t.healthy == Some(false)
    };
    let (new, mut old): (Vec<&TaskView>, Vec<&TaskView>) =
        active.iter().partition(|t| t.current || !input.upgrading);
    let doomed: Vec<&TaskView> = new.iter().copied().filter(|t| is_doomed(t)).collect();
    let mut ok: Vec<&TaskView> = new.iter().copied().filter(|t| !is_doomed(t)).collect();

    let min_healthy = (n as f64 * target.minimum_health_capacity).ceil() as usize;
    let mut max_capacity = (n as f64 * (1.0 + target.maximum_over_capacity)).floor() as usize;
    max_capacity = max_capacity.max(n);
    if min_healthy >= max_capacity && (!old.is_empty() || !doomed.is_empty()) {
        max_capacity = min_healthy + 1;
    }

    let mut out = Plan::default();

    // Too many tasks of the target version: kill the extras.
    if ok.len() > n {
        kill_order(&mut ok, target);
        let extra = ok.len() - n;
        for t in ok.drain(..extra) {
            out.kill.push((t.id.clone(), KillReason::ScaleDown));
        }
    }

    // Old tasks (rolling upgrade): keep minHealthy healthy tasks at all times.
    let mut old_left = old.len();
    if !old.is_empty() {
        kill_order(&mut old, target);
        let healthy_now = old
            .iter()
            .chain(ok.iter())
            .filter(|t| considered_healthy(t, hc))
            .count();
        let mut may_kill_healthy = healthy_now.saturating_sub(min_healthy);
        for t in &old {
            let healthy = considered_healthy(t, hc);
            if !healthy || may_kill_healthy > 0 {
                if healthy {
                    may_kill_healthy -= 1;
                }
                out.kill.push((t.id.clone(), KillReason::Upgrade));
                old_left -= 1;
            }
        }
    }

    // Unhealthy tasks of the target version: replacement first, capacity permitting.
    let mut doomed_left = doomed.len();
    let healthy_ok = ok.iter().filter(|t| considered_healthy(t, hc)).count();
    let room = max_capacity.saturating_sub(old_left + ok.len() + doomed.len());
    let wanted = n.saturating_sub(ok.len());
    let mut no_room = wanted.saturating_sub(room);
    for t in &doomed {
        let replaced = healthy_ok >= n;
        let waited = t.unhealthy_for.is_some_and(|s| s >= input.unhealthy_grace);
        if replaced || waited || no_room > 0 {
            no_room = no_room.saturating_sub(1);
            out.kill.push((t.id.clone(), KillReason::Unhealthy));
            doomed_left -= 1;
        }
    }

    // Launch what is missing, within capacity. Tasks being killed still hold their
    // resources and show in the app until they end: they count against
    // maximumOverCapacity, so a rolling upgrade never has more than the allowed extra.
    let capacity_left = max_capacity.saturating_sub(old_left + ok.len() + doomed_left + killing);
    out.launch = wanted.min(capacity_left);

    out.done = out.kill.is_empty()
        && out.launch == 0
        && killing == 0
        && old.is_empty()
        && doomed.is_empty()
        && ok.len() == n
        && ok.iter().all(|t| considered_healthy(t, hc));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(n: usize, mhc: f64, moc: f64, hc: bool) -> Target {
        Target {
            instances: n,
            minimum_health_capacity: mhc,
            maximum_over_capacity: moc,
            health_checked: hc,
            kill_unhealthy: true,
            oldest_first: false,
        }
    }

    fn task(id: &str, current: bool, phase: Phase, healthy: Option<bool>) -> TaskView {
        TaskView {
            id: id.into(),
            current,
            phase,
            healthy,
            killing: false,
            staged_at: id.bytes().map(i64::from).sum(),
            unhealthy_for: None,
        }
    }

    fn healthy(id: &str, current: bool) -> TaskView {
        task(id, current, Phase::Running, Some(true))
    }

    fn input(t: Target, tasks: Vec<TaskView>, upgrading: bool) -> PlanInput {
        PlanInput {
            target: t,
            tasks,
            upgrading,
            unhealthy_grace: 60.0,
        }
    }

    #[test]
    fn unreachable_tasks_keep_their_place_but_are_never_healthy_nor_killed_for_health() {
        let mut t = task("a", true, Phase::Unreachable, Some(false));
        t.unhealthy_for = Some(1000.0);
        let p = plan(&input(target(1, 1.0, 1.0, true), vec![t], false));
        assert_eq!((p.launch, p.kill.len(), p.done), (0, 0, false));
    }

    #[test]
    fn a_kill_of_an_unreachable_task_blocks_neither_capacity_nor_the_end() {
        let mut gone = task("a", false, Phase::Unreachable, None);
        gone.killing = true;
        let p = plan(&input(
            target(1, 1.0, 0.0, true),
            vec![gone, healthy("b", true)],
            true,
        ));
        assert_eq!((p.launch, p.kill.len(), p.done), (0, 0, true));
    }

    #[test]
    fn scale_up_from_nothing_launches_everything() {
        let p = plan(&input(target(3, 1.0, 1.0, true), vec![], true));
        assert_eq!((p.launch, p.kill.len(), p.done), (3, 0, false));
    }

    #[test]
    fn scale_down_kills_youngest_first_and_starting_before_running() {
        let tasks = vec![
            healthy("a", true),
            healthy("b", true),
            healthy("c", true),
            task("d", true, Phase::Starting, None),
        ];
        let p = plan(&input(target(2, 1.0, 1.0, true), tasks, true));
        let killed: Vec<&str> = p.kill.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(killed, ["d", "c"], "starting first, then the youngest");
        assert_eq!(p.launch, 0);
    }

    #[test]
    fn converged_when_all_healthy_of_target_version() {
        let tasks = vec![healthy("a", true), healthy("b", true)];
        assert!(plan(&input(target(2, 1.0, 1.0, true), tasks, true)).done);
        let waiting = vec![healthy("a", true), task("b", true, Phase::Running, None)];
        assert!(!plan(&input(target(2, 1.0, 1.0, true), waiting, true)).done);
        let no_hc = vec![task("a", true, Phase::Running, None)];
        assert!(plan(&input(target(1, 1.0, 1.0, false), no_hc, true)).done);
    }

    #[test]
    fn rolling_upgrade_with_full_health_capacity_never_drops_below_target() {
        // 3 instances, mHC 1, mOC 0: one extra task at a time.
        let t = target(3, 1.0, 0.0, true);
        let mut tasks = vec![
            healthy("o1", false),
            healthy("o2", false),
            healthy("o3", false),
        ];
        let p = plan(&input(t.clone(), tasks.clone(), true));
        assert_eq!((p.launch, p.kill.len()), (1, 0), "{p:?}");
        // The new task is not healthy yet: nothing more happens.
        tasks.push(task("n1", true, Phase::Running, None));
        let p = plan(&input(t.clone(), tasks.clone(), true));
        assert_eq!((p.launch, p.kill.len()), (0, 0), "{p:?}");
        // Once healthy, exactly one old task goes.
        tasks[3].healthy = Some(true);
        let p = plan(&input(t.clone(), tasks.clone(), true));
        assert_eq!(p.kill.len(), 1, "{p:?}");
        assert_eq!(p.kill[0].1, KillReason::Upgrade);
        assert_eq!(p.launch, 1, "room for the next one");
        // Healthy count never goes below 3 at any step.
        let healthy_after = tasks.iter().filter(|t| t.healthy == Some(true)).count() - p.kill.len();
        assert!(healthy_after >= 3);
    }

    #[test]
    fn rolling_upgrade_with_zero_health_capacity_kills_all_old_at_once() {
        let t = target(3, 0.0, 0.0, false);
        let tasks = vec![
            healthy("o1", false),
            healthy("o2", false),
            healthy("o3", false),
        ];
        let p = plan(&input(t, tasks, true));
        assert_eq!(p.kill.len(), 3);
        assert_eq!(p.launch, 3);
    }

    #[test]
    fn rolling_upgrade_with_partial_capacity() {
        // 4 instances, mHC 0.5 → 2 must stay; mOC 0.25 → at most 5 tasks.
        let t = target(4, 0.5, 0.25, true);
        let tasks: Vec<TaskView> = (0..4).map(|i| healthy(&format!("o{i}"), false)).collect();
        let p = plan(&input(t, tasks, true));
        assert_eq!(p.kill.len(), 2, "{p:?}");
        assert_eq!(p.launch, 3, "5 capacity - 2 old left");
    }

    #[test]
    fn unhealthy_old_tasks_go_first_and_do_not_count() {
        let t = target(2, 1.0, 0.0, true);
        let tasks = vec![
            healthy("o1", false),
            task("o2", false, Phase::Running, Some(false)),
        ];
        let p = plan(&input(t, tasks, true));
        let killed: Vec<&str> = p.kill.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(killed, ["o2"]);
    }

    #[test]
    fn broken_new_version_keeps_old_tasks() {
        // The new tasks never become healthy: the old ones stay.
        let t = target(2, 1.0, 1.0, false);
        let tasks = vec![
            healthy("o1", false),
            healthy("o2", false),
            task("n1", true, Phase::Starting, None),
        ];
        let p = plan(&input(t, tasks, true));
        assert!(p.kill.is_empty(), "{p:?}");
        assert_eq!(p.launch, 1);
    }

    #[test]
    fn without_upgrade_only_the_count_matters() {
        let t = target(2, 1.0, 1.0, false);
        let tasks = vec![healthy("o1", false), healthy("o2", false)];
        let p = plan(&input(t, tasks, false));
        assert_eq!((p.launch, p.kill.len(), p.done), (0, 0, true));
    }

    #[test]
    fn self_healing_relaunches_missing_tasks() {
        let t = target(3, 1.0, 1.0, false);
        let p = plan(&input(t, vec![healthy("a", true)], false));
        assert_eq!(p.launch, 2);
    }

    #[test]
    fn unhealthy_task_is_replaced_before_it_is_killed() {
        let t = target(2, 1.0, 1.0, true);
        let mut tasks = vec![
            healthy("a", true),
            task("b", true, Phase::Running, Some(false)),
        ];
        let p = plan(&input(t.clone(), tasks.clone(), false));
        assert_eq!((p.launch, p.kill.len()), (1, 0), "replacement first: {p:?}");
        tasks.push(healthy("c", true));
        let p = plan(&input(t.clone(), tasks.clone(), false));
        assert_eq!(p.kill, vec![("b".to_string(), KillReason::Unhealthy)]);
        assert_eq!(p.launch, 0);
    }

    #[test]
    fn unhealthy_task_is_killed_first_when_there_is_no_room() {
        let t = target(2, 1.0, 0.0, true);
        let tasks = vec![
            healthy("a", true),
            task("b", true, Phase::Running, Some(false)),
        ];
        let p = plan(&input(t, tasks, false));
        // mHC 1 = mOC 0 → one extra allowed, so the replacement still goes first.
        assert_eq!((p.launch, p.kill.len()), (1, 0), "{p:?}");
        let t = target(1, 0.0, 0.0, true);
        let tasks = vec![task("b", true, Phase::Running, Some(false))];
        let p = plan(&input(t, tasks, false));
        assert_eq!(p.kill.len(), 1, "{p:?}");
    }

    #[test]
    fn unhealthy_task_waits_at_most_the_grace() {
        let t = target(1, 1.0, 1.0, true);
        let mut b = task("b", true, Phase::Running, Some(false));
        b.unhealthy_for = Some(61.0);
        let p = plan(&input(
            t,
            vec![b, task("c", true, Phase::Starting, None)],
            false,
        ));
        assert_eq!(p.kill.len(), 1);
    }

    #[test]
    fn tasks_being_killed_count_against_over_capacity() {
        // 3 instances, one extra allowed: the old task still being killed holds a slot.
        let t = target(3, 1.0, 0.0, false);
        let mut dying = healthy("old1", false);
        dying.killing = true;
        let tasks = vec![
            dying,
            healthy("new1", true),
            healthy("old2", false),
            healthy("old3", false),
        ];
        let p = plan(&input(t.clone(), tasks.clone(), true));
        assert_eq!(p.launch, 0, "{p:?}");
        let p = plan(&input(t, tasks[1..].to_vec(), true));
        assert_eq!(p.launch, 1, "{p:?}");
    }

    #[test]
    fn stopping_kills_everything_and_waits_for_the_kills() {
        let t = target(0, 1.0, 1.0, false);
        let tasks = vec![healthy("a", true), healthy("b", false)];
        let p = plan(&input(t.clone(), tasks, true));
        assert_eq!(p.kill.len(), 2);
        let mut dying = healthy("a", true);
        dying.killing = true;
        let p = plan(&input(t.clone(), vec![dying], true));
        assert!(!p.done, "a kill is still pending");
        assert!(plan(&input(t, vec![], true)).done);
    }
}
