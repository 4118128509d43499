//! Offer matching: fit tasks into offers and build their `TaskInfo`s.
//!
//! ```
//! use mezzo_sdk::matching::{task_info, OfferSpace, TaskResources};
//! use mezzo_sdk::{v1, Resources};
//!
//! let offer = v1::Offer {
//!     id: "o1".into(),
//!     agent_id: "a1".into(),
//!     resources: Resources::parse("cpus:1;mem:256;ports:[31000-31010]").unwrap().to_proto(),
//!     ..Default::default()
//! };
//! let need = TaskResources { cpus: 0.5, mem: 128.0, disk: 0.0, ports: 1 };
//! let mut space = OfferSpace::new(&offer);
//! let mut tasks = Vec::new();
//! while let Some(resources) = space.try_fit(&need) {
//!     let id = format!("web-{}", tasks.len());
//!     tasks.push(task_info(&id, "web", space.agent_id(), "exec ./serve", &resources));
//! }
//! assert_eq!(tasks.len(), 2); // cpus run out first
//! ```

use mezzo_proto::resources::attribute_text;
use mezzo_proto::{v1, Resources};

/// What one task needs. Scalars are in Mesos units (cpus, MB of mem and disk);
/// `ports` is how many ports to take from the offer's `ports` ranges.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TaskResources {
    /// CPU shares.
    pub cpus: f64,
    /// Memory in MB.
    pub mem: f64,
    /// Disk in MB.
    pub disk: f64,
    /// Number of host ports.
    pub ports: u64,
}

impl TaskResources {
    /// A task needing `cpus` and `mem` MB, no disk and no ports.
    pub fn new(cpus: f64, mem: f64) -> Self {
        TaskResources {
            cpus,
            mem,
            ..Default::default()
        }
    }
}

/// The part of one offer not yet given to tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct OfferSpace {
    offer_id: String,
    agent_id: String,
    hostname: String,
    remaining: Resources,
}

impl OfferSpace {
    /// The whole of `offer` (its unreserved resources) is available.
    pub fn new(offer: &v1::Offer) -> Self {
        OfferSpace {
            offer_id: offer.id.clone(),
            agent_id: offer.agent_id.clone(),
            hostname: offer.hostname.clone(),
            remaining: Resources::from_proto(&offer.resources),
        }
    }

    /// A space over plain resources (no offer behind it), e.g. for planning.
    pub fn from_resources(resources: Resources) -> Self {
        OfferSpace {
            offer_id: String::new(),
            agent_id: String::new(),
            hostname: String::new(),
            remaining: resources,
        }
    }

    /// Id of the offer (empty for [`OfferSpace::from_resources`]).
    pub fn offer_id(&self) -> &str {
        &self.offer_id
    }

    /// Agent the offer is on: goes into each `TaskInfo.agent_id`.
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// Hostname of the offer's agent.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// What is left.
    pub fn remaining(&self) -> &Resources {
        &self.remaining
    }

    /// If `need` fits in what is left, takes it and returns the exact resources to put
    /// in the task's `TaskInfo` (`cpus`, `mem`, `disk` as asked, ports the lowest free
    /// ones); otherwise returns `None` and takes nothing. Negative or non-finite
    /// amounts never fit.
    pub fn try_fit(&mut self, need: &TaskResources) -> Option<Resources> {
        let amounts = [("cpus", need.cpus), ("mem", need.mem), ("disk", need.disk)];
        if amounts.iter().any(|(_, v)| !v.is_finite() || *v < 0.0) {
            return None;
        }
        let mut want = Resources::new();
        for (name, v) in amounts {
            want.add_scalar(name, v);
        }
        if need.ports > 0 {
            let ports = self.remaining.ranges("ports").take(need.ports)?;
            want.add_ranges("ports", &ports);
        }
        if !self.remaining.contains(&want) {
            return None;
        }
        self.remaining.subtract(&want);
        Some(want)
    }
}

/// Every port in `resources`' `ports` ranges, lowest first (`PORT0`, `PORT1`, ...).
pub fn ports_of(resources: &Resources) -> Vec<u64> {
    resources.ranges("ports").values().collect()
}

