//! The Kubernetes resource model that skiff serves, as pure functions over JSON objects:
//! which resources exist (`registry`), how they are defaulted (`defaults`) and validated
//! (`validation`), how `kubectl get` prints them (`table`), how they are selected
//! (`selectors`, `fields`), patched (`strategic_merge`) and described (`openapi`).
//! No I/O and no async here: the apiserver owns side effects.

pub mod conversion;
pub mod cron;
pub mod defaults;
pub mod fields;
pub mod managed_fields;
pub mod openapi;
pub mod protobuf;
pub mod quantity;
pub mod registry;
pub mod selectors;
pub mod strategic_merge;
pub mod table;
pub mod validation;
pub mod volumes;
