//! Real pods on a single-node `skiff server` (the embedded agent), driven with the real
//! kubectl and the busybox test image: what a user sees for running, finishing, crashing,
//! out-of-memory and unpullable containers, and that a deleted pod leaves nothing behind.
//! Needs root (namespaces, mounts, cgroups).

use std::time::{Duration, Instant};

use testkit::TestServer;

use testkit::node::{status_column, wait_for, TEST_IMAGE as IMAGE};

fn server_with_node() -> TestServer {
    testkit::node::server_with_node(std::path::Path::new(env!("CARGO_BIN_EXE_skiff")))
}

fn pod_json(s: &TestServer, pod: &str) -> serde_json::Value {
    s.kubectl_json(&["get", "pod", pod, "-o", "json"])
}

fn apply(s: &TestServer, yaml: &str) {
    s.kubectl_stdin_ok(&["apply", "-f", "-"], yaml);
}

#[test]
fn pods_run_finish_crash_and_are_cleaned_up() {
    let s = server_with_node();

    // Two containers of one pod share its network namespace: the second fetches the
    // first's page on localhost.
    apply(
        &s,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  containers:
  - name: httpd
    image: {IMAGE}
    command: ["sh", "-c", "mkdir -p /www && echo hello from skiff > /www/index.html && exec httpd -f -p 8080 -h /www"]
  - name: client
    image: {IMAGE}
    command: ["sh", "-c", "until wget -q -O /tmp/page http://127.0.0.1:8080/; do sleep 0.2; done; cat /tmp/page; exec sleep 3600"]
"#
        ),
    );
    wait_for(&s, Duration::from_secs(60), "web Running", || {
        status_column(&s, "web") == "Running"
    });
    let pod = pod_json(&s, "web");
    assert_eq!(pod["status"]["phase"], "Running");
    for c in pod["status"]["containerStatuses"].as_array().unwrap() {
        assert_eq!(c["ready"], true, "{c}");
        assert!(
            c["containerID"].as_str().unwrap().starts_with("skiff://"),
            "{c}"
        );
        assert_eq!(c["image"], "skiff.test/busybox:1");
    }
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let log = s
        .data_dir()
        .join(format!("agent/logs/default_web_{uid}/client/0.log"));
    wait_for(&s, Duration::from_secs(30), "the client's page", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("hello from skiff"))
    });
    // kubectl logs goes through the API server to the agent's API.
    assert_eq!(
        s.kubectl_ok(&["logs", "web", "-c", "client"]).trim(),
        "hello from skiff"
    );

    // A job-like pod completes.
    apply(
        &s,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: once}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: {IMAGE}
    command: ["sh", "-c", "echo done; sleep 1"]
"#
        ),
    );
    wait_for(&s, Duration::from_secs(60), "once Completed", || {
        status_column(&s, "once") == "Completed"
    });
    let pod = pod_json(&s, "once");
    assert_eq!(pod["status"]["phase"], "Succeeded");
    let term = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(term["exitCode"], 0);
    assert_eq!(term["reason"], "Completed");

    // A crashing container: Error, then CrashLoopBackOff with a growing restart count.
    apply(
        &s,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: crash}}
spec:
  containers:
  - name: main
    image: {IMAGE}
    command: ["sh", "-c", "echo failing; exit 3"]
"#
        ),
    );
    wait_for(
        &s,
        Duration::from_secs(60),
        "crash in CrashLoopBackOff",
        || status_column(&s, "crash") == "CrashLoopBackOff",
    );
    let pod = pod_json(&s, "crash");
    let c = &pod["status"]["containerStatuses"][0];
    assert!(c["restartCount"].as_i64().unwrap() >= 1, "{c}");
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 3);
    assert_eq!(c["lastState"]["terminated"]["reason"], "Error");
    assert!(c["state"]["waiting"]["message"]
        .as_str()
        .unwrap()
        .starts_with("back-off 10s restarting failed container=main pod=crash_default("));
    assert_eq!(
        s.kubectl_ok(&["logs", "crash", "--previous"]).trim(),
        "failing"
    );

    // A command that is not in the image.
    apply(
        &s,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: nocmd}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: {IMAGE}
    command: ["/no/such/binary"]
"#
        ),
    );
    wait_for(&s, Duration::from_secs(60), "nocmd StartError", || {
        status_column(&s, "nocmd") == "StartError"
    });
    let pod = pod_json(&s, "nocmd");
    assert_eq!(pod["status"]["phase"], "Failed");
    let term = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(term["exitCode"], 128);
    assert_eq!(
        term["message"],
        "failed to start container \"main\": exec: \"/no/such/binary\": executable file not found in $PATH"
    );

    // A memory hog is OOMKilled.
    apply(
        &s,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: hog}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: {IMAGE}
    command: ["sh", "-c", "x=0123456789; while true; do x=$x$x; done"]
    resources: {{limits: {{memory: 16Mi}}}}
