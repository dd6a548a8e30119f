//! Authentication: who is calling. A client certificate signed by the cluster CA names the
//! user (CN) and groups (O), as upstream's x509 authenticator; otherwise a bearer token
//! from the configured list. Anything else is anonymous and refused with 401 (skiff, like
//! k3s, runs with anonymous auth off). Authorization (RBAC) comes later.

use x509_parser::prelude::{FromDer, X509Certificate};

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
}

/// A bearer token and who it authenticates.
#[derive(Clone, Debug)]
pub struct TokenUser {
    pub token: String,
    pub user: String,
    pub groups: Vec<String>,
}

/// The identity in a verified client certificate (DER). The TLS layer has already checked
/// the chain against the cluster CA; this only reads the subject.
pub fn identity_from_certificate(der: &[u8]) -> Option<Identity> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    Some(Identity { user, groups })
}

/// The identity for an `Authorization` header value, if it carries a known bearer token.
pub fn identity_from_bearer(header: &str, tokens: &[TokenUser]) -> Option<Identity> {
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))?
        .trim();
    if token.is_empty() {
        return None;
    }
    tokens
        .iter()
        .find(|t| constant_time_eq(t.token.as_bytes(), token.as_bytes()))
        .map(|t| Identity {
            user: t.user.clone(),
            groups: t.groups.clone(),
        })
}

/// Compare secrets without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_must_match_exactly() {
        let tokens = vec![TokenUser {
            token: "s3cret".into(),
            user: "admin".into(),
            groups: vec!["system:masters".into()],
        }];
        assert_eq!(
            identity_from_bearer("Bearer s3cret", &tokens).unwrap().user,
            "admin"
        );
        assert!(identity_from_bearer("Bearer s3cre", &tokens).is_none());
        assert!(identity_from_bearer("Basic s3cret", &tokens).is_none());
        assert!(identity_from_bearer("Bearer ", &tokens).is_none());
    }
}
