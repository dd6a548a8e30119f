//! The etcd datastore (`--datastore-endpoint`), against a private Debian etcd-server.

mod common;
use common::*;
use std::time::Duration;
use testkit::{Etcd, ServerOptions, TestServer};

fn server_on(etcd: &Etcd) -> TestServer {
    TestServer::start(
        ServerOptions::new(env!("CARGO_BIN_EXE_skiff")).datastore_endpoint(&etcd.endpoint()),
    )
    .expect("start skiff on etcd")
}

#[test]
fn kubectl_works_on_etcd_and_state_survives_restart() {
    let etcd = Etcd::start().unwrap();
    let mut s = server_on(&etcd);
    let out = s.kubectl_ok(&["get", "ns", "-o", "name"]);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert_contains(&out, &format!("namespace/{ns}"));
    }
    let f = s.write_file("web.yaml", &deployment("web", 2, "busybox:stable"));
    assert_eq!(
        s.kubectl_ok(&["apply", "-f", f.to_str().unwrap()]).trim(),
        "deployment.apps/web created"
    );
    assert_eq!(
        s.kubectl_ok(&["apply", "-f", f.to_str().unwrap()]).trim(),
        "deployment.apps/web unchanged"
    );
    s.kubectl_ok(&["scale", "deploy", "web", "--replicas=4"]);
    s.kubectl_ok(&["create", "configmap", "gone"]);
    s.kubectl_ok(&["delete", "configmap", "gone"]);

    s.kill9();
    s.restart().unwrap();
    assert_eq!(
        s.kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "4"
    );
    assert!(!s.kubectl(&["get", "cm", "gone"]).status.success());
}

#[test]
fn watch_on_etcd() {
    let etcd = Etcd::start().unwrap();
    let s = server_on(&etcd);
    let mut w = s.kubectl_spawn(&["get", "cm", "--watch-only", "--output-watch-events"]);
    std::thread::sleep(Duration::from_secs(2));
    s.kubectl_ok(&["create", "configmap", "w1"]);
    s.kubectl_ok(&["label", "cm", "w1", "x=y"]);
    s.kubectl_ok(&["delete", "cm", "w1"]);
    let t = Duration::from_secs(20);
    w.wait_for_line(t, |l| l.starts_with("ADDED") && l.contains(" w1 "))
        .unwrap();
    w.wait_for_line(t, |l| l.starts_with("MODIFIED") && l.contains(" w1 "))
        .unwrap();
    w.wait_for_line(t, |l| l.starts_with("DELETED") && l.contains(" w1 "))
        .unwrap();
}

#[test]
fn two_servers_share_one_etcd() {
    // Two API servers on one etcd see each other's writes (how skiff grows past one machine).
    let etcd = Etcd::start().unwrap();
    let a = server_on(&etcd);
    let b = TestServer::start(
        ServerOptions::new(env!("CARGO_BIN_EXE_skiff")).datastore_endpoint(&etcd.endpoint()),
    )
    .unwrap();
    a.kubectl_ok(&["create", "configmap", "from-a"]);
    assert_eq!(
        b.kubectl_ok(&["get", "cm", "from-a", "-o", "name"]).trim(),
        "configmap/from-a"
    );
}
