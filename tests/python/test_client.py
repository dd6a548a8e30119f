"""The Python `kubernetes` client (PyPI) against a real skiff server: list, create, get,
patch (merge and strategic), label selectors, watch from a resourceVersion, delete."""
import json
import threading
import time

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException


def deployment(name, replicas=1, image="busybox:stable"):
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name=name, image=image)]),
            ),
        ),
    )


def continue_token(page):
    # The attribute's name differs between client generations.
    meta = page.metadata
    return getattr(meta, "var_continue", None) or getattr(meta, "_continue", None)


def test_list_namespaces(api):
    names = {n.metadata.name for n in client.CoreV1Api(api).list_namespace().items}
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names


def test_version_and_discovery(api):
    v = client.VersionApi(api).get_code()
    assert v.major == "1"
    groups = {g.name for g in client.ApisApi(api).get_api_versions().groups}
    assert {"apps", "batch", "networking.k8s.io"} <= groups


def test_configmap_create_get_patch_delete(api, ns):
    core = client.CoreV1Api(api)
    created = core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cfg", labels={"app": "a"}), data={"k": "v"})
    )
    assert created.metadata.uid
    assert created.metadata.resource_version
    got = core.read_namespaced_config_map("cfg", ns)
    assert got.data == {"k": "v"}
    assert got.metadata.uid == created.metadata.uid

    # A dict body is sent as a strategic merge patch; `data` is a map, so the key is added.
    patched = core.patch_namespaced_config_map("cfg", ns, {"data": {"k2": "v2"}})
    assert patched.data == {"k": "v", "k2": "v2"}
    assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)

    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cfg")))
    assert e.value.status == 409

    core.delete_namespaced_config_map("cfg", ns)
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("cfg", ns)
    assert e.value.status == 404


def test_deployment_merge_and_strategic_patch(api, ns):
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(ns, deployment("web", 1))
    d = apps.read_namespaced_deployment("web", ns)
    assert d.spec.strategy.type == "RollingUpdate"
    assert d.metadata.generation == 1

    # Strategic merge patch (the client's default for dict bodies): containers merge by name.
    body = {"spec": {"template": {"spec": {"containers": [{"name": "web", "env": [{"name": "A", "value": "1"}]}]}}}}
    d = apps.patch_namespaced_deployment("web", ns, body)
    c = d.spec.template.spec.containers
    assert len(c) == 1 and c[0].image == "busybox:stable" and c[0].env[0].value == "1"
    assert d.metadata.generation == 2

    # JSON merge patch, chosen explicitly with the content type.
    d = apps.patch_namespaced_deployment(
        "web", ns, {"spec": {"replicas": 4}}, _content_type="application/merge-patch+json"
    )
    assert d.spec.replicas == 4

    # The scale subresource.
    s = apps.read_namespaced_deployment_scale("web", ns)
    assert s.spec.replicas == 4
    s = apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 2}})
    assert apps.read_namespaced_deployment("web", ns).spec.replicas == 2

    apps.delete_namespaced_deployment("web", ns)
    with pytest.raises(ApiException) as e:
        apps.read_namespaced_deployment("web", ns)
    assert e.value.status == 404


def test_invalid_deployment_is_422_with_field(api, ns):
    d = deployment("bad")
    d.spec.template.metadata.labels = {"app": "other"}
    with pytest.raises(ApiException) as e:
        client.AppsV1Api(api).create_namespaced_deployment(ns, d)
    assert e.value.status == 422
    st = json.loads(e.value.body)
    assert st["reason"] == "Invalid"
    assert "spec.template.metadata.labels" in [c["field"] for c in st["details"]["causes"]]


