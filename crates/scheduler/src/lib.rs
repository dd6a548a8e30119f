//! The pod scheduler (upstream kube-scheduler's default profile), an API client like any
//! other: it reads Pods, Nodes, Namespaces, PersistentVolumeClaims, PersistentVolumes and
//! StorageClasses from the shared informers and writes only
//! through the API (pods/binding, pod status, events).
//!
//! - [`queue`]: active / back-off / unschedulable sub-queues.
//! - [`framework`]: the snapshot, Filter/Score traits, [`framework::schedule`] (a pure
//!   decision) and the FailedScheduling message.
//! - [`plugins`]: one file per upstream plugin.
//! - [`cache`]: pods counted per node, including *assumed* pods whose binding is in flight.
//! - [`selector_index`]: matching pods per node for the selectors spreading asks about,
//!   kept exact incrementally in the snapshot.
//! - `run`: the loop that feeds the cache and queue from the informers, decides, and acts
//!   (binds asynchronously, many at once; reports failures).
//!
//! Decisions that differ from upstream: no preemption (a node where evicting
//! lower-priority pods would help is reported as "No preemption victims found for incoming
//! pod"); of the volume plugins only VolumeBinding exists (no cloud volume limits, no
//! VolumeZone, no volume capacity scoring).

pub mod cache;
pub mod framework;
pub mod plugins;
pub mod queue;
pub mod resources;
mod run;
pub mod selector_index;

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;

/// The name pods ask for in `spec.schedulerName` and the events' reporting controller.
pub const SCHEDULER_NAME: &str = "default-scheduler";

/// Subscribe to the informers the scheduler reads (synchronously, so that a later
/// `Factory::start` delivers their first list to it) and return the scheduling loop.
/// Its requests go through a bounded number of slots (`controllers::in_flight`): the
/// binds in flight (bounded by the scheduler itself) plus as many again for their Scheduled
/// events and status writes, so events never hold back binds but cannot grow the
/// connection pool without bound either.
pub fn start(client: kube::Client, informers: &Arc<informers::Factory>) -> BoxFuture<'static, ()> {
    let client = controllers::in_flight::limit(client, 2 * run::MAX_BINDS_IN_FLIGHT);
    run::Scheduler::new(client, informers).run().boxed()
}
