//! The real node's own facts and objects (the simulated fleet has its own in
//! `simulated/`): what the machine offers, read from the host.

pub mod host;
pub mod object;
pub mod register;
