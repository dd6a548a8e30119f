//! apps/v1 and batch/v1 validation: Deployment, ReplicaSet, StatefulSet, DaemonSet,
//! ControllerRevision, Job and CronJob (with the robfig/cron schedule grammar upstream
//! uses), following `pkg/apis/apps/validation` and `pkg/apis/batch/validation`.

use serde_json::Value;

use super::meta::{
    go_label_selector, selector_is_empty, selector_matches, validate_label_selector,
};
use super::names::is_valid_percent;
use super::pod::validate_pod_template;
use super::{get, get_i64, get_str, go_string_map, BadValue, Errs};

fn spec_of(obj: &Value) -> &Value {
    obj.get("spec").unwrap_or(&Value::Null)
}

fn selector_value(sel: Option<&Value>) -> BadValue {
    BadValue::Go(go_label_selector(sel))
}

/// An IntOrString as current upstream prints it in causes: the number, or the quoted
/// string (older releases printed the whole `intstr.IntOrString{...}` struct).
fn go_int_or_string(v: Option<&Value>) -> BadValue {
    match v {
        Some(Value::Number(n)) => BadValue::Int(n.as_i64().unwrap_or(0)),
        Some(Value::String(s)) => BadValue::Str(s.clone()),
        _ => BadValue::Int(0),
    }
}

/// `ValidatePositiveIntOrPercent`.
pub(crate) fn validate_int_or_percent(e: &mut Errs, v: Option<&Value>, field: &str) {
    match v {
        Some(Value::String(s)) => {
            for m in is_valid_percent(s) {
                e.invalid(field, go_int_or_string(v), &m);
            }
        }
        Some(Value::Number(n)) if n.as_i64().unwrap_or(0) < 0 => {
            e.invalid(
                field,
                n.as_i64().unwrap_or(0),
                "must be greater than or equal to 0",
            );
        }
        _ => {}
    }
}

/// `getIntOrPercentValue`: the number, whether plain or a percentage.
fn int_or_percent_value(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => s.trim_end_matches('%').parse().unwrap_or(0),
        _ => 0,
    }
}

pub(crate) fn not_more_than_100_percent(e: &mut Errs, v: Option<&Value>, field: &str) {
    if let Some(Value::String(s)) = v {
        if is_valid_percent(s).is_empty() && int_or_percent_value(v) > 100 {
            e.invalid(field, go_int_or_string(v), "must not be greater than 100%");
        }
    }
}

/// Selector presence/syntax/non-emptiness, then the template labels must match it
/// (`ValidatePodTemplateSpecForReplicaSet` and its siblings). `what` names the kind in
/// the empty-selector message as upstream does.
fn validate_selector_and_template(e: &mut Errs, spec: &Value, what: &str, check_empty_first: bool) {
    let sel = get(spec, &["selector"]);
    let labels = get(spec, &["template", "metadata", "labels"]);
    let mismatch = |e: &mut Errs| {
        // A nil selector selects nothing (upstream's labels.Nothing()), an empty one all.
        let matches = sel.is_some_and(|s| selector_matches(s, labels));
        if !matches {
            e.invalid(
                "spec.template.metadata.labels",
                BadValue::Go(go_string_map(labels)),
                "`selector` does not match template `labels`",
            );
        }
    };
    match sel {
        None => e.required("spec.selector", ""),
        Some(s) => {
            validate_label_selector(e, s, "spec.selector");
            if check_empty_first && selector_is_empty(s) {
                e.invalid(
                    "spec.selector",
                    selector_value(sel),
                    &format!("empty selector is invalid for {what}"),
                );
            }
        }
    }
    mismatch(e);
    if !check_empty_first {
        if let Some(s) = sel.filter(|s| selector_is_empty(s)) {
            e.invalid(
                "spec.selector",
                selector_value(Some(s)),
                &format!("empty selector is invalid for {what}"),
            );
        }
    }
}