/// A `TaskInfo` that runs `cmd` with `sh -c` on `agent_id`, using `resources`
/// (typically what [`OfferSpace::try_fit`] returned).
pub fn task_info(
    task_id: &str,
    name: &str,
    agent_id: &str,
    cmd: &str,
    resources: &Resources,
) -> v1::TaskInfo {
    v1::TaskInfo {
        name: name.to_string(),
        task_id: task_id.to_string(),
        agent_id: agent_id.to_string(),
        resources: resources.to_proto(),
        command: Some(v1::CommandInfo {
            value: cmd.to_string(),
            shell: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The value of the offer's agent attribute `name` as text (`rack:r1` gives `r1`,
/// `level:3` gives `3`), for placement constraints.
pub fn offer_attribute(offer: &v1::Offer, name: &str) -> Option<String> {
    offer
        .attributes
        .iter()
        .find(|a| a.name == name)
        .map(attribute_text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mezzo_proto::resources::parse_attributes;
    use mezzo_proto::RangeSet;

    fn offer(resources: &str) -> v1::Offer {
        v1::Offer {
            id: "o1".into(),
            agent_id: "a1".into(),
            hostname: "h1".into(),
            resources: Resources::parse(resources).unwrap().to_proto(),
            attributes: parse_attributes("rack:r1;level:3").unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn fits_scalars_and_subtracts_them() {
        let mut space = OfferSpace::new(&offer("cpus:1;mem:512;disk:100"));
        assert_eq!(
            (space.offer_id(), space.agent_id(), space.hostname()),
            ("o1", "a1", "h1")
        );
        let need = TaskResources {
            cpus: 0.3,
            mem: 100.0,
            disk: 10.0,
            ports: 0,
        };
        let got = space.try_fit(&need).unwrap();
        assert_eq!(got, Resources::parse("cpus:0.3;mem:100;disk:10").unwrap());
        assert_eq!(
            space.remaining(),
            &Resources::parse("cpus:0.7;mem:412;disk:90").unwrap()
        );
    }

    #[test]
    fn several_tasks_until_the_scarcest_resource_runs_out() {
        let mut space = OfferSpace::new(&offer("cpus:1;mem:1000"));
        let need = TaskResources::new(0.1, 300.0);
        let fitted: Vec<_> = std::iter::from_fn(|| space.try_fit(&need)).collect();
        assert_eq!(fitted.len(), 3, "mem allows 3, cpus 10");
        assert_eq!(space.remaining().scalar("cpus"), 0.7);
        assert_eq!(space.remaining().scalar("mem"), 100.0);
        // A smaller task still fits in what is left.
        assert!(space.try_fit(&TaskResources::new(0.7, 100.0)).is_some());
        assert!(space.remaining().is_empty());
        assert!(space.try_fit(&TaskResources::new(0.001, 0.0)).is_none());
    }

    #[test]
    fn insufficient_resources_take_nothing() {
        let mut space = OfferSpace::new(&offer("cpus:1;mem:128;ports:[31000-31001]"));
        let before = space.clone();
        for need in [
            TaskResources::new(2.0, 1.0),
            TaskResources::new(0.5, 129.0),
            TaskResources {
                disk: 1.0,
                ..TaskResources::new(0.1, 1.0)
            },
            TaskResources {
                ports: 3,
                ..TaskResources::new(0.1, 1.0)
            },
            TaskResources::new(-1.0, 1.0),
            TaskResources::new(f64::NAN, 1.0),
        ] {
            assert_eq!(space.try_fit(&need), None, "{need:?}");
            assert_eq!(space, before, "{need:?} took something");
        }
    }

    #[test]
    fn ports_are_picked_lowest_first_across_ranges() {
        let mut space = OfferSpace::new(&offer("cpus:4;mem:1024;ports:[31000-31001,31005-31010]"));
        let need = TaskResources {
            ports: 3,
            ..TaskResources::new(0.1, 10.0)
        };
        let first = space.try_fit(&need).unwrap();
        assert_eq!(ports_of(&first), vec![31000, 31001, 31005]);
        let second = space.try_fit(&need).unwrap();
        assert_eq!(ports_of(&second), vec![31006, 31007, 31008]);
        assert_eq!(
            space.remaining().ranges("ports"),
            RangeSet::from_ranges([(31009, 31010)])
        );
        assert!(space.try_fit(&need).is_none(), "only two ports left");
        let third = space
            .try_fit(&TaskResources {
                ports: 2,
                ..TaskResources::new(0.1, 10.0)
            })
            .unwrap();
        assert_eq!(ports_of(&third), vec![31009, 31010]);
        assert!(ports_of(space.remaining()).is_empty());
    }

    #[test]
    fn builds_a_shell_task_info() {
        let resources = Resources::parse("cpus:0.1;mem:32;ports:[31000-31000]").unwrap();
        let t = task_info("t-1", "launch", "a1", "echo hello", &resources);
        assert_eq!(
            (t.task_id.as_str(), t.name.as_str(), t.agent_id.as_str()),
            ("t-1", "launch", "a1")
        );
        let cmd = t.command.unwrap();
        assert!(cmd.shell);
        assert_eq!(cmd.value, "echo hello");
        assert_eq!(Resources::from_proto(&t.resources), resources);
    }

    #[test]
    fn reads_offer_attributes() {
        let o = offer("cpus:1");
        assert_eq!(offer_attribute(&o, "rack").as_deref(), Some("r1"));
        assert_eq!(offer_attribute(&o, "level").as_deref(), Some("3"));
        assert_eq!(offer_attribute(&o, "zone"), None);
    }
}
