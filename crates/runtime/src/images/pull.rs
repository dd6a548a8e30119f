//! Pulling images from OCI / Docker v2 registries into the store, through `oci-client`
//! (transport, token and basic auth; rustls with ring, no openssl). Manifests are parsed
//! and multi-arch indexes resolved to the host platform here, with the same documents and
//! the same verify-then-commit path as tarball import, so a bad pull changes nothing.
//!
//! Registries on `localhost`, `127.0.0.1` or `[::1]` are spoken to over plain http
//! (containerd's default for localhost); every other registry over https.
//!
//! - Progress: the caller hears bytes done of the total the manifest declares (config and
//!   layers) as the blobs arrive; blobs the store already has count as done at once and are
//!   not downloaded again.
//! - One download per image: concurrent pulls of the same normalised reference with the
//!   same credentials share the first caller's pull (its progress and its outcome). If that
//!   caller goes away mid-pull, a waiting one starts over.
//! - A full disk fails the pull with containerd's words (`write <file>: no space left on
//!   device`); the staging directory goes with the failed pull, so nothing is left behind.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use tokio::io::AsyncWrite;
use tokio::sync::watch;

use super::digest::{digest_reader, Digest};
use super::import::{verify_and_stage, Member, Members, PlannedImage};
use super::oci::{self, media_type, Index, Manifest};
use super::reference::Reference;
use super::store::{clear_io, io_err, Image, ImageStore, StoreError};

/// Credentials for one registry (from an imagePullSecret, later).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
        }
    }
}

/// Whether a registry host is spoken to over plain http.
pub fn is_insecure_local(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']')
            .next()
            .map(|h| format!("[{h}]"))
            .unwrap_or_default()
    } else {
        registry.split(':').next().unwrap_or_default().to_string()
    };
    matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]")
}

fn pull_err(reference: &Reference, what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid {
        what: format!("pulling {reference}"),
        reason: format!("{what}: {e}"),
    }
}

const ACCEPTED: &[&str] = &[
    media_type::OCI_MANIFEST,
    media_type::DOCKER_MANIFEST,
    media_type::OCI_INDEX,
    media_type::DOCKER_LIST,
];

/// How far a pull is: bytes of the image's blobs (compressed, as the manifest declares
/// them) fetched or already stored, of all of them. `total` is 0 until the manifest is in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

/// `12.3 MB of 45.6 MB (27%)` (decimal units, as image sizes are shown).
impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mb = |b: u64| b as f64 / 1e6;
        let percent = (self.done.min(self.total) as u128 * 100)
            .checked_div(self.total as u128)
            .unwrap_or(0);
        write!(
            f,
            "{:.1} MB of {:.1} MB ({percent}%)",
            mb(self.done),
            mb(self.total)
        )
    }
}

/// Pulls `reference` (normalised as usual) into the store and returns the stored image.
/// `progress` hears how far the download is, as often as data arrives; a pull of the same
/// image already under way in this process is joined rather than repeated.
pub async fn pull(
    store: &ImageStore,
    reference: &str,
    credentials: &Credentials,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Image, StoreError> {
    let reference = Reference::parse(reference)?;
    let key = (reference.to_string(), credentials.clone());
    loop {
        match store.pulls.join(&key) {
            Role::Follow(mut flight) => {
                if let Some(outcome) = follow(&mut flight, progress).await {
                    return outcome.map_err(StoreError::Shared);
                }
                // The pull we waited for was abandoned: run one ourselves.
            }
            Role::Lead(leader) => {
                let report = |p: Progress| {
                    leader.report(p);
                    progress(p);
                };
                let outcome = pull_now(store, &reference, credentials, &report)
                    .await
                    .map_err(Arc::new);
                leader.finish(outcome.clone());
                // Waiters keep their copies; ours is the original unless someone waited.
                return outcome.map_err(|e| Arc::try_unwrap(e).unwrap_or_else(StoreError::Shared));
            }
        }
    }
}

/// Waits for another caller's pull; None if it was abandoned before it finished.
async fn follow(
    flight: &mut watch::Receiver<Flight>,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Option<Result<Image, Arc<StoreError>>> {
    loop {
        let now = flight.borrow_and_update().clone();
        match now {
            Flight::Done(outcome) => return Some(*outcome),
            Flight::Running(p) if p.total > 0 => progress(p),
            Flight::Running(_) => {}
        }
        if flight.changed().await.is_err() {
            let last = flight.borrow().clone();
            return match last {
                Flight::Done(outcome) => Some(*outcome),
                Flight::Running(_) => None,
            };
        }
    }
}

type FlightKey = (String, Credentials);

/// What a pull under way tells those who wait for it.
#[derive(Clone)]
enum Flight {
    Running(Progress),
    Done(Box<Result<Image, Arc<StoreError>>>),
}

/// The pulls under way in this process, by normalised reference and credentials.
#[derive(Default)]
pub(crate) struct InFlight {
    flights: Mutex<HashMap<FlightKey, (u64, watch::Receiver<Flight>)>>,
    next_id: AtomicU64,
}

enum Role<'a> {
    /// No pull of this image is under way: this caller runs it.
    Lead(Leader<'a>),
    /// Another caller's pull is under way: wait for it.
    Follow(watch::Receiver<Flight>),
}

/// The caller running a pull; dropping it (finished or abandoned) ends the flight.
struct Leader<'a> {
    inflight: &'a InFlight,
    key: FlightKey,
    id: u64,
    tx: watch::Sender<Flight>,
}

impl InFlight {
    fn join(&self, key: &FlightKey) -> Role<'_> {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, rx)) = flights.get(key) {
            return Role::Follow(rx.clone());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(Flight::Running(Progress::default()));
        flights.insert(key.clone(), (id, rx));
        Role::Lead(Leader {
            inflight: self,
            key: key.clone(),
            id,
            tx,
        })
    }
}

