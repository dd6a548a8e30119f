//! Fan-out of an informer's changes to its subscribers, one queue per subscriber.
//!
//! Each subscriber gets every change published after it subscribed, in order. A
//! subscriber that falls more than [`LAG_LIMIT`] changes behind loses its backlog and gets
//! one [`Change::Resync`] instead (level-triggered consumers re-read the cache, so nothing
//! is lost). The queues hold only what is pending: an idle informer costs a few words,
//! where a ring buffer sized for the worst burst (tokio's broadcast channel allocates every
//! slot up front) cost 640 KiB per informer, 12 MiB of an idle server's 24 MiB of heap.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

use crate::informer::Change;

/// How many changes a slow subscriber may fall behind before it gets [`Change::Resync`].
pub(crate) const LAG_LIMIT: usize = 16 * 1024;

/// A drained queue keeps at most this much capacity, so one burst does not pin its peak.
const KEPT_CAPACITY: usize = 256;

/// The publishing side, owned by the informer.
pub(crate) struct Fanout<K> {
    subscribers: Mutex<Vec<Weak<Queue<K>>>>,
}

/// The receiving side of one subscriber.
pub struct Subscription<K> {
    queue: Arc<Queue<K>>,
}

struct Queue<K> {
    pending: Mutex<Pending<K>>,
    /// One waiter (the subscription); a notification with nobody waiting is kept as a
    /// permit, so a change published between a check and the wait is not missed.
    wake: Notify,
}

struct Pending<K> {
    changes: VecDeque<Change<K>>,
    /// Changes were dropped: the next receive is a resync.
    lagged: bool,
    /// The informer is gone: once drained, receives end.
    closed: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Pushes and pops leave the queue consistent even if a holder panicked.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<K> Fanout<K> {
    pub(crate) fn new() -> Self {
        Fanout {
            subscribers: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn subscribe(&self) -> Subscription<K> {
        let queue = Arc::new(Queue {
            pending: Mutex::new(Pending {
                changes: VecDeque::new(),
                lagged: false,
                closed: false,
            }),
            wake: Notify::new(),
        });
        lock(&self.subscribers).push(Arc::downgrade(&queue));
        Subscription { queue }
    }

    /// Queue `change` for every live subscriber; dropped subscriptions are forgotten.
    pub(crate) fn publish(&self, change: Change<K>)
    where
        K: Clone,
    {
        let mut subscribers = lock(&self.subscribers);
        subscribers.retain(|weak| {
            let Some(queue) = weak.upgrade() else {
                return false;
            };
            {
                let mut pending = lock(&queue.pending);
                if pending.changes.len() >= LAG_LIMIT {
                    pending.changes = VecDeque::new();
                    pending.lagged = true;
                } else {
                    pending.changes.push_back(change.clone());
                }
            }
            queue.wake.notify_one();
            true
        });
    }

    #[cfg(test)]
    fn subscriber_count(&self) -> usize {
        lock(&self.subscribers).len()
    }
}

impl<K> Drop for Fanout<K> {
    fn drop(&mut self) {
        for weak in lock(&self.subscribers).drain(..) {
            if let Some(queue) = weak.upgrade() {
                lock(&queue.pending).closed = true;
                queue.wake.notify_one();
            }
        }
    }
}

impl<K> Subscription<K> {
    /// The next change; `None` once the informer is gone and everything queued was read.
    pub async fn recv(&mut self) -> Option<Change<K>> {
        loop {
            {
                let mut pending = lock(&self.queue.pending);
                if pending.lagged {
                    pending.lagged = false;
                    return Some(Change::Resync);
                }
                if let Some(change) = pending.changes.pop_front() {
                    if pending.changes.is_empty() && pending.changes.capacity() > KEPT_CAPACITY {
                        pending.changes.shrink_to(KEPT_CAPACITY);
                    }
                    return Some(change);
                }
                if pending.closed {
                    return None;
                }
            }
            self.queue.wake.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(n: u32) -> Change<u32> {
        Change::Applied(Arc::new(n))
    }

    fn value(change: Option<Change<u32>>) -> Option<u32> {
        match change? {
            Change::Applied(v) | Change::Deleted(v) => Some(*v),
            Change::Resync => Some(u32::MAX),
        }
    }

    #[tokio::test]
    async fn every_subscriber_hears_every_later_change_in_order() {
        let fanout = Fanout::new();
        fanout.publish(applied(0)); // before anyone subscribed: heard by nobody
        let mut a = fanout.subscribe();
        let mut b = fanout.subscribe();
        for n in 1..=3 {
            fanout.publish(applied(n));
        }
        for sub in [&mut a, &mut b] {
            for n in 1..=3 {
                assert_eq!(value(sub.recv().await), Some(n));
            }
        }
    }

    #[tokio::test]
    async fn a_waiting_subscriber_wakes_on_publish() {
        let fanout = Arc::new(Fanout::new());
        let mut sub = fanout.subscribe();
        let publisher = fanout.clone();
        let waiter = tokio::spawn(async move { value(sub.recv().await) });
        tokio::task::yield_now().await;
        publisher.publish(applied(7));
        assert_eq!(waiter.await.unwrap(), Some(7));
    }

    #[tokio::test]
    async fn a_subscriber_too_far_behind_gets_one_resync_then_new_changes() {
        let fanout = Fanout::new();
        let mut slow = fanout.subscribe();
        let mut fast = fanout.subscribe();
        for n in 0..LAG_LIMIT as u32 {
            fanout.publish(applied(n));
            assert_eq!(value(fast.recv().await), Some(n));
        }
        fanout.publish(applied(99_999)); // one past the limit: the backlog is dropped
        fanout.publish(applied(100_000));
        assert_eq!(value(slow.recv().await), Some(u32::MAX), "a resync first");
        assert_eq!(value(slow.recv().await), Some(100_000));
        assert!(slow.queue.pending.lock().unwrap().changes.capacity() <= KEPT_CAPACITY);
        assert_eq!(
            value(fast.recv().await),
            Some(99_999),
            "others lose nothing"
        );
        assert_eq!(value(fast.recv().await), Some(100_000));
    }

    #[tokio::test]
    async fn receives_end_once_the_informer_is_gone_and_the_queue_is_read() {
        let fanout = Fanout::new();
        let mut sub = fanout.subscribe();
        fanout.publish(applied(1));
        drop(fanout);
        assert_eq!(value(sub.recv().await), Some(1));
        assert_eq!(value(sub.recv().await), None);
    }

    #[tokio::test]
    async fn dropped_subscriptions_are_forgotten() {
        let fanout = Fanout::new();
        let kept = fanout.subscribe();
        drop(fanout.subscribe());
        fanout.publish(applied(1));
        assert_eq!(fanout.subscriber_count(), 1);
        drop(kept);
    }
}
