//! Reading a container's cgroup after it exits: whether the memory controller OOM-killed a
//! process in it, on cgroup v1, hybrid (v1 controllers, empty v2 beside) and v2 hosts.
//! Creating, limiting and removing the cgroup is libcontainer's job.

use std::path::{Path, PathBuf};

/// The cgroup filesystem root.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The files that count OOM kills for `cgroups_path`, most specific first: the v1 memory
/// controller's `memory.oom_control`, then v2's `memory.events`.
pub fn oom_counter_files(root: &Path, cgroups_path: &Path) -> Vec<PathBuf> {
    let rel = cgroups_path.strip_prefix("/").unwrap_or(cgroups_path);
    vec![
        root.join("memory").join(rel).join("memory.oom_control"),
        root.join(rel).join("memory.events"),
    ]
}

/// The `oom_kill` counter of a `memory.oom_control` (v1) or `memory.events` (v2) file: both
/// are `key value` lines.
pub fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next()) {
            (Some("oom_kill"), Some(n)) => n.parse().ok(),
            _ => None,
        }
    })
}

/// Whether the container's cgroup saw an OOM kill; false when no counter can be read.
pub fn oom_killed(root: &Path, cgroups_path: &Path) -> bool {
    oom_counter_files(root, cgroups_path)
        .iter()
        .find_map(|file| std::fs::read_to_string(file).ok())
        .and_then(|text| parse_oom_kill(&text))
        .is_some_and(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v1_and_v2_counters() {
        let cases = [
            ("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", Some(2)),
            (
                "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n",
                Some(1),
            ),
            ("oom_kill_disable 0\nunder_oom 0\n", None),
            ("oom_kill x\n", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_oom_kill(text), expected, "{text:?}");
        }
    }

    #[test]
    fn counter_files_cover_v1_and_v2() {
        let files = oom_counter_files(Path::new("/sys/fs/cgroup"), Path::new("/skiff/p/c"));
        assert_eq!(
            files,
            [
                PathBuf::from("/sys/fs/cgroup/memory/skiff/p/c/memory.oom_control"),
                PathBuf::from("/sys/fs/cgroup/skiff/p/c/memory.events"),
            ]
        );
    }

    #[test]
    fn reads_the_first_counter_present() {
        let root = tempfile::tempdir().expect("tempdir");
        let cg = Path::new("/a/b");
        assert!(!oom_killed(root.path(), cg));
        let v2 = root.path().join("a/b");
        std::fs::create_dir_all(&v2).expect("mkdir");
        std::fs::write(v2.join("memory.events"), "oom 1\noom_kill 1\n").expect("write");
        assert!(oom_killed(root.path(), cg));
        let v1 = root.path().join("memory/a/b");
        std::fs::create_dir_all(&v1).expect("mkdir");
        std::fs::write(v1.join("memory.oom_control"), "oom_kill 0\n").expect("write");
        assert!(!oom_killed(root.path(), cg));
    }
}
