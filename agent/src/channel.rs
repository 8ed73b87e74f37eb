//! The agent<->device channel, sans I/O: hello frames, then AES-256-GCM records.
//!
//! Keys: each device shares a 32-byte pairing key with its agent (provisioned at pairing, like
//! a Wi-Fi or Bluetooth pairing). Each connection derives fresh directional keys:
//! `PRK = HKDF-Extract(salt = nonce_d ‖ nonce_a, IKM = pairing key)`,
//! `key_d2a = HKDF-Expand(PRK, "d2tls v1 device->agent" ‖ device_id, 32)`, and
//! `key_a2d` with "agent->device". Both nonces are fresh random values, so records of an old
//! connection never open on a new one. Within a connection each direction numbers its records
//! from 0 and the receiver accepts exactly the next number (TCP keeps order), so a replayed,
//! dropped or reordered record is refused. The GCM nonce is the 64-bit number, left-padded.
//!
//! Frames (each carried on TCP behind a 2-byte big-endian length):
//! - hello (device→agent): `1 ‖ 0x01 ‖ lp8(device_id) ‖ nonce_d[32]`
//! - hello-reply (agent→device): `1 ‖ 0x02 ‖ nonce_a[32]`
//! - record (either way): `1 ‖ 0x03 ‖ seq u64 ‖ AES-256-GCM(message) ‖ tag[16]`,
//!   with the first 10 bytes as associated data.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{ChannelError, WireError};
use crate::wire::{Message, Reader, lp8};

/// Frame format version.
pub const FRAME_VERSION: u8 = 1;
/// Largest frame body accepted (a delegation request with a certificate chain fits easily).
pub const MAX_FRAME: usize = 16 * 1024;
const F_HELLO: u8 = 0x01;
const F_HELLO_REPLY: u8 = 0x02;
const F_RECORD: u8 = 0x03;
const RECORD_HEADER: usize = 10;
const TAG_LEN: usize = 16;
/// Length of the hello nonces.
pub const NONCE_LEN: usize = 32;

/// A device's 32-byte pairing key.
#[derive(Clone)]
pub struct PairingKey(Zeroizing<[u8; 32]>);

impl PairingKey {
    /// From 64 hex digits (surrounding white space ignored). Decoded in place: no copy of the
    /// key is left behind unwiped.
    pub fn from_hex(text: &str) -> Result<PairingKey, ChannelError> {
        let mut key = PairingKey(Zeroizing::new([0u8; 32]));
        hex::decode_to_slice(text.trim(), &mut key.0[..])
            .map_err(|_| ChannelError::Key("must be 64 hex digits (32 bytes)"))?;
        key.checked()
    }

    /// From raw bytes.
    pub fn from_bytes(raw: [u8; 32]) -> Result<PairingKey, ChannelError> {
        PairingKey(Zeroizing::new(raw)).checked()
    }

    fn checked(self) -> Result<PairingKey, ChannelError> {
        if self.0.iter().all(|b| *b == 0) {
            return Err(ChannelError::Key("all zero"));
        }
        Ok(self)
    }
}

impl std::fmt::Debug for PairingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PairingKey(..)")
    }
}

/// Checks a device ID: 1..=64 of `[A-Za-z0-9._-]`.
pub fn valid_device_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The device's hello frame body; a device ID the agent would refuse is an error here.
pub fn hello(device_id: &str, nonce_d: &[u8; NONCE_LEN]) -> Result<Vec<u8>, WireError> {
    if !valid_device_id(device_id) {
        return Err(WireError::Field {
            field: "device id",
            offset: 2,
            reason: "not 1..=64 of [A-Za-z0-9._-]",
        });
    }
    let mut b = vec![FRAME_VERSION, F_HELLO];
    lp8(&mut b, "device id", device_id.as_bytes())?;
    b.extend_from_slice(nonce_d);
    Ok(b)
}

fn frame_header(r: &mut Reader<'_>, want: u8) -> Result<(), ChannelError> {
    let version = r.u8("frame version")?;
    if version != FRAME_VERSION {
        return Err(WireError::Version {
            what: "frame",
            version,
        }
        .into());
    }
    let kind = r.u8("frame type")?;
    if kind != want {
        return match kind {
            F_HELLO => Err(ChannelError::Unexpected("hello")),
            F_HELLO_REPLY => Err(ChannelError::Unexpected("hello-reply")),
            F_RECORD => Err(ChannelError::Unexpected("record")),
            _ => Err(WireError::UnknownType {
                what: "frame",
                kind,
            }
            .into()),
        };
    }
    Ok(())
}

