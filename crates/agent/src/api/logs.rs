//! Container logs as kubelet serves them, the pure part: the request's options, CRI log
//! records parsed, and what each record contributes to the response (timestamps prefixed,
//! `P` partial records joined with the record that ends their line, `sinceTime` and
//! `limitBytes` applied). Follows upstream's `kuberuntime/logs` record by record, so a
//! response can be streamed without ever holding a whole file.

use chrono::{DateTime, Duration, SecondsFormat, Utc};

/// What `GET /containerLogs/...` asks for (upstream's `PodLogOptions` as kubelet reads them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    /// Only the last N records of the file (`tailLines`).
    pub tail: Option<u64>,
    /// Skip records older than this (`sinceSeconds` / `sinceTime`).
    pub since: Option<DateTime<Utc>>,
    pub timestamps: bool,
    pub previous: bool,
    pub limit_bytes: Option<u64>,
}

impl LogOptions {
    /// Reads the query string. `now` resolves `sinceSeconds`. Errors are worded for a 400.
    pub fn from_query(query: Option<&str>, now: DateTime<Utc>) -> Result<LogOptions, String> {
        let mut opts = LogOptions::default();
        let mut since_seconds = None;
        let mut since_time = None;
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let value = value.as_ref();
            match key.as_ref() {
                "follow" => opts.follow = parse_bool(&key, value)?,
                "timestamps" => opts.timestamps = parse_bool(&key, value)?,
                "previous" => opts.previous = parse_bool(&key, value)?,
                "tailLines" => {
                    let n: i64 = parse_int(&key, value)?;
                    if n < 0 {
                        return Err(format!(
                            "tailLines: must be greater than or equal to 0, got {n}"
                        ));
                    }
                    opts.tail = Some(n as u64);
                }
                "limitBytes" => {
                    let n: i64 = parse_int(&key, value)?;
                    if n < 1 {
                        return Err(format!("limitBytes: must be greater than 0, got {n}"));
                    }
                    opts.limit_bytes = Some(n as u64);
                }
                "sinceSeconds" => {
                    let n: i64 = parse_int(&key, value)?;
                    if n < 1 {
                        return Err(format!("sinceSeconds: must be greater than 0, got {n}"));
                    }
                    since_seconds = Some(n);
                }
                "sinceTime" => {
                    let t = DateTime::parse_from_rfc3339(value).map_err(|e| {
                        format!("sinceTime: {value:?} is not an RFC 3339 time: {e}")
                    })?;
                    since_time = Some(t.with_timezone(&Utc));
                }
                // Passed by clients for the API server, or not filtering anything here.
                "container" | "pretty" | "insecureSkipTLSVerifyBackend" => {}
                "stream" => {
                    if !matches!(value, "" | "All") {
                        return Err(format!(
                            "stream: only \"All\" is supported by this node, got {value:?}"
                        ));
                    }
                }
                other => return Err(format!("unknown log option {other:?}")),
            }
        }
        opts.since = match (since_seconds, since_time) {
            (Some(_), Some(_)) => {
                return Err("at most one of `sinceTime` or `sinceSeconds` may be specified".into())
            }
            (Some(s), None) => Some(now - Duration::seconds(s)),
            (None, t) => t,
        };
        Ok(opts)
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "" | "true" | "1" | "True" | "TRUE" | "t" | "T" => Ok(true),
        "false" | "0" | "False" | "FALSE" | "f" | "F" => Ok(false),
        other => Err(format!("{key}: invalid boolean value {other:?}")),
    }
}

fn parse_int(key: &str, value: &str) -> Result<i64, String> {
    value
        .parse()
        .map_err(|_| format!("{key}: invalid integer value {value:?}"))
}

/// One record of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriRecord<'a> {
    pub timestamp: DateTime<Utc>,
    pub stream: Stream,
    /// A `P` record: its line goes on in the next record.
    pub partial: bool,
    pub content: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Parses one line of a CRI log (without its `\n`):
