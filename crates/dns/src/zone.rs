//! The cluster zone in memory: every Service's records indexed by owner name, updated one
//! Service at a time (a change costs that Service's records, not a rebuild of the zone),
//! and the lookup that decides what a query gets: records, an alias to chase, NODATA,
//! NXDOMAIN, or "not ours" (forwarded upstream).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use hickory_server::proto::rr::rdata::{A, AAAA, NS, SOA, TXT};
use hickory_server::proto::rr::{Name, RData, RecordType};

use crate::records::{fqdn, ZoneRecord};

/// A Service by namespace and name.
pub type ServiceKey = (String, String);

/// The schema version of upstream's DNS specification this zone implements
/// (`dns-version.<zone>` TXT).
const SCHEMA_VERSION: &str = "1.1.0";

/// What a query finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Records of the asked type, owned by the asked name.
    Answer(Vec<RData>),
    /// The name is an alias (an ExternalName Service) and the query asks another type:
    /// answer the CNAME, then the target's records.
    Alias(Name),
    /// The name exists (perhaps only as a parent of others) without records of that type.
    NoData,
    /// No such name in the cluster domain.
    NxDomain,
    /// Not in the cluster domain, or a reverse name of an address no Service uses: the
    /// upstream resolvers answer it (CoreDNS's `fallthrough in-addr.arpa ip6.arpa`).
    NotOurs,
}

pub struct Zone {
    /// `cluster.local.`: lower case with the final dot.
    apex: String,
    /// The kube-dns Service IPs, answered for `ns.dns.<zone>` (the zone's NS).
    cluster_dns: Vec<IpAddr>,
    names: HashMap<String, Vec<(ServiceKey, RData)>>,
    /// How many records live below each name inside the zone: a name with records below
    /// it exists (an empty non-terminal such as `<ns>.svc.<zone>`) and answers NODATA.
    below: HashMap<String, usize>,
    by_service: HashMap<ServiceKey, Vec<ZoneRecord>>,
    /// The SOA serial: when the zone last changed (Unix seconds), as CoreDNS reports it.
    serial: u32,
}

impl Zone {
    /// An empty zone for `domain` (e.g. `cluster.local`).
    pub fn new(domain: &str, cluster_dns: Vec<IpAddr>) -> Zone {
        Zone {
            apex: format!("{}.", domain.trim_end_matches('.').to_ascii_lowercase()),
            cluster_dns,
            names: HashMap::new(),
            below: HashMap::new(),
            by_service: HashMap::new(),
            serial: now_serial(),
        }
    }

    /// The zone's domain, lower case, without the final dot.
    pub fn domain(&self) -> &str {
        self.apex.trim_end_matches('.')
    }

    pub fn services(&self) -> usize {
        self.by_service.len()
    }

    /// Replace the records of one Service; true when something changed.
    pub fn set_service(&mut self, key: ServiceKey, records: Vec<ZoneRecord>) -> bool {
        if self.by_service.get(&key) == Some(&records) {
            return false;
        }
        if records.is_empty() {
            return self.remove_service(&key);
        }
        self.unlink(&key);
        for record in &records {
            self.link(&key, record);
        }
        self.by_service.insert(key, records);
        self.serial = now_serial();
        true
    }

    /// Forget a Service's records; true when it had any.
    pub fn remove_service(&mut self, key: &ServiceKey) -> bool {
        if !self.unlink(key) {
            return false;
        }
        self.serial = now_serial();
        true
    }

    /// Keep only the Services in `keep` (after a relist).
    pub fn retain_services(&mut self, keep: impl Fn(&ServiceKey) -> bool) {
        let gone: Vec<ServiceKey> = self
            .by_service
            .keys()
            .filter(|k| !keep(k))
            .cloned()
            .collect();
        for key in gone {
            self.remove_service(&key);
        }
    }

    fn link(&mut self, key: &ServiceKey, record: &ZoneRecord) {
        self.names
            .entry(record.name.clone())
            .or_default()
            .push((key.clone(), record.data.clone()));
        for parent in parents_within(&record.name, &self.apex) {
            *self.below.entry(parent.to_string()).or_default() += 1;
        }
    }

