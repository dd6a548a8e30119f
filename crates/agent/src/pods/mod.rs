//! Real pods on a real node: from a pod bound to this node to containers running under
//! their shims, and back to the status upstream's kubelet reports.

pub mod backoff;
pub mod cleanup;
pub mod command;
pub mod container;
pub mod context;
pub mod decide;
pub mod dns_config;
pub mod downward;
pub mod env;
pub mod hooks;
pub mod layout;
pub mod manager;
pub mod network;
pub mod object_cache;
pub mod observe;
pub mod probes;
pub mod resources;
pub mod sandbox;
pub mod services;
pub mod volumes;
pub mod worker;
