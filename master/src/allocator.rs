//! The allocator: one round of Hierarchical Dominant Resource Fairness, as
//! Mesos' default `HierarchicalDRF` allocator does it.
//!
//! The master's actor hands [`allocate`] a snapshot of what every agent can
//! offer right now, what every framework holds, the role weights, the cluster
//! total and a predicate for refuse filters; it gets back the offers to make.
//! This module does no I/O, reads no clock and draws randomness only from the
//! generator it is given, so a round is a plain function that unit tests,
//! property tests and benchmarks drive directly.
//!
//! # How a round goes
//!
//! 1. The agents are shuffled (Mesos: "randomize the order in which agents'
//!    resources are allocated") so no agent is systematically offered first.
//! 2. For each agent whose available resources are allocatable (at least
//!    [`AllocatorConfig::min_allocatable_cpus`] cpus *or* at least
//!    [`AllocatorConfig::min_allocatable_mem`] mem), the allocator picks the
//!    role with the lowest *weighted* dominant share (dominant share / weight)
//!    among roles that have a framework eligible for this agent, then, inside
//!    that role, the eligible framework with the lowest dominant share.
//!    Eligible means not suppressed and without a refuse filter for the agent.
//! 3. That framework gets **all** of the agent's available resources as one
//!    [`Allocation`] (one offer per agent per round), and the offered amounts
//!    count towards its share and its role's share for the rest of the round.
//!
//! # Invariants
//!
//! * An agent appears in at most one [`Allocation`] per round, and the
//!   allocation's resources are exactly that agent's `available` — never more.
//! * Suppressed frameworks and filtered (framework, agent) pairs get nothing.
//! * If an allocatable agent has at least one eligible framework, it is offered.
//! * Ties are broken deterministically: roles by name, frameworks by id and
//!   then by index, so the only source of variation is the agent shuffle.
//!
//! # Cost
//!
//! Roles and the frameworks of each role sit in ordered sets keyed by share,
//! and shares are computed on small fixed-point vectors of the cluster's
//! scalar resources (`cpus`, `mem`, `disk`, ...) rather than on [`Resources`].
//! A round costs `O(F log F + A log F)` for `A` agents and `F` frameworks, plus
//! one `is_filtered` call per framework skipped because of a filter; only the
//! output clones [`Resources`]. Role names are treated as flat: `eng/web` is
//! one role, not a child of `eng`.
#![deny(clippy::disallowed_methods)]

use std::collections::{BTreeSet, HashMap};

use mezzo_proto::Resources;
use rand::seq::SliceRandom;
use rand::Rng;

/// One agent's resources the allocator may hand out this round
/// (free = total - used - offered).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSlot {
    /// The agent's id; only carried along for the caller.
    pub id: String,
    /// What may be offered from this agent now.
    pub available: Resources,
}

/// One framework as the allocator sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameworkSlot {
    /// The framework's id; breaks ties between equal shares.
    pub id: String,
    /// The role the framework subscribed with.
    pub role: String,
    /// Resources this framework holds now (used by its tasks + outstanding
    /// offers); drives its share and its role's share.
    pub allocated: Resources,
    /// Suppressed frameworks get no offers (their holdings still count
    /// towards their role's share).
    pub suppressed: bool,
}

/// Allocator settings, the counterpart of Mesos' master flags.
#[derive(Debug, Clone, PartialEq)]
pub struct AllocatorConfig {
    /// An agent's leftover is offerable if it has at least this many cpus...
    pub min_allocatable_cpus: f64,
    /// ...or at least this much memory (MB). Mesos' default
    /// `--min_allocatable_resources` is `cpus:0.01|mem:32`.
    pub min_allocatable_mem: f64,
}

impl Default for AllocatorConfig {
    fn default() -> Self {
        Self {
            min_allocatable_cpus: 0.01,
            min_allocatable_mem: 32.0,
        }
    }
}

