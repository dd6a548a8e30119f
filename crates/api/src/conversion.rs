//! Conversion between served versions that share one storage: events.k8s.io/v1 Events are
//! stored as core/v1 Events (so `kubectl describe` sees what controllers record through
//! either API), and autoscaling/v1 HorizontalPodAutoscalers as autoscaling/v2. The
//! registry's `storage_version` says which form is stored; these functions map between
//! a served form and the stored one.

use serde_json::{json, Map, Value};

use crate::registry::ResourceInfo;

/// The (group, version) an object of `info` is stored as.
pub fn storage_version(info: &ResourceInfo) -> (&'static str, &'static str) {
    match (info.group, info.version, info.kind) {
        ("events.k8s.io", "v1", "Event") => ("", "v1"),
        ("autoscaling", "v1", "HorizontalPodAutoscaler") => ("autoscaling", "v2"),
        _ => (info.group, info.version),
    }
}

/// Convert an object served as `info` into its stored form.
pub fn to_storage(info: &ResourceInfo, obj: Value) -> Value {
    match (info.group, info.version, info.kind) {
        ("events.k8s.io", "v1", "Event") => event_v1_to_core(obj),
        ("autoscaling", "v1", "HorizontalPodAutoscaler") => hpa_v1_to_v2(obj),
        _ => obj,
    }
}

/// Convert a stored object into the form served as `info`.
pub fn from_storage(info: &ResourceInfo, obj: Value) -> Value {
    match (info.group, info.version, info.kind) {
        ("events.k8s.io", "v1", "Event") => event_core_to_v1(obj),
        ("autoscaling", "v1", "HorizontalPodAutoscaler") => hpa_v2_to_v1(obj),
        _ => obj,
    }
}

fn take(m: &mut Map<String, Value>, key: &str) -> Option<Value> {
    m.remove(key).filter(|v| !v.is_null())
}

fn put(m: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(key.to_string(), v);
    }
}

fn event_v1_to_core(obj: Value) -> Value {
    let Value::Object(mut m) = obj else {
        return obj;
    };
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!("v1"));
    out.insert("kind".into(), json!("Event"));
    put(&mut out, "metadata", take(&mut m, "metadata"));
    put(&mut out, "involvedObject", take(&mut m, "regarding"));
    put(&mut out, "related", take(&mut m, "related"));
    put(&mut out, "message", take(&mut m, "note"));
    put(&mut out, "reason", take(&mut m, "reason"));
    put(&mut out, "type", take(&mut m, "type"));
    put(&mut out, "action", take(&mut m, "action"));
    put(&mut out, "eventTime", take(&mut m, "eventTime"));
    put(&mut out, "series", take(&mut m, "series"));
    put(
        &mut out,
        "reportingComponent",
        take(&mut m, "reportingController"),
    );
    put(
        &mut out,
        "reportingInstance",
        take(&mut m, "reportingInstance"),
    );
    put(&mut out, "source", take(&mut m, "deprecatedSource"));
    put(
        &mut out,
        "firstTimestamp",
        take(&mut m, "deprecatedFirstTimestamp"),
    );
    put(
        &mut out,
        "lastTimestamp",
        take(&mut m, "deprecatedLastTimestamp"),
    );
    put(&mut out, "count", take(&mut m, "deprecatedCount"));
    Value::Object(out)
}

