//! Changing objects: label, annotate (--overwrite), edit with a scripted EDITOR, scale,
//! set image, patch (strategic, merge, json), taint, replace with a stale resourceVersion.

mod common;
use common::*;
use testkit::{describe_field, Table};

#[test]
fn label_with_and_without_overwrite() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "configmap", "cfg"]);
    assert_eq!(
        s.kubectl_ok(&["label", "cm", "cfg", "env=prod"]).trim(),
        "configmap/cfg labeled"
    );
    let err = s.kubectl_err(&["label", "cm", "cfg", "env=dev"]);
    assert_eq!(
        err.trim(),
        "error: 'env' already has a value (prod), and --overwrite is false"
    );
    assert_eq!(
        s.kubectl_ok(&["label", "cm", "cfg", "env=dev", "--overwrite"])
            .trim(),
        "configmap/cfg labeled"
    );
    let t = Table::parse(&s.kubectl_ok(&["get", "cm", "cfg", "--show-labels"]));
    assert_eq!(t.get("cfg", "LABELS").as_deref(), Some("env=dev"));
    assert_eq!(
        s.kubectl_ok(&["label", "cm", "cfg", "env-"]).trim(),
        "configmap/cfg unlabeled"
    );
    let t = Table::parse(&s.kubectl_ok(&["get", "cm", "cfg", "--show-labels"]));
    assert_eq!(t.get("cfg", "LABELS").as_deref(), Some("<none>"));
}

#[test]
fn label_does_not_bump_generation() {
    let s = testkit::server!();
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &deployment("web", 1, "busybox:stable"),
    );
    s.kubectl_ok(&["label", "deploy", "web", "team=a"]);
    let d = s.kubectl_json(&["get", "deploy", "web"]);
    assert_eq!(
        d["metadata"]["generation"], 1,
        "metadata-only change keeps generation"
    );
    assert_eq!(d["metadata"]["labels"]["team"], "a");
}

#[test]
fn annotate_with_and_without_overwrite() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "configmap", "cfg"]);
    assert_eq!(
        s.kubectl_ok(&["annotate", "cm", "cfg", "note=first"])
            .trim(),
        "configmap/cfg annotated"
    );
    let err = s.kubectl_err(&["annotate", "cm", "cfg", "note=second"]);
    assert_eq!(
        err.trim(),
        "error: --overwrite is false but found the following declared annotation(s): 'note' already has a value (first)"
    );
    s.kubectl_ok(&["annotate", "cm", "cfg", "note=second", "--overwrite"]);
    assert_eq!(
        s.kubectl_ok(&[
            "get",
            "cm",
            "cfg",
            "-o",
            "jsonpath={.metadata.annotations.note}"
        ]),
        "second"
    );
    let out = s.kubectl_ok(&["describe", "cm", "cfg"]);
    assert_eq!(
        describe_field(&out, "Annotations").as_deref(),
        Some("note: second")
    );
}

#[test]
fn edit_with_scripted_editor() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "configmap", "cfg", "--from-literal=color=blue"]);
    let out = s.run_ok(
        s.kubectl_cmd(&["edit", "cm", "cfg"])
            .env("EDITOR", "sed -i s/blue/green/"),
    );
    assert_eq!(out.trim(), "configmap/cfg edited");
    assert_eq!(
        s.kubectl_ok(&["get", "cm", "cfg", "-o", "jsonpath={.data.color}"]),
        "green"
    );

    // An editor that changes nothing: upstream says so and changes nothing.
    let out = s
        .kubectl_cmd(&["edit", "cm", "cfg"])
        .env("EDITOR", "true")
        .output()
        .unwrap();
    assert!(out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_contains(&all, "Edit cancelled, no changes made.");

    // A deployment edited through a script file.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &deployment("web", 2, "busybox:stable"),
    );
    let script = s.write_file(
        "editor.sh",
        "#!/bin/sh\nsed -i 's/replicas: 2/replicas: 6/' \"$1\"\n",
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = s.run_ok(
        s.kubectl_cmd(&["edit", "deploy", "web"])
            .env("EDITOR", &script),
    );
    assert_eq!(out.trim(), "deployment.apps/web edited");
    assert_eq!(
        s.kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "6"
    );
}

