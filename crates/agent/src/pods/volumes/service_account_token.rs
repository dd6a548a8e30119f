//! Projected `serviceAccountToken` sources, as kubelet's token manager: the agent asks the
//! API server for a token bound to the pod (a TokenRequest on the pod's ServiceAccount,
//! with the source's audience and expirationSeconds, authenticated by the node's client
//! certificate) and writes it with the atomic writer. The token already in the volume is
//! kept until 80% of its lifetime has passed or it is 24 h old, then a new one replaces
//! it on the next volume refresh. The written file is the cache, so an agent restart
//! does not re-request every pod's token.

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount, ServiceAccountTokenProjection};
use kube::api::{Api, PostParams};

use super::atomic_writer::{clean, FileProjection, Payload};
use crate::pods::context::NodeContext;

/// A token older than this is replaced whatever its lifetime (kubelet's maxTTL).
const MAX_AGE_SECONDS: i64 = 24 * 60 * 60;

/// The times of a token already written, and what it was issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub issued_at: i64,
    /// When it expires as far as the kubelet is concerned: `warnafter` for the API
    /// server's extended tokens, else `exp`.
    pub expires_at: i64,
    pub pod_uid: String,
    pub audiences: Vec<String>,
}

/// Reads a token's claims (no signature check: the agent only times its own tokens).
pub fn written(token: &str) -> Option<Written> {
    use base64::Engine;
    let body = token.trim().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let kube = &claims["kubernetes.io"];
    let exp = claims["exp"].as_i64()?;
    Some(Written {
        issued_at: claims["iat"].as_i64()?,
        expires_at: kube["warnafter"].as_i64().unwrap_or(exp),
        pod_uid: kube["pod"]["uid"].as_str().unwrap_or("").to_string(),
        audiences: match &claims["aud"] {
            serde_json::Value::String(a) => vec![a.clone()],
            v => v
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(String::from))
                .collect(),
        },
    })
}

/// Whether the token in the volume still serves: issued for this pod (and audience, when
/// the source names one), younger than 24 h and within 80% of its lifetime.
pub fn reusable(w: &Written, pod_uid: &str, audience: Option<&str>, now: i64) -> bool {
    if w.pod_uid != pod_uid {
        return false;
    }
    if let Some(a) = audience {
        if !w.audiences.iter().any(|x| x == a) {
            return false;
        }
    }
    let lifetime = (w.expires_at - w.issued_at).max(0);
    now < w.issued_at + MAX_AGE_SECONDS && now < w.issued_at + lifetime * 8 / 10
}

/// The file of one `serviceAccountToken` source of projected volume `volume`.
pub async fn payload(
    ctx: &NodeContext,
    pod: &Pod,
    volume: &str,
    source: &ServiceAccountTokenProjection,
    mode: i32,
) -> Result<Payload, String> {
    let path = clean(&source.path);
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let audience = source.audience.as_deref().filter(|a| !a.is_empty());
    let current = ctx.layout.volumes_dir(&uid).join(volume).join(&path);
    let now = chrono::Utc::now().timestamp();
    let kept = match tokio::fs::read_to_string(&current).await {
        Ok(token) => written(&token)
            .filter(|w| reusable(w, &uid, audience, now))
            .map(|_| token),
        Err(_) => None,
    };
    let token = match kept {
        Some(token) => token,
        None => request(ctx, pod, source).await?,
    };
    Ok(Payload::from([(
        path,
        FileProjection {
            data: token.into_bytes(),
            mode: mode as u32,
        },
    )]))
}

/// A new token for the pod's ServiceAccount, bound to the pod.
async fn request(
    ctx: &NodeContext,
    pod: &Pod,
    source: &ServiceAccountTokenProjection,
) -> Result<String, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into());
    let audiences: Vec<String> = source
        .audience
        .clone()
        .filter(|a| !a.is_empty())
        .into_iter()
        .collect();
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: (!audiences.is_empty()).then_some(audiences),
            expiration_seconds: Some(source.expiration_seconds.unwrap_or(3600)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod_name.clone()),
                uid: pod.metadata.uid.clone(),
            }),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), namespace);
    let answer = api
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .map_err(|e| {
            format!("failed to fetch token: requesting a token for service account {namespace}/{account} bound to pod {pod_name}: {e}")
        })?;
    answer
        .status
        .and_then(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("failed to fetch token: the API server returned no token for service account {namespace}/{account}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use serde_json::json;

    fn token(claims: serde_json::Value) -> String {
        let enc = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        format!("{}.{}.sig", enc(&json!({"alg": "ES256"})), enc(&claims))
    }

    #[test]
    fn reads_times_and_binding() {
        let t = token(json!({"aud": ["a"], "iat": 100, "exp": 100 + 31_536_000,
            "kubernetes.io": {"pod": {"name": "p", "uid": "u"}, "warnafter": 3707}}));
        let w = written(&t).unwrap();
        assert_eq!(
            w,
            Written {
                issued_at: 100,
                expires_at: 3707,
                pod_uid: "u".into(),
                audiences: vec!["a".into()]
            }
        );
        assert!(written("not a token").is_none());
    }

    #[test]
    fn refresh_at_eighty_percent_or_a_day() {
        let w = |iat: i64, exp: i64| Written {
            issued_at: iat,
            expires_at: exp,
            pod_uid: "u".into(),
            audiences: vec!["a".into()],
        };
        let cases: Vec<(&str, Written, &str, Option<&str>, i64, bool)> = vec![
            ("fresh", w(0, 3600), "u", None, 100, true),
            ("just before 80%", w(0, 3600), "u", None, 2879, true),
            ("at 80%", w(0, 3600), "u", None, 2880, false),
            ("other pod", w(0, 3600), "v", None, 100, false),
            ("same audience", w(0, 3600), "u", Some("a"), 100, true),
            ("other audience", w(0, 3600), "u", Some("b"), 100, false),
            (
                "long-lived, a day old",
                w(0, 10 * 86_400),
                "u",
                None,
                86_400,
                false,
            ),
            (
                "long-lived, younger",
                w(0, 10 * 86_400),
                "u",
                None,
                86_399,
                true,
            ),
        ];
        for (name, written, uid, aud, now, want) in cases {
            assert_eq!(reusable(&written, uid, aud, now), want, "{name}");
        }
    }
}
