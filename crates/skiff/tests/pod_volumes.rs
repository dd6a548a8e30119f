//! Volumes of real pods on a single-node `skiff server` (the embedded agent), with the real
//! kubectl and the busybox test image: ConfigMaps and Secrets as environment and as files
//! (items, modes, fsGroup, read-only), an emptyDir shared by two containers, a ConfigMap update
//! reaching a running container, FailedMount for a hostPath of the wrong type and for a
//! missing ConfigMap (the pod starts once it exists), and a local-path claim that outlives
//! the pod that wrote it. Needs root (namespaces, mounts, cgroups).

use std::time::Duration;

use testkit::TestServer;

use testkit::node::{status_column, wait_for, TEST_IMAGE as IMAGE};

fn server_with_node() -> TestServer {
    testkit::node::server_with_node(std::path::Path::new(env!("CARGO_BIN_EXE_skiff")))
}

fn apply(s: &TestServer, yaml: &str) {
    s.kubectl_stdin_ok(&["apply", "-f", "-"], yaml);
}

/// The current log of a container (CRI format lines), empty until it exists.
fn container_log(s: &TestServer, pod: &str, container: &str) -> String {
    let uid = s.kubectl(&["get", "pod", pod, "-o", "jsonpath={.metadata.uid}"]);
    let uid = String::from_utf8_lossy(&uid.stdout).trim().to_string();
    if uid.is_empty() {
        return String::new();
    }
    let path = s
        .data_dir()
        .join(format!("agent/logs/default_{pod}_{uid}/{container}/0.log"));
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The log's lines without the CRI prefix (`<time> stdout F `).
fn log_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or("").to_string())
        .collect()
}

/// The messages of the pod's events with this reason (core/v1 `message`).
fn event_messages(s: &TestServer, pod: &str, reason: &str) -> Vec<String> {
    let list = s.kubectl_json(&["get", "events", "-o", "json"]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["name"] == pod && e["reason"] == reason)
        .filter_map(|e| e["message"].as_str().map(String::from))
        .collect()
}

/// The API server's count of requests with this verb on this resource, over all codes
/// (`apiserver_request_total` in `/metrics`).
fn requests(s: &TestServer, verb: &str, resource: &str) -> u64 {
    let text = s.kubectl_ok(&["get", "--raw", "/metrics"]);
    let prefix = format!("apiserver_request_total{{verb=\"{verb}\",resource=\"{resource}\",");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn config_maps_secrets_and_empty_dirs_reach_containers() {
    let s = server_with_node();
    apply(
        &s,
        &format!(
            r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: cfg}}
data: {{greeting: hello, color: blue}}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds}}
stringData: {{user: admin, password: s3cret}}
---
apiVersion: v1
kind: Pod
metadata: {{name: vols}}
spec:
  securityContext: {{fsGroup: 2000}}
  volumes:
  - name: cfg
    configMap:
      name: cfg
      items: [{{key: greeting, path: sub/greet.txt, mode: 384}}]
  - name: whole
    configMap: {{name: cfg}}
  - name: creds
    secret: {{secretName: creds, defaultMode: 256}}
  - name: shared
    emptyDir: {{}}
  containers:
  - name: writer
    image: {IMAGE}
    env:
    - name: GREETING
      valueFrom: {{configMapKeyRef: {{name: cfg, key: greeting}}}}
    envFrom:
    - secretRef: {{name: creds}}
    volumeMounts:
    - {{name: cfg, mountPath: /etc/cfg}}
    - {{name: creds, mountPath: /etc/creds}}
    - {{name: shared, mountPath: /shared}}
    - {{name: whole, mountPath: /etc/one-key, subPath: greeting}}
    command:
    - sh
    - -c
    - |
      echo "env GREETING=$GREETING user=$user password=$password"
      echo "greet=$(cat /etc/cfg/sub/greet.txt)"
      echo "greet-mode=$(busybox stat -L -c %a /etc/cfg/sub/greet.txt)"
      echo "secret=$(cat /etc/creds/password) secret-mode=$(busybox stat -L -c %a /etc/creds/user) group=$(busybox stat -L -c %g /etc/creds/user)"
      echo "subpath=$(cat /etc/one-key)"
      busybox touch /etc/cfg/x 2>/dev/null || echo cfg-read-only
      echo shared-data > /shared/f
      exec sleep 3600
  - name: reader
    image: {IMAGE}
    volumeMounts:
    - {{name: shared, mountPath: /data}}
    - {{name: whole, mountPath: /etc/whole}}
    command:
    - sh
    - -c
    - |
      until [ -f /data/f ]; do sleep 0.2; done
      echo "shared=$(cat /data/f) mode=$(busybox stat -c %a /data)"
      while true; do echo "color=$(cat /etc/whole/color)"; sleep 1; done
