//! The real node's own facts and objects (the simulated fleet has its own in
//! `simulated/`): what the machine offers, read from the host; its pressure conditions
//! (`pressure`); its images in use and their garbage collection (`image_gc`); whether its
//! pod network is ready (`network`).

pub mod host;
pub mod image_gc;
pub mod network;
pub mod object;
pub mod pressure;
pub mod register;