/// `<RFC3339Nano> <stdout|stderr> <F|P>[:more tags] <content>`.
pub fn parse_cri_line(line: &[u8]) -> Result<CriRecord<'_>, String> {
    let mut fields = line.splitn(4, |&b| b == b' ');
    let ts = fields.next().unwrap_or_default();
    let ts = std::str::from_utf8(ts).map_err(|_| "timestamp is not UTF-8".to_string())?;
    let timestamp = DateTime::parse_from_rfc3339(ts)
        .map_err(|e| format!("timestamp {ts:?}: {e}"))?
        .with_timezone(&Utc);
    let stream = match fields.next() {
        Some(b"stdout") => Stream::Stdout,
        Some(b"stderr") => Stream::Stderr,
        Some(other) => {
            return Err(format!(
                "unexpected stream type {:?}",
                String::from_utf8_lossy(other)
            ))
        }
        None => return Err("missing stream type".into()),
    };
    let tags = fields.next().ok_or("missing tags")?;
    let partial = match tags.split(|&b| b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => {
            return Err(format!(
                "unexpected tag {:?}",
                String::from_utf8_lossy(tags)
            ))
        }
    };
    Ok(CriRecord {
        timestamp,
        stream,
        partial,
        content: fields.next().unwrap_or_default(),
    })
}

/// kubelet's output form of a record's time: RFC 3339 with all nine fraction digits.
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Turns records into response bytes, as upstream's `logWriter`.
#[derive(Debug, Clone)]
pub struct LogWriter {
    timestamps: bool,
    since: Option<DateTime<Utc>>,
    /// Bytes still allowed by `limitBytes`.
    remain: Option<u64>,
    /// The previous record ended its line, so the next one starts a line (and gets the
    /// timestamp prefix).
    at_line_start: bool,
}

/// What one record contributed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub bytes: Vec<u8>,
    /// `limitBytes` is used up: the response ends here.
    pub done: bool,
}

impl LogWriter {
    pub fn new(opts: &LogOptions) -> LogWriter {
        LogWriter {
            timestamps: opts.timestamps,
            since: opts.since,
            remain: opts.limit_bytes,
            at_line_start: true,
        }
    }

    pub fn record(&mut self, rec: &CriRecord<'_>) -> Written {
        let starts_line = self.at_line_start;
        self.at_line_start = !rec.partial;
        if self.remain == Some(0) {
            return Written {
                bytes: Vec::new(),
                done: true,
            };
        }
        if self.since.is_some_and(|since| rec.timestamp < since) {
            return Written {
                bytes: Vec::new(),
                done: false,
            };
        }
        let mut bytes = Vec::with_capacity(rec.content.len() + 32);
        if self.timestamps && starts_line {
            bytes.extend_from_slice(format_timestamp(rec.timestamp).as_bytes());
            bytes.push(b' ');
        }
        bytes.extend_from_slice(rec.content);
        if !rec.partial {
            bytes.push(b'\n');
        }
        let mut done = false;
        if let Some(remain) = self.remain.as_mut() {
            if bytes.len() as u64 >= *remain {
                bytes.truncate(*remain as usize);
                done = true;
            }
            *remain -= bytes.len() as u64;
        }
        Written { bytes, done }
    }
}

