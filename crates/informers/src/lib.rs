//! Shared informers and work queues for the components that run as API clients
//! (controllers, scheduler, simulated nodes).
//!
//! An [`Informer`] is one list+watch of one kind, cluster-wide, kept in an in-memory cache
//! and fanned out to every subscriber as [`Change`]s. Many controllers watch pods; with
//! 150,000 pods a cache per controller would cost gigabytes, so a [`Factory`] hands every
//! component the same informer per kind. A [`WorkQueue`] turns changes into keys to
//! reconcile: a key queued twice before a worker takes it is reconciled once, failures are
//! retried with per-key exponential back-off, and delayed re-checks are `add_after`.
//!
//! kube-runtime's shared reflector streams drop deletions and can stall on a missing
//! object, so this crate keeps its own small cache instead.

mod compact;
mod fanout;
mod informer;
mod lean;
mod workqueue;

pub use fanout::Subscription;
pub use informer::{key_of, Cacheable, Change, Factory, Informer, ObjectKey};
pub use lean::Lean;
pub use workqueue::WorkQueue;
