//! `skiff agent`: the real node (joins with the token, keeps a node certificate in
//! `<data-dir>/agent`, registers this machine and keeps its Lease and status fresh; pods
//! run once the pod runtime is wired in), or `--simulate N` (simulated nodes, see the agent
//! crate).
//!
//! Joining means trusting the server's certificate. Nothing is ever fetched without
//! verifying it; the CA comes from, in order:
//! 1. `--kubeconfig FILE` (its server, CA and credentials; `--server` may override the URL),
//! 2. `--server-ca FILE`,
//! 3. the server's own data dir when `--token-file` is `<data-dir>/server/token` (the agent
//!    runs on the server's machine): `<data-dir>/server/tls/server-ca.crt`.
//!
//! 4. with a secure token and none of the above: the server's `/cacerts`, fetched without
//!    trusting anything and accepted only if its SHA-256 is the token's CA hash (k3s's way).
//!
//! The token may be the plain secret or k3s's secure form `K10<sha256 of the CA
//! bundle>::<user>:<secret>`; with the secure form the CA found above must match the hash.
//! A plain token with no CA source is refused: credentials are never sent to an
//! unverified server.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use agent::simulated::config::{parse_label, parse_taint, Ipv4Range};
use agent::simulated::SimConfig;

use crate::AgentArgs;

/// A join token, split as k3s splits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Hex SHA-256 of the CA bundle, when the token is in the secure `K10` form.
    pub ca_hash: Option<String>,
    /// What is sent as the bearer token.
    pub secret: String,
}

/// Parses `K10<hash>::<user>:<secret>` or a plain secret.
pub fn parse_token(text: &str) -> Result<JoinToken> {
    let text = text.trim();
    if text.is_empty() {
        bail!("the join token is empty");
    }
    if let Some(rest) = text.strip_prefix("K10") {
        let (hash, creds) = rest.split_once("::").ok_or_else(|| {
            anyhow!("token starts with K10 but has no '::' (want K10<ca-hash>::<user>:<secret>)")
        })?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("token CA hash {hash:?} is not a hex SHA-256");
        }
        let secret = match creds.split_once(':') {
            Some((_user, secret)) => secret,
            None => creds,
        };
        if secret.is_empty() {
            bail!("the secret part of the K10 token is empty");
        }
        return Ok(JoinToken {
            ca_hash: Some(hash.to_ascii_lowercase()),
            secret: secret.to_string(),
        });
    }
    Ok(JoinToken {
        ca_hash: None,
        secret: text.to_string(),
    })
}

/// Lowercase hex SHA-256, as the `K10` token's CA hash.
pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The CA file of a server whose token file is `<data-dir>/server/token`.
fn ca_beside_token_file(token_file: &Path) -> Option<PathBuf> {
    let server_dir = token_file.parent()?;
    let ca = server_dir.join("tls").join("server-ca.crt");
    (token_file.file_name()? == "token" && ca.is_file()).then_some(ca)
}

/// Builds the API client the agent uses, verifying the server as the module header says.
async fn client(args: &AgentArgs) -> Result<kube::Client> {
    Ok(join_client(args).await?.0)
}

