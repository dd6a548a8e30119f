//! Service-account JWTs: upstream's claims (`iss`, `sub`, `aud`, `exp`/`iat`/`nbf`, `jti`
//! and the private `kubernetes.io` claim) signed with ES256 (ECDSA P-256, SHA-256, the
//! fixed 64-byte r‖s signature of RFC 7518). Encoding and verification are pure given the
//! key and a clock; the key is loaded from PKCS#8 by the caller.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// Seconds of clock skew tolerated on `exp` and `nbf`, as go-jose's default leeway that
/// upstream's validator uses.
pub const LEEWAY_SECONDS: i64 = 60;

/// The DER prefix of a P-256 SubjectPublicKeyInfo; the 65-byte uncompressed point follows.
/// Upstream's key id is the SHA-256 of that DER, so ours matches for the same key.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("service-account key: {0}")]
    Key(String),
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("unsupported token algorithm {0:?}")]
    Algorithm(String),
    #[error("invalid token signature")]
    Signature,
    #[error("token issued by {0:?}, not by this cluster")]
    Issuer(String),
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token audiences {0:?} are not accepted")]
    Audience(Vec<String>),
    #[error("signing token: {0}")]
    Signing(String),
}

/// A name and uid, as the `kubernetes.io` claim's `serviceaccount`, `pod`, `secret`, `node`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    pub name: String,
    pub uid: String,
}

/// The private `kubernetes.io` claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaim {
    pub namespace: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub node: Option<Ref>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pod: Option<Ref>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub secret: Option<Ref>,
    pub serviceaccount: Ref,
    /// With extended expiration (kubelet's 3607 s tokens): when the token would have
    /// expired; upstream warns about use past it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub warnafter: Option<i64>,
}

/// A service-account token's claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    #[serde(default)]
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaim,
    pub nbf: i64,
    pub sub: String,
}

/// `system:serviceaccount:<namespace>:<name>`.
pub fn subject(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    kid: String,
}

/// The cluster's service-account key: signs and verifies tokens.
pub struct SigningKey {
    key: EcdsaKeyPair,
    kid: String,
    rng: SystemRandom,
}

impl SigningKey {
    /// From a PKCS#8 (DER) P-256 private key.
    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey, JwtError> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|e| JwtError::Key(format!("not a PKCS#8 ECDSA P-256 key: {e}")))?;
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(key.public_key().as_ref());
        let kid = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &spki));
        Ok(SigningKey { key, kid, rng })
    }

    /// The key id in every token's header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A signed compact JWT carrying `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, JwtError> {
        let header = Header {
            alg: "ES256".into(),
            kid: self.kid.clone(),
        };
        let encode = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        let header = serde_json::to_vec(&header).map_err(|e| JwtError::Signing(e.to_string()))?;
        let body = serde_json::to_vec(claims).map_err(|e| JwtError::Signing(e.to_string()))?;
        let input = format!("{}.{}", encode(&header), encode(&body));
        let sig = self
            .key
            .sign(&self.rng, input.as_bytes())
            .map_err(|e| JwtError::Signing(e.to_string()))?;
        Ok(format!("{input}.{}", encode(sig.as_ref())))
    }

    /// The claims of a token this key signed, checked against the issuer, the accepted
    /// audiences (one must match) and the time `now` (Unix seconds).
    pub fn verify(
        &self,
        token: &str,
        issuer: &str,
        audiences: &[String],
        now: i64,
    ) -> Result<Claims, JwtError> {
        let claims = self.verify_signature(token)?;
        check_claims(&claims, issuer, audiences, now)?;
        Ok(claims)
    }

    /// The claims of a token with a valid signature by this key, unchecked otherwise.
    pub fn verify_signature(&self, token: &str) -> Result<Claims, JwtError> {
        let mut parts = token.split('.');
        let (Some(h), Some(b), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed("not three dot-separated parts".into()));
        };
        let decode = |part: &str, what: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|e| JwtError::Malformed(format!("{what}: {e}")))
        };
        let header: Header = serde_json::from_slice(&decode(h, "header")?)
            .map_err(|e| JwtError::Malformed(format!("header: {e}")))?;
        if header.alg != "ES256" {
            return Err(JwtError::Algorithm(header.alg));
        }
        let sig = decode(s, "signature")?;
        let public = UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        );
        let input_len = h.len() + 1 + b.len();
        public
            .verify(token[..input_len].as_bytes(), &sig)
            .map_err(|_| JwtError::Signature)?;
        serde_json::from_slice(&decode(b, "claims")?)
            .map_err(|e| JwtError::Malformed(format!("claims: {e}")))
    }
}

