//! Store benchmark: prints durable create throughput (1 and 32 writers), update latency
//! (one client, 32 clients, and a steady 1,000 updates/s), and the SQLite file size under
//! constant updates of a constant key set. Figures only, no assertions.
//!
//!     cargo run --release -p store --example store_bench -- [--seconds N] [--backend sqlite|etcd|both]
//!         [--dir PATH] [--size-rounds N] [--commit-delay-us N]
//!
//! SQLite files go to `--dir` (default: the system temp dir; it must be a real disk, not
//! tmpfs, for fsync to cost what it costs). etcd is a private Debian etcd-server started
//! on free ports with its data in the temp dir.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use store::etcd::{EtcdOptions, EtcdStore};
use store::sqlite::{SqliteOptions, SqliteStore};
use store::testing::EtcdServer;
use store::Store;

struct Args {
    seconds: f64,
    backend: String,
    dir: std::path::PathBuf,
    size_rounds: usize,
    commit_delay: Option<Duration>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seconds: 5.0,
        backend: "both".into(),
        dir: std::env::temp_dir(),
        size_rounds: 50,
        commit_delay: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => {
                args.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?
            }
            "--backend" => args.backend = value()?,
            "--dir" => args.dir = value()?.into(),
            "--size-rounds" => {
                args.size_rounds = value()?
                    .parse()
                    .map_err(|e| format!("--size-rounds: {e}"))?
            }
            "--commit-delay-us" => {
                args.commit_delay = Some(Duration::from_micros(
                    value()?
                        .parse()
                        .map_err(|e| format!("--commit-delay-us: {e}"))?,
                ))
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if !["sqlite", "etcd", "both"].contains(&args.backend.as_str()) {
        return Err(format!(
            "--backend must be sqlite, etcd or both, not {:?}",
            args.backend
        ));
    }
    Ok(args)
}

fn value(n: usize) -> Bytes {
    // About the size of a small Kubernetes object in JSON.
    Bytes::from(vec![b'x'; n])
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// `writers` tasks create fresh keys for `secs`; returns (creates/s, sorted latencies).
async fn creates(
    store: &Arc<dyn Store>,
    tag: &str,
    writers: usize,
    secs: f64,
) -> (f64, Vec<Duration>) {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            let tag = tag.to_owned();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    store
                        .create(&format!("/bench/{tag}/w{w}/{i}"), value(512))
                        .await
                        .expect("create");
                    lat.push(t.elapsed());
                    i += 1;
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("writer task"));
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    all.sort();
    (rate, all)
}

/// `clients` tasks each update their own key in a loop (closed loop).
async fn updates(
    store: &Arc<dyn Store>,
    tag: &str,
    clients: usize,
    secs: f64,
) -> (f64, Vec<Duration>) {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let store = store.clone();
            let key = format!("/bench/{tag}/u{c}");
            tokio::spawn(async move {
                let mut cur = store.create(&key, value(512)).await.expect("create");
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    cur = store
                        .update(&key, value(512), cur.mod_revision)
                        .await
                        .expect("update");
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("update task"));
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    all.sort();
    (rate, all)
}

/// Open loop: one update every millisecond regardless of how long earlier ones take,
/// spread over 100 keys (what an apiserver sees at a steady 1,000 writes/s).
async fn steady_updates(
    store: &Arc<dyn Store>,
    tag: &str,
    per_sec: u64,
    secs: f64,
) -> Vec<Duration> {
    let keys = 100;
    let mut revs = Vec::new();
    for k in 0..keys {
        revs.push(
            store
                .create(&format!("/bench/{tag}/s{k}"), value(512))
                .await
                .expect("create")
                .mod_revision,
        );
    }
    let revs: Arc<Vec<std::sync::atomic::AtomicI64>> = Arc::new(
        revs.into_iter()
            .map(std::sync::atomic::AtomicI64::new)
            .collect(),
    );
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / per_sec));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = (per_sec as f64 * secs) as usize;
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        ticker.tick().await;
        let store = store.clone();
        let revs = revs.clone();
        let k = i % keys;
        let key = format!("/bench/{tag}/s{k}");
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            // Updates to one key may overlap when latency exceeds 100 ms; a conflict is
            // still a full round trip, so it counts as a sample.
            let expected = revs[k].load(std::sync::atomic::Ordering::Acquire);
            if let Ok(kv) = store.update(&key, value(512), expected).await {
                revs[k].fetch_max(kv.mod_revision, std::sync::atomic::Ordering::AcqRel);
            }
            t.elapsed()
        }));
    }
    let mut lat = Vec::with_capacity(total);
    for t in tasks {
        lat.push(t.await.expect("steady task"));
    }
    lat.sort();
    lat
}