"#
        ),
    );
    wait_for(&s, Duration::from_secs(60), "hog OOMKilled", || {
        status_column(&s, "hog") == "OOMKilled"
    });
    let pod = pod_json(&s, "hog");
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        137
    );

    // An image that cannot be pulled (a registry port on loopback where nothing listens).
    apply(
        &s,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: nopull}
spec:
  containers:
  - name: main
    image: 127.0.0.1:1/nothing/here:1
"#,
    );
    wait_for(
        &s,
        Duration::from_secs(60),
        "nopull ImagePullBackOff",
        || status_column(&s, "nopull") == "ImagePullBackOff",
    );
    let events = s.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=nopull",
    ]);
    assert!(
        events.contains("Failed to pull image \"127.0.0.1:1/nothing/here:1\""),
        "{events}"
    );
    assert!(events.contains("ErrImagePull"), "{events}");

    // Deleting a pod stops its containers within the grace period and leaves no mount,
    // process, cgroup or network namespace behind.
    let web_dir = s.data_dir().join(format!("agent/pods/{uid}"));
    let shim_pid: i32 = {
        let started = std::fs::read_to_string(web_dir.join("containers/httpd/0/shim/started.json"))
            .expect("started.json");
        let v: serde_json::Value = serde_json::from_str(&started).unwrap();
        v["pid"].as_i64().unwrap() as i32
    };
    s.kubectl_ok(&[
        "delete",
        "pod",
        "web",
        "--grace-period=5",
        "--wait=true",
        "--timeout=60s",
    ]);
    wait_for(&s, Duration::from_secs(30), "web's directory to go", || {
        !web_dir.exists()
    });
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(&uid),
        "a mount of the deleted pod remains:\n{mountinfo}"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{shim_pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{shim_pid}/cmdline"))
                .map(|c| !c.contains("httpd"))
                .unwrap_or(true),
        "the container's process survived its pod"
    );
    let cgroups = std::process::Command::new("sh")
        .args([
            "-c",
            &format!("find /sys/fs/cgroup -maxdepth 6 -name 'pod{uid}' 2>/dev/null"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&cgroups.stdout).trim(),
        "",
        "cgroups remain"
    );
}

#[test]
fn probes_restart_unhealthy_containers_and_gate_readiness() {
    let s = server_with_node();
    apply(
        &s,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: live}}
spec:
  containers:
  - name: web
    image: {IMAGE}
    command: ["sh", "-c", "mkdir -p /www && exec httpd -f -p 8080 -h /www"]
    livenessProbe:
      httpGet: {{path: /healthz, port: 8080}}
      periodSeconds: 1
      failureThreshold: 2
---
apiVersion: v1
kind: Pod
metadata: {{name: slow}}
spec:
  containers:
  - name: web
    image: {IMAGE}
    command: ["sh", "-c", "sleep 3; mkdir -p /www; exec httpd -f -p 8080 -h /www"]
    ports: [{{name: http, containerPort: 8080}}]
    readinessProbe:
      tcpSocket: {{port: http}}
      periodSeconds: 1
"#
        ),
    );
    // Readiness: running but not ready until the server listens.
    wait_for(&s, Duration::from_secs(60), "slow running", || {
        status_column(&s, "slow") == "Running"
    });
    let pod = pod_json(&s, "slow");
    let c = &pod["status"]["containerStatuses"][0];
    let started = Instant::now();
    if c["ready"] == false {
        assert_eq!(
            pod["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == "Ready")
                .unwrap()["status"],
            "False"
        );
    }
    wait_for(&s, Duration::from_secs(30), "slow ready", || {
        pod_json(&s, "slow")["status"]["containerStatuses"][0]["ready"] == true
    });
    assert!(started.elapsed() < Duration::from_secs(30));

    // Liveness: the missing /healthz page fails the probe; the container is restarted.
    wait_for(&s, Duration::from_secs(60), "live restarted", || {
        pod_json(&s, "live")["status"]["containerStatuses"][0]["restartCount"]
            .as_i64()
            .unwrap_or(0)
            >= 1
    });
    let events = s.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=live",
    ]);
    assert!(
        events.contains("Liveness probe failed: HTTP probe failed with statuscode: 404"),
        "{events}"
    );
    assert!(
        events.contains("Container web failed liveness probe, will be restarted"),
        "{events}"
    );
}

