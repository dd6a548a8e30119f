//! A 3-node cluster on one machine (issue 5's setting): a server with its agent and two
//! joined agents, each on its own test host (network namespace) on a test LAN. Nodes get
//! distinct pod ranges, pods spread over them, kubectl reaches pods on every node, and pods
//! reach pods on other nodes by pod IP without NAT (host-gw routes).
//! Needs root.

use std::collections::BTreeSet;
use std::time::Duration;

use testkit::cluster::TestCluster;
use testkit::node::{curl, fetch, wait_for, TEST_IMAGE};

fn cluster() -> TestCluster {
    TestCluster::start(std::path::Path::new(env!("CARGO_BIN_EXE_skiff")), 2)
        .expect("3-node cluster")
}

#[test]
fn three_nodes_get_pod_ranges_and_run_pods_that_kubectl_reaches() {
    let c = cluster();
    let s = &c.server;
    let out = s.kubectl_ok(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.spec.podCIDR}{\"\\n\"}{end}",
    ]);
    let cidrs: BTreeSet<&str> = out
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(_, c)| c)
        .collect();
    assert_eq!(cidrs.len(), 3, "three distinct podCIDRs: {out}");
    // The server's node has k3s's roles; agents have none.
    let roles = testkit::Table::parse(&s.kubectl_ok(&["get", "nodes"]));
    assert_eq!(
        roles.get("server", "ROLES").as_deref(),
        Some("control-plane,master")
    );
    assert_eq!(roles.get("agent1", "ROLES").as_deref(), Some("<none>"));

    // One pod per node, pinned by hostname.
    for node in ["server", "agent1", "agent2"] {
        s.kubectl_stdin_ok(
            &["apply", "-f", "-"],
            &format!(
                r#"
apiVersion: v1
kind: Pod
metadata: {{name: on-{node}}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {node}}}
  containers:
  - name: c
    image: {TEST_IMAGE}
    command: ["sh", "-c", "echo hello from {node}; mkdir -p /www && echo page of {node} > /www/index.html && exec httpd -f -p 8080 -h /www"]
"#
            ),
        );
    }
    for node in ["server", "agent1", "agent2"] {
        let pod = format!("on-{node}");
        wait_for(
            s,
            Duration::from_secs(90),
            &format!("{pod} Running"),
            || testkit::node::status_column(s, &pod) == "Running",
        );
        // logs and exec go from the API server to that node's agent over the LAN.
        assert_eq!(
            s.kubectl_ok(&["logs", &pod]).trim(),
            format!("hello from {node}")
        );
        assert_eq!(s.kubectl_ok(&["exec", &pod, "--", "hostname"]).trim(), pod);
        let spec_node = s.kubectl_ok(&["get", "pod", &pod, "-o", "jsonpath={.spec.nodeName}"]);
        assert_eq!(spec_node, node);
    }

    // Every pod fetches every other pod's page by pod IP, across nodes. (No `-T`: busybox
    // 1.35's static wget crashes with a timeout.)
    let ip = |pod: &str| s.kubectl_ok(&["get", "pod", pod, "-o", "jsonpath={.status.podIP}"]);
    for from in ["server", "agent1", "agent2"] {
        for to in ["server", "agent1", "agent2"] {
            let url = format!("http://{}:8080/", ip(&format!("on-{to}")));
            let page = s.kubectl_ok(&[
                "exec",
                &format!("on-{from}"),
                "--",
                "wget",
                "-q",
                "-O",
                "-",
                &url,
            ]);
            assert_eq!(page.trim(), format!("page of {to}"), "from {from} to {to}");
        }
    }
}

#[test]
fn a_load_balancer_spreads_over_three_nodes_by_cluster_ip_dns_name_node_port_and_external_ip() {
    let c = cluster();
    let s = &c.server;
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
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
      topologySpreadConstraints:
      - {{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {{matchLabels: {{app: web}}}}}}
      containers:
      - name: httpd
        image: {TEST_IMAGE}
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /, port: http}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  type: LoadBalancer
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  containers:
  - name: c
    image: {TEST_IMAGE}
    command: ["sleep", "3600"]
