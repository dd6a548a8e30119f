//! `POST .../serviceaccounts/<name>/token`: an authentication.k8s.io/v1 TokenRequest in,
//! the same object with `status.token` out, as upstream's TokenREST. Defaulting and
//! validation (`spec`) and the claims (`claims`) are pure; [`issue`] reads the
//! ServiceAccount and the bound object and signs.

use serde_json::{json, Value};

use api::registry;

use super::jwt::{self, Claims, KubernetesClaim, Ref};
use super::Issuer;
use crate::errors::{ApiError, ApiResult};
use crate::objects;
use crate::ApiServer;

/// `expirationSeconds` when a request names none (upstream's default).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest lifetime a request may ask for (10 minutes).
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The longest (2^32 seconds).
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;
/// The kubelet's projected-token lifetime: such tokens bound to a pod are really valid
/// for a year (upstream's `--service-account-extend-token-expiration`, on by default),
/// with `warnafter` at the requested time, so old client libraries that never re-read
/// the file keep working.
pub const WARN_ONLY_EXPIRATION_SECONDS: i64 = 3607;
pub const EXTENDED_EXPIRATION_SECONDS: i64 = 365 * 24 * 60 * 60;

/// The object a token is bound to, as requested.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

/// A defaulted, validated TokenRequest spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub audiences: Vec<String>,
    pub expiration_seconds: i64,
    pub bound: Option<BoundRef>,
}

/// What the token is bound to, read from the API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bound {
    pub pod: Option<Ref>,
    pub secret: Option<Ref>,
    pub node: Option<Ref>,
}

fn invalid(name: &str, field: &str, message: String) -> ApiError {
    ApiError::new(
        422,
        "Invalid",
        format!("TokenRequest.authentication.k8s.io {name:?} is invalid: {field}: {message}"),
    )
    .with_details(json!({
        "name": name,
        "group": "authentication.k8s.io",
        "kind": "TokenRequest",
        "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}],
    }))
}

/// Type meta, defaults (`expirationSeconds` 3600, the API audiences) and validation.
pub fn spec(name: &str, body: &Value, api_audiences: &[String]) -> ApiResult<Spec> {
    match body.get("apiVersion").and_then(Value::as_str) {
        None | Some("") | Some("authentication.k8s.io/v1") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({other}) does not match the expected API version (authentication.k8s.io/v1)"
            )))
        }
    }
    match body.get("kind").and_then(Value::as_str) {
        None | Some("") | Some("TokenRequest") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "TokenRequest in version \"v1\" cannot be handled as a TokenRequest: the kind in the data ({other}) does not match the expected kind (TokenRequest)"
            )))
        }
    }
    let s = &body["spec"];
    let expiration_seconds = match &s["expirationSeconds"] {
        Value::Null => DEFAULT_EXPIRATION_SECONDS,
        v => v.as_i64().ok_or_else(|| {
            ApiError::bad_request(format!(
                "TokenRequest in version \"v1\" cannot be handled as a TokenRequest: spec.expirationSeconds: {v} is not an integer"
            ))
        })?,
    };
    if expiration_seconds < MIN_EXPIRATION_SECONDS {
        return Err(invalid(
            name,
            "spec.expirationSeconds",
            format!(
                "Invalid value: {expiration_seconds}: may not specify a duration less than 10 minutes"
            ),
        ));
    }
    if expiration_seconds > MAX_EXPIRATION_SECONDS {
        return Err(invalid(
            name,
            "spec.expirationSeconds",
            format!("Invalid value: {expiration_seconds}: may not specify a duration larger than 2^32 seconds"),
        ));
    }
    let mut audiences: Vec<String> = s["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(String::from))
        .collect();
    if audiences.is_empty() {
        audiences = api_audiences.to_vec();
    }
    let bound = match s.get("boundObjectRef").filter(|r| !r.is_null()) {
        None => None,
        Some(r) => {
            let field = |k: &str| r[k].as_str().unwrap_or("").to_string();
            Some(BoundRef {
                api_version: field("apiVersion"),
                kind: field("kind"),
                name: field("name"),
                uid: field("uid"),
            })
        }
    };
    Ok(Spec {
        audiences,
        expiration_seconds,
        bound,
    })
}