fn nonce(r: &mut Reader<'_>) -> Result<[u8; NONCE_LEN], ChannelError> {
    let mut n = [0u8; NONCE_LEN];
    n.copy_from_slice(r.take("nonce", NONCE_LEN)?);
    if r.pos != r.bytes.len() {
        return Err(WireError::Trailing {
            what: "hello",
            count: r.bytes.len() - r.pos,
        }
        .into());
    }
    Ok(n)
}

/// Parses the device's hello: (device ID, nonce_d).
pub fn parse_hello(frame: &[u8]) -> Result<(String, [u8; NONCE_LEN]), ChannelError> {
    let mut r = Reader {
        bytes: frame,
        pos: 0,
    };
    frame_header(&mut r, F_HELLO)?;
    let at = r.pos;
    let id = r.lp8("device id")?;
    let id = std::str::from_utf8(id)
        .ok()
        .filter(|s| valid_device_id(s))
        .ok_or(WireError::Field {
            field: "device id",
            offset: at,
            reason: "not 1..=64 of [A-Za-z0-9._-]",
        })?
        .to_owned();
    Ok((id, nonce(&mut r)?))
}

/// The agent's hello-reply frame body.
pub fn hello_reply(nonce_a: &[u8; NONCE_LEN]) -> Vec<u8> {
    let mut b = vec![FRAME_VERSION, F_HELLO_REPLY];
    b.extend_from_slice(nonce_a);
    b
}

/// Parses the agent's hello-reply: nonce_a.
pub fn parse_hello_reply(frame: &[u8]) -> Result<[u8; NONCE_LEN], ChannelError> {
    let mut r = Reader {
        bytes: frame,
        pos: 0,
    };
    frame_header(&mut r, F_HELLO_REPLY)?;
    nonce(&mut r)
}

/// Which end of the channel we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The device.
    Device,
    /// The agent.
    Agent,
}

/// Sealing half: numbers and encrypts outgoing messages.
pub struct Sealer {
    cipher: Aes256Gcm,
    seq: u64,
}

/// Opening half: checks, decrypts and orders incoming records.
pub struct Opener {
    cipher: Aes256Gcm,
    next: u64,
}

/// Both halves of an established channel.
pub struct Channel {
    /// Outgoing.
    pub sealer: Sealer,
    /// Incoming.
    pub opener: Opener,
}

impl Channel {
    /// Derives the connection's keys (see the module comment).
    pub fn new(
        role: Role,
        key: &PairingKey,
        device_id: &str,
        nonce_d: &[u8; NONCE_LEN],
        nonce_a: &[u8; NONCE_LEN],
    ) -> Channel {
        let mut salt = [0u8; 2 * NONCE_LEN];
        salt[..NONCE_LEN].copy_from_slice(nonce_d);
        salt[NONCE_LEN..].copy_from_slice(nonce_a);
        let hk = Hkdf::<Sha256>::new(Some(&salt), &key.0[..]);
        let derive = |label: &[u8]| {
            let mut info = label.to_vec();
            info.extend_from_slice(device_id.as_bytes());
            let mut okm = Zeroizing::new([0u8; 32]);
            // 32 bytes is far below HKDF-SHA256's 8160-byte limit: this cannot fail.
            let _ = hk.expand(&info, &mut okm[..]);
            Aes256Gcm::new((&*okm).into())
        };
        let d2a = derive(b"d2tls v1 device->agent ");
        let a2d = derive(b"d2tls v1 agent->device ");
        let (send, recv) = match role {
            Role::Device => (d2a, a2d),
            Role::Agent => (a2d, d2a),
        };
        Channel {
            sealer: Sealer {
                cipher: send,
                seq: 0,
            },
            opener: Opener {
                cipher: recv,
                next: 0,
            },
        }
    }

    /// Splits into the two halves (one per task).
    pub fn split(self) -> (Sealer, Opener) {
        (self.sealer, self.opener)
    }
}

fn gcm_nonce(seq: u64) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&seq.to_be_bytes());
    n.into()
}