impl Leader<'_> {
    fn report(&self, progress: Progress) {
        self.tx.send_replace(Flight::Running(progress));
    }

    fn finish(self, outcome: Result<Image, Arc<StoreError>>) {
        self.tx.send_replace(Flight::Done(Box::new(outcome)));
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let mut flights = self
            .inflight
            .flights
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if flights.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            flights.remove(&self.key);
        }
    }
}

/// One pull from the registry (the caller de-duplicates).
async fn pull_now(
    store: &ImageStore,
    reference: &Reference,
    credentials: &Credentials,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Image, StoreError> {
    let reference = reference.clone();
    // reqwest is built without a default crypto provider: use ring, which the rest of the
    // binary already uses. Installing twice is a harmless no-op error.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let protocol = if is_insecure_local(reference.registry()) {
        ClientProtocol::HttpsExcept(vec![reference.registry().to_string()])
    } else {
        ClientProtocol::Https
    };
    let client = Client::new(ClientConfig {
        protocol,
        ..Default::default()
    });
    let auth = match credentials {
        Credentials::Anonymous => RegistryAuth::Anonymous,
        Credentials::Basic { username, password } => {
            RegistryAuth::Basic(username.clone(), password.clone())
        }
    };
    let remote = |selector: &str| -> Result<oci_client::Reference, StoreError> {
        let sep = if selector.starts_with("sha256:") {
            "@"
        } else {
            ":"
        };
        format!("{}{sep}{selector}", reference.name())
            .parse()
            .map_err(|e| pull_err(&reference, "reference", e))
    };
    let host = oci::host_platform();

    let mut target = remote(reference.manifest_selector())?;
    let mut manifest_bytes = Vec::new();
    // An index resolves to the host's manifest (at most one level of nesting is usual).
    for _ in 0..3 {
        let (bytes, digest) = client
            .pull_manifest_raw(&target, &auth, ACCEPTED)
            .await
            .map_err(|e| pull_err(&reference, "fetching the manifest", e))?;
        let got = Digest::of(&bytes);
        if got.as_str() != digest {
            return Err(pull_err(
                &reference,
                "manifest",
                format!("digest mismatch: registry says {digest}, content is {got}"),
            ));
        }
        let kind: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| pull_err(&reference, "manifest is not JSON", e))?;
        let media = kind.get("mediaType").and_then(|m| m.as_str()).unwrap_or("");
        let is_index =
            media_type::is_index(media) || (media.is_empty() && kind.get("manifests").is_some());
        if !is_index {
            manifest_bytes = bytes.to_vec();
            break;
        }
        let index: Index =
            serde_json::from_slice(&bytes).map_err(|e| pull_err(&reference, "index", e))?;
        let chosen = oci::select_manifest(&index, &host).ok_or_else(|| {
            pull_err(
                &reference,
                "platform",
                format!(
                    "no image for {}/{} (the index offers {})",
                    host.os,
                    host.architecture,
                    oci::platforms_of(&index).join(", ")
                ),
            )
        })?;
        target = remote(&chosen.digest)?;
    }
    if manifest_bytes.is_empty() {
        return Err(pull_err(
            &reference,
            "manifest",
            "indexes nested too deeply",
        ));
    }
    let manifest: Manifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| pull_err(&reference, "manifest", e))?;

    let stage = store.staging()?;
    let mut members = Members::default();
    let mut blobs = Vec::new();
    for desc in std::iter::once(&manifest.config).chain(&manifest.layers) {
        let digest =
            Digest::parse(&desc.digest).map_err(|e| pull_err(&reference, "descriptor", e))?;
        if !blobs.iter().any(|(d, _)| *d == digest) {
            blobs.push((digest, desc));
        }
    }
    let mut done = Progress {
        done: 0,
        total: blobs.iter().map(|(_, d)| d.size).sum(),
    };
    progress(done);
    for (digest, desc) in blobs {
        let key = format!("blobs/sha256/{}", digest.hex());
        let file = stage.path().join(digest.hex());
        // A blob the store has is not fetched again; a hard link keeps it for this pull
        // even if a removal takes it out of the store meanwhile.
        let have =
            store.has_blob(&digest) && std::fs::hard_link(store.blob_path(&digest), &file).is_ok();
        if !have {
            download(&client, &target, desc, &file, done, progress)
                .await
                .map_err(|e| pull_err(&reference, &format!("fetching blob {}", desc.digest), e))?;
        }
        done.done += desc.size;
        progress(done);
        let (got, size) = std::fs::File::open(&file)
            .and_then(digest_reader)
            .map_err(io_err("reading", &file))?;
        members.insert(
            key,
            Member {
                file,
                digest: got,
                size,
            },
        );
    }
    let plan = PlannedImage {
        names: vec![reference.clone()],
        manifest: manifest_bytes,
        config: manifest.config,
        layers: manifest.layers,
    };
    let what = format!("pulling {reference}");
    let staged = verify_and_stage(store, &members, &[plan], stage.path(), &host, &what)?;
    store.commit(staged)?;
    store.get(&reference.to_string())
}

