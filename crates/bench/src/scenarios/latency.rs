//! Single-object latency at a steady open-loop rate: ConfigMap create, then get, then
//! update (each object once, with its resourceVersion as precondition), `--rate` requests/s
//! for `--secs` each.
//!
//! Requests are issued on a fixed clock by a pacer thread (not by the previous response),
//! and each latency is measured from the request's *scheduled* time, so a server stall
//! shows up in the latency of every request that should have been sent during it instead
//! of being hidden by a client that waits (coordinated omission).

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use bytes::Bytes;
use hyper::StatusCode;

use super::{configmap, Env, Running};
use crate::procs::{mib, CpuMeter};
use crate::stats::{ms, print_table, summarize};
use crate::StoreChoice;

const NS: &str = "latency";

/// One request of an open-loop run.
pub struct Sample {
    /// Completion minus scheduled time.
    pub latency: Duration,
    /// How late the request started relative to its schedule (client-side delay).
    pub start_lag: Duration,
    pub done: Instant,
    pub err: Option<String>,
}

/// Issues `rate * secs` calls of `f(i)` on a fixed clock; returns the first scheduled
/// instant and one sample per call.
pub async fn open_loop<F, Fut>(rate: u64, secs: u64, f: F) -> Result<(Instant, Vec<Sample>)>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let n = (rate.max(1) * secs.max(1)) as usize;
    let period = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let handle = tokio::runtime::Handle::current();
    let f = Arc::new(f);
    let t0 = Instant::now() + Duration::from_millis(20);
    // A plain thread sleeps with ~50 µs precision; tokio's timer has 1 ms granularity,
    // which would add up to a millisecond of bias to every latency measured here.
    let pacer = std::thread::spawn(move || {
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let at = t0 + period * i as u32;
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            let f = f.clone();
            handles.push(handle.spawn(async move {
                let started = Instant::now();
                let r = f(i).await;
                let done = Instant::now();
                Sample {
                    latency: done - at,
                    start_lag: started.saturating_duration_since(at),
                    done,
                    err: r.err().map(|e| format!("{e:#}")),
                }
            }));
        }
        handles
    });
    let handles = tokio::task::spawn_blocking(move || pacer.join())
        .await?
        .map_err(|_| anyhow!("the pacer thread panicked"))?;
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(h.await?);
    }
    Ok((t0, out))
}

fn row(op: &str, t0: Instant, samples: Vec<Sample>, cpu: crate::procs::CpuUse) -> Vec<String> {
    let errors: Vec<&String> = samples.iter().filter_map(|s| s.err.as_ref()).collect();
    if let Some(e) = errors.first() {
        eprintln!("  {op}: {} errors, first: {e}", errors.len());
    }
    // Where the slow requests were: seconds (from the start) whose worst request took
    // over 50 ms, with that worst latency.
    let mut worst: std::collections::BTreeMap<u64, Duration> = Default::default();
    for s in &samples {
        let at = (s.done - s.latency).saturating_duration_since(t0).as_secs();
        let w = worst.entry(at).or_default();
        *w = (*w).max(s.latency);
    }
    let stalls: Vec<String> = worst
        .iter()
        .filter(|(_, w)| **w > Duration::from_millis(50))
        .map(|(sec, w)| format!("{sec}s:{}ms", w.as_millis()))
        .collect();
    if !stalls.is_empty() {
        eprintln!(
            "  {op}: seconds with a request over 50 ms: {}",
            stalls.join(" ")
        );
    }
    let ok = samples.len() - errors.len();
    let last = samples.iter().map(|s| s.done).max().unwrap_or(t0);
    let lag = summarize(samples.iter().map(|s| s.start_lag).collect());
    let s = summarize(samples.iter().map(|s| s.latency).collect());
    vec![
        op.to_string(),
        format!("{}/{}", ok, samples.len()),
        super::rate(ok, last - t0),
        ms(s.p50),
        ms(s.p90),
        ms(s.p99),
        ms(s.max),
        ms(lag.p99),
        format!("{:.2}", cpu.server_cores),
        format!("{:.2}", cpu.client_cores),
    ]
}

pub async fn run(env: &Env) -> Result<()> {
    for store in env.stores(StoreChoice::Sqlite) {
        let srv = env.start(store).await?;
        srv.create_namespace(NS).await?;
        measure(env, &srv).await?;
    }
    Ok(())
}

async fn measure(env: &Env, srv: &Running) -> Result<()> {
    let (rate, secs) = (env.args.rate, env.args.secs);
    let n = (rate * secs) as usize;
    let pid = srv.pid()?;
    let coll = format!("/api/v1/namespaces/{NS}/configmaps");
    let rvs: Arc<Vec<OnceLock<String>>> = Arc::new((0..n).map(|_| OnceLock::new()).collect());
    let mut rows = Vec::new();

    // create
    let cpu = CpuMeter::start(pid);
    let (c, p, r) = (srv.client.clone(), coll.clone(), rvs.clone());
    let (t0, samples) = open_loop(rate, secs, move |i| {
        let (c, p, r) = (c.clone(), p.clone(), r.clone());
        async move {
            let resp = c
                .post(&p, configmap(&format!("lat-{i}"), "v0"))
                .await?
                .expect(StatusCode::CREATED, "create")?;
            let rv = resp.json()?["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let _ = r[i].set(rv);
            Ok(())
        }
    })
    .await?;
    rows.push(row("create", t0, samples, cpu.stop()));

    // get
    let cpu = CpuMeter::start(pid);
    let (c, p) = (srv.client.clone(), coll.clone());
    let (t0, samples) = open_loop(rate, secs, move |i| {
        let (c, p) = (c.clone(), p.clone());
        async move {
            c.get(&format!("{p}/lat-{}", i % n))
                .await?
                .expect(StatusCode::OK, "get")?;
            Ok(())
        }
    })
    .await?;
    rows.push(row("get", t0, samples, cpu.stop()));

    // update: every object once, with the resourceVersion its create returned.
    let cpu = CpuMeter::start(pid);
    let (c, p, r) = (srv.client.clone(), coll.clone(), rvs.clone());
    let (t0, samples) = open_loop(rate, secs, move |i| {
        let (c, p, r) = (c.clone(), p.clone(), r.clone());
        async move {
            let rv = r[i % n]
                .get()
                .ok_or_else(|| anyhow!("lat-{} was not created", i % n))?;
            let body = format!(
                r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"lat-{}","labels":{{"app":"bench"}},"resourceVersion":"{rv}"}},"data":{{"key":"v1"}}}}"#,
                i % n
            );
            c.put(&format!("{p}/lat-{}", i % n), Bytes::from(body))
                .await?
                .expect(StatusCode::OK, "update")?;
            Ok(())
        }
    })
    .await?;
    rows.push(row("update", t0, samples, cpu.stop()));

    print_table(
        &format!(
            "latency: ConfigMap, open loop at {rate}/s for {secs} s each, from scheduled time ({}; server RSS after {})",
            srv.store.name(),
            mib(srv.rss()?)
        ),
        &[
            "op", "ok/sent", "achieved/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
            "pacer lag p99 ms", "server cores", "bench cores",
        ],
        &rows,
    );
    Ok(())
}
