//! Pod addresses from the node's podCIDR, kept as CNI's host-local plugin keeps them: one
//! file per allocated address under `<dir>/` (named by the address, holding the pod uid),
//! made with `create_new` so two pods never get one address, even from concurrent workers.
//! The files are the truth: allocations survive agent restarts, and [`Ipam::retain`] at
//! start releases those of pods that are gone, so nothing leaks.
//!
//! Like host-local, the next search starts after the last address handed out
//! (`last_reserved_ip.0`), so a released address is not reused at once by the next pod.
//!
//! Unlike host-local, a pod's own address is found through an index, `by-pod/<uid>` (the
//! address), not by reading every allocation: that scan made each of a node's pod starts
//! cost more with every pod already there (100 pods at once: ~6,300 file reads). The
//! allocation files stay the truth: an index entry counts only when the address file it
//! names still holds the uid. An address allocated before the index existed is not found
//! through it; the pod then gets a second address and both go when it is released.

use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::cidr::Ipv4Cidr;

const LAST_RESERVED: &str = "last_reserved_ip.0";
/// The per-pod index: `<dir>/by-pod/<uid>` holds the pod's address.
const BY_POD: &str = "by-pod";

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("no free address left in {range} for pod {uid} ({dir})")]
    Exhausted {
        range: Ipv4Cidr,
        uid: String,
        dir: PathBuf,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> IpamError {
    let path = path.to_path_buf();
    move |source| IpamError::Io { what, path, source }
}

/// The allocations of one range, in one directory.
#[derive(Debug, Clone)]
pub struct Ipam {
    dir: PathBuf,
    range: Ipv4Cidr,
}

impl Ipam {
    pub fn new(dir: impl Into<PathBuf>, range: Ipv4Cidr) -> Ipam {
        Ipam {
            dir: dir.into(),
            range,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The pod's address: the one it already holds, else the next free one.
    pub fn allocate(&self, uid: &str) -> Result<Ipv4Addr, IpamError> {
        let index = self.index_entry(uid);
        match &index {
            Some(entry) => {
                if let Some(ip) = self.indexed(entry, uid) {
                    return Ok(ip);
                }
                let by_pod = self.dir.join(BY_POD);
                std::fs::create_dir_all(&by_pod).map_err(io_err("creating", &by_pod))?;
            }
            // A uid that cannot name a file (never one the API server made): look through
            // every allocation as host-local does.
            None => {
                std::fs::create_dir_all(&self.dir).map_err(io_err("creating", &self.dir))?;
                if let Some(ip) = self
                    .allocations()?
                    .into_iter()
                    .find(|(ip, owner)| owner == uid && self.range.contains(*ip))
                    .map(|(ip, _)| ip)
                {
                    return Ok(ip);
                }
            }
        }
        let candidates: Vec<Ipv4Addr> = self.range.pod_addresses().collect();
        let start = self
            .last_reserved()
            .and_then(|last| candidates.iter().position(|c| *c == last))
            .map_or(0, |i| i + 1);
        for i in 0..candidates.len() {
            let ip = candidates[(start + i) % candidates.len()];
            let path = self.dir.join(ip.to_string());
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    // No fsync, as CNI's host-local store: after a power loss the pod's
                    // namespace is gone too, and an empty file still holds the address.
                    file.write_all(uid.as_bytes())
                        .map_err(io_err("writing", &path))?;
                    let last = self.dir.join(LAST_RESERVED);
                    std::fs::write(&last, ip.to_string()).map_err(io_err("writing", &last))?;
                    if let Some(entry) = &index {
                        std::fs::write(entry, ip.to_string()).map_err(io_err("writing", entry))?;
                    }
                    return Ok(ip);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err("creating", &path)(e)),
            }
        }
        Err(IpamError::Exhausted {
            range: self.range,
            uid: uid.to_string(),
            dir: self.dir.clone(),
        })
    }

    /// Releases every address the pod holds; Ok when it holds none.
    pub fn release(&self, uid: &str) -> Result<Vec<Ipv4Addr>, IpamError> {
        self.release_where(|owner| owner == uid)
    }

    /// Releases the addresses of pods for which `alive` is false (and files left empty by
    /// an interrupted allocation). Returns what was released.
    pub fn retain(&self, alive: impl Fn(&str) -> bool) -> Result<Vec<Ipv4Addr>, IpamError> {
        let released = self.release_where(|owner| owner.is_empty() || !alive(owner))?;
        self.sweep_index()?;
        Ok(released)
    }

    fn release_where(&self, release: impl Fn(&str) -> bool) -> Result<Vec<Ipv4Addr>, IpamError> {
        let mut released = Vec::new();
        for (ip, owner) in self.allocations()? {
            if release(&owner) {
                let path = self.dir.join(ip.to_string());
                match std::fs::remove_file(&path) {
                    Ok(()) => released.push(ip),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("removing", &path)(e)),
                }
                if let Some(entry) = self.index_entry(&owner) {
                    remove_if_present(&entry)?;
                }
            }
        }
        Ok(released)
    }

    /// Removes index entries whose allocation is gone (an agent stopped between the two).
    fn sweep_index(&self) -> Result<(), IpamError> {
        let by_pod = self.dir.join(BY_POD);
        let entries = match std::fs::read_dir(&by_pod) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("reading", &by_pod)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err("reading", &by_pod))?;
            let uid = entry.file_name().to_string_lossy().into_owned();
            if self.indexed(&entry.path(), &uid).is_none() {
                remove_if_present(&entry.path())?;
            }
        }
        Ok(())
    }

    /// Every allocated address and the uid of the pod holding it, by address.
    pub fn allocations(&self) -> Result<Vec<(Ipv4Addr, String)>, IpamError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("reading", &self.dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("reading", &self.dir))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let path = entry.path();
            let owner = match std::fs::read_to_string(&path) {
                Ok(text) => text.trim().to_string(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("reading", &path)(e)),
            };
            out.push((ip, owner));
        }
        out.sort();
        Ok(out)
    }

    /// Where the index keeps `uid`'s address; None for a uid that cannot be a file name.
    fn index_entry(&self, uid: &str) -> Option<PathBuf> {
        let plain = !uid.is_empty()
            && uid != "."
            && uid != ".."
            && uid.len() <= 200
            && !uid.contains(['/', '\0']);
        plain.then(|| self.dir.join(BY_POD).join(uid))
    }

    /// The address the index names for `uid`, if its allocation file still holds `uid`.
    fn indexed(&self, entry: &Path, uid: &str) -> Option<Ipv4Addr> {
        let ip: Ipv4Addr = std::fs::read_to_string(entry).ok()?.trim().parse().ok()?;
        let owner = std::fs::read_to_string(self.dir.join(ip.to_string())).ok()?;
        (owner.trim() == uid && self.range.contains(ip)).then_some(ip)
    }

    fn last_reserved(&self) -> Option<Ipv4Addr> {
        std::fs::read_to_string(self.dir.join(LAST_RESERVED))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

fn remove_if_present(path: &Path) -> Result<(), IpamError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam(dir: &Path, range: &str) -> Ipam {
        Ipam::new(dir.join("skiff0"), range.parse().unwrap())
    }

    #[test]
    fn pods_get_distinct_addresses_and_keep_theirs() {
        let tmp = tempfile::tempdir().unwrap();
        let ipam = ipam(tmp.path(), "10.42.0.0/24");
        let a = ipam.allocate("uid-a").unwrap();
        let b = ipam.allocate("uid-b").unwrap();
        assert_eq!(
            a,
            Ipv4Addr::new(10, 42, 0, 2),
            "network and gateway are skipped"
        );
        assert_eq!(b, Ipv4Addr::new(10, 42, 0, 3));
        assert_eq!(
            ipam.allocate("uid-a").unwrap(),
            a,
            "allocating again is idempotent"
        );
        assert_eq!(
            std::fs::read_to_string(ipam.dir().join("10.42.0.2")).unwrap(),
            "uid-a"
        );
    }

    #[test]
    fn a_pods_address_is_found_without_reading_the_others() {
        let tmp = tempfile::tempdir().unwrap();
        let ipam = ipam(tmp.path(), "10.42.0.0/24");
        let a = ipam.allocate("uid-a").unwrap();
        ipam.allocate("uid-b").unwrap();
        // Another pod's allocation file made unreadable as a text file: a scan would fail.
        std::fs::write(ipam.dir().join("10.42.0.3"), [0xff, 0xfe]).unwrap();
        assert_eq!(ipam.allocate("uid-a").unwrap(), a);
        assert_eq!(
            std::fs::read_to_string(ipam.dir().join("by-pod/uid-a")).unwrap(),
            "10.42.0.2"
        );
        // An index entry whose address went to someone else does not count.
        std::fs::write(ipam.dir().join("10.42.0.2"), "uid-z").unwrap();
        assert_eq!(ipam.allocate("uid-a").unwrap(), Ipv4Addr::new(10, 42, 0, 4));
    }

    #[test]
    fn releasing_removes_the_index_entry_and_start_up_sweeps_stale_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let ipam = ipam(tmp.path(), "10.42.0.0/24");
        ipam.allocate("a").unwrap();
        ipam.allocate("b").unwrap();
        ipam.release("a").unwrap();
        assert!(!ipam.dir().join("by-pod/a").exists());
        assert!(ipam.dir().join("by-pod/b").exists());
        // An agent stopped between removing b's address and its index entry.
        std::fs::remove_file(ipam.dir().join("10.42.0.3")).unwrap();
        assert!(ipam.retain(|_| true).unwrap().is_empty());
        assert!(!ipam.dir().join("by-pod/b").exists());
    }

    #[test]
    fn released_addresses_are_reused_last() {
        let tmp = tempfile::tempdir().unwrap();
        let ipam = ipam(tmp.path(), "10.42.0.0/24");
        let a = ipam.allocate("a").unwrap();
        ipam.allocate("b").unwrap();
        assert_eq!(ipam.release("a").unwrap(), vec![a]);
        assert!(
            ipam.release("a").unwrap().is_empty(),
            "releasing twice is fine"
        );
        assert_eq!(ipam.allocate("c").unwrap(), Ipv4Addr::new(10, 42, 0, 4));
        assert_eq!(ipam.allocations().unwrap().len(), 2);
    }

    #[test]
    fn a_small_range_runs_out_and_skips_broadcast() {
        let tmp = tempfile::tempdir().unwrap();
        let ipam = ipam(tmp.path(), "10.42.0.0/29");
        let got: Vec<_> = (0..5)
            .map(|i| ipam.allocate(&format!("p{i}")).unwrap())
            .collect();
        assert_eq!(got.last(), Some(&Ipv4Addr::new(10, 42, 0, 6)));
        assert!(matches!(
            ipam.allocate("p5"),
            Err(IpamError::Exhausted { .. })
        ));
        ipam.release("p1").unwrap();
        assert_eq!(ipam.allocate("p5").unwrap(), Ipv4Addr::new(10, 42, 0, 3));
    }

    #[test]
    fn a_restarted_agent_keeps_live_pods_and_frees_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let first = ipam(tmp.path(), "10.42.0.0/24");
        let live = first.allocate("live").unwrap();
        let gone = first.allocate("gone").unwrap();
        // An allocation interrupted between create and write.
        std::fs::write(first.dir().join("10.42.0.9"), "").unwrap();
        let restarted = ipam(tmp.path(), "10.42.0.0/24");
        let mut released = restarted.retain(|uid| uid == "live").unwrap();
        released.sort();
        assert_eq!(released, vec![gone, Ipv4Addr::new(10, 42, 0, 9)]);
        assert_eq!(restarted.allocate("live").unwrap(), live);
        assert_eq!(
            restarted.allocations().unwrap(),
            vec![(live, "live".to_string())]
        );
    }

    #[test]
    fn concurrent_allocations_never_share_an_address() {
        let tmp = tempfile::tempdir().unwrap();
        let ipam = ipam(tmp.path(), "10.42.0.0/24");
        let got: Vec<Ipv4Addr> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|i| {
                    let ipam = ipam.clone();
                    s.spawn(move || ipam.allocate(&format!("pod-{i}")).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut unique = got.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 16, "{got:?}");
    }
}