/// Template spec plus the "pods of a controller restart Always" rule.
fn validate_always_template(e: &mut Errs, spec: &Value, kind: &str, ads_message: &str) {
    let tmpl = spec.get("template").unwrap_or(&Value::Null);
    validate_pod_template(e, tmpl, "spec.template");
    let rp = get_str(tmpl, &["spec", "restartPolicy"]).unwrap_or("");
    if rp != "Always" && !rp.is_empty() {
        e.not_supported("spec.template.spec.restartPolicy", rp, &["Always"]);
    }
    if let Some(ads) = get(tmpl, &["spec", "activeDeadlineSeconds"]) {
        if kind == "DaemonSet" {
            e.invalid("spec.template.spec.activeDeadlineSeconds", ads, ads_message);
        } else {
            e.forbidden("spec.template.spec.activeDeadlineSeconds", ads_message);
        }
    }
}

fn immutable_selector(e: &mut Errs, spec: &Value, old: Option<&Value>) {
    if let Some(old) = old {
        let (n, o) = (get(spec, &["selector"]), get(spec_of(old), &["selector"]));
        if !super::json_eq_null(n, o) {
            e.invalid("spec.selector", selector_value(n), "field is immutable");
        }
    }
}

pub(crate) fn validate_deployment(e: &mut Errs, obj: &Value, old: Option<&Value>) {
    let spec = spec_of(obj);
    e.non_negative("spec.replicas", get(spec, &["replicas"]));
    validate_selector_and_template(e, spec, "deployment", true);
    validate_always_template(
        e,
        spec,
        "Deployment",
        "activeDeadlineSeconds in ReplicaSet is not Supported",
    );
    let strategy = get(spec, &["strategy"]).unwrap_or(&Value::Null);
    let ru = get(strategy, &["rollingUpdate"]);
    match get_str(strategy, &["type"]).unwrap_or("") {
        "Recreate" => {
            if ru.is_some() {
                e.forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                );
            }
        }
        "RollingUpdate" => match ru {
            None => e.required("spec.strategy.rollingUpdate", "this should be defaulted and never be nil"),
            Some(ru) => {
                let (mu, ms) = (get(ru, &["maxUnavailable"]), get(ru, &["maxSurge"]));
                let p = "spec.strategy.rollingUpdate";
                validate_int_or_percent(e, mu, &format!("{p}.maxUnavailable"));
                validate_int_or_percent(e, ms, &format!("{p}.maxSurge"));
                if int_or_percent_value(mu) == 0 && int_or_percent_value(ms) == 0 {
                    e.invalid(
                        &format!("{p}.maxUnavailable"),
                        int_or_percent_value(mu),
                        "may not be 0 when `maxSurge` is 0",
                    );
                }
                not_more_than_100_percent(e, mu, &format!("{p}.maxUnavailable"));
            }
        },
        t => e.not_supported(
            "spec.strategy",
            BadValue::Go(format!(
                "apps.DeploymentStrategy{{Type:{}, RollingUpdate:(*apps.RollingUpdateDeployment)(nil)}}",
                super::go_quote(t)
            )),
            &["Recreate", "RollingUpdate"],
        ),
    }
    e.non_negative("spec.minReadySeconds", get(spec, &["minReadySeconds"]));
    e.non_negative(
        "spec.revisionHistoryLimit",
        get(spec, &["revisionHistoryLimit"]),
    );
    if let Some(pds) = get_i64(spec, &["progressDeadlineSeconds"]) {
        e.non_negative(
            "spec.progressDeadlineSeconds",
            get(spec, &["progressDeadlineSeconds"]),
        );
        if pds <= get_i64(spec, &["minReadySeconds"]).unwrap_or(0) {
            e.invalid(
                "spec.progressDeadlineSeconds",
                pds,
                "must be greater than minReadySeconds",
            );
        }
    }
    immutable_selector(e, spec, old);
}