/// The input of one allocation round, borrowed from the caller's state.
pub struct Round<'a> {
    /// Agents with what each can offer now.
    pub agents: &'a [AgentSlot],
    /// Every framework, suppressed or not.
    pub frameworks: &'a [FrameworkSlot],
    /// Role weights; roles absent here (or with a weight that is not a
    /// positive finite number) weigh 1.0.
    pub weights: &'a HashMap<String, f64>,
    /// Cluster total, the denominator of shares.
    pub total: &'a Resources,
    /// True when framework index `f` has a refuse filter for agent index `a`
    /// (it declined that agent with `refuse_seconds` not yet elapsed).
    pub is_filtered: &'a dyn Fn(usize, usize) -> bool,
}

/// One offer to make: all of `agents[agent].available` to `frameworks[framework]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    /// Index into [`Round::frameworks`].
    pub framework: usize,
    /// Index into [`Round::agents`].
    pub agent: usize,
    /// The resources offered: the agent's whole `available`.
    pub resources: Resources,
}

/// Scalars are turned into integer thousandths, the precision [`Resources`]
/// keeps, so that sums are exact and do not depend on the order of addition;
/// converting a `Resources` scalar back this way is lossless.
fn milli(v: f64) -> i64 {
    (v * 1000.0).round() as i64
}

/// Dominant share of `allocated` against `total`: the largest fraction of the
/// total it holds over every scalar in `total` (cpus, mem, disk, ...).
/// Range resources (ports) do not count. 0 when `total` has no scalars.
pub fn dominant_share(allocated: &Resources, total: &Resources) -> f64 {
    let mut share = 0.0f64;
    for (name, t) in total.scalars() {
        let t = milli(t);
        if t > 0 {
            share = share.max(milli(allocated.scalar(name)) as f64 / t as f64);
        }
    }
    share
}

/// The scalar dimensions shares are computed over: the positive scalars of
/// the cluster total, in a fixed order.
struct Dims<'a> {
    names: Vec<&'a str>,
    totals: Vec<f64>,
}

impl<'a> Dims<'a> {
    fn new(total: &'a Resources) -> Self {
        let mut names = Vec::new();
        let mut totals = Vec::new();
        for (name, t) in total.scalars() {
            let t = milli(t);
            if t > 0 {
                names.push(name);
                totals.push(t as f64);
            }
        }
        Dims { names, totals }
    }

    fn len(&self) -> usize {
        self.names.len()
    }

    /// Adds the scalars of `r` that count for shares into `acc` (len = dims).
    fn accumulate(&self, acc: &mut [i64], r: &Resources) {
        for (name, v) in r.scalars() {
            // A linear scan: there are only a handful of dimensions.
            if let Some(k) = self.names.iter().position(|n| *n == name) {
                acc[k] += milli(v);
            }
        }
    }

    /// One look at an agent's scalars (agents are the hot loop and their
    /// data is cold in cache): fills `vec` with what counts for shares and
    /// returns whether it is allocatable: something to offer, and at least
    /// the minimum cpus or the minimum mem (Mesos' `allocatable()`).
    fn scan_agent(&self, config: &AllocatorConfig, available: &Resources, vec: &mut [i64]) -> bool {
        // `scalar_millis` reads cpus, mem, disk and gpus from a small array
        // beside the bundle's reference count: one cache line per agent
        // instead of a walk over map nodes and name strings.
        for (slot, name) in vec.iter_mut().zip(&self.names) {
            *slot = available.scalar_millis(name);
        }
        let (cpus, mem) = (available.scalar("cpus"), available.scalar("mem"));
        if !(cpus >= config.min_allocatable_cpus || mem >= config.min_allocatable_mem) {
            return false;
        }
        // Something to offer; only with zero minimums can the answer need
        // the (rarer) look at the other scalars and the ranges.
        cpus > 0.0
            || mem > 0.0
            || available.scalars().any(|(_, v)| v > 0.0)
            || available.range_resources().any(|(_, set)| !set.is_empty())
    }

    /// Same arithmetic as [`dominant_share`], on a vector.
    fn share(&self, v: &[i64]) -> f64 {
        v.iter()
            .zip(&self.totals)
            .fold(0.0f64, |s, (x, t)| s.max(*x as f64 / t))
    }
}

