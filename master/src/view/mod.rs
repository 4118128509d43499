//! Read-side views of the master: what HTTP readers (`/master/state`,
//! `/metrics/snapshot`, the operator API, the dashboard) see.
//!
//! The actor publishes a typed [`Snapshot`] whose maps are persistent
//! (`imbl`) clones of the core's, so publishing costs O(1) and never copies
//! the cluster; JSON is rendered here, on the reader's task, on read.

mod docs;
mod metrics;
mod operator;
mod state;
mod state_bytes;
mod v1_json;

use std::sync::Arc;

use imbl::{OrdMap, Vector};
use mezzo_proto::v1;

use crate::config::MasterConfig;
use crate::state::{Agent, Framework, Master, Metrics, OfferRec};

pub(crate) use docs::{
    frameworks_doc, roles_doc, slaves_doc, state_summary_doc, tasks_doc, TasksQuery,
};
pub(crate) use metrics::metrics_json;
pub(crate) use operator::operator_response;
pub(crate) use state::{flags_json, master_info_json, state_json, StateJson};
pub(crate) use state_bytes::state_bytes;
pub(crate) use v1_json::{attribute_json, id_json, resource_json, status_json};

/// What the actor publishes for HTTP readers.
#[derive(Clone, Default)]
pub(crate) struct Snapshot {
    /// Whether this master leads.
    pub leading: bool,
    /// The leader's `host:port`, if known.
    pub leader: Option<String>,
    pub info: v1::MasterInfo,
    pub config: Arc<MasterConfig>,
    pub start_time: f64,
    pub elected_time: Option<f64>,
    /// Wall-clock seconds when the snapshot was taken.
    pub taken_at: f64,
    pub agents: OrdMap<String, Agent>,
    pub frameworks: OrdMap<String, Framework>,
    pub completed_frameworks: Vector<Framework>,
    pub offers: imbl::HashMap<String, OfferRec>,
    pub metrics: Metrics,
}

impl Snapshot {
    /// The master's state now, sharing its structure.
    pub(crate) fn of(m: &Master) -> Self {
        Snapshot {
            leading: m.leading,
            leader: m.leader_hint.clone(),
            info: m.info.clone(),
            config: m.config.clone(),
            start_time: m.start_time,
            elected_time: m.elected_time,
            taken_at: m.wall(),
            agents: m.agents.clone(),
            frameworks: m.frameworks.clone(),
            completed_frameworks: m.completed_frameworks.clone(),
            offers: m.offers.clone(),
            metrics: m.metrics.clone(),
        }
    }

    /// The Mesos-shaped `/master/state` document as bytes, written by hand
    /// where it is big (tasks, frameworks): faster than serializing the
    /// [`StateJson`] view (`master/benches/state.rs`), same bytes.
    pub(crate) fn state_bytes(&self) -> serde_json::Result<Vec<u8>> {
        state_bytes(self)
    }

    /// The `/metrics/snapshot` document.
    pub(crate) fn metrics(&self) -> serde_json::Value {
        metrics_json(self)
    }
}

/// Entry points for the benchmarks in `master/benches/`; not an API.
#[doc(hidden)]
pub mod bench_api {
    use super::{state_json, Snapshot, StateJson};
    use crate::state::Master;

    /// `/master/state` of `master` by the hand-written writer.
    pub fn state_bytes(master: &Master) -> Vec<u8> {
        Snapshot::of(master).state_bytes().unwrap_or_default()
    }

    /// The same bytes through the `Serialize` view.
    pub fn state_bytes_serde(master: &Master) -> Vec<u8> {
        let snap = Snapshot::of(master);
        serde_json::to_vec(&StateJson(&snap)).unwrap_or_default()
    }

    /// The same document through the former `serde_json::Value` tree, for
    /// comparison.
    pub fn state_bytes_via_value(master: &Master) -> Vec<u8> {
        let snap = Snapshot::of(master);
        serde_json::to_vec(&state_json(&snap)).unwrap_or_default()
    }
}
