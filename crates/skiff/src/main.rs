//! The skiff binary: `skiff server` runs the control plane (API server, datastore,
//! controllers); `skiff agent --simulate N` runs simulated nodes (the real node agent
//! comes later). Flags use k3s's names wherever the
//! concept exists, so someone who knows k3s guesses them right.

mod agent_cmd;
mod api_client;
mod certs;
mod failover;
mod image_cmd;
mod kubeconfig;
mod local_cluster;
mod memory;
mod server;

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: the API server and the informers allocate and free
/// small objects at a high rate from many threads; BENCHMARKS.md (session 4, allocator)
/// has the CPU it saves (1.33x pods bound/s, 1.39x durable creates/s; RSS about the same).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "skiff",
    version,
    about = "A lightweight Kubernetes distribution in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the control plane: API server, datastore and controllers.
    Server(ServerArgs),
    /// Run a node agent that joins a server (registers this machine as a node and runs its
    /// pods), or N simulated nodes with --simulate N.
    Agent(AgentArgs),
    /// Manage the node's images: import tarballs, list, remove.
    Image(image_cmd::ImageArgs),
    /// Print the server's join token (K10<ca-sha256>::server:<secret>) for `skiff agent --token`.
    Token(TokenArgs),
    /// Stop every container this node runs and remove their sandboxes and the pod network
    /// (containers outlive the agent by design; this is k3s-killall.sh).
    Killall(TokenArgs),
    /// A multi-node cluster on this machine (as k3d for k3s): each node in its own network
    /// namespace; create, list, delete.
    LocalCluster(local_cluster::LocalClusterArgs),
}

/// Flags of `skiff token`.
#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// The server's data directory.
    #[arg(long, short = 'd', env = "SKIFF_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Flags of `skiff server`, named as k3s names them.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Where state, certificates and credentials live.
    #[arg(long, short = 'd', env = "SKIFF_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTPS port of the API server.
    #[arg(long, default_value_t = 6443)]
    pub https_listen_port: u16,
    /// Address the API server listens on.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// Address advertised to clients (defaults to the node IP, or 127.0.0.1).
    #[arg(long)]
    pub advertise_address: Option<IpAddr>,
    /// Where to write the admin kubeconfig (default: <data-dir>/kubeconfig.yaml).
    #[arg(long, short = 'o', env = "SKIFF_KUBECONFIG_OUTPUT")]
    pub write_kubeconfig: Option<PathBuf>,
    /// Shared secret agents (and bearer-token clients) use to join; generated if absent.
    #[arg(long, short = 't', env = "SKIFF_TOKEN")]
    pub token: Option<String>,
    /// Extra names and IPs for the serving certificate.
    #[arg(long = "tls-san")]
    pub tls_san: Vec<String>,
    /// Name of this node.
    #[arg(long, env = "SKIFF_NODE_NAME")]
    pub node_name: Option<String>,
    /// IP address of this node.
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// Port of the embedded agent's API (logs, exec, port-forward; kubelet's --port).
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
    /// Labels for this node (key=value).
    #[arg(long = "node-label")]
    pub node_label: Vec<String>,
    /// Taints for this node (key=value:Effect).
    #[arg(long = "node-taint")]
    pub node_taint: Vec<String>,
    /// Pod IP range.
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// Service IP range.
    #[arg(long, default_value = "10.43.0.0/16")]
    pub service_cidr: String,
    /// Name of the node's pod bridge (it holds the gateway address of the node's podCIDR;
    /// each pod's veth is a port of it); the pod network's and the service proxy's nftables
    /// tables (`ip <bridge>-pods`, `ip <bridge>-services`) and devices are named after it.
    #[arg(long, default_value = "skiff0")]
    pub pod_bridge: String,
    /// How pods reach pods on other nodes (flannel's backends): `host-gw` routes each
    /// node's podCIDR via its InternalIP (the nodes share a LAN); `vxlan` tunnels pod
    /// traffic in VXLAN (device `<bridge>.vxlan`, VNI 1, UDP 8472) between the nodes'
    /// InternalIPs, for nodes that only reach each other by IP (pods' MTU: the link's
    /// less 50). Every node of a cluster must use the same one.
    #[arg(long, value_enum, default_value = "host-gw")]
    pub pod_routes: agent_cmd::PodRoutes,
    /// Cluster DNS Service IP (default: the tenth address of --service-cidr, 10.43.0.10,
    /// as k3s derives it).
    #[arg(long)]
    pub cluster_dns: Option<IpAddr>,
    /// Cluster domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Port the built-in cluster DNS serves on (UDP and TCP) at the advertise address; the
    /// kube-dns Service (`--cluster-dns`, port 53) points at it.
    #[arg(long, default_value_t = 53)]
    pub cluster_dns_port: u16,
    /// Resolvers the cluster DNS forwards other names to (ADDR or ADDR:PORT; default: the
    /// nameservers of --resolv-conf).
    #[arg(long = "cluster-dns-upstream", value_delimiter = ',')]
    pub cluster_dns_upstream: Vec<String>,
    /// The host's resolv.conf, whose nameservers the cluster DNS forwards to.
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
    /// NodePort range.
    #[arg(long, default_value = "30000-32767")]
    pub service_node_port_range: String,
    /// Use etcd at this endpoint (http://host:2379) instead of the embedded SQLite store.
    #[arg(long, env = "SKIFF_DATASTORE_ENDPOINT")]
    pub datastore_endpoint: Option<String>,
    /// Do not run the embedded node agent.
    #[arg(long)]
    pub disable_agent: bool,
    /// Components not to deploy (e.g. traefik, servicelb, local-storage: the default
    /// `local-path` StorageClass).
    #[arg(long)]
    pub disable: Vec<String>,
    /// Where local-path volumes are kept on nodes (default: <data-dir>/storage, as k3s).
    #[arg(long)]
    pub default_local_storage_path: Option<PathBuf>,
    /// Log at debug level.
    #[arg(long)]
    pub debug: bool,
    /// Failover profile: `upstream` (Kubernetes defaults: a dead node is noticed after
    /// 50 s and its pods are evicted 300 s later) or `fast` (noticed after 4 s, evicted
    /// after 1 s more; agents should then renew leases every second with
    /// `--node-lease-duration-seconds 4`). The flags below override single values.
    #[arg(long, value_enum, default_value = "upstream")]
    pub failover_profile: crate::failover::Profile,
    /// How long a node may go without renewing its lease before it is marked
    /// Ready=Unknown and tainted unreachable (kube-controller-manager flag), e.g. `50s`.
    #[arg(long, value_parser = crate::failover::parse_duration)]
    pub node_monitor_grace_period: Option<std::time::Duration>,
    /// How often node health is checked (kube-controller-manager flag), e.g. `5s`.
    #[arg(long, value_parser = crate::failover::parse_duration)]
    pub node_monitor_period: Option<std::time::Duration>,
    /// tolerationSeconds of the not-ready:NoExecute toleration added to every pod
    /// (kube-apiserver flag).
    #[arg(long)]
    pub default_not_ready_toleration_seconds: Option<i64>,
    /// tolerationSeconds of the unreachable:NoExecute toleration added to every pod
    /// (kube-apiserver flag).
    #[arg(long)]
    pub default_unreachable_toleration_seconds: Option<i64>,
    #[command(flatten)]
    pub image_gc: agent_cmd::ImageGcArgs,
    #[command(flatten)]
    pub ingress: agent_cmd::IngressArgs,
}