#[test]
fn a_deployment_heals_and_a_job_completes() {
    let s = server_with_node();
    apply(
        &s,
        &format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: {IMAGE}
        command: ["sh", "-c", "mkdir -p /www && exec httpd -f -p 8080 -h /www"]
"#
        ),
    );
    s.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    let pods = s.kubectl_json(&["get", "pods", "-l", "app=web", "-o", "json"]);
    let items = pods["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);

    // Kill one container's process from outside the cluster: the agent restarts it.
    let victim = items[0]["metadata"]["name"].as_str().unwrap().to_string();
    let uid = items[0]["metadata"]["uid"].as_str().unwrap();
    let started = std::fs::read_to_string(s.data_dir().join(format!(
        "agent/pods/{uid}/containers/web/0/shim/started.json"
    )))
    .expect("started.json");
    let pid = serde_json::from_str::<serde_json::Value>(&started).unwrap()["pid"]
        .as_i64()
        .unwrap();
    // SAFETY: kill(2) of the container process this test's server started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    wait_for(
        &s,
        Duration::from_secs(60),
        "the killed container to restart",
        || {
            let p = pod_json(&s, &victim);
            p["status"]["containerStatuses"][0]["restartCount"] == 1
                && p["status"]["containerStatuses"][0]["ready"] == true
        },
    );
    let last = &pod_json(&s, &victim)["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 137);

    // Delete a pod: the ReplicaSet replaces it.
    s.kubectl_ok(&["delete", "pod", &victim, "--wait=true", "--timeout=60s"]);
    s.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    wait_for(&s, Duration::from_secs(60), "3 running replicas", || {
        let out = s.kubectl_ok(&["get", "pods", "-l", "app=web", "--no-headers"]);
        out.lines().filter(|l| l.contains(" Running ")).count() == 3 && !out.contains(&victim)
    });

    // A Job completes and its pod shows Completed.
    s.kubectl_ok(&[
        "create",
        "job",
        "done",
        &format!("--image={IMAGE}"),
        "--",
        "sh",
        "-c",
        "echo done; sleep 2",
    ]);
    s.kubectl_ok(&[
        "wait",
        "--for=condition=complete",
        "job/done",
        "--timeout=90s",
    ]);
    let out = s.kubectl_ok(&["get", "pods", "-l", "job-name=done", "--no-headers"]);
    assert!(out.contains("Completed"), "{out}");
}

#[test]
fn running_pods_survive_an_agent_crash_and_dropped_images_are_imported() {
    let mut s = server_with_node();
    apply(
        &s,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: steady}}
spec:
  containers:
  - name: main
    image: {IMAGE}
    command: ["sleep", "3600"]
"#
        ),
    );
    wait_for(&s, Duration::from_secs(60), "steady Running", || {
        status_column(&s, "steady") == "Running"
    });
    let uid = pod_json(&s, "steady")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let started = s.data_dir().join(format!(
        "agent/pods/{uid}/containers/main/0/shim/started.json"
    ));
    let pid =
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&started).unwrap())
            .unwrap()["pid"]
            .as_i64()
            .unwrap();

    // An air-gapped image dropped where the agent looks at start.
    let dropped = s.data_dir().join("agent/images/dropped.tar");
    std::fs::create_dir_all(dropped.parent().unwrap()).unwrap();
    testkit::images::TestImage::busybox()
        .unwrap()
        .write_docker_archive(&dropped, "skiff.test/dropped:2")
        .unwrap();

    // The server and its agent crash (SIGKILL) and come back: the container kept running.
    s.restart().expect("restart the server");
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the container died with the agent"
    );
    wait_for(
        &s,
        Duration::from_secs(60),
        "the dropped image to be imported",
        || {
            s.data_dir()
                .join("agent/images/dropped.tar.imported")
                .exists()
        },
    );
    apply(
        &s,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: fromdrop}
spec:
  containers:
  - name: main
    image: skiff.test/dropped:2
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#,
    );
    wait_for(&s, Duration::from_secs(60), "fromdrop Running", || {
        status_column(&s, "fromdrop") == "Running"
    });
    let c = &pod_json(&s, "steady")["status"]["containerStatuses"][0];
    assert_eq!(c["restartCount"], 0, "{c}");
    assert_eq!(c["ready"], true, "{c}");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());

    // The re-adopted container is still the agent's to stop.
    s.kubectl_ok(&[
        "delete",
        "pod",
        "steady",
        "--grace-period=2",
        "--wait=true",
        "--timeout=60s",
    ]);
    wait_for(&s, Duration::from_secs(30), "the container to stop", || {
        std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .map(|c| !c.contains("sleep"))
            .unwrap_or(true)
    });
}

