//! Upstream's "expectations", kept as names: after creating or deleting pods the
//! controller waits until the shared pod cache shows those writes before it counts pods
//! again, so a slow cache never makes it create (or delete) twice. An expectation that the
//! cache never confirms expires after 5 minutes, as upstream's `ExpectationsTimeout`.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use informers::ObjectKey;
use k8s_openapi::api::core::v1::Pod;

pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Pending {
    /// Pods created whose name is not in the cache yet.
    creates: HashSet<String>,
    /// (name, uid) of pods deleted that the cache still shows alive.
    deletes: HashSet<(String, String)>,
    since: Option<Instant>,
}

/// Per controller (not a process global): owner key -> writes not yet observed.
#[derive(Default)]
pub struct Expectations {
    pending: Mutex<HashMap<ObjectKey, Pending>>,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn created(&self, owner: &ObjectKey, pod: &str) {
        let mut all = self.lock();
        let p = all.entry(owner.clone()).or_default();
        p.creates.insert(pod.to_string());
        p.since.get_or_insert_with(Instant::now);
    }

    pub fn deleted(&self, owner: &ObjectKey, pod: &str, uid: &str) {
        let mut all = self.lock();
        let p = all.entry(owner.clone()).or_default();
        p.deletes.insert((pod.to_string(), uid.to_string()));
        p.since.get_or_insert_with(Instant::now);
    }

    pub fn forget(&self, owner: &ObjectKey) {
        self.lock().remove(owner);
    }

    /// Drop what `lookup` (the pod cache) confirms; true when nothing is outstanding.
    pub fn satisfied(
        &self,
        owner: &ObjectKey,
        lookup: impl Fn(&str) -> Option<std::sync::Arc<Pod>>,
    ) -> bool {
        let mut all = self.lock();
        let Some(p) = all.get_mut(owner) else {
            return true;
        };
        p.creates.retain(|name| lookup(name).is_none());
        p.deletes.retain(|(name, uid)| {
            lookup(name).is_some_and(|pod| {
                pod.metadata.uid.as_deref() == Some(uid.as_str())
                    && pod.metadata.deletion_timestamp.is_none()
            })
        });
        let expired = p.since.is_some_and(|t| t.elapsed() > EXPECTATIONS_TIMEOUT);
        if p.creates.is_empty() && p.deletes.is_empty() || expired {
            all.remove(owner);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn waits_until_the_cache_shows_creations_and_deletions() {
        let e = Expectations::default();
        let key = ObjectKey::new("ns", "web");
        e.created(&key, "web-abcde");
        let mut gone = Pod::default();
        gone.metadata.uid = Some("u1".into());
        e.deleted(&key, "web-old", "u1");
        let gone = Arc::new(gone);
        assert!(!e.satisfied(&key, |n| (n == "web-old").then(|| gone.clone())));
        let made = Arc::new(Pod::default());
        assert!(
            !e.satisfied(&key, |n| match n {
                "web-abcde" => Some(made.clone()),
                "web-old" => Some(gone.clone()),
                _ => None,
            }),
            "the deletion is still not seen"
        );
        assert!(e.satisfied(&key, |n| (n == "web-abcde").then(|| made.clone())));
        assert!(e.satisfied(&ObjectKey::new("ns", "other"), |_| None));
    }
}
