//! The pod manager: watches the pods bound to this node and gives each its own worker
//! ([`super::worker`]). Pods found on disk that the API no longer has (deleted while the
//! agent was down) get a worker too, which stops and removes them. Containers that were
//! running when the agent restarted are simply observed again: their shims never stopped.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use informers::Lean;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::Api;
use tokio::sync::{mpsc, watch};

use super::context::NodeContext;
use super::worker;

struct Workers {
    ctx: Arc<NodeContext>,
    senders: HashMap<String, watch::Sender<Option<Arc<Pod>>>>,
    done_tx: mpsc::UnboundedSender<String>,
}

impl Workers {
    fn update(&mut self, uid: &str, pod: Option<Arc<Pod>>) {
        if let Some(tx) = self.senders.get(uid) {
            let _ = tx.send(pod);
            return;
        }
        // A pod that is gone and was never seen needs no worker unless something is on disk.
        if pod.is_none() && !self.ctx.layout.pod_dir(uid).exists() {
            return;
        }
        let (tx, rx) = watch::channel(pod);
        self.senders.insert(uid.to_string(), tx);
        let ctx = self.ctx.clone();
        let done = self.done_tx.clone();
        let uid = uid.to_string();
        tokio::spawn(async move {
            worker::run(ctx, uid.clone(), rx).await;
            let _ = done.send(uid);
        });
    }
}

/// Runs until the watch stream ends (never, normally).
pub async fn run(ctx: Arc<NodeContext>) {
    for dir in [ctx.layout.pods_root(), ctx.layout.logs_root()] {
        let _ = std::fs::create_dir_all(&dir);
        spread_subdirectories(&dir);
    }
    own_pods_mount(&ctx);
    import_images(&ctx).await;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut workers = Workers {
        ctx: ctx.clone(),
        senders: HashMap::new(),
        done_tx,
    };
    // Decoded without managedFields (`informers::Lean`): the agent never reads them, and a
    // pod's FieldsV1 trees were most of what each worker's copy of its pod held.
    let api: Api<Lean<Pod>> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node_name));
    let mut stream = watcher::watcher(api, config).boxed();
    // Uids seen during an initial listing, to find what disappeared meanwhile.
    let mut listing: Option<Vec<String>> = None;
    loop {
        tokio::select! {
            event = stream.next() => {
                let Some(event) = event else { return };
                match event {
                    Ok(Event::Init) => listing = Some(Vec::new()),
                    Ok(Event::InitApply(Lean(pod))) => {
                        let uid = pod.metadata.uid.clone().unwrap_or_default();
                        if let Some(l) = listing.as_mut() {
                            l.push(uid.clone());
                        }
                        workers.update(&uid, Some(Arc::new(pod)));
                    }
                    Ok(Event::InitDone) => {
                        let seen = listing.take().unwrap_or_default();
                        forget_missing(&mut workers, &seen);
                    }
                    Ok(Event::Apply(Lean(pod))) => {
                        let uid = pod.metadata.uid.clone().unwrap_or_default();
                        workers.update(&uid, Some(Arc::new(pod)));
                    }
                    Ok(Event::Delete(Lean(pod))) => {
                        let uid = pod.metadata.uid.clone().unwrap_or_default();
                        workers.update(&uid, None);
                    }
                    Err(e) => {
                        tracing::warn!("watching this node's pods: {e}");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
            Some(uid) = done_rx.recv() => {
                workers.senders.remove(&uid);
            }
        }
    }
}

/// Pods with a worker or a directory that the fresh listing did not contain.
fn forget_missing(workers: &mut Workers, seen: &[String]) {
    let mut known: Vec<String> = workers.senders.keys().cloned().collect();
    if let Ok(entries) = std::fs::read_dir(workers.ctx.layout.pods_root()) {
        known.extend(
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok()),
        );
    }
    known.sort();
    known.dedup();
    for uid in known {
        if !seen.contains(&uid) {
            workers.update(&uid, None);
        }
    }
}

/// Makes the pods directory a mount point of its own, so each container's shim can hide
/// the other pods' mounts from libcontainer in one call (`runtime::shim::HiddenMounts`).
/// When pods already run from an agent that did not do this, it waits for a `skiff
/// killall`: a bind over the directory now would cover their mounts.
fn own_pods_mount(ctx: &NodeContext) {
    let root = ctx.layout.pods_root();
    match runtime::sandbox::mounts::ensure_own_mount(&root) {
        Ok(true) => {}
        Ok(false) => tracing::info!(
            "{} has mounts but is not a mount point: pods' containers see every pod's mounts until `skiff killall`",
            root.display()
        ),
        Err(e) => tracing::warn!("making {} a mount point: {e}", root.display()),
    }
}

/// Asks ext2/3/4 to put each subdirectory of `dir` (a pod's directory, its logs) in a block
/// group of its own: the `T` attribute (`chattr +T`), meant for directories whose
/// subdirectories are unrelated, such as /home. Without it every pod's files go to the
/// group of the pods directory, where ext4 without a journal checks every recently freed
/// inode on each allocation, so pod starts got slower the more pods had come and gone
/// (BENCHMARKS.md, session 7). Other filesystems refuse or ignore the flag; nothing
/// depends on it.
fn spread_subdirectories(dir: &std::path::Path) {
    use std::os::fd::AsRawFd;
    const FS_TOPDIR_FL: libc::c_int = 0x0002_0000;
    let Ok(file) = std::fs::File::open(dir) else {
        return;
    };
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int (the kernel's size, whatever the name says)
    // through a pointer to a local; the descriptor is open for the call.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) } != 0
        || flags & FS_TOPDIR_FL != 0
    {
        return;
    }
    flags |= FS_TOPDIR_FL;
    // SAFETY: FS_IOC_SETFLAGS reads one int from a local; the descriptor is open.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) } != 0 {
        tracing::debug!(
            "{}: no top-directory attribute: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
}

/// Imports the tarballs placed in `<agent-dir>/images/` (air-gapped installs), once each:
/// an imported file is renamed with an `.imported` suffix.
async fn import_images(ctx: &NodeContext) {
    let dir = ctx.layout.images_to_import();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = path.to_string_lossy().to_string();
        if !path.is_file() || name.ends_with(".imported") || name.ends_with(".failed") {
            continue;
        }
        let store = ctx.images.clone();
        let p = path.clone();
        match tokio::task::spawn_blocking(move || store.import_tarball(&p)).await {
            Ok(Ok(images)) => {
                let refs: Vec<String> = images.iter().flat_map(|i| i.references.clone()).collect();
                tracing::info!("imported {} from {}", refs.join(", "), path.display());
                let _ = std::fs::rename(&path, format!("{name}.imported"));
            }
            Ok(Err(e)) => {
                tracing::error!("importing {}: {e}", path.display());
                let _ = std::fs::rename(&path, format!("{name}.failed"));
            }
            Err(e) => tracing::error!("import task: {e}"),
        }
    }
}
