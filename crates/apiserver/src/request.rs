//! What a request asks for beyond its path: query parameters (list, watch, write and
//! delete options) and content negotiation (JSON, YAML, Table, PartialObjectMetadata).
//! Pure parsing with upstream's error messages.

use std::collections::HashMap;

use api::selectors::go_quote;
use api::validation::{Cause, CauseType};

use crate::errors::{ApiError, ApiResult};

/// Query parameters, last value wins (as Go's url.Values.Get does for the first; clients
/// never repeat them).
#[derive(Debug, Default, Clone)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        let mut map = HashMap::new();
        if let Some(q) = raw {
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
            }
        }
        Query(map)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn non_empty(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| !v.is_empty())
    }

    pub fn bool(&self, key: &str) -> ApiResult<bool> {
        match self.get(key) {
            None | Some("") => Ok(false),
            Some("true") | Some("1") | Some("True") => Ok(true),
            Some("false") | Some("0") | Some("False") => Ok(false),
            Some(other) => Err(ApiError::bad_request(format!(
                "invalid boolean value for {key}: {other:?}"
            ))),
        }
    }

    pub fn i64(&self, key: &str) -> ApiResult<Option<i64>> {
        match self.non_empty(key) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid value for {key}: {v:?}"))),
        }
    }

    /// `dryRun=All` (the only value upstream accepts).
    pub fn dry_run(&self) -> ApiResult<bool> {
        match self.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "Invalid dry run value: unsupported dry-run value {other:?}; supported values: All"
            ))),
        }
    }

    pub fn field_validation(&self) -> ApiResult<FieldValidation> {
        match self.get("fieldValidation") {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other}. Supported values are Ignore, Warn, Strict"
            ))),
        }
    }
}

/// What to do about fields the schema does not know (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

/// How the client wants objects rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rendering {
    Json,
    Yaml,
    /// meta.k8s.io/v1 Table (kubectl get).
    Table,
    /// meta.k8s.io/v1 PartialObjectMetadata(List) (metadata-only clients).
    PartialMetadata,
}

/// Pick the rendering from the Accept header: the first acceptable entry wins.
pub fn negotiate(accept: Option<&str>) -> ApiResult<Rendering> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(Rendering::Json);
    };
    for entry in accept.split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let params: HashMap<&str, &str> = parts.filter_map(|p| p.split_once('=')).collect();
        let json_like = matches!(
            media,
            "application/json" | "*/*" | "application/*" | "application/vnd.kubernetes.protobuf"
        );
        if let Some(as_) = params.get("as") {
            let is_meta_group = params.get("g").is_some_and(|g| *g == "meta.k8s.io");
            let version_ok = params.get("v").is_some_and(|v| *v == "v1");
            if media == "application/json" && is_meta_group && version_ok {
                match *as_ {
                    "Table" => return Ok(Rendering::Table),
                    "PartialObjectMetadata" | "PartialObjectMetadataList" => {
                        return Ok(Rendering::PartialMetadata)
                    }
                    _ => {}
                }
            }
            continue;
        }
        if media == "application/yaml" {
            return Ok(Rendering::Yaml);
        }
        if json_like {
            // Protobuf is not spoken; clients that list it always accept JSON too, and
            // plain JSON is what they get.
            if media == "application/vnd.kubernetes.protobuf" {
                continue;
            }
            return Ok(Rendering::Json);
        }
    }
    Err(ApiError::not_acceptable(
        "only the following media types are accepted: application/json, application/yaml, application/json;as=Table;v=v1;g=meta.k8s.io",
    ))
}

/// Options of a list or watch.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub watch: bool,
    pub allow_bookmarks: bool,
    pub timeout_seconds: Option<i64>,
    /// `sendInitialEvents`, when given: `Some(false)` differs from absent for a watch
    /// without a resourceVersion (start at the current revision, no initial events).
    pub send_initial_events: Option<bool>,
    pub include_object: IncludeObject,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    #[default]
    Metadata,
    Object,
}

