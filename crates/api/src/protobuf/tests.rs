//! Tests for the protobuf decoder: bodies built with a tiny wire-format encoder the way
//! Go's generated marshalers write them (non-pointer fields always, even when zero), and
//! the exact JSON upstream's JSON encoding gives for the same objects.

use serde_json::{json, Value};

use super::decode::go_duration;
use super::{decode_request, ProtobufError};

/// A message under construction.
#[derive(Default, Clone)]
struct Pb(Vec<u8>);

impl Pb {
    fn new() -> Self {
        Pb(Vec::new())
    }

    fn put_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(mut self, tag: u32, wire: u8) -> Self {
        self.put_varint(u64::from(tag) << 3 | u64::from(wire));
        self
    }

    fn int(self, tag: u32, v: i64) -> Self {
        let mut s = self.key(tag, 0);
        s.put_varint(v as u64);
        s
    }

    fn bool(self, tag: u32, v: bool) -> Self {
        self.int(tag, i64::from(v))
    }

    fn bytes(self, tag: u32, b: &[u8]) -> Self {
        let mut s = self.key(tag, 2);
        s.put_varint(b.len() as u64);
        s.0.extend_from_slice(b);
        s
    }

    fn str(self, tag: u32, v: &str) -> Self {
        self.bytes(tag, v.as_bytes())
    }

    fn msg(self, tag: u32, m: Pb) -> Self {
        self.bytes(tag, &m.0)
    }

    /// A `map<string, string>` entry.
    fn entry(self, tag: u32, k: &str, v: &str) -> Self {
        self.msg(tag, Pb::new().str(1, k).str(2, v))
    }
}

/// The full body: magic + runtime.Unknown{typeMeta, raw, contentEncoding, contentType},
/// as Go's protobuf serializer writes it (empty strings included).
fn body(api_version: &str, kind: &str, raw: Pb) -> Vec<u8> {
    let env = Pb::new()
        .msg(1, Pb::new().str(1, api_version).str(2, kind))
        .msg(2, raw)
        .str(3, "")
        .str(4, "");
    let mut out = b"k8s\0".to_vec();
    out.extend_from_slice(&env.0);
    out
}

/// ObjectMeta the way Go writes it for a new object: every non-pointer field, with
/// creationTimestamp as an empty (zero) Time.
fn go_meta(name: &str, namespace: &str) -> Pb {
    Pb::new()
        .str(1, name)
        .str(2, "")
        .str(3, namespace)
        .str(4, "")
        .str(5, "")
        .str(6, "")
        .int(7, 0)
        .msg(8, Pb::new())
}

fn decode(b: &[u8]) -> Value {
    match decode_request(b) {
        Ok(v) => v,
        Err(e) => panic!("decode failed: {e}"),
    }
}

#[test]
fn namespace_matches_kubectls_json() {
    let ns = Pb::new()
        .msg(1, go_meta("x", ""))
        .msg(2, Pb::new())
        .msg(3, Pb::new().str(1, ""));
    assert_eq!(
        decode(&body("v1", "Namespace", ns)),
        json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "x", "creationTimestamp": null},
            "spec": {}, "status": {}
        })
    );
}

#[test]
fn configmap_with_data_binary_data_labels_annotations_and_timestamp() {
    let meta = Pb::new()
        .str(1, "cfg")
        .str(3, "default")
        .int(7, 3)
        .msg(8, Pb::new().int(1, 1_704_164_705).int(2, 0))
        .entry(11, "app", "web")
        .entry(11, "tier", "front")
        .entry(12, "note", "hello");
    let cm = Pb::new()
        .msg(1, meta)
        .entry(2, "a", "1")
        .entry(2, "b", "")
        .msg(3, Pb::new().str(1, "bin").bytes(2, &[0, 1, 2, 255]))
        .bool(4, false);
    assert_eq!(
        decode(&body("v1", "ConfigMap", cm)),
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": "cfg", "namespace": "default", "generation": 3,
                "creationTimestamp": "2024-01-02T03:05:05Z",
                "labels": {"app": "web", "tier": "front"},
                "annotations": {"note": "hello"}
            },
            "data": {"a": "1", "b": ""},
            "binaryData": {"bin": "AAEC/w=="},
            // immutable is a *bool: an explicit false is kept.
            "immutable": false
        })
    );
}

