//! Joining nodes, outside the Kubernetes API (k3s's supervisor endpoints, under our own
//! names). `GET /cacerts` serves the cluster CA to anyone: an agent trusts it only after
//! checking it against the CA hash in its `K10` join token. `POST /v1-skiff/node-certificate`
//! signs a node's certificate request (`system:node:<name>`, group `system:nodes`) for a
//! caller authenticated with the join token or as an administrator. `GET /v1-skiff/config`
//! tells an agent the cluster's network settings (k3s agents learn them from their server
//! too), so `skiff agent --server URL --token T` needs no more flags.

use std::sync::Arc;

use bytes::Bytes;
use hyper::{Method, Response};
use serde::{Deserialize, Serialize};

use crate::auth::Identity;
use crate::errors::ApiError;
use crate::http::{self, Body};

pub const CACERTS_PATH: &str = "/cacerts";
pub const NODE_CERTIFICATE_PATH: &str = "/v1-skiff/node-certificate";
pub const CLUSTER_CONFIG_PATH: &str = "/v1-skiff/config";

/// The cluster-wide settings every node must agree with the server on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfig {
    /// `--cluster-cidr`, e.g. 10.42.0.0/16.
    pub cluster_cidr: String,
    /// `--service-cidr`, e.g. 10.43.0.0/16.
    pub service_cidr: String,
    /// `--cluster-dns`, e.g. 10.43.0.10.
    pub cluster_dns: String,
    /// `--cluster-domain`, e.g. cluster.local.
    pub cluster_domain: String,
}

/// Signs a node's certificate request with the cluster CA (the binary owns the CA key).
pub trait NodeCertificateSigner: Send + Sync {
    /// The signed certificate (PEM) for `node_name`, whatever subject the request asked for.
    fn sign(&self, node_name: &str, csr_pem: &str) -> Result<String, String>;
}

/// What the join endpoints serve.
pub struct Join {
    /// The cluster CA bundle exactly as the token's hash covers it.
    pub ca_pem: String,
    pub signer: Arc<dyn NodeCertificateSigner>,
    /// Users allowed to obtain node certificates (the join token's user).
    pub allowed_users: Vec<String>,
    pub cluster: ClusterConfig,
}

/// `GET /v1-skiff/config`: for nodes (group `system:nodes`), the join token's user and
/// administrators.
pub fn cluster_config(join: Option<&Join>, who: &Identity, method: &Method) -> Response<Body> {
    let Some(join) = join else {
        return http::error(&ApiError::not_found_path());
    };
    if method != Method::GET {
        return http::error(&ApiError::method_not_allowed("only GET"));
    }
    let allowed = join.allowed_users.iter().any(|u| u == &who.user)
        || who
            .groups
            .iter()
            .any(|g| g == "system:masters" || g == "system:nodes");
    if !allowed {
        return http::error(&ApiError::forbidden(format!(
            "user \"{}\" may not read the cluster configuration",
            who.user
        )));
    }
    match serde_json::to_vec(&join.cluster) {
        Ok(json) => http::raw(200, "application/json", json),
        Err(e) => http::error(&ApiError::internal(format!("encoding: {e}"))),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCertificateRequest {
    pub node_name: String,
    /// PKCS#10 request, PEM.
    pub csr: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCertificateResponse {
    pub certificate: String,
    pub ca_certificate: String,
}

/// `GET /cacerts`, answered before authentication (the CA is public; the pin is the hash).
pub fn cacerts(join: Option<&Join>, method: &Method) -> Response<Body> {
    match (join, method) {
        (Some(j), &Method::GET) => http::raw(200, "text/plain; charset=utf-8", j.ca_pem.clone()),
        (Some(_), _) => http::error(&ApiError::method_not_allowed("only GET")),
        (None, _) => http::error(&ApiError::not_found_path()),
    }
}

/// `POST /v1-skiff/node-certificate`.
pub fn node_certificate(
    join: Option<&Join>,
    who: &Identity,
    method: &Method,
    body: &Bytes,
) -> Response<Body> {
    let Some(join) = join else {
        return http::error(&ApiError::not_found_path());
    };
    if method != Method::POST {
        return http::error(&ApiError::method_not_allowed("only POST"));
    }
    let allowed = join.allowed_users.iter().any(|u| u == &who.user)
        || who.groups.iter().any(|g| g == "system:masters");
    if !allowed {
        return http::error(&ApiError::forbidden(format!(
            "user \"{}\" may not obtain node certificates",
            who.user
        )));
    }
    let request: NodeCertificateRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return http::error(&ApiError::bad_request(format!(
                "node certificate request: {e}"
            )))
        }
    };
    let name_errors = api::selectors::dns1123_subdomain_errors(&request.node_name);
    if !name_errors.is_empty() {
        return http::error(&ApiError::bad_request(format!(
            "node name {:?}: {}",
            request.node_name,
            name_errors.join("; ")
        )));
    }
    match join.signer.sign(&request.node_name, &request.csr) {
        Ok(certificate) => {
            let reply = NodeCertificateResponse {
                certificate,
                ca_certificate: join.ca_pem.clone(),
            };
            match serde_json::to_vec(&reply) {
                Ok(json) => http::raw(200, "application/json", json),
                Err(e) => http::error(&ApiError::internal(format!("encoding: {e}"))),
            }
        }
        Err(e) => http::error(&ApiError::bad_request(format!(
            "certificate request for node {:?}: {e}",
            request.node_name
        ))),
    }
}
