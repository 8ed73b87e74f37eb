//! The device's decisions, sans I/O: what it asks for, what it agrees to sign, which context
//! it accepts.
//!
//! The device cannot see the handshake transcript, so it cannot check *what* a digest is. It
//! checks what it can: the digest belongs to the one delegation it has open, it is the first
//! and only digest of that delegation, it has the length of SHA-256 and the scheme the device
//! signs with. A context is accepted only for that delegation, after its signature, and only if
//! every field is one D2TLS delegates and matches the request.

use openssl::ec::EcKey;
use openssl::ecdsa::EcdsaSig;
use openssl::pkey::Private;

use crate::session::{SessionContext, Suite};
use crate::wire::{DelegationRequest, ErrorCode, Message, SIG_ECDSA_P256_SHA256, Transport};

/// What the device wants a session with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// DTLS or TLS.
    pub transport: Transport,
    /// A fixed suite, or `None` to let the agent offer every delegated suite.
    pub suite: Option<Suite>,
    /// `host:port`.
    pub server: String,
    /// Name the server certificate must carry (empty: the host of `server`).
    pub server_name: String,
}

struct Pending {
    id: u64,
    target: Target,
    signed: bool,
}

/// The result of handling one message from the agent.
#[derive(Debug)]
pub enum Step {
    /// Send this to the agent.
    Reply(Message),
    /// Send this to the agent and log that the device refused something.
    Refuse(Message, String),
    /// The delegation produced this context: try to resume with it.
    Context(SessionContext),
    /// The delegation failed (the reason names why); ask again or give up.
    Failed(String),
}

/// The device's side of the protocol.
pub struct Device {
    key: EcKey<Private>,
    cert_chain: Vec<Vec<u8>>,
    pending: Option<Pending>,
    signatures: u64,
}

impl Device {
    /// A device with its key (which stays here) and certificate chain (leaf first, DER).
    pub fn new(key: EcKey<Private>, cert_chain: Vec<Vec<u8>>) -> Device {
        Device {
            key,
            cert_chain,
            pending: None,
            signatures: 0,
        }
    }

    /// Number of signatures made so far.
    pub fn signatures(&self) -> u64 {
        self.signatures
    }

    /// Opens a delegation (dropping any earlier one) and returns the request to send.
    pub fn request(&mut self, delegation_id: u64, target: &Target) -> Message {
        self.pending = Some(Pending {
            id: delegation_id,
            target: target.clone(),
            signed: false,
        });
        Message::Delegation(self.request_for(delegation_id, target))
    }

    /// Tells the agent that this device will ask for `target` again in about `in_ms` (after a
    /// session, before it sleeps): the agent may start that handshake ahead. Opens nothing:
    /// the device signs only for the delegation it asks for then.
    pub fn expectation(&self, in_ms: u32, target: &Target) -> Message {
        Message::Expect {
            in_ms,
            request: self.request_for(0, target),
        }
    }

    fn request_for(&self, delegation_id: u64, target: &Target) -> DelegationRequest {
        DelegationRequest {
            delegation_id,
            transport: target.transport,
            suite: target
                .suite
                .map_or(0, |s| s.id_for(target.transport.version())),
            server: target.server.clone(),
            server_name: target.server_name.clone(),
            cert_chain: self.cert_chain.clone(),
        }
    }

    /// The open delegation, if any.
    pub fn pending_id(&self) -> Option<u64> {
        self.pending.as_ref().map(|p| p.id)
    }

    /// Handles one message from the agent.
    pub fn on_message(&mut self, msg: Message) -> Step {
        match msg {
            Message::SignRequest {
                delegation_id,
                scheme,
                digest,
            } => self.sign(delegation_id, scheme, &digest),
            Message::Context {
                delegation_id,
                context,
            } => self.accept_context(delegation_id, context),
            Message::Error {
                delegation_id,
                code,
                reason,
            } => {
                if self.pending_id() == Some(delegation_id) {
                    self.pending = None;
                    Step::Failed(format!("agent: {reason} ({code:?})"))
                } else {
                    Step::Failed(format!(
                        "agent error about delegation {delegation_id:#x}: {reason} ({code:?})"
                    ))
                }
            }
            other => {
                let reason = format!("the agent sent a {} message", other.name());
                Self::refuse(0, ErrorCode::BadMessage, reason)
            }
        }
    }

    fn refuse(delegation_id: u64, code: ErrorCode, reason: String) -> Step {
        Step::Refuse(Message::error(delegation_id, code, &reason), reason)
    }