pub(crate) fn validate_replica_set(e: &mut Errs, obj: &Value, old: Option<&Value>) {
    let spec = spec_of(obj);
    e.non_negative("spec.replicas", get(spec, &["replicas"]));
    e.non_negative("spec.minReadySeconds", get(spec, &["minReadySeconds"]));
    validate_selector_and_template(e, spec, "deployment", true);
    validate_always_template(
        e,
        spec,
        "ReplicaSet",
        "activeDeadlineSeconds in ReplicaSet is not Supported",
    );
    immutable_selector(e, spec, old);
}

pub(crate) fn validate_stateful_set(e: &mut Errs, obj: &Value, old: Option<&Value>) {
    let spec = spec_of(obj);
    match get_str(spec, &["podManagementPolicy"]).unwrap_or("") {
        "" => e.required("spec.podManagementPolicy", ""),
        "OrderedReady" | "Parallel" => {}
        p => e.invalid(
            "spec.podManagementPolicy",
            p,
            "must be 'OrderedReady' or 'Parallel'",
        ),
    }
    let us = get(spec, &["updateStrategy"]).unwrap_or(&Value::Null);
    match get_str(us, &["type"]).unwrap_or("") {
        "" => e.required("spec.updateStrategy", ""),
        "OnDelete" => {
            if let Some(ru) = get(us, &["rollingUpdate"]) {
                e.invalid(
                    "spec.updateStrategy.rollingUpdate",
                    ru,
                    "only allowed for updateStrategy 'RollingUpdate'",
                );
            }
        }
        "RollingUpdate" => {
            if let Some(ru) = get(us, &["rollingUpdate"]) {
                e.non_negative("spec.updateStrategy.rollingUpdate.partition", get(ru, &["partition"]));
                if let Some(mu) = get(ru, &["maxUnavailable"]) {
                    let f = "spec.updateStrategy.rollingUpdate.maxUnavailable";
                    validate_int_or_percent(e, Some(mu), f);
                    if int_or_percent_value(Some(mu)) == 0 {
                        e.invalid(f, go_int_or_string(Some(mu)), "cannot be 0");
                    }
                    not_more_than_100_percent(e, Some(mu), f);
                }
            }
        }
        t => e.invalid(
            "spec.updateStrategy",
            BadValue::Go(format!(
                "apps.StatefulSetUpdateStrategy{{Type:{}, RollingUpdate:(*apps.RollingUpdateStatefulSetStrategy)(nil)}}",
                super::go_quote(t)
            )),
            "must be 'RollingUpdate' or 'OnDelete'",
        ),
    }
    if let Some(pol) = get(spec, &["persistentVolumeClaimRetentionPolicy"]) {
        for f in ["whenDeleted", "whenScaled"] {
            match get_str(pol, &[f]).unwrap_or("") {
                "Retain" | "Delete" => {}
                v => e.not_supported(
                    &format!("spec.persistentVolumeClaimRetentionPolicy.{f}"),
                    v,
                    &["Retain", "Delete"],
                ),
            }
        }
    }
    e.non_negative("spec.replicas", get(spec, &["replicas"]));
    e.non_negative("spec.minReadySeconds", get(spec, &["minReadySeconds"]));
    e.non_negative("spec.ordinals.start", get(spec, &["ordinals", "start"]));
    validate_selector_and_template(e, spec, "statefulset", true);
    validate_always_template(
        e,
        spec,
        "StatefulSet",
        "activeDeadlineSeconds in StatefulSet is not Supported",
    );
    if let Some(old) = old {
        let mutable = [
            "replicas",
            "template",
            "updateStrategy",
            "minReadySeconds",
            "ordinals",
            "revisionHistoryLimit",
            "persistentVolumeClaimRetentionPolicy",
        ];
        let strip = |s: &Value| {
            let mut s = s.clone();
            if let Some(m) = s.as_object_mut() {
                for k in mutable {
                    m.remove(k);
                }
            }
            s
        };
        if !super::json_eq_null(Some(&strip(spec)), Some(&strip(spec_of(old)))) {
            e.forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            );
        }
    }
}

