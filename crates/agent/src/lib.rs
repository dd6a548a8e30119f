//! The node agent: skiff's kubelet. It registers its Node, keeps the node's Lease renewed
//! and makes the pods bound to the node real, reporting their status as upstream's kubelet
//! does.
//!
//! Today only the simulated mode exists ([`simulated`]): many fake nodes in one process
//! that report pods as running without running anything (kwok's idea), so the control
//! plane can be tested and measured at scale on one small machine. The real kubelet (pod
//! workers, runtime, volumes, probes) arrives in this crate later and will share its status
//! reporting conventions.

pub mod api;
pub mod node;
pub mod pods;
pub mod simulated;