/// The join client and, when joining with a token, the verified CA bundle (PEM).
async fn join_client(args: &AgentArgs) -> Result<(kube::Client, Option<Vec<u8>>)> {
    if let Some(path) = &args.kubeconfig {
        let kc = kube::config::Kubeconfig::read_from(path)
            .with_context(|| format!("reading --kubeconfig {}", path.display()))?;
        let mut config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading --kubeconfig {}", path.display()))?;
        if let Some(server) = &args.server {
            config.cluster_url = server
                .parse()
                .with_context(|| format!("--server {server:?} is not a URL"))?;
        }
        return Ok((
            crate::api_client::http2(config).context("building the API client")?,
            None,
        ));
    }
    let server = args
        .server
        .as_deref()
        .ok_or_else(|| anyhow!("--server is required (or --kubeconfig)"))?;
    let token_text = match (&args.token, &args.token_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("reading --token-file {}", f.display()))?,
        (None, None) => bail!("--token or --token-file is required (or --kubeconfig)"),
    };
    let token = parse_token(&token_text)?;
    let local_ca = match (&args.server_ca, &args.token_file) {
        (Some(ca), _) => Some(ca.clone()),
        (None, Some(tf)) => ca_beside_token_file(tf),
        (None, None) => None,
    };
    let (ca_pem, ca_source) = match (local_ca, &token.ca_hash) {
        (Some(path), _) => (
            std::fs::read(&path)
                .with_context(|| format!("reading the server CA {}", path.display()))?,
            path.display().to_string(),
        ),
        (None, Some(_)) => (fetch_cacerts(server).await?, format!("{server}/cacerts")),
        (None, None) => bail!(
            "cannot verify the server: the token is a plain secret; use the server's full K10 token (`skiff token` on the server), or pass --server-ca FILE (the server's <data-dir>/server/tls/server-ca.crt), --token-file <data-dir>/server/token on the server's machine, or --kubeconfig FILE"
        ),
    };
    if let Some(want) = &token.ca_hash {
        let got = sha256_hex(&ca_pem);
        if &got != want {
            bail!(
                "the server CA from {ca_source} (sha256 {got}) does not match the CA hash in the K10 token ({want}): wrong token, or not the server it belongs to"
            );
        }
    }
    let ders: Vec<Vec<u8>> = rustls_pemfile::certs(&mut ca_pem.as_slice())
        .map(|c| c.map(|der| der.as_ref().to_vec()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing the server CA from {ca_source}"))?;
    if ders.is_empty() {
        bail!("no certificate in the server CA from {ca_source}");
    }
    let mut config = kube::Config::new(
        server
            .parse()
            .with_context(|| format!("--server {server:?} is not a URL"))?,
    );
    config.root_cert = Some(ders);
    let mut bearer = http::HeaderValue::from_str(&format!("Bearer {}", token.secret))
        .context("the token holds characters not allowed in an HTTP header")?;
    bearer.set_sensitive(true);
    config.headers.push((http::header::AUTHORIZATION, bearer));
    let client = crate::api_client::http2(config).context("building the API client")?;
    Ok((client, Some(ca_pem)))
}

/// The server's CA bundle from `/cacerts`, fetched over TLS that verifies nothing: the
/// caller must check it against the token's hash before trusting it, and no credentials
/// are sent here.
async fn fetch_cacerts(server: &str) -> Result<Vec<u8>> {
    let mut config = kube::Config::new(
        server
            .parse()
            .with_context(|| format!("--server {server:?} is not a URL"))?,
    );
    config.accept_invalid_certs = true;
    config.connect_timeout = Some(Duration::from_secs(10));
    let client = kube::Client::try_from(config).context("building the CA-fetching client")?;
    let request = http::Request::get("/cacerts")
        .body(Vec::new())
        .context("building the /cacerts request")?;
    let pem = client.request_text(request).await.with_context(|| {
        format!("fetching the server CA from {server}/cacerts (is --server right?)")
    })?;
    Ok(pem.into_bytes())
}

fn sim_config(args: &AgentArgs, count: usize) -> Result<SimConfig> {
    let mut cfg = SimConfig::new(count);
    if let Some(prefix) = &args.node_name {
        cfg.name_prefix = prefix.clone();
    }
    cfg.cpu = args.simulate_cpu.clone();
    cfg.memory = args.simulate_memory.clone();
    cfg.pods = args.simulate_pods;
    cfg.ephemeral_storage = args.simulate_ephemeral_storage.clone();
    cfg.labels = args
        .node_label
        .iter()
        .map(|l| parse_label(l))
        .collect::<Result<_, _>>()?;
    cfg.taints = args
        .node_taint
        .iter()
        .map(|t| parse_taint(t))
        .collect::<Result<_, _>>()?;
    cfg.cluster_cidr = Ipv4Range::parse(&args.cluster_cidr, "--cluster-cidr")?;
    cfg.node_cidr_mask_size = args.node_cidr_mask_size;
    cfg.node_ip_range = Ipv4Range::parse(&args.simulate_node_ip_range, "--simulate-node-ip-range")?;
    cfg.run_time = args.simulate_run_time;
    cfg.termination_grace_cap = args.simulate_termination_grace_cap;
    cfg.max_inflight = args.simulate_max_inflight;
    if args.node_lease_duration_seconds < 1 {
        bail!(
            "--node-lease-duration-seconds must be at least 1, got {}",
            args.node_lease_duration_seconds
        );
    }
    cfg.lease_duration_seconds = args.node_lease_duration_seconds;
    cfg.renew_interval = Duration::from_secs_f64(f64::from(args.node_lease_duration_seconds) / 4.0);
    cfg.runtime_version = format!("skiff-sim://{}", env!("CARGO_PKG_VERSION"));
    // What a kubelet on this machine would report.
    if let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        cfg.kernel_version = release.trim().to_string();
    }
    if let Ok(os) = std::fs::read_to_string("/etc/os-release") {
        if let Some(pretty) = os.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")) {
            cfg.os_image = pretty.trim_matches('"').to_string();
        }
    }
    cfg.validate()?;
    Ok(cfg)
}

