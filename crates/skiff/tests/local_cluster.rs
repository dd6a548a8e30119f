//! `skiff local-cluster` as a user drives it (issue 5: k3d's job for skiff): a cluster with
//! two agents under a unique name, kubectl on the machine with the kubeconfig it wrote, a
//! Deployment spread over the three nodes whose pods reach each other across nodes, `list`,
//! and a `delete` that leaves no namespace, link, nftables table, process or file behind.
//! A guard deletes the cluster even when the test fails. Needs root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use testkit::node::TEST_IMAGE;

const BIN: &str = env!("CARGO_BIN_EXE_skiff");
const STATE_DIR: &str = "/var/lib/skiff/local-clusters";

fn skiff(args: &[&str]) -> Output {
    skiff_in(None, args)
}

/// `skiff <args>`, in network namespace `netns` if given.
fn skiff_in(netns: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    if let Some(ns) = netns {
        enter(&mut cmd, ns);
    }
    cmd.output().expect("run skiff local-cluster")
}

/// Makes `cmd` run in the network namespace `/run/netns/<netns>` (only the network).
fn enter(cmd: &mut Command, netns: &str) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let file = std::fs::File::open(Path::new("/run/netns").join(netns)).expect("open netns");
    // SAFETY: only setns(2) runs between fork and exec; the closure owns the file.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A cluster name no parallel run and no user's cluster has.
fn unique_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("t{}-{}{n}", std::process::id(), nanos % 100_000)
}

/// Deletes the cluster on drop unless the test already did.
struct Guard {
    name: String,
    deleted: bool,
    /// The namespace the cluster was made from (the egress test's stand-in machine).
    netns: Option<String>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.deleted {
            let out = skiff_in(
                self.netns.as_deref(),
                &["local-cluster", "delete", &self.name],
            );
            if !out.status.success() {
                eprintln!("cleanup: {}", text(&out));
            }
        }
    }
}

struct Kubectl {
    kubeconfig: PathBuf,
    netns: Option<String>,
}

impl Kubectl {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut cmd = Command::new("kubectl");
        if let Some(ns) = &self.netns {
            enter(&mut cmd, ns);
        }
        let mut child = cmd
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run kubectl");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("kubectl output")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<String>) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Names of processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

/// nft from /usr/sbin when PATH lacks it.
fn nft() -> String {
    if Path::new("/usr/sbin/nft").exists() {
        "/usr/sbin/nft".to_string()
    } else {
        "nft".to_string()
    }
}

fn command_stdout(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().expect(program);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_local_cluster_with_two_agents_runs_a_spread_deployment_and_deletes_cleanly() {
    let name = unique_name();
    let images = tempfile::tempdir().expect("tempdir");
    let tar = images.path().join("busybox.tar");
    testkit::images::TestImage::busybox()
        .expect("busybox test image")
        .write_oci_layout(&tar, TEST_IMAGE)
        .expect("write the test image");
    let mut guard = Guard {
        name: name.clone(),
        deleted: false,
        netns: None,
    };
    let tar_arg = tar.display().to_string();
    let out = skiff(&[
        "local-cluster",
        "create",
        &name,
        "--agents",
        "2",
        "--image",
        &tar_arg,
        // Names outside the cluster are forwarded nowhere (nothing leaves the machine).
        "--server-arg=--cluster-dns-upstream=127.0.0.1:9",
    ]);
    let said = text(&out);
    assert!(out.status.success(), "create: {said}");
    let dir = Path::new(STATE_DIR).join(&name);
    let kubeconfig = dir.join("kubeconfig.yaml");
    assert!(
        said.contains(&format!("export KUBECONFIG={}", kubeconfig.display())),
        "{said}"
    );
    let k = Kubectl {
        kubeconfig,
        netns: None,
    };
    assert_eq!(
        k.ok(&["config", "current-context"]).trim(),
        format!("skiff-{name}")
    );

    // Sorted: agent-1, agent-2, server.
    let nodes: Vec<String> = ["agent-1", "agent-2", "server"]
        .iter()
        .map(|n| format!("skiff-{name}-{n}"))
        .collect();
    let ready = k.ok(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
    ]);
    let mut got: Vec<&str> = ready.lines().collect();
    got.sort();
    let mut want: Vec<String> = nodes.iter().map(|n| format!("{n}=True")).collect();
    want.sort();
    assert_eq!(got, want, "{ready}");

    // Three replicas, at most one per node: one on each.
    let applied = k.run(
        &["apply", "-f", "-"],
        Some(&format!(
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
      topologySpreadConstraints:
      - {{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {{matchLabels: {{app: web}}}}}}
      containers:
      - name: httpd
        image: {TEST_IMAGE}
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
"#
        )),
    );
    assert!(applied.status.success(), "{}", text(&applied));
    let pods = wait_until("3 web pods Running", Duration::from_secs(120), || {
        let out = k.run(
            &[
                "get",
                "pods",
                "-l",
                "app=web",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.spec.nodeName} {.status.podIP}{\"\\n\"}{end}",
            ],
            None,
        );
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        let running = s
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("Running"))
            .count();
        (running == 3 && s.lines().count() == 3).then_some(s)
    });
    let rows: Vec<Vec<&str>> = pods
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let mut on: Vec<&str> = rows.iter().map(|r| r[2]).collect();
    on.sort();
    assert_eq!(on, nodes, "one replica per node: {pods}");

