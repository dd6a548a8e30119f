//! The third witness: the Rust `kube` client (what skiff's own controllers use) lists,
//! creates, patches (merge and server-side apply), watches and deletes against a real
//! skiff server, and sees upstream's errors.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;

async fn client(server: &testkit::TestServer) -> Client {
    let kc = kube::config::Kubeconfig::read_from(server.kubeconfig()).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kube config");
    Client::try_from(config).expect("kube client")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

#[test]
fn kube_client_lists_creates_patches_watches_and_deletes() {
    let server = testkit::server!();
    runtime().block_on(async {
        let client = client(&server).await;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let names: Vec<String> = namespaces
            .list(&ListParams::default())
            .await
            .expect("list namespaces")
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        for builtin in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            assert!(names.contains(&builtin.to_string()), "{builtin} missing from {names:?}");
        }

        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        // A watcher started first sees the object created afterwards.
        let mut events = watcher(cms.clone(), watcher::Config::default().labels("app=kube-test"))
            .applied_objects()
            .boxed();
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "from-kube", "labels": {"app": "kube-test"}},
            "data": {"a": "1"},
        }))
        .expect("configmap");
        let created = cms.create(&PostParams::default(), &cm).await.expect("create");
        assert!(created.metadata.uid.is_some());
        let seen = tokio::time::timeout(Duration::from_secs(10), events.try_next())
            .await
            .expect("watch event in time")
            .expect("watch stream")
            .expect("an object");
        assert_eq!(seen.metadata.name.as_deref(), Some("from-kube"));

        let patched = cms
            .patch("from-kube", &PatchParams::default(), &Patch::Merge(serde_json::json!({"data": {"b": "2"}})))
            .await
            .expect("merge patch");
        let data = patched.data.unwrap_or_default();
        assert_eq!((data.get("a").map(String::as_str), data.get("b").map(String::as_str)), (Some("1"), Some("2")));

        // Server-side apply records the manager, and a second manager conflicts.
        let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
        let apply = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "ssa"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "ssa"}},
                     "template": {"metadata": {"labels": {"app": "ssa"}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox:stable"}]}}},
        });
        let d = deploys.patch("ssa", &PatchParams::apply("kube-test"), &Patch::Apply(&apply)).await.expect("apply");
        let managers: Vec<String> = d.metadata.managed_fields.unwrap_or_default().into_iter().filter_map(|m| m.manager).collect();
        assert_eq!(managers, vec!["kube-test".to_string()]);
        let mut other = apply.clone();
        other["spec"]["replicas"] = serde_json::json!(5);
        match deploys.patch("ssa", &PatchParams::apply("someone-else"), &Patch::Apply(&other)).await {
            Err(kube::Error::Api(e)) => {
                assert_eq!(e.code, 409);
                assert!(e.message.contains("conflict with \"kube-test\""), "{}", e.message);
            }
            other => panic!("expected a 409 conflict, got {other:?}"),
        }

        cms.delete("from-kube", &DeleteParams::default()).await.expect("delete");
        match cms.get("from-kube").await {
            Err(kube::Error::Api(e)) => {
                assert_eq!(e.code, 404);
                assert_eq!(e.reason, "NotFound");
                assert_eq!(e.message, "configmaps \"from-kube\" not found");
            }
            other => panic!("expected 404, got {other:?}"),
        }
    });
}