#[test]
fn secret_bytes_are_base64() {
    let s = Pb::new()
        .msg(1, go_meta("s", "ns1"))
        .msg(2, Pb::new().str(1, "password").bytes(2, b"hunter2"))
        .msg(2, Pb::new().str(1, "empty"))
        .str(3, "Opaque");
    assert_eq!(
        decode(&body("v1", "Secret", s)),
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": "ns1", "creationTimestamp": null},
            "data": {"password": "aHVudGVyMg==", "empty": ""},
            "type": "Opaque"
        })
    );
}

#[test]
fn deployment_with_a_pod_template() {
    let labels = |p: Pb| p.entry(11, "app", "web");
    let quantity = |q: &str| Pb::new().str(1, q);
    let resources = Pb::new()
        .msg(1, Pb::new().str(1, "cpu").msg(2, quantity("500m")))
        .msg(1, Pb::new().str(1, "memory").msg(2, quantity("128Mi")))
        .msg(2, Pb::new().str(1, "cpu").msg(2, quantity("100m")));
    // httpGet {path, port: IntOrString{type: string, strVal: "http"}, host, scheme}
    let http_get = Pb::new()
        .str(1, "/healthz")
        .msg(2, Pb::new().int(1, 1).int(2, 0).str(3, "http"))
        .str(3, "")
        .str(4, "HTTP");
    let probe = Pb::new()
        .msg(1, Pb::new().msg(2, http_get))
        .int(2, 5)
        .int(3, 0) // timeoutSeconds 0: unset, upstream omits it (and defaulting sets 1)
        .int(4, 10)
        .int(5, 0)
        .int(6, 0);
    let container = Pb::new()
        .str(1, "web")
        .str(2, "nginx:1.27")
        .str(3, "nginx")
        .str(4, "-g")
        .str(5, "")
        .msg(
            6,
            Pb::new()
                .str(1, "http")
                .int(2, 0)
                .int(3, 80)
                .str(4, "TCP")
                .str(5, ""),
        )
        .msg(7, Pb::new().str(1, "MODE").str(2, "prod"))
        .msg(8, resources)
        .msg(11, probe)
        .str(13, "")
        .str(14, "IfNotPresent")
        .bool(16, false)
        .bool(17, false)
        .bool(18, false);
    let pod_spec = Pb::new()
        .msg(2, container)
        .str(3, "") // restartPolicy: zero, omitted
        .str(6, "")
        .str(8, "")
        .bool(11, false)
        .bool(12, false)
        .bool(13, false)
        .msg(14, Pb::new())
        .str(16, "")
        .str(19, "");
    let template = Pb::new().msg(1, labels(Pb::new())).msg(2, pod_spec);
    let spec = Pb::new()
        .int(1, 0) // replicas is a *int32: 0 means zero replicas and is kept
        .msg(2, Pb::new().entry(1, "app", "web"))
        .msg(3, template)
        .msg(4, Pb::new())
        .int(5, 0)
        .bool(7, false);
    let d = Pb::new()
        .msg(1, go_meta("web", "default"))
        .msg(2, spec)
        .msg(3, Pb::new());
    assert_eq!(
        decode(&body("apps/v1", "Deployment", d)),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "creationTimestamp": null},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [{
                            "name": "web",
                            "image": "nginx:1.27",
                            "command": ["nginx"],
                            "args": ["-g"],
                            "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                            "env": [{"name": "MODE", "value": "prod"}],
                            "resources": {
                                "limits": {"cpu": "500m", "memory": "128Mi"},
                                "requests": {"cpu": "100m"}
                            },
                            "readinessProbe": {
                                "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
                                "initialDelaySeconds": 5,
                                "periodSeconds": 10
                            },
                            "imagePullPolicy": "IfNotPresent"
                        }],
                        "securityContext": {}
                    }
                },
                "strategy": {}
            },
            "status": {}
        })
    );
}