async fn run_suite(name: &str, store: Arc<dyn Store>, secs: f64) {
    println!("\n== {name} ==");
    let (rate1, lat1) = creates(&store, &format!("{name}-c1"), 1, secs).await;
    println!(
        "durable creates/s, 1 writer:    {rate1:>9.0}   (p50 {}, p99 {})",
        ms(percentile(&lat1, 0.5)),
        ms(percentile(&lat1, 0.99))
    );
    let (rate32, lat32) = creates(&store, &format!("{name}-c32"), 32, secs).await;
    println!(
        "durable creates/s, 32 writers:  {rate32:>9.0}   (p50 {}, p99 {})",
        ms(percentile(&lat32, 0.5)),
        ms(percentile(&lat32, 0.99))
    );
    let (urate1, ulat1) = updates(&store, &format!("{name}-u1"), 1, secs).await;
    println!(
        "update, 1 client:    p50 {}  p99 {}  ({urate1:.0}/s)",
        ms(percentile(&ulat1, 0.5)),
        ms(percentile(&ulat1, 0.99))
    );
    let (urate32, ulat32) = updates(&store, &format!("{name}-u32"), 32, secs).await;
    println!(
        "update, 32 clients:  p50 {}  p99 {}  ({urate32:.0}/s)",
        ms(percentile(&ulat32, 0.5)),
        ms(percentile(&ulat32, 0.99))
    );
    let steady = steady_updates(&store, &format!("{name}-steady"), 1000, secs).await;
    println!(
        "update at a steady 1,000/s: p50 {}  p99 {}  ({} samples)",
        ms(percentile(&steady, 0.5)),
        ms(percentile(&steady, 0.99)),
        steady.len()
    );
    let t = Instant::now();
    let mut n = 0;
    while t.elapsed() < Duration::from_secs_f64(secs.min(2.0)) {
        store
            .get(&format!("/bench/{name}-u1/u0"))
            .await
            .expect("get");
        n += 1;
    }
    println!(
        "get, 1 client: {:.0}/s ({:.3} ms mean)",
        n as f64 / t.elapsed().as_secs_f64(),
        t.elapsed().as_secs_f64() * 1000.0 / n as f64
    );
}

/// 1,000 keys of 1 KiB updated round after round; compaction as `skiff server` runs it
/// (keep the newest 1,000 revisions), invoked after each round instead of every 5 minutes.
async fn sqlite_size(dir: &std::path::Path, rounds: usize) {
    println!("\n== SQLite file size, 1,000 keys x 1 KiB, every key updated each round ==");
    let path = dir.join(format!("store-bench-size-{}.db", std::process::id()));
    let store = SqliteStore::open(
        &path,
        SqliteOptions {
            compact_interval: None,
            ..Default::default()
        },
    )
    .expect("open sqlite");
    let keys = 1000;
    let mut revs = Vec::with_capacity(keys);
    for k in 0..keys {
        revs.push(
            store
                .create(&format!("/size/{k:04}"), value(1024))
                .await
                .expect("create")
                .mod_revision,
        );
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "after create:   {:>7.2} MiB (db+wal)",
        mib(store.disk_usage())
    );
    for round in 1..=rounds {
        let tasks: Vec<_> = (0..32)
            .map(|w| {
                let store = store.clone();
                let mine: Vec<(usize, i64)> = revs
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| k % 32 == w)
                    .map(|(k, r)| (k, *r))
                    .collect();
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    for (k, rev) in mine {
                        let kv = store
                            .update(&format!("/size/{k:04}"), value(1024), rev)
                            .await
                            .expect("update");
                        out.push((k, kv.mod_revision));
                    }
                    out
                })
            })
            .collect();
        for t in tasks {
            for (k, rev) in t.await.expect("task") {
                revs[k] = rev;
            }
        }
        let current = store.current_revision().await.expect("rev");
        if current > 1000 {
            let _ = store.compact(current - 1000).await;
        }
        if round == 1 || round % 10 == 0 || round == rounds {
            println!(
                "after round {round:>3}: {:>7.2} MiB (db+wal), {} revisions written",
                mib(store.disk_usage()),
                current
            );
        }
    }
    let stats = store.stats();
    println!(
        "group commit over the size run: {} writes in {} commits ({:.1} per fsync)",
        stats.writes,
        stats.commits,
        stats.writes as f64 / stats.commits.max(1) as f64
    );
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("store_bench: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "store_bench: {} s per phase, {} cores, values 512 B (size run: 1 KiB)",
        args.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if args.backend != "etcd" {
        let path = args
            .dir
            .join(format!("store-bench-{}.db", std::process::id()));
        let mut opts = SqliteOptions::default();
        if let Some(d) = args.commit_delay {
            opts.commit_delay = d;
        }
        println!("sqlite commit delay: {:?}", opts.commit_delay);
        let sqlite = SqliteStore::open(&path, opts).expect("open sqlite");
        run_suite("sqlite", sqlite.clone(), args.seconds).await;
        let stats = sqlite.stats();
        println!(
            "group commit: {} writes in {} commits ({:.1} per fsync)",
            stats.writes,
            stats.commits,
            stats.writes as f64 / stats.commits.max(1) as f64
        );
        drop(sqlite);
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
        sqlite_size(&args.dir, args.size_rounds).await;
    }
    if args.backend != "sqlite" {
        let etcd = match EtcdServer::start().await {
            Ok(e) => e,
            Err(e) => {
                eprintln!("store_bench: cannot start etcd: {e}");
                std::process::exit(1);
            }
        };
        let store = EtcdStore::connect_with(
            &[etcd.endpoint()],
            EtcdOptions {
                compact_interval: None,
                ..Default::default()
            },
        )
        .await
        .expect("connect to etcd");
        run_suite("etcd", store, args.seconds).await;
        drop(etcd);
    }
}
