//! Real pods on a real node: from a pod bound to this node to containers running under
//! their shims, and back to the status upstream's kubelet reports.

pub mod command;
pub mod downward;
pub mod env;
pub mod layout;
pub mod resources;
