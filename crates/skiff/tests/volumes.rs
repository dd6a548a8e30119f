//! Persistent volumes through the real kubectl, on simulated nodes: the default
//! `local-path` StorageClass as k3s ships it, claims without a class defaulted to it and
//! waiting for their first consumer, a volume provisioned on the node the scheduler chose
//! and deleted with its claim; static volumes bound to matching claims (smallest first),
//! released and retained after their claim goes; a pod following its volume to the node the
//! volume is pinned to; claims and pods the scheduler cannot place yet, with upstream's
//! messages; bad claims refused with upstream's 422.

mod common;
use std::time::Duration;

use testkit::{eventually, Table, TestServer};

const LONG: Duration = Duration::from_secs(90);

fn claim(name: &str, class: Option<&str>, size: &str) -> String {
    let class = class
        .map(|c| format!("  storageClassName: {c}\n"))
        .unwrap_or_default();
    format!(
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {name}
spec:
{class}  accessModes: ["ReadWriteOnce"]
  resources:
    requests:
      storage: {size}
"#
    )
}

fn pod_using(name: &str, claim: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  containers:
  - name: app
    image: busybox:stable
    command: ["sleep", "3600"]
    volumeMounts:
    - name: data
      mountPath: /data
  volumes:
  - name: data
    persistentVolumeClaim:
      claimName: {claim}
"#
    )
}

/// A hostPath volume of class `manual`, optionally pinned to one node.
fn static_volume(name: &str, size: &str, node: Option<&str>) -> String {
    let affinity = node
        .map(|n| {
            format!(
                r#"  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - key: kubernetes.io/hostname
          operator: In
          values: ["{n}"]
"#
            )
        })
        .unwrap_or_default();
    format!(
        r#"apiVersion: v1
kind: PersistentVolume
metadata:
  name: {name}
spec:
  storageClassName: manual
  persistentVolumeReclaimPolicy: Retain
  capacity:
    storage: {size}
  accessModes: ["ReadWriteOnce"]
  hostPath:
    path: /tmp/skiff-static/{name}
{affinity}"#
    )
}

fn jsonpath(s: &TestServer, args: &[&str], path: &str) -> String {
    let mut a: Vec<&str> = args.to_vec();
    let p = format!("jsonpath={path}");
    a.extend(["-o", p.as_str()]);
    s.kubectl_ok(&a)
}