    // Every pod fetches every other pod's page by pod IP, across nodes. (No `-T`: busybox
    // 1.35's static wget crashes with a timeout.)
    for from in &rows {
        for to in &rows {
            let url = format!("http://{}:8080/", to[3]);
            let page = wait_until(
                &format!("{} to fetch {url}", from[0]),
                Duration::from_secs(30),
                || {
                    let out = k.run(
                        &["exec", from[0], "--", "wget", "-q", "-O", "-", &url],
                        None,
                    );
                    out.status
                        .success()
                        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
                },
            );
            assert_eq!(page, to[0], "from {} ({}) to {}", from[0], from[2], to[0]);
        }
    }

    let listed = skiff(&["local-cluster", "list"]);
    let listing = text(&listed);
    assert!(listed.status.success(), "{listing}");
    let row = listing
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .unwrap_or_else(|| panic!("{name} not listed:\n{listing}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[1..3], ["3", "running"], "{listing}");

    // What delete must remove, from the cluster's record.
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("cluster.json")).expect("cluster.json"),
    )
    .expect("cluster.json is JSON");
    let bridge = state["bridge"].as_str().expect("bridge").to_string();
    let pod_bridge = state["pod_bridge"]
        .as_str()
        .expect("pod_bridge")
        .to_string();
    let ports: Vec<String> = state["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["port"].as_str().expect("port").to_string())
        .collect();
    assert!(Path::new("/sys/class/net").join(&bridge).exists());
    assert!(!processes_mentioning(&dir.display().to_string()).is_empty());

    let deleted = skiff(&["local-cluster", "delete", &name]);
    assert!(deleted.status.success(), "delete: {}", text(&deleted));
    guard.deleted = true;

    let netns = command_stdout("ip", &["netns", "list"]);
    assert!(
        !netns.contains(&format!("skiff-{name}-")),
        "namespaces left: {netns}"
    );
    for link in std::iter::once(&bridge).chain(&ports) {
        assert!(
            !Path::new("/sys/class/net").join(link).exists(),
            "link {link} left"
        );
    }
    let tables = command_stdout(&nft(), &["list", "tables"]);
    assert!(
        !tables.contains(&pod_bridge),
        "nftables tables left: {tables}"
    );
    let left = processes_mentioning(&dir.display().to_string());
    assert!(left.is_empty(), "processes left: {left:?}");
    assert!(!dir.exists(), "{} left", dir.display());
    let listing = text(&skiff(&["local-cluster", "list"]));
    assert!(
        !listing.lines().any(|l| l.starts_with(&format!("{name} "))),
        "{listing}"
    );
}

#[test]
fn bad_names_and_unknown_clusters_are_refused_and_leave_nothing() {
    let out = skiff(&["local-cluster", "create", "Not_A_Name", "--agents", "0"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("invalid local cluster name \"Not_A_Name\""),
        "{}",
        text(&out)
    );
    assert!(!Path::new(STATE_DIR).join("Not_A_Name").exists());
    let name = unique_name();
    let out = skiff(&["local-cluster", "delete", &name]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("no local cluster \"{name}\"")),
        "{}",
        text(&out)
    );
}

/// A network namespace of the test's own (`ip netns`), deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run_ok("ip", &["netns", "add", &name]);
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().expect(program);
    assert!(out.status.success(), "{program} {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A child process killed (by PID) on drop.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `--egress`, end to end without anything leaving the real machine: the cluster is made
/// from an isolated network namespace standing in for the machine, linked by a veth only
/// to a second one standing in for the internet, where busybox httpd serves a page. A pod
/// fetches it, which needs the nodes' default route, forwarding and the masquerade (the
/// "internet" has no route back to the cluster's subnet).
#[test]
fn egress_lets_pods_reach_past_the_machine_through_its_masquerade() {
    let tag = std::process::id() % 100_000;
    let machine = Netns::new(format!("sklt-m{tag}"));
    let internet = Netns::new(format!("sklt-i{tag}"));
    let (m, i) = (machine.0.as_str(), internet.0.as_str());
    run_ok(
        "ip",
        &[
            "-n", m, "link", "add", "up0", "type", "veth", "peer", "name", "wan0", "netns", i,
        ],
    );
    for (ns, dev, addr) in [(m, "up0", "10.77.0.1/24"), (i, "wan0", "10.77.0.2/24")] {
        run_ok("ip", &["-n", ns, "addr", "add", addr, "dev", dev]);
        run_ok("ip", &["-n", ns, "link", "set", dev, "up"]);
        run_ok("ip", &["-n", ns, "link", "set", "lo", "up"]);
    }
    let www = tempfile::tempdir().expect("tempdir");
    std::fs::write(www.path().join("index.html"), "the outside\n").expect("page");
    let mut httpd = Command::new("busybox");
    httpd
        .args(["httpd", "-f", "-p", "8080", "-h"])
        .arg(www.path())
        .stdin(std::process::Stdio::null());
    enter(&mut httpd, i);
    let _httpd = Killed(httpd.spawn().expect("busybox httpd"));

    let name = unique_name();
    let images = tempfile::tempdir().expect("tempdir");
    let tar = images.path().join("busybox.tar");
    testkit::images::TestImage::busybox()
        .expect("busybox test image")
        .write_oci_layout(&tar, TEST_IMAGE)
        .expect("write the test image");
    let mut guard = Guard {
        name: name.clone(),
        deleted: false,
        netns: Some(m.to_string()),
    };
    let tar_arg = tar.display().to_string();
    let out = skiff_in(
        Some(m),
        &[
            "local-cluster",
            "create",
            &name,
            "--agents",
            "1",
            "--egress",
            "--image",
            &tar_arg,
            "--server-arg=--cluster-dns-upstream=127.0.0.1:9",
        ],
    );
    assert!(out.status.success(), "create: {}", text(&out));
    let dir = Path::new(STATE_DIR).join(&name);
    let k = Kubectl {
        kubeconfig: dir.join("kubeconfig.yaml"),
        netns: Some(m.to_string()),
    };
    let applied = k.run(
        &["apply", "-f", "-"],
        Some(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  nodeName: skiff-{name}-agent-1
  containers:
  - {{name: c, image: {TEST_IMAGE}, command: ["sleep", "3600"]}}
"#
        )),
    );
    assert!(applied.status.success(), "{}", text(&applied));
    wait_until("the client pod Running", Duration::from_secs(90), || {
        let phase = k.ok(&["get", "pod", "client", "-o", "jsonpath={.status.phase}"]);
        (phase == "Running").then_some(phase)
    });
    let page = wait_until("the outside page", Duration::from_secs(30), || {
        let out = k.run(
            &[
                "exec",
                "client",
                "--",
                "wget",
                "-q",
                "-O",
                "-",
                "http://10.77.0.2:8080/",
            ],
            None,
        );
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    });
    assert_eq!(page, "the outside");

    let nft_tables = || {
        let mut cmd = Command::new(nft());
        cmd.args(["list", "tables"]);
        enter(&mut cmd, m);
        String::from_utf8_lossy(&cmd.output().expect("nft").stdout).into_owned()
    };
    assert!(nft_tables().contains("-egress"), "{}", nft_tables());
    let deleted = skiff_in(Some(m), &["local-cluster", "delete", &name]);
    assert!(deleted.status.success(), "delete: {}", text(&deleted));
    guard.deleted = true;
    assert!(!nft_tables().contains("-egress"), "{}", nft_tables());
    assert!(!dir.exists());
}