/// Where the last `n` lines of a CRI log start, scanning backwards block by block.
/// `block(at)` returns the bytes ending at offset `at` (at most `at` of them, at least one
/// while `at > 0`). Lines are counted as the reader sees them: a `P` record and the records
/// continuing it are one line (upstream's kubelet counts records, so a tail could start in
/// the middle of a line), and the last record ends a line even if partial. n = 0 gives the
/// end of the file.
pub fn tail_start(
    len: u64,
    n: u64,
    mut block: impl FnMut(u64) -> std::io::Result<Vec<u8>>,
) -> std::io::Result<u64> {
    /// Enough of a record's start to read its tag.
    const HEAD: usize = 96;
    if n == 0 || len == 0 {
        return Ok(len);
    }
    let mut line_ends = 0u64;
    // The record being scanned ends at `record_end` (just after its newline).
    let mut record_end = len;
    // The first bytes after the current block, to read the head of a record that crosses
    // into them.
    let mut later: Vec<u8> = Vec::new();
    let mut at = len;
    while at > 0 {
        let data = block(at)?;
        if data.is_empty() {
            break;
        }
        let base = at - data.len() as u64;
        for i in (0..data.len()).rev() {
            let offset = base + i as u64;
            if data[i] != b'\n' || offset == len - 1 {
                continue;
            }
            // A record starts at offset + 1.
            let mut head = data[i + 1..data.len().min(i + 1 + HEAD)].to_vec();
            if head.len() < HEAD {
                head.extend_from_slice(&later[..later.len().min(HEAD - head.len())]);
            }
            if record_end == len || !record_is_partial(&head) {
                line_ends += 1;
                if line_ends == n + 1 {
                    return Ok(record_end);
                }
            }
            record_end = offset + 1;
        }
        let mut joined = data;
        joined.truncate(HEAD);
        joined.extend_from_slice(&later[..later.len().min(HEAD - joined.len())]);
        later = joined;
        at = base;
    }
    // The file's first record, [0, record_end).
    if record_end == len || !record_is_partial(&later) {
        line_ends += 1;
    }
    Ok(if line_ends == n + 1 { record_end } else { 0 })
}