/// The claims of a token for ServiceAccount `sa` (name, uid) in `namespace`, issued at
/// `now`, and the time its TokenRequest reports as expiry.
pub fn claims(
    issuer: &Issuer,
    namespace: &str,
    sa: Ref,
    spec: &Spec,
    bound: Bound,
    now: i64,
    jti: String,
) -> (Claims, i64) {
    let kube_audiences = {
        let mut a = spec.audiences.clone();
        let mut b = issuer.api_audiences.clone();
        a.sort();
        a.dedup();
        b.sort();
        b.dedup();
        a == b
    };
    let extend = bound.pod.is_some()
        && spec.expiration_seconds == WARN_ONLY_EXPIRATION_SECONDS
        && kube_audiences;
    let (lifetime, warnafter) = if extend {
        (
            EXTENDED_EXPIRATION_SECONDS,
            Some(now + spec.expiration_seconds),
        )
    } else {
        (spec.expiration_seconds, None)
    };
    let claims = Claims {
        aud: spec.audiences.clone(),
        exp: now + lifetime,
        iat: now,
        iss: issuer.issuer.clone(),
        jti,
        kubernetes: KubernetesClaim {
            namespace: namespace.to_string(),
            node: bound.node,
            pod: bound.pod,
            secret: bound.secret,
            serviceaccount: Ref {
                name: sa.name.clone(),
                uid: sa.uid,
            },
            warnafter,
        },
        nbf: now,
        sub: jwt::subject(namespace, &sa.name),
    };
    (claims, now + spec.expiration_seconds)
}

/// Answers a TokenRequest for ServiceAccount `namespace/name` with the request's object
/// and its `status`.
pub async fn issue(
    server: &ApiServer,
    namespace: &str,
    name: &str,
    body: &Value,
) -> ApiResult<Value> {
    let issuer = server.service_accounts.get().ok_or_else(|| {
        ApiError::internal("this server has no service-account signing key configured")
    })?;
    let spec = spec(name, body, &issuer.api_audiences)?;
    let sa = get(server, "serviceaccounts", namespace, name)
        .await?
        .ok_or_else(|| ApiError::not_found(info("serviceaccounts"), name))?;
    let bound = match &spec.bound {
        None => Bound::default(),
        Some(r) => bound_object(server, namespace, name, r).await?,
    };
    let now = super::now_unix();
    let (claims, expires) = claims(
        issuer,
        namespace,
        ref_of(&sa),
        &spec,
        bound,
        now,
        uuid::Uuid::new_v4().to_string(),
    );
    let token = issuer
        .key
        .sign(&claims)
        .map_err(|e| ApiError::internal(format!("failed to generate token: {e}")))?;
    let mut out_spec = json!({
        "audiences": spec.audiences,
        "expirationSeconds": spec.expiration_seconds,
    });
    if let Some(r) = &spec.bound {
        out_spec["boundObjectRef"] =
            json!({"kind": r.kind, "apiVersion": r.api_version, "name": r.name});
        if !r.uid.is_empty() {
            out_spec["boundObjectRef"]["uid"] = json!(r.uid);
        }
    }
    let expiration = chrono::DateTime::from_timestamp(expires, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "creationTimestamp": objects::now_rfc3339(),
        },
        "spec": out_spec,
        "status": {"token": token, "expirationTimestamp": expiration},
    }))
}

fn info(plural: &str) -> &'static registry::ResourceInfo {
    registry::lookup("", "v1", plural).expect("core resources are registered")
}

/// What a token needs of the objects it names: identity, and for a pod its service
/// account and node. Read from the stored bytes without decoding the rest (a Node's
/// status is large).
#[derive(Debug, Default, serde::Deserialize)]
struct Named {
    #[serde(default)]
    metadata: NamedMeta,
    #[serde(default)]
    spec: NamedSpec,
}

#[derive(Debug, Default, serde::Deserialize)]
struct NamedMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    uid: String,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct NamedSpec {
    #[serde(default)]
    service_account_name: Option<String>,
    #[serde(default)]
    node_name: Option<String>,
}

fn ref_of(obj: &Named) -> Ref {
    Ref {
        name: obj.metadata.name.clone(),
        uid: obj.metadata.uid.clone(),
    }
}

async fn get(server: &ApiServer, plural: &str, ns: &str, name: &str) -> ApiResult<Option<Named>> {
    let info = info(plural);
    let namespace = info.namespaced.then_some(ns);
    let kv = server
        .store
        .get(&info.key(namespace, name))
        .await
        .map_err(|e| ApiError::internal(format!("reading {plural} {name}: {e}")))?;
    kv.map(|kv| {
        serde_json::from_slice::<Named>(&kv.value)
            .map_err(|e| ApiError::internal(format!("stored object {} is not JSON: {e}", kv.key)))
    })
    .transpose()
}

