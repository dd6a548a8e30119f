//! A container's compute resources as the node enforces them: quantities parsed with
//! upstream's exact rounding, the pod's QoS class, the cgroup values handed to the shim and
//! the OOM score adjustment — upstream's `qos.ComputePodQOS`, kuberuntime's
//! `calculateLinuxResources` and `qos.GetContainerOOMScoreAdjust`, as pure functions.
//!
//! Requests are read the way upstream's kubelet sees them after API defaulting: a resource
//! with a limit but no request requests its limit ([`effective_requests`]). Pods served by
//! our apiserver are already defaulted, so this only matters for pods built by hand, where
//! it keeps every function here agreeing with what the apiserver would have stored.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use runtime::shim::Resources;

/// A parsed quantity (value comparison, `as_milli`, `as_bytes`, canonical form).
pub use ::api::quantity::Quantity as ParsedQuantity;

pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";

/// The CFS period upstream uses unless the `cpuCFSQuotaPeriod` knob is set (µs).
pub const CPU_PERIOD_US: u64 = 100_000;
/// Upstream `cm.MinShares` / `cm.MaxShares`.
pub const MIN_SHARES: u64 = 2;
pub const MAX_SHARES: u64 = 262_144;
/// Upstream `minQuotaPeriod`: the smallest CFS quota the kubelet sets (µs).
pub const MIN_QUOTA_US: i64 = 1_000;

const GUARANTEED_OOM_SCORE_ADJ: i32 = -997;
const BEST_EFFORT_OOM_SCORE_ADJ: i32 = 1000;
/// `scheduling.SystemCriticalPriority`.
const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// A quantity string that does not parse; the message names the value and upstream's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quantity {value:?} is invalid: {source}")]
pub struct QuantityError {
    pub value: String,
    #[source]
    pub source: ::api::quantity::QuantityError,
}

/// A container whose resources cannot be turned into cgroup values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("container {container:?}: {field}: {source}")]
    Quantity {
        container: String,
        field: String,
        #[source]
        source: QuantityError,
    },
}

/// Parses a Kubernetes quantity exactly as upstream's `resource.ParseQuantity` does:
/// decimal suffixes `n u m k M G T P E`, binary `Ki Mi Gi Ti Pi Ei`, exponents `1e3`/`1E-3`,
/// signs and fractions. Read the value with `as_milli()` (CPU) or `as_bytes()` (memory),
/// both rounded up as upstream's `MilliValue`/`Value` are.
pub fn parse_quantity(s: &str) -> Result<ParsedQuantity, QuantityError> {
    ParsedQuantity::parse(s).map_err(|source| QuantityError {
        value: s.to_string(),
        source,
    })
}

/// A pod's QoS class (`status.qosClass`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }

    pub fn parse(s: &str) -> Option<QosClass> {
        match s {
            "Guaranteed" => Some(QosClass::Guaranteed),
            "Burstable" => Some(QosClass::Burstable),
            "BestEffort" => Some(QosClass::BestEffort),
            _ => None,
        }
    }
}

/// Upstream `GetPodQOS`: the class recorded in `status.qosClass` (set once by the apiserver
/// and immutable afterwards, even across in-place resizes), else [`compute_qos_class`].
pub fn qos_class(pod: &Pod) -> QosClass {
    pod.status
        .as_ref()
        .and_then(|s| s.qos_class.as_deref())
        .and_then(QosClass::parse)
        .unwrap_or_else(|| compute_qos_class(pod))
}

/// Upstream `ComputePodQOS`: pod-level resources decide when present (PodLevelResources is
/// on by default); otherwise every init and regular container must agree — all
/// Guaranteed (cpu and memory requests equal to limits) or all BestEffort — and anything
/// else is Burstable. Only cpu and memory count. Quantities that do not parse count as
/// absent: the apiserver rejects them, so no pod it served carries one.
pub fn compute_qos_class(pod: &Pod) -> QosClass {
    let Some(spec) = pod.spec.as_ref() else {
        return QosClass::BestEffort;
    };
    if let Some(resources) = spec.resources.as_ref() {
        return resource_qos(resources);
    }
    let mut pod_qos: Option<QosClass> = None;
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    for container in containers {
        let qos = container
            .resources
            .as_ref()
            .map(resource_qos)
            .unwrap_or(QosClass::BestEffort);
        match (qos, pod_qos) {
            (QosClass::Burstable, _) => return QosClass::Burstable,
            (qos, None) => pod_qos = Some(qos),
            (qos, Some(seen)) if qos != seen => return QosClass::Burstable,
            _ => {}
        }
    }
    pod_qos.unwrap_or(QosClass::BestEffort)
}