impl ListOptions {
    pub fn from_query(q: &Query) -> ApiResult<ListOptions> {
        let limit = match q.i64("limit")? {
            Some(l) if l > 0 => Some(l as usize),
            _ => None,
        };
        let include_object = match q.get("includeObject") {
            None | Some("") | Some("Metadata") => IncludeObject::Metadata,
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "includeObject: unsupported value {other:?}"
                )))
            }
        };
        let send_initial_events = match q.non_empty("sendInitialEvents") {
            Some(_) => Some(q.bool("sendInitialEvents")?),
            None => None,
        };
        let opts = ListOptions {
            label_selector: q.non_empty("labelSelector").map(String::from),
            field_selector: q.non_empty("fieldSelector").map(String::from),
            limit,
            continue_token: q.non_empty("continue").map(String::from),
            resource_version: q.non_empty("resourceVersion").map(String::from),
            resource_version_match: q.non_empty("resourceVersionMatch").map(String::from),
            watch: q.bool("watch")?,
            allow_bookmarks: q.bool("allowWatchBookmarks")?,
            timeout_seconds: q.i64("timeoutSeconds")?,
            send_initial_events,
            include_object,
        };
        let causes = if opts.watch {
            watch_option_errors(&opts)
        } else {
            list_option_errors(&opts)
        };
        if !causes.is_empty() {
            // Upstream: `NewInvalid(meta.k8s.io ListOptions, "", errs)`.
            return Err(ApiError::invalid_kind(
                "meta.k8s.io",
                "ListOptions",
                "",
                &causes,
            ));
        }
        if opts.continue_token.is_some()
            && opts.resource_version.as_deref().is_some_and(|rv| rv != "0")
        {
            // The storage layer's answer upstream: 400, not 422.
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        Ok(opts)
    }
}

fn forbidden(field: &str, detail: &str) -> Cause {
    Cause {
        reason: CauseType::Forbidden,
        field: field.to_string(),
        message: format!("Forbidden: {detail}"),
    }
}

fn not_supported(field: &str, value: &str, supported: &[&str]) -> Cause {
    let quoted: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
    Cause {
        reason: CauseType::NotSupported,
        field: field.to_string(),
        message: format!(
            "Unsupported value: {}: supported values: {}",
            go_quote(value),
            quoted.join(", ")
        ),
    }
}

const RV_MATCH: &str = "resourceVersionMatch";

