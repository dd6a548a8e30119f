//! Content-addressed image store: references, blobs, layer unpacking, import.
//!
//! - [`reference`]: image names normalised as upstream (`nginx` = `docker.io/library/nginx:latest`).
//! - [`digest`]: `sha256:` digests and hashing readers.
//! - [`oci`]: manifest / index / config documents, host platform choice.
//! - [`unpack`]: one layer tar into its own directory, overlayfs whiteouts, no escapes.
//! - [`store`]: the store on disk (blobs, unpacked layers, name index) and its API.
//! - [`import`]: docker-archive and OCI-layout tarballs into the store.
//! - [`pull`]: images from OCI / Docker v2 registries into the store.

pub mod digest;
pub mod import;
pub mod oci;
pub mod pull;
pub mod reference;
pub mod store;
pub mod unpack;

pub use digest::Digest;
pub use oci::ImageConfig;
pub use pull::{pull, Credentials, Progress};
pub use reference::{Reference, ReferenceError};
pub use store::{Image, ImageStore, Removed, StoreError};
