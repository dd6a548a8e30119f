//! The service-account token authenticator: a bearer JWT signed by the cluster's key, for
//! an accepted audience and within its lifetime, authenticates as
//! `system:serviceaccount:<ns>:<name>` while the objects it names still exist with the
//! same uid (the ServiceAccount; the Pod or Secret it is bound to), as upstream's
//! validator. A bound Pod deleted more than 60 s ago no longer authenticates.

use serde_json::Value;

use api::registry;

use super::jwt::{self, Claims, Ref};
use crate::auth::Identity;
use crate::objects;
use crate::ApiServer;

/// How long after its deletion started a bound pod's tokens still work (upstream's grace).
const DELETED_POD_GRACE_SECONDS: i64 = 60;

/// Why a token that verified is not accepted (logged at debug; the caller sees 401).
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    Missing(&'static str, String),
    UidMismatch(&'static str, String),
    PodDeleted(String),
    Store(String),
}

/// The identity of a service-account bearer token (`Authorization` header value), or
/// None when it is not one of ours or no longer valid.
pub async fn identity(server: &ApiServer, header: &str) -> Option<Identity> {
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))?
        .trim();
    if !jwt::looks_like_jwt(token) {
        return None;
    }
    let issuer = server.service_accounts.get()?;
    let claims = match issuer.key.verify(
        token,
        &issuer.issuer,
        &issuer.api_audiences,
        super::now_unix(),
    ) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("service-account token refused: {e}");
            return None;
        }
    };
    if let Err(why) = check_objects(server, &claims).await {
        tracing::debug!(sub = %claims.sub, "service-account token refused: {why:?}");
        return None;
    }
    Some(identity_of(&claims))
}

/// The user and groups a valid token's claims stand for.
pub fn identity_of(claims: &Claims) -> Identity {
    let ns = &claims.kubernetes.namespace;
    Identity {
        user: jwt::subject(ns, &claims.kubernetes.serviceaccount.name),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".into(),
        ],
    }
}

/// The ServiceAccount and the bound object must exist with the uids in the token.
async fn check_objects(server: &ApiServer, claims: &Claims) -> Result<(), Rejection> {
    let ns = claims.kubernetes.namespace.as_str();
    let sa = get(
        server,
        "serviceaccounts",
        ns,
        &claims.kubernetes.serviceaccount,
    )
    .await?;
    check_uid("serviceaccount", &sa, &claims.kubernetes.serviceaccount)?;
    if let Some(pod_ref) = &claims.kubernetes.pod {
        let pod = get(server, "pods", ns, pod_ref).await?;
        check_uid("pod", &pod, pod_ref)?;
        if deleted_long_ago(&pod, super::now_unix()) {
            return Err(Rejection::PodDeleted(pod_ref.name.clone()));
        }
    }
    if let Some(secret_ref) = &claims.kubernetes.secret {
        let secret = get(server, "secrets", ns, secret_ref).await?;
        check_uid("secret", &secret, secret_ref)?;
    }
    Ok(())
}

async fn get(
    server: &ApiServer,
    plural: &'static str,
    ns: &str,
    r: &Ref,
) -> Result<Value, Rejection> {
    let info = registry::lookup("", "v1", plural)
        .ok_or_else(|| Rejection::Store(format!("{plural} are not registered")))?;
    let kv = server
        .store
        .get(&info.key(Some(ns), &r.name))
        .await
        .map_err(|e| Rejection::Store(format!("reading {plural} {ns}/{}: {e}", r.name)))?
        .ok_or_else(|| Rejection::Missing(plural, r.name.clone()))?;
    objects::decode(info, &kv)
        .map_err(|e| Rejection::Store(format!("decoding {plural} {ns}/{}: {e:?}", r.name)))
}

fn check_uid(what: &'static str, obj: &Value, r: &Ref) -> Result<(), Rejection> {
    if objects::meta_str(obj, "uid").unwrap_or("") == r.uid {
        Ok(())
    } else {
        Err(Rejection::UidMismatch(what, r.name.clone()))
    }
}

/// Whether the pod's deletion started more than the grace ago.
fn deleted_long_ago(pod: &Value, now: i64) -> bool {
    objects::meta_str(pod, "deletionTimestamp")
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| t.timestamp() < now - DELETED_POD_GRACE_SECONDS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deleted_pods_keep_a_grace_minute() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:10:00Z")
            .unwrap()
            .timestamp();
        let pod = |t: &str| json!({"metadata": {"deletionTimestamp": t}});
        assert!(!deleted_long_ago(&json!({"metadata": {}}), now));
        assert!(!deleted_long_ago(&pod("2026-01-01T00:09:30Z"), now));
        assert!(deleted_long_ago(&pod("2026-01-01T00:08:00Z"), now));
    }

    #[test]
    fn uid_must_match() {
        let obj = json!({"metadata": {"uid": "a"}});
        let r = |uid: &str| Ref {
            name: "n".into(),
            uid: uid.into(),
        };
        assert!(check_uid("pod", &obj, &r("a")).is_ok());
        assert_eq!(
            check_uid("pod", &obj, &r("b")),
            Err(Rejection::UidMismatch("pod", "n".into()))
        );
    }
}
