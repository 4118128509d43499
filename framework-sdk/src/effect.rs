//! What a framework's pure core asks its driver to do.
//!
//! Framework cores (Marathon's, batch's) take events and a clock and return
//! [`Effect`]s; their actor shells perform them with [`Effect::perform`], in
//! order. Keeping the cores free of the driver keeps them deterministic and
//! unit-testable.

use crate::{v1, Driver, SdkError};

/// One call a framework core wants made to the master.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Accept an offer with these tasks (one `Launch` operation).
    Launch {
        /// Offer id.
        offer_id: String,
        /// Tasks.
        tasks: Vec<v1::TaskInfo>,
        /// Refuse filter for the offer's unused resources (the master's
        /// default when `None`).
        refuse_seconds: Option<f64>,
    },
    /// Decline offers for this many seconds.
    Decline {
        /// Offer ids.
        offer_ids: Vec<String>,
        /// Refuse filter.
        refuse_seconds: f64,
    },
    /// Kill a task.
    Kill {
        /// Task id.
        task_id: String,
        /// Agent id.
        agent_id: String,
        /// Grace period override, seconds.
        grace: Option<f64>,
    },
    /// Resume offers.
    Revive,
    /// Stop offers.
    Suppress,
    /// Ask for task states: `(task id, agent id)` pairs, empty for implicit
    /// reconciliation of every task.
    Reconcile(Vec<(String, String)>),
}

impl Effect {
    /// Makes the call. The caller decides what a failure means (a core may
    /// want to hear that a launch failed).
    pub async fn perform(self, driver: &Driver) -> Result<(), SdkError> {
        match self {
            Effect::Launch {
                offer_id,
                tasks,
                refuse_seconds,
            } => {
                let filters = refuse_seconds.map(|s| v1::Filters {
                    refuse_seconds: Some(s),
                });
                driver.launch(vec![offer_id], tasks, filters).await
            }
            Effect::Decline {
                offer_ids,
                refuse_seconds,
            } => driver.decline(offer_ids, Some(refuse_seconds)).await,
            Effect::Kill {
                task_id,
                agent_id,
                grace,
            } => driver.kill(&task_id, &agent_id, grace).await,
            Effect::Revive => driver.revive(Vec::new()).await,
            Effect::Suppress => driver.suppress(Vec::new()).await,
            Effect::Reconcile(tasks) => driver.reconcile(tasks).await,
        }
    }

    /// The task ids a `Launch` carries (empty for other effects), for
    /// reporting a failed launch back to the core.
    pub fn launched_task_ids(&self) -> Vec<String> {
        match self {
            Effect::Launch { tasks, .. } => tasks.iter().map(|t| t.task_id.clone()).collect(),
            _ => Vec::new(),
        }
    }
}
