//! Tables of cases for the decision (which connections pass), the rendering and the diffs,
//! and one run of the rendered commands through the real nft (root only).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{json, Value};

use super::model::{ClusterState, NodeContext, PodInfo, Protocol};
use super::ruleset;

const NODE: &str = "n1";

fn ip(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

/// A pod `ns/name` on `node` with `labels`, address `ip` and named ports `(name, proto, n)`.
fn pod(
    ns: &str,
    name: &str,
    labels: Value,
    ip: &str,
    node: &str,
    ports: &[(&str, &str, u16)],
) -> Pod {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p, port)| json!({"name": n, "protocol": p, "containerPort": port}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i", "ports": ports}]},
        "status": {"phase": "Running", "podIP": ip}
    }))
    .unwrap()
}

fn policy(ns: &str, name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}))
        .unwrap()
}

/// The cluster every case starts from:
/// - ns `web` (team=web): `server` 10.42.0.10 (app=server, port http=8080) and `server2`
///   10.42.0.11 (app=server, http=9090) on this node, `far` 10.42.1.10 (app=server) on n2;
/// - ns `clients` (team=clients): `client` 10.42.0.20 (role=client), `plain` 10.42.0.21, both
///   here, `remote` 10.42.1.20 (role=client) on n2;
/// - ns `web`: `local-client` 10.42.0.30 (role=client); ns `other` (no team): `stranger`
///   10.42.0.40 (role=client).
fn cluster(policies: Vec<NetworkPolicy>) -> ClusterState {
    let pods = [
        pod(
            "web",
            "server",
            json!({"app": "server"}),
            "10.42.0.10",
            NODE,
            &[("http", "TCP", 8080)],
        ),
        pod(
            "web",
            "server2",
            json!({"app": "server"}),
            "10.42.0.11",
            NODE,
            &[("http", "TCP", 9090), ("dns", "UDP", 5353)],
        ),
        pod(
            "web",
            "far",
            json!({"app": "server"}),
            "10.42.1.10",
            "n2",
            &[("http", "TCP", 7070)],
        ),
        pod(
            "clients",
            "client",
            json!({"role": "client"}),
            "10.42.0.20",
            NODE,
            &[],
        ),
        pod("clients", "plain", json!({}), "10.42.0.21", NODE, &[]),
        pod(
            "clients",
            "remote",
            json!({"role": "client"}),
            "10.42.1.20",
            "n2",
            &[],
        ),
        pod(
            "web",
            "local-client",
            json!({"role": "client"}),
            "10.42.0.30",
            NODE,
            &[],
        ),
        pod(
            "other",
            "stranger",
            json!({"role": "client"}),
            "10.42.0.40",
            NODE,
            &[],
        ),
    ];
    let mut state = ClusterState::default();
    for p in &pods {
        state.pods.insert(
            format!(
                "{}/{}",
                p.metadata.namespace.as_deref().unwrap(),
                p.metadata.name.as_deref().unwrap()
            ),
            PodInfo::from_pod(p),
        );
    }
    for (ns, labels) in [
        ("web", json!({"team": "web"})),
        ("clients", json!({"team": "clients"})),
        ("other", json!({})),
    ] {
        let mut labels: BTreeMap<String, String> = serde_json::from_value(labels).unwrap();
        labels.insert("kubernetes.io/metadata.name".into(), ns.into());
        state.namespaces.insert(ns.into(), labels);
    }
    for p in policies {
        state.policies.insert(
            format!(
                "{}/{}",
                p.metadata.namespace.as_deref().unwrap(),
                p.metadata.name.as_deref().unwrap()
            ),
            p,
        );
    }
    state
}

fn node() -> NodeContext {
    NodeContext {
        node_name: NODE.into(),
        cluster_cidr: Some((ip("10.42.0.0"), 16)),
    }
}

const SERVER: &str = "10.42.0.10";
const SERVER2: &str = "10.42.0.11";
const CLIENT: &str = "10.42.0.20";
const PLAIN: &str = "10.42.0.21";
const REMOTE: &str = "10.42.1.20";
const LOCAL_CLIENT: &str = "10.42.0.30";
const STRANGER: &str = "10.42.0.40";
const OUTSIDE: &str = "192.0.2.99";