/// Upstream `resourceQOS` over one set of requirements.
fn resource_qos(resources: &ResourceRequirements) -> QosClass {
    let requests = effective_requests(resources);
    let limits = resources.limits.clone().unwrap_or_default();
    if requests.is_empty() && limits.is_empty() {
        return QosClass::BestEffort;
    }
    let mut qos: Option<QosClass> = None;
    for name in [CPU, MEMORY] {
        let request = lenient(requests.get(name));
        let limit = lenient(limits.get(name));
        if request != limit {
            return QosClass::Burstable;
        }
        let best_effort = request.is_zero();
        match qos {
            None if best_effort => qos = Some(QosClass::BestEffort),
            None => qos = Some(QosClass::Guaranteed),
            Some(seen) if best_effort != (seen == QosClass::BestEffort) => {
                return QosClass::Burstable;
            }
            Some(_) => {}
        }
    }
    qos.unwrap_or(QosClass::BestEffort)
}

/// Requests as the apiserver's defaulting leaves them: every resource with a limit and no
/// request requests its limit (`SetDefaults_ResourceRequirements` semantics).
pub fn effective_requests(resources: &ResourceRequirements) -> BTreeMap<String, Quantity> {
    let mut requests = resources.requests.clone().unwrap_or_default();
    for (name, limit) in resources.limits.iter().flatten() {
        requests
            .entry(name.clone())
            .or_insert_with(|| limit.clone());
    }
    requests
}

/// A quantity from a resource list, zero when absent or unparseable (see [`compute_qos_class`]).
fn lenient(q: Option<&Quantity>) -> ParsedQuantity {
    q.and_then(|q| ParsedQuantity::parse(&q.0).ok())
        .unwrap_or_else(zero)
}

fn zero() -> ParsedQuantity {
    ParsedQuantity::from_int(0, ::api::quantity::Format::DecimalSI)
}

/// Upstream `MilliCPUToShares`: 1024 shares per CPU, clamped to [2, 262144]; no request → 2.
pub fn milli_cpu_to_shares(milli_cpu: i64) -> u64 {
    if milli_cpu <= 0 {
        return MIN_SHARES;
    }
    let shares = milli_cpu.saturating_mul(1024) / 1000;
    (shares.max(0) as u64).clamp(MIN_SHARES, MAX_SHARES)
}

/// Upstream `milliCPUToQuota`: `None` for no limit (the kubelet sends quota 0, which the
/// runtime leaves unset), else the share of `period_us`, at least 1ms.
pub fn milli_cpu_to_quota(milli_cpu: i64, period_us: u64) -> Option<i64> {
    if milli_cpu <= 0 {
        return None;
    }
    let quota = milli_cpu.saturating_mul(period_us as i64) / 1000;
    Some(quota.max(MIN_QUOTA_US))
}

/// The cgroup values for one container (kuberuntime `calculateLinuxResources`):
/// - cpu shares from the cpu request; a container with only a cpu limit uses the limit (the
///   kubelet repeats the apiserver's defaulting there), none → 2;
/// - CFS period 100ms always (containerd sets it whenever the kubelet sends it), quota
///   from the cpu limit, none when unlimited;
/// - memory limit in bytes when a memory limit is set;
/// - no pids limit: that is node-level (`podPidsLimit`), applied on the pod cgroup.
pub fn cgroup_resources(container: &Container) -> Result<Resources, ResourceError> {
    let resources = container.resources.clone().unwrap_or_default();
    let parse =
        |field: &str, q: Option<&Quantity>| -> Result<Option<ParsedQuantity>, ResourceError> {
            q.map(|q| {
                parse_quantity(&q.0).map_err(|source| ResourceError::Quantity {
                    container: container.name.clone(),
                    field: field.to_string(),
                    source,
                })
            })
            .transpose()
        };
    let requests = resources.requests.clone().unwrap_or_default();
    let limits = resources.limits.clone().unwrap_or_default();
    let cpu_request = parse("resources.requests.cpu", requests.get(CPU))?;
    let cpu_limit_milli = parse("resources.limits.cpu", limits.get(CPU))?
        .map(|q| q.as_milli())
        .unwrap_or(0);
    let memory_limit = parse("resources.limits.memory", limits.get(MEMORY))?
        .map(|q| q.as_bytes())
        .unwrap_or(0);

    let shares = match cpu_request {
        None => milli_cpu_to_shares(cpu_limit_milli),
        Some(request) => milli_cpu_to_shares(request.as_milli()),
    };
    Ok(Resources {
        cpu_shares: Some(shares),
        cpu_quota: milli_cpu_to_quota(cpu_limit_milli, CPU_PERIOD_US),
        cpu_period: Some(CPU_PERIOD_US),
        memory_limit: (memory_limit != 0).then_some(memory_limit),
        pids_limit: None,
    })
}

