//! The node's images as kubelet's image manager sees them: which containers use each
//! image, when each was last used, and image garbage collection.
//!
//! - In use: an image is in use while an attempt of a container on this node (running or
//!   kept, i.e. its pod directory still exists) records it; `skiff image rm` refuses those.
//! - Last used: `<agent-dir>/image-usage/<manifest hex>` is touched whenever a container
//!   starts with the image (its mtime is the time), so it survives agent restarts. An image
//!   never used sorts before every used one, as kubelet's zero lastUsed.
//! - First detected: the mtime of the image's manifest blob, i.e. when it was pulled or
//!   imported.
//! - Dangling images (the store keeps an image whose tag moved on, named by digest, as a
//!   container may still run from it): removed as soon as no container uses them, after
//!   every pull and every GC run, whatever the thresholds.
//! - Garbage collection (kubelet's `realImageGCManager`): every 5 minutes, when the image
//!   filesystem's usage reaches `--image-gc-high-threshold` percent, delete unused images
//!   least recently used first until enough is freed to get down to
//!   `--image-gc-low-threshold`, sparing images younger than `--minimum-image-ttl-duration`
//!   (2 minutes). If not enough could be freed: a `FreeDiskSpaceFailed` warning on the
//!   Node, and when a run fails twice in a row an `ImageGCFailed` warning.
//!
//! Deciding ([`bytes_to_free`], [`choose`]) is pure; [`collect`] measures and acts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};
use runtime::images::{Digest, Image, ImageStore, StoreError};

use super::host::{self, FsStats};
use crate::pods::context::NodeContext;
use crate::pods::layout::Layout;

/// kubelet's `ImageGCPeriod`.
pub const GC_PERIOD: Duration = Duration::from_secs(300);

/// kubelet's image GC policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcPolicy {
    /// `imageGCHighThresholdPercent`: usage at or above which GC runs; 100 disables GC.
    pub high_threshold_percent: u8,
    /// `imageGCLowThresholdPercent`: usage GC frees down to.
    pub low_threshold_percent: u8,
    /// `imageMinimumGCAge`: images detected more recently than this are never deleted.
    pub min_age: Duration,
}

impl Default for GcPolicy {
    fn default() -> Self {
        GcPolicy {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            min_age: Duration::from_secs(120),
        }
    }
}

impl GcPolicy {
    /// kubelet's validation of the two thresholds.
    pub fn validate(&self) -> Result<(), String> {
        for (flag, v) in [
            ("--image-gc-high-threshold", self.high_threshold_percent),
            ("--image-gc-low-threshold", self.low_threshold_percent),
        ] {
            if v > 100 {
                return Err(format!("invalid {flag} {v}: must be between 0 and 100"));
            }
        }
        if self.low_threshold_percent > self.high_threshold_percent {
            return Err(format!(
                "--image-gc-low-threshold ({}) must be less than --image-gc-high-threshold ({})",
                self.low_threshold_percent, self.high_threshold_percent
            ));
        }
        Ok(())
    }
}

/// Why GC could not run or could not free enough (the message is kubelet's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GcError {
    #[error("invalid capacity 0 on image filesystem")]
    InvalidCapacity,
    #[error("Failed to garbage collect required amount of images. Attempted to free {wanted} bytes, but only found {freed} bytes eligible to free.")]
    NotEnough { wanted: u64, freed: u64 },
    #[error("wanted to free {wanted} bytes, but freed {freed} bytes space with errors in image deletion: {errors}")]
    Deletion {
        wanted: u64,
        freed: u64,
        errors: String,
    },
    #[error("{0}")]
    Measure(String),
}

/// Bytes to free so that usage gets down to the low threshold, or `None` while usage is
/// below the high one (kubelet's integer arithmetic).
pub fn bytes_to_free(fs: &FsStats, policy: &GcPolicy) -> Result<Option<u64>, GcError> {
    if policy.high_threshold_percent >= 100 {
        return Ok(None);
    }
    let (capacity, available) = (
        fs.capacity_bytes as u128,
        fs.available_bytes.min(fs.capacity_bytes) as u128,
    );
    if capacity == 0 {
        return Err(GcError::InvalidCapacity);
    }
    let usage_percent = 100 - (available * 100 / capacity);
    if usage_percent < u128::from(policy.high_threshold_percent) {
        return Ok(None);
    }
    let target = capacity * u128::from(100 - policy.low_threshold_percent) / 100;
    Ok(Some(target.saturating_sub(available) as u64))
}

/// One image as GC weighs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub size: u64,
    /// None: never used by a container on this node.
    pub last_used: Option<SystemTime>,
    pub first_detected: SystemTime,
    pub in_use: bool,
}

