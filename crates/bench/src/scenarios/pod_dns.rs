//! Cluster DNS from a pod: a server with its node (testkit's network slot; names outside the
//! cluster are forwarded to a closed local port, and never asked here), 1,000 ClusterIP
//! Services and one headless Service in `default`, and a busybox pod there. The benchmark's
//! own stub resolver runs in threads that entered the pod's network namespace and reads the
//! pod's resolv.conf (nameserver = the kube-dns ClusterIP, the search list, `ndots:5`), so
//! every query takes a pod's path: veth, bridge, the service proxy's DNAT of the ClusterIP,
//! the server's DNS. A lookup walks the search list as glibc does (next name on NXDOMAIN or
//! no answer), but stops where the walk would leave the cluster domain.
//!
//! - one lookup at a time, a fresh UDP socket per lookup (as a stub resolver does, so each
//!   is a new conntrack flow): p50/p90/p99/max and lookups/s per kind of name;
//! - `--clients` closed-loop threads, one socket each (as dnsperf), for `--secs` per kind:
//!   lookups/s, queries/s and latency under load.
//!
//! The anchor is upstream's DNS bar from a pod: p50 ≤ 20 ms, p99 ≤ 100 ms. Root only.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dns::proto::op::{Message, Query, ResponseCode};
use dns::proto::rr::{Name, RecordType};

use super::pod_net::{join_all, spawn_in_netns, stale_nat_flows, PodNode, NS};
use super::Env;
use crate::procs;
use crate::stats::{ms, print_table, summarize};

const SERVICES: usize = 1000;
/// Lookups one at a time per kind of name.
const SEQUENTIAL: usize = 2000;
const CLUSTER_DOMAIN: &str = "cluster.local";
const HEADLESS: &str = "db";
const CLIENT_LABEL: &str = "bench-dns-client";
const TIMEOUT: Duration = Duration::from_secs(2);

pub async fn run(env: &Env) -> Result<()> {
    let node = PodNode::start(env).await?;
    let result = measure(env, &node).await;
    if result.is_err() {
        eprintln!("{}", node.server.log_tail(30));
    }
    result
}

