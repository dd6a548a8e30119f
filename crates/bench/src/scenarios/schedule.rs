//! Scheduling throughput end to end: `--nodes` Node objects (each 32 cores, 256 GiB,
//! 110 pods, created with their status as a kubelet registers them), then `--pods`
//! pending pods (100m CPU, 128 MiB each) created through the API by 32 closed-loop
//! clients, while one watch on the namespace counts each pod the first time it is seen
//! bound (`spec.nodeName` set: the binding is persisted). Reports pods bound per second
//! from the first create to the last binding, the create rate alone, the lag of the last
//! binding behind the last create, and the server's CPU and RSS. The scheduler runs inside
//! the server, as `skiff server` starts it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::StatusCode;

use super::{Env, Running};
use crate::procs::{mib, CpuMeter};
use crate::stats::print_table;
use crate::StoreChoice;

const NS: &str = "sched";
const CREATORS: usize = 32;

fn node_body(name: &str) -> Bytes {
    let res = r#"{"cpu":"32","memory":"256Gi","pods":"110"}"#;
    Bytes::from(format!(
        r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{name}","labels":{{"kubernetes.io/hostname":"{name}","kubernetes.io/os":"linux"}}}},"status":{{"capacity":{res},"allocatable":{res},"conditions":[{{"type":"Ready","status":"True","reason":"KubeletReady"}}]}}}}"#
    ))
}

fn pod_body(i: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"s-{i}","labels":{{"app":"sched-bench"}}}},"spec":{{"containers":[{{"name":"app","image":"registry.k8s.io/pause:3.10","resources":{{"requests":{{"cpu":"100m","memory":"128Mi"}}}}}}]}}}}"#
    ))
}

/// `i` of pod `s-<i>` in a watch line, without parsing the JSON.
fn pod_index(line: &[u8]) -> Option<usize> {
    const KEY: &[u8] = br#""name":"s-"#;
    let at = line.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&line[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

fn is_bound(line: &[u8]) -> bool {
    const KEY: &[u8] = br#""nodeName":""#;
    line.windows(KEY.len()).any(|w| w == KEY)
}

/// Run `n` requests through `parallel` closed-loop workers; `make(i)` builds request `i`.
async fn post_all(
    srv: &Running,
    path: &str,
    n: usize,
    parallel: usize,
    make: fn(usize) -> Bytes,
) -> Result<()> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        let client = srv.client.clone();
        let next = next.clone();
        let path = path.to_string();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                let r = client.post(&path, make(i)).await?;
                if r.status != StatusCode::CREATED {
                    bail!(
                        "POST {path} #{i}: HTTP {}: {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

pub async fn run(env: &Env) -> Result<()> {
    let mut rows = Vec::new();
    let store = env.stores(StoreChoice::Sqlite)[0];
    for &nodes in &env.args.nodes {
        let pods = env.args.pods;
        let srv = env.start(store).await?;
        srv.create_namespace(NS).await?;
        let t = Instant::now();
        post_all(&srv, "/api/v1/nodes", nodes, 16, |i| {
            node_body(&format!("node-{i}"))
        })
        .await
        .context("creating nodes")?;
        println!(
            "  {nodes} nodes created in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        // Let the scheduler's informers take the nodes in before timing starts.
        tokio::time::sleep(Duration::from_secs(2)).await;

        let coll = format!("/api/v1/namespaces/{NS}/pods");
        let list = srv
            .client
            .get(&coll)
            .await?
            .expect(StatusCode::OK, "list pods")?
            .json()?;
        let rv = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("0")
            .to_string();
        let (status, mut body) = srv
            .client
            .stream(&format!("{coll}?watch=1&resourceVersion={rv}"))
            .await?;
        if status != StatusCode::OK {
            bail!("watch pods: HTTP {status}");
        }
        let cpu = CpuMeter::start(srv.pid()?);
        let start = Instant::now();
        let watcher = tokio::spawn(async move {
            let mut bound = vec![false; pods];
            let mut count = 0usize;
            let mut last = None;
            let mut buf: Vec<u8> = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(600);
            while count < pods {
                let frame = match tokio::time::timeout_at(deadline.into(), body.frame()).await {
                    Ok(Some(Ok(f))) => f,
                    _ => break,
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buf.extend_from_slice(&data);
                let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
                    continue;
                };
                for line in buf[..end].split(|&b| b == b'\n') {
                    if !is_bound(line) {
                        continue;
                    }
                    if let Some(i) = pod_index(line).filter(|i| *i < pods) {
                        if !bound[i] {
                            bound[i] = true;
                            count += 1;
                            last = Some(Instant::now());
                        }
                    }
                }
                buf.drain(..=end);
            }
            (count, last)
        });
        post_all(&srv, &coll, pods, CREATORS, pod_body)
            .await
            .context("creating pods")?;
        let created = start.elapsed();
        let (bound, last) = watcher.await?;
        let cpu = cpu.stop();
        let rss = srv.rss()?;
        let end = last.map(|l| l.duration_since(start)).unwrap_or(created);
        if bound < pods {
            eprintln!(
                "  only {bound} of {pods} pods were seen bound within 10 minutes\n{}",
                srv.server.log_tail(20)
            );
        }
        rows.push(vec![
            nodes.to_string(),
            pods.to_string(),
            bound.to_string(),
            format!("{:.0}", pods as f64 / created.as_secs_f64()),
            format!("{:.0}", bound as f64 / end.as_secs_f64()),
            format!("{:.2}", end.as_secs_f64()),
            format!("{:.0}", end.saturating_sub(created).as_secs_f64() * 1000.0),
            format!("{:.2}", cpu.server_cores),
            format!("{:.2}", cpu.client_cores),
            mib(rss),
        ]);
    }
    print_table(
        "schedule: pending pods created through the API, bound by the in-process scheduler",
        &[
            "nodes",
            "pods",
            "bound",
            "creates/s",
            "bound/s (e2e)",
            "total s",
            "last bind after last create ms",
            "server cores",
            "bench cores",
            "server RSS",
        ],
        &rows,
    );
    Ok(())
}