    fn sign(&mut self, id: u64, scheme: u16, digest: &[u8]) -> Step {
        let Some(p) = self.pending.as_mut().filter(|p| p.id == id) else {
            return Self::refuse(
                id,
                ErrorCode::UnexpectedSignRequest,
                format!("sign request for delegation {id:#x}, which this device did not ask for"),
            );
        };
        if p.signed {
            return Self::refuse(
                id,
                ErrorCode::UnexpectedSignRequest,
                format!("second sign request for delegation {id:#x}; one signature per delegation"),
            );
        }
        if scheme != SIG_ECDSA_P256_SHA256 {
            return Self::refuse(
                id,
                ErrorCode::SignatureRefused,
                format!("signature scheme {scheme:#06x} (only ecdsa_secp256r1_sha256 is signed)"),
            );
        }
        if digest.len() != 32 {
            return Self::refuse(
                id,
                ErrorCode::SignatureRefused,
                format!("digest of {} bytes (SHA-256 is 32)", digest.len()),
            );
        }
        match EcdsaSig::sign(digest, &self.key).and_then(|s| s.to_der()) {
            Ok(signature) => {
                p.signed = true;
                self.signatures += 1;
                Step::Reply(Message::Signature {
                    delegation_id: id,
                    signature,
                })
            }
            Err(e) => Self::refuse(id, ErrorCode::Other, format!("signing failed: {e}")),
        }
    }