"#
        ),
    );
    wait_for(
        s,
        Duration::from_secs(90),
        "3 web endpoints and the client",
        || {
            let eps = s.kubectl_ok(&[
                "get",
                "endpoints",
                "web",
                "-o",
                "jsonpath={.subsets[*].addresses[*].ip}",
            ]);
            eps.split_whitespace().count() == 3
                && testkit::node::status_column(s, "client") == "Running"
        },
    );
    let nodes = s.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].spec.nodeName}",
    ]);
    let nodes: BTreeSet<&str> = nodes.split_whitespace().collect();
    assert_eq!(nodes.len(), 3, "one web pod per node: {nodes:?}");
    let pods = s.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    let pods: BTreeSet<String> = pods.split_whitespace().map(String::from).collect();

    // Through the ClusterIP, repeated requests reach every pod, wherever it runs.
    let ip = s.kubectl_ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        if let Some(page) = fetch(s, "client", &format!("http://{ip}/")) {
            seen.insert(page);
        }
        if seen == pods {
            break;
        }
    }
    assert_eq!(seen, pods, "requests through {ip} reach all three pods");

    // By name through the cluster DNS (kube-dns at the tenth address of the service range),
    // short, with the namespace, and fully qualified.
    for name in ["web", "web.default", "web.default.svc.cluster.local"] {
        let page = fetch(s, "client", &format!("http://{name}/"));
        assert!(
            page.as_ref().is_some_and(|p| pods.contains(p)),
            "http://{name}/ answered {page:?}; resolv.conf: {}",
            s.kubectl_ok(&["exec", "client", "--", "cat", "/etc/resolv.conf"])
        );
    }

    // The NodePort answers on every node's address, from outside the cluster (the test
    // process sits on the test LAN).
    let port = s.kubectl_ok(&[
        "get",
        "svc",
        "web",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    for host in &c.hosts {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .arg(format!("http://{}:{port}/", host.ip))
            .output()
            .expect("curl");
        let page = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            pods.contains(&page),
            "NodePort on {} answered {page:?} {:?}",
            host.name,
            out
        );
    }

    // As a LoadBalancer (k3s's ServiceLB idea), the nodes' addresses become its external
    // IPs, shown by `kubectl get svc`, and the Service's own port answers on each.
    let mut want: Vec<String> = c.hosts.iter().map(|h| h.ip.to_string()).collect();
    want.sort();
    wait_for(
        s,
        Duration::from_secs(30),
        "the LoadBalancer's addresses",
        || {
            let ips = s.kubectl_ok(&[
                "get",
                "svc",
                "web",
                "-o",
                "jsonpath={.status.loadBalancer.ingress[*].ip}",
            ]);
            let mut ips: Vec<String> = ips.split_whitespace().map(String::from).collect();
            ips.sort();
            ips == want
        },
    );
    let table = s.kubectl_ok(&["get", "svc", "web"]);
    assert!(
        table.contains(&want.join(",")),
        "EXTERNAL-IP column: {table}"
    );
    for ip in &want {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .arg(format!("http://{ip}:80/"))
            .output()
            .expect("curl");
        let page = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            pods.contains(&page),
            "LoadBalancer {ip}:80 answered {page:?} {:?}",
            out
        );
    }
}

#[test]
fn a_rolling_update_behind_a_service_loses_no_requests() {
    let c = cluster();
    let s = &c.server;
    let manifest = |version: &str| {
        format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 3
  minReadySeconds: 2
  strategy: {{rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}}}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web, version: "{version}"}}}}
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: httpd
        image: {TEST_IMAGE}
        command: ["sh", "-c", "mkdir -p /www && echo {version} > /www/index.html && exec httpd -f -p 8080 -h /www"]
        readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}
        # As users do: keep serving while the endpoint removal reaches every node.
        lifecycle: {{preStop: {{exec: {{command: ["sleep", "2"]}}}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
"#
        )
    };
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &manifest("v1"));
    s.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    let ip = s.kubectl_ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    // The client prints one line per request, ok with the version served or FAIL.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  containers:
  - name: c
    image: {TEST_IMAGE}
    command: ["sh", "-c", "while true; do if v=$(timeout 5 wget -q -O - http://{ip}/); then echo ok $v; else echo FAIL; fi; sleep 0.05; done"]
