//! Real pods on a real node: from a pod bound to this node to containers running under
//! their shims, and back to the status upstream's kubelet reports.

pub mod backoff;
pub mod command;
pub mod decide;
pub mod downward;
pub mod env;
pub mod layout;
pub mod observe;
pub mod resources;
pub mod container;
pub mod context;
pub mod manager;
pub mod sandbox;
pub mod volumes;
pub mod worker;
pub mod cleanup;
pub mod probes;
pub mod hooks;
