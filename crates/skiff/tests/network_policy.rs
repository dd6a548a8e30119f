//! NetworkPolicy enforcement by the node agent (table `ip <bridge>-policy`), driven with the
//! real kubectl and busybox pods as a user would check it: `wget` from client pods to
//! httpd pods in other namespaces, by pod IP and by ClusterIP, while policies are created
//! and deleted. Ingress (default deny, podSelector, namespaceSelector, named ports),
//! egress (default deny, ipBlock with except), and a source pod on another node. Needs
//! root.

use std::path::Path;
use std::time::Duration;

use testkit::node::{wait_for, TEST_IMAGE};
use testkit::TestServer;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_skiff"))
}

/// A namespace with labels.
fn namespace(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {{{labels}}}}}\n---\n"
    )
}

/// An httpd pod answering its name on 8080 (container port `http`) and on 8081 (unnamed).
fn web_pod(ns: &str, name: &str, labels: &str, node: Option<&str>) -> String {
    let selector = node
        .map(|n| format!("  nodeSelector: {{kubernetes.io/hostname: {n}}}\n"))
        .unwrap_or_default();
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}
spec:
  terminationGracePeriodSeconds: 1
{selector}  containers:
  - name: httpd
    image: {TEST_IMAGE}
    command: ["sh", "-c", "mkdir -p /www && echo {name} > /www/index.html && httpd -p 8081 -h /www && exec httpd -f -p 8080 -h /www"]
    ports: [{{name: http, containerPort: 8080}}]
---
"#
    )
}

/// A client pod that only sleeps.
fn client_pod(ns: &str, name: &str, labels: &str, node: Option<&str>) -> String {
    let selector = node
        .map(|n| format!("  nodeSelector: {{kubernetes.io/hostname: {n}}}\n"))
        .unwrap_or_default();
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}
spec:
  terminationGracePeriodSeconds: 1
{selector}  containers:
  - name: c
    image: {TEST_IMAGE}
    command: ["sleep", "3600"]
---
"#
    )
}

fn wait_running(s: &TestServer, pods: &[(&str, &str)]) {
    for (ns, pod) in pods {
        wait_for(
            s,
            Duration::from_secs(90),
            &format!("{ns}/{pod} Running"),
            || {
                let out = s.kubectl(&["get", "pod", "-n", ns, pod, "--no-headers"]);
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                text.split_whitespace().nth(2) == Some("Running") && !pod_ip(s, ns, pod).is_empty()
            },
        );
    }
}