    fn accept_context(&mut self, id: u64, context: SessionContext) -> Step {
        let Some(p) = self.pending.take() else {
            return Step::Failed(format!(
                "session context for delegation {id:#x}, but none is open; discarded"
            ));
        };
        if p.id != id {
            return Step::Failed(format!(
                "session context for delegation {id:#x}, but {:#x} is open; discarded",
                p.id
            ));
        }
        if !p.signed {
            return Step::Failed(format!(
                "session context for delegation {id:#x} before the device signed anything; discarded"
            ));
        }
        if let Err(e) = context.validate() {
            return Step::Failed(format!("{e}; discarded"));
        }
        if context.version != p.target.transport.version() {
            return Step::Failed(format!(
                "session context of version {:#06x} for a {:?} request; discarded",
                context.version, p.target.transport
            ));
        }
        if let Some(s) = p.target.suite
            && s.id_for(context.version) != context.suite
        {
            return Step::Failed(format!(
                "session context with suite {:#06x}, {} was asked for; discarded",
                context.suite,
                s.openssl_name()
            ));
        }
        Step::Context(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::DTLS1_2;
    use openssl::ec::EcGroup;
    use openssl::nid::Nid;

    fn device() -> Device {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        Device::new(EcKey::generate(&group).unwrap(), vec![vec![0x30, 0]])
    }

    fn target() -> Target {
        Target {
            transport: Transport::Dtls,
            suite: Some(Suite::EcdheEcdsaAes128Ccm8),
            server: "127.0.0.1:1".into(),
            server_name: String::new(),
        }
    }

    fn ctx() -> SessionContext {
        SessionContext {
            version: DTLS1_2,
            suite: 0xC0AE,
            session_id: vec![1; 32],
            master_secret: Box::new([5; 48]),
            extended_master_secret: true,
            lifetime_secs: 60,
            ticket: vec![],
            ticket_lifetime_hint: 0,
            ticket_age_add: 0,
            max_early_data: 0,
        }
    }

    fn sign_req(id: u64) -> Message {
        Message::SignRequest {
            delegation_id: id,
            scheme: SIG_ECDSA_P256_SHA256,
            digest: vec![0x42; 32],
        }
    }

    #[test]
    fn the_happy_path_signs_once_and_accepts_the_context() {
        let mut d = device();
        d.request(7, &target());
        assert!(matches!(
            d.on_message(sign_req(7)),
            Step::Reply(Message::Signature { .. })
        ));
        let step = d.on_message(Message::Context {
            delegation_id: 7,
            context: ctx(),
        });
        assert!(matches!(step, Step::Context(_)));
        assert_eq!(d.signatures(), 1);
        assert_eq!(d.pending_id(), None);
    }

    #[test]
    fn a_sign_request_not_asked_for_is_refused() {
        let mut d = device();
        // No delegation at all.
        assert!(matches!(
            d.on_message(sign_req(7)),
            Step::Refuse(
                Message::Error {
                    code: ErrorCode::UnexpectedSignRequest,
                    ..
                },
                _
            )
        ));
        // Another delegation's ID.
        d.request(7, &target());
        assert!(matches!(d.on_message(sign_req(8)), Step::Refuse(..)));
        // A second digest for the same delegation.
        assert!(matches!(d.on_message(sign_req(7)), Step::Reply(_)));
        assert!(matches!(d.on_message(sign_req(7)), Step::Refuse(..)));
        assert_eq!(d.signatures(), 1);
    }

    #[test]
    fn odd_digests_and_schemes_are_refused() {
        let mut d = device();
        d.request(1, &target());
        let short = Message::SignRequest {
            delegation_id: 1,
            scheme: SIG_ECDSA_P256_SHA256,
            digest: vec![1; 20],
        };
        assert!(matches!(d.on_message(short), Step::Refuse(..)));
        let rsa = Message::SignRequest {
            delegation_id: 1,
            scheme: 0x0401,
            digest: vec![1; 32],
        };
        assert!(matches!(d.on_message(rsa), Step::Refuse(..)));
        assert_eq!(d.signatures(), 0);
    }

    #[test]
    fn bad_contexts_are_discarded() {
        type Tweak = Box<dyn Fn(&mut SessionContext)>;
        let cases: Vec<(Tweak, &str)> = vec![
            (Box::new(|c| c.version = crate::session::TLS1_2), "version"),
            (Box::new(|c| c.suite = 0xC02B), "suite"),
            (
                Box::new(|c| c.extended_master_secret = false),
                "extended master",
            ),
            (Box::new(|c| c.session_id.clear()), "session ID"),
        ];
        for (tweak, want) in cases {
            let mut d = device();
            d.request(3, &target());
            let _ = d.on_message(sign_req(3));
            let mut c = ctx();
            tweak(&mut c);
            match d.on_message(Message::Context {
                delegation_id: 3,
                context: c,
            }) {
                Step::Failed(reason) => assert!(reason.contains(want), "{reason}"),
                other => panic!("{want}: accepted {other:?}"),
            }
            assert_eq!(d.pending_id(), None);
        }
    }

    #[test]
    fn a_tls13_delegation_signs_once_and_takes_only_a_tls13_context() {
        let mut t13 = target();
        t13.transport = Transport::Tls13;
        t13.suite = Some(Suite::EcdheEcdsaAes128GcmSha256);
        // The request names TLS 1.3 and the TLS 1.3 suite of the same AEAD.
        let Message::Delegation(req) = device().request(5, &t13) else {
            panic!("not a delegation request");
        };
        assert_eq!((req.transport, req.suite), (Transport::Tls13, 0x1301));
        let mut psk = Box::new([0u8; 48]);
        psk[..32].fill(4);
        let c13 = SessionContext {
            version: crate::session::TLS1_3,
            suite: 0x1301,
            session_id: vec![],
            master_secret: psk,
            extended_master_secret: false,
            lifetime_secs: 60,
            ticket: vec![1; 100],
            ticket_lifetime_hint: 60,
            ticket_age_add: 7,
            max_early_data: 0,
        };
        // The same rule as in TLS 1.2: one digest, for the delegation asked for.
        let mut d = device();
        d.request(5, &t13);
        assert!(matches!(d.on_message(sign_req(5)), Step::Reply(_)));
        assert!(matches!(d.on_message(sign_req(5)), Step::Refuse(..)));
        let ok = d.on_message(Message::Context {
            delegation_id: 5,
            context: c13.clone(),
        });
        assert!(matches!(ok, Step::Context(_)), "{ok:?}");
        // A TLS 1.2 context for a TLS 1.3 request, and the other way round, are discarded.
        let mut d = device();
        d.request(6, &t13);
        let _ = d.on_message(sign_req(6));
        let wrong = d.on_message(Message::Context {
            delegation_id: 6,
            context: {
                let mut c = ctx();
                c.version = crate::session::TLS1_2;
                c.suite = 0xC02B;
                c
            },
        });
        assert!(matches!(wrong, Step::Failed(r) if r.contains("version")));
        let mut d = device();
        d.request(7, &target());
        let _ = d.on_message(sign_req(7));
        let wrong = d.on_message(Message::Context {
            delegation_id: 7,
            context: c13,
        });
        assert!(matches!(wrong, Step::Failed(_)));
    }

    #[test]
    fn a_context_without_a_signature_or_for_another_delegation_is_discarded() {
        let mut d = device();
        d.request(3, &target());
        let c = Message::Context {
            delegation_id: 3,
            context: ctx(),
        };
        assert!(matches!(d.on_message(c.clone()), Step::Failed(_)));
        d.request(4, &target());
        let _ = d.on_message(sign_req(4));
        assert!(matches!(d.on_message(c), Step::Failed(_)));
    }
}
