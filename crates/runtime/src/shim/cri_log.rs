//! The CRI container log format kubelet reads: one record per line,
//! `<RFC3339Nano> <stdout|stderr> <F|P> <content>`; a line longer than the buffer is cut
//! into `P` (partial) records ended by an `F` (full) one, as containerd does.

use std::io::Write;

/// containerd's default `max_container_log_line_size`.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One log record's content and whether it ends a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub content: Vec<u8>,
    pub full: bool,
}

/// Cuts one stream's bytes into records. Pure: bytes in, records out.
#[derive(Debug)]
pub struct LineSplitter {
    pending: Vec<u8>,
    max_line: usize,
}

impl Default for LineSplitter {
    fn default() -> Self {
        Self::new(MAX_LINE)
    }
}

impl LineSplitter {
    pub fn new(max_line: usize) -> Self {
        Self {
            pending: Vec::new(),
            max_line: max_line.max(1),
        }
    }

    /// Feeds bytes read from the stream; returns the records they complete.
    pub fn push(&mut self, mut data: &[u8]) -> Vec<Record> {
        let mut out = Vec::new();
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(i) if self.pending.len() + i <= self.max_line => {
                    self.pending.extend_from_slice(&data[..i]);
                    out.push(Record {
                        content: std::mem::take(&mut self.pending),
                        full: true,
                    });
                    data = &data[i + 1..];
                }
                _ => {
                    let room = self.max_line - self.pending.len();
                    let take = room.min(data.len());
                    self.pending.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.pending.len() == self.max_line && !data.is_empty() {
                        // A full buffer followed by its newline is still a full line.
                        if data[0] == b'\n' {
                            continue;
                        }
                        out.push(Record {
                            content: std::mem::take(&mut self.pending),
                            full: false,
                        });
                    }
                }
            }
        }
        out
    }

    /// The stream ended: what is left is the last line, though it had no newline.
    pub fn finish(&mut self) -> Option<Record> {
        if self.pending.is_empty() {
            None
        } else {
            Some(Record {
                content: std::mem::take(&mut self.pending),
                full: true,
            })
        }
    }
}

/// kubelet's `containerLogMaxSize`: a log file is rotated once it is this large.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// kubelet's `containerLogMaxFiles`: the current file and at most four rotated ones.
pub const MAX_FILES: usize = 5;

/// The name of a rotated log: kubelet's `<log>.<YYYYMMDD-HHMMSS>` (with microseconds, so
/// rotations within a second keep their order).
pub fn rotated_name(log_name: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    format!("{log_name}.{}", now.format("%Y%m%d-%H%M%S%.6f"))
}

/// Which rotated files (names in the log's directory) to delete so that at most
/// `MAX_FILES - 1` remain beside the current one: the oldest first.
pub fn rotated_to_delete(log_name: &str, names: &[String]) -> Vec<String> {
    let prefix = format!("{log_name}.");
    let mut rotated: Vec<&String> = names.iter().filter(|n| n.starts_with(&prefix)).collect();
    rotated.sort();
    let excess = rotated.len().saturating_sub(MAX_FILES - 1);
    rotated[..excess].iter().map(|s| s.to_string()).collect()
}

/// Formats one record as a CRI log line, newline included.
pub fn format_record(timestamp: &str, stream: Stream, record: &Record) -> Vec<u8> {
    let mut line = Vec::with_capacity(timestamp.len() + record.content.len() + 12);
    line.extend_from_slice(timestamp.as_bytes());
    line.push(b' ');
    line.extend_from_slice(stream.as_str().as_bytes());
    line.extend_from_slice(if record.full { b" F " } else { b" P " });
    line.extend_from_slice(&record.content);
    line.push(b'\n');
    line
}

/// Writes records to the log, each with the time it is written.
pub fn write_records(
    out: &mut impl Write,
    stream: Stream,
    records: &[Record],
) -> std::io::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let now = super::state::rfc3339_nano(chrono::Utc::now());
    let mut buf = Vec::new();
    for record in records {
        buf.extend_from_slice(&format_record(&now, stream, record));
    }
    out.write_all(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(s: &str, full: bool) -> Record {
        Record {
            content: s.as_bytes().to_vec(),
            full,
        }
    }

    #[test]
    fn splits_lines_and_partials() {
        // (max line, chunks fed, records expected from push, leftover on finish)
        type Case<'a> = (usize, Vec<&'a str>, Vec<Record>, Option<Record>);
        let cases: Vec<Case> = vec![
            (16, vec!["hello\n"], vec![rec("hello", true)], None),
            (
                16,
                vec!["a\nb\n"],
                vec![rec("a", true), rec("b", true)],
                None,
            ),
            (
                16,
                vec!["he", "llo\nwor"],
                vec![rec("hello", true)],
                Some(rec("wor", true)),
            ),
            (16, vec!["\n"], vec![rec("", true)], None),
            (
                4,
                vec!["abcdefghij\n"],
                vec![rec("abcd", false), rec("efgh", false), rec("ij", true)],
                None,
            ),
            (4, vec!["abcd\n"], vec![rec("abcd", true)], None),
            (4, vec!["abcd", "\n"], vec![rec("abcd", true)], None),
            (
                4,
                vec!["abcde"],
                vec![rec("abcd", false)],
                Some(rec("e", true)),
            ),
        ];
        for (max, chunks, expected, leftover) in cases {
            let mut s = LineSplitter::new(max);
            let got: Vec<Record> = chunks.iter().flat_map(|c| s.push(c.as_bytes())).collect();
            assert_eq!(got, expected, "{chunks:?}");
            assert_eq!(s.finish(), leftover, "{chunks:?}");
        }
    }

    #[test]
    fn rotation_keeps_the_newest_four() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-27T09:00:01.5Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(rotated_name("0.log", t), "0.log.20261127-090001.500000");
        let names: Vec<String> = [
            "0.log", "1.log", "0.log.3", "0.log.1", "0.log.5", "0.log.2", "0.log.4",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            rotated_to_delete("0.log", &names),
            vec!["0.log.1".to_string()]
        );
    }

    #[test]
    fn formats_cri_lines() {
        let ts = "2026-01-02T03:04:05.000000006Z";
        assert_eq!(
            format_record(ts, Stream::Stdout, &rec("hello", true)),
            b"2026-01-02T03:04:05.000000006Z stdout F hello\n".to_vec()
        );
        assert_eq!(
            format_record(ts, Stream::Stderr, &rec("par", false)),
            b"2026-01-02T03:04:05.000000006Z stderr P par\n".to_vec()
        );
    }
}