fn event_core_to_v1(obj: Value) -> Value {
    let Value::Object(mut m) = obj else {
        return obj;
    };
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!("events.k8s.io/v1"));
    out.insert("kind".into(), json!("Event"));
    put(&mut out, "metadata", take(&mut m, "metadata"));
    put(&mut out, "regarding", take(&mut m, "involvedObject"));
    put(&mut out, "related", take(&mut m, "related"));
    put(&mut out, "note", take(&mut m, "message"));
    put(&mut out, "reason", take(&mut m, "reason"));
    put(&mut out, "type", take(&mut m, "type"));
    put(&mut out, "action", take(&mut m, "action"));
    put(&mut out, "eventTime", take(&mut m, "eventTime"));
    put(&mut out, "series", take(&mut m, "series"));
    let source = take(&mut m, "source");
    let reporting_controller = take(&mut m, "reportingComponent")
        .or_else(|| source.as_ref().and_then(|s| s.get("component").cloned()));
    let reporting_instance = take(&mut m, "reportingInstance")
        .or_else(|| source.as_ref().and_then(|s| s.get("host").cloned()));
    put(&mut out, "reportingController", reporting_controller);
    put(&mut out, "reportingInstance", reporting_instance);
    put(&mut out, "deprecatedSource", source);
    put(
        &mut out,
        "deprecatedFirstTimestamp",
        take(&mut m, "firstTimestamp"),
    );
    put(
        &mut out,
        "deprecatedLastTimestamp",
        take(&mut m, "lastTimestamp"),
    );
    put(&mut out, "deprecatedCount", take(&mut m, "count"));
    Value::Object(out)
}

fn hpa_v1_to_v2(mut obj: Value) -> Value {
    obj["apiVersion"] = json!("autoscaling/v2");
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        if let Some(target) = spec
            .remove("targetCPUUtilizationPercentage")
            .filter(|v| !v.is_null())
        {
            spec.insert(
                "metrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}}]),
            );
        }
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        if let Some(current) = status
            .remove("currentCPUUtilizationPercentage")
            .filter(|v| !v.is_null())
        {
            status.insert(
                "currentMetrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": current}}}]),
            );
        }
        status.entry("conditions").or_insert_with(|| json!([]));
    }
    obj
}

fn hpa_v2_to_v1(mut obj: Value) -> Value {
    obj["apiVersion"] = json!("autoscaling/v1");
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        let metrics = spec.remove("metrics");
        spec.remove("behavior");
        let cpu = metrics.as_ref().and_then(Value::as_array).and_then(|ms| {
            ms.iter()
                .find(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu")
                .cloned()
        });
        if let Some(pct) = cpu
            .as_ref()
            .and_then(|m| m["resource"]["target"]["averageUtilization"].as_i64())
        {
            spec.insert("targetCPUUtilizationPercentage".into(), json!(pct));
        }
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        let metrics = status.remove("currentMetrics");
        status.remove("conditions");
        let cpu = metrics.as_ref().and_then(Value::as_array).and_then(|ms| {
            ms.iter()
                .find(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu")
                .cloned()
        });
        if let Some(pct) = cpu
            .as_ref()
            .and_then(|m| m["resource"]["current"]["averageUtilization"].as_i64())
        {
            status.insert("currentCPUUtilizationPercentage".into(), json!(pct));
        }
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::lookup;

    #[test]
    fn events_round_trip_through_core() {
        let info = lookup("events.k8s.io", "v1", "events").unwrap();
        let ev = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e1", "namespace": "d"},
            "regarding": {"kind": "Pod", "name": "web"},
            "note": "pulled", "reason": "Pulled", "type": "Normal",
            "reportingController": "skiff/kubelet", "reportingInstance": "n1",
            "eventTime": "2026-01-01T00:00:00.000000Z", "action": "Pull",
        });
        let stored = to_storage(info, ev.clone());
        assert_eq!(stored["involvedObject"]["name"], "web");
        assert_eq!(stored["message"], "pulled");
        assert_eq!(stored["apiVersion"], "v1");
        assert_eq!(from_storage(info, stored), ev);
    }

    #[test]
    fn hpa_cpu_target_survives_v1() {
        let info = lookup("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
            "spec": {"maxReplicas": 5, "scaleTargetRef": {"kind": "Deployment", "name": "web"}, "targetCPUUtilizationPercentage": 70}});
        let stored = to_storage(info, v1.clone());
        assert_eq!(
            stored["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            70
        );
        assert_eq!(
            from_storage(info, stored)["spec"]["targetCPUUtilizationPercentage"],
            70
        );
    }
}
