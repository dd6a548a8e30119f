//! A container's environment, as upstream's kubelet (`makeEnvironmentVariables`) and
//! containerd build it together:
//!
//! 1. `envFrom` in order (ConfigMap data, Secret data as text, each key prefixed), later
//!    sources overwriting earlier ones;
//! 2. `env` in order: literal values with `$(VAR)` expanded against what is defined so far
//!    and the service variables, or `valueFrom` (configMapKeyRef, secretKeyRef, fieldRef,
//!    resourceFieldRef); a name defined twice keeps its first position and its last value;
//! 3. service-link variables not already defined (`KUBERNETES_*` always; the pod
//!    namespace's services too unless `enableServiceLinks: false`).
//!
//! Those are the kubelet's variables ([`ContainerEnv::kubelet_vars`], also what `$(VAR)`
//! in command, args and subPathExpr expands against). The process sees containerd's
//! merge: `HOSTNAME`, then the image's `Env`, then the kubelet's variables, each later
//! definition replacing an earlier one in place ([`ContainerEnv::vars`]). `PATH` is the
//! image's, else the shim's default.
//!
//! Decisions where upstream is not deterministic or has moved on:
//! - Upstream collects the kubelet's variables in a Go map, so their order is random; we
//!   keep declaration order (envFrom keys in key order, then env), then service variables
//!   (services in the order given, each in upstream's per-service order).
//! - Since RelaxedEnvironmentVariableValidation went GA (1.34) the kubelet no longer skips
//!   envFrom keys that are not C identifiers, nor records `InvalidEnvironmentVariableNames`;
//!   every key is used, as in upstream 1.37.
//! - Secret values are `string(bytes)` upstream; invalid UTF-8 is replaced (U+FFFD) here
//!   because the shim's environment is text.
//! - `valueFrom.fileKeyRef` (EnvFiles) needs the volume on disk; it is refused by name
//!   until volumes exist rather than silently yielding an empty value.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};

use super::downward::{field_selector_value, resource_selector_value, DownwardError, NodeFacts};

/// Everything the environment of one container depends on. Objects are those found in
/// the pod's namespace (a missing one is simply absent from the map).
#[derive(Debug, Clone, Copy)]
pub struct EnvInputs<'a> {
    pub pod: &'a Pod,
    pub container: &'a Container,
    /// The image config's `Env` (`KEY=value`, image order).
    pub image_env: &'a [String],
    /// The pod's hostname (containerd sets `HOSTNAME` to the sandbox hostname).
    pub hostname: &'a str,
    pub config_maps: &'a BTreeMap<String, ConfigMap>,
    pub secrets: &'a BTreeMap<String, Secret>,
    /// Services the informer knows, any namespace; only `default/kubernetes` and the pod's
    /// namespace are used.
    pub services: &'a [Service],
    pub node: &'a NodeFacts,
}

/// The environment built for a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerEnv {
    /// The process environment (`KEY=value`): HOSTNAME, image env, kubelet variables.
    pub vars: Vec<String>,
    /// The kubelet's variables alone (`KEY=value`): what `$(VAR)` in command, args and
    /// `subPathExpr` expands against (the image's env is not part of it upstream).
    pub kubelet_vars: Vec<String>,
}

/// Why a container's environment cannot be built: upstream's CreateContainerConfigError
/// messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("nil pod.spec.enableServiceLinks encountered, cannot construct envvars")]
    ServiceLinksUnset,
    #[error("configmap {0:?} not found")]
    ConfigMapNotFound(String),
    #[error("secret {0:?} not found")]
    SecretNotFound(String),
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKeyNotFound {
        key: String,
        namespace: String,
        name: String,
    },
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKeyNotFound {
        key: String,
        namespace: String,
        name: String,
    },
    #[error("env {name}: valueFrom.fileKeyRef is not supported by this node yet")]
    FileKeyRefUnsupported { name: String },
    #[error(transparent)]
    Downward(#[from] DownwardError),
}

