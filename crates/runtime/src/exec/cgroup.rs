//! The container's cgroups, found from the host side: the lines of /proc/<pid>/cgroup
//! matched against the cgroup mounts in /proc/self/mountinfo (v1 controllers, a named v1
//! hierarchy, the v2 unified hierarchy; hybrid hosts have both). The helper opens each
//! `cgroup.procs` before it leaves the host's mount namespace; the exec'd process joins by
//! writing "0" (itself) to each, which works from inside the container's pid namespace.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::ExecError;

/// One line of /proc/<pid>/cgroup: `id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLine {
    pub hierarchy: u32,
    pub controllers: Vec<String>,
    pub path: String,
}

/// A cgroup filesystem mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub v2: bool,
    /// The hierarchy path mounted (mountinfo's root field).
    pub root: String,
    pub mount_point: PathBuf,
    /// Super options: the controllers and `name=` of a v1 hierarchy.
    pub options: Vec<String>,
}

pub fn parse_proc_cgroup(text: &str) -> Vec<CgroupLine> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let hierarchy = parts.next()?.parse().ok()?;
            let controllers = parts
                .next()?
                .split(',')
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect();
            let path = parts.next()?.to_owned();
            Some(CgroupLine {
                hierarchy,
                controllers,
                path,
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let fstype = *right.first()?;
            let v2 = match fstype {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            Some(CgroupMount {
                v2,
                root: unescape(fields.get(3)?),
                mount_point: PathBuf::from(unescape(fields.get(4)?)),
                options: right
                    .get(2)
                    .map(|o| o.split(',').map(String::from).collect())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The directory of each of the container's cgroups that is mounted on this host.
pub fn cgroup_dirs(lines: &[CgroupLine], mounts: &[CgroupMount]) -> Result<Vec<PathBuf>, String> {
    let mut dirs = Vec::new();
    for line in lines {
        let mount = mounts.iter().find(|m| {
            if line.hierarchy == 0 && line.controllers.is_empty() {
                m.v2
            } else {
                !m.v2
                    && !line.controllers.is_empty()
                    && line.controllers.iter().all(|c| m.options.contains(c))
            }
        });
        let Some(mount) = mount else { continue };
        let rel = if mount.root == "/" {
            Some(line.path.as_str())
        } else {
            line.path
                .strip_prefix(mount.root.as_str())
                .filter(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        let Some(rel) = rel else {
            return Err(format!(
                "cgroup {} of hierarchy {} is outside its mount at {}",
                line.path,
                line.hierarchy,
                mount.mount_point.display()
            ));
        };
        let dir = mount.mount_point.join(rel.trim_start_matches('/'));
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    Ok(dirs)
}

/// Opens `cgroup.procs` of every cgroup of process `pid`, for writing.
pub fn open_procs_files(pid: i32) -> Result<Vec<(PathBuf, File)>, ExecError> {
    let own = format!("/proc/{pid}/cgroup");
    let lines = parse_proc_cgroup(
        &std::fs::read_to_string(&own).map_err(ExecError::io(format!("reading {own}")))?,
    );
    let mounts = parse_mountinfo(
        &std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(ExecError::io("reading /proc/self/mountinfo"))?,
    );
    cgroup_dirs(&lines, &mounts)
        .map_err(ExecError::Other)?
        .into_iter()
        .map(|dir| {
            let path = dir.join("cgroup.procs");
            let file = File::options()
                .write(true)
                .open(&path)
                .map_err(ExecError::io(format!("opening {}", path.display())))?;
            Ok((path, file))
        })
        .collect()
}

/// Moves the calling process into the cgroups whose `cgroup.procs` files are given.
pub fn join(files: &[(PathBuf, File)]) -> Result<(), String> {
    use std::io::Write;
    for (path, file) in files {
        let mut f: &File = file;
        f.write_all(b"0")
            .map_err(|e| format!("joining cgroup {}: {e}", Path::new(path).display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
25 30 0:22 / /sys rw,nosuid - sysfs sysfs rw
36 25 0:31 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu
37 25 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 25 0:33 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
39 25 0:34 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
40 25 0:35 /nested /mnt/with\\040space rw - cgroup cgroup rw,pids
";

    #[test]
    fn hybrid_hierarchies_map_to_their_mounts() {
        let lines = parse_proc_cgroup(
            "9:name=systemd:/a/ctr\n4:memory:/a/ctr\n1:cpu:/a/ctr\n3:blkio:/a/ctr\n0::/\n",
        );
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0].controllers, ["name=systemd"]);
        let mounts = parse_mountinfo(MOUNTINFO);
        assert_eq!(mounts.len(), 5);
        let dirs = cgroup_dirs(&lines, &mounts).expect("dirs");
        let expected: Vec<PathBuf> = [
            "/sys/fs/cgroup/systemd/a/ctr",
            "/sys/fs/cgroup/memory/a/ctr",
            "/sys/fs/cgroup/cpu/a/ctr",
            // blkio is not mounted: skipped.
            "/sys/fs/cgroup/unified",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(dirs, expected);
    }

    #[test]
    fn mount_roots_and_escapes_are_honoured() {
        let mounts = parse_mountinfo(MOUNTINFO);
        let inside = parse_proc_cgroup("5:pids:/nested/x\n");
        assert_eq!(
            cgroup_dirs(&inside, &mounts).expect("dirs"),
            [PathBuf::from("/mnt/with space/x")]
        );
        let outside = parse_proc_cgroup("5:pids:/other/x\n");
        assert!(cgroup_dirs(&outside, &mounts).is_err());
        let prefix_only = parse_proc_cgroup("5:pids:/nestedx\n");
        assert!(cgroup_dirs(&prefix_only, &mounts).is_err());
    }

    #[test]
    fn pure_v2_host() {
        let mounts = parse_mountinfo(
            "30 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        let lines = parse_proc_cgroup("0::/kubepods/p/c\n");
        assert_eq!(
            cgroup_dirs(&lines, &mounts).expect("dirs"),
            [PathBuf::from("/sys/fs/cgroup/kubepods/p/c")]
        );
    }
}