/// Issuer, audience and validity period (with [`LEEWAY_SECONDS`]).
pub fn check_claims(
    claims: &Claims,
    issuer: &str,
    audiences: &[String],
    now: i64,
) -> Result<(), JwtError> {
    if claims.iss != issuer {
        return Err(JwtError::Issuer(claims.iss.clone()));
    }
    if now > claims.exp + LEEWAY_SECONDS {
        return Err(JwtError::Expired);
    }
    if now + LEEWAY_SECONDS < claims.nbf {
        return Err(JwtError::NotYetValid);
    }
    if !claims.aud.iter().any(|a| audiences.contains(a)) {
        return Err(JwtError::Audience(claims.aud.clone()));
    }
    Ok(())
}

/// Whether a bearer credential looks like a JWT (three base64url parts), so that static
/// tokens never reach the JWT verifier's error paths.
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && token.starts_with("eyJ")
}

/// The claims of a JWT without checking its signature: for the agent, which only reads
/// its own tokens' times (the server decides validity).
pub fn unverified_claims(token: &str) -> Option<serde_json::Value> {
    let body = token.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        SigningKey::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    const ISS: &str = "https://kubernetes.default.svc.cluster.local";

    fn claims(now: i64) -> Claims {
        Claims {
            aud: vec![ISS.into()],
            exp: now + 3600,
            iat: now,
            iss: ISS.into(),
            jti: "j".into(),
            kubernetes: KubernetesClaim {
                namespace: "default".into(),
                node: None,
                pod: Some(Ref {
                    name: "web".into(),
                    uid: "p-uid".into(),
                }),
                secret: None,
                serviceaccount: Ref {
                    name: "default".into(),
                    uid: "sa-uid".into(),
                },
                warnafter: None,
            },
            nbf: now,
            sub: subject("default", "default"),
        }
    }

    #[test]
    fn round_trip_with_upstream_shape() {
        let k = key();
        let now = 1_700_000_000;
        let token = k.sign(&claims(now)).unwrap();
        assert!(looks_like_jwt(&token));
        let got = k.verify(&token, ISS, &[ISS.into()], now + 10).unwrap();
        assert_eq!(got, claims(now));
        let raw = unverified_claims(&token).unwrap();
        assert_eq!(raw["sub"], "system:serviceaccount:default:default");
        assert_eq!(raw["kubernetes.io"]["serviceaccount"]["uid"], "sa-uid");
        assert_eq!(raw["kubernetes.io"]["pod"]["name"], "web");
        assert!(raw["kubernetes.io"].get("node").is_none());
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], k.kid());
    }

    #[test]
    fn verification_failures() {
        let k = key();
        let now = 1_700_000_000;
        let token = k.sign(&claims(now)).unwrap();
        let aud = [ISS.to_string()];
        let cases: Vec<(&str, Result<Claims, JwtError>)> = vec![
            (
                "expired past leeway",
                k.verify(&token, ISS, &aud, now + 3600 + LEEWAY_SECONDS + 1),
            ),
            ("before nbf", k.verify(&token, ISS, &aud, now - 3600)),
            (
                "wrong audience",
                k.verify(&token, ISS, &["other".into()], now),
            ),
            ("wrong issuer", k.verify(&token, "https://x", &aud, now)),
            ("other key", key().verify(&token, ISS, &aud, now)),
            ("garbage", k.verify("a.b", ISS, &aud, now)),
        ];
        let want = [
            JwtError::Expired,
            JwtError::NotYetValid,
            JwtError::Audience(vec![ISS.into()]),
            JwtError::Issuer(ISS.into()),
            JwtError::Signature,
            JwtError::Malformed("not three dot-separated parts".into()),
        ];
        for ((name, got), want) in cases.into_iter().zip(want) {
            assert_eq!(got.unwrap_err(), want, "{name}");
        }
        // Still valid within the leeway.
        assert!(k.verify(&token, ISS, &aud, now + 3600 + 30).is_ok());
        // A changed claim breaks the signature.
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        let mut c = claims(now);
        c.sub = subject("kube-system", "admin");
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
        assert_eq!(
            k.verify(&parts.join("."), ISS, &aud, now).unwrap_err(),
            JwtError::Signature
        );
    }
}
