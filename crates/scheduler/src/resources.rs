//! Resource arithmetic the scheduler needs: a pod's effective requests (upstream's rule for
//! init and sidecar containers plus overhead), a node's allocatable, and the "non-zero"
//! requests that scoring uses for containers that ask for nothing.

use std::collections::BTreeMap;

use api::quantity::Quantity;
use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as WireQuantity;

/// Scoring's stand-in CPU request for a container without one (upstream
/// `DefaultMilliCPURequest`, 0.1 core).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Scoring's stand-in memory request (upstream `DefaultMemoryRequest`, 200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// Amounts of every resource the scheduler accounts for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// Only meaningful for a node's allocatable (`pods`).
    pub allowed_pods: i64,
    /// Extended resources, hugepages and anything else by name.
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Read a resource list (requests, allocatable, overhead). Quantities that do not parse
    /// were refused by the API already; they count as zero here.
    pub fn from_list(list: Option<&BTreeMap<String, WireQuantity>>) -> Resources {
        let mut r = Resources::default();
        for (name, q) in list.into_iter().flatten() {
            let Ok(q) = Quantity::parse(&q.0) else {
                continue;
            };
            match name.as_str() {
                "cpu" => r.milli_cpu = q.as_milli(),
                "memory" => r.memory = q.as_bytes(),
                "ephemeral-storage" => r.ephemeral_storage = q.as_bytes(),
                "pods" => r.allowed_pods = q.value(),
                other => {
                    r.scalar.insert(other.to_string(), q.value());
                }
            }
        }
        r
    }

    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_insert(0) += v;
        }
    }

    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_insert(0) -= v;
        }
    }

    /// Per resource, the larger of the two.
    pub fn max_with(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
    }

    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.values().all(|v| *v == 0)
    }

    pub fn scalar(&self, name: &str) -> i64 {
        self.scalar.get(name).copied().unwrap_or(0)
    }
}

fn container_requests(c: &Container) -> Resources {
    Resources::from_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()))
}

/// The pod's effective requests, as upstream `resourcehelper.PodRequests`: the sum of the
/// app containers, or the largest init container if larger (restartable "sidecar" init
/// containers run alongside everything after them, so they add to both), plus overhead.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::default();
    };
    let mut reqs = Resources::default();
    for c in &spec.containers {
        reqs.add(&container_requests(c));
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let mut r = container_requests(c);
        if c.restart_policy.as_deref() == Some("Always") {
            reqs.add(&r);
            sidecars.add(&r);
            r = sidecars.clone();
        } else {
            r.add(&sidecars);
        }
        init_max.max_with(&r);
    }
    reqs.max_with(&init_max);
    if let Some(overhead) = spec.overhead.as_ref() {
        reqs.add(&Resources::from_list(Some(overhead)));
    }
    reqs
}

/// CPU and memory requests with the scoring defaults standing in for unset requests (upstream
/// `GetNonzeroRequests`, applied per container, with the same init-container rule).
pub fn pod_non_zero_requests(pod: &Pod) -> (i64, i64) {
    let Some(spec) = pod.spec.as_ref() else {
        return (0, 0);
    };
    let non_zero = |c: &Container| {
        let list = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        let r = Resources::from_list(list);
        let has = |n: &str| list.is_some_and(|l| l.contains_key(n));
        (
            if has("cpu") {
                r.milli_cpu
            } else {
                DEFAULT_MILLI_CPU_REQUEST
            },
            if has("memory") {
                r.memory
            } else {
                DEFAULT_MEMORY_REQUEST
            },
        )
    };
    let (mut cpu, mut mem) = (0, 0);
    for c in &spec.containers {
        let (c, m) = non_zero(c);
        cpu += c;
        mem += m;
    }
    let (mut side_cpu, mut side_mem, mut init_cpu, mut init_mem) = (0, 0, 0, 0);
    for c in spec.init_containers.iter().flatten() {
        let (mut c_cpu, mut c_mem) = non_zero(c);
        if c.restart_policy.as_deref() == Some("Always") {
            cpu += c_cpu;
            mem += c_mem;
            side_cpu += c_cpu;
            side_mem += c_mem;
            c_cpu = side_cpu;
            c_mem = side_mem;
        } else {
            c_cpu += side_cpu;
            c_mem += side_mem;
        }
        init_cpu = init_cpu.max(c_cpu);
        init_mem = init_mem.max(c_mem);
    }
    cpu = cpu.max(init_cpu);
    mem = mem.max(init_mem);
    if let Some(overhead) = spec.overhead.as_ref() {
        let o = Resources::from_list(Some(overhead));
        cpu += o.milli_cpu;
        mem += o.memory;
    }
    (cpu, mem)
}

/// What the node offers pods (`status.allocatable`, as upstream: capacity is not used).
pub fn node_allocatable(node: &Node) -> Resources {
    Resources::from_list(node.status.as_ref().and_then(|s| s.allocatable.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).expect("pod")
    }

    #[test]
    fn requests_follow_upstreams_init_and_sidecar_rule() {
        struct Case {
            name: &'static str,
            spec: serde_json::Value,
            cpu: i64,
            mem: i64,
        }
        let c = |cpu: &str, mem: &str| json!({"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu, "memory": mem}}});
        let sidecar = |cpu: &str| json!({"name": "s", "image": "i", "restartPolicy": "Always", "resources": {"requests": {"cpu": cpu}}});
        let cases = [
            Case {
                name: "sum of app containers",
                spec: json!({"containers": [c("100m", "1Ki"), c("250m", "1Ki")]}),
                cpu: 350,
                mem: 2048,
            },
            Case {
                name: "larger init container wins",
                spec: json!({"containers": [c("100m", "1Ki")], "initContainers": [c("1", "512")]}),
                cpu: 1000,
                mem: 1024,
            },
            Case {
                name: "sidecar adds to app containers",
                spec: json!({"containers": [c("100m", "0")], "initContainers": [sidecar("200m")]}),
                cpu: 300,
                mem: 0,
            },
            Case {
                name: "init after a sidecar includes it",
                spec: json!({"containers": [c("100m", "0")], "initContainers": [sidecar("200m"), c("500m", "0")]}),
                cpu: 700,
                mem: 0,
            },
            Case {
                name: "overhead is added",
                spec: json!({"containers": [c("100m", "0")], "overhead": {"cpu": "50m"}}),
                cpu: 150,
                mem: 0,
            },
            Case {
                name: "fractional cpu rounds up",
                spec: json!({"containers": [c("0.0001", "0")]}),
                cpu: 1,
                mem: 0,
            },
        ];
        for case in cases {
            let r = pod_requests(&pod(case.spec));
            assert_eq!(
                (r.milli_cpu, r.memory),
                (case.cpu, case.mem),
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn non_zero_requests_stand_in_for_unset_ones() {
        let p = pod(
            json!({"containers": [{"name": "a", "image": "i"}, {"name": "b", "image": "i", "resources": {"requests": {"cpu": "1"}}}]}),
        );
        assert_eq!(
            pod_non_zero_requests(&p),
            (1100, 2 * DEFAULT_MEMORY_REQUEST)
        );
    }

    #[test]
    fn extended_resources_are_scalars() {
        let p = pod(
            json!({"containers": [{"name": "a", "image": "i", "resources": {"requests": {"example.com/gpu": "2"}}}]}),
        );
        assert_eq!(pod_requests(&p).scalar("example.com/gpu"), 2);
    }
}