    fn unlink(&mut self, key: &ServiceKey) -> bool {
        let Some(old) = self.by_service.remove(key) else {
            return false;
        };
        for record in &old {
            if let Some(entries) = self.names.get_mut(&record.name) {
                if let Some(i) = entries
                    .iter()
                    .position(|(k, d)| k == key && *d == record.data)
                {
                    entries.swap_remove(i);
                }
                if entries.is_empty() {
                    self.names.remove(&record.name);
                }
            }
            for parent in parents_within(&record.name, &self.apex) {
                if let Some(count) = self.below.get_mut(parent) {
                    *count -= 1;
                    if *count == 0 {
                        self.below.remove(parent);
                    }
                }
            }
        }
        true
    }

    /// The SOA of the zone, as CoreDNS writes it (`ns.dns.<zone>`, `hostmaster.<zone>`,
    /// refresh 7200, retry 1800, expire 86400, minimum = the records' TTL).
    pub fn soa(&self, ttl: u32) -> (Name, RData) {
        let apex = fqdn(&self.apex).unwrap_or_else(Name::root);
        let mname = fqdn(&format!("ns.dns.{}", self.apex)).unwrap_or_else(Name::root);
        let rname = fqdn(&format!("hostmaster.{}", self.apex)).unwrap_or_else(Name::root);
        let soa = SOA::new(mname, rname, self.serial, 7200, 1800, 86400, ttl);
        (apex, RData::SOA(soa))
    }

    /// The A/AAAA records at `name` (lower case, final dot), for the additional section of
    /// SRV answers.
    pub fn addresses(&self, name: &str) -> Vec<RData> {
        if name == format!("ns.dns.{}", self.apex) {
            return self.cluster_dns.iter().map(|ip| address(*ip)).collect();
        }
        self.names
            .get(name)
            .into_iter()
            .flatten()
            .filter(|(_, d)| matches!(d, RData::A(_) | RData::AAAA(_)))
            .map(|(_, d)| d.clone())
            .collect()
    }

    /// Look `name` (lower case, final dot) up for `qtype`.
    pub fn lookup(&self, name: &str, qtype: RecordType) -> Found {
        if is_reverse(name) {
            return match self.names.get(name) {
                Some(entries) => answer_or_nodata(entries.iter().map(|(_, d)| d), qtype),
                None => Found::NotOurs,
            };
        }
        let Some(relative) = self.relative(name) else {
            return Found::NotOurs;
        };
        let labels: Vec<&str> = if relative.is_empty() {
            Vec::new()
        } else {
            relative.split('.').collect()
        };
        match labels.as_slice() {
            [] => {
                let ns = fqdn(&format!("ns.dns.{}", self.apex)).unwrap_or_else(Name::root);
                let records = [self.soa(crate::TTL).1, RData::NS(NS(ns))];
                answer_or_nodata(records.iter(), qtype)
            }
            ["dns-version"] => answer_or_nodata(
                [RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()]))].iter(),
                qtype,
            ),
            ["ns", "dns"] => {
                let records: Vec<RData> = self.cluster_dns.iter().map(|ip| address(*ip)).collect();
                answer_or_nodata(records.iter(), qtype)
            }
            ["dns"] | ["svc"] | ["pod"] | [_, "pod"] => Found::NoData,
            [pod, _namespace, "pod"] => match pod_address(pod) {
                Some(ip) => answer_or_nodata([address(ip)].iter(), qtype),
                None => Found::NxDomain,
            },
            _ => match self.names.get(name) {
                Some(entries) => {
                    let alias = entries.iter().find_map(|(_, d)| match d {
                        RData::CNAME(target) => Some(target.0.clone()),
                        _ => None,
                    });
                    match alias {
                        Some(target) if qtype != RecordType::CNAME => Found::Alias(target),
                        _ => answer_or_nodata(entries.iter().map(|(_, d)| d), qtype),
                    }
                }
                None if self.below.contains_key(name) => Found::NoData,
                None => Found::NxDomain,
            },
        }
    }

    /// `name` relative to the apex (`web.default.svc` for `web.default.svc.cluster.local.`;
    /// empty for the apex), or None outside the zone.
    fn relative<'a>(&self, name: &'a str) -> Option<&'a str> {
        if name == self.apex {
            return Some("");
        }
        name.strip_suffix(self.apex.as_str())?.strip_suffix('.')
    }
}

