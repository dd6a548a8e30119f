//! Building HTTP responses: JSON/YAML bodies, `Status` errors, warning headers, and the
//! streaming body type that watches use.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::{header, Response, StatusCode};
use serde_json::Value;

use crate::errors::ApiError;
use crate::request::Rendering;

pub type Body = BoxBody<Bytes, Infallible>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A response with a JSON (or YAML, if asked) body.
pub fn object(code: u16, value: &Value, rendering: Rendering) -> Response<Body> {
    object_with_warnings(code, value, rendering, &[])
}

pub fn object_with_warnings(
    code: u16,
    value: &Value,
    rendering: Rendering,
    warnings: &[String],
) -> Response<Body> {
    let (content_type, bytes) = match rendering {
        Rendering::Yaml => match serde_yaml::to_string(value) {
            Ok(s) => ("application/yaml", Bytes::from(s)),
            Err(e) => return error(&ApiError::internal(format!("encoding YAML: {e}"))),
        },
        _ => (
            "application/json",
            Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
        ),
    };
    with_warnings(code, content_type, bytes, warnings)
}

/// An object already encoded as JSON, with warnings.
pub fn json_with_warnings(code: u16, json: Bytes, warnings: &[String]) -> Response<Body> {
    with_warnings(code, "application/json", json, warnings)
}

fn with_warnings(
    code: u16,
    content_type: &str,
    bytes: Bytes,
    warnings: &[String],
) -> Response<Body> {
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
        .header(header::CONTENT_TYPE, content_type);
    for w in warnings {
        // Upstream's form: `299 - "<text>"`, the text escaped as a quoted string.
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        builder = builder.header("Warning", format!("299 - \"{escaped}\""));
    }
    builder
        .body(full(bytes))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

/// A raw body with the given content type (OpenAPI, health checks, discovery v2).
pub fn raw(code: u16, content_type: &str, bytes: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
        .header(header::CONTENT_TYPE, content_type)
        .body(full(bytes))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

pub fn error(err: &ApiError) -> Response<Body> {
    let mut resp = object(err.code, &err.to_status(), Rendering::Json);
    if err.code == 401 {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"kubernetes-master\""),
        );
    }
    resp
}
