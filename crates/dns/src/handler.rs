//! Answers one DNS query: names in the cluster domain (and reverse names of cluster
//! addresses) from the zone, authoritatively, with the SOA on negative answers; everything
//! else from the upstream resolvers. An ExternalName's CNAME is followed, in the zone or
//! upstream, so a client gets the addresses in one answer as CoreDNS gives them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_server::proto::rr::rdata::CNAME;
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::forward::Forwarder;
use crate::zone::{Found, SharedZone};
use crate::TTL;

/// How many CNAMEs an answer follows before it stops (ExternalName chains).
const MAX_CHASE: usize = 8;

pub struct Handler {
    pub(crate) zone: Arc<SharedZone>,
    pub(crate) forwarder: Forwarder,
    /// Turns the order of multi-address answers, as k3s's CoreDNS `loadbalance` plugin
    /// shuffles them, so clients that take the first address spread over a headless
    /// Service's endpoints.
    pub(crate) rotation: AtomicUsize,
}

/// What goes back: the response code, flags and sections.
#[derive(Debug, Default)]
struct Reply {
    code: ResponseCode,
    authoritative: bool,
    recursion_available: bool,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

impl Reply {
    fn code(code: ResponseCode) -> Reply {
        Reply {
            code,
            ..Default::default()
        }
    }

    fn from_upstream(message: Message) -> Reply {
        Reply {
            code: message.metadata.response_code,
            authoritative: message.metadata.authoritative,
            recursion_available: message.metadata.recursion_available,
            answers: message.answers,
            authorities: message.authorities,
            additionals: message.additionals,
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|asked| {
            let mut ours = Edns::new();
            ours.set_max_payload(asked.max_payload().max(512));
            ours.set_version(0);
            ours
        });
        let reply = if edns.is_some() && request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            Reply::code(ResponseCode::BADVERS)
        } else {
            self.reply(request).await
        };
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = reply.authoritative;
        metadata.recursion_available = reply.recursion_available;
        metadata.response_code = reply.code;
        let mut builder = MessageResponseBuilder::new(&request.queries, None);
        if let Some(edns) = edns.as_ref() {
            builder.edns(edns);
        }
        let response = builder.build(
            metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!("sending a DNS answer failed: {e}");
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

impl Handler {
    async fn reply(&self, request: &Request) -> Reply {
        if request.metadata.message_type != MessageType::Query {
            return Reply::code(ResponseCode::FormErr);
        }
        if request.metadata.op_code != OpCode::Query {
            return Reply::code(ResponseCode::NotImp);
        }
        let [query] = request.queries.queries() else {
            return Reply::code(ResponseCode::FormErr);
        };
        let asked = query.original().name().clone();
        let qtype = query.query_type();
        let mut name = query.name().to_string();
        if !name.ends_with('.') {
            name.push('.');
        }
        let found = if query.query_class() == DNSClass::IN {
            self.zone.read().lookup(&name, qtype)
        } else {
            Found::NotOurs
        };
        if found == Found::NotOurs {
            return self.forward(request.as_slice()).await;
        }
        if !self.zone.is_synced() {
            return Reply::code(ResponseCode::ServFail);
        }
        let mut reply = Reply {
            authoritative: true,
            ..Default::default()
        };
        match found {
            Found::Answer(records) => self.answer(&mut reply, &asked, records),
            Found::Alias(target) => {
                reply.answers.push(Record::from_rdata(
                    asked,
                    TTL,
                    RData::CNAME(CNAME(target.clone())),
                ));
                self.chase(&mut reply, target, qtype).await;
            }
            Found::NoData => self.negative(&mut reply, ResponseCode::NoError),
            Found::NxDomain => self.negative(&mut reply, ResponseCode::NXDomain),
            Found::NotOurs => {}
        }
        reply
    }

    async fn forward(&self, query: &[u8]) -> Reply {
        match self.forwarder.exchange(query).await {
            Ok(message) => Reply::from_upstream(message),
            Err(e) => {
                tracing::debug!("cluster DNS: {e}");
                Reply::code(ResponseCode::ServFail)
            }
        }
    }

    /// Records owned by `owner`; SRV answers get CoreDNS's equal weights and their
    /// targets' addresses in the additional section.
    fn answer(&self, reply: &mut Reply, owner: &Name, mut records: Vec<RData>) {
        if records.len() > 1 && records.iter().all(|r| r.ip_addr().is_some()) {
            let turn = self.rotation.fetch_add(1, Ordering::Relaxed) % records.len();
            records.rotate_left(turn);
        }
        let srv_count = records
            .iter()
            .filter(|r| matches!(r, RData::SRV(_)))
            .count();
        let weight = u16::try_from(100 / srv_count.max(1)).unwrap_or(100);
        let zone = self.zone.read();
        for data in records {
            let data = match data {
                RData::SRV(srv) => {
                    let target = srv.target.clone();
                    let mut target_name = target.to_lowercase().to_string();
                    if !target_name.ends_with('.') {
                        target_name.push('.');
                    }
                    for address in zone.addresses(&target_name) {
                        let extra = Record::from_rdata(target.clone(), TTL, address);
                        if !reply.additionals.contains(&extra) {
                            reply.additionals.push(extra);
                        }
                    }
                    RData::SRV(hickory_server::proto::rr::rdata::SRV::new(
                        srv.priority,
                        weight,
                        srv.port,
                        srv.target,
                    ))
                }
                other => other,
            };
            reply
                .answers
                .push(Record::from_rdata(owner.clone(), TTL, data));
        }
    }

    fn negative(&self, reply: &mut Reply, code: ResponseCode) {
        reply.code = code;
        let (apex, soa) = self.zone.read().soa(TTL);
        reply.authorities.push(Record::from_rdata(apex, TTL, soa));
    }

    /// Follow a CNAME chain from `target`: through the zone while it stays there, then
    /// one upstream query.
    async fn chase(&self, reply: &mut Reply, mut target: Name, qtype: RecordType) {
        for _ in 0..MAX_CHASE {
            let mut key = target.to_lowercase().to_string();
            if !key.ends_with('.') {
                key.push('.');
            }
            let found = self.zone.read().lookup(&key, qtype);
            match found {
                Found::Answer(records) => return self.answer(reply, &target, records),
                Found::Alias(next) => {
                    reply.answers.push(Record::from_rdata(
                        target,
                        TTL,
                        RData::CNAME(CNAME(next.clone())),
                    ));
                    target = next;
                }
                Found::NoData => return,
                Found::NxDomain => return self.negative(reply, ResponseCode::NXDomain),
                Found::NotOurs => {
                    let mut query = Message::query();
                    query.metadata.recursion_desired = true;
                    query.add_query(Query::query(target, qtype));
                    let Ok(bytes) = query.to_vec() else {
                        return;
                    };
                    if let Ok(upstream) = self.forwarder.exchange(&bytes).await {
                        reply.code = upstream.metadata.response_code;
                        reply.recursion_available = upstream.metadata.recursion_available;
                        reply.answers.extend(upstream.answers);
                    }
                    return;
                }
            }
        }
    }
}