pub async fn run(args: AgentArgs) -> Result<()> {
    let Some(count) = args.simulate else {
        return run_node(args).await;
    };
    let mut config = sim_config(&args, count)?;
    let client = client(&args).await?;
    let version = client
        .apiserver_version()
        .await
        .context("asking the server for its version (is --server right?)")?;
    config.kubelet_version = version.git_version;
    tracing::info!(
        nodes = count,
        kubelet_version = %config.kubelet_version,
        "starting simulated nodes"
    );
    let stdin = tokio::io::BufReader::new(tokio::io::stdin());
    agent::simulated::run(client, config, stdin, tokio::io::stdout())
        .await
        .map_err(|e| anyhow!(e))
}

/// The real node: join (once: a node certificate kept in `<data-dir>/agent`), register
/// this machine as a Node, keep its Lease and status fresh.
async fn run_node(mut args: AgentArgs) -> Result<()> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(crate::server::default_data_dir);
    let agent_dir = data_dir.join("agent");
    std::fs::create_dir_all(&agent_dir)
        .with_context(|| format!("creating {}", agent_dir.display()))?;
    let name = match &args.node_name {
        Some(n) => n.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("reading the hostname for the node name (or pass --node-name)")?
            .trim()
            .to_lowercase(),
    };
    let client = if args.kubeconfig.is_some() {
        client(&args).await?
    } else {
        node_client(&args, &agent_dir, &name).await?
    };
    let version = client
        .apiserver_version()
        .await
        .context("asking the server for its version (is --server right?)")?;
    if let Some(cluster) = cluster_config(&client).await? {
        // Every node must agree with the server on these; as a k3s agent, take the
        // server's values over the flags.
        for (flag, ours, theirs) in [
            (
                "--cluster-cidr",
                &mut args.cluster_cidr,
                cluster.cluster_cidr,
            ),
            (
                "--service-cidr",
                &mut args.service_cidr,
                cluster.service_cidr,
            ),
        ] {
            if *ours != theirs {
                tracing::info!("{flag} {theirs} (from the server)");
                *ours = theirs;
            }
        }
        if let Ok(ip) = cluster.cluster_dns.parse() {
            args.cluster_dns = Some(ip);
        }
        if !cluster.cluster_domain.is_empty() {
            args.cluster_domain = cluster.cluster_domain;
        }
    }
    let internal_ip = match args.node_ip {
        Some(ip) => ip,
        None => route_source_address(args.server.as_deref())?,
    };
    let config = agent::node::object::NodeConfig {
        name,
        internal_ip,
        labels: args
            .node_label
            .iter()
            .map(|l| parse_label(l))
            .collect::<Result<_, _>>()?,
        taints: args
            .node_taint
            .iter()
            .map(|t| parse_taint(t))
            .collect::<Result<_, _>>()?,
        max_pods: agent::node::host::DEFAULT_MAX_PODS,
        kubelet_port: args.kubelet_port,
        kubelet_version: version.git_version,
        runtime_version: format!("skiff://{}", env!("CARGO_PKG_VERSION")),
        architecture: agent::simulated::config::kube_arch(std::env::consts::ARCH).to_string(),
    };
    if args.node_lease_duration_seconds < 1 {
        bail!(
            "--node-lease-duration-seconds must be at least 1, got {}",
            args.node_lease_duration_seconds
        );
    }
    let gc_policy = args.image_gc.policy()?;
    let heartbeat = agent::node::register::Heartbeat {
        lease_duration_seconds: args.node_lease_duration_seconds,
        image_fs: agent::pods::layout::Layout::new(&agent_dir).image_store(),
        ..Default::default()
    };
    let agent_api = start_agent_api(&agent_dir, &config).await?;
    let node_routes_config = node_routes_config(&args, &config, &agent_dir)?;
    // With vxlan, pods get the tunnel's MTU (flannel's FLANNEL_MTU): their packets must
    // fit in the link's with the encapsulation added.
    let pod_mtu = match node_routes_config.backend {
        network::node_routes::Backend::HostGw => None,
        network::node_routes::Backend::Vxlan => Some(
            network::node_routes::vxlan::pod_mtu(node_routes_config.node_ip)
                .await
                .map_err(|e| anyhow!(e))
                .context("--pod-routes vxlan: finding the pods' MTU")?,
        ),
    };
    let network = pod_network(&args, &config.name, &agent_dir, pod_mtu)?;
    // The node is NotReady (kubelet's "cni plugin not initialized") until its podCIDR
    // arrived and the pod network is set up for it.
    let (network_tx, network_rx) = agent::node::network::channel();
    let pod_cidr = tokio::spawn(agent::node::network::follow(
        client.clone(),
        network.clone(),
        network_tx,
    ));
    let pods = pod_context(
        client.clone(),
        &config,
        &agent_dir,
        &data_dir,
        network,
        node_dns(&args)?,
    )?;
    let image_gc = tokio::spawn(agent::node::image_gc::run(pods.clone(), gc_policy));
    let ingress = tokio::spawn(run_ingress(client.clone(), args.ingress.config(&config)));
    let manager = tokio::spawn(agent::pods::manager::run(pods));
    let service_proxy = tokio::spawn(run_service_proxy(
        client.clone(),
        service_proxy_config(&args, &config, &agent_dir)?,
    ));
    // NetworkPolicies for this node's pods (k3s's bundled policy controller).
    let network_policy = tokio::spawn(run_network_policy(
        client.clone(),
        network_policy_config(&args, &config, &agent_dir)?,
    ));
    // Other nodes' pod ranges via those nodes (host-gw) or the VXLAN overlay: pods reach
    // pods anywhere.
    let node_routes = tokio::spawn(network::node_routes::run(
        client.clone(),
        node_routes_config,
    ));
    let heartbeat = agent::node::register::Heartbeat {
        network: Some(network_rx),
        ..heartbeat
    };
    let result = agent::node::register::run(client, config, data_dir, heartbeat)
        .await
        .map_err(|e| anyhow!(e));
    manager.abort();
    image_gc.abort();
    ingress.abort();
    pod_cidr.abort();
    service_proxy.abort();
    network_policy.abort();
    node_routes.abort();
    if let Some(api) = agent_api {
        api.abort();
    }
    result
}