/// Builds the container's environment; see the module header for the rules.
pub fn container_env(inputs: &EnvInputs<'_>) -> Result<ContainerEnv, EnvError> {
    let pod = inputs.pod;
    let container = inputs.container;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .ok_or(EnvError::ServiceLinksUnset)?;
    let service_env = service_env(namespace, links, inputs.services);

    let mut defined = OrderedEnv::default();
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.as_deref().unwrap_or("");
        if let Some(r) = &source.config_map_ref {
            match inputs.config_maps.get(&r.name) {
                None if r.optional == Some(true) => continue,
                None => return Err(EnvError::ConfigMapNotFound(r.name.clone())),
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        defined.set(format!("{prefix}{k}"), v.clone());
                    }
                }
            }
        } else if let Some(r) = &source.secret_ref {
            match inputs.secrets.get(&r.name) {
                None if r.optional == Some(true) => continue,
                None => return Err(EnvError::SecretNotFound(r.name.clone())),
                Some(secret) => {
                    for (k, v) in secret.data.iter().flatten() {
                        defined.set(format!("{prefix}{k}"), text(&v.0));
                    }
                }
            }
        }
    }

    for var in container.env.iter().flatten() {
        let literal = var.value.as_deref().unwrap_or("");
        let value = if !literal.is_empty() {
            expand(literal, |name| {
                defined
                    .get(name)
                    .or_else(|| service_env.get(name))
                    .map(str::to_string)
            })
        } else if let Some(from) = &var.value_from {
            if let Some(field) = &from.field_ref {
                field_selector_value(pod, field, inputs.node)?
            } else if let Some(resource) = &from.resource_field_ref {
                resource_selector_value(pod, container, resource, &inputs.node.allocatable)?
            } else if let Some(r) = &from.config_map_key_ref {
                let optional = r.optional == Some(true);
                let Some(cm) = inputs.config_maps.get(&r.name) else {
                    if optional {
                        continue;
                    }
                    return Err(EnvError::ConfigMapNotFound(r.name.clone()));
                };
                match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                    Some(v) => v.clone(),
                    None if optional => continue,
                    None => {
                        return Err(EnvError::ConfigMapKeyNotFound {
                            key: r.key.clone(),
                            namespace: namespace.to_string(),
                            name: r.name.clone(),
                        })
                    }
                }
            } else if let Some(r) = &from.secret_key_ref {
                let optional = r.optional == Some(true);
                let Some(secret) = inputs.secrets.get(&r.name) else {
                    if optional {
                        continue;
                    }
                    return Err(EnvError::SecretNotFound(r.name.clone()));
                };
                match secret.data.as_ref().and_then(|d| d.get(&r.key)) {
                    Some(v) => text(&v.0),
                    None if optional => continue,
                    None => {
                        return Err(EnvError::SecretKeyNotFound {
                            key: r.key.clone(),
                            namespace: namespace.to_string(),
                            name: r.name.clone(),
                        })
                    }
                }
            } else if from.file_key_ref.is_some() {
                return Err(EnvError::FileKeyRefUnsupported {
                    name: var.name.clone(),
                });
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        defined.set(var.name.clone(), value);
    }

    let mut kubelet = defined;
    for (k, v) in service_env.iter() {
        if kubelet.get(k).is_none() {
            kubelet.set(k.to_string(), v.to_string());
        }
    }
    let kubelet_vars: Vec<String> = kubelet.iter().map(|(k, v)| format!("{k}={v}")).collect();

    let mut vars = vec![format!("HOSTNAME={}", inputs.hostname)];
    merge_env(&mut vars, inputs.image_env.iter().cloned());
    merge_env(&mut vars, kubelet_vars.iter().cloned());
    Ok(ContainerEnv { vars, kubelet_vars })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Names in first-definition order, each with its latest value.
#[derive(Debug, Default)]
struct OrderedEnv {
    order: Vec<String>,
    values: HashMap<String, String>,
}

impl OrderedEnv {
    fn set(&mut self, name: String, value: String) {
        if !self.values.contains_key(&name) {
            self.order.push(name.clone());
        }
        self.values.insert(name, value);
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.order
            .iter()
            .map(|k| (k.as_str(), self.values[k].as_str()))
    }
}

/// containerd's `replaceOrAppendEnvValues`: `KEY=value` replaces an existing `KEY` in place
/// or is appended; a bare `KEY` (no `=`) removes it.
pub fn merge_env(base: &mut Vec<String>, overrides: impl IntoIterator<Item = String>) {
    let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_string();
    let mut index: HashMap<String, usize> =
        base.iter().enumerate().map(|(i, e)| (key(e), i)).collect();
    let mut removed = vec![false; base.len()];
    for value in overrides {
        let k = key(&value);
        let unset = !value.contains('=');
        match index.get(&k) {
            Some(&i) if unset => removed[i] = true,
            None if unset => {}
            Some(&i) => {
                base[i] = value;
                removed[i] = false;
            }
            None => {
                index.insert(k, base.len());
                base.push(value);
                removed.push(false);
            }
        }
    }
    let mut i = 0;
    base.retain(|_| {
        let keep = !removed[i];
        i += 1;
        keep
    });
}

/// The service-link variables a pod in `namespace` sees (upstream `getServiceEnvVarMap` +
/// `envvars.FromServices`): the `default/kubernetes` service always, the namespace's own
/// services when `enable_links`; services without a cluster IP (headless, ExternalName)
/// give none.
pub fn service_env(namespace: &str, enable_links: bool, services: &[Service]) -> ServiceEnv {
    // Upstream's loop, kept as is: the first default/kubernetes wins; a service of the pod's
    // namespace replaces one of the same name.
    let mut chosen: Vec<&Service> = Vec::new();
    for service in services {
        if cluster_ip(service).is_none() {
            continue;
        }
        let name = service.metadata.name.as_deref().unwrap_or("");
        let ns = service.metadata.namespace.as_deref().unwrap_or("");
        let existing = chosen
            .iter()
            .position(|s| s.metadata.name.as_deref().unwrap_or("") == name);
        if ns == "default" && name == "kubernetes" {
            if existing.is_none() {
                chosen.push(service);
            }
        } else if ns == namespace && enable_links {
            match existing {
                Some(i) => chosen[i] = service,
                None => chosen.push(service),
            }
        }
    }
    let mut env = OrderedEnv::default();
    for service in chosen {
        for (k, v) in service_vars(service) {
            env.set(k, v);
        }
    }
    ServiceEnv(env)
}

/// Service-link variables in upstream's order.
#[derive(Debug, Default)]
pub struct ServiceEnv(OrderedEnv);

impl ServiceEnv {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter()
    }
}