/// Which candidates to delete (indices, in deletion order) and what that frees.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Choice {
    pub delete: Vec<usize>,
    pub bytes: u64,
}

/// kubelet's `freeSpace`: least recently used first (then first detected), skipping images
/// in use and images younger than `min_age`, until `wanted` bytes are covered.
pub fn choose(images: &[Candidate], wanted: u64, min_age: Duration, now: SystemTime) -> Choice {
    let mut order: Vec<usize> = (0..images.len()).collect();
    order.sort_by_key(|&i| (images[i].last_used, images[i].first_detected));
    let mut choice = Choice::default();
    for i in order {
        if choice.bytes >= wanted {
            break;
        }
        let image = &images[i];
        let age = now
            .duration_since(image.first_detected)
            .unwrap_or(Duration::ZERO);
        if image.in_use || age < min_age {
            continue;
        }
        choice.delete.push(i);
        choice.bytes += image.size;
    }
    choice
}

fn usage_dir(layout: &Layout) -> PathBuf {
    layout.agent_dir().join("image-usage")
}

/// The manifest digest of an attempt's `image_id` (`repo@sha256:...`) or of a digest.
fn manifest_of(image_id: &str) -> &str {
    image_id.rsplit_once('@').map_or(image_id, |(_, d)| d)
}

/// Notes that a container is starting with the image `image_id` (`repo@sha256:...`, as
/// the attempt records it). Best effort: a failure only makes the image look older to GC.
pub fn record_use(layout: &Layout, image_id: &str) {
    let Ok(digest) = Digest::parse(manifest_of(image_id)) else {
        return;
    };
    let dir = usage_dir(layout);
    let path = dir.join(digest.hex());
    let touched = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::File::create(&path))
        .and_then(|f| f.set_modified(SystemTime::now()));
    if let Err(e) = touched {
        tracing::warn!(
            "recording the use of image {image_id} in {}: {e}",
            path.display()
        );
    }
}

/// Container IDs of every attempt on this node (running or kept), by the manifest digest
/// (`sha256:...`) of the image it runs.
pub fn containers_by_image(layout: &Layout) -> BTreeMap<String, Vec<String>> {
    let mut by_image: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let Ok(pods) = std::fs::read_dir(layout.pods_root()) else {
        return by_image;
    };
    for pod in pods.flatten() {
        let Ok(uid) = pod.file_name().into_string() else {
            continue;
        };
        let observed = crate::pods::observe::observe(layout, &uid, false);
        for attempt in observed.containers.values().flatten() {
            by_image
                .entry(manifest_of(&attempt.record.image_id).to_string())
                .or_default()
                .push(attempt.record.container_id.clone());
        }
    }
    by_image
}

/// Disk blocks under `dir` (not following links), in bytes.
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            total += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// The store's images with what GC weighs: size is the blobs plus the unpacked layers.
fn candidates(
    store: &ImageStore,
    layout: &Layout,
    now: SystemTime,
) -> Result<Vec<(Image, Candidate)>, StoreError> {
    let in_use = containers_by_image(layout);
    let usage = usage_dir(layout);
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Ok(store
        .list()?
        .into_iter()
        .map(|image| {
            let used = in_use.contains_key(image.digest.as_str());
            let candidate = Candidate {
                size: image.size + image.layers.iter().map(|l| disk_usage(l)).sum::<u64>(),
                last_used: if used {
                    Some(now)
                } else {
                    mtime(&usage.join(image.digest.hex()))
                },
                first_detected: mtime(&store.blob_path(&image.digest)).unwrap_or(now),
                in_use: used,
            };
            (image, candidate)
        })
        .collect())
}

/// Usage markers of images no longer in the store.
fn prune_usage(store: &ImageStore, layout: &Layout) {
    let Ok(entries) = std::fs::read_dir(usage_dir(layout)) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let gone = Digest::parse(&format!("sha256:{name}")).map_or(true, |d| !store.has_blob(&d));
        if gone {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Removes the dangling images (left when their tag moved on) that no container on this
/// node uses; returns their names. Best effort: a failure is logged and retried next time.
pub fn prune_dangling(store: &ImageStore, layout: &Layout) -> Vec<String> {
    let dangling = match store.dangling() {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!("listing dangling images: {e}");
            return Vec::new();
        }
    };
    if dangling.is_empty() {
        return Vec::new();
    }
    let in_use = containers_by_image(layout);
    let mut removed = Vec::new();
    for image in dangling {
        if in_use.contains_key(image.digest.as_str()) {
            continue;
        }
        match store.remove_dangling(&image.digest) {
            Ok(r) => {
                if !r.references.is_empty() {
                    tracing::info!(image = %image.digest, names = ?r.references, "removed an image whose tag moved on");
                    let _ = std::fs::remove_file(usage_dir(layout).join(image.digest.hex()));
                }
                removed.extend(r.references);
            }
            Err(e) => tracing::warn!("removing the dangling image {}: {e}", image.digest),
        }
    }
    removed
}

/// What one GC run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Bytes the run set out to free (0: usage was below the high threshold).
    pub wanted: u64,
    pub freed: u64,
    pub removed: Vec<String>,
}

