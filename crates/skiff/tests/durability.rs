//! Durability: SIGTERM stops cleanly and state survives a restart; a `kill -9` during a
//! write storm loses no acknowledged write, and the store opens cleanly afterwards.

mod common;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[test]
fn sigterm_stops_cleanly_and_state_survives_restart() {
    let mut s = testkit::server!();
    s.kubectl_ok(&["create", "ns", "keep"]);
    s.kubectl_ok(&[
        "create",
        "configmap",
        "c",
        "-n",
        "keep",
        "--from-literal=a=1",
    ]);
    let uid = s.kubectl_ok(&[
        "get",
        "cm",
        "c",
        "-n",
        "keep",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let kubeconfig_before = std::fs::read_to_string(s.kubeconfig()).unwrap();

    let status = s.stop(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");

    s.restart().unwrap();
    // Same CA and credentials: the old kubeconfig keeps working.
    let after = std::fs::read_to_string(s.kubeconfig()).unwrap();
    let ca = |k: &str| {
        k.lines()
            .find(|l| l.contains("certificate-authority"))
            .map(str::to_string)
    };
    assert_eq!(
        ca(&kubeconfig_before),
        ca(&after),
        "CA must be reused on restart"
    );
    assert_eq!(
        s.kubectl_ok(&[
            "get",
            "cm",
            "c",
            "-n",
            "keep",
            "-o",
            "jsonpath={.metadata.uid}"
        ]),
        uid
    );
    // Resource versions keep increasing across restarts.
    let rv1: u64 = s
        .kubectl_ok(&[
            "get",
            "cm",
            "c",
            "-n",
            "keep",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .parse()
        .unwrap();
    s.kubectl_ok(&["create", "configmap", "d", "-n", "keep"]);
    let rv2: u64 = s
        .kubectl_ok(&[
            "get",
            "cm",
            "d",
            "-n",
            "keep",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .parse()
        .unwrap();
    assert!(rv2 > rv1, "{rv2} > {rv1}");
}

/// Creates configmaps from `workers` threads as fast as the server acknowledges them, kills
/// the server with SIGKILL mid-storm, restarts it, and checks every acknowledged object.
fn storm_then_kill9(s: &mut testkit::TestServer, round: usize) -> usize {
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers = 6;
    let mut handles = Vec::new();
    for w in 0..workers {
        let (acked, stop) = (acked.clone(), stop.clone());
        let base = s.curl_cmd("POST", "/api/v1/namespaces/default/configmaps");
        let prog = base.get_program().to_owned();
        let args: Vec<_> = base.get_args().map(|a| a.to_owned()).collect();
        handles.push(std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("r{round}-w{w}-{i}");
                let body = format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"i":"{i}"}}}}"#);
                let out = std::process::Command::new(&prog)
                    .args(&args)
                    .args(["-H", "Content-Type: application/json", "--data-binary", &body])
                    .output()
                    .unwrap();
                if testkit::split_status(&out).0 == 201 {
                    acked.lock().unwrap().push(name);
                }
                i += 1;
            }
        }));
    }
    // Let the storm run, then crash the server in the middle of it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 150 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    s.kill9();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 20,
        "storm made too little progress: {} acks",
        acked.len()
    );

    s.restart().expect("store must open cleanly after kill -9");
    let out = s.kubectl_ok(&["get", "configmaps", "-o", "name"]);
    let present: std::collections::HashSet<String> = out
        .lines()
        .map(|l| l.trim().trim_start_matches("configmap/").to_string())
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|n| !present.contains(*n)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
    acked.len()
}

#[test]
fn kill9_during_write_storm_loses_no_acknowledged_write() {
    let mut s = testkit::server!();
    let a = storm_then_kill9(&mut s, 1);
    let b = storm_then_kill9(&mut s, 2);
    eprintln!("acknowledged writes: round 1 {a}, round 2 {b}");
    // The server still works normally afterwards.
    s.kubectl_ok(&["create", "configmap", "after-crash"]);
    s.kubectl_ok(&["delete", "configmap", "after-crash"]);
}

#[test]
fn kill9_keeps_updates_and_deletes() {
    let mut s = testkit::server!();
    s.kubectl_ok(&["create", "configmap", "upd", "--from-literal=v=1"]);
    s.kubectl_ok(&["create", "configmap", "del"]);
    s.kubectl_ok(&["patch", "cm", "upd", "-p", r#"{"data":{"v":"2"}}"#]);
    s.kubectl_ok(&["delete", "cm", "del"]);
    s.kill9();
    s.restart().unwrap();
    assert_eq!(
        s.kubectl_ok(&["get", "cm", "upd", "-o", "jsonpath={.data.v}"]),
        "2"
    );
    assert_contains(
        &s.kubectl_err(&["get", "cm", "del"]),
        r#"configmaps "del" not found"#,
    );
}
