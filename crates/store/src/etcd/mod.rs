//! The etcd backend: the `Store` contract mapped onto the etcd v3 API, for
//! `--datastore-endpoint http://HOST:2379`. Revisions are etcd's own; each conditional
//! write is one etcd transaction (compare on create/mod revision, put or delete on
//! success, read the current value on failure), so a conflict answer carries the value
//! that beat us without a second round trip.
//!
//! The gRPC calls live in `client` (tonic's generic client) and the protobuf messages in
//! `proto` (written by hand), so building needs no `protoc`; this module decides what the
//! calls mean for the contract.

pub(crate) mod client;
pub(crate) mod proto;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use client::{ClientOptions, EtcdClient, RpcError, WatchResponses};
use proto::{request_op, response_op, Compare, RangeRequest, RequestOp, TxnRequest, TxnResponse};

use crate::{
    prefix_end, Event, KeyValue, ListRequest, ListResponse, ReadAt, Result, Revision, Store,
    StoreError, WatchStream,
};

/// Tuning knobs of the etcd backend.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// How often this server compacts etcd (kube-apiserver's default is 5 minutes); each
    /// run compacts to the revision seen at the previous run, keeping at least
    /// `compact_retain_revisions`. `None` leaves compaction to someone else (for example
    /// etcd's own `--auto-compaction-retention`).
    pub compact_interval: Option<Duration>,
    pub compact_retain_revisions: i64,
    pub connect_timeout: Duration,
    /// Deadline of each unary request (not of watches).
    pub request_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            compact_interval: Some(Duration::from_secs(300)),
            compact_retain_revisions: 1000,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The etcd-backed `Store`. Dropping it stops its compaction task.
pub struct EtcdStore {
    client: EtcdClient,
    compactor: Option<tokio::task::JoinHandle<()>>,
    /// The newest compaction point seen (a lower bound; others may compact too).
    known_compacted: AtomicI64,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.client.endpoints())
            .finish()
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        if let Some(task) = self.compactor.take() {
            task.abort();
        }
    }
}

const COMPACTED_MSG: &str = "required revision has been compacted";
const FUTURE_MSG: &str = "required revision is a future revision";

/// Whether etcd answered with an error whose message contains `needle` (etcd's revision
/// errors share the gRPC code OutOfRange and are told apart by message).
fn is_etcd_error(e: &RpcError, needle: &str) -> bool {
    e.etcd_message().is_some_and(|m| m.contains(needle))
}

fn backend(what: impl std::fmt::Display) -> impl FnOnce(RpcError) -> StoreError {
    move |e| StoreError::Backend(format!("etcd: {what}: {e}"))
}

fn to_kv(kv: &proto::KeyValue) -> Result<KeyValue> {
    let key = std::str::from_utf8(&kv.key).map_err(|e| {
        StoreError::Backend(format!(
            "etcd: key {:?} at revision {} is not UTF-8: {e}",
            String::from_utf8_lossy(&kv.key),
            kv.mod_revision
        ))
    })?;
    Ok(KeyValue {
        key: key.to_owned(),
        // Shares the decoded response buffer; no copy.
        value: kv.value.clone(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
    })
}

fn header_revision(header: Option<&proto::ResponseHeader>, what: &str) -> Result<Revision> {
    header
        .map(|h| h.revision)
        .ok_or_else(|| StoreError::Backend(format!("etcd: {what}: response without header")))
}

/// A read of one key, as a transaction operation.
fn get_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::Range(RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })),
    }
}

/// A write of one key, as a transaction operation; `prev_kv` asks for the value it replaced.
fn put_op(key: &str, value: Bytes, prev_kv: bool) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::Put(proto::PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            prev_kv,
        })),
    }
}

/// A count-only read of the key "/" at `revision` (0: the newest): the cheapest request
/// that answers with a header, and fails on a compacted or future revision.
fn probe_range(revision: Revision) -> RangeRequest {
    RangeRequest {
        key: b"/".to_vec(),
        revision,
        count_only: true,
        ..Default::default()
    }
}