fn cluster_ip(service: &Service) -> Option<&str> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .filter(|ip| !ip.is_empty() && *ip != "None")
}

/// Upstream `makeEnvVariableName`: upper case, `-` → `_`.
fn env_name(name: &str) -> String {
    name.replace('-', "_").to_uppercase()
}

/// One service's variables (upstream `FromServices` + `makeLinkVariables`).
fn service_vars(service: &Service) -> Vec<(String, String)> {
    let Some(ip) = cluster_ip(service) else {
        return Vec::new();
    };
    let prefix = env_name(service.metadata.name.as_deref().unwrap_or(""));
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or(&[]);
    let mut vars = vec![(format!("{prefix}_SERVICE_HOST"), ip.to_string())];
    let port_var = format!("{prefix}_SERVICE_PORT");
    if let Some(first) = ports.first() {
        vars.push((port_var.clone(), first.port.to_string()));
    }
    for p in ports {
        if let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) {
            vars.push((format!("{port_var}_{}", env_name(name)), p.port.to_string()));
        }
    }
    // Docker link variables; Go's net.JoinHostPort brackets IPv6 addresses.
    let host_port = |port: i32| {
        if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        }
    };
    for (i, p) in ports.iter().enumerate() {
        let protocol = p
            .protocol
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or("TCP");
        let lower = protocol.to_lowercase();
        let url = format!("{lower}://{}", host_port(p.port));
        if i == 0 {
            vars.push((format!("{prefix}_PORT"), url.clone()));
        }
        let port_prefix = format!("{prefix}_PORT_{}_{}", p.port, protocol.to_uppercase());
        vars.push((port_prefix.clone(), url));
        vars.push((format!("{port_prefix}_PROTO"), lower));
        vars.push((format!("{port_prefix}_PORT"), p.port.to_string()));
        vars.push((format!("{port_prefix}_ADDR"), ip.to_string()));
    }
    vars
}

