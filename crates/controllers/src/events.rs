//! Events as upstream's controllers write them (client-go's recorder): core/v1 Events
//! named `<object>.<unique hex>`, with `source.component`, and repeats of the same
//! (object, type, reason, message) folded into one Event whose `count` and
//! `lastTimestamp` are bumped. kube-runtime's recorder keys repeats without the message,
//! so "Scaled up ... to 3" followed by "Scaled down ... to 2" would show as one event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event as CoreEvent, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::Client;

/// Folded events remembered per recorder; beyond this the memory starts over.
const REMEMBERED: usize = 4096;

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
}

impl Recorder {
    pub fn new(client: Client, component: &str) -> Self {
        Recorder {
            client,
            component: component.to_string(),
            seen: Arc::new(Mutex::new(HashMap::new())),
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
        let type_ = match ev.type_ {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        };
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
        let created = api.create(&PostParams::default(), &event).await?;
        let mut seen = self.lock();
        if seen.len() >= REMEMBERED {
            seen.clear();
        }
        seen.insert(key, (created.metadata.name.unwrap_or_default(), 1));
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (String, i32)>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}
