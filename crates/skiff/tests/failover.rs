//! Node failure end to end: a Deployment's pods on a simulated node that dies are
//! replaced on the other nodes. With the fast failover profile this happens within
//! seconds; the test prints how long it took (figures belong in BENCHMARKS.md, from the
//! failover benchmark) and asserts only the outcome.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use testkit::{eventually, ServerOptions, TestServer};

/// Pods of the deployment that are Running and Ready and not being deleted, by node.
fn ready_pods_by_node(s: &TestServer, app: &str) -> BTreeMap<String, usize> {
    let json = s.kubectl_json(&["get", "pods", "-l", &format!("app={app}"), "-o", "json"]);
    let mut by_node = BTreeMap::new();
    for pod in json["items"].as_array().cloned().unwrap_or_default() {
        let terminating = pod["metadata"]["deletionTimestamp"].is_string();
        let ready = pod["status"]["conditions"]
            .as_array()
            .map(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .unwrap_or(false);
        if ready && !terminating && pod["status"]["phase"] == "Running" {
            let node = pod["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            *by_node.entry(node).or_default() += 1;
        }
    }
    by_node
}

#[test]
fn a_dead_nodes_pods_are_replaced_elsewhere_with_the_fast_profile() -> Result<()> {
    let s = TestServer::start(
        ServerOptions::new(env!("CARGO_BIN_EXE_skiff")).arg("--failover-profile=fast"),
    )?;
    let mut nodes = testkit::simulated_nodes!(&s, 3, &["--node-lease-duration-seconds", "4"]);
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &common::deployment("web", 6, "busybox"),
    );
    let before = eventually(Duration::from_secs(90), || {
        let by_node = ready_pods_by_node(&s, "web");
        if by_node.values().sum::<usize>() == 6 {
            Ok(by_node)
        } else {
            bail!("ready pods by node: {by_node:?}")
        }
    })?;
    let (victim, lost) = before
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(node, n)| (node.clone(), *n))
        .expect("some node has pods");
    assert!(lost > 0);

    let died = Instant::now();
    nodes.stop(&victim)?;
    let after = eventually(Duration::from_secs(120), || {
        let by_node = ready_pods_by_node(&s, "web");
        let elsewhere: usize = by_node
            .iter()
            .filter(|(node, _)| **node != victim)
            .map(|(_, n)| n)
            .sum();
        if elsewhere == 6 {
            Ok(by_node)
        } else {
            bail!("ready pods by node: {by_node:?}")
        }
    })
    .map_err(|e| anyhow::anyhow!("{e}\nserver log:\n{}", s.log_tail(40)))?;
    println!(
        "{lost} pods of dead node {victim} replaced in {:.1} s: {after:?}",
        died.elapsed().as_secs_f64()
    );
    let node_line = s.kubectl_ok(&["get", "node", &victim, "--no-headers"]);
    assert!(node_line.contains("NotReady"), "{node_line}");
    Ok(())
}
