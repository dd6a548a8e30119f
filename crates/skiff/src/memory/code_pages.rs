//! Unmapping the executable's read-only pages (the side effect; `quiet` decides when).
//!
//! The pages stay in the page cache: a later fault maps them again without reading the
//! disk, and in the meantime they are ordinary clean cache the kernel can reclaim. Only
//! mappings of our own executable that are not writable and hold no anonymous
//! (copy-on-write) pages are touched, so `MADV_DONTNEED` drops nothing that the file
//! does not hold: the relocated `.data.rel.ro` pages (anonymous after relocation) and all
//! data are left alone. One caveat for whoever debugs: a breakpoint written into the text
//! after the check (a debugger or a uprobe) would be dropped with the page.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use anyhow::Context;

/// The process's total CPU time (all threads).
pub fn process_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Resident bytes of file-backed (and shared) mappings: the third field of
/// `/proc/self/statm`, read cheaply every tick. `None` if it cannot be read.
pub fn executable_resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let shared_pages: u64 = statm.split_whitespace().nth(2)?.parse().ok()?;
    Some(shared_pages * page_size())
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u64
    } else {
        4096
    }
}

/// One mapping of `/proc/self/smaps`, as far as the release needs it.
#[derive(Debug, PartialEq)]
struct Mapping {
    start: usize,
    end: usize,
    writable: bool,
    device: (u32, u32),
    inode: u64,
    rss_kib: u64,
    anonymous_kib: u64,
}

/// Parse `/proc/<pid>/smaps` text into mappings.
fn parse_smaps(text: &str) -> Vec<Mapping> {
    let mut mappings = Vec::new();
    for line in text.lines() {
        if let Some(mapping) = parse_header(line) {
            mappings.push(mapping);
            continue;
        }
        let Some(current) = mappings.last_mut() else {
            continue;
        };
        let kib = |rest: &str| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap_or(0)
        };
        if let Some(rest) = line.strip_prefix("Rss:") {
            current.rss_kib = kib(rest);
        } else if let Some(rest) = line.strip_prefix("Anonymous:") {
            current.anonymous_kib = kib(rest);
        }
    }
    mappings
}

/// A mapping's header line: `start-end perms offset major:minor inode [path]`.
fn parse_header(line: &str) -> Option<Mapping> {
    let mut fields = line.split_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = fields.next()?;
    if perms.len() != 4 {
        return None;
    }
    let _offset = fields.next()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let device = (
        u32::from_str_radix(major, 16).ok()?,
        u32::from_str_radix(minor, 16).ok()?,
    );
    let inode = fields.next()?.parse().ok()?;
    Some(Mapping {
        start,
        end,
        writable: perms.as_bytes()[1] == b'w',
        device,
        inode,
        rss_kib: 0,
        anonymous_kib: 0,
    })
}

/// The mappings that may be dropped: our executable's, read-only, no anonymous pages.
fn releasable(mappings: &[Mapping], device: (u32, u32), inode: u64) -> Vec<&Mapping> {
    mappings
        .iter()
        .filter(|m| m.inode == inode && m.device == device)
        .filter(|m| !m.writable && m.anonymous_kib == 0 && m.rss_kib > 0)
        .collect()
}

/// Unmap the resident pages of the executable's read-only, unmodified mappings.
/// Returns the bytes that were resident in them.
pub fn release() -> anyhow::Result<u64> {
    let exe = std::fs::metadata("/proc/self/exe").context("stat /proc/self/exe")?;
    let device = (libc::major(exe.dev()), libc::minor(exe.dev()));
    let smaps = std::fs::read_to_string("/proc/self/smaps").context("read /proc/self/smaps")?;
    let mappings = parse_smaps(&smaps);
    let mut released = 0;
    for mapping in releasable(&mappings, device, exe.ino()) {
        // SAFETY: the range is a whole mapping of this process, read-only and holding no
        // anonymous pages, so every page dropped is re-read from the file unchanged.
        let rc = unsafe {
            libc::madvise(
                mapping.start as *mut libc::c_void,
                mapping.end - mapping.start,
                libc::MADV_DONTNEED,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| {
                format!(
                    "madvise(MADV_DONTNEED) on {:#x}-{:#x}",
                    mapping.start, mapping.end
                )
            });
        }
        released += mapping.rss_kib * 1024;
    }
    Ok(released)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0a0000000-55d0a0d00000 r--p 00000000 fd:01 1234 /usr/bin/skiff
Size:              13312 kB
Rss:                6000 kB
Anonymous:             0 kB
55d0a0d00000-55d0a4000000 r-xp 00d00000 fd:01 1234 /usr/bin/skiff
Size:              53248 kB
Rss:               35000 kB
Anonymous:             0 kB
55d0a4000000-55d0a4180000 r--p 04000000 fd:01 1234 /usr/bin/skiff
Size:               1536 kB
Rss:                1530 kB
Anonymous:          1524 kB
55d0a4180000-55d0a41a0000 rw-p 04180000 fd:01 1234 /usr/bin/skiff
Size:                128 kB
Rss:                 100 kB
Anonymous:            40 kB
7f0000000000-7f0000200000 r-xp 00000000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
Size:               2048 kB
Rss:                1200 kB
Anonymous:             0 kB
7f1000000000-7f1000800000 rw-p 00000000 00:00 0
Size:               8192 kB
Rss:                8000 kB
Anonymous:          8000 kB
";

    #[test]
    fn only_the_executables_clean_read_only_mappings_are_released() {
        let mappings = parse_smaps(SMAPS);
        assert_eq!(mappings.len(), 6);
        let chosen: Vec<(usize, u64)> = releasable(&mappings, (0xfd, 1), 1234)
            .iter()
            .map(|m| (m.start, m.rss_kib))
            .collect();
        // The text and the first read-only segment; not the relocated one (anonymous
        // pages), not the data, not libc, not the heap.
        assert_eq!(
            chosen,
            vec![(0x55d0a0000000, 6000), (0x55d0a0d00000, 35000)]
        );
    }

    /// Resident KiB of this test binary's own text, from smaps.
    fn own_text_rss_kib() -> u64 {
        let exe = std::fs::metadata("/proc/self/exe").unwrap();
        let device = (libc::major(exe.dev()), libc::minor(exe.dev()));
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        parse_smaps(&smaps)
            .iter()
            .filter(|m| m.inode == exe.ino() && m.device == device && !m.writable)
            .filter(|m| m.anonymous_kib == 0)
            .map(|m| m.rss_kib)
            .sum()
    }

    #[test]
    fn releasing_unmaps_the_code_and_the_process_keeps_running() {
        let before = own_text_rss_kib();
        assert!(before > 0, "the test binary's code is resident");
        let released = release().expect("release");
        assert!(released > 0, "something was released");
        let after = own_text_rss_kib();
        assert!(
            after < before,
            "resident read-only pages of the executable: {before} KiB before, {after} KiB after"
        );
        // Code and constant data fault back in from the page cache unchanged.
        let mut map = std::collections::BTreeMap::new();
        for i in 0..1000u32 {
            map.insert(format!("key-{i}"), i * 3);
        }
        assert_eq!(map.get("key-999"), Some(&2997));
        assert_eq!(parse_smaps(SMAPS).len(), 6);
    }
}