"#
        ),
    );
    wait_for(&s, Duration::from_secs(90), "vols Running", || {
        status_column(&s, "vols") == "Running"
    });
    // The reader reports once the writer has written the shared file, its last step.
    wait_for(&s, Duration::from_secs(30), "the reader's report", || {
        log_lines(&container_log(&s, "vols", "reader"))
            .iter()
            .any(|l| l.starts_with("shared="))
    });
    let writer = log_lines(&container_log(&s, "vols", "writer"));
    for want in [
        "env GREETING=hello user=admin password=s3cret",
        "greet=hello",
        // Item mode 0600 and defaultMode 0400, widened by fsGroup to group read (upstream).
        "greet-mode=640",
        "secret=s3cret secret-mode=440 group=2000",
        "subpath=hello",
        "cfg-read-only",
    ] {
        assert!(
            writer.iter().any(|l| l == want),
            "{want:?} not in {writer:#?}"
        );
    }
    wait_for(&s, Duration::from_secs(30), "the reader's report", || {
        log_lines(&container_log(&s, "vols", "reader"))
            .iter()
            .any(|l| l == "shared=shared-data mode=2777")
    });
    assert!(log_lines(&container_log(&s, "vols", "reader"))
        .iter()
        .any(|l| l == "color=blue"));

    // An update of the ConfigMap reaches the running container's files.
    s.kubectl_ok(&[
        "patch",
        "configmap",
        "cfg",
        "--type=merge",
        "-p",
        r#"{"data":{"color":"green"}}"#,
    ]);
    // From here on the agent keeps the pod's ConfigMaps and Secrets from watches, as
    // kubelet's default strategy does: its periodic volume refresh asks the API nothing
    // (`kubectl patch` above made a GET of its own).
    let quiet_since = std::time::Instant::now();
    let gets_before = [
        requests(&s, "GET", "configmaps"),
        requests(&s, "GET", "secrets"),
    ];
    assert!(requests(&s, "WATCH", "configmaps") >= 1);
    wait_for(&s, Duration::from_secs(90), "the updated color", || {
        log_lines(&container_log(&s, "vols", "reader"))
            .iter()
            .any(|l| l == "color=green")
    });
    // Past one volume refresh period (20 s) with no new pods: no GETs.
    std::thread::sleep(Duration::from_secs(25).saturating_sub(quiet_since.elapsed()));
    let gets_after = [
        requests(&s, "GET", "configmaps"),
        requests(&s, "GET", "secrets"),
    ];
    assert_eq!(
        gets_after, gets_before,
        "GETs of configmaps and secrets while one pod refreshed its volumes"
    );

    // A hostPath of the wrong type: FailedMount, and the pod stays ContainerCreating.
    let file = s.data_dir().join("not-a-dir");
    std::fs::write(&file, "x").expect("write the host file");
    apply(
        &s,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: badhost}}
spec:
  volumes:
  - name: h
    hostPath: {{path: {}, type: Directory}}
  containers:
  - name: main
    image: {IMAGE}
    command: ["sleep", "3600"]
    volumeMounts: [{{name: h, mountPath: /h}}]