/// What pods' resolv.conf is made from: the cluster DNS address (`--cluster-dns`, else
/// the tenth address of the service range, as the server picks it), the domain, and the
/// host's resolver configuration (`--resolv-conf`; empty: none).
fn node_dns(args: &AgentArgs) -> Result<agent::pods::dns_config::NodeDns> {
    let cluster_dns = match args.cluster_dns {
        Some(ip) => ip,
        None => {
            let cidr: network::pod_network::cidr::Ipv4Cidr = args
                .service_cidr
                .parse()
                .with_context(|| format!("--service-cidr {}", args.service_cidr))?;
            std::net::IpAddr::V4(std::net::Ipv4Addr::from(u32::from(cidr.network()) + 10))
        }
    };
    let host = if args.resolv_conf.as_os_str().is_empty() {
        None
    } else {
        let text = std::fs::read_to_string(&args.resolv_conf).unwrap_or_else(|e| {
            tracing::warn!(
                "reading {}: {e}; pods get no host resolvers",
                args.resolv_conf.display()
            );
            String::new()
        });
        Some(agent::pods::dns_config::parse_resolv_conf(&text))
    };
    Ok(agent::pods::dns_config::NodeDns {
        cluster_dns: vec![cluster_dns],
        cluster_domain: args.cluster_domain.clone(),
        host,
    })
}

/// The cluster's network settings from the server (`GET /v1-skiff/config`); None from a
/// server that does not offer them.
async fn cluster_config(client: &kube::Client) -> Result<Option<apiserver::join::ClusterConfig>> {
    let request = http::Request::get(apiserver::join::CLUSTER_CONFIG_PATH)
        .body(Vec::new())
        .context("building the cluster configuration request")?;
    match client
        .request::<apiserver::join::ClusterConfig>(request)
        .await
    {
        Ok(config) => Ok(Some(config)),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(anyhow!(e).context("asking the server for the cluster's network settings")),
    }
}

/// The node's service proxy (kube-proxy's job): table `ip <--pod-bridge>-services`.
fn service_proxy_config(
    args: &AgentArgs,
    config: &agent::node::object::NodeConfig,
    agent_dir: &Path,
) -> Result<network::proxy::ProxyConfig> {
    let proxy = network::proxy::ProxyConfig {
        bridge: args.pod_bridge.clone(),
        service_cidr: network::proxy::parse_cidr(&args.service_cidr, "--service-cidr")?,
        cluster_cidr: Some(network::proxy::parse_cidr(
            &args.cluster_cidr,
            "--cluster-cidr",
        )?),
        node_ips: match config.internal_ip {
            std::net::IpAddr::V4(ip) => vec![ip],
            std::net::IpAddr::V6(_) => Vec::new(),
        },
        node_name: config.name.clone(),
        state_dir: agent_dir.to_path_buf(),
    };
    proxy.validate()?;
    Ok(proxy)
}

/// Runs the service proxy; a node whose proxy cannot start keeps running its pods (as a
/// kubelet does without kube-proxy), with the reason logged.
async fn run_service_proxy(client: kube::Client, config: network::proxy::ProxyConfig) {
    if let Err(e) = network::proxy::run(client, config).await {
        tracing::error!("the service proxy is not running: {e}");
    }
}

/// The node's NetworkPolicy enforcement: table `ip <--pod-bridge>-policy`.
fn network_policy_config(
    args: &AgentArgs,
    config: &agent::node::object::NodeConfig,
    agent_dir: &Path,
) -> Result<network::policy::PolicyConfig> {
    Ok(network::policy::PolicyConfig {
        bridge: args.pod_bridge.clone(),
        cluster_cidr: Some(network::proxy::parse_cidr(
            &args.cluster_cidr,
            "--cluster-cidr",
        )?),
        node_name: config.name.clone(),
        state_dir: agent_dir.to_path_buf(),
    })
}

