//! Creates whose answer the caller only needs the name of. `Api::create` decodes the whole
//! object the API server returns (managedFields included) and the caller then drops it;
//! at thousands of pod and event creates a second that decoding is a measurable share of
//! the control plane's CPU (the controllers run in the server process). The request is
//! the same; only the answer is read lazily.

use kube::api::PostParams;
use kube::core::Request;
use kube::{Client, Resource};
use serde::{Deserialize, Serialize};

/// The part of a created object that is read: its name.
#[derive(Deserialize)]
struct Created {
    #[serde(default)]
    metadata: CreatedMeta,
}

#[derive(Deserialize, Default)]
struct CreatedMeta {
    #[serde(default)]
    name: Option<String>,
}

/// POST `obj` to its collection in `namespace`; the created object's name (the server's
/// choice when `obj` has a `generateName`). Errors as `Api::create` gives them.
pub async fn create_named<K>(
    client: &Client,
    namespace: &str,
    obj: &K,
) -> Result<String, kube::Error>
where
    K: Resource<DynamicType = ()> + Serialize,
{
    let body = serde_json::to_vec(obj).map_err(kube::Error::SerdeError)?;
    let mut req = Request::new(K::url_path(&(), Some(namespace)))
        .create(&PostParams::default(), body)
        .map_err(kube::Error::BuildRequest)?;
    req.extensions_mut().insert("create");
    let created: Created = client.request(req).await?;
    Ok(created.metadata.name.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_only_the_name_of_the_answer() {
        let answer = r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"web-x7k2p","generateName":"web-",
            "managedFields":[{"manager":"m","fieldsV1":{"f:spec":{}}}]},"spec":{"containers":[]}}"#;
        let created: super::Created = serde_json::from_str(answer).unwrap();
        assert_eq!(created.metadata.name.as_deref(), Some("web-x7k2p"));
    }
}