/// Fetches one blob into `file`, reporting progress on top of `before`.
async fn download(
    client: &Client,
    target: &oci_client::Reference,
    desc: &oci::Descriptor,
    file: &Path,
    before: Progress,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let out = tokio::fs::File::create(file)
        .await
        .map_err(|e| format!("open {}: {}", file.display(), clear_io(e)))?;
    let mut out = Counting::new(out, before, progress);
    let fetched = client
        .pull_blob(target, desc.digest.as_str(), &mut out)
        .await;
    // tokio's File finishes writes in the background: wait for them before reading back.
    let flushed = match fetched {
        Ok(()) => out.flush().await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match (flushed, out.failed.take()) {
        // The registry side may report a failed write its own way: say what failed.
        (Err(_), Some(write)) => Err(format!("write {}: {write}", file.display())),
        (result, _) => result,
    }
}

/// A writer that counts what passes through and remembers the first write error (with
/// [`clear_io`]'s wording), so a full disk is reported as such whatever the caller says.
struct Counting<'a, W> {
    inner: W,
    before: Progress,
    written: u64,
    report: &'a (dyn Fn(Progress) + Send + Sync),
    failed: Option<io::Error>,
}

impl<'a, W> Counting<'a, W> {
    fn new(inner: W, before: Progress, report: &'a (dyn Fn(Progress) + Send + Sync)) -> Self {
        Counting {
            inner,
            before,
            written: 0,
            report,
            failed: None,
        }
    }

