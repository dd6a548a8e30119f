//! `skiff local-cluster`: a multi-node cluster on this one machine for users, as k3d is
//! for k3s users. Each node is a network namespace on a bridge of its own (`hosts`), runs
//! a detached `skiff server` or `skiff agent` (`processes`), and the user gets a kubeconfig
//! that reaches the server from the machine (`kubeconfig`). Names, addresses and command
//! lines are decided first (`plan`), recorded in `<state-dir>/<name>/cluster.json`, then
//! acted on; `delete` undoes exactly what was recorded.

mod hosts;
mod kubeconfig;
mod plan;
mod processes;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use plan::{ClusterPlan, Layout, Role};

/// Flags of `skiff local-cluster`.
#[derive(clap::Args, Debug)]
pub struct LocalClusterArgs {
    /// Where local clusters keep their state, logs and kubeconfigs.
    #[arg(long, global = true, default_value = "/var/lib/skiff/local-clusters")]
    pub state_dir: PathBuf,
    #[command(subcommand)]
    pub command: LocalClusterCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum LocalClusterCommand {
    /// Create a cluster: a server and agents, each node in its own network namespace on a
    /// bridge of the cluster's; waits until every node is Ready and writes a kubeconfig.
    Create(CreateArgs),
    /// List local clusters with their node count and state.
    List,
    /// Stop a cluster's nodes and remove their containers, namespaces, bridge and files.
    Delete {
        /// The cluster's name.
        #[arg(default_value = plan::DEFAULT_NAME)]
        name: String,
    },
    /// Import image tarballs (docker-archive or OCI layout) into every node of a cluster
    /// (without `create --egress`, nodes cannot pull from outside the machine).
    ImageImport {
        /// Tarballs to import.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The cluster's name.
        #[arg(long, short = 'c', default_value = plan::DEFAULT_NAME)]
        cluster: String,
    },
}

/// Flags of `skiff local-cluster create`.
#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The cluster's name (nodes are `skiff-<name>-server`, `skiff-<name>-agent-<i>`).
    #[arg(default_value = plan::DEFAULT_NAME)]
    pub name: String,
    /// How many agents join the server.
    #[arg(long, default_value_t = 2)]
    pub agents: usize,
    /// A flag for `skiff server` (repeatable), e.g. `--server-arg=--failover-profile=fast`.
    #[arg(long = "server-arg", allow_hyphen_values = true, value_name = "FLAG")]
    pub server_args: Vec<String>,
    /// A flag for every `skiff agent` (repeatable), e.g.
    /// `--agent-arg=--node-label=tier=web`.
    #[arg(long = "agent-arg", allow_hyphen_values = true, value_name = "FLAG")]
    pub agent_args: Vec<String>,
    /// Image tarballs to import into every node before it starts (repeatable).
    #[arg(long = "image", value_name = "FILE")]
    pub images: Vec<PathBuf>,
    /// Let nodes and pods reach beyond this machine: nodes route by default via the
    /// machine, which masquerades the cluster's subnet (and turns on net.ipv4.ip_forward).
    /// Off by default: nothing a local cluster sends leaves the machine.
    #[arg(long)]
    pub egress: bool,
    /// How long to wait for every node to be Ready (the cluster is removed after that).
    #[arg(long, default_value = "180s", value_parser = crate::failover::parse_duration)]
    pub timeout: Duration,
}

pub async fn run(args: LocalClusterArgs) -> Result<()> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("local clusters need root (network namespaces, bridges, containers)");
    }
    let root = args.state_dir;
    match args.command {
        LocalClusterCommand::Create(c) => create(&root, c).await,
        LocalClusterCommand::List => list(&root),
        LocalClusterCommand::Delete { name } => {
            plan::validate_name(&name).map_err(anyhow::Error::msg)?;
            delete(&root, &name)?;
            println!("Deleted local cluster {name:?}");
            Ok(())
        }
        LocalClusterCommand::ImageImport { files, cluster } => {
            plan::validate_name(&cluster).map_err(anyhow::Error::msg)?;
            let layout = Layout::new(&root, &cluster);
            let plan = read_plan(&layout)?;
            for node in &plan.nodes {
                processes::import_images(&layout.data_dir(&node.name), &files)?;
                println!("Imported into {}", node.name);
            }
            Ok(())
        }
    }
}