#[test]
fn eviction_with_delete_options() {
    let opts = Pb::new()
        .int(1, 0)
        .msg(2, Pb::new().str(1, "uid-1"))
        .str(5, "All");
    let ev = Pb::new().msg(1, go_meta("pod-1", "default")).msg(2, opts);
    assert_eq!(
        decode(&body("policy/v1", "Eviction", ev)),
        json!({
            "apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": "pod-1", "namespace": "default", "creationTimestamp": null},
            // gracePeriodSeconds is a *int64: --grace-period=0 must survive.
            "deleteOptions": {"gracePeriodSeconds": 0, "preconditions": {"uid": "uid-1"}, "dryRun": ["All"]}
        })
    );
}

#[test]
fn delete_options_under_any_group_version() {
    let opts = Pb::new().str(4, "Foreground");
    assert_eq!(
        decode(&body("apps/v1", "DeleteOptions", opts)),
        json!({"apiVersion": "apps/v1", "kind": "DeleteOptions", "propagationPolicy": "Foreground"})
    );
}

#[test]
fn int_or_string_numbers_micro_time_and_raw_extension() {
    // A Service port with a numeric targetPort.
    let port = Pb::new()
        .str(1, "web")
        .str(2, "TCP")
        .int(3, 80)
        .msg(4, Pb::new().int(1, 0).int(2, 8080).str(3, ""));
    let svc = Pb::new()
        .msg(1, go_meta("s", "d"))
        .msg(2, Pb::new().msg(1, port));
    let v = decode(&body("v1", "Service", svc));
    assert_eq!(
        v["spec"]["ports"],
        json!([{"name": "web", "protocol": "TCP", "port": 80, "targetPort": 8080}])
    );

    // A Lease's MicroTime renewTime.
    let lease = Pb::new().msg(1, go_meta("l", "d")).msg(
        2,
        Pb::new().msg(4, Pb::new().int(1, 1_704_164_705).int(2, 123_456_789)),
    );
    let v = decode(&body("coordination.k8s.io/v1", "Lease", lease));
    assert_eq!(v["spec"]["renewTime"], json!("2024-01-02T03:05:05.123456Z"));

    // A ControllerRevision's data: embedded JSON.
    let cr = Pb::new()
        .msg(1, go_meta("r", "d"))
        .msg(2, Pb::new().str(1, r#"{"spec":{"a":1}}"#))
        .int(3, 2);
    let v = decode(&body("apps/v1", "ControllerRevision", cr));
    assert_eq!(v["data"], json!({"spec": {"a": 1}}));
    assert_eq!(v["revision"], json!(2));
}

#[test]
fn negative_ints_and_packed_repeated() {
    // Negative int32 values travel as 10-byte sign-extended varints.
    let sc = Pb::new().int(2, -1);
    let pod_spec = Pb::new().msg(14, sc);
    let pod = Pb::new().msg(1, go_meta("p", "d")).msg(2, pod_spec);
    let v = decode(&body("v1", "Pod", pod));
    assert_eq!(v["spec"]["securityContext"]["runAsUser"], json!(-1));

    // supplementalGroups (repeated int64) accepted both unpacked and packed.
    let mut packed = Pb::new();
    packed.put_varint(5);
    packed.put_varint(1000);
    let sc = Pb::new().int(4, 7).bytes(4, &packed.0);
    let pod = Pb::new().msg(2, Pb::new().msg(14, sc));
    let v = decode(&body("v1", "Pod", pod));
    assert_eq!(
        v["spec"]["securityContext"]["supplementalGroups"],
        json!([7, 5, 1000])
    );
}

#[test]
fn errors() {
    let ns = || Pb::new().msg(1, Pb::new().str(1, "x"));
    assert_eq!(
        decode_request(b"{\"kind\":\"Namespace\"}"),
        Err(ProtobufError::BadMagic)
    );
    assert_eq!(decode_request(b"k8s"), Err(ProtobufError::BadMagic));

    let e = decode_request(&body("v1", "Widget", ns())).unwrap_err();
    assert_eq!(
        e,
        ProtobufError::UnknownKind {
            api_version: "v1".into(),
            kind: "Widget".into()
        }
    );
    assert!(e.to_string().contains("Widget"), "{e}");

    // Truncated anywhere inside typeMeta or raw, or inside a trailing field. (A cut at a
    // field boundary is a shorter valid message; the wire format cannot tell.)
    let full = body("v1", "Namespace", ns());
    let n = full.len(); // ends with contentEncoding "" and contentType "": 1a 00 22 00
    let type_meta = Pb::new().msg(1, Pb::new().str(1, "v1").str(2, "Namespace"));
    let boundaries = [4 + type_meta.0.len(), n - 4, n - 2];
    for cut in (4..n).filter(|c| !boundaries.contains(c)) {
        assert!(
            decode_request(&full[..cut]).is_err(),
            "cut at {cut} decoded"
        );
    }

    // An unknown field number in a nested message is an error with its path.
    let bad = Pb::new().msg(1, Pb::new().str(1, "x").str(99, "?"));
    let e = decode_request(&body("v1", "Namespace", bad)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("metadata") && msg.contains("unknown field 99"),
        "{msg}"
    );

    // A wrong wire type.
    let bad = Pb::new().msg(1, Pb::new().int(1, 5));
    let e = decode_request(&body("v1", "Namespace", bad)).unwrap_err();
    assert!(e.to_string().contains("wire type varint"), "{e}");

    // Envelope problems: no kind, content encoding, unknown envelope field.
    let mut b = b"k8s\0".to_vec();
    b.extend(Pb::new().msg(1, Pb::new().str(1, "v1")).0);
    assert!(matches!(
        decode_request(&b),
        Err(ProtobufError::Envelope(_))
    ));
    let mut b = b"k8s\0".to_vec();
    b.extend(
        Pb::new()
            .msg(1, Pb::new().str(1, "v1").str(2, "Namespace"))
            .str(3, "gzip")
            .0,
    );
    assert!(matches!(
        decode_request(&b),
        Err(ProtobufError::Envelope(_))
    ));
    let mut b = b"k8s\0".to_vec();
    b.extend(
        Pb::new()
            .msg(1, Pb::new().str(1, "v1").str(2, "Namespace"))
            .str(7, "?")
            .0,
    );
    assert!(matches!(
        decode_request(&b),
        Err(ProtobufError::Envelope(_))
    ));

    // Invalid embedded JSON.
    let cr = Pb::new().msg(2, Pb::new().str(1, "{not json"));
    assert!(decode_request(&body("apps/v1", "ControllerRevision", cr)).is_err());
}

#[test]
fn durations_print_like_go() {
    for (ns, s) in [
        (0, "0s"),
        (1, "1ns"),
        (1_500, "1.5µs"),
        (2_000_000, "2ms"),
        (1_000_000_000, "1s"),
        (90_000_000_000, "1m30s"),
        (3_600_000_000_000, "1h0m0s"),
        (3_723_500_000_000, "1h2m3.5s"),
        (-5_000_000_000, "-5s"),
    ] {
        assert_eq!(go_duration(ns), s, "{ns}");
    }
}

/// Bodies kubectl v1.32 really sent for `kubectl create namespace|configmap|secret|
/// deployment|job|serviceaccount` (captured from its requests), against the JSON the same
/// commands print with `--dry-run=client -o json`: upstream's own JSON encoding.
#[test]
fn real_kubectl_bodies_decode_to_kubectls_json() {
    let cases: [(&str, &[u8], &str); 6] = [
        (
            "namespace",
            include_bytes!("testdata/namespace.pb"),
            include_str!("testdata/namespace.json"),
        ),
        (
            "configmap",
            include_bytes!("testdata/configmap.pb"),
            include_str!("testdata/configmap.json"),
        ),
        (
            "secret",
            include_bytes!("testdata/secret.pb"),
            include_str!("testdata/secret.json"),
        ),
        (
            "deployment",
            include_bytes!("testdata/deployment.pb"),
            include_str!("testdata/deployment.json"),
        ),
        (
            "job",
            include_bytes!("testdata/job.pb"),
            include_str!("testdata/job.json"),
        ),
        (
            "serviceaccount",
            include_bytes!("testdata/serviceaccount.pb"),
            include_str!("testdata/serviceaccount.json"),
        ),
    ];
    for (name, pb, json) in cases {
        let want: Value = match serde_json::from_str(json) {
            Ok(v) => v,
            Err(e) => panic!("{name}.json: {e}"),
        };
        assert_eq!(decode(pb), want, "{name}");
    }
}
