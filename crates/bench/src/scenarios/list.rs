//! Listing many pods: create `--pods` minimal Pods (32 concurrent creators), then time
//! `--lists` sequential full lists of the namespace as JSON, as `as=Table` (what
//! `kubectl get` asks for), and as kubectl really fetches a table (pages of 500 with
//! continue tokens, all pages; a quarter as many of those), and read the server's RSS
//! after. Meanwhile a probe on its own connection GETs one small object every 10 ms
//! (latency from its scheduled time), showing what a big list does to everyone else.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hyper::{Method, StatusCode};

use super::{pod, Env, Running};
use crate::client::{Client, ACCEPT_TABLE};
use crate::procs::{self, mib, CpuMeter};
use crate::stats::{ms, print_table, summarize};
use crate::StoreChoice;

const NS: &str = "list";
const CREATORS: usize = 32;
const PROBE_PERIOD: Duration = Duration::from_millis(10);

/// GETs `path` every [`PROBE_PERIOD`] until stopped; latencies from the scheduled times.
struct Probe {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Duration>>,
}

impl Probe {
    fn start(client: Client, path: String) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let t0 = Instant::now();
            let mut lat = Vec::new();
            let mut i = 0u32;
            while !flag.load(Ordering::Relaxed) {
                let at = t0 + PROBE_PERIOD * i;
                i += 1;
                tokio::time::sleep_until(at.into()).await;
                if let Ok(r) = client.get(&path).await {
                    if r.status == StatusCode::OK {
                        lat.push(at.elapsed());
                    }
                }
            }
            lat
        });
        Probe { stop, task }
    }

    async fn stop(self) -> Result<crate::stats::Summary> {
        self.stop.store(true, Ordering::Relaxed);
        Ok(summarize(self.task.await?))
    }
}

pub async fn run(env: &Env) -> Result<()> {
    for store in env.stores(StoreChoice::Sqlite) {
        let srv = env.start(store).await?;
        srv.create_namespace(NS).await?;
        measure(env, &srv).await?;
    }
    Ok(())
}

async fn create_pods(srv: &Running, n: usize) -> Result<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CREATORS {
        let (client, next) = (srv.client.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let path = format!("/api/v1/namespaces/{NS}/pods");
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                client
                    .post(&path, pod(&format!("pod-{i:05}")))
                    .await?
                    .expect(StatusCode::CREATED, "creating a pod")?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(start.elapsed())
}

/// One list the way kubectl pages it: `limit=500`, following `continue` to the end.
async fn paged_table(srv: &Running, page: usize) -> Result<(usize, usize)> {
    let mut token = String::new();
    let (mut rows, mut bytes) = (0, 0);
    loop {
        let mut path = format!("/api/v1/namespaces/{NS}/pods?limit={page}");
        if !token.is_empty() {
            path.push_str("&continue=");
            path.extend(form_urlencoded::byte_serialize(token.as_bytes()));
        }
        let r = srv
            .client
            .request(Method::GET, &path, None, Some(ACCEPT_TABLE))
            .await?
            .expect(StatusCode::OK, "paged table list")?;
        bytes += r.body.len();
        let v = r.json()?;
        rows += v["rows"].as_array().map(|a| a.len()).unwrap_or(0);
        match v["metadata"]["continue"].as_str() {
            Some(t) if !t.is_empty() => token = t.to_string(),
            _ => return Ok((rows, bytes)),
        }
    }
}

async fn measure(env: &Env, srv: &Running) -> Result<()> {
    let n = env.args.pods;
    let pid = srv.pid()?;
    let rss_before = srv.rss()?;
    let cpu = CpuMeter::start(pid);
    let took = create_pods(srv, n).await?;
    let cpu = cpu.stop();
    let rss_created = srv.rss()?;
    println!(
        "\n  list: created {n} pods in {:.1} s ({}/s, {CREATORS} concurrent; server {:.2} cores, bench {:.2})",
        took.as_secs_f64(),
        super::rate(n, took),
        cpu.server_cores,
        cpu.client_cores
    );

    // The probe has its own connection, so it does not queue behind list bytes.
    let probe_client = Client::connect(&srv.kc, 1).await?;
    let probe_path = format!("/api/v1/namespaces/{NS}");
    let idle = Probe::start(probe_client.clone(), probe_path.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = idle.stop().await?;

    let path = format!("/api/v1/namespaces/{NS}/pods");
    let mut rows = Vec::new();
    for (label, accept) in [("JSON", None), ("as=Table", Some(ACCEPT_TABLE))] {
        let mut lat = Vec::new();
        let mut size = 0;
        let probe = Probe::start(probe_client.clone(), probe_path.clone());
        let cpu = CpuMeter::start(pid);
        for _ in 0..env.args.lists {
            let t = Instant::now();
            let r = srv
                .client
                .request(Method::GET, &path, None, accept)
                .await?
                .expect(StatusCode::OK, "list")?;
            lat.push(t.elapsed());
            size = r.body.len();
            let v = r.json()?;
            let got = v["items"]
                .as_array()
                .or(v["rows"].as_array())
                .map(|a| a.len())
                .unwrap_or(0);
            if got != n {
                bail!("{label} list returned {got} of {n} pods");
            }
        }
        let cpu = cpu.stop();
        let p = probe.stop().await?;
        let s = summarize(lat);
        rows.push(vec![
            format!("{label}, one request"),
            env.args.lists.to_string(),
            ms(s.p50),
            ms(s.p99),
            ms(s.max),
            mib(size as u64),
            format!("{:.2}", cpu.server_cores),
            ms(p.p50),
            ms(p.p99),
            ms(p.max),
        ]);
    }
    {
        let mut lat = Vec::new();
        let mut size = 0;
        let paged = (env.args.lists / 4).max(1);
        let probe = Probe::start(probe_client.clone(), probe_path.clone());
        let cpu = CpuMeter::start(pid);
        for _ in 0..paged {
            let t = Instant::now();
            let (got, bytes) = paged_table(srv, 500).await.context("paged table list")?;
            lat.push(t.elapsed());
            size = bytes;
            if got != n {
                bail!("paged table list returned {got} of {n} rows");
            }
        }
        let cpu = cpu.stop();
        let p = probe.stop().await?;
        let s = summarize(lat);
        rows.push(vec![
            "as=Table, limit=500 pages (kubectl)".into(),
            paged.to_string(),
            ms(s.p50),
            ms(s.p99),
            ms(s.max),
            mib(size as u64),
            format!("{:.2}", cpu.server_cores),
            ms(p.p50),
            ms(p.p99),
            ms(p.max),
        ]);
    }
    let rss_after = srv.rss()?;
    let peak = procs::peak_rss_bytes(pid)?;
    print_table(
        &format!(
            "list: {n} pods in one namespace, sequential lists ({}); probe = GET of one namespace every 10 ms meanwhile (idle: p50 {} p99 {} ms)",
            srv.store.name(),
            ms(idle.p50),
            ms(idle.p99)
        ),
        &[
            "list", "lists", "p50 ms", "p99 ms", "max ms", "response", "server cores",
            "probe p50", "probe p99", "probe max",
        ],
        &rows,
    );
    print_table(
        "list: server RSS",
        &["when", "RSS"],
        &[
            vec!["before creating pods".into(), mib(rss_before)],
            vec![format!("after creating {n} pods"), mib(rss_created)],
            vec!["after the lists".into(), mib(rss_after)],
            vec!["peak (VmHWM)".into(), mib(peak)],
        ],
    );
    Ok(())
}