/// The records of `entries` of type `qtype` (all of them for ANY), or NODATA.
fn answer_or_nodata<'a>(entries: impl Iterator<Item = &'a RData>, qtype: RecordType) -> Found {
    let records: Vec<RData> = entries
        .filter(|d| qtype == RecordType::ANY || d.record_type() == qtype)
        .cloned()
        .collect();
    if records.is_empty() {
        Found::NoData
    } else {
        Found::Answer(records)
    }
}

/// The names strictly between `name` and the apex, and the apex's own children: for
/// `_http._tcp.web.ns.svc.cluster.local.` these are `_tcp.web.ns.svc...`, `web.ns.svc...`,
/// `ns.svc...` and `svc.cluster.local.`. Names outside the zone (reverse names) have none.
fn parents_within<'a>(name: &'a str, apex: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    if !name.ends_with(apex) {
        return out;
    }
    let mut rest = name;
    while let Some((_, parent)) = rest.split_once('.') {
        if parent.len() <= apex.len() {
            break;
        }
        out.push(parent);
        rest = parent;
    }
    out
}

fn is_reverse(name: &str) -> bool {
    name.ends_with(".in-addr.arpa.") || name.ends_with(".ip6.arpa.")
}

/// The address of a pod name `10-42-0-5` (IPv4: exactly three dashes, no `--`), else
/// dashes standing for colons (IPv6), as CoreDNS's `pods insecure` reads it.
fn pod_address(label: &str) -> Option<IpAddr> {
    let text = if label.matches('-').count() == 3 && !label.contains("--") {
        label.replace('-', ".")
    } else {
        label.replace('-', ":")
    };
    text.parse().ok()
}