/// Flags of `skiff agent`, named as k3s names them; `--simulate*` are skiff's own.
#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// URL of the server to join.
    #[arg(long, short = 's', env = "SKIFF_URL")]
    pub server: Option<String>,
    /// Join token: the server's token, plain or as K10<ca-sha256>::<user>:<secret>.
    #[arg(long, short = 't', env = "SKIFF_TOKEN")]
    pub token: Option<String>,
    /// File holding the join token (the server keeps it in <data-dir>/server/token; from
    /// there the server CA beside it is trusted too).
    #[arg(long, env = "SKIFF_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) the server's certificate must be signed by.
    #[arg(long)]
    pub server_ca: Option<PathBuf>,
    /// Join with a kubeconfig (server URL, CA and credentials) instead of a token.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Where the agent keeps its credentials and state (`<data-dir>/agent`).
    #[arg(long, short = 'd', env = "SKIFF_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The node's InternalIP (default: the local address of the route to the server).
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// Port of this agent's API (logs, exec, port-forward; kubelet's --port).
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
    /// Run N simulated nodes instead of a real one (no containers run; pods report as a
    /// kubelet would). Control them with `stop NAME` / `start NAME` lines on stdin.
    #[arg(long, value_name = "N")]
    pub simulate: Option<usize>,
    /// Node name; with --simulate, the prefix of `<prefix>-<i>` (default `sim`).
    #[arg(long, env = "SKIFF_NODE_NAME")]
    pub node_name: Option<String>,
    /// Labels for the node(s) (key=value).
    #[arg(long = "node-label")]
    pub node_label: Vec<String>,
    /// Taints for the node(s) (key=value:Effect).
    #[arg(long = "node-taint")]
    pub node_taint: Vec<String>,
    /// Pod IP range of the cluster (the server's `--cluster-cidr`): routed locally, pod
    /// egress leaving it is masqueraded; the simulated nodes' podCIDRs are cut from it.
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// Service IP range (the server's `--service-cidr`): routed locally and served by the
    /// node's service proxy.
    #[arg(long, default_value = "10.43.0.0/16")]
    pub service_cidr: String,
    /// Name of the node's pod bridge (it holds the gateway address of the node's podCIDR;
    /// each pod's veth is a port of it); the pod network's and the service proxy's nftables
    /// tables (`ip <bridge>-pods`, `ip <bridge>-services`) and devices are named after it.
    #[arg(long, default_value = "skiff0")]
    pub pod_bridge: String,
    /// How pods reach pods on other nodes (flannel's backends): `host-gw` routes each
    /// node's podCIDR via its InternalIP (the nodes share a LAN); `vxlan` tunnels pod
    /// traffic in VXLAN (device `<bridge>.vxlan`, VNI 1, UDP 8472) between the nodes'
    /// InternalIPs, for nodes that only reach each other by IP (pods' MTU: the link's
    /// less 50). Every node of a cluster must use the same one.
    #[arg(long, value_enum, default_value = "host-gw")]
    pub pod_routes: agent_cmd::PodRoutes,
    /// The cluster DNS address pods' resolv.conf names (kubelet's `--cluster-dns`; the
    /// server's when it offers one, else the tenth address of `--service-cidr`).
    #[arg(long)]
    pub cluster_dns: Option<std::net::IpAddr>,
    /// The cluster's DNS domain (kubelet's `--cluster-domain`; the server's when it offers
    /// one).
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The host resolver configuration `dnsPolicy: Default` pods get and cluster-first
    /// pods take search domains from (kubelet's `--resolv-conf`; empty: none).
    #[arg(long = "resolv-conf", default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
    /// Prefix length of each simulated node's podCIDR.
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
    /// Range the simulated nodes' InternalIPs come from (node i gets address i+1).
    #[arg(long, default_value = "172.20.0.0/14")]
    pub simulate_node_ip_range: String,
    /// CPU capacity of each simulated node.
    #[arg(long, default_value = "8")]
    pub simulate_cpu: String,
    /// Memory capacity of each simulated node.
    #[arg(long, default_value = "32Gi")]
    pub simulate_memory: String,
    /// Pod capacity of each simulated node.
    #[arg(long, default_value_t = 110)]
    pub simulate_pods: u32,
    /// Ephemeral storage capacity of each simulated node.
    #[arg(long, default_value = "100Gi")]
    pub simulate_ephemeral_storage: String,
    /// How long the containers of restartPolicy Never/OnFailure pods run (e.g. 2s, 500ms).
    #[arg(long, default_value = "2s", value_parser = crate::failover::parse_duration)]
    pub simulate_run_time: std::time::Duration,
    /// Longest a deleted pod takes to stop, whatever its terminationGracePeriodSeconds.
    #[arg(long, default_value = "0s", value_parser = crate::failover::parse_duration)]
    pub simulate_termination_grace_cap: std::time::Duration,
    /// Most pod writes (status, deletes) in flight at once; each node has at most one
    /// heartbeat (lease renewal, node status) in flight, as a kubelet.
    #[arg(long, default_value_t = 32)]
    pub simulate_max_inflight: usize,
    /// Duration of the node Leases; they are renewed every quarter of it (kubelet's
    /// nodeLeaseDurationSeconds, 40). Use 4 with the server's fast failover profile.
    #[arg(long, default_value_t = 40)]
    pub node_lease_duration_seconds: i32,
    #[command(flatten)]
    pub image_gc: agent_cmd::ImageGcArgs,
    #[command(flatten)]
    pub ingress: agent_cmd::IngressArgs,
    /// Log at debug level.
    #[arg(long)]
    pub debug: bool,
}