/// Runs the policy controller; a node where it cannot run keeps running its pods
/// unisolated, with the reason logged.
async fn run_network_policy(client: kube::Client, config: network::policy::PolicyConfig) {
    if let Err(e) = network::policy::run(client, config).await {
        tracing::error!("NetworkPolicies are not enforced on this node: {e}");
    }
}

/// The agent's own API (kubelet's port 10250: logs, exec, port-forward), for the API
/// server's client certificate only. Needs the cluster CA the agent pinned when joining.
async fn start_agent_api(
    agent_dir: &Path,
    config: &agent::node::object::NodeConfig,
) -> Result<Option<tokio::task::JoinHandle<()>>> {
    let ca_path = agent_dir.join("server-ca.crt");
    let Ok(client_ca_pem) = std::fs::read_to_string(&ca_path) else {
        tracing::warn!(
            "no cluster CA at {}: the agent API (logs, exec) is not served",
            ca_path.display()
        );
        return Ok(None);
    };
    let listen = std::net::SocketAddr::from(([0, 0, 0, 0], config.kubelet_port));
    let api = agent::api::AgentApi::bind(agent::api::ApiConfig {
        listen,
        client_ca_pem,
        serving: agent::api::ServingCert::Generate {
            names: vec![config.name.clone(), config.internal_ip.to_string()],
        },
        layout: agent::pods::layout::Layout::new(agent_dir),
    })
    .await
    .with_context(|| format!("serving the agent API on {listen} (or choose --kubelet-port)"))?;
    Ok(Some(tokio::spawn(async move {
        if let Err(e) = api.run(std::future::pending()).await {
            tracing::error!("the agent API stopped: {e}");
        }
    })))
}

/// How pods reach other nodes (`--pod-routes`), checked before anything is made.
fn node_routes_config(
    args: &AgentArgs,
    config: &agent::node::object::NodeConfig,
    agent_dir: &Path,
) -> Result<network::node_routes::NodeRoutesConfig> {
    let backend = match args.pod_routes {
        PodRoutes::HostGw => network::node_routes::Backend::HostGw,
        PodRoutes::Vxlan => network::node_routes::Backend::Vxlan,
    };
    let node_ip = match config.internal_ip {
        std::net::IpAddr::V4(ip) => ip,
        std::net::IpAddr::V6(ip) => {
            bail!("the pod network is IPv4: the node's address {ip} must be IPv4 (--node-ip)")
        }
    };
    if backend == network::node_routes::Backend::Vxlan {
        if let Some(problem) = network::node_routes::vxlan::device_name_problem(&args.pod_bridge) {
            bail!(problem);
        }
    }
    Ok(network::node_routes::NodeRoutesConfig {
        node_name: config.name.clone(),
        node_ip,
        cluster_cidr: args
            .cluster_cidr
            .parse()
            .with_context(|| format!("--cluster-cidr {}", args.cluster_cidr))?,
        bridge: args.pod_bridge.clone(),
        backend,
        state_dir: agent_dir.join("network"),
    })
}

/// `--pod-routes`: how pods reach pods on other nodes (flannel's backend names).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodRoutes {
    /// Each other node's podCIDR via its InternalIP (the nodes share a LAN).
    HostGw,
    /// A VXLAN overlay between the nodes' InternalIPs (any IP connectivity).
    Vxlan,
}

impl PodRoutes {
    fn flag_value(self) -> &'static str {
        match self {
            PodRoutes::HostGw => "host-gw",
            PodRoutes::Vxlan => "vxlan",
        }
    }
}

/// The node's pod network: bridge `--pod-bridge`, addresses kept in
/// `<data-dir>/agent/network`; allocations of pods no longer on disk are released now.
/// `mtu`: the pods' and the bridge's MTU, when not the bridge's own.
fn pod_network(
    args: &AgentArgs,
    node_name: &str,
    agent_dir: &Path,
    mtu: Option<u32>,
) -> Result<std::sync::Arc<agent::pods::network::NodeNetwork>> {
    let cluster_cidr: network::pod_network::Ipv4Cidr = args
        .cluster_cidr
        .parse()
        .with_context(|| format!("--cluster-cidr {:?}", args.cluster_cidr))?;
    let network = agent::pods::network::NodeNetwork::new(
        node_name,
        network::pod_network::PodNetworkConfig {
            bridge: args.pod_bridge.clone(),
            cluster_cidr,
            state_dir: agent_dir.join("network"),
        },
    )
    .map_err(|e| anyhow!(e))?
    .with_pod_mtu(mtu);
    network.release_leaked(&agent::pods::layout::Layout::new(agent_dir));
    Ok(std::sync::Arc::new(network))
}

