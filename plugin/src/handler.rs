//! The hickory `ZoneHandler` that serves one key zone from a `Catalog`. The zone is swapped
//! atomically on reload, so a lookup always sees one whole zone, old or new.

use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, RecordSet, RecordType, TSigResponseContext};
use hickory_server::dnssec::NxProofKind;
use hickory_server::server::{Request, RequestInfo};
use hickory_server::zone_handler::{
    AuthLookup, AxfrPolicy, LookupControlFlow, LookupError, LookupOptions, LookupRecords,
    Nsec3QueryInfo, ZoneHandler, ZoneType,
};

use crate::zone::{Answer, KeyZone};

/// A key zone that can be replaced whole while it is being served.
pub type ZoneCell = Arc<ArcSwap<KeyZone>>;

/// Serves one key zone.
pub struct KeyZoneHandler {
    origin: LowerName,
    zone: ZoneCell,
    // hickory (built with DNSSEC support, for TSIG) asks every positive answer for its denial
    // proof kind and logs a warning per query when there is none. Key zones carry no denial
    // records: name NSEC3, whose lookup (below) returns nothing.
    proof: NxProofKind,
}

impl KeyZoneHandler {
    /// A handler over `zone`, whose origin must not change across reloads.
    pub fn new(zone: ZoneCell) -> Self {
        let origin = zone.load().origin().clone();
        Self {
            origin,
            zone,
            proof: NxProofKind::Nsec3 {
                algorithm: Default::default(),
                salt: Arc::from(Vec::new()),
                iterations: 0,
                opt_out: false,
            },
        }
    }
}

/// What the zone found, as the Catalog takes it; `additionals` go with an answer of records
/// (the glue of an apex NS answer).
fn found(
    lookup_options: LookupOptions,
    answer: Answer,
    additionals: Vec<Arc<RecordSet>>,
) -> LookupControlFlow<AuthLookup> {
    let result = match answer {
        Answer::Records(set) => Ok(AuthLookup::answers(
            LookupRecords::new(lookup_options, set),
            (!additionals.is_empty()).then(|| LookupRecords::many(lookup_options, additionals)),
        )),
        Answer::Many(sets) => Ok(AuthLookup::answers(
            LookupRecords::many(lookup_options, sets),
            None,
        )),
        // Never reached by a query: the server's front handler answers every referral
        // (`KeyZone::referral`: AUTHORITY, AA clear) before the Catalog sees it. Refused
        // rather than put in ANSWER with AA set, were one to come.
        Answer::Referral(_) => Err(LookupError::from(ResponseCode::Refused)),
        Answer::NoData => Err(LookupError::NameExists),
        Answer::NxDomain => Err(LookupError::from(ResponseCode::NXDomain)),
        Answer::NotAuth => Err(LookupError::from(ResponseCode::Refused)),
    };
    LookupControlFlow::Continue(result)
}

/// The additionals of `rtype` at `name`: the NS glue for the apex NS (also what the encoded
/// answers put there: `KeyZone::ns_glue`).
fn glue(zone: &KeyZone, name: &LowerName, rtype: RecordType) -> Vec<Arc<RecordSet>> {
    if rtype == RecordType::NS && name == zone.origin() {
        zone.ns_glue()
    } else {
        Vec::new()
    }
}

#[async_trait::async_trait]
impl ZoneHandler for KeyZoneHandler {
    fn zone_type(&self) -> ZoneType {
        ZoneType::Primary
    }

    fn axfr_policy(&self) -> AxfrPolicy {
        // Transfers are streamed by the server's front handler, which applies the allow-list.
        AxfrPolicy::Deny
    }

    fn origin(&self) -> &LowerName {
        &self.origin
    }

    async fn lookup(
        &self,
        name: &LowerName,
        rtype: RecordType,
        request_info: Option<&RequestInfo<'_>>,
        lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        let zone = self.zone.load();
        // The Catalog asks for the apex SOA without request info to fill the authority
        // section of a negative answer; that copy carries the negative-caching TTL.
        if rtype == RecordType::SOA && request_info.is_none() && name == zone.origin() {
            return found(
                lookup_options,
                Answer::Records(zone.negative_soa().clone()),
                Vec::new(),
            );
        }
        found(
            lookup_options,
            zone.lookup(name, rtype),
            glue(&zone, name, rtype),
        )
    }

    async fn search(
        &self,
        request: &Request,
        lookup_options: LookupOptions,
    ) -> (LookupControlFlow<AuthLookup>, Option<TSigResponseContext>) {
        let info = match request.request_info() {
            Ok(info) => info,
            Err(e) => return (LookupControlFlow::Break(Err(e)), None),
        };
        let rtype = info.query.query_type();
        if matches!(rtype, RecordType::AXFR | RecordType::IXFR) {
            return (
                LookupControlFlow::Break(Err(LookupError::from(ResponseCode::Refused))),
                None,
            );
        }
        let zone = self.zone.load();
        (
            found(
                lookup_options,
                zone.lookup(info.query.name(), rtype),
                glue(&zone, info.query.name(), rtype),
            ),
            None,
        )
    }

    async fn nsec_records(
        &self,
        _name: &LowerName,
        _lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        // Key zones are not DNSSEC-signed: each record carries its key server's signature.
        LookupControlFlow::Continue(Ok(AuthLookup::default()))
    }

    // hickory-server's `dnssec-ring` feature (on for TSIG) asks for these too; key zones have
    // neither NSEC3 chains nor a proof kind.
    async fn nsec3_records(
        &self,
        _info: Nsec3QueryInfo<'_>,
        _lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        LookupControlFlow::Continue(Ok(AuthLookup::default()))
    }

    fn nx_proof_kind(&self) -> Option<&NxProofKind> {
        Some(&self.proof)
    }
}