pub(crate) fn validate_daemon_set(e: &mut Errs, obj: &Value, old: Option<&Value>) {
    let spec = spec_of(obj);
    validate_selector_and_template(e, spec, "daemonset", false);
    validate_always_template(
        e,
        spec,
        "DaemonSet",
        "activeDeadlineSeconds must be nil for daemonset",
    );
    e.non_negative("spec.minReadySeconds", get(spec, &["minReadySeconds"]));
    let us = get(spec, &["updateStrategy"]).unwrap_or(&Value::Null);
    match get_str(us, &["type"]).unwrap_or("") {
        "OnDelete" => {}
        "RollingUpdate" => match get(us, &["rollingUpdate"]) {
            None => e.required("spec.updateStrategy.rollingUpdate", ""),
            Some(ru) => {
                let p = "spec.updateStrategy.rollingUpdate";
                let (mu, ms) = (get(ru, &["maxUnavailable"]), get(ru, &["maxSurge"]));
                validate_int_or_percent(e, mu, &format!("{p}.maxUnavailable"));
                validate_int_or_percent(e, ms, &format!("{p}.maxSurge"));
                not_more_than_100_percent(e, mu, &format!("{p}.maxUnavailable"));
                not_more_than_100_percent(e, ms, &format!("{p}.maxSurge"));
                let has_unavailable = int_or_percent_value(mu) != 0;
                let has_surge = int_or_percent_value(ms) != 0;
                if has_unavailable && has_surge {
                    e.invalid(
                        &format!("{p}.maxSurge"),
                        go_int_or_string(ms),
                        "may not be set when maxUnavailable is non-zero",
                    );
                } else if !has_unavailable && !has_surge {
                    e.required(&format!("{p}.maxUnavailable"), "cannot be 0 when maxSurge is 0");
                }
            }
        },
        t => e.not_supported(
            "spec.updateStrategy",
            BadValue::Go(format!(
                "apps.DaemonSetUpdateStrategy{{Type:{}, RollingUpdate:(*apps.RollingUpdateDaemonSet)(nil)}}",
                super::go_quote(t)
            )),
            &["RollingUpdate", "OnDelete"],
        ),
    }
    e.non_negative(
        "spec.revisionHistoryLimit",
        get(spec, &["revisionHistoryLimit"]),
    );
    immutable_selector(e, spec, old);
}

pub(crate) fn validate_controller_revision(e: &mut Errs, obj: &Value, old: Option<&Value>) {
    if get(obj, &["data"]).is_none() {
        e.required("data", "data is mandatory");
    }
    e.non_negative("revision", get(obj, &["revision"]));
    if let Some(old) = old {
        e.immutable("data", get(obj, &["data"]), get(old, &["data"]));
    }
}

/// `validateJobSpec` (without the selector, which job templates must not have).
fn validate_job_spec_common(e: &mut Errs, spec: &Value, p: &str) {
    for f in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
        "backoffLimitPerIndex",
        "maxFailedIndexes",
    ] {
        e.non_negative(&format!("{p}.{f}"), get(spec, &[f]));
    }
    let mode = get_str(spec, &["completionMode"]);
    if let Some(m) = mode {
        match m {
            "NonIndexed" => {}
            "Indexed" => {
                if get(spec, &["completions"]).is_none() {
                    e.required(
                        &format!("{p}.completions"),
                        "when completion mode is Indexed",
                    );
                }
            }
            other => e.not_supported(
                &format!("{p}.completionMode"),
                other,
                &["NonIndexed", "Indexed"],
            ),
        }
    }
    if get(spec, &["backoffLimitPerIndex"]).is_some() && mode != Some("Indexed") {
        e.forbidden(
            &format!("{p}.backoffLimitPerIndex"),
            "requires indexed completion mode",
        );
    }
    if let Some(prp) = get_str(spec, &["podReplacementPolicy"]) {
        if prp != "TerminatingOrFailed" && prp != "Failed" {
            e.not_supported(
                &format!("{p}.podReplacementPolicy"),
                prp,
                &["TerminatingOrFailed", "Failed"],
            );
        } else if get(spec, &["podFailurePolicy"]).is_some() && prp != "Failed" {
            e.not_supported(&format!("{p}.podReplacementPolicy"), prp, &["Failed"]);
        }
    }
    let tmpl = spec.get("template").unwrap_or(&Value::Null);
    validate_pod_template(e, tmpl, &format!("{p}.template"));
    let rp_field = format!("{p}.template.spec.restartPolicy");
    match get_str(tmpl, &["spec", "restartPolicy"]).unwrap_or("") {
        "" | "Always" => e.required(&rp_field, "valid values: \"OnFailure\", \"Never\""),
        "OnFailure" if get(spec, &["podFailurePolicy"]).is_some() => e.invalid(
            &rp_field,
            "OnFailure",
            "only \"Never\" is supported when podFailurePolicy is specified",
        ),
        "OnFailure" | "Never" => {}
        other => e.not_supported(&rp_field, other, &["OnFailure", "Never"]),
    }
}

