//! Start-up: time from exec to the first `/readyz` 200 (admin client certificate), on
//! fresh data dirs (certificates and database created) and on an existing one (a restart
//! after SIGTERM), and the server's RSS when ready and after some idle time (SQLite).

use std::time::Duration;

use anyhow::{Context, Result};

use super::Env;
use crate::client;
use crate::procs::{self, mib, SkiffProc};
use crate::stats::{median, ms, print_table};

pub async fn run(env: &Env) -> Result<()> {
    let n = env.args.starts.max(1);
    let root = tempfile::Builder::new()
        .prefix("skiff-bench-startup-")
        .tempdir()
        .context("creating a temp dir")?;
    let log = root.path().join("server.log");

    // Fresh data dirs.
    let mut fresh = Vec::new();
    let mut fresh_rss = Vec::new();
    for i in 0..n {
        let dir = root.path().join(format!("fresh-{i}"));
        let mut srv = SkiffProc::spawn(&env.skiff, &dir, procs::free_port()?, None, &log, &[])?;
        fresh.push(client::wait_ready(&mut srv, Duration::from_secs(30)).await?);
        fresh_rss.push(procs::rss_bytes(srv.pid()?)?);
        srv.guard.terminate(Duration::from_secs(5));
    }

    // Restarts on one existing data dir (the first fresh one), each after a SIGTERM.
    let dir = root.path().join("fresh-0");
    let port = procs::free_port()?;
    let mut restart = Vec::new();
    let mut restart_rss = Vec::new();
    let mut last = None;
    for i in 0..n {
        let mut srv = SkiffProc::spawn(&env.skiff, &dir, port, None, &log, &[])?;
        restart.push(client::wait_ready(&mut srv, Duration::from_secs(30)).await?);
        restart_rss.push(procs::rss_bytes(srv.pid()?)?);
        if i + 1 < n {
            srv.guard.terminate(Duration::from_secs(5));
        } else {
            last = Some(srv);
        }
    }

    // Idle RSS of the last restarted server.
    let srv = last.context("no server left running")?;
    let pid = srv.pid()?;
    let at_ready = procs::rss_bytes(pid)?;
    tokio::time::sleep(Duration::from_secs(env.args.idle_secs)).await;
    let idle = procs::rss_bytes(pid)?;
    let peak = procs::peak_rss_bytes(pid)?;
    drop(srv);

    let fmt_all = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.0}", d.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let min = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
    let max = |v: &[Duration]| v.iter().max().copied().unwrap_or_default();
    let mid_rss = |v: &mut Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    print_table(
        &format!("startup: exec -> first /readyz 200 (SQLite, N={n} each)"),
        &[
            "start",
            "median ms",
            "min ms",
            "max ms",
            "RSS at ready (median)",
            "all (ms)",
        ],
        &[
            vec![
                "fresh data dir".into(),
                ms(median(&fresh)),
                ms(min(&fresh)),
                ms(max(&fresh)),
                mib(mid_rss(&mut fresh_rss)),
                fmt_all(&fresh),
            ],
            vec![
                "restart (existing dir)".into(),
                ms(median(&restart)),
                ms(min(&restart)),
                ms(max(&restart)),
                mib(mid_rss(&mut restart_rss)),
                fmt_all(&restart),
            ],
        ],
    );
    print_table(
        "startup: idle server RSS (VmRSS)",
        &["when", "RSS"],
        &[
            vec!["at ready".into(), mib(at_ready)],
            vec![format!("after {} s idle", env.args.idle_secs), mib(idle)],
            vec!["peak (VmHWM)".into(), mib(peak)],
        ],
    );
    Ok(())
}