impl Sealer {
    /// Encrypts `msg` into a record frame body. A message that does not encode, or whose
    /// record would exceed [`MAX_FRAME`] (the peer would refuse it), is an error and uses no
    /// sequence number.
    pub fn seal(&mut self, msg: &Message) -> Result<Vec<u8>, ChannelError> {
        let plain = msg.encode()?;
        let len = RECORD_HEADER + plain.len() + TAG_LEN;
        if len > MAX_FRAME {
            return Err(WireError::TooLong {
                field: msg.name(),
                len,
                max: MAX_FRAME,
            }
            .into());
        }
        let seq = self.seq;
        self.seq = seq.checked_add(1).ok_or(ChannelError::Exhausted)?;
        // Capacity up front: no reallocation leaves a plaintext copy behind.
        let mut out = Vec::with_capacity(RECORD_HEADER + plain.len() + TAG_LEN);
        out.extend_from_slice(&[FRAME_VERSION, F_RECORD]);
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&plain);
        let (aad, body) = out.split_at_mut(RECORD_HEADER);
        let tag = self
            .cipher
            .encrypt_in_place_detached(&gcm_nonce(seq), aad, body)
            .map_err(|_| ChannelError::Exhausted)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }
}

impl Opener {
    /// Authenticates, orders and decrypts a record frame body.
    pub fn open(&mut self, frame: &[u8]) -> Result<Message, ChannelError> {
        let mut r = Reader {
            bytes: frame,
            pos: 0,
        };
        frame_header(&mut r, F_RECORD)?;
        let seq = r.u64("record sequence")?;
        if frame.len() < RECORD_HEADER + TAG_LEN {
            return Err(WireError::Truncated {
                field: "record tag",
                offset: RECORD_HEADER,
            }
            .into());
        }
        if seq != self.next {
            return Err(ChannelError::Sequence {
                expected: self.next,
                got: seq,
            });
        }
        let (aad, rest) = frame.split_at(RECORD_HEADER);
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut tag_bytes = [0u8; TAG_LEN];
        tag_bytes.copy_from_slice(tag);
        let mut plain = Zeroizing::new(body.to_vec());
        self.cipher
            .decrypt_in_place_detached(&gcm_nonce(seq), aad, &mut plain, &Tag::from(tag_bytes))
            .map_err(|_| ChannelError::Authentication { seq })?;
        // Only an authentic record moves the window.
        self.next = seq.checked_add(1).ok_or(ChannelError::Exhausted)?;
        Ok(Message::decode(&plain)?)
    }
}