pub(crate) fn validate_job(e: &mut Errs, obj: &Value, old: Option<&Value>) {
    let spec = spec_of(obj);
    validate_job_spec_common(e, spec, "spec");
    let sel = get(spec, &["selector"]);
    match sel {
        None => e.required("spec.selector", ""),
        Some(s) => validate_label_selector(e, s, "spec.selector"),
    }
    let labels = get(spec, &["template", "metadata", "labels"]);
    if !sel.is_some_and(|s| selector_matches(s, labels)) {
        e.invalid(
            "spec.template.metadata.labels",
            BadValue::Go(go_string_map(labels)),
            "`selector` does not match template `labels`",
        );
    }
    if old.is_none() {
        validate_generated_selector(e, obj);
    }
    if let Some(old) = old {
        let os = spec_of(old);
        let elastic = get_str(spec, &["completionMode"]) == Some("Indexed")
            && get(spec, &["completions"]) == get(spec, &["parallelism"]);
        if !elastic {
            e.immutable(
                "spec.completions",
                get(spec, &["completions"]),
                get(os, &["completions"]),
            );
        }
        if !super::json_eq_null(get(spec, &["selector"]), get(os, &["selector"])) {
            e.invalid(
                "spec.selector",
                selector_value(get(spec, &["selector"])),
                "field is immutable",
            );
        }
        let (nt, ot) = (get(spec, &["template"]), get(os, &["template"]));
        if !super::json_eq_null(nt, ot) {
            let v = BadValue::Go(nt.map(Value::to_string).unwrap_or_default());
            e.invalid("spec.template", v, "field is immutable");
        }
        for f in [
            "completionMode",
            "podFailurePolicy",
            "backoffLimitPerIndex",
            "managedBy",
            "successPolicy",
        ] {
            e.immutable(&format!("spec.{f}"), get(spec, &[f]), get(os, &[f]));
        }
    }
}

/// `ValidateGeneratedSelector`: with an auto-generated selector, the template must carry
/// the job's name and uid labels and the selector must select them.
fn validate_generated_selector(e: &mut Errs, job: &Value) {
    let spec = spec_of(job);
    if get(spec, &["manualSelector"]).and_then(Value::as_bool) == Some(true) {
        return;
    }
    let Some(labels) = get(spec, &["template", "metadata", "labels"]) else {
        return;
    };
    let Some(sel) = get(spec, &["selector"]) else {
        return;
    };
    let uid = get_str(job, &["metadata", "uid"]).unwrap_or("");
    if uid.is_empty() {
        // The apiserver validates before assigning a uid in some paths; nothing to check.
        return;
    }
    let name = get_str(job, &["metadata", "name"]).unwrap_or("");
    for (key, want) in [
        ("controller-uid", uid),
        ("job-name", name),
        ("batch.kubernetes.io/controller-uid", uid),
        ("batch.kubernetes.io/job-name", name),
    ] {
        let field = format!("spec.template.metadata.labels[{key}]");
        match labels.get(key).and_then(Value::as_str) {
            None => e.required(&field, want),
            Some(v) if v != want => e.invalid(
                &field,
                BadValue::Go(go_string_map(Some(labels))),
                &format!("must be '{want}'"),
            ),
            Some(_) => {}
        }
    }
    let expected = serde_json::json!({"batch.kubernetes.io/controller-uid": uid});
    if !selector_matches(sel, Some(&expected)) {
        e.invalid(
            "spec.selector",
            selector_value(Some(sel)),
            "`selector` not auto-generated",
        );
    }
}

