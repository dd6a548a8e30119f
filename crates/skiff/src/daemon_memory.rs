//! How the long-running processes (`skiff server`, `skiff agent`, the container shims) keep
//! their resident memory small.
//!
//! - mimalloc's lazy arena commit for the daemons, which mimalloc reads only at process
//!   start: the daemons re-execute themselves once with it set.
//! - The executable's pages on demand: the 90 MB binary links the whole control plane and
//!   node, and only a few hundred of its 4 KiB code pages run in any one process (463 at
//!   the server's start and idle, BENCHMARKS.md session 10), scattered through 55 MB of
//!   `.text`. On a page fault the kernel maps up to 64 KiB of neighbouring cached pages too
//!   ("fault-around"), which left 37 MiB of the idle server's text resident for 1.8 MiB run.
//!   `MADV_RANDOM` on the executable's own mappings turns fault-around off for them: each
//!   process maps the pages it executes and nothing else. The page cache is unchanged (the
//!   file is shared by every skiff process on the node); a page first run later costs one
//!   minor fault.

/// `skiff server` and `skiff agent` (a real node, not `--simulate`) re-execute themselves
/// once with mimalloc's lazy arena commit, which is read only at process start. Eager
/// commit (mimalloc's default) backs whole arenas at once and, with transparent huge pages,
/// in 2 MiB pages: the idle server held 50 MiB of anonymous memory instead of 24 and the
/// agent with 100 pods 70 MiB instead of 46 (BENCHMARKS.md sessions 6 and 10); lazy commit
/// measured no slower (durable creates/s with 32 clients within noise, session 10).
pub fn lazy_arena_commit_for_daemons() {
    const VAR: &str = "MIMALLOC_ARENA_EAGER_COMMIT";
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let is_daemon = args.get(1).is_some_and(|a| a == "server" || a == "agent")
        && !args
            .iter()
            .any(|a| a.to_string_lossy().starts_with("--simulate"));
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

/// Map the executable's pages only as they are used (see the module header). Best effort:
/// a process that cannot read its own maps, or a kernel that refuses the advice, runs as
/// before with fault-around.
pub fn executable_pages_on_demand() {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let own_code = executable_pages_on_demand as *const () as usize;
    for range in executable_mappings(&maps, own_code) {
        // SAFETY: advice only, on whole mappings of this process that /proc/self/maps just
        // listed; MADV_RANDOM changes read-ahead and fault-around, never the contents.
        unsafe {
            libc::madvise(
                range.start as *mut libc::c_void,
                range.end - range.start,
                libc::MADV_RANDOM,
            );
        }
    }
}

/// The address ranges of every mapping of the file that holds `code_address` (the
/// executable: its text, read-only data and relocated data segments), from the text of
/// `/proc/<pid>/maps`. Mappings are matched by device and inode, so a binary replaced on
/// disk ("(deleted)") is still recognised.
fn executable_mappings(maps: &str, code_address: usize) -> Vec<std::ops::Range<usize>> {
    let parsed: Vec<Mapping> = maps.lines().filter_map(Mapping::parse).collect();
    let Some(file) = parsed
        .iter()
        .find(|m| m.range.contains(&code_address) && m.inode != 0)
        .map(|m| (m.device, m.inode))
    else {
        return Vec::new();
    };
    parsed
        .into_iter()
        .filter(|m| (m.device, m.inode) == file)
        .map(|m| m.range)
        .collect()
}

/// One line of `/proc/<pid>/maps`: `start-end perms offset dev inode [path]`.
struct Mapping<'a> {
    range: std::ops::Range<usize>,
    device: &'a str,
    inode: u64,
}

impl<'a> Mapping<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let _perms = fields.next()?;
        let _offset = fields.next()?;
        let device = fields.next()?;
        let inode = fields.next()?.parse().ok()?;
        Some(Mapping {
            range: usize::from_str_radix(start, 16).ok()?..usize::from_str_radix(end, 16).ok()?,
            device,
            inode,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d4a1000000-55d4a1400000 r--p 00000000 fe:01 1234567                    /usr/bin/skiff
55d4a1400000-55d4a4800000 r-xp 00400000 fe:01 1234567                    /usr/bin/skiff
55d4a4800000-55d4a5000000 r--p 03800000 fe:01 1234567                    /usr/bin/skiff
55d4a5000000-55d4a5100000 rw-p 04000000 fe:01 1234567                    /usr/bin/skiff
55d4a5100000-55d4a5200000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000100000 r-xp 00000000 fe:01 777                        /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000200000-7f0000300000 rw-p 00000000 00:00 0 
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
";

    #[test]
    fn every_mapping_of_the_executable_and_nothing_else() {
        let ranges = executable_mappings(MAPS, 0x55d4a1500000);
        assert_eq!(
            ranges,
            vec![
                0x55d4a1000000..0x55d4a1400000,
                0x55d4a1400000..0x55d4a4800000,
                0x55d4a4800000..0x55d4a5000000,
                0x55d4a5000000..0x55d4a5100000,
            ]
        );
    }

    #[test]
    fn an_address_outside_any_file_selects_nothing() {
        assert!(executable_mappings(MAPS, 0x55d4a5150000).is_empty());
        assert!(executable_mappings(MAPS, 0x1000).is_empty());
        assert!(executable_mappings("garbage\n", 0x55d4a1500000).is_empty());
    }

    #[test]
    fn this_process_finds_its_own_text() {
        let maps = std::fs::read_to_string("/proc/self/maps").expect("reading own maps");
        let code = executable_pages_on_demand as *const () as usize;
        let ranges = executable_mappings(&maps, code);
        assert!(ranges.iter().any(|r| r.contains(&code)), "{ranges:?}");
    }
}