async fn measure(env: &Env, node: &PodNode) -> Result<()> {
    let created = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..32 {
        let client = node.client.clone();
        tasks.spawn(async move {
            for i in (worker..SERVICES).step_by(32) {
                let body = serde_json::json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": format!("svc-{i}")},
                    "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
                });
                client
                    .post(
                        &format!("/api/v1/namespaces/{NS}/services"),
                        bytes::Bytes::from(body.to_string()),
                    )
                    .await?
                    .expect(
                        hyper::StatusCode::CREATED,
                        &format!("creating Service svc-{i}"),
                    )?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    node.create(
        &format!("/api/v1/namespaces/{NS}/services"),
        serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": HEADLESS},
            "spec": {"clusterIP": "None", "selector": {"app": CLIENT_LABEL},
                     "ports": [{"name": "tcp", "port": 80}]}
        }),
    )
    .await?;
    eprintln!(
        "pod-dns: {SERVICES} Services created in {:.1} s",
        created.elapsed().as_secs_f64()
    );

    let pod = node
        .run_pod("dns-client", serde_json::json!({"app": CLIENT_LABEL}))
        .await?;
    let text = std::fs::read_to_string(&pod.resolv_conf)
        .with_context(|| format!("reading {}", pod.resolv_conf.display()))?;
    let resolver = Arc::new(Resolver::parse(&text)?);
    let dns_ip = node.cluster_dns()?;
    if resolver.server.ip() != std::net::IpAddr::V4(dns_ip) {
        bail!(
            "the pod's nameserver {} is not the slot's cluster DNS {dns_ip}",
            resolver.server
        );
    }
    println!(
        "  pod {} ({}): nameserver {}, search {}, ndots:{}",
        pod.name,
        pod.ip,
        resolver.server.ip(),
        resolver.searches.join(" "),
        resolver.ndots
    );

    // Flows an earlier server on this slot left (its DNS on another port) would swallow
    // the queries whose source port they share: wait until they have expired.
    let target = kube_dns_endpoint(node).await?;
    let t0 = Instant::now();
    let mut stale_at_start = None;
    loop {
        let stale = stale_nat_flows("udp", pod.ip, resolver.server, target).unwrap_or(0);
        stale_at_start.get_or_insert(stale);
        if stale == 0 || t0.elapsed() > Duration::from_secs(200) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!(
        "  conntrack: {} stale UDP flows {} → {} NATed elsewhere than {target} at the start; \
         waited {:.0} s for them to expire",
        stale_at_start.unwrap_or(0),
        pod.ip,
        resolver.server,
        t0.elapsed().as_secs_f64()
    );

    // Every name resolves from the pod before anything is timed.
    let r = resolver.clone();
    let last = format!("svc-{}", SERVICES - 1);
    let pod_ip = pod.ip;
    let waited = join_all(vec![spawn_in_netns(&pod.netns, move || {
        let t0 = Instant::now();
        loop {
            let socket = r.socket()?;
            // The queries leave from the pod's address, so from its namespace.
            let from = socket.local_addr()?.ip();
            if from != std::net::IpAddr::V4(pod_ip) {
                bail!("queries would leave from {from}, not from the pod's {pod_ip}");
            }
            let found = |name: &str| {
                r.lookup(&socket, name)
                    .is_ok_and(|a| a.outcome == Outcome::Found)
            };
            if found(&last) && found(HEADLESS) {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("{last} and {HEADLESS} not resolvable from the pod within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })])
    .await?;
    eprintln!(
        "pod-dns: all names resolvable from the pod {:.1} s after it ran",
        waited[0].as_secs_f64()
    );

    let mut rows = Vec::new();
    for kind in Kind::ALL {
        let r = resolver.clone();
        let out = join_all(vec![spawn_in_netns(&pod.netns, move || {
            let started = Instant::now();
            let mut tally = Tally::default();
            for i in 0..SEQUENTIAL {
                let t = Instant::now();
                let answer = r.socket().and_then(|s| r.lookup(&s, &kind.name(i)));
                tally.add(kind, answer, t.elapsed());
            }
            Ok((tally, started.elapsed()))
        })])
        .await?;
        let (tally, took) = out.into_iter().next().context("no result")?;
        let s = summarize(tally.latencies.clone());
        rows.push(vec![
            kind.label().to_string(),
            format!(
                "{:.1}",
                tally.queries as f64 / tally.lookups().max(1) as f64
            ),
            tally.lookups().to_string(),
            tally.failed.to_string(),
            ms(s.p50),
            ms(s.p90),
            ms(s.p99),
            ms(s.max),
            format!("{:.0}", tally.lookups() as f64 / took.as_secs_f64()),
        ]);
    }
    print_table(
        &format!(
            "DNS from a pod to kube-dns {}:53 through the service proxy, one lookup at a \
             time, fresh socket each, {SERVICES} Services (ms; upstream's bar p50 ≤ 20, p99 ≤ 100)",
            resolver.server.ip()
        ),
        &[
            "lookup",
            "queries/lookup",
            "n",
            "failed",
            "p50",
            "p90",
            "p99",
            "max",
            "lookups/s",
        ],
        &rows,
    );

    let clients = env.args.clients.max(1);
    let secs = Duration::from_secs(env.args.secs);
    let server_pid = node.server.pid().context("the server is not running")?;
    let mut rows = Vec::new();
    for kind in [Kind::Short, Kind::Headless, Kind::Miss] {
        let cpu = procs::CpuMeter::start(server_pid);
        let started = Instant::now();
        let deadline = started + secs;
        let threads = (0..clients)
            .map(|c| {
                let r = resolver.clone();
                spawn_in_netns(&pod.netns, move || {
                    let socket = r.socket()?;
                    let mut tally = Tally::default();
                    let mut i = c;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        let answer = r.lookup(&socket, &kind.name(i));
                        tally.add(kind, answer, t.elapsed());
                        i += clients;
                    }
                    Ok(tally)
                })
            })
            .collect();
        let mut all = Tally::default();
        for t in join_all(threads).await? {
            all.merge(t);
        }
        let elapsed = started.elapsed().as_secs_f64();
        let used = cpu.stop();
        let s = summarize(all.latencies.clone());
        rows.push(vec![
            kind.label().to_string(),
            format!("{:.0}", all.lookups() as f64 / elapsed),
            format!("{:.0}", all.queries as f64 / elapsed),
            all.failed.to_string(),
            ms(s.p50),
            ms(s.p99),
            ms(s.max),
            format!("{:.2}", used.server_cores),
            format!("{:.2}", used.client_cores),
        ]);
    }
    print_table(
        &format!(
            "DNS from a pod, {clients} closed-loop clients (one socket each) for {} s per row",
            secs.as_secs()
        ),
        &[
            "lookup",
            "lookups/s",
            "queries/s",
            "failed",
            "p50 ms",
            "p99 ms",
            "max ms",
            "server cores",
            "bench cores",
        ],
        &rows,
    );
    println!(
        "  server RSS after the queries {}",
        procs::mib(procs::rss_bytes(server_pid)?)
    );
    Ok(())
}

/// Where the kube-dns Service sends UDP: the server's DNS address and port.
async fn kube_dns_endpoint(node: &PodNode) -> Result<SocketAddr> {
    let eps = node
        .client
        .get("/api/v1/namespaces/kube-system/endpoints/kube-dns")
        .await?
        .expect(hyper::StatusCode::OK, "reading the kube-dns Endpoints")?
        .json()?;
    let subset = &eps["subsets"][0];
    let ip: Ipv4Addr = subset["addresses"][0]["ip"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .context("kube-dns Endpoints have no address")?;
    let port = subset["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["protocol"] == "UDP")
        .and_then(|p| p["port"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .context("kube-dns Endpoints have no UDP port")?;
    Ok(SocketAddr::from((ip, port)))
}

/// The kinds of name a pod looks up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `svc-N`: found with the first search suffix.
    Short,
    /// `svc-N.default`: fewer dots than ndots, so `…default.default.svc…` is tried first.
    WithNamespace,
    /// `svc-N.default.svc.cluster.local.`: no search.
    Fqdn,
    /// The headless Service's short name: the pod's address.
    Headless,
    /// `nope-N`: NXDOMAIN under each cluster search suffix.
    Miss,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Short,
        Kind::WithNamespace,
        Kind::Fqdn,
        Kind::Headless,
        Kind::Miss,
    ];

    fn label(self) -> &'static str {
        match self {
            Kind::Short => "Service A, `svc-N`",
            Kind::WithNamespace => "Service A, `svc-N.default`",
            Kind::Fqdn => "Service A, FQDN with the dot",
            Kind::Headless => "headless Service `db`",
            Kind::Miss => "miss `nope-N` (NXDOMAIN)",
        }
    }

    fn name(self, i: usize) -> String {
        let k = (i * 7919) % SERVICES;
        match self {
            Kind::Short => format!("svc-{k}"),
            Kind::WithNamespace => format!("svc-{k}.{NS}"),
            Kind::Fqdn => format!("svc-{k}.{NS}.svc.{CLUSTER_DOMAIN}."),
            Kind::Headless => HEADLESS.to_string(),
            Kind::Miss => format!("nope-{i}"),
        }
    }

    fn wants(self) -> Outcome {
        match self {
            Kind::Miss => Outcome::NotFound,
            _ => Outcome::Found,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// An A record.
    Found,
    /// NXDOMAIN or no answer under every name tried.
    NotFound,
    /// Another response code (SERVFAIL, REFUSED...).
    Error(ResponseCode),
}

struct Answer {
    outcome: Outcome,
    queries: usize,
}

/// Lookups that got what their kind wants, the rest counted as failed.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    queries: usize,
    failed: usize,
}

impl Tally {
    fn add(&mut self, kind: Kind, answer: Result<Answer>, took: Duration) {
        match answer {
            Ok(a) if a.outcome == kind.wants() => {
                self.latencies.push(took);
                self.queries += a.queries;
            }
            Ok(a) => {
                self.failed += 1;
                self.queries += a.queries;
            }
            Err(_) => self.failed += 1,
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.queries += other.queries;
        self.failed += other.failed;
    }

    fn lookups(&self) -> usize {
        self.latencies.len()
    }
}

/// A stub resolver with the pod's resolv.conf: first nameserver, search list, ndots.
struct Resolver {
    server: SocketAddr,
    searches: Vec<String>,
    ndots: usize,
}

impl Resolver {
    fn parse(resolv_conf: &str) -> Result<Resolver> {
        let mut server = None;
        let mut searches = Vec::new();
        let mut ndots = 1;
        for line in resolv_conf.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") if server.is_none() => {
                    let ip: Ipv4Addr = words
                        .next()
                        .context("resolv.conf: nameserver without an address")?
                        .parse()
                        .context("resolv.conf: nameserver is not an IPv4 address")?;
                    server = Some(SocketAddr::from((ip, 53)));
                }
                Some("search") => searches = words.map(str::to_string).collect(),
                Some("options") => {
                    for option in words {
                        if let Some(n) = option.strip_prefix("ndots:") {
                            ndots = n.parse().context("resolv.conf: ndots")?;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(Resolver {
            server: server.context("resolv.conf has no nameserver")?,
            searches,
            ndots,
        })
    }

    /// A UDP socket connected to the nameserver (in the calling thread's namespace).
    fn socket(&self) -> Result<UdpSocket> {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("binding a socket")?;
        socket.connect(self.server)?;
        socket.set_read_timeout(Some(TIMEOUT))?;
        Ok(socket)
    }

    /// The names a stub resolver tries for `name`, in order (glibc: the name as given
    /// first when it has at least ndots dots, else last), cut where the walk would leave
    /// the cluster domain: those would go to the upstream, which is never asked here.
    fn candidates(&self, name: &str) -> Vec<String> {
        let mut names = Vec::new();
        if let Some(absolute) = name.strip_suffix('.') {
            names.push(format!("{absolute}."));
        } else {
            let searched = self
                .searches
                .iter()
                .map(|s| format!("{name}.{}.", s.trim_end_matches('.')));
            if name.matches('.').count() >= self.ndots {
                names.push(format!("{name}."));
                names.extend(searched);
            } else {
                names.extend(searched);
                names.push(format!("{name}."));
            }
        }
        let suffix = format!(".{CLUSTER_DOMAIN}.");
        names
            .into_iter()
            .take_while(|n| n.ends_with(&suffix))
            .collect()
    }

    /// Looks `name` up (A records) over `socket`, walking the search list.
    fn lookup(&self, socket: &UdpSocket, name: &str) -> Result<Answer> {
        let mut queries = 0;
        for candidate in self.candidates(name) {
            queries += 1;
            match ask(socket, &candidate)? {
                (ResponseCode::NoError, n) if n > 0 => {
                    return Ok(Answer {
                        outcome: Outcome::Found,
                        queries,
                    })
                }
                (ResponseCode::NoError | ResponseCode::NXDomain, _) => {}
                (code, _) => {
                    return Ok(Answer {
                        outcome: Outcome::Error(code),
                        queries,
                    })
                }
            }
        }
        Ok(Answer {
            outcome: Outcome::NotFound,
            queries,
        })
    }
}

/// One A query over a connected UDP socket: the response code and the number of answers.
fn ask(socket: &UdpSocket, name: &str) -> Result<(ResponseCode, usize)> {
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    socket.send(&query.to_vec()?)?;
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let n = socket
            .recv(&mut buf)
            .with_context(|| format!("no DNS answer for {name} within {TIMEOUT:?}"))?;
        let answer = Message::from_vec(&buf[..n])?;
        // A late answer to an earlier, timed-out query is skipped.
        if answer.metadata.id == query.metadata.id {
            return Ok((answer.metadata.response_code, answer.answers.len()));
        }
        if Instant::now() > deadline {
            bail!("no DNS answer for {name} within {TIMEOUT:?}");
        }
    }
}