/// (what, policies, [(src, dst, proto, port, allowed)]).
type Case = (
    &'static str,
    Vec<NetworkPolicy>,
    Vec<(&'static str, &'static str, Protocol, u16, bool)>,
);

fn check(cases: Vec<Case>) {
    for (what, policies, probes) in cases {
        let desired = cluster(policies).decide(&node());
        for (src, dst, proto, port, want) in probes {
            assert_eq!(
                desired.allows(ip(src), ip(dst), proto, port),
                want,
                "{what}: {src} -> {dst} {proto:?}/{port}\n{desired:#?}"
            );
        }
    }
}

use Protocol::{Sctp, Tcp, Udp};

#[test]
fn ingress_isolation_and_peers() {
    check(vec![
        (
            "no policy: everything passes",
            vec![],
            vec![
                (CLIENT, SERVER, Tcp, 8080, true),
                (OUTSIDE, SERVER, Udp, 53, true),
            ],
        ),
        (
            "default deny ingress isolates the namespace's pods only",
            vec![policy(
                "web",
                "deny",
                json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
            )],
            vec![
                (CLIENT, SERVER, Tcp, 8080, false),
                (REMOTE, SERVER2, Tcp, 9090, false),
                (OUTSIDE, SERVER, Tcp, 8080, false),
                (SERVER, CLIENT, Tcp, 80, true),
                (SERVER, SERVER, Tcp, 8080, true),
            ],
        ),
        (
            "policyTypes missing and no egress rules: Ingress only",
            vec![policy(
                "web",
                "deny",
                json!({"podSelector": {"matchLabels": {"app": "server"}}}),
            )],
            vec![
                (CLIENT, SERVER, Tcp, 8080, false),
                (SERVER, CLIENT, Tcp, 80, true),
                (CLIENT, LOCAL_CLIENT, Tcp, 80, true),
            ],
        ),
        (
            "podSelector peers: the policy's namespace only",
            vec![policy(
                "web",
                "allow-clients",
                json!({"podSelector": {"matchLabels": {"app": "server"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]}),
            )],
            vec![
                (LOCAL_CLIENT, SERVER, Tcp, 8080, true),
                (CLIENT, SERVER, Tcp, 8080, false),
                (STRANGER, SERVER, Tcp, 8080, false),
            ],
        ),
        (
            "namespaceSelector peers: every pod of the namespaces, on any node",
            vec![policy(
                "web",
                "from-clients-ns",
                json!({"podSelector": {},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "clients"}}}]}]}),
            )],
            vec![
                (CLIENT, SERVER, Tcp, 8080, true),
                (PLAIN, SERVER, Tcp, 8080, true),
                (REMOTE, SERVER, Tcp, 8080, true),
                (LOCAL_CLIENT, SERVER, Tcp, 8080, false),
                (STRANGER, SERVER, Tcp, 8080, false),
            ],
        ),
        (
            "namespaceSelector and podSelector in one peer: both must match",
            vec![policy(
                "web",
                "both",
                json!({"podSelector": {},
                "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Exists"}]},
                                       "podSelector": {"matchLabels": {"role": "client"}}}]}]}),
            )],
            vec![
                (CLIENT, SERVER, Tcp, 8080, true),
                (REMOTE, SERVER, Tcp, 8080, true),
                (LOCAL_CLIENT, SERVER, Tcp, 8080, true),
                (PLAIN, SERVER, Tcp, 8080, false),
                (STRANGER, SERVER, Tcp, 8080, false),
            ],
        ),
        (
            "namespaceSelector by the name label",
            vec![policy(
                "web",
                "by-name",
                json!({"podSelector": {},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "other"}}}]}]}),
            )],
            vec![
                (STRANGER, SERVER, Tcp, 8080, true),
                (CLIENT, SERVER, Tcp, 8080, false),
            ],
        ),
        (
            "ipBlock with except",
            vec![policy(
                "web",
                "block",
                json!({"podSelector": {},
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.42.0.0/16", "except": ["10.42.0.16/28", "10.42.0.20/32"]}}]}]}),
            )],
            vec![
                (REMOTE, SERVER, Tcp, 8080, true),
                (STRANGER, SERVER, Tcp, 8080, true),
                (LOCAL_CLIENT, SERVER, Tcp, 8080, false),
                (CLIENT, SERVER, Tcp, 8080, false),
                (PLAIN, SERVER, Tcp, 8080, false),
                (OUTSIDE, SERVER, Tcp, 8080, false),
            ],
        ),
        (
            "an empty rule allows everything; policies add up",
            vec![
                policy(
                    "web",
                    "deny",
                    json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
                ),
                policy(
                    "web",
                    "open-server2",
                    json!({"podSelector": {"matchLabels": {"app": "server"}}, "ingress": [{}]}),
                ),
            ],
            vec![
                (OUTSIDE, SERVER2, Udp, 1, true),
                (CLIENT, LOCAL_CLIENT, Tcp, 80, false),
            ],
        ),
        (
            "Egress-only policy leaves ingress open",
            vec![policy(
                "web",
                "egress-only",
                json!({"podSelector": {}, "policyTypes": ["Egress"]}),
            )],
            vec![
                (CLIENT, SERVER, Tcp, 8080, true),
                (SERVER, CLIENT, Tcp, 80, false),
            ],
        ),
    ]);
}

