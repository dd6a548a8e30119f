//! `kubectl describe` for a pod, deployment, service, configmap and node.

mod common;
use common::*;
use testkit::describe_field;

#[test]
fn describe_pod() {
    let s = testkit::server!();
    // A scheduler nobody runs keeps the pod Pending without events (the default
    // scheduler would report that there are no nodes).
    let manifest =
        pod("hello", "busybox:stable").replacen("spec:\n", "spec:\n  schedulerName: nobody\n", 1);
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &manifest);
    let out = s.kubectl_ok(&["describe", "pod", "hello"]);
    let f = |k| describe_field(&out, k).unwrap_or_else(|| panic!("no {k}: in\n{out}"));
    assert_eq!(f("Name"), "hello");
    assert_eq!(f("Namespace"), "default");
    assert_eq!(f("Node"), "<none>");
    assert_eq!(f("Labels"), "app=hello");
    assert_eq!(f("Status"), "Pending");
    assert_eq!(f("QoS Class"), "BestEffort");
    assert_eq!(f("Events"), "<none>");
    assert_contains(&out, "Containers:\n  main:\n");
    assert_contains(&out, "    Image:");
    assert_contains(&out, "busybox:stable");
}

#[test]
fn describe_deployment() {
    let s = testkit::server!();
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &deployment("web", 3, "busybox:stable"),
    );
    // Wait for the controller: three pods made, none available (there are no nodes).
    testkit::eventually(std::time::Duration::from_secs(30), || {
        let n = s.kubectl_ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.status.updatedReplicas}",
        ]);
        anyhow::ensure!(n.trim() == "3", "updated {n}");
        Ok(())
    })
    .expect("deployment controller");
    let out = s.kubectl_ok(&["describe", "deployment", "web"]);
    let f = |k| describe_field(&out, k).unwrap_or_else(|| panic!("no {k}: in\n{out}"));
    assert_eq!(f("Name"), "web");
    assert_eq!(f("Namespace"), "default");
    assert_eq!(f("Selector"), "app=web");
    assert_eq!(
        f("Replicas"),
        "3 desired | 3 updated | 3 total | 0 available | 3 unavailable"
    );
    assert_eq!(f("StrategyType"), "RollingUpdate");
    assert_eq!(f("MinReadySeconds"), "0");
    assert_eq!(
        f("RollingUpdateStrategy"),
        "25% max unavailable, 25% max surge"
    );
    // The last-applied annotation is hidden by describe; the controller's revision shows.
    assert_eq!(f("Annotations"), "deployment.kubernetes.io/revision: 1");
    assert_contains(&out, "Pod Template:\n  Labels:  app=web\n");
    assert_contains(&out, "busybox:stable");
}

#[test]
fn describe_service() {
    let s = testkit::server!();
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: web\n  ports:\n  - port: 80\n    targetPort: 8080\n",
    );
    let out = s.kubectl_ok(&["describe", "service", "web"]);
    let f = |k| describe_field(&out, k).unwrap_or_else(|| panic!("no {k}: in\n{out}"));
    assert_eq!(f("Name"), "web");
    assert_eq!(f("Selector"), "app=web");
    assert_eq!(f("Type"), "ClusterIP");
    assert_eq!(f("IP Family Policy"), "SingleStack");
    assert_eq!(f("IP Families"), "IPv4");
    assert!(f("IP").starts_with("10.43."), "{out}");
    assert_eq!(f("Port"), "<unset>  80/TCP");
    assert_eq!(f("TargetPort"), "8080/TCP");
    assert_eq!(f("Session Affinity"), "None");
}

#[test]
fn describe_configmap() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "configmap", "cfg", "--from-literal=color=blue"]);
    let out = s.kubectl_ok(&["describe", "configmap", "cfg"]);
    assert_eq!(describe_field(&out, "Name").as_deref(), Some("cfg"));
    assert_eq!(describe_field(&out, "Labels").as_deref(), Some("<none>"));
    assert_contains(&out, "Data\n====\ncolor:\n----\nblue\n");
}

#[test]
fn describe_node() {
    let s = testkit::server!();
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &node("worker-1"));
    let out = s.kubectl_ok(&["describe", "node", "worker-1"]);
    let f = |k| describe_field(&out, k).unwrap_or_else(|| panic!("no {k}: in\n{out}"));
    assert_eq!(f("Name"), "worker-1");
    assert_eq!(f("Roles"), "<none>");
    assert_eq!(f("Labels"), "kubernetes.io/hostname=worker-1");
    assert_contains(&out, "kubernetes.io/os=linux");
    assert_eq!(f("Taints"), "<none>");
    assert_eq!(f("Unschedulable"), "false");
    assert_eq!(f("Non-terminated Pods"), "(0 in total)");

    // A pod bound to the node shows up (describe lists pods with a spec.nodeName field selector).
    let bound = pod("bound", "busybox:stable").replace("spec:\n", "spec:\n  nodeName: worker-1\n");
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &bound);
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &pod("unbound", "busybox:stable"));
    let out = s.kubectl_ok(&["describe", "node", "worker-1"]);
    assert_eq!(
        describe_field(&out, "Non-terminated Pods").as_deref(),
        Some("(1 in total)"),
        "{out}"
    );
    assert_contains(&out, "bound");
    assert!(!out.contains("unbound"), "{out}");
}