fn pod_ip(s: &TestServer, ns: &str, pod: &str) -> String {
    let out = s.kubectl(&[
        "get",
        "pod",
        "-n",
        ns,
        pod,
        "-o",
        "jsonpath={.status.podIP}",
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One `wget` from `ns/pod` to `url`: the page, or None when the connection failed.
/// (busybox's static wget crashes with `-T`, hence timeout(1).)
fn fetch(s: &TestServer, ns: &str, pod: &str, url: &str) -> Option<String> {
    let script = format!("timeout 3 wget -q -O - {url}");
    let out = s.kubectl(&["exec", "-n", ns, pod, "--", "sh", "-c", &script]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Waits until `ns/pod` can (or cannot) fetch `url`: policies take effect asynchronously.
fn wait_reach(s: &TestServer, ns: &str, pod: &str, url: &str, reachable: bool) {
    let what = format!(
        "{ns}/{pod} {} {url}",
        if reachable {
            "to reach"
        } else {
            "to be blocked from"
        }
    );
    wait_for(s, Duration::from_secs(30), &what, || {
        fetch(s, ns, pod, url).is_some() == reachable
    });
}

fn apply(s: &TestServer, yaml: &str) {
    s.kubectl_stdin_ok(&["apply", "-f", "-"], yaml);
}

fn cluster_ip(s: &TestServer, ns: &str, svc: &str) -> String {
    s.kubectl_ok(&[
        "get",
        "service",
        "-n",
        ns,
        svc,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])
}

fn nft_table(s: &TestServer) -> String {
    let bridge = s.network().expect("network slot").bridge();
    let out = std::process::Command::new("/usr/sbin/nft")
        .args(["list", "table", "ip", &format!("{bridge}-policy")])
        .output()
        .expect("run nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ingress_policies_block_and_allow_by_pod_ip_cluster_ip_labels_namespaces_and_named_ports() {
    let mut s = testkit::node::server_with_node(bin());
    let mut yaml = namespace("srv", "team: srv") + &namespace("cli", "team: cli");
    yaml += &web_pod("srv", "web", "app: web", None);
    yaml += &web_pod("default", "other-web", "app: web", None);
    yaml += &client_pod("cli", "client", "role: client", None);
    yaml += &client_pod("srv", "friend", "role: client", None);
    yaml += &client_pod("srv", "plain", "", None);
    yaml += "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: srv}\nspec:\n  selector: {app: web}\n  ports: [{port: 80, targetPort: http}]\n";
    apply(&s, &yaml);
    let pods = [
        ("srv", "web"),
        ("default", "other-web"),
        ("cli", "client"),
        ("srv", "friend"),
        ("srv", "plain"),
    ];
    wait_running(&s, &pods);
    let web = format!("http://{}:8080/", pod_ip(&s, "srv", "web"));
    let web_8081 = format!("http://{}:8081/", pod_ip(&s, "srv", "web"));
    let service = format!("http://{}:80/", cluster_ip(&s, "srv", "web"));
    let other = format!("http://{}:8080/", pod_ip(&s, "default", "other-web"));
    for url in [&web, &web_8081, &service, &other] {
        wait_reach(&s, "cli", "client", url, true);
    }
    assert_eq!(fetch(&s, "cli", "client", &service).as_deref(), Some("web"));

    // (1) Default deny in srv: web is cut off by pod IP and by ClusterIP; default's pod
    // is not; a pod still reaches itself.
    apply(
        &s,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: default-deny-ingress, namespace: srv}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n",
    );
    wait_reach(&s, "cli", "client", &web, false);
    wait_reach(&s, "cli", "client", &service, false);
    assert!(fetch(&s, "cli", "client", &web).is_none(), "still blocked");
    assert!(
        fetch(&s, "srv", "friend", &web).is_none(),
        "same namespace blocked too"
    );
    assert_eq!(
        fetch(&s, "cli", "client", &other).as_deref(),
        Some("other-web")
    );
    assert_eq!(
        fetch(&s, "srv", "web", &web).as_deref(),
        Some("web"),
        "a pod reaches itself"
    );
    let table = nft_table(&s);
    assert!(table.contains("ingress-isolated"), "{table}");
    s.kubectl_ok(&[
        "delete",
        "networkpolicy",
        "-n",
        "srv",
        "default-deny-ingress",
    ]);
    wait_reach(&s, "cli", "client", &web, true);
    wait_reach(&s, "cli", "client", &service, true);

    // (2) Only pods labelled role=client in srv (podSelector), then also every pod of
    // namespaces labelled team=cli (namespaceSelector).
    apply(
        &s,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: from-clients, namespace: srv}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {role: client}}}]\n",
    );
    wait_reach(&s, "srv", "plain", &web, false);
    wait_reach(&s, "srv", "friend", &web, true);
    wait_reach(&s, "cli", "client", &web, false);
    assert!(
        fetch(&s, "cli", "client", &service).is_none(),
        "the ClusterIP is judged like the pod"
    );
    assert_eq!(fetch(&s, "srv", "friend", &service).as_deref(), Some("web"));
    // Labelling a pod lets it in: only set elements change.
    s.kubectl_ok(&["label", "pod", "-n", "srv", "plain", "role=client"]);
    wait_reach(&s, "srv", "plain", &web, true);
    s.kubectl_ok(&["label", "pod", "-n", "srv", "plain", "role-"]);
    wait_reach(&s, "srv", "plain", &web, false);
    apply(
        &s,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: from-cli, namespace: srv}\nspec:\n  podSelector: {}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {team: cli}}}]\n",
    );
    wait_reach(&s, "cli", "client", &web, true);
    assert!(
        fetch(&s, "srv", "plain", &web).is_none(),
        "srv is not team=cli"
    );
    s.kubectl_ok(&["label", "namespace", "cli", "team=other", "--overwrite"]);
    wait_reach(&s, "cli", "client", &web, false);
    s.kubectl_ok(&[
        "delete",
        "networkpolicy",
        "-n",
        "srv",
        "from-clients",
        "from-cli",
    ]);
    wait_reach(&s, "srv", "plain", &web, true);

    // (4) A named port: only the container port called http (8080), from anywhere.
    apply(
        &s,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: http-only, namespace: srv}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - ports: [{port: http}]\n",
    );
    wait_reach(&s, "cli", "client", &web_8081, false);
    assert_eq!(fetch(&s, "cli", "client", &web).as_deref(), Some("web"));
    assert_eq!(fetch(&s, "cli", "client", &service).as_deref(), Some("web"));
    s.kubectl_ok(&["delete", "networkpolicy", "-n", "srv", "http-only"]);
    wait_reach(&s, "cli", "client", &web_8081, true);

    assert!(
        !s.log().contains("programming nftables failed"),
        "every batch applied\n{}",
        s.log_tail(40)
    );
    // The table outlives the agent (its pods keep running); `skiff killall` removes it.
    s.stop(Duration::from_secs(30)).expect("stop the server");
    assert!(
        nft_table(&s).contains("ingress-isolated"),
        "kept after a stop"
    );
    s.killall();
    assert_eq!(nft_table(&s), "", "the policy table is gone");
}

