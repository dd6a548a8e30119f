//! Node death to pods Running elsewhere, per failover profile: a server with
//! `--failover-profile <p>`, `--failover-nodes` simulated nodes (lease 4 s for the fast
//! profile, the kubelet's 40 s otherwise), one Deployment of `--failover-replicas` pods
//! spread over them. The node hosting the most pods is stopped (its lease and status stop,
//! as when a machine loses power) and the clock runs until:
//!
//! - the node controller marks it Ready=Unknown,
//! - every pod it hosted is gone or terminating (evicted),
//! - the Deployment again has all its replicas Running and Ready on live nodes.
//!
//! The pods are polled every 100 ms with a list (a few dozen objects), so each time is
//! good to about 0.1 s.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hyper::StatusCode;
use serde_json::Value;

use super::schedule::profile_flags;
use super::{Env, Running};
use crate::stats::print_table;
use crate::{Profile, StoreChoice};

const NS: &str = "failover";

fn deployment_body(replicas: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"web"}},"spec":{{"replicas":{replicas},"selector":{{"matchLabels":{{"app":"web"}}}},"template":{{"metadata":{{"labels":{{"app":"web"}}}},"spec":{{"containers":[{{"name":"app","image":"registry.k8s.io/pause:3.10"}}]}}}}}}}}"#
    ))
}

struct PodView {
    name: String,
    node: String,
    ready: bool,
    terminating: bool,
}

async fn pods(srv: &Running) -> Result<Vec<PodView>> {
    let list = srv
        .client
        .get(&format!("/api/v1/namespaces/{NS}/pods"))
        .await?
        .expect(StatusCode::OK, "list pods")?
        .json()?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    Ok(items
        .iter()
        .map(|p: &Value| PodView {
            name: p["metadata"]["name"].as_str().unwrap_or("").to_string(),
            node: p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
            terminating: !p["metadata"]["deletionTimestamp"].is_null(),
            ready: p["status"]["phase"] == "Running"
                && p["status"]["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                    .map(|c| c["status"] == "True")
                    .unwrap_or(false),
        })
        .collect())
}

async fn node_ready(srv: &Running, name: &str) -> Result<bool> {
    let node = srv
        .client
        .get(&format!("/api/v1/nodes/{name}"))
        .await?
        .expect(StatusCode::OK, "get node")?
        .json()?;
    Ok(node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| c["status"] == "True")
        .unwrap_or(false))
}

/// Seconds from the stop to each milestone.
struct Timeline {
    not_ready: f64,
    evicted: f64,
    recovered: f64,
    moved: usize,
}

async fn one_run(env: &Env, profile: Profile) -> Result<Timeline> {
    let (server_flags, agent_flags) = profile_flags(profile);
    let store = env.stores(StoreChoice::Sqlite)[0];
    let mut srv = env.start_with(store, &server_flags).await?;
    srv.simulate(&env.skiff, env.args.failover_nodes, &agent_flags)
        .context("starting simulated nodes")?;
    srv.create_namespace(NS).await?;
    let replicas = env.args.failover_replicas;
    srv.client
        .post(
            &format!("/apis/apps/v1/namespaces/{NS}/deployments"),
            deployment_body(replicas),
        )
        .await?
        .expect(StatusCode::CREATED, "create deployment")?;
    let settle = Instant::now() + Duration::from_secs(120);
    loop {
        let ps = pods(&srv).await?;
        if ps.iter().filter(|p| p.ready && !p.terminating).count() == replicas {
            break;
        }
        if Instant::now() > settle {
            bail!("the Deployment did not become Ready within 2 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The victim: the node with the most pods.
    let ps = pods(&srv).await?;
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for p in &ps {
        *per_node.entry(p.node.as_str()).or_default() += 1;
    }
    let victim = per_node
        .iter()
        .max_by_key(|(n, c)| (**c, std::cmp::Reverse(n.to_string())))
        .map(|(n, _)| n.to_string())
        .context("no pods")?;
    let hosted: HashSet<String> = ps
        .iter()
        .filter(|p| p.node == victim)
        .map(|p| p.name.clone())
        .collect();

    let agent = srv.agent.as_mut().context("no simulator")?;
    agent.command(&format!("stop {victim}"))?;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(900);
    let (mut not_ready, mut evicted, mut recovered) = (None, None, None);
    while recovered.is_none() || not_ready.is_none() || evicted.is_none() {
        if Instant::now() > deadline {
            bail!("no recovery within 15 minutes of stopping {victim}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let at = t0.elapsed().as_secs_f64();
        if not_ready.is_none() && !node_ready(&srv, &victim).await? {
            not_ready = Some(at);
        }
        let ps = pods(&srv).await?;
        if evicted.is_none()
            && !ps
                .iter()
                .any(|p| hosted.contains(&p.name) && !p.terminating)
        {
            evicted = Some(at);
        }
        let healthy = ps
            .iter()
            .filter(|p| p.ready && !p.terminating && p.node != victim)
            .count();
        if recovered.is_none() && healthy >= replicas {
            recovered = Some(at);
        }
    }
    Ok(Timeline {
        not_ready: not_ready.unwrap_or(f64::NAN),
        evicted: evicted.unwrap_or(f64::NAN),
        recovered: recovered.unwrap_or(f64::NAN),
        moved: hosted.len(),
    })
}

pub async fn run(env: &Env) -> Result<()> {
    let mut rows = Vec::new();
    let profiles = if env.args.profiles.is_empty() {
        vec![Profile::Fast, Profile::Upstream]
    } else {
        env.args.profiles.clone()
    };
    for profile in profiles {
        let runs = match profile {
            Profile::Fast => env.args.failover_runs,
            // Each upstream run takes over six minutes (50 s grace + 300 s tolerations).
            Profile::Upstream => 1,
        };
        for run in 1..=runs {
            let t = one_run(env, profile)
                .await
                .with_context(|| format!("{profile:?} profile, run {run}"))?;
            println!(
                "  {profile:?} run {run}: NotReady {:.1} s, evicted {:.1} s, all Running elsewhere {:.1} s",
                t.not_ready, t.evicted, t.recovered
            );
            rows.push(vec![
                format!("{profile:?}"),
                run.to_string(),
                t.moved.to_string(),
                format!("{:.1}", t.not_ready),
                format!("{:.1}", t.evicted),
                format!("{:.1}", t.recovered),
            ]);
        }
    }
    print_table(
        &format!(
            "failover: a simulated node stops; {} nodes, one Deployment of {} pods",
            env.args.failover_nodes, env.args.failover_replicas
        ),
        &[
            "profile",
            "run",
            "pods on the node",
            "NotReady after s",
            "evicted after s",
            "all Running elsewhere after s",
        ],
        &rows,
    );
    Ok(())
}
