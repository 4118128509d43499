//! `mezzo-sdk`: what a Mezzo framework author depends on.
//!
//! A framework is a [`Scheduler`]: async callbacks for the events the master sends
//! (subscribed, offers, rescinded, update, failure, error, disconnected). A
//! [`SchedulerDriver`] connects to the master over gRPC, subscribes, delivers events in
//! order, acknowledges reliable status updates, survives master failover (it
//! re-subscribes with its framework id, with backoff, and fences stale masters by
//! leadership epoch), and hands out [`Driver`] handles to answer with: accept / launch,
//! decline, revive, suppress, kill, acknowledge, reconcile, teardown, stop. The
//! [`matching`] module fits tasks into offers and builds `TaskInfo`s.
//! The [`constraints`] module evaluates Marathon's placement operators (UNIQUE,
//! CLUSTER, GROUP_BY, LIKE, UNLIKE, MAX_PER, IS) for every framework.
//! The [`election`] module gives a framework high availability (its state in
//! ZooKeeper or a local directory, leader election among its instances, fenced writes).
//! The [`store`] module keeps a framework's durable state (one versioned key-value
//! [`Store`] trait; files, ZooKeeper, memory).
//!
//! The protocol types are re-exported as [`v1`] (from `mezzo-proto`), together with
//! [`Resources`] and [`RangeSet`], so a framework needs no other Mezzo crate.
//!
//! ```no_run
//! use mezzo_sdk::matching::{task_info, OfferSpace, TaskResources};
//! use mezzo_sdk::{async_trait, v1, Driver, DriverConfig, Scheduler, SchedulerDriver};
//!
//! /// Runs one `echo` task, then tears the framework down.
//! struct Hello {
//!     launched: bool,
//! }
//!
//! #[async_trait]
//! impl Scheduler for Hello {
//!     async fn offers(&mut self, driver: &Driver, offers: Vec<v1::Offer>) {
//!         for offer in offers {
//!             let mut space = OfferSpace::new(&offer);
//!             match space.try_fit(&TaskResources::new(0.1, 32.0)) {
//!                 Some(resources) if !self.launched => {
//!                     let task = task_info("hello-1", "hello", space.agent_id(), "echo hello", &resources);
//!                     self.launched = driver.launch(vec![offer.id], vec![task], None).await.is_ok();
//!                 }
//!                 _ => {
//!                     let _ = driver.decline(vec![offer.id], Some(5.0)).await;
//!                 }
//!             }
//!         }
//!     }
//!
//!     async fn update(&mut self, driver: &Driver, status: &v1::TaskStatus) {
//!         if mezzo_sdk::task_state(status).is_terminal() {
//!             let _ = driver.teardown().await; // makes `run` return
//!         }
//!     }
//! }
//!
//! # async fn example() -> Result<(), mezzo_sdk::SdkError> {
//! let framework = v1::FrameworkInfo { name: "hello".into(), ..Default::default() };
//! let driver = SchedulerDriver::new(DriverConfig::new("127.0.0.1:5050", framework))?;
//! let handle = driver.driver(); // e.g. to call `handle.stop()` on Ctrl-C
//! let _scheduler = driver.run(Hello { launched: false }).await?;
//! # drop(handle);
//! # Ok(())
//! # }
//! ```
//!
//! Invariants: the SDK never acknowledges an update without a `uuid` (the master
//! generates those and they must not be acked); callbacks never run concurrently; and
//! nothing a master sends can make the driver panic.
//!
//! A complete framework, `examples/launch.rs`, launches N shell tasks and reports their
//! outcome; run it with `cargo run -p mezzo-sdk --example launch -- --help`.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs)]

mod config;
pub mod constraints;
mod driver;
pub mod effect;
pub mod election;
mod error;
pub mod matching;
mod scheduler;
pub mod store;

pub use async_trait::async_trait;
pub use config::{DriverConfig, LEADER_METADATA_KEY};
pub use driver::{run, Driver, SchedulerDriver};
pub use effect::Effect;
pub use error::SdkError;
pub use mezzo_proto::{task_state, v1, RangeSet, Resources};
pub use scheduler::Scheduler;
pub use store::{
    key_segment, FileStore, FrameworkZk, MemoryStore, Store, StoreError, Versioned, ZooKeeperStore,
};