/// Upstream's `$(VAR)` expansion (third_party/forked/golang/expansion): `$(NAME)` becomes
/// the mapped value, or stays `$(NAME)` when unmapped; `$$` is a literal `$`; a `$` not
/// followed by `(` or `$` is kept with the next character; an unclosed `$(` is kept.
/// (Upstream copies a non-ASCII character after a lone `$` byte-wise into mojibake; we keep
/// the character intact.)
pub fn expand(input: &str, mapping: impl Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance = match rest.as_bytes()[0] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest[1..].find(')') {
                    Some(end) => {
                        let name = &rest[1..1 + end];
                        match mapping(name) {
                            Some(v) => out.push_str(&v),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        end + 2
                    }
                    None => {
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    let c = rest.chars().next().unwrap_or_default();
                    out.push('$');
                    out.push(c);
                    c.len_utf8()
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    out.push_str(&input[checkpoint.min(input.len())..]);
    out
}

/// `KEY=value` strings as a lookup for [`expand`] (later duplicates win, as upstream's
/// `EnvVarsToMap`).
pub fn env_map(vars: &[String]) -> HashMap<String, String> {
    vars.iter()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource,
        FileKeySelector, ObjectFieldSelector, PodSpec, ResourceFieldSelector, ResourceRequirements,
        SecretEnvSource, SecretKeySelector, ServicePort, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::ByteString;

    use crate::pods::downward::Allocatable;

    fn meta(ns: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        }
    }

    fn pod(container: Container) -> Pod {
        Pod {
            metadata: ObjectMeta {
                uid: Some("u-1".into()),
                ..meta("shop", "web-0")
            },
            spec: Some(PodSpec {
                containers: vec![container],
                enable_service_links: Some(true),
                node_name: Some("node-1".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn container(env: Vec<EnvVar>, env_from: Vec<EnvFromSource>) -> Container {
        Container {
            name: "app".into(),
            env: Some(env),
            env_from: Some(env_from),
            ..Default::default()
        }
    }

    fn literal(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            ..Default::default()
        }
    }

    fn from(name: &str, source: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: Some(source),
            ..Default::default()
        }
    }

    fn config_map(name: &str, data: &[(&str, &str)]) -> (String, ConfigMap) {
        (
            name.to_string(),
            ConfigMap {
                metadata: meta("shop", name),
                data: Some(
                    data.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
        )
    }

    fn secret(name: &str, data: &[(&str, &[u8])]) -> (String, Secret) {
        (
            name.to_string(),
            Secret {
                metadata: meta("shop", name),
                data: Some(
                    data.iter()
                        .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                        .collect(),
                ),
                ..Default::default()
            },
        )
    }

    fn service(
        ns: &str,
        name: &str,
        ip: &str,
        ports: &[(Option<&str>, i32, Option<&str>)],
    ) -> Service {
        Service {
            metadata: meta(ns, name),
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, port, proto)| ServicePort {
                            name: n.map(Into::into),
                            port: *port,
                            protocol: proto.map(Into::into),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    struct World {
        config_maps: BTreeMap<String, ConfigMap>,
        secrets: BTreeMap<String, Secret>,
        services: Vec<Service>,
        node: NodeFacts,
        image_env: Vec<String>,
    }

    fn world() -> World {
        World {
            config_maps: BTreeMap::from([
                config_map(
                    "settings",
                    &[
                        ("LOG_LEVEL", "debug"),
                        ("MODE", "fast"),
                        ("app.port", "8080"),
                    ],
                ),
                config_map("more", &[("MODE", "slow")]),
            ]),
            secrets: BTreeMap::from([secret(
                "creds",
                &[("password", b"s3cret"), ("bin", b"a\xffb")],
            )]),
            services: vec![service(
                "default",
                "kubernetes",
                "10.96.0.1",
                &[(Some("https"), 443, Some("TCP"))],
            )],
            node: NodeFacts {
                host_ips: vec!["10.0.0.5".into()],
                pod_ips: vec!["10.244.0.9".into()],
                allocatable: Allocatable {
                    cpu_millis: 4000,
                    memory_bytes: 8 << 30,
                    ephemeral_storage_bytes: 50 << 30,
                },
            },
            image_env: vec!["PATH=/usr/bin:/bin".into(), "LOG_LEVEL=info".into()],
        }
    }

    fn build(w: &World, p: &Pod) -> Result<ContainerEnv, EnvError> {
        container_env(&EnvInputs {
            pod: p,
            container: &p.spec.as_ref().unwrap().containers[0],
            image_env: &w.image_env,
            hostname: "web-0",
            config_maps: &w.config_maps,
            secrets: &w.secrets,
            services: &w.services,
            node: &w.node,
        })
    }

    const KUBERNETES_VARS: [&str; 7] = [
        "KUBERNETES_SERVICE_HOST=10.96.0.1",
        "KUBERNETES_SERVICE_PORT=443",
        "KUBERNETES_SERVICE_PORT_HTTPS=443",
        "KUBERNETES_PORT=tcp://10.96.0.1:443",
        "KUBERNETES_PORT_443_TCP=tcp://10.96.0.1:443",
        "KUBERNETES_PORT_443_TCP_PROTO=tcp",
        "KUBERNETES_PORT_443_TCP_PORT=443",
    ];

    #[test]
    fn process_env_is_hostname_image_then_kubelet_vars() {
        let w = world();
        let p = pod(container(
            vec![literal("GREETING", "hello")],
            vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "settings".into(),
                    optional: None,
                }),
                ..Default::default()
            }],
        ));
        let env = build(&w, &p).unwrap();
        let mut want: Vec<String> = vec![
            "HOSTNAME=web-0".into(),
            "PATH=/usr/bin:/bin".into(),
            "LOG_LEVEL=debug".into(), // the ConfigMap replaces the image's value in place
            "MODE=fast".into(),
            "app.port=8080".into(), // relaxed names: not skipped since 1.34
            "GREETING=hello".into(),
        ];
        want.extend(KUBERNETES_VARS.iter().map(|s| s.to_string()));
        want.push("KUBERNETES_PORT_443_TCP_ADDR=10.96.0.1".into());
        assert_eq!(env.vars, want);
        assert_eq!(env.kubelet_vars[0], "LOG_LEVEL=debug");
        assert!(!env.kubelet_vars.iter().any(|v| v.starts_with("PATH=")));
    }

    #[test]
    fn env_from_prefix_order_and_env_overrides() {
        let w = world();
        let p = pod(container(
            vec![
                literal("MODE", "manual"),
                literal("X", "1"),
                literal("X", "2"),
            ],
            vec![
                EnvFromSource {
                    config_map_ref: Some(ConfigMapEnvSource {
                        name: "settings".into(),
                        optional: None,
                    }),
                    prefix: Some("CFG_".into()),
                    ..Default::default()
                },
                EnvFromSource {
                    config_map_ref: Some(ConfigMapEnvSource {
                        name: "more".into(),
                        optional: None,
                    }),
                    ..Default::default()
                },
                EnvFromSource {
                    secret_ref: Some(SecretEnvSource {
                        name: "creds".into(),
                        optional: None,
                    }),
                    prefix: Some("DB_".into()),
                    ..Default::default()
                },
                EnvFromSource {
                    config_map_ref: Some(ConfigMapEnvSource {
                        name: "absent".into(),
                        optional: Some(true),
                    }),
                    ..Default::default()
                },
            ],
        ));
        let env = build(&w, &p).unwrap();
        let ours: Vec<&str> = env
            .kubelet_vars
            .iter()
            .map(String::as_str)
            .filter(|v| !v.starts_with("KUBERNETES_"))
            .collect();
        assert_eq!(
            ours,
            [
                "CFG_LOG_LEVEL=debug",
                "CFG_MODE=fast",
                "CFG_app.port=8080",
                "MODE=manual",
                "DB_bin=a\u{fffd}b",
                "DB_password=s3cret",
                "X=2",
            ]
        );
    }

    #[test]
    fn expansion_sees_earlier_vars_and_services_only() {
        let w = world();
        let p = pod(container(
            vec![
                literal("BASE", "/srv"),
                literal("DATA", "$(BASE)/data"),
                literal("LATER_REF", "$(LATE)"),
                literal("LATE", "x"),
                literal(
                    "API",
                    "https://$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)",
                ),
                literal("IMG", "$(PATH)"),
                literal("ESC", "$$(BASE) costs $5"),
                literal("FROM_CM", "$(LOG_LEVEL)"),
            ],
            vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "settings".into(),
                    optional: None,
                }),
                ..Default::default()
            }],
        ));
        let env = build(&w, &p).unwrap();
        let get = |k: &str| env_map(&env.kubelet_vars).get(k).cloned().unwrap();
        assert_eq!(get("DATA"), "/srv/data");
        assert_eq!(get("LATER_REF"), "$(LATE)");
        assert_eq!(get("API"), "https://10.96.0.1:443");
        assert_eq!(
            get("IMG"),
            "$(PATH)",
            "the image env is not visible to expansion"
        );
        assert_eq!(get("ESC"), "$(BASE) costs $5");
        assert_eq!(get("FROM_CM"), "debug");
    }

    #[test]
    fn expand_follows_upstream_syntax() {
        let vars = HashMap::from([
            ("A".to_string(), "1".to_string()),
            ("B C".to_string(), "2".to_string()),
        ]);
        let e = |s: &str| expand(s, |n| vars.get(n).cloned());
        let cases: &[(&str, &str)] = &[
            ("$(A)", "1"),
            ("x$(A)y$(A)", "x1y1"),
            ("$(B C)", "2"),
            ("$(missing)", "$(missing)"),
            ("$$(A)", "$(A)"),
            ("$$$(A)", "$1"),
            ("$A", "$A"),
            ("$", "$"),
            ("a$", "a$"),
            ("$(A", "$(A"),
            ("$()", "$()"),
            ("$($(A))", "$($(A))"),
            ("$é$(A)", "$é1"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(e(input), *want, "{input:?}");
        }
    }

    #[test]
    fn value_from_sources() {
        let w = world();
        let mut c = container(
            vec![
                from(
                    "LEVEL",
                    EnvVarSource {
                        config_map_key_ref: Some(ConfigMapKeySelector {
                            name: "settings".into(),
                            key: "LOG_LEVEL".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    },
                ),
                from(
                    "PASSWORD",
                    EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: "creds".into(),
                            key: "password".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    },
                ),
                from(
                    "MAYBE",
                    EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: "creds".into(),
                            key: "nope".into(),
                            optional: Some(true),
                        }),
                        ..Default::default()
                    },
                ),
                from(
                    "POD_IP",
                    EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            api_version: Some("v1".into()),
                            field_path: "status.podIP".into(),
                        }),
                        ..Default::default()
                    },
                ),
                from(
                    "NODE",
                    EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            api_version: None,
                            field_path: "spec.nodeName".into(),
                        }),
                        ..Default::default()
                    },
                ),
                from(
                    "MEM_MB",
                    EnvVarSource {
                        resource_field_ref: Some(ResourceFieldSelector {
                            resource: "limits.memory".into(),
                            divisor: Some(Quantity("1Mi".into())),
                            container_name: None,
                        }),
                        ..Default::default()
                    },
                ),
                from(
                    "CPUS",
                    EnvVarSource {
                        resource_field_ref: Some(ResourceFieldSelector {
                            resource: "limits.cpu".into(),
                            divisor: None,
                            container_name: None,
                        }),
                        ..Default::default()
                    },
                ),
                literal("EMPTY", ""),
            ],
            vec![],
        );
        c.resources = Some(ResourceRequirements {
            limits: Some(BTreeMap::from([(
                "memory".to_string(),
                Quantity("256Mi".into()),
            )])),
            ..Default::default()
        });
        let p = pod(c);
        let env = build(&w, &p).unwrap();
        let ours: Vec<&str> = env
            .kubelet_vars
            .iter()
            .map(String::as_str)
            .filter(|v| !v.starts_with("KUBERNETES_"))
            .collect();
        assert_eq!(
            ours,
            [
                "LEVEL=debug",
                "PASSWORD=s3cret",
                "POD_IP=10.244.0.9",
                "NODE=node-1",
                "MEM_MB=256",
                "CPUS=4", // no cpu limit: node allocatable
                "EMPTY=",
            ]
        );
    }

    fn one(var: EnvVar) -> Result<ContainerEnv, EnvError> {
        build(&world(), &pod(container(vec![var], vec![])))
    }

    #[test]
    fn errors_are_upstreams_create_container_config_messages() {
        let cm_key = |name: &str, key: &str| {
            from(
                "V",
                EnvVarSource {
                    config_map_key_ref: Some(ConfigMapKeySelector {
                        name: name.into(),
                        key: key.into(),
                        optional: None,
                    }),
                    ..Default::default()
                },
            )
        };
        let secret_key = |name: &str, key: &str| {
            from(
                "V",
                EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: name.into(),
                        key: key.into(),
                        optional: None,
                    }),
                    ..Default::default()
                },
            )
        };
        let msg = |r: Result<ContainerEnv, EnvError>| r.unwrap_err().to_string();
        assert_eq!(msg(one(cm_key("foo", "k"))), "configmap \"foo\" not found");
        assert_eq!(msg(one(secret_key("bar", "k"))), "secret \"bar\" not found");
        assert_eq!(
            msg(one(cm_key("settings", "baz"))),
            "couldn't find key baz in ConfigMap shop/settings"
        );
        assert_eq!(
            msg(one(secret_key("creds", "baz"))),
            "couldn't find key baz in Secret shop/creds"
        );
        assert_eq!(
            msg(one(from(
                "V",
                EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: Some("v1".into()),
                        field_path: "spec.containers".into(),
                    }),
                    ..Default::default()
                }
            ))),
            "field label not supported: spec.containers"
        );
        assert_eq!(
            msg(one(from(
                "V",
                EnvVarSource {
                    file_key_ref: Some(FileKeySelector {
                        volume_name: "cfg".into(),
                        path: "app.env".into(),
                        key: "K".into(),
                        optional: None,
                    }),
                    ..Default::default()
                }
            ))),
            "env V: valueFrom.fileKeyRef is not supported by this node yet"
        );
        let missing_from = container(
            vec![],
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: "gone".into(),
                    optional: Some(false),
                }),
                ..Default::default()
            }],
        );
        assert_eq!(
            msg(build(&world(), &pod(missing_from))),
            "secret \"gone\" not found"
        );

        let mut p = pod(container(vec![], vec![]));
        p.spec.as_mut().unwrap().enable_service_links = None;
        assert_eq!(
            msg(build(&world(), &p)),
            "nil pod.spec.enableServiceLinks encountered, cannot construct envvars"
        );
    }

    #[test]
    fn service_links_follow_upstream_rules() {
        let services = vec![
            service(
                "default",
                "kubernetes",
                "10.96.0.1",
                &[(Some("https"), 443, None)],
            ),
            service(
                "shop",
                "redis-primary",
                "10.96.5.5",
                &[(None, 6379, None), (Some("metrics"), 9121, Some("TCP"))],
            ),
            service("shop", "dns", "fd00::a", &[(Some("dns"), 53, Some("UDP"))]),
            service("shop", "headless", "None", &[(None, 80, None)]),
            service("other", "elsewhere", "10.96.9.9", &[(None, 80, None)]),
        ];
        let env = service_env("shop", true, &services);
        let all: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            all[8..],
            [
                "REDIS_PRIMARY_SERVICE_HOST=10.96.5.5",
                "REDIS_PRIMARY_SERVICE_PORT=6379",
                "REDIS_PRIMARY_SERVICE_PORT_METRICS=9121",
                "REDIS_PRIMARY_PORT=tcp://10.96.5.5:6379",
                "REDIS_PRIMARY_PORT_6379_TCP=tcp://10.96.5.5:6379",
                "REDIS_PRIMARY_PORT_6379_TCP_PROTO=tcp",
                "REDIS_PRIMARY_PORT_6379_TCP_PORT=6379",
                "REDIS_PRIMARY_PORT_6379_TCP_ADDR=10.96.5.5",
                "REDIS_PRIMARY_PORT_9121_TCP=tcp://10.96.5.5:9121",
                "REDIS_PRIMARY_PORT_9121_TCP_PROTO=tcp",
                "REDIS_PRIMARY_PORT_9121_TCP_PORT=9121",
                "REDIS_PRIMARY_PORT_9121_TCP_ADDR=10.96.5.5",
                "DNS_SERVICE_HOST=fd00::a",
                "DNS_SERVICE_PORT=53",
                "DNS_SERVICE_PORT_DNS=53",
                "DNS_PORT=udp://[fd00::a]:53",
                "DNS_PORT_53_UDP=udp://[fd00::a]:53",
                "DNS_PORT_53_UDP_PROTO=udp",
                "DNS_PORT_53_UDP_PORT=53",
                "DNS_PORT_53_UDP_ADDR=fd00::a",
            ]
        );
        assert!(env.get("HEADLESS_SERVICE_HOST").is_none());
        assert!(env.get("ELSEWHERE_SERVICE_HOST").is_none());

        // Links disabled: only the API server's variables remain.
        let env = service_env("shop", false, &services);
        let names: Vec<&str> = env.iter().map(|(k, _)| k).collect();
        assert_eq!(names.len(), 8);
        assert!(names.iter().all(|n| n.starts_with("KUBERNETES_")));
    }

    #[test]
    fn explicit_env_wins_over_service_vars_in_its_own_position() {
        let w = world();
        let p = pod(container(
            vec![literal("KUBERNETES_SERVICE_HOST", "override")],
            vec![],
        ));
        let env = build(&w, &p).unwrap();
        assert_eq!(env.kubelet_vars[0], "KUBERNETES_SERVICE_HOST=override");
        assert_eq!(
            env.kubelet_vars
                .iter()
                .filter(|v| v.starts_with("KUBERNETES_SERVICE_HOST="))
                .count(),
            1
        );
    }

    #[test]
    fn merge_env_replaces_in_place_and_unsets() {
        let mut base = vec![
            "PATH=/bin".to_string(),
            "A=1".to_string(),
            "B=2".to_string(),
        ];
        merge_env(
            &mut base,
            ["A=10", "C=3", "B", "PATH=/usr/bin", "C=30"].map(String::from),
        );
        assert_eq!(base, ["PATH=/usr/bin", "A=10", "C=30"]);
    }
}