/// The first operation result of a transaction's branch that ran.
fn first_op(resp: &TxnResponse) -> Option<&response_op::Response> {
    resp.responses.first().and_then(|r| r.response.as_ref())
}

/// The current value from the `else` branch of a failed conditional transaction.
fn failed_txn_current(resp: &TxnResponse) -> Result<Option<KeyValue>> {
    match first_op(resp) {
        Some(response_op::Response::Range(get)) => get.kvs.first().map(to_kv).transpose(),
        _ => Ok(None),
    }
}

/// Endpoints: `http://host:port`, comma-separated for several members.
fn parse_endpoints<E: AsRef<str>>(endpoints: &[E]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in endpoints.iter().flat_map(|e| e.as_ref().split(',')) {
        let e = e.trim();
        if e.is_empty() {
            continue;
        }
        if e.starts_with("https://") {
            return Err(StoreError::Backend(format!(
                "etcd endpoint {e}: TLS to etcd is not supported yet; use http://"
            )));
        }
        if !e.starts_with("http://") {
            return Err(StoreError::Backend(format!(
                "etcd endpoint {e:?}: expected http://HOST:PORT"
            )));
        }
        out.push(e.to_owned());
    }
    if out.is_empty() {
        return Err(StoreError::Backend("no etcd endpoint given".into()));
    }
    Ok(out)
}

impl EtcdStore {
    /// Connect with default options. `endpoints` are `http://HOST:PORT` URLs; an entry may
    /// hold several comma-separated URLs, as k3s's `--datastore-endpoint` does.
    pub async fn connect<E: AsRef<str>>(endpoints: &[E]) -> Result<Arc<EtcdStore>> {
        Self::connect_with(endpoints, EtcdOptions::default()).await
    }

    /// Connect, check that etcd answers, and start automatic compaction if configured.
    pub async fn connect_with<E: AsRef<str>>(
        endpoints: &[E],
        opts: EtcdOptions,
    ) -> Result<Arc<EtcdStore>> {
        let endpoints = parse_endpoints(endpoints)?;
        let joined = endpoints.join(",");
        let client = EtcdClient::new(
            &endpoints,
            &ClientOptions {
                connect_timeout: opts.connect_timeout,
                request_timeout: opts.request_timeout,
                keep_alive_interval: Duration::from_secs(30),
                keep_alive_timeout: Duration::from_secs(10),
            },
        )
        .map_err(StoreError::Backend)?;
        let mut store = EtcdStore {
            client,
            compactor: None,
            known_compacted: AtomicI64::new(0),
        };
        // The channel connects lazily; fail here, with the endpoint named, if nobody answers.
        tokio::time::timeout(opts.connect_timeout, store.current_revision())
            .await
            .map_err(|_| {
                StoreError::Backend(format!(
                    "etcd: {joined} did not answer within {:?}",
                    opts.connect_timeout
                ))
            })??;
        if let Some(every) = opts.compact_interval {
            store.compactor = Some(tokio::spawn(compact_loop(
                store.client.clone(),
                every,
                opts.compact_retain_revisions.max(0),
            )));
        }
        Ok(Arc::new(store))
    }

    async fn txn(&self, txn: TxnRequest, what: impl FnOnce() -> String) -> Result<TxnResponse> {
        self.client
            .txn(txn)
            .await
            .map_err(|e| StoreError::Backend(format!("etcd: {}: {e}", what())))
    }

    /// Turn an etcd error about a requested revision into the contract's variants.
    async fn revision_error(&self, requested: Revision, e: RpcError, what: &str) -> StoreError {
        if is_etcd_error(&e, COMPACTED_MSG) {
            StoreError::Compacted {
                requested,
                compacted: self.compacted_revision().await.unwrap_or(requested),
            }
        } else if is_etcd_error(&e, FUTURE_MSG) {
            StoreError::FutureRevision {
                requested,
                current: self.current_revision().await.unwrap_or(requested),
            }
        } else {
            StoreError::Backend(format!("etcd: {what} at revision {requested}: {e}"))
        }
    }
}