"#,
            file.display()
        ),
    );
    let want = format!(
        "MountVolume.SetUp failed for volume \"h\" : hostPath type check failed: {} is not a directory",
        file.display()
    );
    wait_for(
        &s,
        Duration::from_secs(60),
        "FailedMount for badhost",
        || event_messages(&s, "badhost", "FailedMount").contains(&want),
    );
    assert_eq!(status_column(&s, "badhost"), "ContainerCreating");

    // A missing ConfigMap: FailedMount until it is created, then the pod starts.
    apply(
        &s,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: late}}
spec:
  volumes:
  - name: cfg
    configMap: {{name: later}}
  containers:
  - name: main
    image: {IMAGE}
    command: ["sh", "-c", "cat /etc/later/k; echo; exec sleep 3600"]
    volumeMounts: [{{name: cfg, mountPath: /etc/later}}]
"#
        ),
    );
    wait_for(&s, Duration::from_secs(60), "FailedMount for late", || {
        event_messages(&s, "late", "FailedMount").iter().any(|m| {
            m == "MountVolume.SetUp failed for volume \"cfg\" : configmap \"later\" not found"
        })
    });
    assert_eq!(status_column(&s, "late"), "ContainerCreating");
    apply(
        &s,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: later}\ndata: {k: arrived}\n",
    );
    wait_for(&s, Duration::from_secs(60), "late Running", || {
        status_column(&s, "late") == "Running"
    });
    wait_for(&s, Duration::from_secs(30), "late's file", || {
        log_lines(&container_log(&s, "late", "main"))
            .iter()
            .any(|l| l == "arrived")
    });

    // Deleting the pods leaves the host file, and nothing mounted under the agent once
    // the node has removed them.
    s.kubectl_ok(&[
        "delete",
        "pod",
        "vols",
        "badhost",
        "late",
        "--grace-period=1",
        "--wait=true",
        "--timeout=60s",
    ]);
    assert_eq!(std::fs::read_to_string(&file).expect("host file kept"), "x");
    let agent_pods = s.data_dir().join("agent/pods");
    wait_for(
        &s,
        Duration::from_secs(30),
        "no mounts left under the agent's pods",
        || {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            // The pods directory itself is a mount of its own (see the agent's manager).
            !mountinfo.contains(&format!("{}/", agent_pods.display()))
        },
    );
}

#[test]
fn local_path_claims_outlive_their_pods() {
    let s = server_with_node();
    apply(
        &s,
        &format!(
            r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 1Gi}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: first}}
spec:
  restartPolicy: Never
  volumes:
  - name: d
    persistentVolumeClaim: {{claimName: data}}
  containers:
  - name: main
    image: {IMAGE}
    command: ["sh", "-c", "echo persisted > /data/file"]
    volumeMounts: [{{name: d, mountPath: /data}}]
"#
        ),
    );
    wait_for(&s, Duration::from_secs(90), "first Completed", || {
        status_column(&s, "first") == "Completed"
    });
    s.kubectl_ok(&["delete", "pod", "first", "--wait=true", "--timeout=60s"]);
    apply(
        &s,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: second}}
spec:
  restartPolicy: Never
  volumes:
  - name: d
    persistentVolumeClaim: {{claimName: data}}
  containers:
  - name: main
    image: {IMAGE}
    command: ["cat", "/data/file"]
    volumeMounts: [{{name: d, mountPath: /data}}]
"#
        ),
    );
    wait_for(&s, Duration::from_secs(90), "second Completed", || {
        status_column(&s, "second") == "Completed"
    });
    let lines = log_lines(&container_log(&s, "second", "main"));
    assert!(lines.iter().any(|l| l == "persisted"), "{lines:#?}");
    let pv = s.kubectl_ok(&["get", "pvc", "data", "-o", "jsonpath={.spec.volumeName}"]);
    let path = s.kubectl_ok(&[
        "get",
        "pv",
        pv.trim(),
        "-o",
        "jsonpath={.spec.hostPath.path}",
    ]);
    assert_eq!(
        std::fs::read_to_string(std::path::Path::new(path.trim()).join("file"))
            .expect("file on the node"),
        "persisted\n"
    );
}