/// One GC run (blocking): measure, decide, delete. Each deletion re-checks that no
/// container took the image up meanwhile and removes a name only if it still names the
/// image decided on, so a concurrent pull, import or container start is never undone.
pub fn collect(
    store: &ImageStore,
    layout: &Layout,
    policy: &GcPolicy,
) -> Result<Collected, GcError> {
    prune_usage(store, layout);
    let fs = host::filesystem_stats(store.root()).map_err(|e| GcError::Measure(e.to_string()))?;
    let Some(wanted) = bytes_to_free(&fs, policy)? else {
        return Ok(Collected::default());
    };
    tracing::info!(
        usage_percent = 100 - fs.available_bytes.saturating_mul(100) / fs.capacity_bytes.max(1),
        high = policy.high_threshold_percent,
        low = policy.low_threshold_percent,
        wanted,
        "disk usage on the image filesystem is over the high threshold, freeing images"
    );
    let now = SystemTime::now();
    let found = candidates(store, layout, now).map_err(|e| GcError::Measure(e.to_string()))?;
    let weighed: Vec<Candidate> = found.iter().map(|(_, c)| c.clone()).collect();
    let choice = choose(&weighed, wanted, policy.min_age, now);
    let mut done = Collected {
        wanted,
        ..Default::default()
    };
    let mut errors = Vec::new();
    for i in choice.delete {
        let (image, candidate) = &found[i];
        if containers_by_image(layout).contains_key(image.digest.as_str()) {
            continue;
        }
        let mut removed_all = true;
        for name in &image.references {
            match store.remove_if(name, &image.digest) {
                Ok(_) => done.removed.push(name.clone()),
                // Renamed or removed meanwhile: not ours to delete any more.
                Err(StoreError::Changed { .. } | StoreError::NotFound(_)) => removed_all = false,
                Err(e) => {
                    removed_all = false;
                    errors.push(format!("removing {name}: {e}"));
                }
            }
        }
        if removed_all {
            tracing::info!(image = %image.digest, size = candidate.size, "image garbage collected");
            done.freed += candidate.size;
            let _ = std::fs::remove_file(usage_dir(layout).join(image.digest.hex()));
        }
    }
    if !errors.is_empty() {
        return Err(GcError::Deletion {
            wanted,
            freed: done.freed,
            errors: errors.join("; "),
        });
    }
    if done.freed < wanted {
        return Err(GcError::NotEnough {
            wanted,
            freed: done.freed,
        });
    }
    Ok(done)
}

/// kubelet's node reference for events: kind Node, the name as UID too.
fn node_ref(name: &str) -> ObjectReference {
    ObjectReference {
        kind: Some("Node".into()),
        name: Some(name.into()),
        uid: Some(name.into()),
        ..Default::default()
    }
}

fn warn(ctx: &NodeContext, reason: &str, message: String) {
    ctx.recorder.record(
        Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(message),
            action: reason.into(),
            secondary: None,
        },
        node_ref(&ctx.node_name),
    );
}