def test_list_with_label_selectors(api, ns):
    core = client.CoreV1Api(api)
    for name, labels in [("a", {"tier": "front", "app": "x"}), ("b", {"tier": "back", "app": "x"}), ("c", {"app": "y"})]:
        core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels=labels)))

    def names(sel):
        # kube-root-ca.crt (the namespace's root CA, unlabelled) matches selectors like "!tier".
        items = core.list_namespaced_config_map(ns, label_selector=sel).items
        return sorted(i.metadata.name for i in items if i.metadata.name != "kube-root-ca.crt")

    assert names("app=x") == ["a", "b"]
    assert names("tier in (front)") == ["a"]
    assert names("app=x,tier!=front") == ["b"]
    assert names("!tier") == ["c"]
    # Paging with limit/continue returns everything once.
    page = core.list_namespaced_config_map(ns, limit=2)
    seen = [i.metadata.name for i in page.items]
    token = continue_token(page)
    assert token
    page = core.list_namespaced_config_map(ns, limit=2, _continue=token)
    seen += [i.metadata.name for i in page.items]
    assert sorted(n for n in seen if n in {"a", "b", "c"}) == ["a", "b", "c"]


def test_watch_from_resource_version(api, ns):
    core = client.CoreV1Api(api)
    rv = core.list_namespaced_config_map(ns).metadata.resource_version

    def changes():
        time.sleep(0.5)
        core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="w"), data={"v": "1"}))
        core.patch_namespaced_config_map("w", ns, {"data": {"v": "2"}})
        core.delete_namespaced_config_map("w", ns)

    t = threading.Thread(target=changes)
    t.start()
    seen = []
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=15):
        if ev["object"].metadata.name != "w":
            continue
        seen.append((ev["type"], ev["object"].data.get("v") if ev["object"].data else None))
        if ev["type"] == "DELETED":
            w.stop()
    t.join()
    assert [s[0] for s in seen] == ["ADDED", "MODIFIED", "DELETED"]
    assert seen[0][1] == "1" and seen[1][1] == "2"


def test_watch_without_initial_events_starts_now(api, ns):
    """sendInitialEvents=false without a resourceVersion: no ADDED for what exists."""
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="before")))

    def later():
        time.sleep(0.5)
        core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="after")))

    t = threading.Thread(target=later)
    t.start()
    seen = []
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_config_map, ns, send_initial_events=False,
                       resource_version_match="NotOlderThan", timeout_seconds=10):
        seen.append((ev["type"], ev["object"].metadata.name))
        if ev["object"].metadata.name == "after":
            w.stop()
    t.join()
    assert seen == [("ADDED", "after")]


def test_bad_list_and_watch_options_are_invalid_list_options(api, ns):
    core = client.CoreV1Api(api)
    with pytest.raises(ApiException) as e:
        core.list_namespaced_config_map(ns, watch=True, resource_version_match="NotOlderThan",
                                        _preload_content=False)
    assert e.value.status == 422
    st = json.loads(e.value.body)
    assert st["reason"] == "Invalid"
    assert st["details"]["kind"] == "ListOptions" and st["details"]["group"] == "meta.k8s.io"
    assert st["details"]["causes"] == [{
        "reason": "FieldValueForbidden",
        "field": "resourceVersionMatch",
        "message": "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
    }]
    with pytest.raises(ApiException) as e:
        core.list_namespaced_config_map(ns, send_initial_events=False)
    assert e.value.status == 422
    assert json.loads(e.value.body)["message"] == (
        'ListOptions.meta.k8s.io "" is invalid: sendInitialEvents: Forbidden: '
        "sendInitialEvents is forbidden for list")


def test_watch_deployments_sees_modifications(api, ns):
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(ns, deployment("watched"))
    rv = apps.list_namespaced_deployment(ns).metadata.resource_version
    apps.patch_namespaced_deployment("watched", ns, {"spec": {"replicas": 3}})
    w = watch.Watch()
    # The deployment controller also modifies it (revision annotation, status), so the
    # patch is one MODIFIED event among others.
    for ev in w.stream(apps.list_namespaced_deployment, ns, resource_version=rv, timeout_seconds=10):
        assert ev["type"] == "MODIFIED"
        if ev["object"].spec.replicas == 3:
            w.stop()
            break
    else:
        pytest.fail("no MODIFIED event with replicas 3")


def test_delete_namespace_cascades(api):
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="py-doomed")))
    core.create_namespaced_config_map("py-doomed", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x")))
    core.delete_namespace("py-doomed")
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            core.read_namespace("py-doomed")
        except ApiException as e:
            assert e.status == 404
            break
        time.sleep(0.2)
    else:
        pytest.fail("namespace not removed within 30s")