/// Maps a float to an integer with the same order (IEEE total order), so
/// shares can key ordered sets without a float wrapper type.
fn order_key(x: f64) -> u64 {
    let bits = x.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

/// A set entry: (share as [`order_key`], tie-break rank, index).
/// Ranks are unique, so the index never decides the order.
type Key = (u64, usize, usize);

/// A role's running state during the round.
struct RoleState {
    /// 1.0 unless the weights say otherwise.
    weight: f64,
    /// Position of the role's name in sorted order, for tie-breaks.
    rank: usize,
    /// Sum of its frameworks' allocations (all of them, suppressed included).
    alloc: Vec<i64>,
    /// Frameworks that may receive offers, ordered by share.
    eligible: BTreeSet<Key>,
}

/// Runs one allocation round and returns the offers to make, sorted by agent
/// index (the shuffle decides who gets which agent, not the output order).
///
/// See the module documentation for the algorithm and its guarantees.
pub fn allocate(
    config: &AllocatorConfig,
    round: &Round<'_>,
    rng: &mut impl Rng,
) -> Vec<Allocation> {
    let dims = Dims::new(round.total);
    let k = dims.len();
    let fw_rank = framework_ranks(round.frameworks);
    let (mut roles, role_index) = role_states(round, k);

    // Per-framework allocation vectors, flat (stride k) to avoid one Vec each.
    let mut fw_alloc = vec![0i64; round.frameworks.len() * k];
    for (f, fw) in round.frameworks.iter().enumerate() {
        let r = role_index[fw.role.as_str()];
        let v = &mut fw_alloc[f * k..(f + 1) * k];
        dims.accumulate(v, &fw.allocated);
        for (acc, x) in roles[r].alloc.iter_mut().zip(v.iter()) {
            *acc += x;
        }
        if !fw.suppressed {
            roles[r]
                .eligible
                .insert((order_key(dims.share(v)), fw_rank[f], f));
        }
    }

    let role_key = |role: &RoleState, r: usize| -> Key {
        (
            order_key(dims.share(&role.alloc) / role.weight),
            role.rank,
            r,
        )
    };
    // Only roles with a framework that could take an offer compete.
    let mut role_order: BTreeSet<Key> = roles
        .iter()
        .enumerate()
        .filter(|(_, role)| !role.eligible.is_empty())
        .map(|(r, role)| role_key(role, r))
        .collect();

    // Agents' data is scattered on the heap; reading it once in index order
    // (rather than in the shuffled order) keeps the hot loop below on flat
    // arrays: each agent's share vector (stride k) and whether it is allocatable.
    let (agent_vec, allocatable) = scan_agents(config, &dims, round.agents);

    let mut order: Vec<usize> = (0..round.agents.len()).collect();
    order.shuffle(rng);

    // winner[a] = the framework agent `a` is offered to.
    let mut winner: Vec<Option<usize>> = vec![None; round.agents.len()];
    let mut offers = 0;
    for a in order {
        if !allocatable[a] {
            continue;
        }
        let Some((rkey, fkey)) = pick(&role_order, &roles, round.is_filtered, a) else {
            continue;
        };
        let (r, f) = (rkey.2, fkey.2);
        winner[a] = Some(f);
        offers += 1;

        let offered = &agent_vec[a * k..(a + 1) * k];
        let v = &mut fw_alloc[f * k..(f + 1) * k];
        for (acc, x) in v.iter_mut().zip(offered) {
            *acc += x;
        }
        let new_fkey = (order_key(dims.share(v)), fkey.1, f);
        let role = &mut roles[r];
        for (acc, x) in role.alloc.iter_mut().zip(offered) {
            *acc += x;
        }
        role.eligible.remove(&fkey);
        role.eligible.insert(new_fkey);
        role_order.remove(&rkey);
        role_order.insert(role_key(&roles[r], r));
    }

    allocations(round.agents, &winner, offers)
}

/// Framework tie-break ranks: by id, then by index.
fn framework_ranks(frameworks: &[FrameworkSlot]) -> Vec<usize> {
    let mut by_id: Vec<usize> = (0..frameworks.len()).collect();
    by_id.sort_by(|&a, &b| frameworks[a].id.cmp(&frameworks[b].id).then(a.cmp(&b)));
    let mut fw_rank = vec![0usize; frameworks.len()];
    for (rank, &f) in by_id.iter().enumerate() {
        fw_rank[f] = rank;
    }
    fw_rank
}

/// The round's roles, in name order so the role index doubles as its
/// tie-break rank, and each role's index by name.
fn role_states<'a>(round: &Round<'a>, k: usize) -> (Vec<RoleState>, HashMap<&'a str, usize>) {
    let mut role_names: Vec<&str> = round.frameworks.iter().map(|f| f.role.as_str()).collect();
    role_names.sort_unstable();
    role_names.dedup();
    let role_index: HashMap<&str, usize> = role_names
        .iter()
        .enumerate()
        .map(|(i, name)| (*name, i))
        .collect();
    let roles = role_names
        .iter()
        .enumerate()
        .map(|(rank, name)| RoleState {
            weight: round
                .weights
                .get(*name)
                .copied()
                .filter(|w| w.is_finite() && *w > 0.0)
                .unwrap_or(1.0),
            rank,
            alloc: vec![0; k],
            eligible: BTreeSet::new(),
        })
        .collect();
    (roles, role_index)
}