#[test]
fn ports_numeric_ranges_protocols_and_names() {
    check(vec![
        (
            "numeric ports, protocol defaulting to TCP, endPort ranges, protocol only",
            vec![policy(
                "web",
                "ports",
                json!({"podSelector": {}, "ingress": [{"ports": [
                    {"port": 8080},
                    {"protocol": "UDP", "port": 5000, "endPort": 5010},
                    {"protocol": "SCTP"}
                ]}]}),
            )],
            vec![
                (CLIENT, SERVER, Tcp, 8080, true),
                (CLIENT, SERVER, Udp, 8080, false),
                (CLIENT, SERVER, Tcp, 8081, false),
                (CLIENT, SERVER, Udp, 5000, true),
                (CLIENT, SERVER, Udp, 5010, true),
                (CLIENT, SERVER, Udp, 5011, false),
                (CLIENT, SERVER, Sctp, 1, true),
            ],
        ),
        (
            "peers and ports must both match",
            vec![policy(
                "web",
                "both",
                json!({"podSelector": {}, "ingress": [{
                "from": [{"ipBlock": {"cidr": "10.42.0.20/32"}}], "ports": [{"port": 8080}]}]}),
            )],
            vec![
                (CLIENT, SERVER, Tcp, 8080, true),
                (CLIENT, SERVER, Tcp, 80, false),
                (PLAIN, SERVER, Tcp, 8080, false),
            ],
        ),
        (
            "an ingress named port resolves per destination pod",
            vec![policy(
                "web",
                "named",
                json!({"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}),
            )],
            vec![
                (CLIENT, SERVER, Tcp, 8080, true),
                (CLIENT, SERVER, Tcp, 9090, false),
                (CLIENT, SERVER2, Tcp, 9090, true),
                (CLIENT, SERVER2, Tcp, 8080, false),
                (CLIENT, LOCAL_CLIENT, Tcp, 8080, false),
            ],
        ),
        (
            "a named port with the wrong protocol matches nothing",
            vec![policy(
                "web",
                "named-udp",
                json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP", "port": "http"}, {"protocol": "UDP", "port": "dns"}]}]}),
            )],
            vec![
                (CLIENT, SERVER, Tcp, 8080, false),
                (CLIENT, SERVER, Udp, 8080, false),
                (CLIENT, SERVER2, Udp, 5353, true),
            ],
        ),
    ]);
}

#[test]
fn egress_isolation() {
    check(vec![
        (
            "default deny egress: the client reaches nothing, others are untouched",
            vec![policy(
                "clients",
                "deny-out",
                json!({"podSelector": {}, "policyTypes": ["Egress"]}),
            )],
            vec![
                (CLIENT, SERVER, Tcp, 8080, false),
                (CLIENT, OUTSIDE, Udp, 53, false),
                (CLIENT, CLIENT, Tcp, 80, true),
                (SERVER, CLIENT, Tcp, 80, true),
            ],
        ),
        (
            "policyTypes missing with egress rules: both directions",
            vec![policy(
                "clients",
                "both",
                json!({"podSelector": {"matchLabels": {"role": "client"}},
                "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"team": "web"}}}]}]}),
            )],
            vec![
                (CLIENT, SERVER, Tcp, 8080, true),
                (CLIENT, STRANGER, Tcp, 80, false),
                (PLAIN, CLIENT, Tcp, 80, false),
                (PLAIN, STRANGER, Tcp, 80, true),
            ],
        ),
        (
            "egress ipBlock with except and a port",
            vec![policy(
                "clients",
                "out",
                json!({"podSelector": {}, "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "10.42.0.0/24", "except": ["10.42.0.11/32"]}}], "ports": [{"port": 8080}, {"port": 9090}]}]}),
            )],
            vec![
                (CLIENT, SERVER, Tcp, 8080, true),
                (CLIENT, SERVER2, Tcp, 9090, false),
                (CLIENT, SERVER, Tcp, 80, false),
                (CLIENT, REMOTE, Tcp, 8080, false),
            ],
        ),
        (
            "an egress named port resolves against the peer pods",
            vec![policy(
                "clients",
                "named-out",
                json!({"podSelector": {}, "policyTypes": ["Egress"],
                "egress": [{"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "server"}}}], "ports": [{"port": "http"}]}]}),
            )],
            vec![
                (CLIENT, SERVER, Tcp, 8080, true),
                (CLIENT, SERVER2, Tcp, 9090, true),
                (CLIENT, SERVER2, Tcp, 8080, false),
                (CLIENT, "10.42.1.10", Tcp, 7070, true),
                (CLIENT, LOCAL_CLIENT, Tcp, 8080, false),
            ],
        ),
        (
            "egress and ingress isolation both apply between two local pods",
            vec![
                policy(
                    "clients",
                    "out",
                    json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}),
                ),
                policy(
                    "web",
                    "in",
                    json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
                ),
            ],
            vec![
                (CLIENT, SERVER, Tcp, 8080, false),
                (LOCAL_CLIENT, SERVER, Tcp, 8080, true),
                (CLIENT, STRANGER, Tcp, 1, true),
            ],
        ),
    ]);
}

#[test]
fn only_this_nodes_pod_network_pods_are_isolated() {
    let mut state = cluster(vec![policy(
        "web",
        "deny",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    )]);
    let mut host = pod("web", "host", json!({}), "192.0.2.2", NODE, &[]);
    host.spec.as_mut().unwrap().host_network = Some(true);
    state
        .pods
        .insert("web/host".into(), PodInfo::from_pod(&host));
    let mut done = pod("web", "done", json!({}), "10.42.0.50", NODE, &[]);
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    state
        .pods
        .insert("web/done".into(), PodInfo::from_pod(&done));
    let desired = state.decide(&node());
    let isolated: Vec<String> = desired.ingress.keys().map(|i| i.to_string()).collect();
    // Not far (n2), not the hostNetwork pod, not the finished one.
    assert_eq!(isolated, ["10.42.0.10", "10.42.0.11", "10.42.0.30"]);
    assert_eq!(desired.egress.len(), 3);
    // Another node sees the same policy for its own pod only.
    let other = state.decide(&NodeContext {
        node_name: "n2".into(),
        cluster_cidr: None,
    });
    assert_eq!(
        other
            .ingress
            .keys()
            .map(|i| i.to_string())
            .collect::<Vec<_>>(),
        ["10.42.1.10"]
    );
    // A node without local pods selected keeps no policy at all.
    let empty = state.decide(&NodeContext {
        node_name: "n3".into(),
        cluster_cidr: None,
    });
    assert!(empty.policies.is_empty() && empty.ingress.is_empty());
}

#[test]
fn the_table_layout() {
    let state = cluster(vec![
        policy(
            "web",
            "allow",
            json!({"podSelector": {"matchLabels": {"app": "server"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}},
                                  {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                         "ports": [{"port": 8080}, {"protocol": "UDP", "port": 53, "endPort": 60}, {"port": "http"}]}]}),
        ),
        policy("web", "deny", json!({"podSelector": {}})),
    ]);
    let r = ruleset::render(&state.decide(&node()));
    let allow = ruleset::policy_chain("ingress", "web/allow");
    let deny = ruleset::policy_chain("ingress", "web/deny");
    assert!(
        allow.starts_with("ingress-") && allow.ends_with("-web/allow"),
        "{allow}"
    );
    let id = &allow["ingress-".len()..allow.len() - "-web/allow".len()];
    let peers = format!("ingress-{id}-r0-peers");
    let named = format!("ingress-{id}-r0-named");
    assert_eq!(
        r.chains[&allow],
        [
            format!("ip saddr @{peers} meta l4proto tcp th dport {{ 8080 }} accept"),
            format!("ip saddr @{peers} meta l4proto udp th dport {{ 53-60 }} accept"),
            "ip saddr 10.0.0.0/8 ip saddr != { 10.1.0.0/16 } meta l4proto tcp th dport { 8080 } accept".to_string(),
            "ip saddr 10.0.0.0/8 ip saddr != { 10.1.0.0/16 } meta l4proto udp th dport { 53-60 } accept".to_string(),
            format!("ip saddr @{peers} ip daddr . meta l4proto . th dport @{named} accept"),
            format!("ip saddr 10.0.0.0/8 ip saddr != {{ 10.1.0.0/16 }} ip daddr . meta l4proto . th dport @{named} accept"),
        ]
    );
    assert!(r.chains[&deny].is_empty(), "no rule: nothing allowed");
    assert_eq!(
        r.elements[&peers].keys().collect::<Vec<_>>(),
        ["10.42.0.30"]
    );
    assert_eq!(
        r.elements[&named].keys().collect::<Vec<_>>(),
        ["10.42.0.10 . tcp . 8080", "10.42.0.11 . tcp . 9090"]
    );
    // server and server2 share one group (allow + deny); local-client has deny only.
    let map = &r.elements[ruleset::MAP_INGRESS];
    assert_eq!(map.len(), 3);
    assert_eq!(map["10.42.0.10"], map["10.42.0.11"]);
    assert_ne!(map["10.42.0.10"], map["10.42.0.30"]);
    let group = map["10.42.0.10"].strip_prefix("goto ").unwrap();
    assert_eq!(
        r.chains[group],
        [
            format!("jump {allow}"),
            format!("jump {deny}"),
            "drop".to_string()
        ]
    );
    assert!(!r.elements.contains_key(ruleset::MAP_EGRESS));
    // Isolated pods may reach themselves; the others pass anyway and are not listed.
    assert!(r.elements[ruleset::SET_SELF].contains_key("10.42.0.10 . 10.42.0.10"));
    assert!(!r.elements[ruleset::SET_SELF].contains_key("10.42.0.20 . 10.42.0.20"));
}

#[test]
fn pod_churn_changes_set_elements_only() {
    let policies = || {
        vec![policy(
            "web",
            "allow",
            json!({"podSelector": {"matchLabels": {"app": "server"}},
        "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "client"}}}]}]}),
        )]
    };
    let before = ruleset::render(&cluster(policies()).decide(&node()));
    let mut state = cluster(policies());
    state.pods.insert(
        "clients/new".into(),
        PodInfo::from_pod(&pod(
            "clients",
            "new",
            json!({"role": "client"}),
            "10.42.2.7",
            "n3",
            &[],
        )),
    );
    state.pods.insert(
        "web/server3".into(),
        PodInfo::from_pod(&pod(
            "web",
            "server3",
            json!({"app": "server"}),
            "10.42.0.12",
            NODE,
            &[],
        )),
    );
    state.pods.remove("clients/remote");
    let after = ruleset::render(&state.decide(&node()));
    let text = ruleset::diff("t", &before, &after);
    for line in text.lines() {
        assert!(
            line.starts_with("add element ") || line.starts_with("delete element "),
            "{text}"
        );
    }
    assert!(
        text.contains("10.42.2.7")
            && text.contains("delete element ip t ingress-")
            && text.contains("10.42.1.20"),
        "{text}"
    );
    assert!(text.contains("10.42.0.12 : goto ingress-group-"), "{text}");
    assert_eq!(ruleset::diff("t", &after, &after), "");
}

#[test]
fn removing_a_policy_unreferences_before_deleting() {
    let with = ruleset::render(
        &cluster(vec![policy(
            "web",
            "deny",
            json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
        )])
        .decide(&node()),
    );
    let without = ruleset::render(&cluster(vec![]).decide(&node()));
    let text = ruleset::diff("t", &with, &without);
    let pos = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle} in\n{text}"))
    };
    assert!(pos("delete element ip t ingress-isolated") < pos("flush chain ip t ingress-group-"));
    assert!(pos("flush chain ip t ingress-group-") < pos("delete chain ip t ingress-group-"));
    assert!(pos("flush chain ip t ingress-") < pos("delete set ip t ingress-"));
    // Back again: created before filled, filled before the map points at it.
    let back = ruleset::diff("t", &without, &with);
    let pos = |needle: &str| {
        back.find(needle)
            .unwrap_or_else(|| panic!("{needle} in\n{back}"))
    };
    assert!(pos("add set ip t ingress-") < pos("add rule ip t ingress-"));
    assert!(pos("add rule ip t ingress-group-") < pos("add element ip t ingress-isolated"));
}

/// The rendered commands are what nft accepts: a rebuild, a pod change, a policy change
/// and a removal, applied to a scratch table (addresses from TEST-NET-2, so no real
/// traffic meets its forward-hook chains). Needs root and nft(8); skipped otherwise.
#[tokio::test]
async fn nft_accepts_the_rendered_commands() {
    // SAFETY: geteuid has no preconditions.
    let (Some(nft), true) = (
        crate::proxy::nft::Nft::find(),
        unsafe { libc::geteuid() } == 0,
    ) else {
        eprintln!("skipped: needs root and nft");
        return;
    };
    let table = format!("skiff-unit-policy-{}", std::process::id());
    let node = NodeContext {
        node_name: NODE.into(),
        cluster_cidr: None,
    };
    let mk = |extra_peer: bool, with_policy: bool| {
        let mut pods = vec![
            pod(
                "web",
                "server",
                json!({"app": "server"}),
                "198.51.100.10",
                NODE,
                &[("http", "TCP", 8080)],
            ),
            pod(
                "web",
                "client",
                json!({"role": "client"}),
                "198.51.100.20",
                NODE,
                &[],
            ),
        ];
        if extra_peer {
            pods.push(pod(
                "other",
                "client2",
                json!({"role": "client"}),
                "198.51.100.21",
                "n2",
                &[],
            ));
        }
        let mut state = ClusterState::default();
        for p in &pods {
            state.pods.insert(
                format!(
                    "{}/{}",
                    p.metadata.namespace.as_deref().unwrap(),
                    p.metadata.name.as_deref().unwrap()
                ),
                PodInfo::from_pod(p),
            );
        }
        if with_policy {
            for p in [
                policy(
                    "web",
                    "allow",
                    json!({"podSelector": {"matchLabels": {"app": "server"}},
                    "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "client"}}},
                                          {"ipBlock": {"cidr": "198.51.100.0/24", "except": ["198.51.100.128/25"]}}],
                                 "ports": [{"port": "http"}, {"port": 80, "endPort": 90}, {"protocol": "SCTP"}]}],
                    "egress": [{"to": [{"podSelector": {}}], "ports": [{"port": "http"}, {"protocol": "UDP", "port": 53}]}]}),
                ),
                policy(
                    "web",
                    "deny",
                    json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
                ),
            ] {
                state
                    .policies
                    .insert(format!("web/{}", p.metadata.name.as_deref().unwrap()), p);
            }
        }
        ruleset::render(&state.decide(&node))
    };
    let steps = [
        mk(false, true),
        mk(true, true),
        mk(true, false),
        mk(false, true),
    ];
    let mut result = nft
        .apply(
            &(ruleset::rebuild_commands(&table)
                + &ruleset::diff(&table, &Default::default(), &steps[0])),
        )
        .await;
    for pair in steps.windows(2) {
        if result.is_err() {
            break;
        }
        result = nft.apply(&ruleset::diff(&table, &pair[0], &pair[1])).await;
    }
    let listed = nft
        .run_blocking(&["list", "table", "ip", &table])
        .unwrap_or_default();
    let _ = nft.run_blocking(&["delete", "table", "ip", &table]);
    result.unwrap();
    assert!(
        listed.contains("198.51.100.10 : goto ingress-group-"),
        "{listed}"
    );
    assert!(listed.contains("198.51.100.10 . tcp . 8080"), "{listed}");
}

/// Figures, not assertions: decide + render + diff for 2,000 pods on 20 nodes in 20
/// namespaces with 200 policies (this node: 100 pods), the size of the nft rebuild, and
/// (as root) the nft apply of the rebuild and of one pod's arrival. Addresses are from the
/// benchmarking range 198.18.0.0/15, so no real traffic meets the scratch table.
/// `cargo test --release -p network policy::tests::figures -- --ignored --nocapture`
#[tokio::test]
#[ignore]
async fn figures() {
    use std::time::Instant;
    let mut state = ClusterState::default();
    for n in 0..20u8 {
        let ns = format!("ns{n}");
        let mut labels = BTreeMap::from([("team".to_string(), format!("t{}", n % 4))]);
        labels.insert("kubernetes.io/metadata.name".into(), ns.clone());
        state.namespaces.insert(ns.clone(), labels);
        for i in 0..100u8 {
            let node = format!("n{}", i / 5);
            let p = pod(
                &ns,
                &format!("p{i}"),
                json!({"app": format!("a{}", i % 10), "role": if i % 2 == 0 { "client" } else { "server" }}),
                &format!("198.18.{}.{}", i / 5, u16::from(n) * 5 + u16::from(i % 5)),
                &node,
                &[("http", "TCP", 8080)],
            );
            state
                .pods
                .insert(format!("{ns}/p{i}"), PodInfo::from_pod(&p));
        }
        for k in 0..10 {
            let spec = match k {
                0 => json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
                1 => {
                    json!({"podSelector": {}, "egress": [{"ports": [{"protocol": "UDP", "port": 53}]}], "policyTypes": ["Egress"]})
                }
                _ => json!({"podSelector": {"matchLabels": {"app": format!("a{k}")}},
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}},
                                          {"namespaceSelector": {"matchLabels": {"team": "t1"}}, "podSelector": {"matchLabels": {"app": "a1"}}}],
                                 "ports": [{"port": "http"}, {"port": 9000, "endPort": 9100}]}],
                    "egress": [{"to": [{"ipBlock": {"cidr": "198.18.0.0/15", "except": ["198.18.19.0/24"]}}]}]}),
            };
            let p = policy(&ns, &format!("pol{k}"), spec);
            state.policies.insert(format!("{ns}/pol{k}"), p);
        }
    }
    let node = NodeContext {
        node_name: "n0".into(),
        cluster_cidr: None,
    };
    let t = Instant::now();
    let desired = state.decide(&node);
    let decide = t.elapsed();
    let t = Instant::now();
    let rendered = ruleset::render(&desired);
    let render = t.elapsed();
    let table = format!("skiff-bench-policy-{}", std::process::id());
    let rebuild =
        ruleset::rebuild_commands(&table) + &ruleset::diff(&table, &Default::default(), &rendered);
    state.pods.insert(
        "ns3/new".into(),
        PodInfo::from_pod(&pod(
            "ns3",
            "new",
            json!({"app": "a1", "role": "client"}),
            "198.18.0.250",
            "n0",
            &[("http", "TCP", 8080)],
        )),
    );
    let t = Instant::now();
    let after = ruleset::render(&state.decide(&node));
    let churn = ruleset::diff(&table, &rendered, &after);
    let churn_compute = t.elapsed();
    println!(
        "policies programmed {} of 200, isolated pods in/out {}/{}, chains {}, sets {}",
        desired.policies.len(),
        desired.ingress.len(),
        desired.egress.len(),
        rendered.chains.len(),
        rendered.sets.len()
    );
    println!(
        "decide {decide:?}, render {render:?}, rebuild {} lines; one pod added: decide+render+diff {churn_compute:?}, {} lines",
        rebuild.lines().count(),
        churn.lines().count()
    );
    // SAFETY: geteuid has no preconditions.
    let (Some(nft), true) = (
        crate::proxy::nft::Nft::find(),
        unsafe { libc::geteuid() } == 0,
    ) else {
        return;
    };
    let t = Instant::now();
    let r = nft.apply(&rebuild).await;
    let apply_rebuild = t.elapsed();
    let t = Instant::now();
    let r2 = nft.apply(&churn).await;
    let apply_churn = t.elapsed();
    let _ = nft.run_blocking(&["delete", "table", "ip", &table]);
    r.unwrap();
    r2.unwrap();
    println!("nft apply: rebuild {apply_rebuild:?}, one pod added {apply_churn:?}");
}
