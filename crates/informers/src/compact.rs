//! Giving back the spare capacity that decoding leaves in an object's lists.
//!
//! serde fills a `Vec` element by element without knowing the length, so a list grows
//! like any pushed-to `Vec`: one element gets room for four when elements are small
//! (k8s-openapi's are 100-800 bytes), five conditions get room for eight. A decoded Pod
//! of a Deployment with one container and the service-account volume takes 18.7 KB, of
//! which 3.5 KB is such spare room, most of it three unused `ContainerStatus` slots of
//! 752 bytes each. The informers keep every Pod of the cluster for as long as it exists
//! (150,000 in issue 3's memory figure), so the lists of the objects that are kept by the
//! hundred thousand are shrunk to their length once, right after decoding.

use std::any::Any;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Shrink the lists of `object` to fit, if it is of a kind kept by the hundred thousand
/// (Pods) or by the thousand (Nodes); other kinds are left as decoded.
pub fn release_spare_capacity<K: Any>(object: &mut K) {
    let object: &mut dyn Any = object;
    if let Some(pod) = object.downcast_mut::<Pod>() {
        compact_pod(pod);
    } else if let Some(node) = object.downcast_mut::<Node>() {
        compact_node(node);
    }
}

fn fit<T>(list: &mut Option<Vec<T>>) {
    if let Some(list) = list {
        list.shrink_to_fit();
    }
}

fn compact_meta(meta: &mut ObjectMeta) {
    fit(&mut meta.owner_references);
    fit(&mut meta.finalizers);
}

fn compact_container(container: &mut Container) {
    fit(&mut container.command);
    fit(&mut container.args);
    fit(&mut container.env);
    fit(&mut container.env_from);
    fit(&mut container.ports);
    fit(&mut container.volume_mounts);
    fit(&mut container.volume_devices);
    fit(&mut container.resize_policy);
}

fn compact_pod(pod: &mut Pod) {
    compact_meta(&mut pod.metadata);
    if let Some(spec) = &mut pod.spec {
        spec.containers.iter_mut().for_each(compact_container);
        spec.containers.shrink_to_fit();
        if let Some(init) = &mut spec.init_containers {
            init.iter_mut().for_each(compact_container);
            init.shrink_to_fit();
        }
        if let Some(volumes) = &mut spec.volumes {
            for volume in volumes.iter_mut() {
                if let Some(projected) = &mut volume.projected {
                    fit(&mut projected.sources);
                }
            }
            volumes.shrink_to_fit();
        }
        fit(&mut spec.tolerations);
        fit(&mut spec.image_pull_secrets);
        fit(&mut spec.host_aliases);
        fit(&mut spec.topology_spread_constraints);
        fit(&mut spec.readiness_gates);
        fit(&mut spec.scheduling_gates);
    }
    if let Some(status) = &mut pod.status {
        fit(&mut status.conditions);
        fit(&mut status.container_statuses);
        fit(&mut status.init_container_statuses);
        fit(&mut status.ephemeral_container_statuses);
        fit(&mut status.pod_ips);
        fit(&mut status.host_ips);
    }
}

fn compact_node(node: &mut Node) {
    compact_meta(&mut node.metadata);
    if let Some(spec) = &mut node.spec {
        fit(&mut spec.taints);
        fit(&mut spec.pod_cidrs);
    }
    if let Some(status) = &mut node.status {
        fit(&mut status.addresses);
        fit(&mut status.conditions);
        fit(&mut status.images);
        fit(&mut status.volumes_attached);
        fit(&mut status.volumes_in_use);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Deployment's pod as the API serves it once a node reports it Running.
    const POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-1","namespace":"default",
      "ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web","uid":"u","controller":true}]},
      "spec":{"containers":[{"name":"c","image":"busybox","volumeMounts":[{"name":"v","mountPath":"/v"}]}],
        "tolerations":[{"key":"a","operator":"Exists"},{"key":"b","operator":"Exists"}],
        "volumes":[{"name":"v","projected":{"sources":[{"serviceAccountToken":{"path":"token"}},
          {"configMap":{"name":"kube-root-ca.crt"}},{"downwardAPI":{}}]}}]},
      "status":{"phase":"Running","conditions":[{"type":"A","status":"True"},{"type":"B","status":"True"},
        {"type":"C","status":"True"},{"type":"D","status":"True"},{"type":"E","status":"True"}],
        "containerStatuses":[{"name":"c","image":"busybox","imageID":"","ready":true,"restartCount":0}],
        "podIPs":[{"ip":"10.42.0.5"}]}}"#;

    #[test]
    fn a_pods_lists_are_shrunk_to_their_length_and_keep_their_contents() {
        let decoded: Pod = serde_json::from_str(POD).unwrap();
        let mut pod = decoded.clone();
        release_spare_capacity(&mut pod);
        assert_eq!(pod, decoded, "the object is unchanged");
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.conditions.as_ref().unwrap().capacity(), 5);
        assert_eq!(status.container_statuses.as_ref().unwrap().capacity(), 1);
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(
            spec.containers[0]
                .volume_mounts
                .as_ref()
                .unwrap()
                .capacity(),
            1
        );
        assert_eq!(spec.tolerations.as_ref().unwrap().capacity(), 2);
        let volume = &spec.volumes.as_ref().unwrap()[0];
        let sources = volume.projected.as_ref().unwrap().sources.as_ref().unwrap();
        assert_eq!(sources.capacity(), 3);
    }

    #[test]
    fn other_kinds_are_left_alone() {
        let mut names = vec![String::from("a")];
        names.reserve(10);
        let capacity = names.capacity();
        release_spare_capacity(&mut names);
        assert_eq!(names.capacity(), capacity);
    }
}
