//! Upstream kubelet's restart back-off, as a pure function of when a container's attempts
//! ended. The first failure restarts at once; later ones wait 10 s, 20 s, 40 s ... capped
//! at 5 min; an attempt that ended more than 10 min after the previous one resets the
//! sequence (client-go's `flowcontrol.Backoff` with kubelet's 10 s / 300 s settings: an
//! entry expires after twice the maximum). Derived from the attempts on disk, so an agent
//! restart keeps a crash-looping container's back-off where it was.
//!
//! The same sequence governs image pulls (ErrImagePull, then ImagePullBackOff).

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(300);

/// When a container whose attempts ended at `finishes` (oldest first; the last is the one
/// just ended) may start again, and the back-off it waits (zero: restart at once).
pub fn restart_at(finishes: &[Timestamp]) -> (Timestamp, Duration) {
    let Some((&last, earlier)) = finishes.split_last() else {
        return (Timestamp::UNIX_EPOCH, Duration::ZERO);
    };
    let mut entry: Option<(Duration, Timestamp)> = None;
    for &finished in earlier {
        entry = Some(next(entry, finished));
    }
    let wait = match entry {
        None => Duration::ZERO,
        Some((_, updated)) if expired(last, updated) => Duration::ZERO,
        Some((backoff, _)) => backoff,
    };
    (add(last, wait), wait)
}

/// The back-off after one more failure (client-go's `Backoff.Next`).
pub fn next(entry: Option<(Duration, Timestamp)>, at: Timestamp) -> (Duration, Timestamp) {
    match entry {
        Some((backoff, updated)) if !expired(at, updated) => ((backoff * 2).min(MAX), at),
        _ => (INITIAL, at),
    }
}

fn expired(at: Timestamp, updated: Timestamp) -> bool {
    at.duration_since(updated).as_secs_f64() > 2.0 * MAX.as_secs_f64()
}

pub fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(k8s_openapi::jiff::SignedDuration::try_from(d).unwrap_or_default())
        .unwrap_or(t)
}

/// `10s`, `1m20s`, `5m0s`: how Go prints the durations in back-off messages.
pub fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    #[test]
    fn first_failure_restarts_at_once_then_the_wait_doubles_to_five_minutes() {
        let mut finishes = vec![t(0)];
        assert_eq!(restart_at(&finishes), (t(0), Duration::ZERO));
        let mut at = 1;
        let mut waits = Vec::new();
        for _ in 0..8 {
            finishes.push(t(at));
            let (when, wait) = restart_at(&finishes);
            waits.push(wait.as_secs());
            at = when.as_second() - 1_700_000_000 + 1;
        }
        assert_eq!(waits, vec![10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn ten_minutes_of_running_resets_the_back_off() {
        let finishes = vec![t(0), t(5), t(30), t(30 + 601)];
        assert_eq!(restart_at(&finishes).1, Duration::ZERO);
        let finishes = vec![t(0), t(5), t(30), t(30 + 601), t(30 + 602)];
        assert_eq!(restart_at(&finishes).1, INITIAL);
    }

    #[test]
    fn durations_print_as_go_does() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_secs(80)), "1m20s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
    }
}