/// The one row of `kubectl get <what>`, keyed by header.
fn row(s: &TestServer, args: &[&str]) -> std::collections::HashMap<String, String> {
    let t = Table::parse(&s.kubectl_ok(args));
    let r = t.rows.first().cloned().unwrap_or_default();
    t.headers.iter().cloned().zip(r).collect()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    eventually(LONG, || {
        if f() {
            Ok(())
        } else {
            anyhow::bail!("waiting for {what}")
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn local_path_claim_is_provisioned_on_the_first_consumers_node_and_deleted_with_it() {
    let s = testkit::server!();
    let _nodes = testkit::simulated_nodes!(&s, 2);

    // The default class, as k3s ships it.
    let sc = row(&s, &["get", "sc"]);
    assert_eq!(sc["NAME"], "local-path (default)", "{sc:?}");
    assert_eq!(sc["PROVISIONER"], "rancher.io/local-path");
    assert_eq!(sc["RECLAIMPOLICY"], "Delete");
    assert_eq!(sc["VOLUMEBINDINGMODE"], "WaitForFirstConsumer");
    assert_eq!(sc["ALLOWVOLUMEEXPANSION"], "false");

    // A claim without a class gets the default one and waits for a consumer.
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &claim("data", None, "1Gi"));
    assert_eq!(
        jsonpath(&s, &["get", "pvc", "data"], "{.spec.storageClassName}"),
        "local-path"
    );
    wait_for("the WaitForFirstConsumer event", || {
        let d = s.kubectl_ok(&["describe", "pvc", "data"]);
        d.contains("WaitForFirstConsumer")
            && d.contains("waiting for first consumer to be created before binding")
    });
    let pvc = row(&s, &["get", "pvc", "data"]);
    assert_eq!(pvc["STATUS"], "Pending", "{pvc:?}");
    assert_eq!(
        jsonpath(&s, &["get", "pvc", "data"], "{.metadata.finalizers}"),
        r#"["kubernetes.io/pvc-protection"]"#
    );
    assert!(
        !s.kubectl_ok(&["get", "pv"]).contains("pvc-"),
        "nothing is provisioned before a pod uses the claim"
    );

    // A pod using it is scheduled; the volume is made on its node and bound.
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &pod_using("app", "data"));
    wait_for("the claim to be Bound", || {
        row(&s, &["get", "pvc", "data"])["STATUS"] == "Bound"
    });
    let uid = jsonpath(&s, &["get", "pvc", "data"], "{.metadata.uid}");
    let pv_name = format!("pvc-{uid}");
    let pvc = row(&s, &["get", "pvc", "data"]);
    assert_eq!(pvc["VOLUME"], pv_name);
    assert_eq!(pvc["CAPACITY"], "1Gi");
    assert_eq!(pvc["ACCESS MODES"], "RWO");
    assert_eq!(pvc["STORAGECLASS"], "local-path");
    wait_for("the pod to be bound", || {
        !jsonpath(&s, &["get", "pod", "app"], "{.spec.nodeName}").is_empty()
    });
    let node = jsonpath(&s, &["get", "pod", "app"], "{.spec.nodeName}");
    assert_eq!(
        jsonpath(
            &s,
            &["get", "pvc", "data"],
            "{.metadata.annotations.volume\\.kubernetes\\.io/selected-node}"
        ),
        node
    );
    let pv = s.kubectl_json(&["get", "pv", &pv_name, "-o", "json"]);
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0],
        serde_json::json!({"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}),
        "{pv}"
    );
    let expected_path = s
        .data_dir()
        .join("storage")
        .join(format!("{pv_name}_default_data"));
    assert_eq!(
        pv["spec"]["hostPath"]["path"],
        expected_path.display().to_string()
    );
    assert_eq!(
        pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"],
        "rancher.io/local-path"
    );
    assert_eq!(pv["spec"]["claimRef"]["uid"], uid.as_str());
    let pv_row = row(&s, &["get", "pv"]);
    assert_eq!(pv_row["NAME"], pv_name, "{pv_row:?}");
    assert_eq!(pv_row["CAPACITY"], "1Gi");
    assert_eq!(pv_row["ACCESS MODES"], "RWO");
    assert_eq!(pv_row["RECLAIM POLICY"], "Delete");
    assert_eq!(pv_row["STATUS"], "Bound");
    assert_eq!(pv_row["CLAIM"], "default/data");
    assert_eq!(pv_row["STORAGECLASS"], "local-path");
    let described = s.kubectl_ok(&["describe", "pvc", "data"]);
    for event in [
        "ExternalProvisioning",
        "Provisioning",
        "ProvisioningSucceeded",
    ] {
        assert!(described.contains(event), "{event} in:\n{described}");
    }
    wait_for("the pod to run", || {
        jsonpath(&s, &["get", "pod", "app"], "{.status.phase}") == "Running"
    });

    // The claim is protected while the pod uses it; both go, and the volume with them.
    s.kubectl_ok(&["delete", "pvc", "data", "--wait=false"]);
    assert!(
        !jsonpath(&s, &["get", "pvc", "data"], "{.metadata.deletionTimestamp}").is_empty(),
        "a claim in use stays until its pod is gone"
    );
    s.kubectl_ok(&["delete", "pod", "app"]);
    wait_for("the claim to go", || {
        !s.kubectl(&["get", "pvc", "data"]).status.success()
    });
    wait_for(
        "the provisioned volume to be deleted (reclaim policy Delete)",
        || !s.kubectl(&["get", "pv", &pv_name]).status.success(),
    );
}

#[test]
fn static_volumes_bind_by_size_are_retained_and_pin_their_pods() {
    let s = testkit::server!();
    let nodes = testkit::simulated_nodes!(&s, 2);
    let pinned_node = nodes.names()[1].clone();

    // Bad claims: upstream's 422 with the field, and nothing stored.
    let missing_modes = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: bad\nspec:\n  resources:\n    requests:\n      storage: 1Gi\n";
    let err = s.kubectl_stdin_err(&["create", "-f", "-"], missing_modes);
    assert!(
        err.contains(r#"PersistentVolumeClaim "bad" is invalid: spec.accessModes: Required value: at least 1 access mode is required"#),
        "{err}"
    );
    let bad_mode =
        claim("bad", Some("manual"), "1Gi").replace("ReadWriteOnce", "ReadWriteSometimes");
    let err = s.kubectl_stdin_err(&["create", "-f", "-"], &bad_mode);
    assert!(
        err.contains(r#"spec.accessModes: Unsupported value: "ReadWriteSometimes""#),
        "{err}"
    );
    let no_request = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: bad\nspec:\n  accessModes: [ReadWriteOnce]\n";
    let err = s.kubectl_stdin_err(&["create", "-f", "-"], no_request);
    assert!(
        err.contains("spec.resources[storage]: Required value"),
        "{err}"
    );
    assert!(!s.kubectl(&["get", "pvc", "bad"]).status.success());

    // Static volumes become Available.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &static_volume("static-1g", "1Gi", None),
    );
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &static_volume("static-3g", "3Gi", None),
    );
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &static_volume("pinned-5g", "5Gi", Some(&pinned_node)),
    );
    wait_for("the volumes to be Available", || {
        let t = Table::parse(&s.kubectl_ok(&["get", "pv"]));
        t.rows.len() == 3 && t.rows.iter().all(|r| r.contains(&"Available".to_string()))
    });

    // Immediate binding (no StorageClass object named "manual"): the smallest fit.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &claim("small", Some("manual"), "500Mi"),
    );
    wait_for("small to bind", || {
        row(&s, &["get", "pvc", "small"])["STATUS"] == "Bound"
    });
    let pvc = row(&s, &["get", "pvc", "small"]);
    assert_eq!(pvc["VOLUME"], "static-1g", "{pvc:?}");
    assert_eq!(pvc["CAPACITY"], "1Gi");
    let pv = row(&s, &["get", "pv", "static-1g"]);
    assert_eq!(pv["STATUS"], "Bound", "{pv:?}");
    assert_eq!(pv["CLAIM"], "default/small");
    assert_eq!(pv["RECLAIM POLICY"], "Retain");
    assert_eq!(
        jsonpath(
            &s,
            &["get", "pvc", "small"],
            "{.metadata.annotations.pv\\.kubernetes\\.io/bind-completed}"
        ),
        "yes"
    );
    assert_eq!(
        jsonpath(
            &s,
            &["get", "pv", "static-1g"],
            "{.metadata.annotations.pv\\.kubernetes\\.io/bound-by-controller}"
        ),
        "yes"
    );

    // Bigger than every volume: Pending, with upstream's reason.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &claim("huge", Some("manual"), "100Gi"),
    );
    wait_for("huge's ProvisioningFailed event", || {
        s.kubectl_ok(&["describe", "pvc", "huge"])
            .contains(r#"storageclass.storage.k8s.io "manual" not found"#)
    });
    assert_eq!(row(&s, &["get", "pvc", "huge"])["STATUS"], "Pending");

    // A claim that only the pinned volume fits; its pod follows the volume.
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &claim("big", Some("manual"), "4Gi"));
    wait_for("big to bind", || {
        row(&s, &["get", "pvc", "big"])["VOLUME"] == "pinned-5g"
    });
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &pod_using("follower", "big"));
    wait_for("follower to be scheduled", || {
        !jsonpath(&s, &["get", "pod", "follower"], "{.spec.nodeName}").is_empty()
    });
    assert_eq!(
        jsonpath(&s, &["get", "pod", "follower"], "{.spec.nodeName}"),
        pinned_node
    );

    // Pods whose claims cannot be used stay Pending with the scheduler's reason.
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &pod_using("orphan", "ghost"));
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &pod_using("waiter", "huge"));
    wait_for("FailedScheduling for the missing claim", || {
        s.kubectl_ok(&["describe", "pod", "orphan"])
            .contains(r#"0/2 nodes are available: persistentvolumeclaim "ghost" not found."#)
    });
    wait_for("FailedScheduling for the unbound immediate claim", || {
        s.kubectl_ok(&["describe", "pod", "waiter"])
            .contains("0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims.")
    });
    assert!(jsonpath(&s, &["get", "pod", "orphan"], "{.spec.nodeName}").is_empty());

    // Retain: the claim goes, the volume stays Released with its old claim.
    s.kubectl_ok(&["delete", "pvc", "small"]);
    wait_for("static-1g to be Released", || {
        row(&s, &["get", "pv", "static-1g"])["STATUS"] == "Released"
    });
    assert_eq!(
        row(&s, &["get", "pv", "static-1g"])["CLAIM"],
        "default/small"
    );
}

#[test]
fn the_default_class_is_made_once_and_a_users_edit_survives_restarts() {
    let mut s = testkit::server!();
    s.kubectl_ok(&[
        "annotate",
        "sc",
        "local-path",
        "storageclass.kubernetes.io/is-default-class=false",
        "--overwrite",
    ]);
    s.restart().expect("restart the server");
    let sc = row(&s, &["get", "sc"]);
    assert_eq!(sc["NAME"], "local-path", "the user's edit is kept: {sc:?}");
    // No default class now: a new claim keeps its empty class, as upstream.
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &claim("plain", None, "1Gi"));
    assert_eq!(
        jsonpath(&s, &["get", "pvc", "plain"], "{.spec.storageClassName}"),
        ""
    );
    // Deleted, it comes back at the next start (k3s re-applies its addons the same way;
    // `--disable local-storage` turns it off).
    s.kubectl_ok(&["delete", "sc", "local-path"]);
    s.restart().expect("restart the server");
    assert_eq!(row(&s, &["get", "sc"])["NAME"], "local-path (default)");
}