#[test]
fn a_second_agent_joined_with_the_token_runs_pods_too() {
    let s = server_with_node();
    let token = std::fs::read_to_string(s.data_dir().join("server/token")).unwrap();
    let slot = s
        .network()
        .expect("a server with an agent has a network slot");
    let second = tempfile::Builder::new()
        .prefix("skiff-second-agent-")
        .tempdir()
        .unwrap();
    let data = second.path().join("data");
    // The image goes into the second node's own store.
    testkit::node::import_test_image(
        std::path::Path::new(env!("CARGO_BIN_EXE_skiff")),
        &data,
        IMAGE,
    );
    let mut agent = testkit::Background::new(
        std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args([
                "agent",
                "--node-name",
                "second",
                "--node-ip",
                "127.0.0.1",
                "--server",
            ])
            .arg(s.url())
            .arg("--token")
            .arg(token.trim())
            .arg("--data-dir")
            .arg(&data)
            .arg("--kubelet-port")
            .arg(testkit::free_port().unwrap().to_string())
            // The server's ranges, and a bridge of its own beside the first node's.
            .arg("--cluster-cidr")
            .arg(slot.cluster_cidr())
            .arg("--service-cidr")
            .arg(slot.service_cidr())
            .arg("--pod-bridge")
            .arg(format!("{}b", slot.bridge()))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start skiff agent"),
    );
    // Whatever happens below, the second node's containers are removed at the end.
    struct Killall(std::path::PathBuf);
    impl Drop for Killall {
        fn drop(&mut self) {
            let _ = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
                .arg("killall")
                .arg("--data-dir")
                .arg(&self.0)
                .output();
        }
    }
    let _cleanup = Killall(data.clone());
    wait_for(&s, Duration::from_secs(60), "node second Ready", || {
        let out = s.kubectl(&[
            "get",
            "node",
            "second",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        String::from_utf8_lossy(&out.stdout).trim() == "True"
    });
    apply(
        &s,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: there}}
spec:
  nodeSelector: {{kubernetes.io/hostname: second}}
  containers:
  - name: main
    image: {IMAGE}
    command: ["sh", "-c", "echo on the second node; exec sleep 3600"]
"#
        ),
    );
    wait_for(&s, Duration::from_secs(60), "there Running", || {
        status_column(&s, "there") == "Running"
    });
    assert_eq!(pod_json(&s, "there")["spec"]["nodeName"], "second");
    wait_for(
        &s,
        Duration::from_secs(30),
        "its log via the second agent's API",
        || s.kubectl(&["logs", "there"]).stdout == b"on the second node\n",
    );
    s.kubectl_ok(&[
        "delete",
        "pod",
        "there",
        "--grace-period=1",
        "--wait=true",
        "--timeout=60s",
    ]);
    agent.kill();
}

#[test]
fn lifecycle_hooks_and_exec_probes_run_inside_the_container() {
    let s = server_with_node();
    let out_dir = tempfile::Builder::new()
        .prefix("skiff-hooks-")
        .tempdir()
        .unwrap();
    apply(
        &s,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: hooked}}
spec:
  terminationGracePeriodSeconds: 10
  volumes:
  - name: out
    hostPath: {{path: {out}, type: Directory}}
  containers:
  - name: main
    image: {IMAGE}
    command: ["sh", "-c", "while [ ! -f /tmp/hook ]; do sleep 0.1; done; echo saw $(cat /tmp/hook); touch /tmp/ready; exec sleep 3600"]
    volumeMounts: [{{name: out, mountPath: /out}}]
    lifecycle:
      postStart:
        exec: {{command: ["sh", "-c", "echo poststart > /tmp/hook"]}}
      preStop:
        exec: {{command: ["sh", "-c", "echo prestop > /out/prestop"]}}
    readinessProbe:
      exec: {{command: ["cat", "/tmp/ready"]}}
      periodSeconds: 1
"#,
            out = out_dir.path().display()
        ),
    );
    wait_for(&s, Duration::from_secs(60), "hooked ready", || {
        pod_json(&s, "hooked")["status"]["containerStatuses"][0]["ready"] == true
    });
    assert_eq!(s.kubectl_ok(&["logs", "hooked"]).trim(), "saw poststart");
    s.kubectl_ok(&["delete", "pod", "hooked", "--wait=true", "--timeout=60s"]);
    assert_eq!(
        std::fs::read_to_string(out_dir.path().join("prestop")).unwrap_or_default(),
        "prestop\n",
        "the preStop hook ran before the container stopped"
    );
}