/// Upstream's `ValidateListOptions` for a list, in its order.
fn list_option_errors(opts: &ListOptions) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Some(m) = opts.resource_version_match.as_deref() {
        if opts.resource_version.is_none() {
            causes.push(forbidden(
                RV_MATCH,
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        if opts.continue_token.is_some() {
            causes.push(forbidden(
                RV_MATCH,
                "resourceVersionMatch is forbidden when continue is provided",
            ));
        }
        if m != "Exact" && m != "NotOlderThan" {
            causes.push(not_supported(RV_MATCH, m, &["Exact", "NotOlderThan", ""]));
        }
        if m == "Exact" && opts.resource_version.as_deref() == Some("0") {
            causes.push(forbidden(
                RV_MATCH,
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            ));
        }
    }
    if opts.send_initial_events.is_some() {
        causes.push(forbidden(
            "sendInitialEvents",
            "sendInitialEvents is forbidden for list",
        ));
    }
    causes
}

/// Upstream's `validateWatchOptions` (WatchList enabled, as in 1.32): `resourceVersionMatch`
/// is only allowed, as NotOlderThan, together with `sendInitialEvents` (a streaming list:
/// `sendInitialEvents=true`, `resourceVersionMatch=NotOlderThan` and no `resourceVersion`
/// is the usual form).
fn watch_option_errors(opts: &ListOptions) -> Vec<Cause> {
    let mut causes = Vec::new();
    let matched = opts.resource_version_match.as_deref();
    if opts.send_initial_events.is_some() && matched != Some("NotOlderThan") {
        causes.push(forbidden(
            RV_MATCH,
            "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ));
    }
    if let Some(m) = matched {
        if opts.send_initial_events.is_none() {
            causes.push(forbidden(
                RV_MATCH,
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        if m != "NotOlderThan" {
            causes.push(not_supported(RV_MATCH, m, &["NotOlderThan"]));
        }
        if opts.continue_token.is_some() {
            causes.push(forbidden(
                RV_MATCH,
                "resourceVersionMatch is forbidden when continue is provided",
            ));
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_list_watches_need_no_resource_version() {
        let ok = |query: &str| ListOptions::from_query(&Query::parse(Some(query))).is_ok();
        assert!(ok(
            "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
        ));
        assert!(ok(
            "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=5"
        ));
        assert!(ok(
            "watch=true&sendInitialEvents=false&resourceVersionMatch=NotOlderThan"
        ));
        assert!(ok("watch=true"));
        assert!(!ok("watch=true&resourceVersionMatch=NotOlderThan"));
        assert!(!ok("watch=true&sendInitialEvents=true"));
        assert!(!ok(
            "watch=true&sendInitialEvents=true&resourceVersionMatch=Exact"
        ));
        // Lists keep their rules.
        assert!(!ok("resourceVersionMatch=NotOlderThan"));
        assert!(ok("resourceVersionMatch=NotOlderThan&resourceVersion=0"));
    }

    #[test]
    fn bad_options_are_upstreams_invalid_list_options() {
        let status = |query: &str| {
            ListOptions::from_query(&Query::parse(Some(query)))
                .unwrap_err()
                .to_status()
        };
        let s = status("watch=true&resourceVersionMatch=Exact");
        assert_eq!(s["code"], 422);
        assert_eq!(s["reason"], "Invalid");
        assert_eq!(s["details"]["kind"], "ListOptions");
        assert_eq!(s["details"]["group"], "meta.k8s.io");
        let causes: Vec<(&str, &str)> = s["details"]["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["field"].as_str().unwrap(), c["reason"].as_str().unwrap()))
            .collect();
        assert_eq!(
            causes,
            vec![
                ("resourceVersionMatch", "FieldValueForbidden"),
                ("resourceVersionMatch", "FieldValueNotSupported"),
            ]
        );
        assert_eq!(
            s["details"]["causes"][1]["message"],
            "Unsupported value: \"Exact\": supported values: \"NotOlderThan\""
        );
        let s = status("resourceVersionMatch=Exact&resourceVersion=0");
        assert_eq!(
            s["message"],
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: \
             resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\""
        );
        assert_eq!(status("sendInitialEvents=true")["code"], 422);
        // The storage layer's check stays a 400, as upstream.
        let s = status("continue=abc&resourceVersion=5");
        assert_eq!(
            (s["code"].as_i64(), s["reason"].as_str()),
            (Some(400), Some("BadRequest"))
        );
    }

    #[test]
    fn send_initial_events_false_is_not_absent() {
        let opts = |query: &str| ListOptions::from_query(&Query::parse(Some(query))).unwrap();
        assert_eq!(opts("watch=true").send_initial_events, None);
        assert_eq!(
            opts("watch=true&sendInitialEvents=false&resourceVersionMatch=NotOlderThan")
                .send_initial_events,
            Some(false)
        );
    }

    #[test]
    fn kubectl_get_asks_for_tables() {
        let a = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(negotiate(Some(a)).unwrap(), Rendering::Table);
        assert_eq!(
            negotiate(Some("application/json")).unwrap(),
            Rendering::Json
        );
        assert_eq!(negotiate(None).unwrap(), Rendering::Json);
        assert_eq!(
            negotiate(Some(
                "application/vnd.kubernetes.protobuf, application/json"
            ))
            .unwrap(),
            Rendering::Json
        );
        assert_eq!(
            negotiate(Some(
                "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
            ))
            .unwrap(),
            Rendering::PartialMetadata
        );
        assert!(negotiate(Some("text/html")).is_err());
    }

    #[test]
    fn list_options_follow_upstream_rules() {
        let q = Query::parse(Some("limit=500&labelSelector=app%3Dweb&watch=1"));
        let o = ListOptions::from_query(&q).unwrap();
        assert_eq!(o.limit, Some(500));
        assert_eq!(o.label_selector.as_deref(), Some("app=web"));
        assert!(o.watch);
        let q = Query::parse(Some("resourceVersionMatch=Exact"));
        assert!(ListOptions::from_query(&q).is_err());
        assert!(Query::parse(Some("dryRun=Some")).dry_run().is_err());
    }
}
