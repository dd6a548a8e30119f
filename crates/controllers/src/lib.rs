//! The control loops that act on the API. Each controller lives in its own folder, talks
//! to the API server only through the `kube` client (never the store), and is a
//! level-triggered reconcile: read the desired and observed state, decide, then act.

pub mod namespace;