#[test]
fn edit_to_an_invalid_object_is_rejected() {
    let s = testkit::server!();
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &deployment("web", 2, "busybox:stable"),
    );
    let script = s.write_file(
        "editor.sh",
        "#!/bin/sh\nsed -i 's/replicas: 2/replicas: -1/' \"$1\"\n",
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = s
        .kubectl_cmd(&["edit", "deploy", "web"])
        .env("EDITOR", &script)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // kubectl re-opens the editor with the server's error; the unchanged retry gives up.
    assert_contains(&all, r#"deployments.apps "web" is invalid"#);
    assert_contains(&all, "Edit cancelled, no valid changes were saved.");
    assert_eq!(
        s.kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "2"
    );
}

#[test]
fn scale_deployment() {
    let s = testkit::server!();
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &deployment("web", 1, "busybox:stable"),
    );
    assert_eq!(
        s.kubectl_ok(&["scale", "deploy", "web", "--replicas=5"])
            .trim(),
        "deployment.apps/web scaled"
    );
    assert_eq!(
        s.kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "5"
    );
    let t = Table::parse(&s.kubectl_ok(&["get", "deploy", "web"]));
    assert_eq!(t.get("web", "READY").as_deref(), Some("0/5"));
    // The scale subresource.
    let raw = s.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/apps/v1/namespaces/default/deployments/web/scale",
    ]);
    let scale: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["spec"]["replicas"], 5);
    assert_eq!(scale["status"]["selector"], "app=web");
    // A precondition that does not hold.
    let err = s.kubectl_err(&[
        "scale",
        "deploy",
        "web",
        "--current-replicas=3",
        "--replicas=1",
    ]);
    assert_contains(&err, "Expected replicas to be 3, was 5");
    assert_eq!(
        s.kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "5"
    );
}

#[test]
fn set_image() {
    let s = testkit::server!();
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &deployment("web", 1, "busybox:stable"),
    );
    assert_eq!(
        s.kubectl_ok(&[
            "set",
            "image",
            "deploy/web",
            "web=registry.local/skiff-busybox:v2"
        ])
        .trim(),
        "deployment.apps/web image updated"
    );
    let d = s.kubectl_json(&["get", "deploy", "web"]);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.local/skiff-busybox:v2"
    );
    assert_eq!(d["metadata"]["generation"], 2);
    let err = s.kubectl_err(&["set", "image", "deploy/web", "nosuch=busybox:stable"]);
    assert_contains(&err, "unable to find container named \"nosuch\"");
}

#[test]
fn patch_strategic_merge_and_json() {
    let s = testkit::server!();
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &deployment("web", 1, "busybox:stable"),
    );

    // Strategic merge (the default): containers merge by name, the image stays.
    let out = s.kubectl_ok(&[
        "patch", "deploy", "web", "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"MODE","value":"fast"}]}]}}}}"#,
    ]);
    assert_eq!(out.trim(), "deployment.apps/web patched");
    let d = s.kubectl_json(&["get", "deploy", "web"]);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "busybox:stable");
    assert_eq!(c["env"][0]["value"], "fast");

    // The same patch again changes nothing.
    let out = s.kubectl_ok(&[
        "patch", "deploy", "web", "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"MODE","value":"fast"}]}]}}}}"#,
    ]);
    assert_eq!(out.trim(), "deployment.apps/web patched (no change)");

    // JSON merge patch.
    s.kubectl_ok(&[
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":3}}"#,
    ]);
    assert_eq!(
        s.kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "3"
    );

    // JSON patch.
    s.kubectl_ok(&[
        "patch", "deploy", "web", "--type=json", "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":7},{"op":"add","path":"/metadata/labels/patched","value":"yes"}]"#,
    ]);
    let d = s.kubectl_json(&["get", "deploy", "web"]);
    assert_eq!(d["spec"]["replicas"], 7);
    assert_eq!(d["metadata"]["labels"]["patched"], "yes");

    // A JSON patch whose test fails changes nothing.
    let err = s.kubectl_err(&[
        "patch", "deploy", "web", "--type=json", "-p",
        r#"[{"op":"test","path":"/spec/replicas","value":1},{"op":"replace","path":"/spec/replicas","value":9}]"#,
    ]);
    assert!(!err.is_empty());
    assert_eq!(
        s.kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "7"
    );
}