#[test]
fn egress_policies_block_outgoing_connections_and_ip_blocks_allow_with_except() {
    let s = testkit::node::server_with_node(bin());
    let cluster_cidr = s.network().expect("network slot").cluster_cidr();
    let mut yaml = namespace("srv", "team: srv") + &namespace("cli", "team: cli");
    yaml += &web_pod("srv", "web", "app: web", None);
    yaml += &web_pod("srv", "web2", "app: web", None);
    yaml += &client_pod("cli", "client", "role: client", None);
    yaml += &client_pod("cli", "other", "", None);
    apply(&s, &yaml);
    wait_running(
        &s,
        &[
            ("srv", "web"),
            ("srv", "web2"),
            ("cli", "client"),
            ("cli", "other"),
        ],
    );
    let web_ip = pod_ip(&s, "srv", "web");
    let web = format!("http://{web_ip}:8080/");
    let web2 = format!("http://{}:8080/", pod_ip(&s, "srv", "web2"));
    wait_reach(&s, "cli", "client", &web, true);
    wait_reach(&s, "cli", "client", &web2, true);

    // (3) Egress deny for role=client: the client's connections fail, the other pod's not.
    apply(
        &s,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-egress, namespace: cli}\nspec:\n  podSelector: {matchLabels: {role: client}}\n  policyTypes: [Egress]\n",
    );
    wait_reach(&s, "cli", "client", &web, false);
    assert!(fetch(&s, "cli", "client", &web2).is_none());
    assert!(
        fetch(&s, "cli", "other", &web).is_some(),
        "pods not selected are untouched"
    );
    let table = nft_table(&s);
    assert!(table.contains("egress-isolated"), "{table}");

    // Allow the cluster range except web's address: web2 is reachable, web is not.
    apply(
        &s,
        &format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: allow-pods, namespace: cli}}\nspec:\n  podSelector: {{matchLabels: {{role: client}}}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{{ipBlock: {{cidr: {cluster_cidr}, except: [{web_ip}/32]}}}}]\n"
        ),
    );
    wait_reach(&s, "cli", "client", &web2, true);
    assert!(
        fetch(&s, "cli", "client", &web).is_none(),
        "the except address stays blocked"
    );

    // Removing both restores everything.
    s.kubectl_ok(&[
        "delete",
        "networkpolicy",
        "-n",
        "cli",
        "deny-egress",
        "allow-pods",
    ]);
    wait_reach(&s, "cli", "client", &web, true);
    assert!(
        !s.log().contains("programming nftables failed"),
        "every batch applied\n{}",
        s.log_tail(40)
    );
}

/// The source pod on another node: its own address arrives (routes, no NAT), so the
/// policy on the destination's node tells labelled and unlabelled clients apart.
#[test]
fn a_policy_judges_clients_on_another_node_by_their_labels() {
    let c = testkit::cluster::TestCluster::start(bin(), 1).expect("2-node cluster");
    let s = &c.server;
    let mut yaml = web_pod("default", "web", "app: web", Some("agent1"));
    yaml += &client_pod("default", "client", "role: client", Some("server"));
    yaml += &client_pod("default", "plain", "", Some("server"));
    apply(s, &yaml);
    wait_running(
        s,
        &[
            ("default", "web"),
            ("default", "client"),
            ("default", "plain"),
        ],
    );
    let web = format!("http://{}:8080/", pod_ip(s, "default", "web"));
    wait_reach(s, "default", "plain", &web, true);
    wait_reach(s, "default", "client", &web, true);
    apply(
        s,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: from-clients}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {role: client}}}]\n",
    );
    wait_reach(s, "default", "plain", &web, false);
    assert_eq!(fetch(s, "default", "client", &web).as_deref(), Some("web"));
    s.kubectl_ok(&["delete", "networkpolicy", "from-clients"]);
    wait_reach(s, "default", "plain", &web, true);
}
