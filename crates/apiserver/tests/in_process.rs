//! The in-process transport of the server's control loops answers as a request over a
//! socket is answered: objects created with their managed fields, upstream's errors and
//! codes, the request-size limit, and watch streams that deliver what is written.

use std::sync::Arc;
use std::time::Duration;

use apiserver::auth::{Identity, TokenUser};
use apiserver::in_process::InProcess;
use apiserver::{ApiConfig, ApiServer};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use serde_json::{json, Value};
use tower::ServiceExt;

async fn api_server(dir: &std::path::Path) -> Arc<ApiServer> {
    let store = store::open(None, &dir.join("state.db"))
        .await
        .expect("store");
    let api = ApiServer::new(
        store,
        ApiConfig {
            advertise_address: "127.0.0.1:6443".into(),
            service_cidr: ("10.43.0.0".parse().expect("ip"), 16),
            node_port_range: (30000, 32767),
            tokens: Vec::<TokenUser>::new(),
            git_version: "v1.37.0+test".into(),
            admission: Default::default(),
        },
    );
    apiserver::bootstrap::ensure_builtin_objects(&api, 6443)
        .await
        .expect("bootstrap");
    api
}

fn request(method: &str, path: &str, body: Vec<u8>) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .header("user-agent", "in-process-test")
        .body(Full::new(Bytes::from(body)))
        .expect("request")
}

async fn json_of(resp: Response<apiserver::http::Body>) -> (u16, Value) {
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)));
    (status, value)
}

/// One request through the in-process transport, answered as (code, JSON body).
async fn call(client: &InProcess, method: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = client
        .clone()
        .oneshot(request(method, path, body))
        .await
        .expect("the in-process transport answers");
    json_of(resp).await
}

fn config_map(name: &str, data: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name}, "data": {"k": data}
    }))
    .expect("encode")
}

#[tokio::test]
async fn in_process_requests_are_answered_as_socket_requests_are() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = api_server(dir.path()).await;
    let client = InProcess::new(
        api.clone(),
        Identity {
            user: "system:kube-controller-manager".into(),
            groups: vec![],
        },
    );
    let path = "/api/v1/namespaces/default/configmaps";

    // A watch opened before the write hears it.
    let watch = client
        .clone()
        .oneshot(request("GET", &format!("{path}?watch=true"), vec![]))
        .await
        .expect("watch");
    assert_eq!(watch.status().as_u16(), 200);
    let mut watch = watch.into_body();

    let (code, created) = call(&client, "POST", path, config_map("one", "v")).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["data"]["k"], "v");
    assert_eq!(
        created["metadata"]["managedFields"][0]["manager"], "in-process-test",
        "{created}"
    );

    let (code, status) = call(&client, "POST", path, config_map("one", "w")).await;
    assert_eq!(code, 409, "{status}");
    assert_eq!(status["reason"], "AlreadyExists");

    let (code, status) = call(&client, "POST", path, config_map("Not_A_Name", "v")).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["details"]["causes"][0]["field"], "metadata.name");

    let (code, status) = call(
        &client,
        "POST",
        path,
        config_map("big", &"x".repeat(apiserver::server::MAX_REQUEST_BODY)),
    )
    .await;
    assert_eq!(code, 413, "{status}");

    let (code, got) = call(&client, "GET", &format!("{path}/one"), vec![]).await;
    assert_eq!(code, 200, "{got}");
    assert_eq!(got["metadata"]["uid"], created["metadata"]["uid"]);
    let (code, _) = call(&client, "GET", &format!("{path}/big"), vec![]).await;
    assert_eq!(code, 404, "nothing refused is stored");

    let mut seen = Vec::new();
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let frame = watch.frame().await.expect("watch open").expect("frame");
            if let Ok(data) = frame.into_data() {
                seen.extend_from_slice(&data);
            }
            if let Some(end) = seen.iter().position(|&b| b == b'\n') {
                return serde_json::from_slice::<Value>(&seen[..end]).expect("event");
            }
        }
    })
    .await
    .expect("the watch delivers the create");
    assert_eq!(event["type"], "ADDED");
    assert_eq!(event["object"]["metadata"]["name"], "one");
}
