//! The container runtime built into skiff (DESIGN.md §4): the content-addressed image store
//! (`images`) and the per-container shim (`shim`), the single-threaded process that is the
//! only place libcontainer is ever called; and the root-only host primitives a pod sandbox is
//! built from (`sandbox`: network namespaces, overlay and volume mounts, cgroup cleanup).

pub mod exec;
pub mod images;
pub mod sandbox;
pub mod shim;