/// Puts the 2-byte length in front of a frame body into `out` (cleared first); a body
/// outside 1..=[`MAX_FRAME`] bytes is an error (the peer would refuse it).
pub fn frame_into(body: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
    let len = u16::try_from(body.len())
        .ok()
        .filter(|n| (1..=MAX_FRAME).contains(&usize::from(*n)))
        .ok_or(WireError::TooLong {
            field: "frame",
            len: body.len(),
            max: MAX_FRAME,
        })?;
    out.clear();
    out.reserve(body.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    Ok(())
}

/// [`frame_into`] a new buffer.
pub fn framed(body: &[u8]) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::new();
    frame_into(body, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Channel, Channel) {
        let key = PairingKey::from_hex(&"11".repeat(32)).unwrap();
        let nd = [1u8; 32];
        let na = [2u8; 32];
        (
            Channel::new(Role::Device, &key, "dev-1", &nd, &na),
            Channel::new(Role::Agent, &key, "dev-1", &nd, &na),
        )
    }

    #[test]
    fn messages_flow_both_ways() {
        let (mut d, mut a) = pair();
        let r = a.sealer.seal(&Message::Ready).unwrap();
        assert_eq!(d.opener.open(&r).unwrap(), Message::Ready);
        let s = d
            .sealer
            .seal(&Message::Signature {
                delegation_id: 9,
                signature: vec![1, 2, 3],
            })
            .unwrap();
        assert!(matches!(
            a.opener.open(&s).unwrap(),
            Message::Signature {
                delegation_id: 9,
                ..
            }
        ));
    }

    #[test]
    fn tampered_record_is_refused_at_every_byte() {
        let (mut d, a) = pair();
        let (mut sealer, _) = a.split();
        let r = sealer.seal(&Message::Ready).unwrap();
        for i in 0..r.len() {
            let mut t = r.clone();
            t[i] ^= 0x01;
            let mut fresh = pair().0.opener;
            assert!(fresh.open(&t).is_err(), "flip at byte {i} accepted");
        }
        // The original still opens: a refused record does not move the window.
        assert!(d.opener.open(&r).is_ok());
    }

    #[test]
    fn replayed_and_reordered_records_are_refused() {
        let (mut d, mut a) = pair();
        let r0 = a.sealer.seal(&Message::Ready).unwrap();
        let r1 = a.sealer.seal(&Message::Ready).unwrap();
        assert_eq!(
            d.opener.open(&r1),
            Err(ChannelError::Sequence {
                expected: 0,
                got: 1
            })
        );
        d.opener.open(&r0).unwrap();
        assert_eq!(
            d.opener.open(&r0),
            Err(ChannelError::Sequence {
                expected: 1,
                got: 0
            })
        );
        d.opener.open(&r1).unwrap();
    }

    #[test]
    fn own_records_do_not_open_as_peer_records() {
        // A record reflected back to its sender is refused (directional keys).
        let (mut d, _a) = pair();
        let r = d.sealer.seal(&Message::Ready).unwrap();
        assert_eq!(
            d.opener.open(&r),
            Err(ChannelError::Authentication { seq: 0 })
        );
    }

    #[test]
    fn other_connection_or_key_does_not_open() {
        let (_, mut a) = pair();
        let r = a.sealer.seal(&Message::Ready).unwrap();
        let key = PairingKey::from_hex(&"11".repeat(32)).unwrap();
        let mut other = Channel::new(Role::Device, &key, "dev-1", &[1; 32], &[3; 32]);
        assert!(matches!(
            other.opener.open(&r),
            Err(ChannelError::Authentication { .. })
        ));
        let key2 = PairingKey::from_hex(&"12".repeat(32)).unwrap();
        let mut wrong = Channel::new(Role::Device, &key2, "dev-1", &[1; 32], &[2; 32]);
        assert!(matches!(
            wrong.opener.open(&r),
            Err(ChannelError::Authentication { .. })
        ));
        let mut other_id = Channel::new(Role::Device, &key, "dev-2", &[1; 32], &[2; 32]);
        assert!(other_id.opener.open(&r).is_err());
    }

    #[test]
    fn encoders_refuse_what_they_would_have_cut() {
        for id in ["", "bad id!", &"x".repeat(65), &"y".repeat(300)] {
            assert!(
                matches!(
                    hello(id, &[0; 32]),
                    Err(WireError::Field {
                        field: "device id",
                        ..
                    })
                ),
                "{id:?}"
            );
        }
        assert_eq!(
            hello(&"z".repeat(64), &[0; 32]).unwrap().len(),
            2 + 1 + 64 + 32
        );
        // A record larger than MAX_FRAME: refused, and the sequence number is not used up.
        let (mut d, mut a) = pair();
        let big = Message::Delegation(crate::wire::DelegationRequest {
            delegation_id: 1,
            transport: crate::wire::Transport::Tls,
            suite: 0,
            server: "h:1".into(),
            server_name: String::new(),
            cert_chain: vec![vec![0; 9000], vec![0; 9000]],
        });
        assert!(matches!(
            d.sealer.seal(&big),
            Err(ChannelError::Wire(WireError::TooLong {
                field: "delegation-request",
                max: MAX_FRAME,
                ..
            }))
        ));
        let r = d.sealer.seal(&Message::Ready).unwrap();
        assert_eq!(a.opener.open(&r).unwrap(), Message::Ready);
        // Frames: empty and oversized bodies are refused, not cut.
        assert!(framed(&[]).is_err());
        assert!(matches!(
            framed(&vec![0; MAX_FRAME + 1]),
            Err(WireError::TooLong { field: "frame", .. })
        ));
        assert_eq!(framed(&[7; 3]).unwrap(), vec![0, 3, 7, 7, 7]);
    }

    #[test]
    fn hello_frames_round_trip_and_refuse_junk() {
        let h = hello("sensor-7", &[9; 32]).unwrap();
        assert_eq!(parse_hello(&h).unwrap(), ("sensor-7".to_string(), [9; 32]));
        assert_eq!(parse_hello_reply(&hello_reply(&[4; 32])).unwrap(), [4; 32]);
        assert!(parse_hello(&h[..h.len() - 1]).is_err());
        let mut bad = h.clone();
        bad[3] = b'!';
        assert!(parse_hello(&bad).is_err());
        assert_eq!(
            parse_hello_reply(&h),
            Err(ChannelError::Unexpected("hello"))
        );
        assert!(PairingKey::from_hex("abcd").is_err());
        assert!(PairingKey::from_hex(&"00".repeat(32)).is_err());
    }
}
