//! Several test hosts on one machine, as issue 5's multi-node tests need: each host is a
//! network namespace with one veth on a test bridge and its own address, like machines
//! on one LAN. The root namespace holds the bridge's first address, so the test process
//! can reach every host, but no host has a default route: nothing a host sends can leave
//! the machine. A host's link can be cut and restored (its bridge port goes down).
//!
//! Processes join a host by `setns` of the network namespace only (mounts, cgroups and
//! PIDs stay shared, as for a second agent on the same machine), through [`TestHost::enter`].
//!
//! Names and the subnet (10.250.<slot>.0/24) come from a slot claimed with an flock'd
//! lock file, so parallel tests and crashed earlier runs never collide; everything is
//! removed on drop.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

const SLOT_DIR: &str = "/run/skiff-test-slots";
const SLOTS: u32 = 50;

/// An flock'd lock file: slot `n` of `kind` is ours while this lives (and the lock dies with
/// the process, so a crashed test frees its slot).
pub struct Slot {
    pub number: u32,
    _lock: File,
}

/// Claims the first free slot of `kind` (0..50).
pub fn claim_slot(kind: &str) -> Result<Slot> {
    std::fs::create_dir_all(SLOT_DIR).with_context(|| format!("creating {SLOT_DIR}"))?;
    for number in 0..SLOTS {
        let path = format!("{SLOT_DIR}/{kind}-{number}.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {path}"))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Slot {
                number,
                _lock: file,
            });
        }
    }
    bail!("all {SLOTS} test {kind} slots in {SLOT_DIR} are taken")
}

fn run(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A test LAN: a bridge in the root namespace and the hosts attached to it.
pub struct TestNet {
    slot: Slot,
    bridge: String,
    hosts: Vec<String>,
}

/// One test host: a network namespace `netns` (under /run/netns) with address `ip` on eth0.
#[derive(Clone, Debug)]
pub struct TestHost {
    pub name: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    /// The host's veth end on the bridge, in the root namespace.
    bridge_port: String,
}

impl TestNet {
    pub fn new() -> Result<TestNet> {
        let slot = claim_slot("net")?;
        let bridge = format!("sktn{}", slot.number);
        let net = TestNet {
            bridge,
            hosts: Vec::new(),
            slot,
        };
        // A crashed earlier run may have left this slot's bridge behind.
        net.remove_leftovers();
        run(&["ip", "link", "add", &net.bridge, "type", "bridge"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", net.gateway()),
            "dev",
            &net.bridge,
        ])?;
        run(&["ip", "link", "set", &net.bridge, "up"])?;
        Ok(net)
    }

    /// The root namespace's address on the test LAN.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.slot.number as u8, 1)
    }

    fn netns_name(&self, index: usize) -> String {
        format!("skth{}-{index}", self.slot.number)
    }

    /// Adds host number `hosts.len()` named `name`, at 10.250.<slot>.<10 + index>.
    pub fn add_host(&mut self, name: &str) -> Result<TestHost> {
        let index = self.hosts.len();
        let netns = self.netns_name(index);
        let bridge_port = format!("sktv{}-{index}", self.slot.number);
        let peer = format!("sktp{}-{index}", self.slot.number);
        let ip = Ipv4Addr::new(10, 250, self.slot.number as u8, 10 + index as u8);
        run(&["ip", "netns", "add", &netns])?;
        self.hosts.push(netns.clone());
        run(&[
            "ip",
            "link",
            "add",
            &bridge_port,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ])?;
        run(&["ip", "link", "set", &bridge_port, "master", &self.bridge])?;
        run(&["ip", "link", "set", &bridge_port, "up"])?;
        run(&["ip", "link", "set", &peer, "netns", &netns])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["ip", "-n", netns.as_str()];
            all.extend_from_slice(args);
            run(&all)
        };
        inside(&["link", "set", &peer, "name", "eth0"])?;
        inside(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        inside(&["link", "set", "eth0", "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(TestHost {
            name: name.to_string(),
            netns,
            ip,
            bridge_port,
        })
    }

    fn remove_leftovers(&self) {
        for index in 0..=250 {
            let netns = self.netns_name(index);
            if std::path::Path::new("/run/netns").join(&netns).exists() {
                let _ = run(&["ip", "netns", "del", &netns]);
            }
            // A namespace kept alive by a leftover process keeps its veth pair too.
            let port = format!("sktv{}-{index}", self.slot.number);
            if std::path::Path::new("/sys/class/net").join(&port).exists() {
                let _ = run(&["ip", "link", "del", &port]);
            }
        }
        let _ = run(&["ip", "link", "del", &self.bridge]);
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Deleting the bridge port deletes the pair even if a process still holds the
        // namespace; then the namespace's name goes.
        for (index, netns) in self.hosts.iter().enumerate() {
            let _ = run(&[
                "ip",
                "link",
                "del",
                &format!("sktv{}-{index}", self.slot.number),
            ]);
            let _ = run(&["ip", "netns", "del", netns]);
        }
        let _ = run(&["ip", "link", "del", &self.bridge]);
    }
}

impl TestHost {
    /// The namespace file processes join.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.netns)
    }

    /// Makes `cmd` run in this host's network namespace.
    pub fn enter(&self, cmd: &mut Command) -> Result<()> {
        let path = self.netns_path();
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: only setns(2) runs between fork and exec; the descriptor is kept open
        // by the closure, which owns the file.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(())
    }

    /// Takes the host off the LAN, as a pulled cable would.
    pub fn cut_link(&self) -> Result<()> {
        run(&["ip", "link", "set", &self.bridge_port, "down"])
    }

    pub fn restore_link(&self) -> Result<()> {
        run(&["ip", "link", "set", &self.bridge_port, "up"])
    }
}