fn main() -> std::process::ExitCode {
    // The hidden container shim (DESIGN.md §4) runs before any thread or async runtime
    // exists, outside clap; it never returns.
    let mut args = std::env::args_os().skip(1);
    if args
        .next()
        .is_some_and(|a| a == runtime::shim::SHIM_SUBCOMMAND)
    {
        runtime::shim::run_shim(args);
    }
    // Likewise the exec helper (a process in a running container: kubectl exec, probes).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == runtime::exec::EXEC_SUBCOMMAND)
    {
        runtime::exec::run_exec(std::env::args_os().skip(2));
    }
    lazy_arena_commit_for_daemons();
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => {
            init_logging(args.debug);
            run_to_completion("skiff server", async {
                memory::spawn_housekeeping();
                server::run(args).await
            })
        }
        Command::Agent(args) => {
            // Logs go to stderr: stdout is the simulated fleet's control channel.
            init_logging(args.debug);
            run_to_completion("skiff agent", async {
                memory::spawn_housekeeping();
                agent_cmd::run(args).await
            })
        }
        Command::Token(args) => {
            let data_dir = args.data_dir.unwrap_or_else(server::default_data_dir);
            let path = data_dir.join("server").join("token");
            match std::fs::read_to_string(&path) {
                Ok(token) => {
                    println!("{}", token.trim());
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!(
                        "skiff token: reading {}: {e} (has `skiff server --data-dir {}` run?)",
                        path.display(),
                        data_dir.display()
                    );
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Killall(args) => {
            let data_dir = args.data_dir.unwrap_or_else(server::default_data_dir);
            let layout = agent::pods::layout::Layout::new(data_dir.join("agent"));
            let report = agent::pods::cleanup::kill_all(&layout);
            println!(
                "killed {} containers, removed {} pods",
                report.containers_killed, report.pods_removed
            );
            for e in &report.errors {
                eprintln!("skiff killall: {e}");
            }
            // The service proxy's nftables table and device, as k3s-killall.sh removes
            // kube-proxy's rules.
            let proxy = network::proxy::remove(&data_dir.join("agent"));
            if let Err(e) = &proxy {
                eprintln!("skiff killall: {e}");
            }
            // The NetworkPolicy table, as k3s-killall.sh flushes the policy controller's
            // rules.
            let policy = network::policy::remove(&data_dir.join("agent"));
            if let Err(e) = &policy {
                eprintln!("skiff killall: network policy: {e}");
            }
            // The host ports' nftables table (CNI portmap's rules on k3s).
            let host_ports = network::host_ports::remove(&data_dir.join("agent").join("network"));
            if let Err(e) = &host_ports {
                eprintln!("skiff killall: host ports: {e}");
            }
            // The VXLAN device of `--pod-routes vxlan` (its routes go with it), as
            // k3s-killall.sh deletes flannel.1; before the bridge, whose blackhole route
            // stays while the device holds an address in the cluster range.
            let vxlan =
                network::node_routes::vxlan::remove(&data_dir.join("agent").join("network"));
            if let Err(e) = &vxlan {
                eprintln!("skiff killall: {e}");
            }
            // The pod network (bridge, its nftables table and route, the allocations), as
            // k3s-killall.sh deletes cni0 and flannel's rules.
            let pods = network::pod_network::remove_host(&data_dir.join("agent").join("network"));
            if let Err(e) = &pods {
                eprintln!("skiff killall: pod network: {e}");
            }
            if report.errors.is_empty()
                && proxy.is_ok()
                && policy.is_ok()
                && pods.is_ok()
                && vxlan.is_ok()
                && host_ports.is_ok()
            {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Command::LocalCluster(args) => {
            run_to_completion("skiff local-cluster", local_cluster::run(args))
        }
        Command::Image(args) => match image_cmd::run(args) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("skiff image: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}

/// `skiff server` and `skiff agent` (a real node or `--simulate`) re-execute themselves
/// once with mimalloc's lazy arena commit, which is read only at process start. Eager
/// commit (mimalloc's default) backs whole arenas at once and, with transparent huge pages,
/// in 2 MiB pages: the idle server held 50 MiB of anonymous memory instead of 24 and the
/// agent with 100 pods 70 MiB instead of 46 (BENCHMARKS.md sessions 6 and 10); lazy commit
/// measured no slower (durable creates/s with 32 clients within noise, session 10). The
/// simulated agent spent ~29% of its CPU zeroing fresh huge pages with eager commit, 6%
/// with lazy commit (BENCHMARKS.md session 19).
fn lazy_arena_commit_for_daemons() {
    const VAR: &str = "MIMALLOC_ARENA_EAGER_COMMIT";
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let is_daemon = args.get(1).is_some_and(|a| a == "server" || a == "agent");
    if !is_daemon || std::env::var_os(VAR).is_some() {
        return;
    }
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new("/proc/self/exe")
        .arg0(&args[0])
        .args(&args[1..])
        .env(VAR, "0")
        .exec();
    // Not fatal: it runs with the default, using more memory.
    eprintln!("skiff: re-executing with {VAR}=0 failed ({err}); continuing");
}

/// Run a command's future on a multi-threaded runtime; errors are printed with context.
fn run_to_completion(
    what: &str,
    fut: impl std::future::Future<Output = anyhow::Result<()>>,
) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skiff: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fut) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{what}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(debug: bool) {
    let default = if debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},kube_runtime=warn,kube_client=warn,hyper=warn,h2=warn,tower=warn,rustls=warn,hickory_server=warn,hickory_net=warn,hickory_proto=warn")));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false)
        .init();
}
