//! Watch fan-out: `--watchers` concurrent watches on the ConfigMaps of one namespace (from
//! the list's resourceVersion, ten watches per HTTP/2 connection), then `--writes`
//! ConfigMap creates by 16 closed-loop writers. Reports events delivered per second (all
//! events received by all watchers / time from the first write to the last event
//! received) and the lag of each event: receipt minus the moment its write was sent.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use http_body_util::BodyExt;
use hyper::StatusCode;

use super::{configmap, Env, Running};
use crate::client::Client;
use crate::procs::{mib, CpuMeter};
use crate::stats::{ms, print_table, summarize};
use crate::StoreChoice;

const NS: &str = "watch";
const WRITERS: usize = 16;
const WATCHES_PER_CONN: usize = 10;

pub async fn run(env: &Env) -> Result<()> {
    for store in env.stores(StoreChoice::Sqlite) {
        let srv = env.start(store).await?;
        srv.create_namespace(NS).await?;
        measure(env, &srv).await?;
    }
    Ok(())
}

/// The index `i` of an event line for ConfigMap `w-<i>`, found without parsing the JSON.
fn object_index(line: &[u8]) -> Option<usize> {
    const KEY: &[u8] = br#""name":"w-"#;
    let at = line.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&line[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

struct Watched {
    lags: Vec<Duration>,
    last: Option<Instant>,
}

async fn measure(env: &Env, srv: &Running) -> Result<()> {
    let (w, n) = (env.args.watchers, env.args.writes);
    let coll = format!("/api/v1/namespaces/{NS}/configmaps");
    let list = srv
        .client
        .get(&coll)
        .await?
        .expect(StatusCode::OK, "list")?
        .json()?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();

    let base = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let watch_client = Client::connect(&srv.kc, w.div_ceil(WATCHES_PER_CONN)).await?;
    let mut bodies = Vec::with_capacity(w);
    for _ in 0..w {
        let (status, body) = watch_client
            .stream(&format!("{coll}?watch=1&resourceVersion={rv}"))
            .await?;
        if status != StatusCode::OK {
            bail!("watch: HTTP {status}");
        }
        bodies.push(body);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut watchers = Vec::with_capacity(w);
    for mut body in bodies {
        let sent = sent.clone();
        watchers.push(tokio::spawn(async move {
            let mut out = Watched {
                lags: Vec::with_capacity(n),
                last: None,
            };
            let mut buf: Vec<u8> = Vec::new();
            while out.lags.len() < n {
                let frame = match tokio::time::timeout_at(deadline.into(), body.frame()).await {
                    Ok(Some(Ok(f))) => f,
                    _ => break,
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let now = Instant::now();
                buf.extend_from_slice(&data);
                let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
                    continue;
                };
                for line in buf[..end].split(|&b| b == b'\n') {
                    if let Some(i) = object_index(line).filter(|&i| i < n) {
                        let at = base + Duration::from_nanos(sent[i].load(Ordering::Acquire));
                        out.lags.push(now.saturating_duration_since(at));
                        out.last = Some(now);
                    }
                }
                buf.drain(..=end);
            }
            out
        }));
    }
    // Let every watch register with the store before the first write.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let cpu = CpuMeter::start(srv.pid()?);
    let first_write = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let (client, next, sent, coll) =
            (srv.client.clone(), next.clone(), sent.clone(), coll.clone());
        writers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                sent[i].store(base.elapsed().as_nanos() as u64, Ordering::Release);
                client
                    .post(&coll, configmap(&format!("w-{i}"), "v0"))
                    .await?
                    .expect(StatusCode::CREATED, "write")?;
            }
        }));
    }
    for t in writers {
        t.await??;
    }
    let writes_took = first_write.elapsed();
    let mut lags = Vec::with_capacity(w * n);
    let mut last = first_write;
    let mut short = 0;
    for t in watchers {
        let got = t.await?;
        if got.lags.len() < n {
            short += 1;
        }
        if let Some(l) = got.last {
            last = last.max(l);
        }
        lags.extend(got.lags);
    }
    let cpu = cpu.stop();
    let delivered = lags.len();
    if short > 0 {
        eprintln!("  watch: {short} of {w} watchers did not receive all {n} events within 60 s");
    }
    let s = summarize(lags);
    print_table(
        &format!(
            "watch fan-out: {w} watchers x {n} ConfigMap creates by {WRITERS} writers ({}; server RSS after {})",
            srv.store.name(),
            mib(srv.rss()?)
        ),
        &[
            "events", "events/s", "writes/s", "lag p50 ms", "lag p99 ms", "lag max ms",
            "server cores", "bench cores",
        ],
        &[vec![
            format!("{delivered}/{}", w * n),
            super::rate(delivered, last - first_write),
            super::rate(n, writes_took),
            ms(s.p50),
            ms(s.p99),
            ms(s.max),
            format!("{:.2}", cpu.server_cores),
            format!("{:.2}", cpu.client_cores),
        ]],
    );
    Ok(())
}
