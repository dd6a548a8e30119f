//! The per-container shim: a single-threaded process that runs one container with libcontainer.
//!
//! The agent never calls libcontainer itself (DESIGN.md §4): [`ShimClient::start`] re-executes
//! a binary as `<binary> container-shim <state_dir>`, whose `main` calls [`run_shim`] before
//! any thread exists. The shim detaches, runs the container, writes its output to the CRI log,
//! records the exit in the state directory and cleans up. The OCI bundle it writes
//! (`<state_dir>/bundle/config.json`) is in the standard layout, so an external runtime such
//! as runc could be chosen for the same bundle later. While the container runs, its shim
//! serves attach (live output, stdin, terminal sizes) on `<state_dir>/attach.sock`
//! ([`attach`] is the protocol, used by the agent).

pub mod attach;
mod cgroup;
mod client;
mod cri_log;
mod executor;
mod pidfd;
mod process;
mod spec;
mod state;
mod streams;
mod template;
mod zygote;

pub use client::{ClientError, KillOutcome, RunningContainer, ShimClient, Signal};
pub use pidfd::PidFd;
pub use process::{run_shim, SHIM_SUBCOMMAND};
pub use spec::{
    BindMount, ContainerConfig, NamespacePaths, Resources, SpecError, StdioConfig, UserIds,
    DEFAULT_CAPABILITIES, DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS,
};
pub use state::{
    process_start_time, read_json, write_json_atomic, write_json_replace, ExitRecord, HiddenMounts,
    StartErrorKind, StartedRecord,
};
pub use streams::STDIN_NOT_OPEN;