#[test]
fn merge_patch_replaces_lists() {
    let s = testkit::server!();
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &deployment("web", 1, "busybox:stable"),
    );
    // A JSON merge patch replaces the containers list as a whole.
    s.kubectl_ok(&[
        "patch", "deploy", "web", "--type=merge", "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"other","image":"busybox:1.36"}]}}}}"#,
    ]);
    let d = s.kubectl_json(&["get", "deploy", "web"]);
    let cs = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(cs.len(), 1);
    assert_eq!(cs[0]["name"], "other");
}

#[test]
fn taint_node() {
    let s = testkit::server!();
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &node("worker-1"));
    assert_eq!(
        s.kubectl_ok(&["taint", "node", "worker-1", "dedicated=gpu:NoSchedule"])
            .trim(),
        "node/worker-1 tainted"
    );
    let out = s.kubectl_ok(&["describe", "node", "worker-1"]);
    assert_eq!(
        describe_field(&out, "Taints").as_deref(),
        Some("dedicated=gpu:NoSchedule")
    );
    let n = s.kubectl_json(&["get", "node", "worker-1"]);
    assert_eq!(n["spec"]["taints"][0]["key"], "dedicated");
    assert_eq!(n["spec"]["taints"][0]["effect"], "NoSchedule");

    let err = s.kubectl_err(&["taint", "node", "worker-1", "dedicated=cpu:NoSchedule"]);
    assert_contains(
        &err,
        "already has dedicated taint(s) with same effect(s) and --overwrite is false",
    );

    assert_eq!(
        s.kubectl_ok(&["taint", "node", "worker-1", "dedicated=gpu:NoSchedule-"])
            .trim(),
        "node/worker-1 untainted"
    );
    let out = s.kubectl_ok(&["describe", "node", "worker-1"]);
    assert_eq!(describe_field(&out, "Taints").as_deref(), Some("<none>"));
}

#[test]
fn cordon_and_uncordon_node() {
    let s = testkit::server!();
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &node("worker-1"));
    assert_eq!(
        s.kubectl_ok(&["cordon", "worker-1"]).trim(),
        "node/worker-1 cordoned"
    );
    let t = Table::parse(&s.kubectl_ok(&["get", "node", "worker-1"]));
    assert_eq!(
        t.get("worker-1", "STATUS").as_deref(),
        Some("Unknown,SchedulingDisabled")
    );
    assert_eq!(
        s.kubectl_ok(&["uncordon", "worker-1"]).trim(),
        "node/worker-1 uncordoned"
    );
}

#[test]
fn replace_with_stale_resource_version_conflicts() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "configmap", "cfg", "--from-literal=a=1"]);
    let stale = s.kubectl_ok(&["get", "cm", "cfg", "-o", "yaml"]);
    s.kubectl_ok(&["label", "cm", "cfg", "bumped=yes"]);
    let f = s.write_file("stale.yaml", &stale.replace("a: \"1\"", "a: \"2\""));
    let err = s.kubectl_err(&["replace", "-f", f.to_str().unwrap()]);
    assert_contains(&err, "Error from server (Conflict)");
    assert_contains(
        &err,
        r#"Operation cannot be fulfilled on configmaps "cfg": the object has been modified; please apply your changes to the latest version and try again"#,
    );
    assert_eq!(
        s.kubectl_ok(&["get", "cm", "cfg", "-o", "jsonpath={.data.a}"]),
        "1"
    );
    // Without a resourceVersion, replace wins.
    let fresh = s.kubectl_json(&["get", "cm", "cfg"]);
    let mut fresh = fresh.clone();
    fresh["data"]["a"] = "3".into();
    fresh["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let out = s.kubectl_stdin_ok(&["replace", "-f", "-"], &fresh.to_string());
    assert_eq!(out.trim(), "configmap/cfg replaced");
    assert_eq!(
        s.kubectl_ok(&["get", "cm", "cfg", "-o", "jsonpath={.data.a}"]),
        "3"
    );
}
