//! Service cluster IPs and node ports are never given twice: Services created in parallel
//! (and updated to NodePort in parallel) all get distinct values; a value freed by a
//! delete (also a namespace's) can be taken again at once; a taken one is refused with
//! upstream's 422, also after a restart, and on the etcd datastore.

use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use testkit::{Etcd, ServerOptions, TestServer};

async fn client(server: &TestServer) -> Client {
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

fn service(name: &str, ty: &str) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"type": ty, "ports": [
            {"name": "http", "port": 80, "protocol": "TCP"},
            {"name": "https", "port": 443, "protocol": "TCP"},
        ]},
    }))
    .expect("service")
}

/// Creates `n` NodePort Services and `n` ClusterIP ones all at once, then turns the
/// ClusterIP ones into NodePort all at once.
fn create_and_convert_in_parallel(s: &TestServer, n: usize) {
    runtime().block_on(async {
        let client = client(s).await;
        let api: Api<Service> = Api::namespaced(client, "default");
        let creates = (0..n).flat_map(|i| {
            let api = api.clone();
            let api2 = api.clone();
            [
                tokio::spawn(async move {
                    api.create(
                        &PostParams::default(),
                        &service(&format!("np-{i}"), "NodePort"),
                    )
                    .await
                }),
                tokio::spawn(async move {
                    api2.create(
                        &PostParams::default(),
                        &service(&format!("cip-{i}"), "ClusterIP"),
                    )
                    .await
                }),
            ]
        });
        for created in futures::future::join_all(creates).await {
            created.expect("task").expect("create");
        }
        let converts = (0..n).map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                api.patch(
                    &format!("cip-{i}"),
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"spec": {"type": "NodePort"}})),
                )
                .await
            })
        });
        for converted in futures::future::join_all(converts).await {
            converted.expect("task").expect("patch to NodePort");
        }
    });
}

/// Every Service's cluster IP and node ports, checked to be distinct across Services.
fn assert_all_distinct(s: &TestServer, expect_services: usize) {
    let list = s.kubectl_json(&["get", "svc", "-A", "-o", "json"]);
    let items = list["items"].as_array().cloned().unwrap_or_default();
    assert!(items.len() >= expect_services, "{} services", items.len());
    let (mut ips, mut ports) = (HashSet::new(), HashSet::new());
    let mut node_port_services = 0;
    for svc in &items {
        let name = svc["metadata"]["name"].as_str().unwrap_or("?");
        let ip = svc["spec"]["clusterIP"].as_str().unwrap_or("");
        if ip != "None" && !ip.is_empty() {
            assert!(
                ips.insert(ip.to_string()),
                "cluster IP {ip} given twice ({name})"
            );
        }
        if svc["spec"]["type"] == "NodePort" {
            node_port_services += 1;
            for p in svc["spec"]["ports"].as_array().into_iter().flatten() {
                let np = p["nodePort"].as_u64().unwrap_or(0);
                assert!((30000..=32767).contains(&np), "{name}: nodePort {np}");
                assert!(ports.insert(np), "nodePort {np} given twice ({name})");
            }
        }
    }
    assert!(
        node_port_services >= expect_services,
        "{node_port_services} NodePort services"
    );
}

/// A taken port and IP are refused; once their Service is deleted they can be taken at
/// once, by a new Service and by an update.
fn freed_values_are_reusable_at_once(s: &TestServer) {
    s.kubectl_ok(&[
        "create",
        "service",
        "nodeport",
        "holder",
        "--tcp=80:80",
        "--node-port=30555",
    ]);
    let err = s.kubectl_err(&[
        "create",
        "service",
        "nodeport",
        "second",
        "--tcp=80:80",
        "--node-port=30555",
    ]);
    assert!(
        err.contains(
            "Service \"second\" is invalid: spec.ports[0].nodePort: Invalid value: 30555: provided port is already allocated"
        ),
        "{err}"
    );
    s.kubectl_ok(&[
        "create",
        "service",
        "clusterip",
        "fixed-ip",
        "--tcp=80",
        "--clusterip=10.43.77.7",
    ]);
    let err = s.kubectl_err(&[
        "create",
        "service",
        "clusterip",
        "fixed-ip-2",
        "--tcp=80",
        "--clusterip=10.43.77.7",
    ]);
    assert!(
        err.contains("failed to allocate IP 10.43.77.7: provided IP is already allocated"),
        "{err}"
    );
    // An update may not take the port either.
    s.kubectl_ok(&["create", "service", "nodeport", "other", "--tcp=80:80"]);
    let err = s.kubectl_err(&[
        "patch",
        "svc",
        "other",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/ports/0/nodePort","value":30555}]"#,
    ]);
    assert!(err.contains("provided port is already allocated"), "{err}");

    // Delete, and take them again right away.
    s.kubectl_ok(&["delete", "svc", "holder", "fixed-ip"]);
    s.kubectl_ok(&[
        "create",
        "service",
        "clusterip",
        "fixed-ip-2",
        "--tcp=80",
        "--clusterip=10.43.77.7",
    ]);
    s.kubectl_ok(&[
        "patch",
        "svc",
        "other",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/ports/0/nodePort","value":30555}]"#,
    ]);
    assert_eq!(
        s.kubectl_ok(&[
            "get",
            "svc",
            "other",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}"
        ]),
        "30555"
    );
    // The port `other` gave up is free again.
    s.kubectl_ok(&["delete", "svc", "other"]);
    s.kubectl_ok(&[
        "create",
        "service",
        "nodeport",
        "third",
        "--tcp=80:80",
        "--node-port=30555",
    ]);
}

#[test]
fn parallel_creates_and_updates_never_share_an_ip_or_node_port() {
    let s = testkit::server!();
    create_and_convert_in_parallel(&s, 25);
    assert_all_distinct(&s, 50);
}

#[test]
fn freed_ips_and_ports_are_reusable_and_taken_ones_stay_taken_across_a_restart() {
    let mut s = testkit::server!();
    freed_values_are_reusable_at_once(&s);

    // A namespace's Services go with it (through the namespace controller), and free
    // their values.
    s.kubectl_ok(&["create", "namespace", "goes"]);
    s.kubectl_ok(&[
        "create",
        "service",
        "nodeport",
        "inside",
        "-n",
        "goes",
        "--tcp=80:80",
        "--node-port=30600",
    ]);
    s.kubectl_ok(&["delete", "namespace", "goes", "--timeout=60s"]);
    s.kubectl_ok(&[
        "create",
        "service",
        "nodeport",
        "after-ns",
        "--tcp=80:80",
        "--node-port=30600",
    ]);

    // After a restart the table is rebuilt from the store: taken stays taken.
    s.stop(Duration::from_secs(30)).expect("stop");
    s.restart().expect("restart");
    let err = s.kubectl_err(&[
        "create",
        "service",
        "nodeport",
        "dup",
        "--tcp=80:80",
        "--node-port=30600",
    ]);
    assert!(err.contains("provided port is already allocated"), "{err}");
    create_and_convert_in_parallel(&s, 5);
    assert_all_distinct(&s, 10);
}

#[test]
fn allocation_on_etcd() {
    let etcd = Etcd::start().expect("etcd");
    let s = TestServer::start(
        ServerOptions::new(env!("CARGO_BIN_EXE_skiff")).datastore_endpoint(&etcd.endpoint()),
    )
    .expect("start skiff on etcd");
    freed_values_are_reusable_at_once(&s);
    create_and_convert_in_parallel(&s, 10);
    assert_all_distinct(&s, 20);
}