/// Whether a record (given by its first bytes) is a `P` record.
fn record_is_partial(head: &[u8]) -> bool {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut fields = line.split(|&b| b == b' ');
    matches!(fields.nth(2), Some(tag) if tag.first() == Some(&b'P'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    /// Runs a whole file through the writer, as the streaming reader does.
    fn render(file: &str, opts: &LogOptions) -> String {
        let mut w = LogWriter::new(opts);
        let mut out = Vec::new();
        for line in file.lines() {
            let Ok(rec) = parse_cri_line(line.as_bytes()) else {
                continue;
            };
            let written = w.record(&rec);
            out.extend_from_slice(&written.bytes);
            if written.done {
                break;
            }
        }
        String::from_utf8(out).expect("utf8")
    }

    const FILE: &str = "\
2026-01-01T00:00:01.5Z stdout F one
2026-01-01T00:00:02.000000001Z stderr P tw
2026-01-01T00:00:02.000000002Z stderr F o
not a cri line
2026-01-01T00:00:03Z stdout F three
";

    #[test]
    fn parses_cri_records() {
        let rec = parse_cri_line(b"2026-01-01T00:00:01.123456789Z stderr P:x hello world")
            .expect("parse");
        assert_eq!(rec.timestamp, t("2026-01-01T00:00:01.123456789Z"));
        assert_eq!(rec.stream, Stream::Stderr);
        assert!(rec.partial);
        assert_eq!(rec.content, b"hello world");
        let empty = parse_cri_line(b"2026-01-01T00:00:01Z stdout F ").expect("parse");
        assert_eq!(empty.content, b"");
        let bare = parse_cri_line(b"2026-01-01T00:00:01Z stdout F").expect("parse");
        assert_eq!(bare.content, b"");
        for bad in [
            &b"garbage"[..],
            b"2026-01-01T00:00:01Z stdin F x",
            b"2026-01-01T00:00:01Z stdout X x",
            b"2026-01-01T00:00:01Z stdout",
        ] {
            assert!(
                parse_cri_line(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn renders_records() {
        // (options, expected output)
        let ts = |f: &dyn Fn(&mut LogOptions)| {
            let mut o = LogOptions::default();
            f(&mut o);
            o
        };
        let cases: Vec<(LogOptions, &str)> = vec![
            (LogOptions::default(), "one\ntwo\nthree\n"),
            (
                ts(&|o| o.timestamps = true),
                "2026-01-01T00:00:01.500000000Z one\n\
                 2026-01-01T00:00:02.000000001Z two\n\
                 2026-01-01T00:00:03.000000000Z three\n",
            ),
            (
                ts(&|o| o.since = Some(t("2026-01-01T00:00:02Z"))),
                "two\nthree\n",
            ),
            // The partial's continuation is newer than `since`: only it is written, as
            // upstream does.
            (
                ts(&|o| o.since = Some(t("2026-01-01T00:00:02.000000002Z"))),
                "o\nthree\n",
            ),
            (ts(&|o| o.limit_bytes = Some(6)), "one\ntw"),
            (ts(&|o| o.limit_bytes = Some(4)), "one\n"),
            (
                ts(&|o| {
                    o.limit_bytes = Some(40);
                    o.timestamps = true;
                }),
                "2026-01-01T00:00:01.500000000Z one\n2026-",
            ),
        ];
        for (opts, want) in cases {
            assert_eq!(render(FILE, &opts), want, "{opts:?}");
        }
    }

    #[test]
    fn reads_options_from_the_query() {
        let now = t("2026-01-01T00:01:00Z");
        let o = LogOptions::from_query(
            Some("follow=true&tailLines=3&timestamps=1&limitBytes=10&previous=false&container=c"),
            now,
        )
        .expect("parse");
        assert_eq!(
            o,
            LogOptions {
                follow: true,
                tail: Some(3),
                since: None,
                timestamps: true,
                previous: false,
                limit_bytes: Some(10),
            }
        );
        let o = LogOptions::from_query(Some("sinceSeconds=30"), now).expect("parse");
        assert_eq!(o.since, Some(t("2026-01-01T00:00:30Z")));
        let o = LogOptions::from_query(Some("sinceTime=2026-01-01T00:00:10%2B00:00"), now)
            .expect("parse");
        assert_eq!(o.since, Some(t("2026-01-01T00:00:10Z")));
        for bad in [
            "tailLines=-1",
            "limitBytes=0",
            "sinceSeconds=0",
            "sinceSeconds=1&sinceTime=2026-01-01T00:00:10Z",
            "follow=maybe",
            "tailLines=x",
            "bogus=1",
        ] {
            assert!(LogOptions::from_query(Some(bad), now).is_err(), "{bad}");
        }
    }

    #[test]
    fn finds_where_the_tail_starts() {
        fn start(data: &[u8], n: u64, block_size: usize) -> u64 {
            tail_start(data.len() as u64, n, |at| {
                let from = (at as usize).saturating_sub(block_size);
                Ok(data[from..at as usize].to_vec())
            })
            .expect("tail")
        }
        // (file, n, expected start)
        let cases: Vec<(&[u8], u64, u64)> = vec![
            (b"a\nb\nc\n", 1, 4),
            (b"a\nb\nc\n", 2, 2),
            (b"a\nb\nc\n", 3, 0),
            (b"a\nb\nc\n", 10, 0),
            (b"a\nb\nc\n", 0, 6),
            (b"a\nb\nc", 1, 4),
            (b"a\nb\nc", 2, 2),
            (b"", 5, 0),
            (b"\n\n", 1, 1),
            // A partial record and its continuation are one line.
            (b"t stdout F a\nt stdout P b\nt stdout F c\n", 1, 13),
            (b"t stdout F a\nt stdout P b\nt stdout F c\n", 2, 0),
            (b"t stdout P a\nt stdout P b\nt stdout F c\n", 1, 0),
            // The last record ends a line even while partial.
            (b"t stdout F a\nt stdout P b\n", 1, 13),
        ];
        for (data, n, want) in cases {
            for block in [1, 2, 3, 4096] {
                assert_eq!(
                    start(data, n, block),
                    want,
                    "{:?} n={n} block={block}",
                    String::from_utf8_lossy(data)
                );
            }
        }
    }
}
