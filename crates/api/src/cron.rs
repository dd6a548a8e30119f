//! Cron schedules as upstream's CronJob reads them (robfig/cron v3 `ParseStandard`): the
//! five fields with ranges, steps, lists and month/day names, the `@hourly`-style
//! descriptors, `@every <duration>`, and an optional `TZ=`/`CRON_TZ=` prefix. One parser
//! serves both the API's validation (the exact upstream error texts) and the CronJob
//! controller's "when is the next run" ([`Schedule::next_after`]).
//!
//! Time zones come from the system's TZif files (`/usr/share/zoneinfo`, as Go's
//! `time.LoadLocation` reads them) through a small reader, [`Zone`]. A schedule matches
//! the instants whose wall-clock time in the zone matches its fields, so a time skipped by
//! a DST jump does not run that day and a time repeated by one runs at each occurrence.
//! Beyond a zone file's last transition (2037 for the "fat" files Debian ships) the last
//! offset is kept: POSIX-TZ footer rules are not evaluated.

use chrono::{Datelike, Duration as ChronoDuration, NaiveDate, NaiveDateTime, Timelike};

/// Set when a day field was `*` or `?` (robfig's starBit): day-of-month and day-of-week
/// then combine with AND instead of OR.
const STAR: u64 = 1 << 63;

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Fields(Fields),
    /// `@every <duration>`, in whole seconds (at least one).
    Every {
        seconds: i64,
    },
}

/// Bit sets of the allowed values of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    /// The zone named in a `TZ=`/`CRON_TZ=` prefix.
    pub tz: Option<String>,
}

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
}

const MONTHS: &[(&str, u32)] = &[
    ("jan", 1),
    ("feb", 2),
    ("mar", 3),
    ("apr", 4),
    ("may", 5),
    ("jun", 6),
    ("jul", 7),
    ("aug", 8),
    ("sep", 9),
    ("oct", 10),
    ("nov", 11),
    ("dec", 12),
];

const DAYS: &[(&str, u32)] = &[
    ("sun", 0),
    ("mon", 1),
    ("tue", 2),
    ("wed", 3),
    ("thu", 4),
    ("fri", 5),
    ("sat", 6),
];

const BOUNDS: [Bounds; 5] = [
    Bounds {
        min: 0,
        max: 59,
        names: &[],
    },
    Bounds {
        min: 0,
        max: 23,
        names: &[],
    },
    Bounds {
        min: 1,
        max: 31,
        names: &[],
    },
    Bounds {
        min: 1,
        max: 12,
        names: MONTHS,
    },
    Bounds {
        min: 0,
        max: 6,
        names: DAYS,
    },
];

use crate::selectors::go_quote;

impl Schedule {
    /// Parse as `cron.ParseStandard`; errors are upstream's texts.
    pub fn parse(spec: &str) -> Result<Schedule, String> {
        if spec.is_empty() {
            return Err("empty spec string".into());
        }
        let mut rest = spec;
        let mut tz = None;
        if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
            let Some(i) = spec.find(' ') else {
                return Err(format!(
                    "provided bad location {spec}: unknown time zone {spec}"
                ));
            };
            let name = spec[..i].split_once('=').map(|(_, n)| n).unwrap_or("");
            tz = Some(name.to_string());
            rest = spec[i..].trim();
        }
        if let Some(d) = rest.strip_prefix('@') {
            let expanded = match d {
                "yearly" | "annually" => "0 0 1 1 *",
                "monthly" => "0 0 1 * *",
                "weekly" => "0 0 * * 0",
                "daily" | "midnight" => "0 0 * * *",
                "hourly" => "0 * * * *",
                _ => {
                    return match d.strip_prefix("every ") {
                        Some(dur) => match go_duration_seconds(dur) {
                            Some(secs) => Ok(Schedule::Every {
                                seconds: secs.max(1),
                            }),
                            None => Err(format!(
                                "failed to parse duration {rest}: time: invalid duration {}",
                                go_quote(dur)
                            )),
                        },
                        None => Err(format!("unrecognized descriptor: {rest}")),
                    }
                }
            };
            let mut fields = parse_fields(expanded)?;
            fields.tz = tz;
            return Ok(Schedule::Fields(fields));
        }
        let mut fields = parse_fields(rest)?;
        fields.tz = tz;
        Ok(Schedule::Fields(fields))
    }

    /// The zone named inside the schedule (`TZ=...`), if any.
    pub fn tz(&self) -> Option<&str> {
        match self {
            Schedule::Fields(f) => f.tz.as_deref(),
            Schedule::Every { .. } => None,
        }
    }

    /// The first run strictly after `after` (Unix seconds), with wall-clock fields read
    /// in `zone`. `None` when nothing matches within five years (e.g. `0 0 30 2 *`).
    pub fn next_after(&self, after: i64, zone: &Zone) -> Option<i64> {
        match self {
            Schedule::Every { seconds } => Some(after + seconds),
            Schedule::Fields(f) => f.next_after(after, zone),
        }
    }
}