"#
        ),
    );
    wait_for(
        s,
        Duration::from_secs(60),
        "the client's first answers",
        || {
            s.kubectl(&["logs", "client"])
                .stdout
                .windows(5)
                .any(|w| w == b"ok v1")
        },
    );
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &manifest("v2"));
    s.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    // Until the old pods are gone: their endpoints go and they stop while the client runs.
    wait_for(s, Duration::from_secs(60), "the v1 pods to be gone", || {
        s.kubectl_ok(&["get", "pods", "-l", "version=v1", "-o", "name"])
            .trim()
            .is_empty()
    });
    wait_for(s, Duration::from_secs(30), "only v2 answering", || {
        let logs = s.kubectl_ok(&["logs", "client", "--tail=5"]);
        logs.lines().count() == 5 && logs.lines().all(|l| l == "ok v2")
    });
    let logs = s.kubectl_ok(&["logs", "client"]);
    let failed = logs.lines().filter(|l| !l.starts_with("ok ")).count();
    let served = logs.lines().filter(|l| l.starts_with("ok ")).count();
    eprintln!("{served} answers, {failed} failures during the rollout");
    assert!(served > 20, "the client kept sending: {served} answers");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during the rollout:\n{logs}",
        served + failed
    );
}

#[test]
fn a_node_cut_off_the_network_has_its_pods_replaced_and_the_service_keeps_answering() {
    node_lost(Loss::LinkCut);
}

#[test]
fn a_node_that_dies_has_its_pods_replaced_and_the_service_keeps_answering() {
    node_lost(Loss::Death);
}

/// How agent2 is lost.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Loss {
    /// Its link goes down: the machine and its pods live on, unreachable.
    LinkCut,
    /// The machine dies: the agent is killed (SIGKILL) and so are its containers.
    Death,
}

/// A 3-replica Deployment spread over three nodes behind a Service, a client pod on the
/// server's node requesting it every 100 ms; agent2 is lost; its pod is replaced on the
/// others, its address leaves the endpoints, and every later request succeeds.
fn node_lost(loss: Loss) {
    let mut c = TestCluster::start_with(
        std::path::Path::new(env!("CARGO_BIN_EXE_skiff")),
        2,
        &["--failover-profile=fast"],
        &["--node-lease-duration-seconds=4"],
    )
    .expect("3-node cluster with fast failover");
    let s = &c.server;
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
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
      topologySpreadConstraints:
      - {{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway, labelSelector: {{matchLabels: {{app: web}}}}}}
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: {TEST_IMAGE}
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  nodeSelector: {{kubernetes.io/hostname: server}}
  containers:
  - name: c
    image: {TEST_IMAGE}
    command: ["sh", "-c", "while true; do if v=$(timeout 3 wget -q -O - http://web/); then echo ok $v; else echo FAIL; fi; sleep 0.1; done"]
"#
        ),
    );
    let pods_on = |node: &str| -> Vec<String> {
        s.kubectl_ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "--field-selector",
            &format!("spec.nodeName={node}"),
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ])
        .lines()
        // Live pods only: a terminating one has a third field.
        .filter(|l| l.split_whitespace().count() == 2)
        .map(String::from)
        .collect()
    };
    wait_for(
        s,
        Duration::from_secs(90),
        "web on all three nodes, the client answered",
        || {
            ["server", "agent1", "agent2"]
                .iter()
                .all(|n| pods_on(n).len() == 1)
                && s.kubectl(&["logs", "client"])
                    .stdout
                    .windows(3)
                    .any(|w| w == b"ok ")
        },
    );
    let lost = pods_on("agent2")[0].clone();
    let (lost_name, lost_ip) = lost.split_once(' ').expect("name and IP");

    match loss {
        Loss::LinkCut => c.hosts[2].cut_link().expect("cut agent2's link"),
        Loss::Death => {
            let agent = &mut c.agents[1];
            agent.kill();
            // In the agent's host: the pod network it removes is that namespace's.
            let mut killall = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"));
            killall
                .arg("killall")
                .arg("--data-dir")
                .arg(agent.data_dir());
            agent.host.enter(&mut killall).expect("enter agent2's host");
            let out = killall.output().expect("run skiff killall");
            assert!(out.status.success(), "killall: {out:?}");
        }
    }

    // The node is given up on, its pod is replaced on the others, and its address leaves
    // the Service's endpoints (the pod itself stays Terminating: its node cannot confirm).
    wait_for(
        s,
        Duration::from_secs(60),
        "agent2 not Ready and web back to 3 ready pods",
        || {
            let ready = s.kubectl_ok(&[
                "get",
                "node",
                "agent2",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            let endpoints = s.kubectl_ok(&[
                "get",
                "endpoints",
                "web",
                "-o",
                "jsonpath={.subsets[*].addresses[*].ip}",
            ]);
            ready != "True"
                && endpoints.split_whitespace().count() == 3
                && !endpoints.split_whitespace().any(|ip| ip == lost_ip)
        },
    );
    let running = s.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ]);
    let alive: Vec<&str> = running
        .lines()
        .filter(|l| l.split_whitespace().count() == 2)
        .collect();
    assert_eq!(alive.len(), 3, "three live web pods: {running}");
    assert!(
        alive.iter().all(|l| !l.ends_with(" agent2")),
        "none on agent2: {running}"
    );
    assert!(
        running.contains(lost_name),
        "the lost pod is still listed, terminating: {running}"
    );

    // From now on every request succeeds (after one that was in flight to the lost pod has
    // run into its 3 s timeout).
    std::thread::sleep(Duration::from_secs(4));
    let before = s.kubectl_ok(&["logs", "client"]).lines().count();
    wait_for(s, Duration::from_secs(30), "20 more answers", || {
        s.kubectl_ok(&["logs", "client"]).lines().count() >= before + 20
    });
    let logs = s.kubectl_ok(&["logs", "client"]);
    let after: Vec<&str> = logs.lines().skip(before).collect();
    assert!(
        after.iter().all(|l| l.starts_with("ok ")),
        "after the replacement: {after:?}"
    );
    if loss == Loss::LinkCut {
        c.hosts[2].restore_link().expect("restore agent2's link");
    }
}