/// Runs GC now and then every [`GC_PERIOD`], as kubelet's `StartGarbageCollection`.
pub async fn run(ctx: Arc<NodeContext>, policy: GcPolicy) {
    let enabled = policy.high_threshold_percent < 100;
    if !enabled {
        tracing::info!("image garbage collection is disabled (--image-gc-high-threshold 100)");
    }
    let mut tick = tokio::time::interval(GC_PERIOD);
    let mut failed_before = false;
    loop {
        tick.tick().await;
        let c = ctx.clone();
        let _ = tokio::task::spawn_blocking(move || prune_dangling(&c.images, &c.layout)).await;
        if !enabled {
            continue;
        }
        let (c, p) = (ctx.clone(), policy.clone());
        let result = tokio::task::spawn_blocking(move || collect(&c.images, &c.layout, &p)).await;
        let result = result.unwrap_or_else(|e| Err(GcError::Measure(e.to_string())));
        match result {
            Ok(done) => {
                if done.wanted > 0 {
                    tracing::info!(freed = done.freed, removed = ?done.removed, "image garbage collection freed enough");
                }
                failed_before = false;
            }
            Err(e) => {
                match &e {
                    GcError::InvalidCapacity => warn(&ctx, "InvalidDiskCapacity", e.to_string()),
                    GcError::NotEnough { .. } => warn(&ctx, "FreeDiskSpaceFailed", e.to_string()),
                    _ => {}
                }
                if failed_before {
                    tracing::error!("image garbage collection failed multiple times in a row: {e}");
                    warn(&ctx, "ImageGCFailed", e.to_string());
                } else {
                    tracing::warn!("image garbage collection failed once: {e}");
                }
                failed_before = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(capacity: u64, available: u64) -> FsStats {
        FsStats {
            capacity_bytes: capacity,
            available_bytes: available,
            inodes: 100,
            inodes_free: 50,
        }
    }

    #[test]
    fn gc_starts_at_the_high_threshold_and_aims_for_the_low_one() {
        let p = GcPolicy::default();
        let cases = [
            ("84% used", fs(1000, 160), Ok(None)),
            ("85% used", fs(1000, 150), Ok(Some(50))),
            ("95% used", fs(1000, 50), Ok(Some(150))),
            ("full", fs(1000, 0), Ok(Some(200))),
            ("no capacity", fs(0, 0), Err(GcError::InvalidCapacity)),
        ];
        for (name, f, want) in cases {
            assert_eq!(bytes_to_free(&f, &p), want, "{name}");
        }
        let off = GcPolicy {
            high_threshold_percent: 100,
            ..p.clone()
        };
        assert_eq!(bytes_to_free(&fs(1000, 0), &off), Ok(None));
    }

    #[test]
    fn thresholds_are_validated_as_kubelet() {
        assert!(GcPolicy::default().validate().is_ok());
        let bad = GcPolicy {
            high_threshold_percent: 70,
            low_threshold_percent: 80,
            ..Default::default()
        };
        let err = bad.validate().unwrap_err();
        assert!(err.contains("must be less than"), "{err}");
    }

    #[test]
    fn least_recently_used_first_sparing_in_use_and_young_images() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let now = t0 + Duration::from_secs(3600);
        let min_age = Duration::from_secs(120);
        let img = |size, used: Option<u64>, detected: u64, in_use| Candidate {
            size,
            last_used: used.map(|s| t0 + Duration::from_secs(s)),
            first_detected: t0 + Duration::from_secs(detected),
            in_use,
        };
        let images = vec![
            img(100, Some(500), 0, false), // 0: used at 500
            img(100, Some(3000), 0, true), // 1: in use
            img(100, None, 3590, false),   // 2: never used, but pulled 10 s ago
            img(100, Some(200), 0, false), // 3: used at 200
            img(100, None, 10, false),     // 4: never used, old
            img(100, None, 5, false),      // 5: never used, older
        ];
        let cases = [
            ("nothing wanted", 0, vec![], 0),
            ("one image's worth", 1, vec![5], 100),
            ("three", 300, vec![5, 4, 3], 300),
            ("everything eligible", 10_000, vec![5, 4, 3, 0], 400),
        ];
        for (name, wanted, delete, bytes) in cases {
            assert_eq!(
                choose(&images, wanted, min_age, now),
                Choice { delete, bytes },
                "{name}"
            );
        }
    }

    #[test]
    fn use_is_recorded_and_attempts_are_found_by_image() {
        let dir = tempfile::tempdir().expect("tmp");
        let layout = Layout::new(dir.path());
        let digest = Digest::of(b"manifest");
        record_use(&layout, &format!("docker.io/library/busybox@{digest}"));
        assert!(usage_dir(&layout).join(digest.hex()).is_file());
        record_use(&layout, "not a digest");

        let attempt = layout.attempt_dir("uid-1", "app", 0);
        std::fs::create_dir_all(&attempt).expect("attempt dir");
        let record = crate::pods::observe::AttemptRecord {
            container_id: "c0ffee".into(),
            image: "busybox".into(),
            image_ref: "docker.io/library/busybox:latest".into(),
            image_id: format!("docker.io/library/busybox@{digest}"),
            stop_signal: None,
        };
        std::fs::write(
            attempt.join(crate::pods::observe::ATTEMPT_RECORD),
            serde_json::to_vec(&record).expect("json"),
        )
        .expect("write record");
        let by_image = containers_by_image(&layout);
        assert_eq!(
            by_image.get(digest.as_str()),
            Some(&vec!["c0ffee".to_string()])
        );
    }
}
