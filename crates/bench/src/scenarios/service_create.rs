//! Creating Services: the API server allocates each a cluster IP (and every fifth, of type
//! NodePort, a node port), so this measures the allocator as the number of Services grows.
//! `--services` Services (default 10,000) are created by 32 concurrent writers into one
//! server (`--disable-agent`, as every bench server); printed: the total, and creates/s
//! over each tenth of the run, so a cost that grows with the number of Services shows as
//! a falling rate. Run it against an older binary with `--skiff` to compare.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use hyper::StatusCode;

use super::{Env, Store};
use crate::stats::print_table;
use crate::StoreChoice;

const WRITERS: usize = 32;
const NS: &str = "default";

fn service(i: usize) -> Bytes {
    let node_port = i.is_multiple_of(5);
    Bytes::from(
        serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("s-{i}")},
            "spec": {
                "type": if node_port { "NodePort" } else { "ClusterIP" },
                "selector": {"app": format!("a-{i}")},
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
            }
        })
        .to_string(),
    )
}

pub async fn run(env: &Env) -> Result<()> {
    let n = env.args.services;
    let mut rows = Vec::new();
    for store in env.stores(StoreChoice::Sqlite) {
        rows.push(measure(env, store, n).await?);
    }
    let mut header = vec!["store".to_string(), "total s".to_string()];
    for k in 1..=10 {
        header.push(format!("{}..{}", (k - 1) * n / 10, k * n / 10));
    }
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    print_table(
        &format!("creating {n} Services (every 5th NodePort), {WRITERS} writers: total, then creates/s per tenth"),
        &header,
        &rows,
    );
    Ok(())
}

async fn measure(env: &Env, store: Store, n: usize) -> Result<Vec<String>> {
    let srv = env.start(store).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let client = srv.client.clone();
        let next = next.clone();
        writers.push(tokio::spawn(async move {
            let mut done: Vec<Duration> = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(done);
                }
                client
                    .post(&format!("/api/v1/namespaces/{NS}/services"), service(i))
                    .await?
                    .expect(StatusCode::CREATED, &format!("creating Service s-{i}"))?;
                done.push(started.elapsed());
            }
        }));
    }
    let mut finished = Vec::with_capacity(n);
    for w in writers {
        finished.extend(w.await??);
    }
    let total = started.elapsed();
    if finished.len() != n {
        bail!("{} of {n} Services created", finished.len());
    }
    finished.sort();
    let mut row = vec![
        store.name().to_string(),
        format!("{:.1}", total.as_secs_f64()),
    ];
    let mut from = Duration::ZERO;
    for k in 1..=10 {
        let last = (k * n / 10).max(1) - 1;
        let to = finished[last];
        let count = k * n / 10 - (k - 1) * n / 10;
        row.push(format!(
            "{:.0}",
            count as f64 / (to - from).as_secs_f64().max(1e-9)
        ));
        from = to;
    }
    eprintln!(
        "service-create: {n} Services on {} in {:.1} s",
        store.name(),
        total.as_secs_f64()
    );
    Ok(row)
}
