//! `kubectl logs` end to end without running containers: a Node made by hand whose kubelet
//! endpoint is an agent API started here over a log tree written here, pods bound to it,
//! and the real kubectl reading logs through the API server's proxy.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use agent::api::{AgentApi, ApiConfig, ServingCert};
use agent::pods::layout::Layout;
use testkit::TestServer;

const NODE: &str = "logs-node";

/// Starts the agent API on a free port in its own runtime; returns the port.
fn start_agent_api(s: &TestServer, layout: Layout) -> (u16, tokio::runtime::Runtime) {
    let ca = std::fs::read_to_string(s.data_dir().join("server/tls/server-ca.crt"))
        .expect("read the cluster CA");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let api = rt
        .block_on(AgentApi::bind(ApiConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            client_ca_pem: ca,
            serving: ServingCert::Generate {
                names: vec![NODE.into(), "127.0.0.1".into()],
            },
            layout,
        }))
        .expect("bind the agent API");
    let port = api.local_addr().expect("addr").port();
    rt.spawn(api.run(std::future::pending()));
    (port, rt)
}

fn register_node(s: &TestServer, port: u16) {
    s.kubectl_stdin_ok(
        &["create", "-f", "-"],
        &format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {NODE}\n"),
    );
    let status = format!(
        r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"127.0.0.1"}},{{"type":"Hostname","address":"{NODE}"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{port}}}}}}}}}"#
    );
    s.kubectl_ok(&[
        "patch",
        "node",
        NODE,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ]);
}

fn create_pod(s: &TestServer, name: &str, containers: &[&str]) -> String {
    let mut yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {NODE}\n  containers:\n"
    );
    for c in containers {
        yaml.push_str(&format!("  - name: {c}\n    image: busybox\n"));
    }
    s.kubectl_stdin_ok(&["create", "-f", "-"], &yaml);
    s.kubectl_ok(&["get", "pod", name, "-o", "jsonpath={.metadata.uid}"])
}

fn write_log(path: &Path, lines: &[&str]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open");
    for l in lines {
        writeln!(f, "{l}").expect("write");
    }
}

#[test]
fn kubectl_logs_reads_the_nodes_log_files() {
    let s = testkit::server!();
    let agent_dir = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(agent_dir.path());
    let (port, _rt) = start_agent_api(&s, layout.clone());
    register_node(&s, port);

    let uid = create_pod(&s, "web", &["app"]);
    write_log(
        &layout.container_log("default", "web", &uid, "app", 0),
        &["2026-01-01T00:00:00Z stdout F crashed once"],
    );
    let current = layout.container_log("default", "web", &uid, "app", 1);
    write_log(
        &current,
        &[
            "2026-01-01T00:00:01Z stdout F hello",
            "2026-01-01T00:00:02Z stderr P wor",
            "2026-01-01T00:00:02.5Z stderr F ld",
        ],
    );

    assert_eq!(s.kubectl_ok(&["logs", "web"]), "hello\nworld\n");
    assert_eq!(s.kubectl_ok(&["logs", "web", "--tail=1"]), "world\n");
    assert_eq!(
        s.kubectl_ok(&["logs", "web", "-c", "app", "--previous"]),
        "crashed once\n"
    );
    assert_eq!(
        s.kubectl_ok(&["logs", "web", "--timestamps"]),
        "2026-01-01T00:00:01.000000000Z hello\n2026-01-01T00:00:02.000000000Z world\n"
    );
    assert_eq!(s.kubectl_ok(&["logs", "web", "--limit-bytes=3"]), "hel");

    // Errors, worded as upstream.
    let err = s.kubectl_err(&["logs", "web", "-c", "nope"]);
    assert!(
        err.contains("container nope is not valid for pod web"),
        "{err}"
    );
    let err = s.kubectl_err(&["logs", "missing"]);
    assert!(err.contains("pods \"missing\" not found"), "{err}");

    let uid2 = create_pod(&s, "pair", &["one", "two"]);
    write_log(
        &layout.container_log("default", "pair", &uid2, "two", 0),
        &["2026-01-01T00:00:01Z stdout F from two"],
    );
    let err = s.kubectl_err(&["get", "--raw", "/api/v1/namespaces/default/pods/pair/log"]);
    assert!(
        err.contains("a container name must be specified for pod pair, choose one of: [one two]"),
        "{err}"
    );
    assert_eq!(s.kubectl_ok(&["logs", "pair", "-c", "two"]), "from two\n");
    let err = s.kubectl_err(&["logs", "pair", "-c", "two", "--previous"]);
    assert!(
        err.contains("previous terminated container \"two\" in pod \"pair\" not found"),
        "{err}"
    );

    // follow: appended lines arrive; a newer attempt ends the stream and kubectl exits.
    let mut follow = s.kubectl_spawn(&["logs", "-f", "web"]);
    follow
        .wait_for_line(Duration::from_secs(20), |l| l == "world")
        .expect("followed log");
    write_log(&current, &["2026-01-01T00:00:03Z stdout F appended"]);
    follow
        .wait_for_line(Duration::from_secs(20), |l| l == "appended")
        .expect("appended line");
    write_log(
        &layout.container_log("default", "web", &uid, "app", 2),
        &["2026-01-01T00:00:04Z stdout F restarted"],
    );
    let status = follow
        .wait_exit(Duration::from_secs(20))
        .expect("kubectl logs -f ends");
    assert!(status.success(), "{}", follow.stderr());
    assert_eq!(follow.lines(), vec!["hello", "world", "appended"]);
}
