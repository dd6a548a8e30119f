//! Keeping a long-running daemon's resident memory to what it is using.
//!
//! One tick every 2 s does two things:
//! - lets the allocator purge the pages that freed memory left behind (`allocator`);
//! - once the process has gone quiet after a burst of work (start-up, a burst of pods),
//!   unmaps the executable's code pages that the burst faulted in (`code_pages`), so that
//!   what stays resident is the code an idle daemon actually runs. Whether to do so is
//!   decided by `quiet::QuietRelease` from the process's CPU time and mapped file pages.

mod allocator;
mod code_pages;
mod quiet;

use std::time::{Duration, Instant};

use quiet::QuietRelease;

/// How often a daemon looks after its memory.
const TICK: Duration = Duration::from_secs(2);

/// Spawn the housekeeping tick on the current tokio runtime.
pub fn spawn_housekeeping() {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut code = QuietRelease::new(Instant::now(), code_pages::process_cpu_time());
        loop {
            tick.tick().await;
            allocator::collect();
            let Some(mapped) = code_pages::executable_resident_bytes() else {
                continue;
            };
            let now = Instant::now();
            if code.observe(now, code_pages::process_cpu_time(), mapped) {
                match code_pages::release() {
                    Ok(released) => {
                        tracing::debug!(
                            released_kib = released / 1024,
                            "released the executable's pages after a quiet period"
                        );
                        code.released(now, code_pages::process_cpu_time());
                    }
                    Err(error) => {
                        tracing::warn!(%error, "could not release the executable's pages; not trying again");
                        return allocator_only(tick).await;
                    }
                }
            }
        }
    });
}

/// The tick without the code-page release (after it failed once).
async fn allocator_only(mut tick: tokio::time::Interval) {
    loop {
        tick.tick().await;
        allocator::collect();
    }
}
