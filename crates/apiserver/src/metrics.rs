//! The API server's Prometheus metrics, served at `/metrics`: requests by verb, resource
//! and code, request latency, and open watches, named as kube-apiserver names them so
//! existing dashboards read them.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
    pub watches: Gauge<i64, AtomicI64>,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~50 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<Labels, Counter>::default();
        let latency =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let watches = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "apiserver_request",
            "Requests by verb, resource and HTTP code",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Request latency by verb and resource",
            latency.clone(),
        );
        registry.register(
            "apiserver_longrunning_requests",
            "Open watch streams",
            watches.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            watches,
        }
    }
}

impl Metrics {
    pub fn observe(&self, verb: &str, resource: &str, code: u16, seconds: f64) {
        let labels: Labels = vec![
            ("verb", verb.to_string()),
            ("resource", resource.to_string()),
            ("code", code.to_string()),
        ];
        self.requests.get_or_create(&labels).inc();
        let labels: Labels = vec![
            ("verb", verb.to_string()),
            ("resource", resource.to_string()),
        ];
        self.latency.get_or_create(&labels).observe(seconds);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_labels() {
        let m = Metrics::default();
        m.observe("GET", "pods", 200, 0.001);
        m.observe("GET", "pods", 200, 0.002);
        let text = m.render();
        assert!(
            text.contains("apiserver_request_total{verb=\"GET\",resource=\"pods\",code=\"200\"} 2"),
            "{text}"
        );
    }
}