#[test]
fn the_ingress_on_every_node_routes_by_path_and_host_to_pods_on_other_nodes() {
    // Every node runs the ingress controller on ports 80/443 of its own address (each test
    // host has its own network namespace, so the standard ports are free).
    let c = TestCluster::start_with(
        std::path::Path::new(env!("CARGO_BIN_EXE_skiff")),
        2,
        &["--ingress-http-port=80", "--ingress-https-port=443"],
        &[],
    )
    .expect("3-node cluster");
    let s = &c.server;
    // `api` runs only on agent1 and `web` only on agent2: the server's node serves both
    // from elsewhere, and each agent serves the other's.
    for (name, node) in [("api", "agent1"), ("web", "agent2")] {
        s.kubectl_stdin_ok(
            &["apply", "-f", "-"],
            &format!(
                r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: {node}}}
      containers:
      - name: httpd
        image: {TEST_IMAGE}
        command: ["sh", "-c", "mkdir -p /www/{name} && echo this is {name} > /www/index.html && cp /www/index.html /www/{name}/ && exec httpd -f -p 8080 -h /www"]
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{port: 80, targetPort: 8080}}]
"#
            ),
        );
    }
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: by-path}
spec:
  rules:
  - http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
      - {path: /web, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: by-host}
spec:
  rules:
  - host: api.example.com
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}]
  - host: web.example.com
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]
"#,
    );
    for host in &c.hosts {
        for (path, want) in [("api", "this is api"), ("web", "this is web")] {
            let url = format!("http://{}/{path}/", host.ip);
            let mut last = (0, String::new());
            wait_for(
                s,
                Duration::from_secs(90),
                &format!("{url} through {}'s ingress", host.name),
                || {
                    last = curl(&url, &[]);
                    last.0 == 200 && last.1.trim() == want
                },
            );
        }
        for (name, want) in [("api", "this is api"), ("web", "this is web")] {
            let header = format!("Host: {name}.example.com");
            let (code, body) = curl(&format!("http://{}/", host.ip), &["-H", &header]);
            assert_eq!(
                (code, body.trim()),
                (200, want),
                "{header} on {}",
                host.name
            );
        }
        // A path no rule names gets the controller's 404.
        assert_eq!(
            curl(&format!("http://{}/nothing", host.ip), &[]).0,
            404,
            "unrouted path on {}",
            host.name
        );
    }
    // Every Ready node's address is the Ingresses' address, as `kubectl get ingress` shows.
    let mut want: Vec<String> = c.hosts.iter().map(|h| h.ip.to_string()).collect();
    want.sort();
    wait_for(s, Duration::from_secs(30), "the Ingress addresses", || {
        let ips = s.kubectl_ok(&[
            "get",
            "ingress",
            "by-path",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[*].ip}",
        ]);
        let mut ips: Vec<String> = ips.split_whitespace().map(String::from).collect();
        ips.sort();
        ips == want
    });
    let table = s.kubectl_ok(&["get", "ingress", "by-host"]);
    assert!(table.contains(&want.join(",")), "ADDRESS column: {table}");
}