/// Longest wall-clock shift a zone makes at once, with margin: candidates this far on
/// either side of the answer are considered so repeated hours are not missed.
const MAX_SHIFT_SECS: i64 = 3 * 3600;

impl Fields {
    fn day_matches(&self, d: NaiveDate) -> bool {
        let dom = self.dom & (1 << d.day()) != 0;
        let dow = self.dow & (1 << d.weekday().num_days_from_sunday()) != 0;
        if self.dom & STAR != 0 || self.dow & STAR != 0 {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first wall-clock minute strictly after `after` that matches, within 5 years.
    fn next_local(&self, after: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut t = after.with_second(0)?.with_nanosecond(0)? + ChronoDuration::minutes(1);
        let limit_year = t.year() + 5;
        while t.year() <= limit_year {
            if self.month & (1 << t.month()) == 0 {
                let (y, m) = if t.month() == 12 {
                    (t.year() + 1, 1)
                } else {
                    (t.year(), t.month() + 1)
                };
                t = NaiveDate::from_ymd_opt(y, m, 1)?.and_hms_opt(0, 0, 0)?;
                continue;
            }
            if !self.day_matches(t.date()) {
                t = t.date().succ_opt()?.and_hms_opt(0, 0, 0)?;
                continue;
            }
            if self.hour & (1 << t.hour()) == 0 {
                t = t.with_minute(0)? + ChronoDuration::hours(1);
                continue;
            }
            if self.minute & (1 << t.minute()) == 0 {
                t += ChronoDuration::minutes(1);
                continue;
            }
            return Some(t);
        }
        None
    }

    fn next_after(&self, after: i64, zone: &Zone) -> Option<i64> {
        let local_after = naive(after + zone.offset_at(after))?;
        let mut cursor = local_after - ChronoDuration::seconds(MAX_SHIFT_SECS);
        let mut best: Option<i64> = None;
        loop {
            let Some(candidate) = self.next_local(cursor) else {
                return best;
            };
            if let Some(b) = best {
                let best_local = naive(b + zone.offset_at(b))?;
                if candidate > best_local + ChronoDuration::seconds(MAX_SHIFT_SECS) {
                    return best;
                }
            }
            for instant in zone.instants_of(candidate) {
                if instant > after && best.is_none_or(|b| instant < b) {
                    best = Some(instant);
                }
            }
            cursor = candidate;
        }
    }
}

fn naive(unix: i64) -> Option<NaiveDateTime> {
    chrono::DateTime::from_timestamp(unix, 0).map(|d| d.naive_utc())
}

fn parse_fields(spec: &str) -> Result<Fields, String> {
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    let mut bits = [0u64; 5];
    for (i, (f, b)) in fields.iter().zip(BOUNDS.iter()).enumerate() {
        for expr in f.split(',') {
            bits[i] |= parse_range(expr, b)?;
        }
    }
    Ok(Fields {
        minute: bits[0],
        hour: bits[1],
        dom: bits[2],
        month: bits[3],
        dow: bits[4],
        tz: None,
    })
}

fn parse_int(expr: &str) -> Result<u32, String> {
    match expr.parse::<i64>() {
        Ok(n) if n < 0 => Err(format!("negative number ({n}) not allowed: {expr}")),
        Ok(n) => u32::try_from(n).map_err(|_| {
            format!(
                "failed to parse int from {expr}: strconv.Atoi: parsing {}: value out of range",
                go_quote(expr)
            )
        }),
        Err(_) => Err(format!(
            "failed to parse int from {expr}: strconv.Atoi: parsing {}: invalid syntax",
            go_quote(expr)
        )),
    }
}

fn parse_int_or_name(expr: &str, b: &Bounds) -> Result<u32, String> {
    let lower = expr.to_ascii_lowercase();
    if let Some((_, n)) = b.names.iter().find(|(name, _)| *name == lower) {
        return Ok(*n);
    }
    parse_int(expr)
}

/// One comma-separated part of a field (`*`, `5`, `1-5`, `*/15`, `3/10`, `mon-fri`).
fn parse_range(expr: &str, b: &Bounds) -> Result<u64, String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_high: Vec<&str> = range_and_step[0].split('-').collect();
    let mut extra = 0;
    let (start, mut end) = if low_high[0] == "*" || low_high[0] == "?" {
        extra = STAR;
        (b.min, b.max)
    } else {
        let start = parse_int_or_name(low_high[0], b)?;
        let end = match low_high.len() {
            1 => start,
            2 => parse_int_or_name(low_high[1], b)?,
            _ => return Err(format!("too many hyphens: {expr}")),
        };
        (start, end)
    };
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = parse_int(range_and_step[1])?;
            // "N/step" means "N-max/step".
            if low_high.len() == 1 {
                end = b.max;
            }
            if step > 1 {
                extra = 0;
            }
            step
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < b.min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            b.min
        ));
    }
    if end > b.max {
        return Err(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            b.max
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    let mut bits = 0u64;
    let mut v = start;
    while v <= end {
        bits |= 1 << v;
        v += step;
    }
    Ok(bits | extra)
}

/// Go's `time.ParseDuration`, in whole seconds (fractions truncated); `None` if invalid.
pub fn go_duration_seconds(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut nanos: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        if num.is_empty() || num == "." {
            return None;
        }
        let value: f64 = num.parse().ok()?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        nanos += value * scale;
        rest = after;
    }
    let secs = (nanos / 1e9) as i64;
    Some(if neg { -secs } else { secs })
}

