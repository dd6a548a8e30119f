//! Cluster DNS: with 1,000 ClusterIP Services, queries sent from a client on loopback to
//! the server's DNS port (pods have no route to it yet): one at a time (latency p50/p99 of
//! a Service name, a name that does not exist, and a name forwarded to a fake upstream
//! resolver on loopback), then `--clients` closed-loop clients for `--secs` (queries/s and
//! latency under load), and how long a new Service takes to become resolvable. The
//! upstream anchor is the bar of upstream's DNS scale tests from a pod: p50 ≤ 20 ms,
//! p99 ≤ 100 ms. Nothing is sent beyond 127.0.0.1.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use dns::proto::op::{Message, OpCode, Query, ResponseCode};
use dns::proto::rr::rdata::A;
use dns::proto::rr::{Name, RData, Record, RecordType};
use hyper::StatusCode;
use tokio::net::UdpSocket;

use super::{Env, Store};
use crate::procs;
use crate::stats::{ms, print_table, summarize, Summary};

const NS: &str = "bench-dns";
const SERVICES: usize = 1000;
/// Sequential queries per kind of name.
const SEQUENTIAL: usize = 3000;
/// New Services timed from create to resolvable.
const PROPAGATION: usize = 50;

pub async fn run(env: &Env) -> Result<()> {
    let upstream = FakeUpstream::start().await?;
    let dns_port = free_udp_and_tcp_port()?;
    let dns: SocketAddr = ([127, 0, 0, 1], dns_port).into();
    let srv = env
        .start_with(
            Store::Sqlite,
            &[
                "--cluster-dns-port".into(),
                dns_port.to_string(),
                "--cluster-dns-upstream".into(),
                upstream.addr.to_string(),
            ],
        )
        .await?;
    srv.create_namespace(NS).await?;

    let created = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..32 {
        let client = srv.client.clone();
        tasks.spawn(async move {
            for i in (worker..SERVICES).step_by(32) {
                client
                    .post(
                        &format!("/api/v1/namespaces/{NS}/services"),
                        service(&format!("svc-{i}")),
                    )
                    .await?
                    .expect(StatusCode::CREATED, &format!("creating Service svc-{i}"))?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let created_in = created.elapsed();
    let last = format!("svc-{}.{NS}.svc.cluster.local.", SERVICES - 1);
    let socket = client_socket().await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while ask(&socket, dns, &last, RecordType::A).await?.0 != ResponseCode::NoError {
        if Instant::now() > deadline {
            bail!("{last} did not resolve within 60 s of its creation");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "  {SERVICES} Services created in {:.1} s; all resolvable {:.1} s after the first create; server RSS {}",
        created_in.as_secs_f64(),
        created.elapsed().as_secs_f64(),
        procs::mib(srv.rss()?)
    );

    let mut rows = Vec::new();
    let names: Vec<String> = (0..SEQUENTIAL)
        .map(|i| format!("svc-{}.{NS}.svc.cluster.local.", (i * 7919) % SERVICES))
        .collect();
    let (lat, failed) =
        sequential(&socket, dns, &names, RecordType::A, ResponseCode::NoError).await?;
    rows.push(row("Service A (UDP)", &lat, failed));
    let missing: Vec<String> = (0..SEQUENTIAL)
        .map(|i| format!("nope-{i}.{NS}.svc.cluster.local."))
        .collect();
    let (lat, failed) = sequential(
        &socket,
        dns,
        &missing,
        RecordType::A,
        ResponseCode::NXDomain,
    )
    .await?;
    rows.push(row("missing name (NXDOMAIN)", &lat, failed));
    let srv_names: Vec<String> = names.iter().map(|n| format!("_http._tcp.{n}")).collect();
    let (lat, failed) = sequential(
        &socket,
        dns,
        &srv_names,
        RecordType::SRV,
        ResponseCode::NoError,
    )
    .await?;
    rows.push(row("named port SRV", &lat, failed));
    let outside: Vec<String> = (0..SEQUENTIAL / 3)
        .map(|_| "outside.example.".to_string())
        .collect();
    let (lat, failed) =
        sequential(&socket, dns, &outside, RecordType::A, ResponseCode::NoError).await?;
    rows.push(row("forwarded to upstream", &lat, failed));
    print_table(
        &format!("DNS query latency, one at a time, {SERVICES} Services (ms)"),
        &["query", "n", "failed", "p50", "p90", "p99", "max"],
        &rows,
    );

    let clients = env.args.clients;
    let cpu = procs::CpuMeter::start(srv.pid()?);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(env.args.secs);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        tasks.spawn(async move {
            let socket = client_socket().await?;
            let mut lat = Vec::new();
            let mut failed = 0usize;
            let mut i = c;
            while Instant::now() < deadline {
                let name = format!("svc-{}.{NS}.svc.cluster.local.", (i * 7919) % SERVICES);
                i += clients;
                let t = Instant::now();
                match ask(&socket, dns, &name, RecordType::A).await {
                    Ok((ResponseCode::NoError, 1)) => lat.push(t.elapsed()),
                    _ => failed += 1,
                }
            }
            anyhow::Ok((lat, failed))
        });
    }
    let mut lat = Vec::new();
    let mut failed = 0;
    while let Some(r) = tasks.join_next().await {
        let (l, f) = r??;
        lat.extend(l);
        failed += f;
    }
    let elapsed = started.elapsed();
    let used = cpu.stop();
    let s = summarize(lat.clone());
    print_table(
        &format!(
            "DNS queries/s, {clients} closed-loop clients for {} s",
            env.args.secs
        ),
        &[
            "queries/s",
            "failed",
            "p50 ms",
            "p99 ms",
            "server cores",
            "client cores",
        ],
        &[vec![
            format!("{:.0}", lat.len() as f64 / elapsed.as_secs_f64()),
            failed.to_string(),
            ms(s.p50),
            ms(s.p99),
            format!("{:.2}", used.server_cores),
            format!("{:.2}", used.client_cores),
        ]],
    );

    let mut propagation = Vec::new();
    for i in 0..PROPAGATION {
        let name = format!("new-{i}");
        let fqdn = format!("{name}.{NS}.svc.cluster.local.");
        let t = Instant::now();
        srv.client
            .post(&format!("/api/v1/namespaces/{NS}/services"), service(&name))
            .await?
            .expect(StatusCode::CREATED, &format!("creating Service {name}"))?;
        loop {
            if ask(&socket, dns, &fqdn, RecordType::A).await?.0 == ResponseCode::NoError {
                break;
            }
            if t.elapsed() > Duration::from_secs(10) {
                bail!("{fqdn} not resolvable 10 s after its create");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        propagation.push(t.elapsed());
    }
    let s = summarize(propagation);
    print_table(
        "Service create (201 included) to resolvable, ms",
        &["n", "p50", "p90", "p99", "max"],
        &[vec![
            PROPAGATION.to_string(),
            ms(s.p50),
            ms(s.p90),
            ms(s.p99),
            ms(s.max),
        ]],
    );
    println!("  server RSS after the queries {}", procs::mib(srv.rss()?));
    Ok(())
}

fn row(what: &str, lat: &[Duration], failed: usize) -> Vec<String> {
    let s: Summary = summarize(lat.to_vec());
    vec![
        what.to_string(),
        lat.len().to_string(),
        failed.to_string(),
        ms(s.p50),
        ms(s.p90),
        ms(s.p99),
        ms(s.max),
    ]
}

fn service(name: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"{name}"}},"spec":{{"ports":[{{"name":"http","port":80,"targetPort":8080}}]}}}}"#
    ))
}