/// What the node's pod workers share: its image store, the shim launcher (this very
/// binary), the event recorder, its capacity, its pod network.
fn pod_context(
    client: kube::Client,
    config: &agent::node::object::NodeConfig,
    agent_dir: &Path,
    data_dir: &Path,
    network: std::sync::Arc<agent::pods::network::NodeNetwork>,
    dns: agent::pods::dns_config::NodeDns,
) -> Result<std::sync::Arc<agent::pods::context::NodeContext>> {
    let layout = agent::pods::layout::Layout::new(agent_dir);
    let images = runtime::images::ImageStore::open(layout.image_store()).with_context(|| {
        format!(
            "opening the image store in {}",
            layout.image_store().display()
        )
    })?;
    let mount_point_layer = layout.mount_point_layer();
    let mount_point_layer =
        match runtime::sandbox::overlay::ensure_mount_point_layer(&mount_point_layer) {
            Ok(()) => Some(mount_point_layer),
            Err(e) => {
                tracing::warn!("containers go without the mount-point layer: {e}");
                None
            }
        };
    let facts =
        agent::node::host::HostFacts::read(data_dir).context("reading the host's capacity")?;
    let (_, allocatable) = agent::node::object::resources(config, &facts);
    let quantity = |key: &str| allocatable[key].as_str().unwrap_or("0").to_string();
    let milli_cpu = agent::pods::resources::parse_quantity(&quantity("cpu"))
        .map(|q| q.as_milli())
        .unwrap_or(0);
    let bytes = |key: &str| {
        agent::pods::resources::parse_quantity(&quantity(key))
            .map(|q| q.value())
            .unwrap_or(0)
    };
    Ok(std::sync::Arc::new(agent::pods::context::NodeContext {
        // kubelet's defaults: --event-qps=50 --event-burst=100.
        recorder: controllers::events::Recorder::new(client.clone(), "kubelet")
            .with_write_limit(50.0, 100),
        services: agent::pods::services::ServiceCache::start(client.clone()),
        config_maps: agent::pods::object_cache::ObjectCache::new(client.clone()),
        secrets: agent::pods::object_cache::ObjectCache::new(client.clone()),
        client,
        node_name: config.name.clone(),
        host_ip: config.internal_ip.to_string(),
        images: std::sync::Arc::new(images),
        mount_point_layer,
        shims: runtime::shim::ShimClient::current_exe(),
        exec_binary: std::env::current_exe().context("finding the skiff binary")?,
        layout,
        allocatable_milli_cpu: milli_cpu,
        allocatable_memory: bytes("memory"),
        allocatable_ephemeral: bytes("ephemeral-storage"),
        memory_capacity: facts.memory_bytes as i64,
        runtime_ops: tokio::sync::Semaphore::new(agent::pods::context::runtime_parallelism()),
        sandbox_ops: tokio::sync::Semaphore::new(agent::pods::context::SANDBOX_PARALLELISM),
        network,
        dns,
    }))
}

/// The agent that `skiff server` runs for its own machine.
pub struct Embedded {
    /// The server's loopback URL.
    pub server: String,
    pub token_file: PathBuf,
    pub data_dir: PathBuf,
    pub node_name: Option<String>,
    pub node_ip: Option<std::net::IpAddr>,
    /// The node's address when neither `--node-ip` nor a default route gives one.
    pub fallback_ip: std::net::IpAddr,
    pub labels: Vec<String>,
    pub taints: Vec<String>,
    pub kubelet_port: u16,
    pub image_gc: ImageGcArgs,
    /// `--ingress-http-port`, `--ingress-https-port`.
    pub ingress: IngressArgs,
    /// `--service-cidr`, for the node's service proxy.
    pub service_cidr: String,
    /// `--pod-bridge`.
    pub pod_bridge: String,
    /// `--pod-routes`.
    pub pod_routes: PodRoutes,
    /// `--node-lease-duration-seconds`, from the server's failover timings.
    pub node_lease_duration_seconds: i32,
    /// `--cluster-cidr`, for the node's pod network.
    pub cluster_cidr: String,
}

/// The built-in ingress controller's listeners (every node runs one; 0 disables a port).
#[derive(clap::Args, Debug, Clone)]
pub struct IngressArgs {
    /// Port of the built-in ingress controller's HTTP listener on all the node's addresses
    /// (0: none).
    #[arg(long, default_value_t = 80)]
    pub ingress_http_port: u16,
    /// Port of the built-in ingress controller's HTTPS listener (0: none).
    #[arg(long, default_value_t = 443)]
    pub ingress_https_port: u16,
}

