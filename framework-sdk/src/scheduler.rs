//! The [`Scheduler`] trait: what a framework implements.

use async_trait::async_trait;
use mezzo_proto::v1;

use crate::Driver;

/// A framework's scheduler: the driver calls these as events arrive from the master.
///
/// Callbacks run one at a time, in the order the master sent the events, on the task
/// that runs [`SchedulerDriver::run`](crate::SchedulerDriver::run); the next event is
/// not delivered until the current callback returns, so keep them short (spawn long
/// work). Every callback gets the [`Driver`] to answer with (accept, decline, kill...).
/// Only [`Scheduler::offers`] must be implemented; the others default to doing nothing.
#[async_trait]
pub trait Scheduler: Send + 'static {
    /// The master accepted the subscription (first time or after a reconnection /
    /// master failover) and assigned `framework_id`. After a re-subscription this is a
    /// good place to [`reconcile`](Driver::reconcile).
    async fn subscribed(
        &mut self,
        _driver: &Driver,
        _framework_id: &str,
        _master: &v1::MasterInfo,
    ) {
    }

    /// Resources offered to the framework. Answer each offer with
    /// [`Driver::accept`] / [`Driver::launch`] or [`Driver::decline`]; an offer left
    /// unanswered holds its resources until the master rescinds it.
    async fn offers(&mut self, driver: &Driver, offers: Vec<v1::Offer>);

    /// The offer `offer_id` is no longer valid (its agent left, or it timed out).
    async fn rescinded(&mut self, _driver: &Driver, _offer_id: &str) {}

    /// A task's status changed. If the update carries a `uuid` and
    /// [`DriverConfig::auto_acknowledge`](crate::DriverConfig::auto_acknowledge) is on,
    /// the driver acknowledges it once this returns; updates may be redelivered (at least
    /// once), so handle them idempotently.
    async fn update(&mut self, _driver: &Driver, _status: &v1::TaskStatus) {}

    /// An executor on `agent_id` exited (`status` is its exit status when known), or an
    /// agent was lost (empty `executor_id`).
    async fn failure(
        &mut self,
        _driver: &Driver,
        _agent_id: &str,
        _executor_id: &str,
        _status: Option<i32>,
    ) {
    }

    /// The master reported an error (an `Error` event), or refused the subscription for
    /// good, in which case [`SchedulerDriver::run`](crate::SchedulerDriver::run) returns
    /// an error right after this.
    async fn error(&mut self, _driver: &Driver, _message: &str) {}

    /// The subscription was lost (stream closed, failed, or heartbeats missed). The
    /// driver re-subscribes on its own with backoff; [`Scheduler::subscribed`] follows
    /// when it succeeds. Outstanding offers are void from now on.
    async fn disconnected(&mut self, _driver: &Driver) {}
}
