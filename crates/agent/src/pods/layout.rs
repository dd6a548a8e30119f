//! Where a real node keeps its pods on disk. The directories are the truth about what runs
//! on the node: an agent that restarts reads them back (and re-adopts running containers
//! through their shim state), so nothing about a running pod lives only in memory.
//!
//! ```text
//! <agent-dir>/                                   (= <data-dir>/agent)
//!   pods/                                        a private bind mount of itself, ext4 `+T`
//!   pods/<pod-uid>/
//!     pod.json                                   namespace, name, uid (for cleanup and logs)
//!     netns                                      the pod's network namespace (bind mount)
//!     pod-ip                                     its address on the pod network
//!     etc-hosts  etc-hostname  resolv.conf       files mounted into every container
//!     volumes/<volume-name>/                     materialised volumes
//!     volume-subpaths/<volume>/<container>/<n>   subPath binds (kubelet's layout)
//!     containers/<container-name>/<attempt>/     attempt = restartCount (0, 1, ...)
//!       shim/                                    the shim's state directory
//!       rootfs/{upper,work,merged}               the container's overlayfs
//!       termination-log                          mounted at terminationMessagePath
//!   logs/<namespace>_<pod-name>_<pod-uid>/<container-name>/<attempt>.log   (CRI format)
//!   network/host.json                            the pod network's bridge and ranges
//!   network/ipam/<bridge>/<address>              one file per pod address (holds the uid)
//!   mount-points/                                the lowest layer of every container's
//!                                                rootfs: /proc, /sys, /dev, /etc/hosts, ...
//! ```
//!
//! The log tree is upstream's `/var/log/pods` layout under the agent's directory.

use std::path::{Path, PathBuf};

/// Paths under one agent's directory.
#[derive(Debug, Clone)]
pub struct Layout {
    agent_dir: PathBuf,
}

impl Layout {
    pub fn new(agent_dir: impl Into<PathBuf>) -> Layout {
        Layout {
            agent_dir: agent_dir.into(),
        }
    }

    pub fn agent_dir(&self) -> &Path {
        &self.agent_dir
    }

    pub fn pods_root(&self) -> PathBuf {
        self.agent_dir.join("pods")
    }

    pub fn image_store(&self) -> PathBuf {
        self.agent_dir.join("image-store")
    }

    /// Tarballs imported into the image store when the agent starts.
    pub fn images_to_import(&self) -> PathBuf {
        self.agent_dir.join("images")
    }

    /// The read-only layer under every image's layers (runtime::sandbox::overlay).
    pub fn mount_point_layer(&self) -> PathBuf {
        self.agent_dir.join("mount-points")
    }

    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.pods_root().join(uid)
    }

    pub fn pod_record(&self, uid: &str) -> PathBuf {
        self.pod_dir(uid).join("pod.json")
    }

    pub fn netns(&self, uid: &str) -> PathBuf {
        self.pod_dir(uid).join("netns")
    }

    pub fn volumes_dir(&self, uid: &str) -> PathBuf {
        self.pod_dir(uid).join("volumes")
    }

    pub fn container_dir(&self, uid: &str, container: &str) -> PathBuf {
        self.pod_dir(uid).join("containers").join(container)
    }

    pub fn attempt_dir(&self, uid: &str, container: &str, attempt: u32) -> PathBuf {
        self.container_dir(uid, container).join(attempt.to_string())
    }

    pub fn logs_root(&self) -> PathBuf {
        self.agent_dir.join("logs")
    }

    /// `<namespace>_<name>_<uid>`: upstream's name for a pod's log directory.
    pub fn pod_logs_dir(&self, namespace: &str, name: &str, uid: &str) -> PathBuf {
        self.logs_root().join(format!("{namespace}_{name}_{uid}"))
    }

    pub fn container_log(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        container: &str,
        attempt: u32,
    ) -> PathBuf {
        self.pod_logs_dir(namespace, name, uid)
            .join(container)
            .join(format!("{attempt}.log"))
    }
}

/// The files of one container attempt.
#[derive(Debug, Clone)]
pub struct AttemptPaths {
    pub dir: PathBuf,
}

impl AttemptPaths {
    pub fn shim_state(&self) -> PathBuf {
        self.dir.join("shim")
    }
    pub fn rootfs_upper(&self) -> PathBuf {
        self.dir.join("rootfs").join("upper")
    }
    pub fn rootfs_work(&self) -> PathBuf {
        self.dir.join("rootfs").join("work")
    }
    pub fn rootfs_merged(&self) -> PathBuf {
        self.dir.join("rootfs").join("merged")
    }
    pub fn termination_log(&self) -> PathBuf {
        self.dir.join("termination-log")
    }
}