impl IngressArgs {
    fn config(&self, node: &agent::node::object::NodeConfig) -> ingress::IngressConfig {
        ingress::IngressConfig {
            http_port: self.ingress_http_port,
            https_port: self.ingress_https_port,
            node_ip: node.internal_ip,
        }
    }

    fn to_args(&self) -> Vec<String> {
        vec![
            format!("--ingress-http-port={}", self.ingress_http_port),
            format!("--ingress-https-port={}", self.ingress_https_port),
        ]
    }
}

/// Runs the ingress controller; a node whose controller stops keeps running its pods.
async fn run_ingress(client: kube::Client, config: ingress::IngressConfig) {
    if config.http_port == 0 && config.https_port == 0 {
        return;
    }
    if let Err(e) = ingress::run(client, config).await {
        tracing::error!("the ingress controller is not running: {e:#}");
    }
}

/// kubelet's image garbage collection flags (k3s passes them as `--kubelet-arg`).
#[derive(clap::Args, Debug, Clone)]
pub struct ImageGcArgs {
    /// Percent of the image filesystem in use at which unused images are deleted (kubelet's
    /// imageGCHighThresholdPercent; 100 disables image garbage collection).
    #[arg(long, default_value_t = 85, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub image_gc_high_threshold: u8,
    /// Percent of the image filesystem in use that image garbage collection frees down to
    /// (kubelet's imageGCLowThresholdPercent).
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub image_gc_low_threshold: u8,
    /// How long an unused image is kept at least after it was pulled or imported (kubelet's
    /// imageMinimumGCAge), e.g. `2m`.
    #[arg(long, default_value = "2m", value_parser = crate::failover::parse_duration)]
    pub minimum_image_ttl_duration: Duration,
}

impl ImageGcArgs {
    pub fn policy(&self) -> Result<agent::node::image_gc::GcPolicy> {
        let policy = agent::node::image_gc::GcPolicy {
            high_threshold_percent: self.image_gc_high_threshold,
            low_threshold_percent: self.image_gc_low_threshold,
            min_age: self.minimum_image_ttl_duration,
        };
        policy.validate().map_err(|e| anyhow!(e))?;
        Ok(policy)
    }

    /// The same flags, for the embedded agent's command line.
    fn to_args(&self) -> Vec<String> {
        vec![
            format!("--image-gc-high-threshold={}", self.image_gc_high_threshold),
            format!("--image-gc-low-threshold={}", self.image_gc_low_threshold),
            format!(
                "--minimum-image-ttl-duration={}ms",
                self.minimum_image_ttl_duration.as_millis()
            ),
        ]
    }
}

/// Runs the embedded agent: the same join and node code as `skiff agent`, with arguments
/// built from the server's.
pub async fn run_embedded(e: Embedded) -> Result<()> {
    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        agent: AgentArgs,
    }
    // The address the host would use for outside traffic (a UDP connect sends nothing);
    // a machine without a default route uses the server's advertised address.
    let node_ip = embedded_node_ip(e.node_ip, e.fallback_ip);
    let mut argv: Vec<String> = vec![
        "agent".into(),
        "--server".into(),
        e.server,
        "--token-file".into(),
        e.token_file.display().to_string(),
        "--data-dir".into(),
        e.data_dir.display().to_string(),
        "--node-ip".into(),
        node_ip.to_string(),
        "--kubelet-port".into(),
        e.kubelet_port.to_string(),
        "--service-cidr".into(),
        e.service_cidr,
        "--pod-bridge".into(),
        e.pod_bridge,
        "--pod-routes".into(),
        e.pod_routes.flag_value().into(),
        "--cluster-cidr".into(),
        e.cluster_cidr,
        "--node-lease-duration-seconds".into(),
        e.node_lease_duration_seconds.to_string(),
    ];
    argv.extend(e.image_gc.to_args());
    argv.extend(e.ingress.to_args());
    if let Some(name) = e.node_name {
        argv.extend(["--node-name".into(), name]);
    }
    for l in e.labels {
        argv.extend(["--node-label".into(), l]);
    }
    for t in e.taints {
        argv.extend(["--node-taint".into(), t]);
    }
    let args = <Wrapper as clap::Parser>::try_parse_from(argv)
        .context("building the embedded agent's arguments")?
        .agent;
    run_node(args).await
}