/// kube-apiserver's compaction loop: every interval, compact to the revision seen at the
/// previous tick (keeping at least `retain` revisions). Errors are logged and retried at
/// the next tick; another server compacting first is harmless.
async fn compact_loop(client: EtcdClient, every: Duration, retain: Revision) {
    let mut last: Option<Revision> = None;
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let current = match client.range(probe_range(0)).await {
            Ok(resp) => resp.header.map_or(0, |h| h.revision),
            Err(e) => {
                tracing::warn!(error = %e, "etcd compaction: reading the current revision");
                continue;
            }
        };
        if let Some(prev) = last.replace(current) {
            let target = prev.min(current - retain);
            if target > 0 {
                let req = proto::CompactionRequest {
                    revision: target,
                    physical: false,
                };
                match client.compact(req).await {
                    Ok(_) => tracing::debug!(target, "compacted etcd"),
                    Err(e) if is_etcd_error(&e, COMPACTED_MSG) => {}
                    Err(e) => tracing::warn!(error = %e, target, "etcd compaction failed"),
                }
            }
        }
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn current_revision(&self) -> Result<Revision> {
        let resp = self
            .client
            .range(probe_range(0))
            .await
            .map_err(backend("reading the current revision"))?;
        header_revision(resp.header.as_ref(), "reading the current revision")
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let req = RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        };
        let resp = self
            .client
            .range(req)
            .await
            .map_err(backend(format!("reading key {key:?}")))?;
        resp.kvs.first().map(to_kv).transpose()
    }

    async fn list(&self, req: ListRequest) -> Result<ListResponse> {
        if let Some(start) = &req.start_key {
            if !start.starts_with(&req.prefix) {
                return Err(StoreError::Backend(format!(
                    "list start key {start:?} is outside prefix {:?}",
                    req.prefix
                )));
            }
        }
        let start = req.start_key.as_deref().unwrap_or(&req.prefix);
        let range = RangeRequest {
            key: start.as_bytes().to_vec(),
            range_end: prefix_end(&req.prefix),
            // 0 is etcd's "no limit", as it is the contract's.
            limit: req
                .limit
                .map_or(0, |l| i64::try_from(l).unwrap_or(i64::MAX)),
            // 0 is etcd's "newest".
            revision: match req.at {
                ReadAt::Exact(rev) => rev,
                ReadAt::Latest => 0,
            },
            ..Default::default()
        };
        let resp = match self.client.range(range).await {
            Ok(resp) => resp,
            Err(e) => {
                return Err(match req.at {
                    ReadAt::Exact(rev) => {
                        self.revision_error(rev, e, &format!("listing {:?}", req.prefix))
                            .await
                    }
                    ReadAt::Latest => {
                        StoreError::Backend(format!("etcd: listing {:?}: {e}", req.prefix))
                    }
                })
            }
        };
        let items = resp.kvs.iter().map(to_kv).collect::<Result<Vec<_>>>()?;
        let revision = match req.at {
            ReadAt::Exact(rev) => rev,
            ReadAt::Latest => {
                header_revision(resp.header.as_ref(), &format!("listing {:?}", req.prefix))?
            }
        };
        // etcd's count is every key in [start, end), before the limit.
        let remaining = u64::try_from(resp.count)
            .ok()
            .map(|c| c.saturating_sub(items.len() as u64));
        Ok(ListResponse {
            more: resp.more,
            remaining: if resp.more { remaining } else { Some(0) },
            items,
            revision,
        })
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        let req = RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix),
            count_only: true,
            ..Default::default()
        };
        let resp = self
            .client
            .range(req)
            .await
            .map_err(backend(format!("counting {prefix:?}")))?;
        Ok(u64::try_from(resp.count).unwrap_or(0))
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        let txn = TxnRequest {
            compare: vec![Compare::create_revision(key, proto::COMPARE_EQUAL, 0)],
            success: vec![put_op(key, value.clone(), false)],
            failure: vec![get_op(key)],
        };
        let resp = self.txn(txn, || format!("creating key {key:?}")).await?;
        if !resp.succeeded {
            return Err(StoreError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        let rev = header_revision(resp.header.as_ref(), "create")?;
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision: rev,
            mod_revision: rev,
        })
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        // A missing key has mod_revision 0; the create_revision guard keeps an update from
        // resurrecting it.
        let txn = TxnRequest {
            compare: vec![
                Compare::create_revision(key, proto::COMPARE_GREATER, 0),
                Compare::mod_revision(key, proto::COMPARE_EQUAL, expected),
            ],
            success: vec![put_op(key, value.clone(), true)],
            failure: vec![get_op(key)],
        };
        let resp = self
            .txn(txn, || {
                format!("updating key {key:?} at revision {expected}")
            })
            .await?;
        if !resp.succeeded {
            return Err(match failed_txn_current(&resp)? {
                None => StoreError::NotFound {
                    key: key.to_owned(),
                },
                Some(current) => StoreError::Conflict {
                    key: key.to_owned(),
                    expected,
                    current: Box::new(current),
                },
            });
        }
        let rev = header_revision(resp.header.as_ref(), "update")?;
        let create_revision = match first_op(&resp) {
            Some(response_op::Response::Put(put)) => {
                put.prev_kv.as_ref().map(|p| p.create_revision)
            }
            _ => None,
        }
        .ok_or_else(|| {
            StoreError::Backend(format!(
                "etcd: update of {key:?} at revision {rev} returned no previous value"
            ))
        })?;
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision,
            mod_revision: rev,
        })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(KeyValue, Revision)> {
        let mut compare = vec![Compare::create_revision(key, proto::COMPARE_GREATER, 0)];
        if let Some(expected) = expected {
            compare.push(Compare::mod_revision(key, proto::COMPARE_EQUAL, expected));
        }
        let delete = RequestOp {
            request: Some(request_op::Request::DeleteRange(
                proto::DeleteRangeRequest {
                    key: key.as_bytes().to_vec(),
                    range_end: Vec::new(),
                    prev_kv: true,
                },
            )),
        };
        let txn = TxnRequest {
            compare,
            success: vec![delete],
            failure: vec![get_op(key)],
        };
        let resp = self.txn(txn, || format!("deleting key {key:?}")).await?;
        if !resp.succeeded {
            return Err(match (failed_txn_current(&resp)?, expected) {
                (Some(current), Some(expected)) => StoreError::Conflict {
                    key: key.to_owned(),
                    expected,
                    current: Box::new(current),
                },
                _ => StoreError::NotFound {
                    key: key.to_owned(),
                },
            });
        }
        let rev = header_revision(resp.header.as_ref(), "delete")?;
        let prev = match first_op(&resp) {
            Some(response_op::Response::DeleteRange(del)) => {
                del.prev_kvs.first().map(to_kv).transpose()?
            }
            _ => None,
        }
        .ok_or_else(|| {
            StoreError::Backend(format!(
                "etcd: delete of {key:?} at revision {rev} returned no previous value"
            ))
        })?;
        Ok((prev, rev))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let create = proto::WatchCreateRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix),
            start_revision: after + 1,
            prev_kv: true,
            ..Default::default()
        };
        let what = format!("watching {prefix:?} after revision {after}");
        // etcd answers a watch create first; a compacted start revision cancels it at once.
        let (stream, first) = self.client.watch(create).await.map_err(backend(&what))?;
        let mut state = EtcdWatch {
            stream,
            pending: VecDeque::new(),
            after,
            prefix: prefix.to_owned(),
            done: false,
        };
        state.absorb(first)?;
        Ok(futures::stream::unfold(state, |mut w| async move {
            let item = w.next().await?;
            Some((item, w))
        })
        .boxed())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let req = proto::CompactionRequest {
            revision,
            physical: false,
        };
        match self.client.compact(req).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.revision_error(revision, e, "compacting").await),
        }
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        // etcd has no call that returns its compaction point, but a read at a revision
        // below it fails with a distinct error, so binary-search the oldest readable
        // revision (about log2(current) tiny count-only reads). The point only moves up,
        // so the last answer is a lower bound for the next search.
        let current = self.current_revision().await?;
        let readable = |rev: Revision| async move {
            match self.client.range(probe_range(rev)).await {
                Ok(_) => Ok(true),
                Err(e) if is_etcd_error(&e, COMPACTED_MSG) => Ok(false),
                Err(e) => Err(StoreError::Backend(format!(
                    "etcd: probing the compaction point at revision {rev}: {e}"
                ))),
            }
        };
        let mut lo = self
            .known_compacted
            .load(Ordering::Acquire)
            .clamp(1, current.max(1));
        if current <= 1 || readable(lo).await? {
            return Ok(if lo <= 1 { 0 } else { lo });
        }
        // Invariant: `lo` is compacted away, `hi` is readable.
        let mut hi = current;
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if readable(mid).await? {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        self.known_compacted.fetch_max(hi, Ordering::AcqRel);
        Ok(hi)
    }
}

