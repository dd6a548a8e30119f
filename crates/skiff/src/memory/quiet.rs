//! When to release the executable's code pages: the decision, without side effects.
//!
//! A daemon faults in code pages while it works: at start-up (certificates, the database
//! schema, the OpenAPI catalog, bootstrap objects), and in every burst of work. With the
//! kernel mapping whole page-cache folios on a fault, an idle server kept 35 MiB of its
//! 52 MiB of text mapped after start, while it runs ~6 MiB of it when idle (measured by
//! paging the text out and watching what came back). Releasing is cheap (the pages stay in
//! the page cache, a later fault maps them again), but doing it while the process is busy
//! would only make it fault them straight back. So the rule is: release once a whole
//! window has passed with the process nearly idle, and only if the mapped file pages have
//! grown noticeably since what an idle process keeps mapped. The window slides with the
//! ticks, so start-up pages go about one window after the start-up work ends.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Length of the window over which the process must be nearly idle.
pub const QUIET_WINDOW: Duration = Duration::from_secs(6);
/// CPU time the whole process may use in a window and still count as quiet (1% of a core).
pub const QUIET_CPU: Duration = Duration::from_millis(60);
/// Growth of the mapped file pages above the idle level that is worth releasing.
pub const GROWTH: u64 = 4 << 20;

/// Watches CPU time and mapped file pages, tick by tick, and says when to release.
#[derive(Debug)]
pub struct QuietRelease {
    /// (time, process CPU time) of recent ticks, oldest first, reaching back just past
    /// one window.
    samples: VecDeque<(Instant, Duration)>,
    /// What an idle process keeps mapped, measured one quiet window after the last
    /// release; `None` until then. Zero at start: start-up pages are always worth it.
    idle_level: Option<u64>,
}

impl QuietRelease {
    pub fn new(now: Instant, cpu: Duration) -> Self {
        QuietRelease {
            samples: VecDeque::from([(now, cpu)]),
            idle_level: Some(0),
        }
    }

    /// Record one tick: the process's total CPU time and its mapped file bytes.
    /// Returns true when the code pages should be released now.
    pub fn observe(&mut self, now: Instant, cpu: Duration, mapped: u64) -> bool {
        self.samples.push_back((now, cpu));
        // Keep the newest sample that is at least a window old, and everything after it.
        while self
            .samples
            .get(1)
            .is_some_and(|&(at, _)| now.duration_since(at) >= QUIET_WINDOW)
        {
            self.samples.pop_front();
        }
        let &(oldest_at, oldest_cpu) = self.samples.front().expect("just pushed");
        if now.duration_since(oldest_at) < QUIET_WINDOW {
            return false;
        }
        if cpu.saturating_sub(oldest_cpu) > QUIET_CPU {
            return false;
        }
        match self.idle_level {
            None => {
                self.idle_level = Some(mapped);
                false
            }
            Some(level) => mapped > level + GROWTH,
        }
    }

    /// The pages were released at `now`; the next quiet window measures the idle level.
    pub fn released(&mut self, now: Instant, cpu: Duration) {
        self.samples.clear();
        self.samples.push_back((now, cpu));
        self.idle_level = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn releases_start_up_pages_after_the_first_quiet_window() {
        let t0 = Instant::now();
        let mut rule = QuietRelease::new(t0, ms(300));
        // Ticks inside the first window decide nothing.
        assert!(!rule.observe(at(t0, 2), ms(310), 42 * MIB));
        assert!(!rule.observe(at(t0, 4), ms(320), 42 * MIB));
        // A whole quiet window: release.
        assert!(rule.observe(at(t0, 6), ms(330), 42 * MIB));
    }

    #[test]
    fn a_busy_window_postpones_the_release() {
        let t0 = Instant::now();
        let mut rule = QuietRelease::new(t0, ms(0));
        // Start-up work in the first 2 s, then quiet.
        assert!(!rule.observe(at(t0, 2), ms(900), 42 * MIB));
        assert!(!rule.observe(at(t0, 4), ms(910), 42 * MIB));
        assert!(
            !rule.observe(at(t0, 6), ms(920), 42 * MIB),
            "busy: 920 ms in the last 6 s"
        );
        assert!(
            rule.observe(at(t0, 8), ms(930), 42 * MIB),
            "quiet since 2 s: 30 ms in the last 6 s"
        );
    }

    #[test]
    fn after_a_release_the_idle_level_is_measured_and_kept() {
        let t0 = Instant::now();
        let mut rule = QuietRelease::new(t0, ms(0));
        assert!(rule.observe(at(t0, 6), ms(10), 42 * MIB));
        rule.released(at(t0, 6), ms(20));
        // The idle code faults back in; the first quiet window records that level.
        assert!(!rule.observe(at(t0, 12), ms(30), 10 * MIB));
        // Idle ticks with small changes never release again: no churn.
        for i in 0..20 {
            assert!(!rule.observe(at(t0, 18 + 6 * i), ms(40 + i), 10 * MIB + 3 * MIB));
        }
        // A burst of work, then quiet: the burst's pages go.
        assert!(!rule.observe(at(t0, 200), ms(5_000), 30 * MIB));
        assert!(rule.observe(at(t0, 206), ms(5_010), 30 * MIB));
    }

    #[test]
    fn a_process_that_is_never_quiet_never_releases() {
        let t0 = Instant::now();
        let mut rule = QuietRelease::new(t0, ms(0));
        for i in 1..100u64 {
            assert!(!rule.observe(at(t0, 6 * i), ms(100 * i), 60 * MIB));
        }
    }
}