pub(crate) fn validate_cron_job(e: &mut Errs, obj: &Value, old: Option<&Value>) {
    let spec = spec_of(obj);
    let old_spec = old.map(spec_of);
    let name = get_str(obj, &["metadata", "name"]).unwrap_or("");
    if old.is_none() && name.len() > 52 {
        e.invalid("metadata.name", name, "must be no more than 52 characters");
    }
    match get_str(spec, &["schedule"]).unwrap_or("") {
        "" => e.required("spec.schedule", ""),
        schedule => {
            if let Err(m) = parse_cron(schedule) {
                e.invalid("spec.schedule", schedule, &m);
            }
            let allow_tz = old_spec
                .and_then(|o| get_str(o, &["schedule"]))
                .is_some_and(|s| s.contains("TZ"));
            if allow_tz && schedule.contains("TZ") && get(spec, &["timeZone"]).is_some() {
                e.invalid(
                    "spec.schedule",
                    schedule,
                    "cannot use both timeZone field and TZ or CRON_TZ in schedule",
                );
            } else if !allow_tz && schedule.contains("TZ") {
                e.invalid(
                    "spec.schedule",
                    schedule,
                    "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
                );
            }
        }
    }
    e.non_negative(
        "spec.startingDeadlineSeconds",
        get(spec, &["startingDeadlineSeconds"]),
    );
    let tz = get_str(spec, &["timeZone"]);
    if old_spec.is_none_or(|o| get_str(o, &["timeZone"]) != tz) {
        if let Some(tz) = tz {
            validate_time_zone(e, tz);
        }
    }
    match get_str(spec, &["concurrencyPolicy"]).unwrap_or("") {
        "Allow" | "Forbid" | "Replace" => {}
        "" => e.required("spec.concurrencyPolicy", ""),
        p => e.not_supported("spec.concurrencyPolicy", p, &["Allow", "Forbid", "Replace"]),
    }
    let jt = get(spec, &["jobTemplate", "spec"]).unwrap_or(&Value::Null);
    let p = "spec.jobTemplate.spec";
    validate_job_spec_common(e, jt, p);
    if let Some(sel) = get(jt, &["selector"]) {
        e.invalid(
            &format!("{p}.selector"),
            selector_value(Some(sel)),
            "`selector` will be auto-generated",
        );
    }
    if get(jt, &["manualSelector"]).and_then(Value::as_bool) == Some(true) {
        e.not_supported(&format!("{p}.manualSelector"), true, &["nil", "false"]);
    }
    e.non_negative(
        "spec.successfulJobsHistoryLimit",
        get(spec, &["successfulJobsHistoryLimit"]),
    );
    e.non_negative(
        "spec.failedJobsHistoryLimit",
        get(spec, &["failedJobsHistoryLimit"]),
    );
}

fn validate_time_zone(e: &mut Errs, tz: &str) {
    let f = "spec.timeZone";
    if tz.is_empty() {
        e.invalid(f, tz, "timeZone must be nil or non-empty string");
        return;
    }
    let ok_part = |p: &str| {
        p != "."
            && p != ".."
            && !p.starts_with('-')
            && (1..=14).contains(&p.len())
            && p.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_' | b'+'))
    };
    if !tz.split('/').all(ok_part) {
        e.invalid(f, tz, &format!("unknown time zone {tz}"));
        return;
    }
    if tz.eq_ignore_ascii_case("Local") {
        e.invalid(
            f,
            tz,
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
        );
    }
}

