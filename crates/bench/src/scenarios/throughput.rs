//! Peak durable creates/s: `--clients` closed-loop clients (each sends its next create when
//! the previous one answered) for `--secs`, on SQLite and on a private etcd started in the
//! same run, then the same with one client (the upstream anchor is etcd's ~580 durable
//! writes/s for one client). A create is counted when it returned 201: both stores
//! acknowledge only after an fsync.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use hyper::StatusCode;

use super::{configmap, Env, Running, Store};
use crate::procs::CpuMeter;
use crate::stats::{ms, print_table, summarize};
use crate::StoreChoice;

const NS: &str = "throughput";

struct Outcome {
    ok: usize,
    errors: usize,
    first_error: Option<String>,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

async fn closed_loop(srv: &Running, clients: usize, secs: u64, tag: &str) -> Result<Outcome> {
    let coll: Arc<str> = format!("/api/v1/namespaces/{NS}/configmaps").into();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = srv.client.clone();
        let coll = coll.clone();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let mut first_error = None;
            let mut i = 0usize;
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = client
                    .post(&coll, configmap(&format!("{tag}-{c}-{i}"), "v0"))
                    .await;
                i += 1;
                match r {
                    Ok(r) if r.status == StatusCode::CREATED => lat.push(t.elapsed()),
                    Ok(r) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| {
                            format!("HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body))
                        });
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (lat, errors, first_error)
        }));
    }
    let mut out = Outcome {
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for t in tasks {
        let (lat, errors, first) = t.await?;
        out.ok += lat.len();
        out.errors += errors;
        out.latencies.extend(lat);
        if out.first_error.is_none() {
            out.first_error = first;
        }
    }
    out.elapsed = start.elapsed();
    Ok(out)
}

pub async fn run(env: &Env) -> Result<()> {
    let mut rows = Vec::new();
    let mut peak: Vec<(Store, f64)> = Vec::new();
    let mut single: Vec<(Store, f64)> = Vec::new();
    for store in env.stores(StoreChoice::Both) {
        let srv = env.start(store).await?;
        srv.create_namespace(NS).await?;
        for (clients, secs) in [
            (env.args.clients, env.args.secs),
            (1, env.args.secs.div_ceil(2)),
        ] {
            let cpu = CpuMeter::start(srv.pid()?);
            let o = closed_loop(&srv, clients, secs, &format!("c{clients}")).await?;
            let cpu = cpu.stop();
            if let Some(e) = &o.first_error {
                eprintln!(
                    "  {} x{clients}: {} errors, first: {e}",
                    store.name(),
                    o.errors
                );
            }
            let per_s = o.ok as f64 / o.elapsed.as_secs_f64();
            if clients == 1 {
                single.push((store, per_s));
            } else {
                peak.push((store, per_s));
            }
            let s = summarize(o.latencies);
            rows.push(vec![
                store.name().to_string(),
                clients.to_string(),
                format!("{:.0}", per_s),
                o.ok.to_string(),
                o.errors.to_string(),
                ms(s.p50),
                ms(s.p99),
                ms(s.max),
                format!("{:.2}", cpu.server_cores),
                format!("{:.2}", cpu.client_cores),
            ]);
        }
    }
    print_table(
        &format!(
            "throughput: durable ConfigMap creates, closed loop ({} s with {} clients, {} s with 1)",
            env.args.secs,
            env.args.clients,
            env.args.secs.div_ceil(2)
        ),
        &[
            "store", "clients", "creates/s", "ok", "errors", "p50 ms", "p99 ms", "max ms",
            "server cores", "bench cores",
        ],
        &rows,
    );
    let ratio = |v: &[(Store, f64)]| {
        let get = |s| v.iter().find(|(x, _)| *x == s).map(|(_, r)| *r);
        match (get(Store::Sqlite), get(Store::Etcd)) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        }
    };
    if let Some(r) = ratio(&peak) {
        println!("  sqlite/etcd ratio, {} clients: {r:.2}x", env.args.clients);
    }
    if let Some(r) = ratio(&single) {
        println!("  sqlite/etcd ratio, 1 client: {r:.2}x");
    }
    Ok(())
}