/// Reads the object a token is to be bound to and checks it, as upstream.
async fn bound_object(
    server: &ApiServer,
    namespace: &str,
    sa_name: &str,
    r: &BoundRef,
) -> ApiResult<Bound> {
    let core = r.api_version == "v1";
    let (plural, obj) = match (core, r.kind.as_str()) {
        (true, "Pod") => ("pods", get(server, "pods", namespace, &r.name).await?),
        (true, "Secret") => ("secrets", get(server, "secrets", namespace, &r.name).await?),
        (true, "Node") => ("nodes", get(server, "nodes", "", &r.name).await?),
        _ => {
            let (group, version) = match r.api_version.split_once('/') {
                Some((g, v)) => (g, v),
                None => ("", r.api_version.as_str()),
            };
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of type {group}/{version}, Kind={}",
                r.kind
            )));
        }
    };
    let obj = obj.ok_or_else(|| ApiError::not_found(info(plural), &r.name))?;
    let this = ref_of(&obj);
    if !r.uid.is_empty() && r.uid != this.uid {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {:?}: the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated",
                r.kind, r.name, r.uid
            ),
        )
        .with_details(json!({"name": r.name, "kind": r.kind})));
    }
    let mut bound = Bound::default();
    match plural {
        "pods" => {
            if obj.spec.service_account_name.as_deref().unwrap_or("") != sa_name {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount {sa_name:?} to pod running with different serviceaccount name."
                )));
            }
            // The node is informational: a missing node does not stop the token.
            if let Some(node) = obj.spec.node_name.as_deref().filter(|n| !n.is_empty()) {
                if let Ok(Some(n)) = get(server, "nodes", "", node).await {
                    bound.node = Some(ref_of(&n));
                }
            }
            bound.pod = Some(this);
        }
        "secrets" => bound.secret = Some(this),
        _ => bound.node = Some(this),
    }
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    const ISS: &str = "https://kubernetes.default.svc.cluster.local";

    fn issuer() -> Issuer {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        Issuer::new(
            jwt::SigningKey::from_pkcs8(pkcs8.as_ref()).unwrap(),
            "cluster.local",
        )
    }

    #[test]
    fn spec_defaults_and_validation() {
        let auds = vec![ISS.to_string()];
        let s = spec("default", &json!({"spec": {}}), &auds).unwrap();
        assert_eq!(
            s,
            Spec {
                audiences: auds.clone(),
                expiration_seconds: 3600,
                bound: None
            }
        );
        let s = spec(
            "default",
            &json!({"spec": {"audiences": ["vault"], "expirationSeconds": 600,
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web", "uid": "u"}}}),
            &auds,
        )
        .unwrap();
        assert_eq!(s.audiences, ["vault"]);
        assert_eq!(s.bound.unwrap().name, "web");
        let err = spec(
            "default",
            &json!({"spec": {"expirationSeconds": 599}}),
            &auds,
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
        assert_eq!(err.message, "TokenRequest.authentication.k8s.io \"default\" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes");
        let err = spec("default", &json!({"kind": "Pod", "spec": {}}), &auds).unwrap_err();
        assert_eq!(err.code, 400);
    }

    #[test]
    fn claims_follow_upstream() {
        let iss = issuer();
        let sa = Ref {
            name: "default".into(),
            uid: "sa".into(),
        };
        let pod = Ref {
            name: "web".into(),
            uid: "p".into(),
        };
        let plain = Spec {
            audiences: vec![ISS.into()],
            expiration_seconds: 3600,
            bound: None,
        };
        let (c, expires) = claims(
            &iss,
            "ns",
            sa.clone(),
            &plain,
            Bound::default(),
            100,
            "j".into(),
        );
        assert_eq!(c.sub, "system:serviceaccount:ns:default");
        assert_eq!((c.iat, c.nbf, c.exp, expires), (100, 100, 3700, 3700));
        assert_eq!(c.kubernetes.serviceaccount, sa);
        assert!(c.kubernetes.pod.is_none() && c.kubernetes.warnafter.is_none());

        // The kubelet's 3607 s pod-bound tokens are extended to a year, with warnafter.
        let kubelet = Spec {
            expiration_seconds: 3607,
            ..plain.clone()
        };
        let bound = Bound {
            pod: Some(pod.clone()),
            ..Bound::default()
        };
        let (c, expires) = claims(
            &iss,
            "ns",
            sa.clone(),
            &kubelet,
            bound.clone(),
            100,
            "j".into(),
        );
        assert_eq!(c.exp, 100 + EXTENDED_EXPIRATION_SECONDS);
        assert_eq!((c.kubernetes.warnafter, expires), (Some(3707), 3707));
        assert_eq!(c.kubernetes.pod, Some(pod));
        // Not for other audiences.
        let vault = Spec {
            audiences: vec!["vault".into()],
            ..kubelet
        };
        let (c, _) = claims(&iss, "ns", sa, &vault, bound, 100, "j".into());
        assert_eq!(c.exp, 3707);
    }
}