fn address(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

fn now_serial() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// The zone shared between the feed (one writer) and the query handlers (readers).
pub struct SharedZone {
    zone: RwLock<Zone>,
    /// Set once Services and EndpointSlices have been listed; until then cluster names get
    /// SERVFAIL (a client retries) rather than a negative answer it would cache.
    synced: AtomicBool,
}

impl SharedZone {
    pub fn new(zone: Zone) -> SharedZone {
        SharedZone {
            zone: RwLock::new(zone),
            synced: AtomicBool::new(false),
        }
    }

    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, Zone> {
        // Every write is a whole set/remove of one Service: a panic mid-way cannot leave
        // the maps half-linked in a way lookups trip over.
        self.zone.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn write(&self) -> std::sync::RwLockWriteGuard<'_, Zone> {
        self.zone.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn set_synced(&self) {
        self.synced.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_server::proto::rr::rdata::{CNAME, PTR};

    fn key(name: &str) -> ServiceKey {
        ("demo".into(), name.into())
    }

    fn record(name: &str, data: RData) -> ZoneRecord {
        ZoneRecord {
            name: name.into(),
            data,
        }
    }

    fn a(ip: &str) -> RData {
        RData::A(A(ip.parse().unwrap()))
    }

    fn zone() -> Zone {
        let mut z = Zone::new("cluster.local", vec!["10.43.0.10".parse().unwrap()]);
        z.set_service(
            key("web"),
            vec![
                record("web.demo.svc.cluster.local.", a("10.43.0.20")),
                record(
                    "_http._tcp.web.demo.svc.cluster.local.",
                    RData::SRV(hickory_server::proto::rr::rdata::SRV::new(
                        0,
                        0,
                        80,
                        fqdn("web.demo.svc.cluster.local").unwrap(),
                    )),
                ),
                record(
                    "20.0.43.10.in-addr.arpa.",
                    RData::PTR(PTR(fqdn("web.demo.svc.cluster.local").unwrap())),
                ),
            ],
        );
        z.set_service(
            key("ext"),
            vec![record(
                "ext.demo.svc.cluster.local.",
                RData::CNAME(CNAME(fqdn("example.test").unwrap())),
            )],
        );
        z
    }

    #[test]
    fn lookups() {
        let z = zone();
        let cases: Vec<(&str, RecordType, Found)> = vec![
            (
                "web.demo.svc.cluster.local.",
                RecordType::A,
                Found::Answer(vec![a("10.43.0.20")]),
            ),
            (
                "web.demo.svc.cluster.local.",
                RecordType::AAAA,
                Found::NoData,
            ),
            (
                "_tcp.web.demo.svc.cluster.local.",
                RecordType::SRV,
                Found::NoData,
            ),
            ("demo.svc.cluster.local.", RecordType::A, Found::NoData),
            ("svc.cluster.local.", RecordType::A, Found::NoData),
            (
                "nope.demo.svc.cluster.local.",
                RecordType::A,
                Found::NxDomain,
            ),
            (
                "web.other.svc.cluster.local.",
                RecordType::A,
                Found::NxDomain,
            ),
            ("other.svc.cluster.local.", RecordType::A, Found::NxDomain),
            (
                "ext.demo.svc.cluster.local.",
                RecordType::A,
                Found::Alias(fqdn("example.test").unwrap()),
            ),
            (
                "ext.demo.svc.cluster.local.",
                RecordType::CNAME,
                Found::Answer(vec![RData::CNAME(CNAME(fqdn("example.test").unwrap()))]),
            ),
            (
                "10-42-0-5.demo.pod.cluster.local.",
                RecordType::A,
                Found::Answer(vec![a("10.42.0.5")]),
            ),
            (
                "10-42-0.demo.pod.cluster.local.",
                RecordType::A,
                Found::NxDomain,
            ),
            ("demo.pod.cluster.local.", RecordType::A, Found::NoData),
            (
                "ns.dns.cluster.local.",
                RecordType::A,
                Found::Answer(vec![a("10.43.0.10")]),
            ),
            (
                "dns-version.cluster.local.",
                RecordType::TXT,
                Found::Answer(vec![RData::TXT(TXT::new(vec!["1.1.0".into()]))]),
            ),
            ("20.0.43.10.in-addr.arpa.", RecordType::A, Found::NoData),
            ("21.0.43.10.in-addr.arpa.", RecordType::PTR, Found::NotOurs),
            ("example.test.", RecordType::A, Found::NotOurs),
            ("notcluster.local.", RecordType::A, Found::NotOurs),
        ];
        for (name, qtype, want) in cases {
            assert_eq!(z.lookup(name, qtype), want, "{name} {qtype}");
        }
        assert!(matches!(
            z.lookup("cluster.local.", RecordType::SOA),
            Found::Answer(r) if r.len() == 1
        ));
    }

    #[test]
    fn removing_a_service_removes_its_names_and_empty_parents() {
        let mut z = zone();
        assert!(z.remove_service(&key("web")));
        assert_eq!(
            z.lookup("web.demo.svc.cluster.local.", RecordType::A),
            Found::NxDomain
        );
        assert_eq!(
            z.lookup("_tcp.web.demo.svc.cluster.local.", RecordType::SRV),
            Found::NxDomain
        );
        assert_eq!(
            z.lookup("20.0.43.10.in-addr.arpa.", RecordType::PTR),
            Found::NotOurs
        );
        // ext still holds its namespace up.
        assert_eq!(
            z.lookup("demo.svc.cluster.local.", RecordType::A),
            Found::NoData
        );
        assert!(z.remove_service(&key("ext")));
        assert_eq!(
            z.lookup("demo.svc.cluster.local.", RecordType::A),
            Found::NxDomain
        );
        assert!(z.names.is_empty() && z.below.is_empty());
        assert!(!z.remove_service(&key("ext")));
    }

    #[test]
    fn replacing_a_service_swaps_its_records() {
        let mut z = zone();
        let again = z.by_service[&key("web")].clone();
        assert!(!z.set_service(key("web"), again), "no change, no update");
        assert!(z.set_service(
            key("web"),
            vec![record("web.demo.svc.cluster.local.", a("10.43.0.21"))]
        ));
        assert_eq!(
            z.lookup("web.demo.svc.cluster.local.", RecordType::A),
            Found::Answer(vec![a("10.43.0.21")])
        );
        assert_eq!(
            z.lookup("_http._tcp.web.demo.svc.cluster.local.", RecordType::SRV),
            Found::NxDomain
        );
    }

    #[test]
    fn pod_addresses() {
        assert_eq!(pod_address("10-42-0-5"), Some("10.42.0.5".parse().unwrap()));
        assert_eq!(pod_address("fd00--5"), Some("fd00::5".parse().unwrap()));
        assert_eq!(pod_address("web"), None);
    }
}