/// One etcd watch turned into the contract's event stream.
struct EtcdWatch {
    stream: WatchResponses,
    pending: VecDeque<Result<Event>>,
    after: Revision,
    prefix: String,
    done: bool,
}

impl EtcdWatch {
    /// Queue the events of one response; a cancellation becomes the stream's last item.
    fn absorb(&mut self, resp: proto::WatchResponse) -> Result<()> {
        if resp.canceled {
            self.done = true;
            return Err(if resp.compact_revision > 0 {
                StoreError::Compacted {
                    requested: self.after,
                    compacted: resp.compact_revision,
                }
            } else {
                StoreError::Backend(format!(
                    "etcd: watch of {:?} cancelled after revision {}: {}",
                    self.prefix, self.after, resp.cancel_reason
                ))
            });
        }
        for ev in &resp.events {
            let event = self.convert(ev)?;
            self.after = event.revision();
            self.pending.push_back(Ok(event));
        }
        Ok(())
    }

    fn convert(&self, ev: &proto::Event) -> Result<Event> {
        let kv = ev.kv.as_ref().ok_or_else(|| {
            StoreError::Backend(format!(
                "etcd: watch of {:?}: event without key after revision {}",
                self.prefix, self.after
            ))
        })?;
        let prev = ev.prev_kv.as_ref().map(to_kv).transpose()?;
        Ok(match ev.r#type {
            proto::EVENT_PUT => Event::Put {
                kv: to_kv(kv)?,
                prev,
            },
            proto::EVENT_DELETE => Event::Delete {
                // etcd omits prev_kv when the previous revision was compacted under a slow
                // watcher; without it a DELETED event cannot be built, so make the
                // client relist.
                prev: prev.ok_or(StoreError::WatchLagged(self.after))?,
                revision: kv.mod_revision,
            },
            other => {
                return Err(StoreError::Backend(format!(
                    "etcd: watch of {:?}: unknown event type {other} at revision {}",
                    self.prefix, kv.mod_revision
                )))
            }
        })
    }
    async fn next(&mut self) -> Option<Result<Event>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            match self.stream.message().await {
                Ok(Some(resp)) => {
                    if let Err(e) = self.absorb(resp) {
                        self.done = true;
                        self.pending.push_back(Err(e));
                    }
                }
                Ok(None) => {
                    self.done = true;
                    return Some(Err(StoreError::Backend(format!(
                        "etcd: watch of {:?} closed by the server after revision {}",
                        self.prefix, self.after
                    ))));
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(StoreError::Backend(format!(
                        "etcd: watch of {:?} failed after revision {}: {e}",
                        self.prefix, self.after
                    ))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked() {
        assert_eq!(
            parse_endpoints(&["http://a:2379,http://b:2379"]).unwrap(),
            vec!["http://a:2379".to_string(), "http://b:2379".to_string()]
        );
        assert!(parse_endpoints(&["https://a:2379"]).is_err());
        assert!(parse_endpoints(&["a:2379"]).is_err());
        assert!(parse_endpoints::<&str>(&[]).is_err());
    }
}