/// Upstream `GetContainerOOMScoreAdjust`: node-critical pods and Guaranteed pods -997,
/// BestEffort 1000, Burstable `1000 - 1000*memoryRequest/capacity` clamped to [3, 999]
/// (upstream's floor is `1000 + guaranteedOOMScoreAdj` = 3, so a Burstable container never
/// ties a Guaranteed one). Sidecars (restartable init containers) score no higher than the
/// smallest regular container; pod-level memory requests not claimed by containers are
/// shared equally among all containers.
pub fn oom_score_adj(pod: &Pod, container: &Container, node_memory_capacity_bytes: i64) -> i32 {
    if is_node_critical(pod) {
        return GUARANTEED_OOM_SCORE_ADJ;
    }
    match qos_class(pod) {
        QosClass::Guaranteed => return GUARANTEED_OOM_SCORE_ADJ,
        QosClass::BestEffort => return BEST_EFFORT_OOM_SCORE_ADJ,
        QosClass::Burstable => {}
    }
    let capacity = node_memory_capacity_bytes.max(1) as i128;
    let score = |request: i64| 1000 - (1000 * request as i128) / capacity;

    let remaining = remaining_pod_memory_per_container(pod);
    let mut adjust = score(memory_request(container) + remaining);
    if is_sidecar(pod, container) {
        let min_regular = min_regular_container_memory(pod) + remaining;
        adjust = adjust.min(score(min_regular));
    }
    let floor = (1000 + GUARANTEED_OOM_SCORE_ADJ) as i128;
    if adjust < floor {
        return floor as i32;
    }
    if adjust == BEST_EFFORT_OOM_SCORE_ADJ as i128 {
        return BEST_EFFORT_OOM_SCORE_ADJ - 1;
    }
    adjust.min(BEST_EFFORT_OOM_SCORE_ADJ as i128) as i32
}

/// Upstream `types.IsNodeCriticalPod`: a critical pod (static, mirror, or priority at least
/// system-critical) in the `system-node-critical` priority class.
pub fn is_node_critical(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    if spec.priority_class_name.as_deref() != Some("system-node-critical") {
        return false;
    }
    let annotations = pod.metadata.annotations.as_ref();
    let source = annotations.and_then(|a| a.get("kubernetes.io/config.source"));
    let is_static = source.is_some_and(|s| s != "api");
    let is_mirror = annotations.is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    let critical_priority = spec.priority.is_some_and(|p| p >= SYSTEM_CRITICAL_PRIORITY);
    is_static || is_mirror || critical_priority
}

fn memory_request(container: &Container) -> i64 {
    container
        .resources
        .as_ref()
        .map(|r| lenient(effective_requests(r).get(MEMORY)).as_bytes())
        .unwrap_or(0)
}

fn is_sidecar(pod: &Pod, container: &Container) -> bool {
    container.restart_policy.as_deref() == Some("Always")
        && pod
            .spec
            .iter()
            .flat_map(|s| s.init_containers.iter().flatten())
            .any(|c| c.name == container.name)
}

/// Upstream `minRegularContainerMemory`: the smallest memory request among regular containers.
fn min_regular_container_memory(pod: &Pod) -> i64 {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(memory_request)
        .min()
        .unwrap_or(0)
}

/// Upstream `remainingPodMemReqPerContainer`: the pod-level memory request that containers
/// do not claim, split evenly across all (init and regular) containers.
fn remaining_pod_memory_per_container(pod: &Pod) -> i64 {
    let Some(spec) = pod.spec.as_ref() else {
        return 0;
    };
    let Some(pod_resources) = spec.resources.as_ref() else {
        return 0;
    };
    let pod_request = lenient(effective_requests(pod_resources).get(MEMORY)).as_bytes();
    if pod_request == 0 {
        return 0;
    }
    let count = spec.containers.len() + spec.init_containers.as_ref().map_or(0, |c| c.len());
    if count == 0 {
        return 0;
    }
    (pod_request - aggregate_container_memory_requests(pod)) / count as i64
}