    fn note<T>(&mut self, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match result {
            Poll::Ready(Err(e)) => {
                let e = clear_io(e);
                if self.failed.is_none() {
                    self.failed = Some(io::Error::new(e.kind(), e.to_string()));
                }
                Poll::Ready(Err(e))
            }
            other => other,
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counting<'_, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            this.written += n as u64;
            (this.report)(Progress {
                done: this.before.done + this.written,
                total: this.before.total,
            });
        }
        this.note(result)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.note(result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.note(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_registries_are_insecure() {
        for (host, want) in [
            ("localhost", true),
            ("localhost:5000", true),
            ("127.0.0.1:41234", true),
            ("[::1]:5000", true),
            ("docker.io", false),
            ("localhost.example:5000", false),
            ("10.0.0.1:5000", false),
        ] {
            assert_eq!(is_insecure_local(host), want, "{host}");
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn progress_reads_as_sizes_and_percent() {
        let cases = [
            (12_300_000, 45_600_000, "12.3 MB of 45.6 MB (26%)"),
            (0, 45_600_000, "0.0 MB of 45.6 MB (0%)"),
            (45_600_000, 45_600_000, "45.6 MB of 45.6 MB (100%)"),
            (5, 0, "0.0 MB of 0.0 MB (0%)"),
        ];
        for (done, total, want) in cases {
            assert_eq!(Progress { done, total }.to_string(), want);
        }
    }

    /// Hands out `chunks` chunks of `size` bytes, sleeping before each: a slow registry.
    struct SlowReader {
        chunks: usize,
        size: usize,
        sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    }

    impl tokio::io::AsyncRead for SlowReader {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.chunks == 0 {
                return Poll::Ready(Ok(()));
            }
            let sleep = self.sleep.get_or_insert_with(|| {
                Box::pin(tokio::time::sleep(std::time::Duration::from_millis(20)))
            });
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
            self.chunks -= 1;
            let n = self.size.min(buf.remaining());
            buf.put_slice(&vec![7u8; n]);
            Poll::Ready(Ok(()))
        }
    }

    use std::future::Future;

    #[test]
    fn progress_is_reported_while_a_slow_download_runs() {
        let seen = Mutex::new(Vec::new());
        let report = |p: Progress| seen.lock().unwrap().push((std::time::Instant::now(), p));
        let before = Progress {
            done: 1000,
            total: 1000 + 10 * 4096,
        };
        let started = std::time::Instant::now();
        let copied = rt().block_on(async {
            let mut reader = SlowReader {
                chunks: 10,
                size: 4096,
                sleep: None,
            };
            let mut out = Counting::new(Vec::new(), before, &report);
            tokio::io::copy(&mut reader, &mut out).await.unwrap()
        });
        assert_eq!(copied, 10 * 4096);
        let seen = seen.into_inner().unwrap();
        let dones: Vec<u64> = seen.iter().map(|(_, p)| p.done).collect();
        // Reported as the bytes came, growing, with the total known from the start.
        assert!(dones.len() >= 10, "{dones:?}");
        assert!(dones.windows(2).all(|w| w[0] < w[1]), "{dones:?}");
        assert_eq!(dones.last(), Some(&before.total));
        assert!(seen.iter().all(|(_, p)| p.total == before.total));
        // The first report came long before the download ended.
        let (first, _) = seen[0];
        let (last, _) = seen[seen.len() - 1];
        assert!(first.duration_since(started) < last.duration_since(started));
    }

    /// A disk that fills up after `room` bytes.
    struct FullDisk {
        room: usize,
    }

    impl AsyncWrite for FullDisk {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.room == 0 {
                return Poll::Ready(Err(io::Error::from_raw_os_error(libc::ENOSPC)));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_full_disk_is_remembered_in_containerd_words() {
        use tokio::io::AsyncWriteExt;
        let report = |_: Progress| {};
        let mut out = Counting::new(FullDisk { room: 10 }, Progress::default(), &report);
        let err = rt().block_on(out.write_all(&[0u8; 100])).unwrap_err();
        assert_eq!(err.to_string(), "no space left on device");
        assert_eq!(
            out.failed.map(|e| e.to_string()).as_deref(),
            Some("no space left on device")
        );
        assert_eq!(out.written, 10);
    }

    fn key(name: &str) -> FlightKey {
        (name.to_string(), Credentials::Anonymous)
    }

    #[test]
    fn concurrent_pulls_of_one_image_share_the_first() {
        let inflight = InFlight::default();
        let Role::Lead(leader) = inflight.join(&key("a")) else {
            panic!("the first caller leads");
        };
        let Role::Follow(mut waiter) = inflight.join(&key("a")) else {
            panic!("the second caller waits");
        };
        // Other images and other credentials are pulls of their own.
        assert!(matches!(inflight.join(&key("b")), Role::Lead(_)));
        let basic = (
            "a".to_string(),
            Credentials::Basic {
                username: "u".into(),
                password: "p".into(),
            },
        );
        assert!(matches!(inflight.join(&basic), Role::Lead(_)));

        let heard = Mutex::new(Vec::new());
        let report = |p: Progress| heard.lock().unwrap().push(p);
        let outcome = rt().block_on(async {
            let waiting = follow(&mut waiter, &report);
            let leading = async {
                tokio::task::yield_now().await;
                leader.report(Progress { done: 5, total: 10 });
                tokio::task::yield_now().await;
                leader.finish(Err(Arc::new(StoreError::NotFound("a".into()))));
            };
            tokio::join!(waiting, leading).0
        });
        let err = outcome.expect("the leader's outcome").unwrap_err();
        assert!(matches!(*err, StoreError::NotFound(_)), "{err}");
        assert_eq!(
            heard.into_inner().unwrap(),
            vec![Progress { done: 5, total: 10 }]
        );
        // Finished: the next caller pulls anew.
        assert!(matches!(inflight.join(&key("a")), Role::Lead(_)));
    }

    #[test]
    fn an_abandoned_pull_lets_a_waiter_lead() {
        let inflight = InFlight::default();
        let leader = inflight.join(&key("a"));
        let Role::Follow(mut waiter) = inflight.join(&key("a")) else {
            panic!("the second caller waits");
        };
        drop(leader);
        let report = |_: Progress| {};
        assert!(rt().block_on(follow(&mut waiter, &report)).is_none());
        assert!(matches!(inflight.join(&key("a")), Role::Lead(_)));
    }
}