async fn client_socket() -> Result<UdpSocket> {
    UdpSocket::bind("127.0.0.1:0")
        .await
        .context("binding a DNS client socket")
}

/// Queries one after another; a query counts as failed when it times out or gets another
/// response code than `want`.
async fn sequential(
    socket: &UdpSocket,
    dns: SocketAddr,
    names: &[String],
    qtype: RecordType,
    want: ResponseCode,
) -> Result<(Vec<Duration>, usize)> {
    let mut lat = Vec::with_capacity(names.len());
    let mut failed = 0;
    for name in names {
        let t = Instant::now();
        match ask(socket, dns, name, qtype).await {
            Ok((code, _)) if code == want => lat.push(t.elapsed()),
            _ => failed += 1,
        }
    }
    Ok((lat, failed))
}

/// One query over UDP: the response code and the number of answers.
async fn ask(
    socket: &UdpSocket,
    dns: SocketAddr,
    name: &str,
    qtype: RecordType,
) -> Result<(ResponseCode, usize)> {
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(Name::from_ascii(name)?, qtype));
    socket.send_to(&query.to_vec()?, dns).await?;
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (n, _) = tokio::time::timeout(left, socket.recv_from(&mut buf))
            .await
            .context("no DNS answer within 2 s")??;
        let answer = Message::from_vec(&buf[..n])?;
        // A late answer to an earlier, timed-out query is skipped.
        if answer.metadata.id == query.metadata.id {
            return Ok((answer.metadata.response_code, answer.answers.len()));
        }
    }
}

fn free_udp_and_tcp_port() -> Result<u16> {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free for both UDP and TCP")
}

/// An upstream resolver on 127.0.0.1 answering every A query with 203.0.113.7, so the
/// forwarded path is measured without leaving the machine.
struct FakeUpstream {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl FakeUpstream {
    async fn start() -> Result<FakeUpstream> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = socket.local_addr()?;
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut reply = Message::response(query.metadata.id, OpCode::Query);
                reply.metadata.recursion_available = true;
                reply.metadata.recursion_desired = query.metadata.recursion_desired;
                for q in &query.queries {
                    reply.add_query(q.clone());
                    if q.query_type() == RecordType::A {
                        reply.add_answer(Record::from_rdata(
                            q.name().clone(),
                            30,
                            RData::A(A::new(203, 0, 113, 7)),
                        ));
                    }
                }
                if let Ok(bytes) = reply.to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        Ok(FakeUpstream { addr, task })
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
