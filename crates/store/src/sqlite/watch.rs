//! Watches: catch up from the history table, then follow the live broadcast.
//!
//! Hand-over without gaps or duplicates: the watcher subscribes to the broadcast BEFORE
//! its first history read. A batch committed before that read is in the read's snapshot;
//! one committed after it is published after its commit, hence after the subscription, so
//! it is in the receiver. `pos` (every revision <= pos has been delivered or did not match)
//! drops what both paths saw. A watcher that falls so far behind that the broadcast drops
//! batches for it goes back to catching up from the table (as etcd moves slow watchers to
//! its "unsynced" group); it only fails if compaction has overtaken it.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use futures::StreamExt;
use tokio::sync::broadcast;

use super::read::{self, ReadPool};
use super::EventBatch;
use crate::{Event, Result, Revision, StoreError, WatchStream};

/// Events read from history per query while catching up.
const CATCH_UP_PAGE: usize = 1000;

type Sender = broadcast::Sender<Arc<EventBatch>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    CatchUp,
    Live,
    Done,
}

struct Watcher {
    prefix: String,
    pos: Revision,
    phase: Phase,
    pending: VecDeque<Event>,
    rx: broadcast::Receiver<Arc<EventBatch>>,
    reads: Arc<ReadPool>,
    /// Weak so that open watches do not keep a dropped store's broadcast alive: when the
    /// store goes away the receiver sees `Closed` and the stream ends.
    events: Weak<Sender>,
}

pub(crate) async fn start(
    prefix: String,
    after: Revision,
    reads: Arc<ReadPool>,
    events: &Arc<Sender>,
    weak: Weak<Sender>,
) -> Result<WatchStream> {
    let mut w = Watcher {
        rx: events.subscribe(),
        prefix,
        pos: after,
        phase: Phase::CatchUp,
        pending: VecDeque::new(),
        reads,
        events: weak,
    };
    // The first page is read here so that a compacted start revision fails the call
    // itself, as etcd's watch create does.
    w.catch_up().await?;
    Ok(futures::stream::unfold(w, |mut w| async move {
        let item = w.next().await?;
        Some((item, w))
    })
    .boxed())
}

impl Watcher {
    async fn catch_up(&mut self) -> Result<()> {
        let prefix = self.prefix.clone();
        let after = self.pos;
        let page = self
            .reads
            .run(move |conn| read::events_page(conn, &prefix, after, CATCH_UP_PAGE))
            .await?;
        if let Some(last) = page.events.last() {
            self.pos = last.revision();
        }
        if page.complete {
            self.pos = self.pos.max(page.snapshot);
            self.phase = Phase::Live;
        }
        self.pending.extend(page.events);
        Ok(())
    }

    async fn next(&mut self) -> Option<Result<Event>> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(Ok(ev));
            }
            match self.phase {
                Phase::Done => return None,
                Phase::CatchUp => {
                    if let Err(e) = self.catch_up().await {
                        self.phase = Phase::Done;
                        return Some(Err(e));
                    }
                }
                Phase::Live => match self.rx.recv().await {
                    Ok(batch) => {
                        let pos = self.pos;
                        self.pending.extend(
                            batch
                                .events
                                .iter()
                                .filter(|e| e.revision() > pos && e.key().starts_with(&self.prefix))
                                .cloned(),
                        );
                        self.pos = pos.max(batch.last);
                    }
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        match self.events.upgrade() {
                            Some(events) => {
                                tracing::debug!(
                                    prefix = %self.prefix,
                                    pos = self.pos,
                                    skipped,
                                    "sqlite watcher lagged; catching up from history"
                                );
                                // Subscribe again before reading, as at the start.
                                self.rx = events.subscribe();
                                self.phase = Phase::CatchUp;
                            }
                            None => self.phase = Phase::Done,
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        self.phase = Phase::Done;
                        return Some(Err(StoreError::Backend(format!(
                            "sqlite store closed; watch of {:?} ended after revision {}",
                            self.prefix, self.pos
                        ))));
                    }
                },
            }
        }
    }
}
