//! Service accounts as upstream: signed JWTs (`jwt`), the TokenRequest subresource
//! `serviceaccounts/<name>/token` (`token_request`), the bearer-token authenticator that
//! accepts them while the ServiceAccount (and bound Pod or Secret) still exists
//! (`authenticate`), and the ServiceAccount admission plugin that gives pods their account
//! and the `kube-api-access-*` projected volume (`admission`).

pub mod admission;
pub mod authenticate;
pub mod jwt;
pub mod token_request;

/// The issuer of tokens: the cluster's signing key, its name and accepted audiences.
pub struct Issuer {
    pub key: jwt::SigningKey,
    /// `iss` of every token (`https://kubernetes.default.svc.<cluster-domain>`).
    pub issuer: String,
    /// Audiences the API server accepts, and the default of a TokenRequest (upstream's
    /// `--api-audiences`, which defaults to the issuer).
    pub api_audiences: Vec<String>,
}

impl Issuer {
    /// An issuer named after the cluster domain, accepting its own name as audience.
    pub fn new(key: jwt::SigningKey, cluster_domain: &str) -> Issuer {
        let issuer = format!("https://kubernetes.default.svc.{cluster_domain}");
        Issuer {
            key,
            api_audiences: vec![issuer.clone()],
            issuer,
        }
    }
}

/// Unix seconds now.
pub fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}
