//! Events as upstream's controllers write them (client-go's recorder): core/v1 Events
//! named `<object>.<unique hex>`, with `source.component`, and repeats of the same
//! (object, type, reason, message) folded into one Event whose `count` and
//! `lastTimestamp` are bumped. kube-runtime's recorder keys repeats without the message,
//! so "Scaled up ... to 3" followed by "Scaled down ... to 2" would show as one event.
//!
//! [`Recorder::record`] is what controllers call: like client-go's broadcaster it never
//! blocks the caller. It applies upstream's per-object spam filter (a token bucket of 25
//! events, refilled one per 5 minutes, per source and object), then hands the event to a
//! background writer through a queue of 1,000 that drops when full, as client-go does. A
//! ReplicaSet creating 1,000 pods therefore writes 25 "Created pod" events, not 1,000,
//! and its pod creations never wait on event writes. [`Recorder::publish`] writes at once
//! and returns the API's answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event as CoreEvent, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::Client;

/// Folded events remembered per recorder; beyond this the memory starts over.
const REMEMBERED: usize = 4096;
/// Events queued for the background writer; more are dropped (client-go: 1,000).
const QUEUE: usize = 1000;
/// Upstream's spam filter: a burst of 25 events per source and object ...
const SPAM_BURST: f64 = 25.0;
/// ... refilled at one event per 5 minutes.
const SPAM_REFILL_EVERY: Duration = Duration::from_secs(300);

/// Per source and object token buckets (client-go's EventSourceObjectSpamFilter).
#[derive(Default)]
struct SpamFilter {
    buckets: HashMap<(String, String, String, String, &'static str), (f64, Instant)>,
}

impl SpamFilter {
    /// Whether an event about `object` of type `type_` may be written at `now`.
    fn allow(&mut self, object: &ObjectReference, type_: &'static str, now: Instant) -> bool {
        let key = (
            object.kind.clone().unwrap_or_default(),
            object.namespace.clone().unwrap_or_default(),
            object.name.clone().unwrap_or_default(),
            object.uid.clone().unwrap_or_default(),
            type_,
        );
        if self.buckets.len() >= REMEMBERED && !self.buckets.contains_key(&key) {
            self.buckets.clear();
        }
        let (tokens, at) = self.buckets.entry(key).or_insert((SPAM_BURST, now));
        let refill = now.duration_since(*at).as_secs_f64() / SPAM_REFILL_EVERY.as_secs_f64();
        *tokens = (*tokens + refill).min(SPAM_BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn type_name(t: &EventType) -> &'static str {
    match t {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    namespace: String,
    object: (String, String, String),
    type_: &'static str,
    reason: String,
    message: String,
}

/// Writes events for one component (e.g. `replicaset-controller`). Clones share the
/// aggregation state, so a repeated event is counted once however many clones record it.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: String,
    /// Key -> (event name, count so far).
    seen: Arc<Mutex<HashMap<Key, (String, i32)>>>,
    spam: Arc<Mutex<SpamFilter>>,
    /// The background writer's queue, started by the first `record`.
    queue: Arc<OnceLock<tokio::sync::mpsc::Sender<(Event, ObjectReference)>>>,
    /// Writes per second and burst of the background writer (None: as fast as the API
    /// answers). See [`Recorder::with_write_limit`].
    write_limit: Option<(f64, f64)>,
}

/// A token bucket pacing the background writer (client-go's rate limiter on the client
/// that writes events).
struct WritePacer {
    per_second: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl WritePacer {
    fn new((per_second, burst): (f64, f64)) -> Self {
        WritePacer {
            per_second,
            burst,
            tokens: burst,
            at: Instant::now(),
        }
    }

    /// How long to wait before the next write at `now` (zero if a token is there); takes
    /// the token.
    fn take(&mut self, now: Instant) -> Duration {
        let refill = now.duration_since(self.at).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.at = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_second)
        }
    }
}

impl Recorder {
    pub fn new(client: Client, component: &str) -> Self {
        Recorder {
            client,
            component: component.to_string(),
            seen: Arc::new(Mutex::new(HashMap::new())),
            spam: Arc::new(Mutex::new(SpamFilter::default())),
            queue: Arc::new(OnceLock::new()),
            write_limit: None,
        }
    }

    /// Paces the background writer to `per_second` writes after a burst of `burst`, as
    /// kubelet's event client is (`--event-qps=50 --event-burst=100` by default). Events
    /// wait in the queue meanwhile, so a node starting 100 pods at once spends its first
    /// seconds on the pods and writes the rest of their events after. `record` never waits.
    pub fn with_write_limit(mut self, per_second: f64, burst: u32) -> Self {
        self.write_limit = Some((per_second.max(0.001), f64::from(burst.max(1))));
        self
    }

