//! A keyed work queue, as controllers use upstream: a key is queued at most once, a key
//! being reconciled that changes again is reconciled once more afterwards (never by two
//! workers at once), failures are retried with per-key exponential back-off.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// First retry delay after a failure; doubles per consecutive failure (upstream: 5 ms).
const RETRY_BASE: Duration = Duration::from_millis(5);
/// Longest retry delay.
const RETRY_MAX: Duration = Duration::from_secs(300);

struct State<T> {
    queue: VecDeque<T>,
    queued: HashSet<T>,
    processing: HashSet<T>,
    /// Changed while a worker had it: queue again when that worker is done.
    dirty: HashSet<T>,
    failures: HashMap<T, u32>,
}

/// Cheap to clone; clones share the queue.
pub struct WorkQueue<T> {
    state: Arc<Mutex<State<T>>>,
    ready: Arc<Notify>,
}

impl<T> Clone for WorkQueue<T> {
    fn clone(&self) -> Self {
        WorkQueue {
            state: self.state.clone(),
            ready: self.ready.clone(),
        }
    }
}

impl<T> Default for WorkQueue<T>
where
    T: Hash + Eq + Clone + Send + std::fmt::Display + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<T> WorkQueue<T>
where
    T: Hash + Eq + Clone + Send + std::fmt::Display + 'static,
{
    pub fn new() -> Self {
        WorkQueue {
            state: Arc::new(Mutex::new(State {
                queue: VecDeque::new(),
                queued: HashSet::new(),
                processing: HashSet::new(),
                dirty: HashSet::new(),
                failures: HashMap::new(),
            })),
            ready: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue `key` unless it is already waiting.
    pub fn add(&self, key: T) {
        let mut state = self.lock();
        if state.processing.contains(&key) {
            state.dirty.insert(key);
            return;
        }
        if state.queued.insert(key.clone()) {
            state.queue.push_back(key);
            drop(state);
            self.ready.notify_one();
        }
    }

    /// Queue `key` after `delay` (a re-check at a known time, e.g. minReadySeconds).
    pub fn add_after(&self, key: T, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(key);
        });
    }

    /// How many keys wait (not counting those being worked on).
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn next(&self) -> T {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                if let Some(key) = state.queue.pop_front() {
                    state.queued.remove(&key);
                    state.processing.insert(key.clone());
                    return key;
                }
            }
            notified.await;
        }
    }

    fn done(&self, key: &T) {
        let again = {
            let mut state = self.lock();
            state.processing.remove(key);
            state.dirty.remove(key)
        };
        if again {
            self.add(key.clone());
        }
    }

    fn forget(&self, key: &T) {
        self.lock().failures.remove(key);
    }

    fn retry_delay(&self, key: &T) -> Duration {
        let mut state = self.lock();
        let failures = state.failures.entry(key.clone()).or_insert(0);
        *failures = failures.saturating_add(1);
        let exp = (*failures - 1).min(20);
        RETRY_BASE.saturating_mul(1 << exp).min(RETRY_MAX)
    }

    /// Run `workers` workers until the process ends. The handler returns `Ok(Some(d))` to
    /// look at the key again after `d`, `Ok(None)` when done, `Err` to retry with back-off.
    pub async fn run<F, Fut, E>(&self, workers: usize, name: &'static str, handler: F)
    where
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<Duration>, E>> + Send,
        E: std::fmt::Display,
    {
        let handler = Arc::new(handler);
        let mut tasks = Vec::new();
        for _ in 0..workers.max(1) {
            let queue = self.clone();
            let handler = handler.clone();
            tasks.push(async move {
                loop {
                    let key = queue.next().await;
                    match handler(key.clone()).await {
                        Ok(requeue) => {
                            queue.forget(&key);
                            if let Some(delay) = requeue {
                                queue.add_after(key.clone(), delay);
                            }
                        }
                        Err(e) => {
                            let delay = queue.retry_delay(&key);
                            tracing::warn!("{name}: {key}: {e} (retrying in {delay:?})");
                            queue.add_after(key.clone(), delay);
                        }
                    }
                    queue.done(&key);
                }
            });
        }
        futures::future::join_all(tasks).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_key_added_twice_before_a_worker_takes_it_runs_once() {
        let queue: WorkQueue<String> = WorkQueue::new();
        queue.add("a".into());
        queue.add("a".into());
        queue.add("b".into());
        assert_eq!(queue.len(), 2);
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let q = queue.clone();
        let worker = tokio::spawn(async move {
            q.run(2, "test", move |_k: String| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, String>(None)
                }
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        worker.abort();
    }

    #[tokio::test]
    async fn failures_are_retried_until_they_succeed() {
        let queue: WorkQueue<String> = WorkQueue::new();
        queue.add("flaky".into());
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let q = queue.clone();
        let worker = tokio::spawn(async move {
            q.run(1, "test", move |_k: String| {
                let counter = counter.clone();
                async move {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    if n < 3 {
                        Err("not yet".to_string())
                    } else {
                        Ok(None)
                    }
                }
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            4,
            "three failures then one success"
        );
        worker.abort();
    }

    #[test]
    fn retry_delay_doubles_and_is_capped() {
        let queue: WorkQueue<String> = WorkQueue::new();
        let k = "k".to_string();
        assert_eq!(queue.retry_delay(&k), Duration::from_millis(5));
        assert_eq!(queue.retry_delay(&k), Duration::from_millis(10));
        assert_eq!(queue.retry_delay(&k), Duration::from_millis(20));
        for _ in 0..40 {
            queue.retry_delay(&k);
        }
        assert_eq!(queue.retry_delay(&k), RETRY_MAX);
        queue.forget(&k);
        assert_eq!(queue.retry_delay(&k), Duration::from_millis(5));
    }
}