/// A time zone: UTC, or the transitions of a TZif file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// Transition instants (Unix seconds), ascending.
    transitions: Vec<i64>,
    /// UTC offset (seconds) in force from each transition on.
    offsets: Vec<i32>,
    /// Offset before the first transition.
    initial: i32,
}

impl Zone {
    pub fn utc() -> Zone {
        Zone {
            transitions: Vec::new(),
            offsets: Vec::new(),
            initial: 0,
        }
    }

    /// Load an IANA zone (`Europe/Berlin`) from `/usr/share/zoneinfo`, as Go's
    /// `time.LoadLocation` does; `""` and `UTC` are UTC. Errors name the zone.
    pub fn load(name: &str) -> Result<Zone, String> {
        Zone::load_from(std::path::Path::new("/usr/share/zoneinfo"), name)
    }

    pub fn load_from(dir: &std::path::Path, name: &str) -> Result<Zone, String> {
        if name.is_empty() || name == "UTC" {
            return Ok(Zone::utc());
        }
        // Go refuses names that could leave the zoneinfo directory.
        if name.starts_with('/') || name.split('/').any(|p| p == ".." || p.is_empty()) {
            return Err(format!("unknown time zone {name}"));
        }
        let bytes =
            std::fs::read(dir.join(name)).map_err(|_| format!("unknown time zone {name}"))?;
        Zone::from_tzif(&bytes).map_err(|e| format!("unknown time zone {name}: {e}"))
    }