/// Each agent's share vector (flat, stride k) and whether it is allocatable.
fn scan_agents(
    config: &AllocatorConfig,
    dims: &Dims,
    agents: &[AgentSlot],
) -> (Vec<i64>, Vec<bool>) {
    let k = dims.len();
    let mut agent_vec = vec![0i64; agents.len() * k];
    let allocatable = agents
        .iter()
        .enumerate()
        .map(|(a, agent)| {
            dims.scan_agent(config, &agent.available, &mut agent_vec[a * k..(a + 1) * k])
        })
        .collect();
    (agent_vec, allocatable)
}

/// The offers to make. Only the output copies `Resources`, again in index
/// order for locality, into a vector sized once (10,000 offers are worth
/// not reallocating).
fn allocations(agents: &[AgentSlot], winner: &[Option<usize>], offers: usize) -> Vec<Allocation> {
    let mut out = Vec::with_capacity(offers);
    for (a, f) in winner.iter().enumerate() {
        if let Some(framework) = *f {
            out.push(Allocation {
                framework,
                agent: a,
                resources: agents[a].available.clone(),
            });
        }
    }
    out
}

/// The lowest role that has an eligible, unfiltered framework for agent `a`,
/// and that framework. Filtered frameworks are skipped for this agent only:
/// the sets are not modified.
fn pick(
    role_order: &BTreeSet<Key>,
    roles: &[RoleState],
    is_filtered: &dyn Fn(usize, usize) -> bool,
    a: usize,
) -> Option<(Key, Key)> {
    role_order.iter().find_map(|rkey| {
        roles[rkey.2]
            .eligible
            .iter()
            .find(|fkey| !is_filtered(fkey.2, a))
            .map(|fkey| (*rkey, *fkey))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn res(text: &str) -> Resources {
        Resources::parse(text).expect("test resources parse")
    }

    fn agent(id: &str, text: &str) -> AgentSlot {
        AgentSlot {
            id: id.into(),
            available: res(text),
        }
    }

    fn fw(id: &str, role: &str, allocated: &str) -> FrameworkSlot {
        FrameworkSlot {
            id: id.into(),
            role: role.into(),
            allocated: res(allocated),
            suppressed: false,
        }
    }

    /// The cluster total: everything available plus everything allocated.
    fn total_of(agents: &[AgentSlot], frameworks: &[FrameworkSlot]) -> Resources {
        let mut t = Resources::new();
        agents.iter().for_each(|a| t.add(&a.available));
        frameworks.iter().for_each(|f| t.add(&f.allocated));
        t
    }

    fn run(
        agents: &[AgentSlot],
        frameworks: &[FrameworkSlot],
        weights: &HashMap<String, f64>,
        is_filtered: &dyn Fn(usize, usize) -> bool,
        seed: u64,
    ) -> Vec<Allocation> {
        let total = total_of(agents, frameworks);
        let round = Round {
            agents,
            frameworks,
            weights,
            total: &total,
            is_filtered,
        };
        allocate(
            &AllocatorConfig::default(),
            &round,
            &mut StdRng::seed_from_u64(seed),
        )
    }

    fn agents(n: usize, text: &str) -> Vec<AgentSlot> {
        (0..n).map(|i| agent(&format!("a{i}"), text)).collect()
    }

    #[test]
    fn dominant_share_is_the_largest_fraction() {
        let total = res("cpus:10;mem:1000;disk:100;ports:[1-10]");
        assert_eq!(dominant_share(&res("cpus:1;mem:500"), &total), 0.5);
        assert_eq!(dominant_share(&res("disk:100"), &total), 1.0);
        // Ports and scalars absent from the total do not count.
        assert_eq!(dominant_share(&res("ports:[1-10];gpus:4"), &total), 0.0);
        assert_eq!(dominant_share(&res("cpus:1"), &Resources::new()), 0.0);
    }

    #[test]
    fn single_framework_gets_all_agents() {
        let agents = agents(20, "cpus:4;mem:1024;ports:[31000-31010]");
        let frameworks = [fw("f", "*", "")];
        let out = run(&agents, &frameworks, &HashMap::new(), &|_, _| false, 1);
        assert_eq!(out.len(), 20);
        let mut seen: Vec<usize> = out.iter().map(|a| a.agent).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..20).collect::<Vec<_>>());
        for a in &out {
            assert_eq!(a.framework, 0);
            assert_eq!(a.resources, agents[a.agent].available);
        }
    }

    #[test]
    fn suppressed_framework_gets_nothing() {
        let agents = agents(5, "cpus:4;mem:1024");
        let mut lonely = fw("f", "*", "");
        lonely.suppressed = true;
        let out = run(
            &agents,
            &[lonely.clone()],
            &HashMap::new(),
            &|_, _| false,
            1,
        );
        assert!(out.is_empty());

        // Even with the lowest share, a suppressed framework is passed over.
        let frameworks = [lonely, fw("g", "*", "cpus:8")];
        let out = run(&agents, &frameworks, &HashMap::new(), &|_, _| false, 1);
        assert_eq!(out.len(), 5);
        assert!(out.iter().all(|a| a.framework == 1));
    }

    #[test]
    fn filtered_framework_is_skipped_for_that_agent_only() {
        let agents = agents(4, "cpus:4;mem:1024");
        // f0 has the lowest share throughout but declined agent 2.
        let frameworks = [fw("f0", "*", ""), fw("f1", "*", "cpus:1000")];
        let filtered = |f: usize, a: usize| f == 0 && a == 2;
        let out = run(&agents, &frameworks, &HashMap::new(), &filtered, 7);
        assert_eq!(out.len(), 4);
        for a in &out {
            let expected = if a.agent == 2 { 1 } else { 0 };
            assert_eq!(a.framework, expected, "agent {}", a.agent);
        }

        // With no one else around, the filtered agent stays unoffered.
        let out = run(&agents, &frameworks[..1], &HashMap::new(), &filtered, 7);
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|a| a.agent != 2 && a.framework == 0));
    }

    #[test]
    fn lowest_share_goes_first() {
        let agents = agents(1, "cpus:4;mem:1024");
        let frameworks = [
            fw("a", "*", "cpus:10"),
            fw("b", "*", "cpus:2"),
            fw("c", "*", "mem:4096"),
        ];
        let out = run(&agents, &frameworks, &HashMap::new(), &|_, _| false, 1);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].framework, 1);
    }

    #[test]
    fn roles_are_sorted_before_frameworks() {
        // Role x holds 6 cpus over two frameworks of 3; role y one framework
        // of 5. y's role share is lower, so it wins although its framework's
        // own share is higher than either of x's.
        let agents = agents(1, "cpus:4;mem:1024");
        let frameworks = [
            fw("x1", "x", "cpus:3"),
            fw("x2", "x", "cpus:3"),
            fw("y1", "y", "cpus:5"),
        ];
        let out = run(&agents, &frameworks, &HashMap::new(), &|_, _| false, 1);
        assert_eq!(out[0].framework, 2);
    }

    #[test]
    fn shares_update_within_a_round() {
        // Two equal frameworks and an even number of equal agents: each offer
        // raises the receiver's share, so they alternate and split evenly.
        let agents = agents(10, "cpus:4;mem:1024");
        let frameworks = [fw("a", "*", ""), fw("b", "*", "")];
        let out = run(&agents, &frameworks, &HashMap::new(), &|_, _| false, 3);
        let to_a = out.iter().filter(|a| a.framework == 0).count();
        assert_eq!((out.len(), to_a), (10, 5));
    }

    #[test]
    fn ties_break_by_framework_id_then_index() {
        let agents = agents(1, "cpus:4;mem:1024");
        let frameworks = [fw("b", "*", ""), fw("a", "*", ""), fw("a", "*", "")];
        let out = run(&agents, &frameworks, &HashMap::new(), &|_, _| false, 1);
        assert_eq!(out[0].framework, 1);
    }

    #[test]
    fn invalid_weights_count_as_one() {
        let agents = agents(1, "cpus:4;mem:1024");
        let frameworks = [fw("x", "x", "cpus:1"), fw("y", "y", "cpus:2")];
        for bad in [0.0, -3.0, f64::NAN, f64::INFINITY] {
            let weights = HashMap::from([("y".to_string(), bad)]);
            let out = run(&agents, &frameworks, &weights, &|_, _| false, 1);
            assert_eq!(out[0].framework, 0, "weight {bad}");
        }
        // A valid weight does change the order: 2/4 < 1/1.
        let weights = HashMap::from([("y".to_string(), 4.0)]);
        let out = run(&agents, &frameworks, &weights, &|_, _| false, 1);
        assert_eq!(out[0].framework, 1);
    }

    #[test]
    fn weighted_shares_converge() {
        // Roles a (weight 1) and b (weight 3), two frameworks each. Every
        // round each framework keeps 1 cpu (and a little memory) of each offer
        // it got and declines the rest, like a scheduler launching one task.
        let mut agents = agents(50, "cpus:64;mem:65536");
        let mut frameworks = vec![
            fw("a1", "a", ""),
            fw("a2", "a", ""),
            fw("b1", "b", ""),
            fw("b2", "b", ""),
        ];
        let weights = HashMap::from([("a".to_string(), 1.0), ("b".to_string(), 3.0)]);
        let total = total_of(&agents, &frameworks);
        let task = res("cpus:1;mem:256");
        let mut rng = StdRng::seed_from_u64(42);
        for _ in 0..40 {
            let round = Round {
                agents: &agents,
                frameworks: &frameworks,
                weights: &weights,
                total: &total,
                is_filtered: &|_, _| false,
            };
            let out = allocate(&AllocatorConfig::default(), &round, &mut rng);
            assert!(!out.is_empty());
            for a in out {
                frameworks[a.framework].allocated.add(&task);
                agents[a.agent].available.subtract(&task);
            }
        }
        let role_share = |role: &str| {
            let mut sum = Resources::new();
            for f in frameworks.iter().filter(|f| f.role == role) {
                sum.add(&f.allocated);
            }
            dominant_share(&sum, &total)
        };
        let ratio = role_share("b") / role_share("a");
        assert!((2.7..=3.3).contains(&ratio), "b/a share ratio {ratio}");
        // Within a role, frameworks stay level too.
        let cpus = |f: usize| frameworks[f].allocated.scalar("cpus");
        assert!((cpus(0) - cpus(1)).abs() <= 2.0 && (cpus(2) - cpus(3)).abs() <= 2.0);
    }

    #[test]
    fn min_allocatable_is_respected() {
        let agents = [
            agent("tiny", "cpus:0.005;mem:16;disk:1000;ports:[1-100]"),
            agent("cpus-only", "cpus:0.01"),
            agent("mem-only", "mem:32"),
            agent("ports-only", "ports:[31000-32000]"),
            agent("empty", ""),
        ];
        let out = run(
            &agents,
            &[fw("f", "*", "")],
            &HashMap::new(),
            &|_, _| false,
            1,
        );
        let mut got: Vec<usize> = out.iter().map(|a| a.agent).collect();
        got.sort_unstable();
        assert_eq!(got, vec![1, 2]);

        // Thresholds of zero still never produce an empty offer.
        let total = total_of(&agents, &[]);
        let zero = AllocatorConfig {
            min_allocatable_cpus: 0.0,
            min_allocatable_mem: 0.0,
        };
        let frameworks = [fw("f", "*", "")];
        let round = Round {
            agents: &agents,
            frameworks: &frameworks,
            weights: &HashMap::new(),
            total: &total,
            is_filtered: &|_, _| false,
        };
        let out = allocate(&zero, &round, &mut StdRng::seed_from_u64(1));
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|a| a.agent != 4));
    }

    #[test]
    fn empty_total_still_offers() {
        // No denominators: every share is 0 and ids decide, agent by agent.
        let agents = agents(3, "cpus:1;mem:64");
        let frameworks = [fw("b", "*", ""), fw("a", "*", "")];
        let round = Round {
            agents: &agents,
            frameworks: &frameworks,
            weights: &HashMap::new(),
            total: &Resources::new(),
            is_filtered: &|_, _| false,
        };
        let out = allocate(
            &AllocatorConfig::default(),
            &round,
            &mut StdRng::seed_from_u64(1),
        );
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|a| a.framework == 1));
    }

    #[test]
    fn no_frameworks_no_agents() {
        let out = run(&[], &[fw("f", "*", "")], &HashMap::new(), &|_, _| false, 1);
        assert!(out.is_empty());
        let out = run(
            &agents(3, "cpus:1;mem:64"),
            &[],
            &HashMap::new(),
            &|_, _| false,
            1,
        );
        assert!(out.is_empty());
    }

    /// Mesos' `allocatable()`, stated directly: something to offer, and at
    /// least the minimum cpus or the minimum mem. The round uses the
    /// single-pass `Dims::scan_agent`; the reference uses this.
    fn allocatable(config: &AllocatorConfig, available: &Resources) -> bool {
        !available.is_empty()
            && (available.scalar("cpus") >= config.min_allocatable_cpus
                || available.scalar("mem") >= config.min_allocatable_mem)
    }

    /// A direct O(agents × frameworks) statement of the same policy, on
    /// `Resources`, to check the fast path against.
    fn reference(config: &AllocatorConfig, round: &Round<'_>, seed: u64) -> Vec<Allocation> {
        let mut order: Vec<usize> = (0..round.agents.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(seed));
        let mut fw_alloc: Vec<Resources> = round
            .frameworks
            .iter()
            .map(|f| f.allocated.clone())
            .collect();
        let weight = |role: &str| {
            round
                .weights
                .get(role)
                .copied()
                .filter(|w| w.is_finite() && *w > 0.0)
                .unwrap_or(1.0)
        };
        let mut out = Vec::new();
        for a in order {
            let available = &round.agents[a].available;
            if !allocatable(config, available) {
                continue;
            }
            let role_share = |role: &str, fw_alloc: &[Resources]| {
                let mut sum = Resources::new();
                for (f, fw) in round.frameworks.iter().enumerate() {
                    if fw.role == role {
                        sum.add(&fw_alloc[f]);
                    }
                }
                dominant_share(&sum, round.total) / weight(role)
            };
            let best = (0..round.frameworks.len())
                .filter(|&f| !round.frameworks[f].suppressed && !(round.is_filtered)(f, a))
                .min_by(|&x, &y| {
                    let (fx, fy) = (&round.frameworks[x], &round.frameworks[y]);
                    role_share(&fx.role, &fw_alloc)
                        .total_cmp(&role_share(&fy.role, &fw_alloc))
                        .then_with(|| fx.role.cmp(&fy.role))
                        .then_with(|| {
                            dominant_share(&fw_alloc[x], round.total)
                                .total_cmp(&dominant_share(&fw_alloc[y], round.total))
                        })
                        .then_with(|| fx.id.cmp(&fy.id))
                        .then(x.cmp(&y))
                });
            if let Some(f) = best {
                fw_alloc[f].add(available);
                out.push(Allocation {
                    framework: f,
                    agent: a,
                    resources: available.clone(),
                });
            }
        }
        // The fast path reports in agent order; the decisions are the same.
        out.sort_by_key(|x| x.agent);
        out
    }

    fn arb_resources() -> impl Strategy<Value = Resources> {
        (
            0u32..4000,
            0u32..200,
            0u32..3,
            proptest::option::of(0u64..50),
        )
            .prop_map(|(milli_cpus, mem, disk, port)| {
                let mut r = Resources::new()
                    .with_scalar("cpus", f64::from(milli_cpus) / 1000.0)
                    .with_scalar("mem", f64::from(mem))
                    .with_scalar("disk", f64::from(disk));
                if let Some(p) = port {
                    r.add_ranges("ports", &mezzo_proto::RangeSet::from_ranges([(p, p + 3)]));
                }
                r
            })
    }

    #[derive(Debug, Clone)]
    struct Case {
        agents: Vec<AgentSlot>,
        frameworks: Vec<FrameworkSlot>,
        weights: HashMap<String, f64>,
        filters: Vec<bool>,
        seed: u64,
    }

    fn arb_case() -> impl Strategy<Value = Case> {
        let agents = proptest::collection::vec(arb_resources(), 0..14);
        let frameworks = proptest::collection::vec(
            (
                0u8..6,
                0u8..3,
                arb_resources(),
                proptest::bool::weighted(0.25),
            ),
            0..8,
        );
        let weights = proptest::collection::vec(
            proptest::option::of(prop_oneof![Just(0.5), Just(1.0), Just(2.0), Just(3.0)]),
            3,
        );
        let filters = proptest::collection::vec(proptest::bool::weighted(0.3), 1..120);
        (agents, frameworks, weights, filters, any::<u64>()).prop_map(
            |(agents, frameworks, weights, filters, seed)| Case {
                agents: agents
                    .into_iter()
                    .enumerate()
                    .map(|(i, available)| AgentSlot {
                        id: format!("agent-{i}"),
                        available,
                    })
                    .collect(),
                // Ids repeat on purpose: ties must still be deterministic.
                frameworks: frameworks
                    .into_iter()
                    .map(|(id, role, allocated, suppressed)| FrameworkSlot {
                        id: format!("fw-{id}"),
                        role: format!("r{role}"),
                        allocated,
                        suppressed,
                    })
                    .collect(),
                weights: weights
                    .into_iter()
                    .enumerate()
                    .filter_map(|(r, w)| w.map(|w| (format!("r{r}"), w)))
                    .collect(),
                filters,
                seed,
            },
        )
    }

    proptest! {
        #[test]
        fn round_invariants_hold(case in arb_case()) {
            let n_agents = case.agents.len();
            let filters = case.filters.clone();
            let is_filtered = move |f: usize, a: usize| filters[(f * n_agents + a) % filters.len()];
            let total = total_of(&case.agents, &case.frameworks);
            let round = Round {
                agents: &case.agents,
                frameworks: &case.frameworks,
                weights: &case.weights,
                total: &total,
                is_filtered: &is_filtered,
            };
            let config = AllocatorConfig::default();
            let out = allocate(&config, &round, &mut StdRng::seed_from_u64(case.seed));

            let mut offered = vec![false; n_agents];
            for a in &out {
                prop_assert!(!offered[a.agent], "agent {} offered twice", a.agent);
                offered[a.agent] = true;
                prop_assert_eq!(&a.resources, &case.agents[a.agent].available);
                prop_assert!(!case.frameworks[a.framework].suppressed);
                prop_assert!(!is_filtered(a.framework, a.agent));
            }
            for (a, agent) in case.agents.iter().enumerate() {
                let eligible = case
                    .frameworks
                    .iter()
                    .enumerate()
                    .any(|(f, fw)| !fw.suppressed && !is_filtered(f, a));
                let should = eligible && allocatable(&config, &agent.available);
                prop_assert_eq!(offered[a], should, "agent {}", a);
            }

            prop_assert_eq!(out, reference(&config, &round, case.seed));
        }
    }
}