/// One create at a time on this machine picks a subnet and makes its links: an flock'd
/// file in /run, whatever `--state-dir` each create uses.
const CREATE_LOCK: &str = "/run/skiff-local-clusters.lock";

struct CreateLock {
    _file: File,
}

fn lock_creates(root: &Path) -> Result<CreateLock> {
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let path = Path::new(CREATE_LOCK);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!(
            "locking {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(CreateLock { _file: file })
}

fn read_plan(layout: &Layout) -> Result<ClusterPlan> {
    let path = layout.state_file();
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no local cluster here: reading {} (see `skiff local-cluster list`)",
            path.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Every recorded cluster under `root`, by name.
fn recorded(root: &Path) -> Vec<(String, Result<ClusterPlan>)> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut found: Vec<(String, Result<ClusterPlan>)> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .map(|name| {
            let plan = read_plan(&Layout::new(root, &name));
            (name, plan)
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

async fn create(root: &Path, args: CreateArgs) -> Result<()> {
    plan::validate_name(&args.name).map_err(anyhow::Error::msg)?;
    if args.agents > plan::MAX_AGENTS {
        bail!(
            "--agents {}: at most {} agents",
            args.agents,
            plan::MAX_AGENTS
        );
    }
    let api_port = match plan::flag_value(&args.server_args, "--https-listen-port") {
        Some(p) => p
            .parse()
            .with_context(|| format!("--server-arg --https-listen-port {p:?}"))?,
        None => plan::DEFAULT_API_PORT,
    };
    let layout = Layout::new(root, &args.name);
    let plan = {
        let _lock = lock_creates(root)?;
        if layout.dir.exists() {
            bail!(
                "local cluster {:?} already exists (`skiff local-cluster delete {}` removes it)",
                args.name,
                args.name
            );
        }
        let mut taken = hosts::taken_prefixes()?;
        taken.extend(
            recorded(root)
                .into_iter()
                .filter_map(|(_, p)| p.ok().map(|p| p.subnet)),
        );
        let subnet = plan::choose_subnet(&taken).context(
            "no free subnet for the cluster's hosts: every /24 of 10.251.0.0/16 and \
             172.28.0.0/16 overlaps a route of this machine or another local cluster",
        )?;
        let plan = plan::plan(&args.name, args.agents, subnet, api_port, args.egress);
        hosts::check_free(&plan)?;
        // Recorded before anything exists, so a failure part-way is undone by `delete`.
        for node in &plan.nodes {
            std::fs::create_dir_all(layout.node_dir(&node.name))
                .with_context(|| format!("creating {}", layout.node_dir(&node.name).display()))?;
        }
        let state = serde_json::to_string_pretty(&plan)?;
        std::fs::write(layout.state_file(), state)
            .with_context(|| format!("writing {}", layout.state_file().display()))?;
        let made = hosts::create_bridge(&plan)
            .and_then(|()| {
                plan.nodes
                    .iter()
                    .try_for_each(|node| hosts::create_host(&plan, node))
            })
            .and_then(|()| {
                if plan.egress && hosts::enable_egress(&plan)? {
                    println!("Turned on net.ipv4.ip_forward for --egress");
                }
                Ok(())
            });
        if let Err(e) = made {
            drop(_lock);
            return Err(rollback(root, &plan.name, e));
        }
        plan
    };
    if let Err(e) = start_nodes(&plan, &layout, &args).await {
        return Err(rollback(root, &plan.name, e));
    }
    let kubeconfig = layout.kubeconfig();
    println!(
        "Local cluster {:?} is ready: {} node{} ({}), API server {}",
        plan.name,
        plan.nodes.len(),
        if plan.nodes.len() == 1 { "" } else { "s" },
        plan.nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        plan.server_url()
    );
    println!(
        "Kubeconfig written to {}; use it with:",
        kubeconfig.display()
    );
    println!("  export KUBECONFIG={}", kubeconfig.display());
    Ok(())
}

/// Undoes a failed create after printing the nodes' last log lines (their files go too).
fn rollback(root: &Path, name: &str, error: anyhow::Error) -> anyhow::Error {
    let layout = Layout::new(root, name);
    let logs: Vec<String> = read_plan(&layout)
        .map(|p| {
            p.nodes
                .iter()
                .filter(|n| layout.log_file(&n.name).exists())
                .map(|n| processes::log_tail(&layout.log_file(&n.name), 15))
                .collect()
        })
        .unwrap_or_default();
    if let Err(e) = delete(root, name) {
        eprintln!("skiff local-cluster: removing the failed cluster {name:?}: {e:#}");
    }
    for tail in logs {
        eprintln!("{tail}");
    }
    error.context(format!("creating local cluster {name:?} (removed again)"))
}

/// Starts the server, then the agents with its token, and waits for every node Ready.
async fn start_nodes(plan: &ClusterPlan, layout: &Layout, args: &CreateArgs) -> Result<()> {
    if !args.images.is_empty() {
        for node in &plan.nodes {
            processes::import_images(&layout.data_dir(&node.name), &args.images)?;
        }
    }
    let deadline = Instant::now() + args.timeout;
    let server = plan.server();
    let mut children: Vec<(String, Child)> = Vec::new();
    let child = processes::spawn_node(
        &server.name,
        &plan.server_args(layout, &args.server_args),
        &layout.log_file(&server.name),
        &layout.pid_file(&server.name),
    )?;
    children.push((server.name.clone(), child));
    // The server writes its admin kubeconfig once it serves.
    let server_kubeconfig = layout.server_kubeconfig(&server.name);
    while !server_kubeconfig.exists() {
        check_alive(&mut children, layout)?;
        if Instant::now() > deadline {
            bail!("the server did not become ready in {:?}", args.timeout);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let token_file = layout.token_file(&server.name);
    let token = std::fs::read_to_string(&token_file)
        .with_context(|| format!("reading the join token {}", token_file.display()))?;
    for node in plan.nodes.iter().filter(|n| n.role == Role::Agent) {
        let child = processes::spawn_node(
            &node.name,
            &plan.agent_args(node, layout, token.trim(), &args.agent_args),
            &layout.log_file(&node.name),
            &layout.pid_file(&node.name),
        )?;
        children.push((node.name.clone(), child));
    }
    kubeconfig::write_for_user(&server_kubeconfig, &plan.name, &layout.kubeconfig())?;
    let client = client_from(&layout.kubeconfig()).await?;
    let names: Vec<&str> = plan.nodes.iter().map(|n| n.name.as_str()).collect();
    loop {
        check_alive(&mut children, layout)?;
        let ready = ready_nodes(&client).await.unwrap_or_default();
        if names.iter().all(|n| ready.iter().any(|r| r == n)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {} nodes Ready after {:?} (ready: {})",
                ready.len(),
                names.len(),
                args.timeout,
                ready.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Fails when a node process exited during create.
fn check_alive(children: &mut [(String, Child)], layout: &Layout) -> Result<()> {
    // (The rollback prints each node's log tail before removing the files.)
    for (node, child) in children.iter_mut() {
        if let Some(status) = child.try_wait()? {
            bail!(
                "skiff on node {node} exited during start-up ({status}; the last lines of {} \
                 are above)",
                layout.log_file(node).display()
            );
        }
    }
    Ok(())
}

async fn client_from(path: &Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .with_context(|| format!("loading {}", path.display()))?;
    kube::Client::try_from(config).context("building a client for the local cluster")
}

/// Names of the Nodes whose Ready condition is True.
async fn ready_nodes(client: &kube::Client) -> Result<Vec<String>> {
    use k8s_openapi::api::core::v1::Node;
    let nodes = kube::Api::<Node>::all(client.clone())
        .list(&Default::default())
        .await?;
    Ok(nodes
        .items
        .into_iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|n| n.metadata.name)
        .collect())
}

/// Stops every node by its recorded PID, runs `skiff killall` in each node's namespace,
/// removes the namespaces, the bridge and the cluster's directory. Whatever is already
/// gone is skipped; on a failure the directory is kept so `delete` can be run again.
fn delete(root: &Path, name: &str) -> Result<()> {
    let layout = Layout::new(root, name);
    if !layout.dir.exists() {
        bail!("no local cluster {name:?} in {}", root.display());
    }
    let plan = match read_plan(&layout) {
        Ok(plan) => plan,
        // Created and failed before anything but the directory existed.
        Err(_) if !layout.state_file().exists() => {
            return remove_dir(&layout.dir);
        }
        Err(e) => return Err(e),
    };
    let mut errors: Vec<String> = Vec::new();
    // Agents first: the server is still there while they stop.
    for node in plan.nodes.iter().rev() {
        if let Some(pid) = processes::read_pid(&layout.pid_file(&node.name)) {
            if let Err(e) =
                processes::stop(pid, &layout.data_dir(&node.name), Duration::from_secs(15))
            {
                errors.push(format!("{}: {e:#}", node.name));
            }
        }
    }
    for node in &plan.nodes {
        let cleaned = hosts::ensure_netns(&node.name)
            .and_then(|()| processes::killall(&node.name, &layout.data_dir(&node.name)));
        if let Err(e) = cleaned {
            errors.push(format!("{}: {e:#}", node.name));
        }
        if let Err(e) = hosts::remove_host(node) {
            errors.push(format!("{}: {e:#}", node.name));
        }
    }
    // The containers' shims exit once their container has; the files stay until then.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut left = processes::mentioning(&layout.dir);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        left = processes::mentioning(&layout.dir);
    }
    if !left.is_empty() {
        errors.push(format!(
            "processes still running from {}: {left:?}",
            layout.dir.display()
        ));
    }
    if let Err(e) = hosts::remove_egress(&plan) {
        errors.push(format!("{e:#}"));
    }
    if let Err(e) = hosts::remove_bridge(&plan) {
        errors.push(format!("{e:#}"));
    }
    if !errors.is_empty() {
        bail!(
            "deleting local cluster {name:?} (its files are kept in {}; run delete again):\n{}",
            layout.dir.display(),
            errors.join("\n")
        );
    }
    remove_dir(&layout.dir)
}

/// Removes the cluster's directory, refusing while anything is mounted below it (a pod's
/// leftover mount must not let the removal reach into what it mounts).
fn remove_dir(dir: &Path) -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = format!("{}/", dir.display());
    let below: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    if !below.is_empty() {
        bail!(
            "not removing {}: still mounted below it: {}",
            dir.display(),
            below.join(", ")
        );
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

fn list(root: &Path) -> Result<()> {
    let mut rows = vec![[
        "NAME".to_string(),
        "NODES".to_string(),
        "STATE".to_string(),
        "SERVER".to_string(),
        "KUBECONFIG".to_string(),
    ]];
    for (name, plan) in recorded(root) {
        let layout = Layout::new(root, &name);
        let row = match plan {
            Ok(plan) => {
                let running = plan
                    .nodes
                    .iter()
                    .filter(|n| {
                        processes::read_pid(&layout.pid_file(&n.name)).is_some_and(|pid| {
                            processes::is_node_process(pid, &layout.data_dir(&n.name))
                        })
                    })
                    .count();
                let state = match running {
                    r if r == plan.nodes.len() => "running".to_string(),
                    0 => "stopped".to_string(),
                    r => format!("degraded ({r}/{} running)", plan.nodes.len()),
                };
                [
                    name,
                    plan.nodes.len().to_string(),
                    state,
                    plan.server_url(),
                    layout.kubeconfig().display().to_string(),
                ]
            }
            Err(_) => [
                name,
                "?".into(),
                "broken (no cluster.json)".into(),
                String::new(),
                String::new(),
            ],
        };
        rows.push(row);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
    Ok(())
}
