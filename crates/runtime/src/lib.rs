//! The container runtime built into skiff (DESIGN.md §4): the content-addressed image store
//! (`images`) and the per-container shim (`shim`), the single-threaded process that is the
//! only place libcontainer is ever called.

pub mod images;
pub mod shim;
