//! Issuing a partial key: the key server checks a request, extracts (W, d) and makes the
//! member's TPKEY record, signed. Used by `tp issue` (offline) and by tpkd's enrollment.

use rand_core::CryptoRngCore;

use crate::clpkc::{CryptoError, EntityKey, KeyRequest, Kgc, KgcParams, PartialKey};
use crate::record::{KeyRecord, KeyServerInfo, RecordError};

/// What to put in the record besides the request's own fields.
#[derive(Clone, Debug)]
pub struct IssueOptions {
    /// Start of validity (seconds since the epoch).
    pub not_before: u32,
    /// End of validity.
    pub not_after: u32,
    /// For a child key server: its port and KGC params (whose name must be the request's).
    pub key_server: Option<(u16, KgcParams)>,
}

/// Why issuance failed.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The request or the keys are not acceptable.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The record could not be made.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The request does not belong in this key server's zone.
    #[error("{0}")]
    Refused(String),
}

/// Check `req` and issue: returns the signed record and the partial key for the requester.
pub fn issue(
    kgc: &Kgc,
    own: &EntityKey,
    req: &KeyRequest,
    opts: &IssueOptions,
    rng: &mut impl CryptoRngCore,
) -> Result<(KeyRecord, PartialKey), IssueError> {
    let zone = &kgc.params().name;
    let name = &req.identity.name;
    if !crate::clpkc::is_within(name, zone) {
        return Err(IssueError::Refused(format!(
            "{name} is not in this key server's zone {zone}"
        )));
    }
    if opts.not_before >= opts.not_after {
        return Err(IssueError::Refused("validity window is empty".into()));
    }
    let key_server = match &opts.key_server {
        Some((port, params)) => {
            if &params.name != name {
                return Err(IssueError::Refused(format!(
                    "child key server params are for {}, the request for {name}",
                    params.name
                )));
            }
            if name == zone {
                return Err(IssueError::Refused(
                    "a key server record for the zone apex is self-issued, not enrolled".into(),
                ));
            }
            Some(KeyServerInfo {
                port: *port,
                p_pub: params.p_pub,
            })
        }
        None => None,
    };
    let partial = kgc.extract(req, rng)?;
    let mut record = KeyRecord {
        ip: req.identity.ip,
        w: partial.w.into(),
        issuer: kgc.params().digest(),
        not_before: opts.not_before,
        not_after: opts.not_after,
        key_server: key_server.map(Box::new),
        signature: None,
    };
    record.sign(name, own)?;
    Ok((record, partial))
}