/// Upstream `AggregateContainerRequests` for memory: the larger of the steady state (regular
/// containers plus sidecars) and the peak while any init container runs (it plus the
/// sidecars started before it).
fn aggregate_container_memory_requests(pod: &Pod) -> i64 {
    let Some(spec) = pod.spec.as_ref() else {
        return 0;
    };
    let mut steady: i64 = spec.containers.iter().map(memory_request).sum();
    let mut sidecars: i64 = 0;
    let mut init_peak: i64 = 0;
    for init in spec.init_containers.iter().flatten() {
        let request = memory_request(init);
        let during = if init.restart_policy.as_deref() == Some("Always") {
            steady += request;
            sidecars += request;
            sidecars
        } else {
            request + sidecars
        };
        init_peak = init_peak.max(during);
    }
    steady.max(init_peak)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn list(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, Quantity>> {
        (!pairs.is_empty()).then(|| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect()
        })
    }

    fn container(name: &str, requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        Container {
            name: name.into(),
            resources: Some(ResourceRequirements {
                requests: list(requests),
                limits: list(limits),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<Container>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn sidecar(mut c: Container) -> Container {
        c.restart_policy = Some("Always".into());
        c
    }

    #[test]
    fn parse_quantity_handles_every_suffix_exactly() {
        let cases: &[(&str, i64, i64)] = &[
            // input, as_milli, as_bytes (both rounded up)
            ("0", 0, 0),
            ("1", 1000, 1),
            ("100m", 100, 1),
            ("1500m", 1500, 2),
            ("0.5", 500, 1),
            ("1.25", 1250, 2),
            ("1k", 1_000_000, 1000),
            ("1M", 1_000_000_000, 1_000_000),
            ("2G", 2_000_000_000_000, 2_000_000_000),
            ("1T", 1_000_000_000_000_000, 1_000_000_000_000),
            ("1P", 1_000_000_000_000_000_000, 1_000_000_000_000_000),
            ("1E", i64::MAX, 1_000_000_000_000_000_000),
            ("1Ki", 1_024_000, 1024),
            ("1Mi", 1_048_576_000, 1_048_576),
            ("1.5Gi", 1_610_612_736_000, 1_610_612_736),
            ("1Ti", 1_099_511_627_776_000, 1_099_511_627_776),
            ("1Pi", 1_125_899_906_842_624_000, 1_125_899_906_842_624),
            ("10E", i64::MAX, i64::MAX), // saturates like upstream
            ("1Ei", i64::MAX, 1_152_921_504_606_846_976),
            ("1e3", 1_000_000, 1000),
            ("1E3", 1_000_000, 1000),
            ("12e-3", 12, 1),
            ("500u", 1, 1),
            ("1n", 1, 1),
            ("+2", 2000, 2),
            ("-1", -1000, -1),
        ];
        for (input, milli, bytes) in cases {
            let q = parse_quantity(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(q.as_milli(), *milli, "{input} as milli");
            assert_eq!(q.as_bytes(), *bytes, "{input} as bytes");
        }
    }

    #[test]
    fn parse_quantity_rejects_garbage_with_upstream_messages() {
        let err = parse_quantity("1Mk").unwrap_err();
        assert_eq!(
            err.to_string(),
            "quantity \"1Mk\" is invalid: unable to parse quantity's suffix"
        );
        assert!(parse_quantity("1Gb").is_err());
        let err = parse_quantity("").unwrap_err();
        assert!(err
            .to_string()
            .contains("quantities must match the regular expression"));
        assert!(parse_quantity("abc").is_err());
        assert!(parse_quantity("1.2.3").is_err());
    }

    #[test]
    fn qos_classes_follow_upstream() {
        use QosClass::*;
        let cases: Vec<(&str, Vec<Container>, Vec<Container>, QosClass)> = vec![
            (
                "no resources",
                vec![container("a", &[], &[])],
                vec![],
                BestEffort,
            ),
            (
                "only non-compute resources",
                vec![container("a", &[(EPHEMERAL_STORAGE, "1Gi")], &[])],
                vec![],
                BestEffort,
            ),
            (
                "requests equal limits",
                vec![container(
                    "a",
                    &[(CPU, "1"), (MEMORY, "1Gi")],
                    &[(CPU, "1000m"), (MEMORY, "1Gi")],
                )],
                vec![],
                Guaranteed,
            ),
            (
                "limits only: requests default to limits",
                vec![container("a", &[], &[(CPU, "1"), (MEMORY, "1Gi")])],
                vec![],
                Guaranteed,
            ),
            (
                "cpu only",
                vec![container("a", &[(CPU, "1")], &[(CPU, "1")])],
                vec![],
                Burstable,
            ),
            (
                "request below limit",
                vec![container(
                    "a",
                    &[(CPU, "500m"), (MEMORY, "1Gi")],
                    &[(CPU, "1"), (MEMORY, "1Gi")],
                )],
                vec![],
                Burstable,
            ),
            (
                "one guaranteed, one best effort",
                vec![
                    container(
                        "a",
                        &[(CPU, "1"), (MEMORY, "1Gi")],
                        &[(CPU, "1"), (MEMORY, "1Gi")],
                    ),
                    container("b", &[], &[]),
                ],
                vec![],
                Burstable,
            ),
            (
                "init container breaks guaranteed",
                vec![container(
                    "a",
                    &[(CPU, "1"), (MEMORY, "1Gi")],
                    &[(CPU, "1"), (MEMORY, "1Gi")],
                )],
                vec![container("init", &[(MEMORY, "10Mi")], &[])],
                Burstable,
            ),
            (
                "guaranteed init and regular",
                vec![container("a", &[], &[(CPU, "1"), (MEMORY, "1Gi")])],
                vec![container("init", &[], &[(CPU, "2"), (MEMORY, "2Gi")])],
                Guaranteed,
            ),
        ];
        for (name, containers, inits, want) in cases {
            let mut p = pod(containers);
            if !inits.is_empty() {
                p.spec.as_mut().unwrap().init_containers = Some(inits);
            }
            assert_eq!(qos_class(&p), want, "{name}");
        }
    }

    #[test]
    fn qos_uses_pod_level_resources_and_status() {
        let mut p = pod(vec![container("a", &[], &[])]);
        p.spec.as_mut().unwrap().resources = Some(ResourceRequirements {
            limits: list(&[(CPU, "2"), (MEMORY, "2Gi")]),
            ..Default::default()
        });
        assert_eq!(qos_class(&p), QosClass::Guaranteed);

        p.status = Some(PodStatus {
            qos_class: Some("Burstable".into()),
            ..Default::default()
        });
        assert_eq!(
            qos_class(&p),
            QosClass::Burstable,
            "status.qosClass is authoritative"
        );
        assert_eq!(compute_qos_class(&p), QosClass::Guaranteed);
    }

    #[test]
    fn cpu_shares_and_quota_match_upstream_arithmetic() {
        assert_eq!(milli_cpu_to_shares(0), 2);
        assert_eq!(milli_cpu_to_shares(1), 2);
        assert_eq!(milli_cpu_to_shares(100), 102);
        assert_eq!(milli_cpu_to_shares(1000), 1024);
        assert_eq!(milli_cpu_to_shares(300_000), 262_144);
        assert_eq!(milli_cpu_to_quota(0, CPU_PERIOD_US), None);
        assert_eq!(
            milli_cpu_to_quota(5, CPU_PERIOD_US),
            Some(1000),
            "1ms floor"
        );
        assert_eq!(milli_cpu_to_quota(250, CPU_PERIOD_US), Some(25_000));
        assert_eq!(milli_cpu_to_quota(2000, CPU_PERIOD_US), Some(200_000));
    }

    #[test]
    fn cgroup_resources_from_requests_and_limits() {
        let r = cgroup_resources(&container(
            "a",
            &[(CPU, "250m"), (MEMORY, "64Mi")],
            &[(CPU, "500m"), (MEMORY, "128Mi")],
        ))
        .unwrap();
        assert_eq!(
            r,
            Resources {
                cpu_shares: Some(256),
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                memory_limit: Some(134_217_728),
                pids_limit: None,
            }
        );

        // Only a limit: the request defaults to it.
        let r = cgroup_resources(&container("a", &[], &[(CPU, "2")])).unwrap();
        assert_eq!(r.cpu_shares, Some(2048));
        assert_eq!(r.cpu_quota, Some(200_000));
        assert_eq!(r.memory_limit, None);

        // Nothing: minimal shares, no quota, no memory limit.
        let r = cgroup_resources(&Container {
            name: "a".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r.cpu_shares, Some(2));
        assert_eq!(r.cpu_quota, None);
        assert_eq!(r.cpu_period, Some(100_000));
        assert_eq!(r.memory_limit, None);

        // A tiny fractional request rounds up to 1m.
        let r = cgroup_resources(&container("a", &[(CPU, "0.0001")], &[])).unwrap();
        assert_eq!(r.cpu_shares, Some(2));
    }

    #[test]
    fn cgroup_resources_names_a_bad_quantity() {
        let err = cgroup_resources(&container("web", &[], &[(MEMORY, "lots")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "container \"web\": resources.limits.memory: quantity \"lots\" is invalid: \
             quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        );
    }

    #[test]
    fn oom_score_adj_per_qos_class() {
        const GI: i64 = 1 << 30;
        let guaranteed = pod(vec![container("a", &[], &[(CPU, "1"), (MEMORY, "1Gi")])]);
        assert_eq!(
            oom_score_adj(
                &guaranteed,
                &guaranteed.spec.as_ref().unwrap().containers[0],
                8 * GI
            ),
            -997
        );

        let best_effort = pod(vec![container("a", &[], &[])]);
        assert_eq!(
            oom_score_adj(
                &best_effort,
                &best_effort.spec.as_ref().unwrap().containers[0],
                8 * GI
            ),
            1000
        );

        let cases: &[(&str, i32)] = &[
            ("1Gi", 875), // 1000 - 1000/8
            ("4Gi", 500),
            ("8Gi", 3), // floor: never ties Guaranteed
            ("16Gi", 3),
            ("1", 999), // 1000 would tie BestEffort
        ];
        for (memory, want) in cases {
            let p = pod(vec![container("a", &[(MEMORY, memory)], &[])]);
            let c = &p.spec.as_ref().unwrap().containers[0];
            assert_eq!(
                oom_score_adj(&p, c, 8 * GI),
                *want,
                "memory request {memory}"
            );
        }
        // Burstable without a memory request.
        let p = pod(vec![container("a", &[(CPU, "100m")], &[])]);
        assert_eq!(
            oom_score_adj(&p, &p.spec.as_ref().unwrap().containers[0], 8 * GI),
            999
        );
    }

    #[test]
    fn oom_score_adj_node_critical_and_sidecars() {
        const GI: i64 = 1 << 30;
        let mut p = pod(vec![container("a", &[], &[])]);
        let spec = p.spec.as_mut().unwrap();
        spec.priority_class_name = Some("system-node-critical".into());
        spec.priority = Some(2_000_001_000);
        assert!(is_node_critical(&p));
        assert_eq!(
            oom_score_adj(&p, &p.spec.as_ref().unwrap().containers[0], 8 * GI),
            -997
        );

        // Priority alone (system-cluster-critical) is not node-critical.
        p.spec.as_mut().unwrap().priority_class_name = Some("system-cluster-critical".into());
        assert!(!is_node_critical(&p));

        // A sidecar scores no higher than the smallest regular container.
        let mut p = pod(vec![
            container("big", &[(MEMORY, "4Gi")], &[]),
            container("small", &[(MEMORY, "2Gi")], &[]),
        ]);
        let side = sidecar(container("proxy", &[(MEMORY, "1Gi")], &[]));
        p.spec.as_mut().unwrap().init_containers = Some(vec![side.clone()]);
        assert_eq!(oom_score_adj(&p, &side, 8 * GI), 750);
        // A plain init container keeps its own score.
        let init = container("proxy", &[(MEMORY, "1Gi")], &[]);
        p.spec.as_mut().unwrap().init_containers = Some(vec![init.clone()]);
        assert_eq!(oom_score_adj(&p, &init, 8 * GI), 875);
    }

    #[test]
    fn oom_score_adj_shares_unclaimed_pod_level_memory() {
        const GI: i64 = 1 << 30;
        let mut p = pod(vec![
            container("a", &[(MEMORY, "1Gi")], &[]),
            container("b", &[], &[]),
        ]);
        p.spec.as_mut().unwrap().resources = Some(ResourceRequirements {
            requests: list(&[(MEMORY, "3Gi")]),
            ..Default::default()
        });
        // 2Gi unclaimed, 1Gi to each container.
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(oom_score_adj(&p, &spec.containers[0], 8 * GI), 750);
        assert_eq!(oom_score_adj(&p, &spec.containers[1], 8 * GI), 875);
    }
}