/// The node's own client (certificate `system:node:<name>`), from
/// `<data-dir>/agent/kubelet.kubeconfig`, obtained from the server with the join token the
/// first time.
async fn node_client(args: &AgentArgs, agent_dir: &Path, name: &str) -> Result<kube::Client> {
    let kubeconfig_path = agent_dir.join("kubelet.kubeconfig");
    if !kubeconfig_path.exists() {
        let server = args
            .server
            .as_deref()
            .ok_or_else(|| anyhow!("--server is required (or --kubeconfig)"))?;
        let (join, ca_pem) = join_client(args).await?;
        let ca_pem = ca_pem.ok_or_else(|| anyhow!("no verified server CA to keep"))?;
        let key = rcgen::KeyPair::generate().context("generating the node key")?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("system:node:{name}"));
        let csr = params
            .serialize_request(&key)
            .and_then(|c| c.pem())
            .context("building the certificate request")?;
        let body = serde_json::json!({"nodeName": name, "csr": csr}).to_string();
        let request = http::Request::post(apiserver::join::NODE_CERTIFICATE_PATH)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.into_bytes())
            .context("building the node certificate request")?;
        let reply: serde_json::Value = join
            .request(request)
            .await
            .with_context(|| format!("asking {server} for a certificate for node {name:?}"))?;
        let cert = reply["certificate"]
            .as_str()
            .ok_or_else(|| anyhow!("the server's reply has no certificate"))?;
        let paths = crate::certs::CertPaths {
            cert: agent_dir.join("client-kubelet.crt"),
            key: agent_dir.join("client-kubelet.key"),
        };
        crate::certs::write_private(&paths.key, &key.serialize_pem())?;
        std::fs::write(&paths.cert, cert)
            .with_context(|| format!("writing {}", paths.cert.display()))?;
        let ca_path = agent_dir.join("server-ca.crt");
        std::fs::write(&ca_path, &ca_pem)
            .with_context(|| format!("writing {}", ca_path.display()))?;
        crate::kubeconfig::write(&kubeconfig_path, server, &ca_path, &paths)
            .context("writing the node's kubeconfig")?;
        tracing::info!(node = %name, "joined: node certificate kept in {}", agent_dir.display());
    }
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig_path)
        .with_context(|| format!("reading {}", kubeconfig_path.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .with_context(|| format!("loading {}", kubeconfig_path.display()))?;
    crate::api_client::http2(config).context("building the node's API client")
}

/// The local address the kernel would use to reach the server: the node's InternalIP
/// unless `--node-ip` says otherwise. A UDP "connect" sends nothing.
/// The embedded agent's node address: `--node-ip`, else the source address of the default
/// route (found without sending anything: a UDP socket only connects to a documentation
/// address), else `fallback`.
pub fn embedded_node_ip(
    node_ip: Option<std::net::IpAddr>,
    fallback: std::net::IpAddr,
) -> std::net::IpAddr {
    node_ip
        .or_else(|| route_source_address(Some("https://192.0.2.1:6443")).ok())
        .unwrap_or(fallback)
}

fn route_source_address(server: Option<&str>) -> Result<std::net::IpAddr> {
    let server = server.ok_or_else(|| anyhow!("--node-ip is required with --kubeconfig"))?;
    let uri: http::Uri = server
        .parse()
        .with_context(|| format!("--server {server:?} is not a URL"))?;
    let host = uri
        .host()
        .ok_or_else(|| anyhow!("--server {server:?} has no host"))?
        .trim_matches(|c| c == '[' || c == ']');
    let port = uri.port_u16().unwrap_or(6443);
    let target = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .with_context(|| format!("resolving {host}"))?
        .next()
        .ok_or_else(|| anyhow!("{host} resolves to no address"))?;
    let bind: std::net::SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = std::net::UdpSocket::bind(bind).context("opening a UDP socket")?;
    socket
        .connect(target)
        .with_context(|| format!("finding the route to {target} (or pass --node-ip)"))?;
    Ok(socket.local_addr()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_plain_and_k10() {
        let hash = "ab".repeat(32);
        assert_eq!(
            parse_token("s3cret\n").unwrap(),
            JoinToken {
                ca_hash: None,
                secret: "s3cret".into()
            }
        );
        assert_eq!(
            parse_token(&format!("K10{hash}::server:s3cret")).unwrap(),
            JoinToken {
                ca_hash: Some(hash.clone()),
                secret: "s3cret".into()
            }
        );
        assert!(parse_token("K10abc::server:x").is_err());
        assert!(parse_token(&format!("K10{hash}server:x")).is_err());
        assert!(parse_token(&format!("K10{hash}::server:")).is_err());
        assert!(parse_token("  ").is_err());
    }

    #[test]
    fn the_ca_is_found_beside_a_server_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let server = dir.path().join("server");
        std::fs::create_dir_all(server.join("tls")).unwrap();
        std::fs::write(server.join("token"), "t\n").unwrap();
        assert_eq!(ca_beside_token_file(&server.join("token")), None);
        std::fs::write(server.join("tls/server-ca.crt"), "pem").unwrap();
        assert_eq!(
            ca_beside_token_file(&server.join("token")),
            Some(server.join("tls/server-ca.crt"))
        );
        assert_eq!(ca_beside_token_file(&server.join("other")), None);
    }
}