    /// Parse a TZif file (versions 1 to 4; the 64-bit block when present).
    pub fn from_tzif(data: &[u8]) -> Result<Zone, String> {
        fn be32(d: &[u8], at: usize) -> Result<u32, String> {
            d.get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| "truncated TZif data".to_string())
        }
        struct Header {
            isutcnt: usize,
            isstdcnt: usize,
            leapcnt: usize,
            timecnt: usize,
            typecnt: usize,
            charcnt: usize,
        }
        fn header(d: &[u8], at: usize) -> Result<Header, String> {
            if d.get(at..at + 4) != Some(b"TZif") {
                return Err("not a TZif file".into());
            }
            let n = |i: usize| be32(d, at + 20 + 4 * i).map(|v| v as usize);
            Ok(Header {
                isutcnt: n(0)?,
                isstdcnt: n(1)?,
                leapcnt: n(2)?,
                timecnt: n(3)?,
                typecnt: n(4)?,
                charcnt: n(5)?,
            })
        }
        let v1 = header(data, 0)?;
        let version = data.get(4).copied().unwrap_or(0);
        let v1_len = v1.timecnt * 5
            + v1.typecnt * 6
            + v1.charcnt
            + v1.leapcnt * 8
            + v1.isstdcnt
            + v1.isutcnt;
        let (h, at, time_size) = if version >= b'2' {
            let at = 44 + v1_len;
            (header(data, at)?, at + 44, 8)
        } else {
            (v1, 44, 4)
        };
        let mut transitions = Vec::with_capacity(h.timecnt);
        for i in 0..h.timecnt {
            let p = at + i * time_size;
            let t = if time_size == 8 {
                let b = data
                    .get(p..p + 8)
                    .ok_or_else(|| "truncated TZif data".to_string())?;
                i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
            } else {
                be32(data, p)? as i32 as i64
            };
            transitions.push(t);
        }
        let idx_at = at + h.timecnt * time_size;
        let indexes = data
            .get(idx_at..idx_at + h.timecnt)
            .ok_or_else(|| "truncated TZif data".to_string())?;
        let types_at = idx_at + h.timecnt;
        let mut type_offsets = Vec::with_capacity(h.typecnt);
        let mut first_std = None;
        for i in 0..h.typecnt {
            let p = types_at + i * 6;
            let off = be32(data, p)? as i32;
            let is_dst = data.get(p + 4).copied().unwrap_or(0) != 0;
            if !is_dst && first_std.is_none() {
                first_std = Some(off);
            }
            type_offsets.push(off);
        }
        if type_offsets.is_empty() {
            return Err("TZif file without local time types".into());
        }
        let mut offsets = Vec::with_capacity(h.timecnt);
        for &i in indexes {
            offsets.push(
                *type_offsets
                    .get(i as usize)
                    .ok_or_else(|| "TZif transition names a missing type".to_string())?,
            );
        }
        Ok(Zone {
            transitions,
            offsets,
            initial: first_std.unwrap_or(type_offsets[0]),
        })
    }

    /// UTC offset in seconds at instant `unix`.
    pub fn offset_at(&self, unix: i64) -> i64 {
        match self.transitions.partition_point(|&t| t <= unix) {
            0 => self.initial as i64,
            i => self.offsets[i - 1] as i64,
        }
    }

    /// The instants whose wall-clock time here is `local`: none in a DST gap, two in a
    /// repeated hour, else one; ascending.
    pub fn instants_of(&self, local: NaiveDateTime) -> Vec<i64> {
        let wall = local.and_utc().timestamp();
        let mut offsets = vec![
            self.offset_at(wall - 86_400),
            self.offset_at(wall),
            self.offset_at(wall + 86_400),
        ];
        offsets.sort();
        offsets.dedup();
        let mut out: Vec<i64> = offsets
            .into_iter()
            .map(|o| wall - o)
            .filter(|&u| wall - self.offset_at(u) == u)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// `unix` as RFC 3339 with this zone's offset (Go's `Format(time.RFC3339)`).
    pub fn rfc3339(&self, unix: i64) -> String {
        let off = self.offset_at(unix);
        let local = naive(unix + off).unwrap_or_default();
        if off == 0 {
            return format!("{}Z", local.format("%Y-%m-%dT%H:%M:%S"));
        }
        let sign = if off < 0 { '-' } else { '+' };
        let a = off.abs();
        format!(
            "{}{sign}{:02}:{:02}",
            local.format("%Y-%m-%dT%H:%M:%S"),
            a / 3600,
            (a % 3600) / 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .timestamp()
    }

    fn next(spec: &str, zone: &Zone, after: &str) -> String {
        let s = Schedule::parse(spec).unwrap();
        let t = s.next_after(at(after), zone).expect("a next time");
        zone.rfc3339(t)
    }

    #[test]
    fn next_times_in_utc() {
        let utc = Zone::utc();
        // (schedule, after, expected next)
        let cases = [
            (
                "*/1 * * * *",
                "2024-01-01T00:00:00Z",
                "2024-01-01T00:01:00Z",
            ),
            ("* * * * *", "2024-01-01T00:00:30Z", "2024-01-01T00:01:00Z"),
            (
                "*/15 * * * *",
                "2024-01-01T00:14:59Z",
                "2024-01-01T00:15:00Z",
            ),
            (
                "*/15 * * * *",
                "2024-01-01T00:45:00Z",
                "2024-01-01T01:00:00Z",
            ),
            ("5 4 * * *", "2024-01-01T04:05:00Z", "2024-01-02T04:05:00Z"),
            (
                "0 22 * * 1-5",
                "2024-01-05T23:00:00Z",
                "2024-01-08T22:00:00Z",
            ),
            (
                "0 0 * * sun",
                "2024-01-01T00:00:00Z",
                "2024-01-07T00:00:00Z",
            ),
            (
                "0 0 1,15 * *",
                "2024-01-02T00:00:00Z",
                "2024-01-15T00:00:00Z",
            ),
            (
                "0 0 1 jan-mar/2 *",
                "2024-01-01T00:00:00Z",
                "2024-03-01T00:00:00Z",
            ),
            ("0 0 29 2 *", "2024-03-01T00:00:00Z", "2028-02-29T00:00:00Z"),
            (
                "23 0-20/2 * * *",
                "2024-01-01T20:23:00Z",
                "2024-01-02T00:23:00Z",
            ),
            // Both day fields restricted: either matches (OR).
            ("0 0 13 * 5", "2024-01-01T00:00:00Z", "2024-01-05T00:00:00Z"),
            ("0 0 13 * 5", "2024-01-12T00:00:00Z", "2024-01-13T00:00:00Z"),
            // A day field "*/1" still counts as star (step 1 keeps starBit).
            (
                "0 0 */1 * 1",
                "2024-01-02T00:00:00Z",
                "2024-01-08T00:00:00Z",
            ),
            ("@hourly", "2024-01-01T00:30:00Z", "2024-01-01T01:00:00Z"),
            ("@daily", "2024-01-01T00:30:00Z", "2024-01-02T00:00:00Z"),
            ("@weekly", "2024-01-01T00:30:00Z", "2024-01-07T00:00:00Z"),
            ("@monthly", "2024-01-01T00:30:00Z", "2024-02-01T00:00:00Z"),
            ("@yearly", "2024-01-01T00:30:00Z", "2025-01-01T00:00:00Z"),
            ("@every 90s", "2024-01-01T00:00:00Z", "2024-01-01T00:01:30Z"),
            (
                "0 12 31 dec *",
                "2024-12-31T12:00:00Z",
                "2025-12-31T12:00:00Z",
            ),
        ];
        for (spec, after, want) in cases {
            assert_eq!(next(spec, &utc, after), want, "{spec} after {after}");
        }
    }

    #[test]
    fn impossible_dates_never_run() {
        let s = Schedule::parse("0 0 30 2 *").unwrap();
        assert_eq!(s.next_after(at("2024-01-01T00:00:00Z"), &Zone::utc()), None);
    }

    #[test]
    fn next_times_across_dst() {
        let ny = Zone::load("America/New_York").unwrap();
        let berlin = Zone::load("Europe/Berlin").unwrap();
        let cases = [
            // Plain local times, in winter and summer.
            (
                &ny,
                "0 9 * * *",
                "2024-01-10T00:00:00Z",
                "2024-01-10T09:00:00-05:00",
            ),
            (
                &ny,
                "0 9 * * *",
                "2024-07-10T00:00:00Z",
                "2024-07-10T09:00:00-04:00",
            ),
            // Spring forward (10 March 2024, 02:00 -> 03:00): 02:30 does not exist that day.
            (
                &ny,
                "30 2 * * *",
                "2024-03-10T06:00:00Z",
                "2024-03-11T02:30:00-04:00",
            ),
            (
                &ny,
                "0 * * * *",
                "2024-03-10T01:30:00-05:00",
                "2024-03-10T03:00:00-04:00",
            ),
            // Fall back (3 November 2024, 02:00 -> 01:00): 01:30 happens twice.
            (
                &ny,
                "30 1 * * *",
                "2024-11-03T00:00:00-04:00",
                "2024-11-03T01:30:00-04:00",
            ),
            (
                &ny,
                "30 1 * * *",
                "2024-11-03T01:30:00-04:00",
                "2024-11-03T01:30:00-05:00",
            ),
            (
                &ny,
                "30 1 * * *",
                "2024-11-03T01:30:00-05:00",
                "2024-11-04T01:30:00-05:00",
            ),
            (
                &berlin,
                "0 0 * * *",
                "2024-03-30T12:00:00Z",
                "2024-03-31T00:00:00+01:00",
            ),
            (
                &berlin,
                "0 3 * * *",
                "2024-03-31T00:00:00+01:00",
                "2024-03-31T03:00:00+02:00",
            ),
            (
                &berlin,
                "30 2 31 3 *",
                "2024-01-01T00:00:00Z",
                "2025-03-31T02:30:00+02:00",
            ),
        ];
        for (zone, spec, after, want) in cases {
            assert_eq!(next(spec, zone, after), want, "{spec} after {after}");
        }
    }

    #[test]
    fn zones() {
        assert!(Zone::load("Europe/Berlin").is_ok());
        assert_eq!(Zone::load("").unwrap(), Zone::utc());
        for bad in [
            "Mars/Olympus",
            "../etc/passwd",
            "/etc/passwd",
            "Europe//Berlin",
        ] {
            assert!(Zone::load(bad).is_err(), "{bad}");
        }
        let tokyo = Zone::load("Asia/Tokyo").unwrap();
        assert_eq!(
            tokyo.rfc3339(at("2024-01-01T00:00:00Z")),
            "2024-01-01T09:00:00+09:00"
        );
        assert!(Zone::from_tzif(b"nope").is_err());
    }

    #[test]
    fn durations() {
        for (s, want) in [
            ("90s", Some(90)),
            ("1h30m", Some(5400)),
            ("1.5h", Some(5400)),
            ("500ms", Some(0)),
            ("x", None),
            ("5", None),
            ("", None),
        ] {
            assert_eq!(go_duration_seconds(s), want, "{s}");
        }
    }

    #[test]
    fn tz_prefix_is_kept() {
        let s = Schedule::parse("CRON_TZ=Asia/Tokyo 0 9 * * *").unwrap();
        assert_eq!(s.tz(), Some("Asia/Tokyo"));
    }
}