    /// Record `ev` about `regarding` without waiting: spam-filtered, then written in the
    /// background in the order recorded. Must be called within a Tokio runtime.
    pub fn record(&self, ev: Event, regarding: ObjectReference) {
        let allowed = self.spam.lock().unwrap_or_else(|e| e.into_inner()).allow(
            &regarding,
            type_name(&ev.type_),
            Instant::now(),
        );
        if !allowed {
            tracing::debug!(
                "{}: event {} about {:?} dropped by the spam filter",
                self.component,
                ev.reason,
                regarding.name
            );
            return;
        }
        let queue = self.queue.get_or_init(|| {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<(Event, ObjectReference)>(QUEUE);
            let writer = self.clone();
            let mut pacer = self.write_limit.map(WritePacer::new);
            tokio::spawn(async move {
                while let Some((ev, regarding)) = rx.recv().await {
                    if let Some(pacer) = pacer.as_mut() {
                        let wait = pacer.take(Instant::now());
                        if !wait.is_zero() {
                            tokio::time::sleep(wait).await;
                        }
                    }
                    if let Err(e) = writer.publish(&ev, &regarding).await {
                        tracing::warn!(
                            "{}: recording {} for {}/{}: {e}",
                            writer.component,
                            ev.reason,
                            regarding.namespace.as_deref().unwrap_or(""),
                            regarding.name.as_deref().unwrap_or("")
                        );
                    }
                }
            });
            tx
        });
        if queue.try_send((ev, regarding)).is_err() {
            tracing::warn!("{}: event queue full, event dropped", self.component);
        }
    }

    /// Record `ev` about the object `regarding`.
    pub async fn publish(
        &self,
        ev: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let namespace = regarding
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_string());
        let type_ = type_name(&ev.type_);
        let message = ev.note.clone().unwrap_or_default();
        let key = Key {
            namespace: namespace.clone(),
            object: (
                regarding.kind.clone().unwrap_or_default(),
                regarding.name.clone().unwrap_or_default(),
                regarding.uid.clone().unwrap_or_default(),
            ),
            type_,
            reason: ev.reason.clone(),
            message: message.clone(),
        };
        let api: Api<CoreEvent> = Api::namespaced(self.client.clone(), &namespace);
        let now = Timestamp::now();
        let previous = self.lock().get(&key).cloned();
        if let Some((name, count)) = previous {
            let patch = serde_json::json!({
                "count": count + 1,
                "lastTimestamp": Time(now),
            });
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.lock().insert(key, (name, count + 1));
                    return Ok(());
                }
                // Gone (expired or deleted): start a new one below.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let object_name = regarding.name.clone().unwrap_or_else(|| "unknown".into());
        let nanos = now.as_nanosecond();
        let event_namespace = namespace.clone();
        let event = CoreEvent {
            metadata: ObjectMeta {
                name: Some(format!("{object_name}.{:x}", nanos as u64)),
                namespace: Some(namespace),
                ..Default::default()
            },
            involved_object: regarding.clone(),
            reason: Some(ev.reason.clone()),
            message: Some(message),
            type_: Some(type_.to_string()),
            action: Some(ev.action.clone()),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: None,
            }),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.component.clone()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: None::<MicroTime>,
            count: Some(1),
            related: ev.secondary.clone(),
            series: None,
        };
        let created = crate::requests::create_named(&self.client, &event_namespace, &event).await?;
        let mut seen = self.lock();
        if seen.len() >= REMEMBERED {
            seen.clear();
        }
        seen.insert(key, (created, 1));
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (String, i32)>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str) -> ObjectReference {
        ObjectReference {
            kind: Some("ReplicaSet".into()),
            namespace: Some("default".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        }
    }

    #[test]
    fn spam_filter_allows_a_burst_of_25_per_object_then_one_per_five_minutes() {
        let mut f = SpamFilter::default();
        let t0 = Instant::now();
        let allowed = (0..100)
            .filter(|_| f.allow(&object("web"), "Normal", t0))
            .count();
        assert_eq!(allowed, 25);
        // Another object and the Warning type have their own buckets.
        assert!(f.allow(&object("api"), "Normal", t0));
        assert!(f.allow(&object("web"), "Warning", t0));
        // One token back after five minutes, not before.
        assert!(!f.allow(&object("web"), "Normal", t0 + Duration::from_secs(299)));
        assert!(f.allow(&object("web"), "Normal", t0 + Duration::from_secs(300)));
        assert!(!f.allow(&object("web"), "Normal", t0 + Duration::from_secs(300)));
    }

    #[test]
    fn the_write_pacer_allows_a_burst_then_the_steady_rate() {
        let mut pacer = WritePacer::new((50.0, 100.0));
        let t0 = Instant::now();
        let at_once = (0..150)
            .filter(|_| pacer.take(t0) == Duration::ZERO)
            .count();
        assert_eq!(at_once, 100);
        // The 50 over the burst were told to wait their turn: the last one a second.
        let mut pacer = WritePacer::new((50.0, 100.0));
        let waits: Vec<Duration> = (0..150).map(|_| pacer.take(t0)).collect();
        let about =
            |d: Duration, ms: u64| d.abs_diff(Duration::from_millis(ms)) < Duration::from_micros(1);
        assert!(about(waits[100], 20), "{:?}", waits[100]);
        assert!(about(waits[149], 1000), "{:?}", waits[149]);
        // A writer that waited as told finds its token there.
        let mut pacer = WritePacer::new((50.0, 1.0));
        assert_eq!(pacer.take(t0), Duration::ZERO);
        let wait = pacer.take(t0);
        assert!(about(wait, 20), "{wait:?}");
        assert_eq!(
            pacer.take(t0 + wait + Duration::from_millis(21)),
            Duration::ZERO
        );
    }
}
