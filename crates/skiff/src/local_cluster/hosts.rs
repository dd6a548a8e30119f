//! The local cluster's machines: a bridge in the root namespace holding the subnet's first
//! address, and per node a network namespace (`ip netns`, so `/run/netns/<node>`) whose
//! `eth0` is a veth to that bridge. No namespace gets a default route: what a node sends
//! beyond the subnet goes nowhere (see README, "Local multi-node cluster").
//! The same mechanics as testkit's test hosts, kept separate so testkit stays as it is.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::plan::{ClusterPlan, NodePlan, Prefix};

/// `name` from /usr/sbin or /sbin (a user's PATH may lack them), else from PATH.
fn sbin(name: &str) -> PathBuf {
    ["/usr/sbin", "/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new(sbin("ip"))
        .args(args)
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn netns_path(netns: &str) -> PathBuf {
    Path::new("/run/netns").join(netns)
}

/// Asked of the kernel (not /sys/class/net, which shows the namespace sysfs was mounted
/// in, not necessarily ours).
pub fn link_exists(name: &str) -> bool {
    ip(&["-o", "link", "show", "dev", name]).is_ok()
}

/// Every IPv4 range the root namespace routes or holds an address in (all tables), which a
/// new cluster's subnet must not overlap.
pub fn taken_prefixes() -> Result<Vec<Prefix>> {
    let mut taken = Vec::new();
    let routes = ip(&["-4", "-o", "route", "show", "table", "all"])?;
    for line in routes.lines() {
        // `[type] <dst> ...`: blackhole, local, broadcast... come before the destination.
        let words: Vec<&str> = line.split_whitespace().collect();
        let dst = match words.first() {
            Some(&"default") => continue,
            Some(w) if w.parse::<std::net::Ipv4Addr>().is_ok() || w.contains('/') => *w,
            _ => match words.get(1) {
                Some(w) => *w,
                None => continue,
            },
        };
        if let Some(p) = Prefix::parse(dst) {
            taken.push(p);
        }
    }
    let addrs = ip(&["-4", "-o", "addr", "show"])?;
    for line in addrs.lines() {
        let mut words = line.split_whitespace();
        if let Some(p) = words.find(|w| *w == "inet").and_then(|_| words.next()) {
            if let Some(p) = Prefix::parse(p) {
                taken.push(p);
            }
        }
    }
    Ok(taken)
}

/// Fails if any link or namespace the plan names exists already (another local cluster
/// whose name gives the same short id, or anything else): checked before the plan is
/// recorded, so `delete` only ever removes what this cluster made.
pub fn check_free(plan: &ClusterPlan) -> Result<()> {
    let links = std::iter::once(&plan.bridge).chain(plan.nodes.iter().map(|n| &n.port));
    if let Some(link) = links.into_iter().find(|l| link_exists(l)) {
        bail!(
            "link {link} already exists (another local cluster whose name gives the same \
             short id?); choose another name"
        );
    }
    if let Some(node) = plan.nodes.iter().find(|n| netns_path(&n.name).exists()) {
        bail!("network namespace {} already exists", node.name);
    }
    Ok(())
}

/// The bridge with the root namespace's address on it.
pub fn create_bridge(plan: &ClusterPlan) -> Result<()> {
    ip(&["link", "add", &plan.bridge, "type", "bridge"])?;
    ip(&[
        "addr",
        "add",
        &format!("{}/{}", plan.gateway, plan.subnet.len),
        "dev",
        &plan.bridge,
    ])?;
    ip(&["link", "set", &plan.bridge, "up"])?;
    Ok(())
}

/// A node's namespace, its veth (peer made directly inside as `eth0`) and address.
pub fn create_host(plan: &ClusterPlan, node: &NodePlan) -> Result<()> {
    ip(&["netns", "add", &node.name])?;
    ip(&[
        "link", "add", &node.port, "type", "veth", "peer", "name", "eth0", "netns", &node.name,
    ])?;
    ip(&["link", "set", &node.port, "master", &plan.bridge])?;
    ip(&["link", "set", &node.port, "up"])?;
    let inside = |args: &[&str]| {
        let mut all = vec!["-n", node.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    };
    inside(&[
        "addr",
        "add",
        &format!("{}/{}", node.ip, plan.subnet.len),
        "dev",
        "eth0",
    ])?;
    inside(&["link", "set", "eth0", "up"])?;
    inside(&["link", "set", "lo", "up"])?;
    Ok(())
}

/// Makes `cmd` run in the node's network namespace (only the network: mounts, cgroups and
/// PIDs stay the machine's, as for any agent) and in a session of its own, so it outlives
/// the terminal that ran `skiff local-cluster create`.
pub fn enter(netns: &str, cmd: &mut Command, new_session: bool) -> Result<()> {
    let path = netns_path(netns);
    let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: only setsid(2) and setns(2) run between fork and exec; the closure owns the
    // file, so the descriptor stays open until then.
    unsafe {
        cmd.pre_exec(move || {
            if new_session && libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// Makes sure the node's namespace exists (an empty one if it was lost), so cleanup that
/// must run inside it never runs in the root namespace instead.
pub fn ensure_netns(netns: &str) -> Result<()> {
    if !netns_path(netns).exists() {
        ip(&["netns", "add", netns])?;
    }
    Ok(())
}

/// Removes a node's veth and namespace; what is already gone is fine.
pub fn remove_host(node: &NodePlan) -> Result<()> {
    // Deleting our end deletes the pair even while a process still holds the namespace.
    if link_exists(&node.port) {
        ip(&["link", "del", &node.port])?;
    }
    if netns_path(&node.name).exists() {
        ip(&["netns", "del", &node.name])?;
    }
    Ok(())
}

pub fn remove_bridge(plan: &ClusterPlan) -> Result<()> {
    if link_exists(&plan.bridge) {
        ip(&["link", "del", &plan.bridge])?;
    }
    Ok(())
}

fn nft(args: &[&str], stdin: Option<&str>) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new(sbin("nft"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running nft {}", args.join(" ")))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .context("writing the nftables script")?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().context("waiting for nft")?;
    if !out.status.success() {
        bail!(
            "nft {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `--egress`: the machine forwards (net.ipv4.ip_forward, turned on if off and left on,
/// as Docker does) and masquerades the subnet; every node routes by default via the
/// machine. Returns whether ip_forward had to be turned on.
pub fn enable_egress(plan: &ClusterPlan) -> Result<bool> {
    const FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
    let was_on = std::fs::read_to_string(FORWARD)
        .with_context(|| format!("reading {FORWARD}"))?
        .trim()
        == "1";
    if !was_on {
        std::fs::write(FORWARD, "1").with_context(|| format!("writing {FORWARD}"))?;
    }
    nft(&["-f", "-"], Some(&plan.egress_ruleset()))?;
    for node in &plan.nodes {
        ip(&[
            "-n",
            &node.name,
            "route",
            "add",
            "default",
            "via",
            &plan.gateway.to_string(),
        ])?;
    }
    Ok(!was_on)
}

/// Removes the `--egress` table if it is there (the routes go with the namespaces).
pub fn remove_egress(plan: &ClusterPlan) -> Result<()> {
    let table = plan.egress_table();
    if nft(&["list", "table", "ip", &table], None).is_ok() {
        nft(&["delete", "table", "ip", &table], None)?;
    }
    Ok(())
}