/// `cron.ParseStandard` (robfig/cron v3) as a validator: Ok, or upstream's error text.
/// The grammar lives in [`crate::cron`], shared with the CronJob controller.
pub(crate) fn parse_cron(spec: &str) -> Result<(), String> {
    crate::cron::Schedule::parse(spec).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{info, lines};
    use super::super::{validate_create, validate_update};
    use super::parse_cron;
    use crate::defaults::{apply_create_defaults, apply_defaults};
    use serde_json::{json, Value};

    fn obj(group: &str, kind: &str, spec: Value) -> Value {
        let mut o =
            json!({"metadata": {"name": "web", "namespace": "default", "uid": "u1"}, "spec": spec});
        apply_defaults(info(group, kind), &mut o);
        apply_create_defaults(info(group, kind), &mut o);
        o
    }

    fn template(labels: Value) -> Value {
        json!({"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
    }

    #[test]
    fn deployments() {
        let d = info("apps", "Deployment");
        let ok = obj(
            "apps",
            "Deployment",
            json!({"selector": {"matchLabels": {"app": "web"}},
            "template": template(json!({"app": "web"}))}),
        );
        assert_eq!(lines(&validate_create(d, &ok)), Vec::<String>::new());
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (
                json!({"selector": {"matchLabels": {"app": "web"}}, "template": template(json!({"app": "x"}))}),
                vec!["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"x\"}: `selector` does not match template `labels`"],
            ),
            (
                json!({"template": template(json!({"app": "x"}))}),
                vec![
                    "spec.selector: Required value",
                    "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"x\"}: `selector` does not match template `labels`",
                ],
            ),
            (
                json!({"replicas": -1, "selector": {}, "template": template(json!({"app": "x"}))}),
                vec![
                    "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                    "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment",
                ],
            ),
            (
                json!({"selector": {"matchLabels": {"app": "x"}}, "template": template(json!({"app": "x"})),
                    "strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}}),
                vec!["spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"],
            ),
            (
                json!({"selector": {"matchLabels": {"app": "x"}}, "template": template(json!({"app": "x"})),
                    "strategy": {"rollingUpdate": {"maxSurge": "abc", "maxUnavailable": "200%"}}}),
                vec![
                    "spec.strategy.rollingUpdate.maxSurge: Invalid value: \"abc\": a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                    "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"200%\": must not be greater than 100%",
                ],
            ),
        ];
        for (spec, want) in cases {
            let o = obj("apps", "Deployment", spec.clone());
            assert_eq!(lines(&validate_create(d, &o)), want, "{spec}");
        }
        let mut tpl = template(json!({"app": "x"}));
        tpl["spec"]["restartPolicy"] = json!("Never");
        let o = obj(
            "apps",
            "Deployment",
            json!({"selector": {"matchLabels": {"app": "x"}}, "template": tpl}),
        );
        assert_eq!(
            lines(&validate_create(d, &o)),
            vec!["spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""]
        );
        let mut new = ok.clone();
        new["spec"]["selector"]["matchLabels"]["tier"] = json!("f");
        new["spec"]["template"]["metadata"]["labels"]["tier"] = json!("f");
        assert_eq!(
            lines(&validate_update(d, &new, &ok)),
            vec!["spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \"tier\":\"f\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"]
        );
    }

    #[test]
    fn daemonsets_and_statefulsets() {
        let o = obj(
            "apps",
            "DaemonSet",
            json!({"selector": {"matchLabels": {"a": "b"}},
            "template": template(json!({"a": "b"})),
            "updateStrategy": {"rollingUpdate": {"maxUnavailable": 0}}}),
        );
        assert_eq!(
            lines(&validate_create(info("apps", "DaemonSet"), &o)),
            vec!["spec.updateStrategy.rollingUpdate.maxUnavailable: Required value: cannot be 0 when maxSurge is 0"]
        );
        let sts = info("apps", "StatefulSet");
        let old = obj(
            "apps",
            "StatefulSet",
            json!({"selector": {"matchLabels": {"a": "b"}},
            "serviceName": "s", "template": template(json!({"a": "b"}))}),
        );
        assert_eq!(lines(&validate_create(sts, &old)), Vec::<String>::new());
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(3);
        assert_eq!(
            lines(&validate_update(sts, &new, &old)),
            Vec::<String>::new()
        );
        new["spec"]["serviceName"] = json!("other");
        assert_eq!(
            lines(&validate_update(sts, &new, &old)),
            vec!["spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"]
        );
    }

    #[test]
    fn jobs() {
        let j = info("batch", "Job");
        let mut tpl = template(json!({}));
        tpl["spec"]["restartPolicy"] = json!("Never");
        let ok = obj("batch", "Job", json!({"template": tpl.clone()}));
        assert_eq!(lines(&validate_create(j, &ok)), Vec::<String>::new());
        let bad = obj(
            "batch",
            "Job",
            json!({"backoffLimit": -1, "template": template(json!({}))}),
        );
        assert_eq!(
            lines(&validate_create(j, &bad)),
            vec![
                "spec.backoffLimit: Invalid value: -1: must be greater than or equal to 0",
                "spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\"",
            ]
        );
        let mut new = ok.clone();
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("other");
        let got = lines(&validate_update(j, &new, &ok));
        assert_eq!(got.len(), 1);
        assert!(
            got[0].starts_with("spec.template: Invalid value: ")
                && got[0].ends_with(": field is immutable")
        );
    }

    #[test]
    fn cron_jobs() {
        let c = info("batch", "CronJob");
        let mut tpl = template(json!({}));
        tpl["spec"]["restartPolicy"] = json!("OnFailure");
        let ok = obj(
            "batch",
            "CronJob",
            json!({"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": tpl.clone()}}}),
        );
        assert_eq!(lines(&validate_create(c, &ok)), Vec::<String>::new());
        let bad = obj(
            "batch",
            "CronJob",
            json!({"schedule": "* * *", "concurrencyPolicy": "Sometimes",
            "jobTemplate": {"spec": {"template": tpl}}}),
        );
        assert_eq!(
            lines(&validate_create(c, &bad)),
            vec![
                "spec.schedule: Invalid value: \"* * *\": expected exactly 5 fields, found 3: [* * *]",
                "spec.concurrencyPolicy: Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\"",
            ]
        );
    }

    #[test]
    fn cron_grammar() {
        for ok in [
            "0 0 * * *",
            "*/15 9-17 * * mon-fri",
            "0 0 1,15 JAN-jun ?",
            "@hourly",
            "@every 1h30m",
            "5 4 * * sun",
            "TZ=UTC 0 0 * * *",
        ] {
            assert_eq!(parse_cron(ok), Ok(()), "{ok}");
        }
        let cases = [
            ("60 * * * *", "end of range (60) above maximum (59): 60"),
            ("* * 0 * *", "beginning of range (0) below minimum (1): 0"),
            ("* * * * 7", "end of range (7) above maximum (6): 7"),
            (
                "5-1 * * * *",
                "beginning of range (5) beyond end of range (1): 5-1",
            ),
            (
                "*/0 * * * *",
                "step of range should be a positive number: */0",
            ),
            (
                "x * * * *",
                "failed to parse int from x: strconv.Atoi: parsing \"x\": invalid syntax",
            ),
            ("@sometimes", "unrecognized descriptor: @sometimes"),
            ("1-2-3 * * * *", "too many hyphens: 1-2-3"),
        ];
        for (spec, want) in cases {
            assert_eq!(parse_cron(spec), Err(want.to_string()), "{spec}");
        }
    }
}
