//! Certificateless public-key cryptography (CL-PKC) on P-256.
//!
//! This is the fixed construction of DESIGN §3: the pairing-free, merged-point scheme of
//! GM/T 0130-2023 / Schnorr-based implicit certification (SIC, ePrint 2019/157). Every
//! key server is the key generation centre (KGC) of its children; an entity's public key `Q` is a
//! function of its [`Identity`] (name, IP address, issuer params digest), of the point `W` its
//! KGC handed out, and of the KGC's public key `P_pub`. The KGC never learns the entity's private
//! key (no escrow): the entity adds a secret value `x` of its own to the partial key `d`.
//!
//! | step | who | what |
//! |---|---|---|
//! | Setup | KGC | [`Kgc::setup`]: `ms`, `P_pub = ms·G`, [`KgcParams`] |
//! | Set-Secret-Value | entity | [`SecretValue::generate`], [`KeyRequest::new`] (`X = x·G` + proof of possession) |
//! | Partial-Private-Key-Extract | KGC | [`Kgc::extract`]: `W = X + r·G`, `λ = Hs("TP-PPK", ID‖W‖P_pub)`, `d = r + λ·ms` |
//! | Set-Private-Key | entity | [`EntityKey::combine`]: check `d·G == W − X + λ·P_pub`, `sk = x + d` |
//! | Public key | anyone | [`derive_public_key`]: `Q = W + λ·P_pub` (= `sk·G`) |
//! | Sign / verify | entity / anyone | [`EntityKey::sign`], [`verify`]: ECDSA-P256-SHA256 over `lp("TP-SIG-v1") ‖ msg` |
//! | Encrypt / decrypt | anyone / entity | [`seal`], [`EntityKey::open`]: ECIES (ECDH, HKDF-SHA256, AES-256-GCM) |
//!
//! Byte-exact encodings, test vectors and the security rationale are in `docs/crypto.md`.
//!
//! Secrets (`ms`, `x`, `d`, `sk`) live in types that zeroize on drop, whose `Debug` prints
//! `[secret]`, and that implement neither `Display` nor serde; their bytes only leave through
//! explicitly named methods returning [`Zeroizing`] buffers.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use p256::ecdsa::signature::DigestSigner;
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::hash2curve::{ExpandMsgXmd, GroupDigest};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::elliptic_curve::{Field, PrimeField};
use p256::{FieldBytes, NistP256, NonZeroScalar, ProjectivePoint, Scalar, SecretKey};
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

pub use p256::PublicKey;

/// Domain-separation tag of the partial-key hash `λ` (RFC 9380 DST).
pub const TAG_PPK: &[u8] = b"TP-PPK";
/// Prefix (length-prefixed) of every message signed by an entity key.
pub const TAG_SIG: &[u8] = b"TP-SIG-v1";
/// Prefix (length-prefixed) of the proof-of-possession message signed with `x`.
pub const TAG_POP: &[u8] = b"TP-POP-v1";
/// Label (length-prefixed, first field of the HKDF info) of the encryption to an entity.
pub const TAG_ENC: &[u8] = b"TP-ENC-v1";

/// Version byte of [`KgcParams::encode`], [`KeyRequest::encode`] and [`PartialKey::encode`].
pub const VERSION: u8 = 1;
/// Curve identifier of P-256 in [`KgcParams::encode`].
pub const CURVE_P256: u8 = 1;
/// Length of a SEC1-compressed P-256 point.
pub const POINT_LEN: usize = 33;
/// Length of a scalar (big-endian).
pub const SCALAR_LEN: usize = 32;
/// Length of a signature (`r ‖ s`, big-endian, low-S).
pub const SIGNATURE_LEN: usize = 64;
/// Bytes [`seal`] adds to the plaintext: ephemeral point (33) and GCM tag (16).
pub const SEAL_OVERHEAD: usize = POINT_LEN + 16;
/// Length of [`PartialKey::encode`]: version, `W`, `d`.
pub const PARTIAL_KEY_LEN: usize = 1 + POINT_LEN + SCALAR_LEN;

/// Errors of the CL-PKC layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Not a valid SEC1-compressed P-256 point (wrong length, not on the curve, identity).
    #[error("invalid P-256 point (expected 33-byte SEC1 compressed, on the curve)")]
    InvalidPoint,
    /// A scalar that is zero or not below the group order, or of the wrong length.
    #[error("invalid scalar (expected 32 bytes, non-zero, below the group order)")]
    InvalidScalar,
    /// The key request's proof of possession of `x` does not verify.
    #[error("proof of possession of the secret value does not verify")]
    BadProof,
    /// The identity's issuer digest is not the digest of the KGC params at hand.
    #[error("identity was issued under other KGC params (issuer digest mismatch)")]
    WrongIssuer,
    /// Set-Private-Key check `d·G == W − X + λ·P_pub` failed: wrong or tampered partial key.
    #[error("partial key check d·G == W - X + lambda·P_pub failed")]
    PartialKeyCheckFailed,
    /// A stored private key does not match the public key derived from (ID, W, P_pub).
    #[error("private key does not match the key derived from identity, W and P_pub")]
    KeyMismatch,
    /// A signature is malformed, high-S, or does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// Decryption failed (wrong key, wrong identity, or tampered ciphertext).
    #[error("decryption failed")]
    Decrypt,
    /// An encoding is truncated, has trailing bytes, a wrong version or a non-canonical field.
    #[error("malformed encoding: {0}")]
    Malformed(&'static str),
    /// The system's random number generator failed.
    #[error("the system random number generator failed")]
    Rng,
    /// A name that is not a valid DNS name in our canonical form; the string says why.
    #[error("bad name: {0}")]
    BadName(String),
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, CryptoError>;

// ---------------------------------------------------------------------------------------------
// Encoding helpers
// ---------------------------------------------------------------------------------------------

/// Appends `lp(data)`: a big-endian u16 length, then `data`.
///
/// Every field given to this function is bounded far below 65535 bytes by construction (names
/// ≤ 254, points 33, identities ≤ 306, params ≤ 291, tags); the debug assertion documents it.
fn put_lp(out: &mut Vec<u8>, data: &[u8]) {
    debug_assert!(data.len() <= usize::from(u16::MAX));
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

/// `lp(data)` as a new vector.
fn lp(data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 + data.len());
    put_lp(&mut v, data);
    v
}

/// Feeds `lp(data)` to a hash.
fn hash_lp(h: &mut Sha256, data: &[u8]) {
    debug_assert!(data.len() <= usize::from(u16::MAX));
    h.update((data.len() as u16).to_be_bytes());
    h.update(data);
}

/// Strict cursor for the decoders: no panics, no trailing bytes.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Self { b }
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        if self.b.len() < n {
            return Err(CryptoError::Malformed(what));
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn lp(&mut self, what: &'static str) -> Result<&'a [u8]> {
        let len = self.take(2, what)?;
        let n = usize::from(u16::from_be_bytes([len[0], len[1]]));
        self.take(n, what)
    }
    fn finish(self) -> Result<()> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(CryptoError::Malformed("trailing bytes"))
        }
    }
}

/// SEC1-compressed encoding (33 bytes) of a point.
pub fn point_to_bytes(p: &PublicKey) -> [u8; 33] {
    let enc = p.to_encoded_point(true);
    let mut out = [0u8; 33];
    // A `PublicKey` is never the identity, so its compressed form is always 33 bytes.
    out.copy_from_slice(enc.as_bytes());
    out
}

/// A point as it travels: SEC1-compressed, its prefix checked, not yet decompressed. A key
/// server serving a record needs its bytes only; the point itself (a square root in the
/// field) is computed where a key is derived or a signature checked.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CompressedPoint([u8; POINT_LEN]);

impl CompressedPoint {
    /// Takes exactly 33 bytes with prefix 0x02/0x03; whether they are on the curve is found by
    /// [`CompressedPoint::point`].
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        let arr: [u8; POINT_LEN] = b.try_into().map_err(|_| CryptoError::InvalidPoint)?;
        if !(arr[0] == 0x02 || arr[0] == 0x03) {
            return Err(CryptoError::InvalidPoint);
        }
        Ok(Self(arr))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8; POINT_LEN] {
        &self.0
    }

    /// The point, decompressed; an error when the bytes are not on P-256.
    pub fn point(&self) -> Result<PublicKey> {
        point_from_bytes(&self.0)
    }
}

impl From<&PublicKey> for CompressedPoint {
    fn from(p: &PublicKey) -> Self {
        Self(point_to_bytes(p))
    }
}

impl From<PublicKey> for CompressedPoint {
    fn from(p: PublicKey) -> Self {
        Self(point_to_bytes(&p))
    }
}

impl fmt::Debug for CompressedPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CompressedPoint({})", hex::encode(self.0))
    }
}

/// Decodes a SEC1-compressed point (exactly 33 bytes, prefix 0x02/0x03, on the curve).
///
/// The uncompressed form and the identity are refused, so every point has one encoding.
pub fn point_from_bytes(b: &[u8]) -> Result<PublicKey> {
    if b.len() != POINT_LEN || !(b[0] == 0x02 || b[0] == 0x03) {
        return Err(CryptoError::InvalidPoint);
    }
    PublicKey::from_sec1_bytes(b).map_err(|_| CryptoError::InvalidPoint)
}

/// Decodes a non-zero scalar below the group order from exactly 32 big-endian bytes.
fn scalar_from_bytes(b: &[u8]) -> Result<NonZeroScalar> {
    let mut arr: [u8; 32] = b.try_into().map_err(|_| CryptoError::InvalidScalar)?;
    let s = Option::from(NonZeroScalar::from_repr(FieldBytes::from(arr)));
    arr.zeroize();
    s.ok_or(CryptoError::InvalidScalar)
}

/// Copies a scalar's big-endian bytes into a zeroizing buffer.
fn scalar_to_bytes(s: &Scalar) -> Zeroizing<[u8; 32]> {
    let mut repr = s.to_repr();
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&repr);
    let repr_bytes: &mut [u8] = &mut repr;
    repr_bytes.zeroize();
    out
}

fn point_from_projective(p: ProjectivePoint) -> Result<PublicKey> {
    PublicKey::from_affine(p.to_affine()).map_err(|_| CryptoError::InvalidPoint)
}

fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

/// Canonical form of a DNS name: ASCII lowercase, with the trailing dot; `"."` is the root.
///
/// Labels are 1..=63 bytes of letters, digits, `-` and `_`, and do not start or end with `-`;
/// the whole name is at most 254 characters with the trailing dot (255 bytes in wire form).
/// Internationalised names must be given in their A-label (`xn--`) form. Escapes (`\.`),
/// wildcards and empty labels are refused.
pub fn canonical_name(name: &str) -> Result<String> {
    if name == "." {
        return Ok(".".to_string());
    }
    let body = name.strip_suffix('.').unwrap_or(name);
    check_labels(name, body)?;
    let mut out = body.to_ascii_lowercase();
    out.push('.');
    Ok(out)
}

/// Whether `name` is already in canonical form (then [`canonical_name`] would return it as is).
pub fn is_canonical(name: &str) -> bool {
    name == "."
        || name.strip_suffix('.').is_some_and(|body| {
            !body.bytes().any(|b| b.is_ascii_uppercase()) && check_labels(name, body).is_ok()
        })
}

fn check_labels(name: &str, body: &str) -> Result<()> {
    let bad = |why: &str| CryptoError::BadName(format!("{name:?}: {why}"));
    if body.is_empty() {
        return Err(bad("empty name"));
    }
    if body.len() > 253 {
        return Err(bad("longer than 253 characters"));
    }
    for label in body.split('.') {
        if label.is_empty() {
            return Err(bad("empty label"));
        }
        if label.len() > 63 {
            return Err(bad("label longer than 63 bytes"));
        }
        if !label
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return Err(bad("labels may hold only letters, digits, '-' and '_'"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("label starts or ends with '-'"));
        }
    }
    Ok(())
}

/// Whether canonical `name` equals canonical `zone` or lies below it (`"."` contains all).
pub fn is_within(name: &str, zone: &str) -> bool {
    if zone == "." || name == zone {
        return true;
    }
    name.len() > zone.len()
        && name.ends_with(zone)
        && name.as_bytes()[name.len() - zone.len() - 1] == b'.'
}

// ---------------------------------------------------------------------------------------------
// KGC params and identities
// ---------------------------------------------------------------------------------------------

/// Public parameters of a key server acting as KGC: its canonical name and `P_pub = ms·G`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KgcParams {
    /// The key server's own name, canonical (see [`canonical_name`]).
    pub name: String,
    /// The KGC public key `P_pub = ms·G`.
    pub p_pub: PublicKey,
}

impl KgcParams {
    /// Builds params; `name` is canonicalised.
    pub fn new(name: &str, p_pub: PublicKey) -> Result<Self> {
        Ok(Self {
            name: canonical_name(name)?,
            p_pub,
        })
    }

    /// `0x01 version ‖ 0x01 curve (P-256) ‖ lp(name) ‖ P_pub (33, compressed)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + 2 + self.name.len() + POINT_LEN);
        out.push(VERSION);
        out.push(CURVE_P256);
        put_lp(&mut out, self.name.as_bytes());
        out.extend_from_slice(&point_to_bytes(&self.p_pub));
        out
    }

    /// Strict inverse of [`encode`](Self::encode): version 1, curve 1, canonical name, valid
    /// point, no trailing bytes.
    pub fn decode(b: &[u8]) -> Result<Self> {
        let mut r = Reader::new(b);
        if r.u8("params: version")? != VERSION {
            return Err(CryptoError::Malformed("params: unknown version"));
        }
        if r.u8("params: curve")? != CURVE_P256 {
            return Err(CryptoError::Malformed("params: unknown curve"));
        }
        let name = decode_canonical_name(r.lp("params: name")?)?;
        let p_pub = point_from_bytes(r.take(POINT_LEN, "params: P_pub")?)?;
        r.finish()?;
        Ok(Self { name, p_pub })
    }

    /// `SHA-256(encode())`: the issuer field of the identities this KGC issues.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.encode()).into()
    }
}

fn decode_canonical_name(b: &[u8]) -> Result<String> {
    let s = std::str::from_utf8(b).map_err(|_| CryptoError::Malformed("name: not UTF-8"))?;
    let c = canonical_name(s)?;
    if c != s {
        return Err(CryptoError::Malformed("name: not in canonical form"));
    }
    Ok(c)
}

/// An entity's identity: canonical name, IP address and the digest of its issuer's params.
///
/// A new name, a new IP address or a new issuer gives a new key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// Canonical name (lowercase, trailing dot).
    pub name: String,
    /// The address the name resolves to (4 bytes for IPv4, 16 for IPv6, as given; an
    /// IPv4-mapped IPv6 address is an IPv6 address here).
    pub ip: IpAddr,
    /// `SHA-256` of the issuing key server's [`KgcParams::encode`].
    pub issuer: [u8; 32],
}

impl Identity {
    /// Identity of `name` at `ip`, issued by the KGC with params `issuer`.
    pub fn new(name: &str, ip: IpAddr, issuer: &KgcParams) -> Result<Self> {
        Self::with_issuer_digest(name, ip, issuer.digest())
    }

    /// Identity with the issuer given by its params digest.
    pub fn with_issuer_digest(name: &str, ip: IpAddr, issuer: [u8; 32]) -> Result<Self> {
        Ok(Self {
            name: canonical_name(name)?,
            ip,
            issuer,
        })
    }

    /// `lp(name) ‖ lp(IP: 4 or 16 bytes) ‖ issuer digest (32)`.
    pub fn encode(&self) -> Vec<u8> {
        let ip = ip_bytes(&self.ip);
        let mut out = Vec::with_capacity(2 + self.name.len() + 2 + ip.len() + 32);
        put_lp(&mut out, self.name.as_bytes());
        put_lp(&mut out, &ip);
        out.extend_from_slice(&self.issuer);
        out
    }

    /// Strict inverse of [`encode`](Self::encode).
    pub fn decode(b: &[u8]) -> Result<Self> {
        let mut r = Reader::new(b);
        let name = decode_canonical_name(r.lp("identity: name")?)?;
        let ip = match r.lp("identity: ip")? {
            v4 if v4.len() == 4 => IpAddr::V4(Ipv4Addr::new(v4[0], v4[1], v4[2], v4[3])),
            v6 if v6.len() == 16 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(v6);
                IpAddr::V6(Ipv6Addr::from(o))
            }
            _ => return Err(CryptoError::Malformed("identity: IP must be 4 or 16 bytes")),
        };
        let mut issuer = [0u8; 32];
        issuer.copy_from_slice(r.take(32, "identity: issuer digest")?);
        r.finish()?;
        Ok(Self { name, ip, issuer })
    }
}

// ---------------------------------------------------------------------------------------------
// Hashes and signatures
// ---------------------------------------------------------------------------------------------

/// `Hs(tag, data)`: RFC 9380 `hash_to_field` into the P-256 scalar field with
/// `expand_message_xmd(SHA-256)`, DST = `tag` (m = 1, L = 48, count = 1).
fn hs(tag: &[u8], data: &[u8]) -> Scalar {
    // Only the DST can make hash_to_field fail (empty); all our tags are non-empty constants.
    <NistP256 as GroupDigest>::hash_to_scalar::<ExpandMsgXmd<Sha256>>(&[data], &[tag])
        .unwrap_or(Scalar::ZERO)
}

/// The input of `λ`: `lp(ID) ‖ lp(W) ‖ lp(P_pub)` (points compressed).
pub fn lambda_input(identity: &Identity, w: &PublicKey, p_pub: &PublicKey) -> Vec<u8> {
    let mut data = Vec::with_capacity(2 + 306 + 2 * (2 + POINT_LEN));
    put_lp(&mut data, &identity.encode());
    put_lp(&mut data, &point_to_bytes(w));
    put_lp(&mut data, &point_to_bytes(p_pub));
    data
}

/// `λ = Hs("TP-PPK", lp(ID) ‖ lp(W) ‖ lp(P_pub))`.
pub fn lambda(identity: &Identity, w: &PublicKey, p_pub: &PublicKey) -> Scalar {
    hs(TAG_PPK, &lambda_input(identity, w, p_pub))
}

/// `Q = W + λ·P_pub`, or an error if the sum is the point at infinity.
///
/// The error cannot be provoked: it needs `W = −λ·P_pub` with `λ` a hash of `W` itself, i.e.
/// guessing a 256-bit hash output. [`derive_public_key`] is the infallible form.
pub fn try_derive_public_key(
    identity: &Identity,
    w: &PublicKey,
    issuer_p_pub: &PublicKey,
) -> Result<PublicKey> {
    let l = lambda(identity, w, issuer_p_pub);
    point_from_projective(w.to_projective() + issuer_p_pub.to_projective() * l)
}

/// Client-side key derivation: `Q = W + λ·P_pub` from (ID, W, P_pub) alone.
///
/// The caller must have checked that `issuer_p_pub` belongs to the params whose digest is
/// `identity.issuer` (the key record chain does this).
///
/// # Panics
///
/// Only if `W + λ·P_pub` is the point at infinity, which takes a preimage-like search against
/// SHA-256 (probability 2⁻²⁵⁶ per try; see [`try_derive_public_key`]).
pub fn derive_public_key(
    identity: &Identity,
    w: &PublicKey,
    issuer_p_pub: &PublicKey,
) -> PublicKey {
    match try_derive_public_key(identity, w, issuer_p_pub) {
        Ok(q) => q,
        Err(_) => panic!("W + lambda*P_pub is the identity: hash inversion"),
    }
}

/// The bytes ECDSA signs for [`EntityKey::sign`]: `lp("TP-SIG-v1") ‖ msg`.
pub fn signed_message(msg: &[u8]) -> Vec<u8> {
    let mut v = lp(TAG_SIG);
    v.extend_from_slice(msg);
    v
}

fn sig_digest(msg: &[u8]) -> Sha256 {
    let mut h = Sha256::new();
    hash_lp(&mut h, TAG_SIG);
    h.update(msg);
    h
}

/// The proof-of-possession message: `lp("TP-POP-v1") ‖ lp(ID) ‖ lp(X)`.
pub fn pop_message(identity: &Identity, x: &PublicKey) -> Vec<u8> {
    let mut v = lp(TAG_POP);
    put_lp(&mut v, &identity.encode());
    put_lp(&mut v, &point_to_bytes(x));
    v
}

/// ECDSA-P256-SHA256 (RFC 6979 nonce), normalised to low-S, as `r ‖ s`.
fn ecdsa_sign(key: &SigningKey, digest: Sha256) -> [u8; 64] {
    let sig: Signature = key.sign_digest(digest);
    let sig = sig.normalize_s().unwrap_or(sig);
    sig.to_bytes().into()
}

/// Verifies `r ‖ s` over `message` (hashed with SHA-256 by ring); high-S is refused, so nobody
/// can re-shape a valid signature (`s ↔ n − s`). ring's P-256 verification costs about a
/// quarter of p256's; signing stays with p256 for its RFC 6979 nonces (the test vectors).
fn ecdsa_verify(q: &PublicKey, message: &[u8], sig: &[u8; 64]) -> Result<()> {
    let parsed = Signature::from_slice(sig).map_err(|_| CryptoError::BadSignature)?;
    if parsed.normalize_s().is_some() {
        return Err(CryptoError::BadSignature);
    }
    let point = q.to_encoded_point(false);
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_FIXED,
        point.as_bytes(),
    )
    .verify(message, sig)
    .map_err(|_| CryptoError::BadSignature)
}

/// Verifies a signature by the entity with public key `q` over `msg` (see
/// [`EntityKey::sign`]). Refuses malformed, high-S and wrong signatures.
pub fn verify(q: &PublicKey, msg: &[u8], sig: &[u8; 64]) -> Result<()> {
    ecdsa_verify(q, &signed_message(msg), sig)
}

// ---------------------------------------------------------------------------------------------
// KGC
// ---------------------------------------------------------------------------------------------

/// A key server in its KGC role: params and the master secret `ms`.
///
/// `ms` is zeroized on drop and never printed. It is distinct from the key server's own entity
/// key (an [`EntityKey`] obtained like any other, e.g. by [`Kgc::self_issue`] at a root).
pub struct Kgc {
    params: KgcParams,
    ms: SecretKey,
}

impl fmt::Debug for Kgc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kgc")
            .field("params", &self.params)
            .field("ms", &"[secret]")
            .finish()
    }
}

impl Kgc {
    /// Setup: a fresh master secret `ms` and `P_pub = ms·G` for the key server `name`.
    pub fn setup(name: &str, rng: &mut impl CryptoRngCore) -> Result<Self> {
        Self::from_secret(name, SecretKey::from(NonZeroScalar::random(rng)))
    }

    /// Loads a KGC from its stored 32-byte master secret.
    pub fn from_secret_bytes(name: &str, ms: &[u8]) -> Result<Self> {
        Self::from_secret(name, SecretKey::from(scalar_from_bytes(ms)?))
    }

    fn from_secret(name: &str, ms: SecretKey) -> Result<Self> {
        let params = KgcParams::new(name, ms.public_key())?;
        Ok(Self { params, ms })
    }

    /// The master secret, for storing (0600 file or store); handle with care.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        scalar_to_bytes(&self.ms.to_nonzero_scalar())
    }

    /// The public params.
    pub fn params(&self) -> &KgcParams {
        &self.params
    }

    /// Partial-Private-Key-Extract with a fresh random `r`.
    ///
    /// Checks the proof of possession and that the request's identity names this KGC as issuer.
    /// Authenticating the requester (is it really `name` at `ip`?) and zone policy (see
    /// [`is_within`]) are the caller's job. The result must reach the entity confidentially
    /// (e.g. [`seal`]ed to a key it already has, or over an authenticated channel).
    pub fn extract(&self, req: &KeyRequest, rng: &mut impl CryptoRngCore) -> Result<PartialKey> {
        loop {
            let r = NonZeroScalar::random(&mut *rng);
            match self.extract_with_scalar(req, r) {
                // W = identity or d = 0: probability ~2^-256, draw another r.
                Err(CryptoError::InvalidPoint | CryptoError::InvalidScalar) => continue,
                other => return other,
            }
        }
    }

    /// [`extract`](Self::extract) with a given `r` (32 bytes), for test vectors only: reusing
    /// `r` for two requests reveals `ms`.
    #[doc(hidden)]
    pub fn extract_with_r(&self, req: &KeyRequest, r: &[u8]) -> Result<PartialKey> {
        self.extract_with_scalar(req, scalar_from_bytes(r)?)
    }

    fn extract_with_scalar(&self, req: &KeyRequest, r: NonZeroScalar) -> Result<PartialKey> {
        let r = Zeroizing::new(*r);
        req.verify_pop()?;
        if req.identity.issuer != self.params.digest() {
            return Err(CryptoError::WrongIssuer);
        }
        let w = point_from_projective(req.x.to_projective() + ProjectivePoint::GENERATOR * *r)?;
        let l = lambda(&req.identity, &w, &self.params.p_pub);
        let d = *r + l * *self.ms.to_nonzero_scalar();
        if bool::from(d.is_zero()) {
            return Err(CryptoError::InvalidScalar);
        }
        Ok(PartialKey { w, d })
    }

    /// Self-issue: the KGC's own key server gets an entity key for `(params.name, ip)` issued
    /// by itself (what a root key server does). `ms` and the result's `sk` stay independent.
    pub fn self_issue(&self, ip: IpAddr, rng: &mut impl CryptoRngCore) -> Result<EntityKey> {
        let identity = Identity::new(&self.params.name, ip, &self.params)?;
        let secret = SecretValue::generate(&mut *rng);
        let req = KeyRequest::new(identity.clone(), &secret);
        let partial = self.extract(&req, rng)?;
        EntityKey::combine(&identity, &secret, &partial, &self.params)
    }
}

// ---------------------------------------------------------------------------------------------
// Entity side
// ---------------------------------------------------------------------------------------------

/// The entity's secret value `x` (Set-Secret-Value). Zeroized on drop.
pub struct SecretValue {
    x: SigningKey,
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretValue")
            .field("x", &"[secret]")
            .field("X", &self.public())
            .finish()
    }
}

impl SecretValue {
    /// A fresh random `x`.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        Self {
            x: SigningKey::from(NonZeroScalar::random(rng)),
        }
    }

    /// `X = x·G`.
    pub fn public(&self) -> PublicKey {
        PublicKey::from(self.x.verifying_key())
    }

    /// `x` as 32 big-endian bytes, for storing between request and combine.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        scalar_to_bytes(self.x.as_nonzero_scalar())
    }

    /// Loads `x` from 32 bytes (non-zero, below the group order).
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        Ok(Self {
            x: SigningKey::from(scalar_from_bytes(b)?),
        })
    }

    /// Decrypts what [`seal`] made for `X` and this identity: how the issuer sends the
    /// partial key `d` back confidentially over any channel.
    pub fn open(&self, identity: &Identity, ciphertext: &[u8]) -> Result<Vec<u8>> {
        open_with(
            self.x.as_nonzero_scalar(),
            &self.public(),
            identity,
            ciphertext,
        )
    }
}

/// ECIES decryption with the recipient's scalar and public key (see [`seal`]).
fn open_with(
    sk: &NonZeroScalar,
    q: &PublicKey,
    identity: &Identity,
    ciphertext: &[u8],
) -> Result<Vec<u8>> {
    if ciphertext.len() < SEAL_OVERHEAD {
        return Err(CryptoError::Decrypt);
    }
    let (e_bytes, body) = ciphertext.split_at(POINT_LEN);
    let e = point_from_bytes(e_bytes).map_err(|_| CryptoError::Decrypt)?;
    let shared = p256::ecdh::diffie_hellman(sk, e.as_affine());
    let id = identity.encode();
    let (cipher, nonce) = ecies_cipher(shared.raw_secret_bytes(), &id, e_bytes, q);
    cipher
        .decrypt(
            &Nonce::from(*nonce),
            Payload {
                msg: body,
                aad: &id,
            },
        )
        .map_err(|_| CryptoError::Decrypt)
}

/// A request for a partial key: identity, `X`, and a proof of possession of `x`.
///
/// The proof is an ECDSA-P256-SHA256 signature (low-S, `r ‖ s`) by `x` over
/// [`pop_message`] = `lp("TP-POP-v1") ‖ lp(ID) ‖ lp(X)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRequest {
    /// The identity the key is requested for.
    pub identity: Identity,
    /// `X = x·G`.
    pub x: PublicKey,
    /// Proof of possession of `x`.
    pub pop: [u8; 64],
}

impl KeyRequest {
    /// Builds a request and signs its proof of possession with `secret`.
    pub fn new(identity: Identity, secret: &SecretValue) -> Self {
        let x = secret.public();
        let mut h = Sha256::new();
        h.update(pop_message(&identity, &x));
        let pop = ecdsa_sign(&secret.x, h);
        Self { identity, x, pop }
    }

    /// Checks the proof of possession.
    pub fn verify_pop(&self) -> Result<()> {
        ecdsa_verify(&self.x, &pop_message(&self.identity, &self.x), &self.pop)
            .map_err(|_| CryptoError::BadProof)
    }

    /// `0x01 version ‖ lp(ID) ‖ X (33) ‖ PoP (64)`.
    pub fn encode(&self) -> Vec<u8> {
        let id = self.identity.encode();
        let mut out = Vec::with_capacity(1 + 2 + id.len() + POINT_LEN + SIGNATURE_LEN);
        out.push(VERSION);
        put_lp(&mut out, &id);
        out.extend_from_slice(&point_to_bytes(&self.x));
        out.extend_from_slice(&self.pop);
        out
    }

    /// Strict inverse of [`encode`](Self::encode). Does not check the proof (see
    /// [`verify_pop`](Self::verify_pop); [`Kgc::extract`] does).
    pub fn decode(b: &[u8]) -> Result<Self> {
        let mut r = Reader::new(b);
        if r.u8("request: version")? != VERSION {
            return Err(CryptoError::Malformed("request: unknown version"));
        }
        let identity = Identity::decode(r.lp("request: identity")?)?;
        let x = point_from_bytes(r.take(POINT_LEN, "request: X")?)?;
        let mut pop = [0u8; 64];
        pop.copy_from_slice(r.take(SIGNATURE_LEN, "request: proof")?);
        r.finish()?;
        Ok(Self { identity, x, pop })
    }
}

/// The KGC's answer: `W` (public) and the partial private key `d` (secret, zeroized on drop).
pub struct PartialKey {
    /// `W = X + r·G`; published in the entity's key record.
    pub w: PublicKey,
    d: Scalar,
}

impl Drop for PartialKey {
    fn drop(&mut self) {
        self.d.zeroize();
    }
}

impl fmt::Debug for PartialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartialKey")
            .field("w", &self.w)
            .field("d", &"[secret]")
            .finish()
    }
}

impl PartialKey {
    /// `0x01 version ‖ W (33) ‖ d (32)`; secret, send confidentially.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(PARTIAL_KEY_LEN));
        out.push(VERSION);
        out.extend_from_slice(&point_to_bytes(&self.w));
        out.extend_from_slice(&*scalar_to_bytes(&self.d));
        out
    }

    /// Strict inverse of [`encode`](Self::encode) (`d` non-zero and below the order). The
    /// algebraic check happens in [`EntityKey::combine`].
    pub fn decode(b: &[u8]) -> Result<Self> {
        let mut r = Reader::new(b);
        if r.u8("partial key: version")? != VERSION {
            return Err(CryptoError::Malformed("partial key: unknown version"));
        }
        let w = point_from_bytes(r.take(POINT_LEN, "partial key: W")?)?;
        let d = *scalar_from_bytes(r.take(SCALAR_LEN, "partial key: d")?)?;
        r.finish()?;
        Ok(Self { w, d })
    }
}

/// An entity's full key pair: `sk = x + d`, `Q = sk·G = W + λ·P_pub`, with its identity and
/// `W`. `sk` is zeroized on drop and never printed.
pub struct EntityKey {
    sk: SigningKey,
    q: PublicKey,
    w: PublicKey,
    identity: Identity,
}

impl fmt::Debug for EntityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntityKey")
            .field("identity", &self.identity)
            .field("q", &self.q)
            .field("w", &self.w)
            .field("sk", &"[secret]")
            .finish()
    }
}

impl EntityKey {
    /// Set-Private-Key: checks `identity.issuer == issuer.digest()` and
    /// `d·G == W − X + λ·P_pub`, then `sk = x + d` (and `sk·G == Q`).
    pub fn combine(
        identity: &Identity,
        secret: &SecretValue,
        partial: &PartialKey,
        issuer: &KgcParams,
    ) -> Result<Self> {
        if identity.issuer != issuer.digest() {
            return Err(CryptoError::WrongIssuer);
        }
        let x = secret.x.as_nonzero_scalar();
        let l = lambda(identity, &partial.w, &issuer.p_pub);
        let lhs = ProjectivePoint::GENERATOR * partial.d;
        let x_pub = secret.public().to_projective();
        let rhs = partial.w.to_projective() - x_pub + issuer.p_pub.to_projective() * l;
        if lhs != rhs {
            return Err(CryptoError::PartialKeyCheckFailed);
        }
        let sk = Zeroizing::new(**x + partial.d);
        let sk = Option::<NonZeroScalar>::from(NonZeroScalar::new(*sk))
            .ok_or(CryptoError::InvalidScalar)?;
        let key = Self::from_scalar(identity.clone(), sk, partial.w);
        // Q = W + λ·P_pub = d·G + X, and sk·G must be that point.
        if key.q.to_projective() != lhs + x_pub {
            return Err(CryptoError::KeyMismatch);
        }
        Ok(key)
    }

    fn from_scalar(identity: Identity, sk: NonZeroScalar, w: PublicKey) -> Self {
        let sk = SigningKey::from(sk);
        let q = PublicKey::from(sk.verifying_key());
        Self { sk, q, w, identity }
    }

    /// Loads a stored key (`sk`: 32 bytes, non-zero, below the order); `Q = sk·G`.
    ///
    /// Without the issuer's `P_pub` this cannot check that `sk` matches `W`: prefer
    /// [`from_parts_checked`](Self::from_parts_checked), or call [`check`](Self::check).
    pub fn from_parts(identity: Identity, sk: &[u8], w: PublicKey) -> Result<Self> {
        Ok(Self::from_scalar(identity, scalar_from_bytes(sk)?, w))
    }

    /// [`from_parts`](Self::from_parts) followed by [`check`](Self::check) against the issuer
    /// params: the issuer digest matches and `sk·G == W + λ·P_pub`.
    pub fn from_parts_checked(
        identity: Identity,
        sk: &[u8],
        w: PublicKey,
        issuer: &KgcParams,
    ) -> Result<Self> {
        let key = Self::from_parts(identity, sk, w)?;
        key.check(issuer)?;
        Ok(key)
    }

    /// Checks the key against its issuer: `identity.issuer == issuer.digest()`
    /// ([`CryptoError::WrongIssuer`]) and `sk·G == W + λ·P_pub` ([`CryptoError::KeyMismatch`]),
    /// i.e. that clients deriving the key from the published (ID, W, P_pub) get this `Q`.
    pub fn check(&self, issuer: &KgcParams) -> Result<()> {
        if self.identity.issuer != issuer.digest() {
            return Err(CryptoError::WrongIssuer);
        }
        match try_derive_public_key(&self.identity, &self.w, &issuer.p_pub) {
            Ok(q) if q == self.q => Ok(()),
            _ => Err(CryptoError::KeyMismatch),
        }
    }

    /// `sk` as 32 big-endian bytes, for storing; handle with care.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        scalar_to_bytes(self.sk.as_nonzero_scalar())
    }

    /// The public key `Q`.
    pub fn public(&self) -> &PublicKey {
        &self.q
    }

    /// `W`, published in the key record.
    pub fn w(&self) -> &PublicKey {
        &self.w
    }

    /// The identity the key belongs to.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// ECDSA-P256-SHA256 (RFC 6979 nonce, low-S) over `lp("TP-SIG-v1") ‖ msg`, as `r ‖ s`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        ecdsa_sign(&self.sk, sig_digest(msg))
    }

    /// Decrypts what [`seal`] made for this entity (its `Q` and identity).
    pub fn open(&self, ciphertext: &[u8]) -> Result<Vec<u8>> {
        open_with(
            self.sk.as_nonzero_scalar(),
            &self.q,
            &self.identity,
            ciphertext,
        )
    }

    /// The entity key as a plain p256 signing key (e.g. for TLS with raw public keys). It
    /// signs without the `TP-SIG-v1` prefix: use it only for protocols with their own domain
    /// separation (TLS 1.3 CertificateVerify has one).
    pub fn to_p256_signing_key(&self) -> SigningKey {
        self.sk.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Encryption to an entity
// ---------------------------------------------------------------------------------------------

/// HKDF-SHA256(salt = none, IKM = ECDH x-coordinate,
/// info = `lp("TP-ENC-v1") ‖ lp(ID) ‖ lp(E) ‖ lp(Q)`) → 32-byte AES key ‖ 12-byte nonce.
fn ecies_cipher(
    shared_x: &FieldBytes,
    id: &[u8],
    e_bytes: &[u8],
    q: &PublicKey,
) -> (Aes256Gcm, Zeroizing<[u8; 12]>) {
    let mut info = lp(TAG_ENC);
    put_lp(&mut info, id);
    put_lp(&mut info, e_bytes);
    put_lp(&mut info, &point_to_bytes(q));
    let mut okm = Zeroizing::new([0u8; 44]);
    // 44 bytes is far below HKDF-SHA256's 8160-byte limit: expand cannot fail.
    let _ = Hkdf::<Sha256>::new(None, shared_x).expand(&info, &mut okm[..]);
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&okm[..32]);
    let cipher = Aes256Gcm::new(&aes_gcm::Key::<Aes256Gcm>::from(*key));
    let mut nonce = Zeroizing::new([0u8; 12]);
    nonce.copy_from_slice(&okm[32..]);
    (cipher, nonce)
}

/// Encrypts `plaintext` to the entity with public key `q` and identity `identity`.
///
/// ECIES: fresh ephemeral `e`, `E = e·G`, ECDH `e·Q`, HKDF-SHA256 with the info above, AES-256-GCM
/// with the derived nonce and AAD = `identity.encode()`. Output `E (33) ‖ ciphertext ‖ tag (16)`
/// ([`SEAL_OVERHEAD`] = 49 bytes more than the plaintext). The caller must have derived `q` for
/// `identity` ([`derive_public_key`]); a mismatch makes the entity's [`EntityKey::open`] fail.
pub fn seal(q: &PublicKey, identity: &Identity, plaintext: &[u8]) -> Result<Vec<u8>> {
    // The ephemeral key and ECDH by ring (a fraction of p256's cost; the key server seals one
    // partial key per enrollment); the test-vector path below does the same with p256.
    use ring::agreement::{ECDH_P256, EphemeralPrivateKey, UnparsedPublicKey, agree_ephemeral};
    let rng = ring::rand::SystemRandom::new();
    let e = EphemeralPrivateKey::generate(&ECDH_P256, &rng).map_err(|_| CryptoError::Rng)?;
    let e_public = e.compute_public_key().map_err(|_| CryptoError::Rng)?;
    let e_bytes = p256::EncodedPoint::from_bytes(e_public.as_ref())
        .map_err(|_| CryptoError::InvalidPoint)?
        .compress();
    let q_point = q.to_encoded_point(false);
    let shared = agree_ephemeral(
        e,
        &UnparsedPublicKey::new(&ECDH_P256, q_point.as_bytes()),
        |x| <[u8; 32]>::try_from(x).map(|x| Zeroizing::new(FieldBytes::from(x))),
    )
    .map_err(|_| CryptoError::InvalidPoint)?
    .map_err(|_| CryptoError::InvalidPoint)?;
    seal_finish(q, identity, plaintext, &shared, e_bytes.as_bytes())
}

/// [`seal`] with a given ephemeral secret (32 bytes), for test vectors only.
#[doc(hidden)]
pub fn seal_with_ephemeral(
    q: &PublicKey,
    identity: &Identity,
    plaintext: &[u8],
    eph: &[u8],
) -> Result<Vec<u8>> {
    seal_with_scalar(q, identity, plaintext, scalar_from_bytes(eph)?)
}

fn seal_with_scalar(
    q: &PublicKey,
    identity: &Identity,
    plaintext: &[u8],
    e: NonZeroScalar,
) -> Result<Vec<u8>> {
    let e = SecretKey::from(e);
    let e_bytes = point_to_bytes(&e.public_key());
    let shared = p256::ecdh::diffie_hellman(e.to_nonzero_scalar(), q.as_affine());
    seal_finish(q, identity, plaintext, shared.raw_secret_bytes(), &e_bytes)
}

/// HKDF, AES-GCM and the output `E ‖ ciphertext ‖ tag` from the ECDH x-coordinate.
fn seal_finish(
    q: &PublicKey,
    identity: &Identity,
    plaintext: &[u8],
    shared_x: &FieldBytes,
    e_bytes: &[u8],
) -> Result<Vec<u8>> {
    let id = identity.encode();
    let (cipher, nonce) = ecies_cipher(shared_x, &id, e_bytes, q);
    let body = cipher
        .encrypt(
            &Nonce::from(*nonce),
            Payload {
                msg: plaintext,
                aad: &id,
            },
        )
        .map_err(|_| CryptoError::Malformed("plaintext too long for AES-GCM"))?;
    let mut out = Vec::with_capacity(POINT_LEN + body.len());
    out.extend_from_slice(e_bytes);
    out.extend_from_slice(&body);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    fn ip4() -> IpAddr {
        "192.0.2.10".parse().unwrap()
    }

    fn enrol(kgc: &Kgc, name: &str, ip: IpAddr) -> (Identity, SecretValue, KeyRequest, PartialKey) {
        let id = Identity::new(name, ip, kgc.params()).unwrap();
        let sv = SecretValue::generate(&mut OsRng);
        let req = KeyRequest::new(id.clone(), &sv);
        let pk = kgc.extract(&req, &mut OsRng).unwrap();
        (id, sv, req, pk)
    }

    #[test]
    fn names() {
        assert_eq!(canonical_name(".").unwrap(), ".");
        assert_eq!(canonical_name("Example.COM").unwrap(), "example.com.");
        assert_eq!(
            canonical_name("www.example.com.").unwrap(),
            "www.example.com."
        );
        assert_eq!(canonical_name("_dns._udp.x.").unwrap(), "_dns._udp.x.");
        for bad in [
            "", "..", "a..b", ".a", "a b.", "-a.", "a-.", "é.", "a\\.b", "*.x.",
        ] {
            assert!(canonical_name(bad).is_err(), "{bad:?}");
        }
        let l63 = "a".repeat(63);
        assert!(canonical_name(&l63).is_ok());
        assert!(canonical_name(&"a".repeat(64)).is_err());
        // 4 labels of 63 + 3 dots = 255 > 253
        let long = [l63.as_str(); 4].join(".");
        assert!(canonical_name(&long).is_err());
        let ok = format!("{}.{}", [l63.as_str(); 3].join("."), "a".repeat(61));
        assert_eq!(ok.len(), 253);
        assert_eq!(canonical_name(&ok).unwrap().len(), 254);
    }

    #[test]
    fn within() {
        assert!(is_within("www.example.com.", "example.com."));
        assert!(is_within("example.com.", "example.com."));
        assert!(is_within("com.", "."));
        assert!(!is_within("wwwexample.com.", "example.com."));
        assert!(!is_within("example.com.", "www.example.com."));
    }

    #[test]
    fn full_flow_and_codecs() {
        let kgc = Kgc::setup("Example.com", &mut OsRng).unwrap();
        assert_eq!(kgc.params().name, "example.com.");
        assert_eq!(
            KgcParams::decode(&kgc.params().encode()).unwrap(),
            *kgc.params()
        );
        let (id, sv, req, pk) = enrol(&kgc, "www.example.com", ip4());
        assert_eq!(Identity::decode(&id.encode()).unwrap(), id);
        assert_eq!(KeyRequest::decode(&req.encode()).unwrap(), req);
        let pk2 = PartialKey::decode(&pk.encode()).unwrap();
        assert_eq!(pk2.w, pk.w);
        assert_eq!(pk2.encode(), pk.encode());

        let ek = EntityKey::combine(&id, &sv, &pk, kgc.params()).unwrap();
        let q = derive_public_key(&id, &pk.w, &kgc.params().p_pub);
        assert_eq!(*ek.public(), q);
        let sig = ek.sign(b"answer");
        verify(&q, b"answer", &sig).unwrap();
        assert_eq!(verify(&q, b"answez", &sig), Err(CryptoError::BadSignature));

        let ct = seal(&q, &id, b"secret").unwrap();
        assert_eq!(ct.len(), 6 + SEAL_OVERHEAD);
        assert_eq!(ek.open(&ct).unwrap(), b"secret");

        let sk = ek.secret_bytes();
        let back = EntityKey::from_parts(id.clone(), &*sk, *ek.w()).unwrap();
        assert_eq!(back.public(), ek.public());
        assert_eq!(back.identity(), ek.identity());
        back.check(kgc.params()).unwrap();
        let back2 = EntityKey::from_parts_checked(id.clone(), &*sk, *ek.w(), kgc.params()).unwrap();
        assert_eq!(back2.public(), ek.public());
        // A stored key whose W was altered loads, but fails the check against its issuer.
        let other_w = SecretValue::generate(&mut OsRng).public();
        let bad = EntityKey::from_parts(id.clone(), &*sk, other_w).unwrap();
        assert_eq!(bad.check(kgc.params()), Err(CryptoError::KeyMismatch));
        assert_eq!(
            EntityKey::from_parts_checked(id.clone(), &*sk, other_w, kgc.params()).unwrap_err(),
            CryptoError::KeyMismatch
        );
        assert_eq!(
            PublicKey::from(ek.to_p256_signing_key().verifying_key()),
            *ek.public()
        );

        let kgc2 = Kgc::from_secret_bytes("example.com.", &*kgc.secret_bytes()).unwrap();
        assert_eq!(kgc2.params(), kgc.params());
    }

    #[test]
    fn sign_prefix_is_plain_ecdsa_over_prefixed_message() {
        use p256::ecdsa::VerifyingKey;
        use p256::ecdsa::signature::Verifier;
        let kgc = Kgc::setup(".", &mut OsRng).unwrap();
        let ek = kgc.self_issue(ip4(), &mut OsRng).unwrap();
        let sig = ek.sign(b"m");
        let s = Signature::from_slice(&sig).unwrap();
        assert!(s.normalize_s().is_none(), "low-S");
        let vk = VerifyingKey::from(ek.public());
        vk.verify(&signed_message(b"m"), &s).unwrap();
        assert!(vk.verify(b"m", &s).is_err());
        // High-S twin of a valid signature is refused.
        let (r, sv) = s.split_scalars();
        let high = Signature::from_scalars(*r, -*sv).unwrap();
        let high: [u8; 64] = high.to_bytes().into();
        assert_eq!(
            verify(ek.public(), b"m", &high),
            Err(CryptoError::BadSignature)
        );
    }

    #[test]
    fn extract_checks() {
        let kgc = Kgc::setup("com.", &mut OsRng).unwrap();
        let other = Kgc::setup("com.", &mut OsRng).unwrap();
        let id = Identity::new("example.com.", ip4(), other.params()).unwrap();
        let sv = SecretValue::generate(&mut OsRng);
        let req = KeyRequest::new(id.clone(), &sv);
        assert_eq!(
            kgc.extract(&req, &mut OsRng).unwrap_err(),
            CryptoError::WrongIssuer
        );

        let id = Identity::new("example.com.", ip4(), kgc.params()).unwrap();
        let mut req = KeyRequest::new(id, &sv);
        req.pop[10] ^= 1;
        assert_eq!(
            kgc.extract(&req, &mut OsRng).unwrap_err(),
            CryptoError::BadProof
        );
        // A proof made for one identity does not carry over to another.
        let mut req = KeyRequest::new(Identity::new("a.com.", ip4(), kgc.params()).unwrap(), &sv);
        req.identity.name = "b.com.".into();
        assert_eq!(req.verify_pop(), Err(CryptoError::BadProof));
    }

    #[test]
    fn combine_checks() {
        let kgc = Kgc::setup("example.com.", &mut OsRng).unwrap();
        let (id, sv, _req, pk) = enrol(&kgc, "www.example.com.", ip4());
        let other_sv = SecretValue::generate(&mut OsRng);
        assert_eq!(
            EntityKey::combine(&id, &other_sv, &pk, kgc.params()).unwrap_err(),
            CryptoError::PartialKeyCheckFailed
        );
        let bad = PartialKey {
            w: pk.w,
            d: pk.d + Scalar::ONE,
        };
        assert_eq!(
            EntityKey::combine(&id, &sv, &bad, kgc.params()).unwrap_err(),
            CryptoError::PartialKeyCheckFailed
        );
        let other = Kgc::setup("example.com.", &mut OsRng).unwrap();
        assert_eq!(
            EntityKey::combine(&id, &sv, &pk, other.params()).unwrap_err(),
            CryptoError::WrongIssuer
        );
    }

    #[test]
    fn partial_key_sealed_to_x_opens_only_with_x_and_identity() {
        let kgc = Kgc::setup("example.com.", &mut OsRng).unwrap();
        let (id, sv, req, pk) = enrol(&kgc, "www.example.com.", ip4());
        let sealed = seal(&req.x, &id, &pk.encode()).unwrap();
        let opened = sv.open(&id, &sealed).unwrap();
        assert_eq!(opened.as_slice(), pk.encode().as_slice());
        let other = SecretValue::generate(&mut OsRng);
        assert_eq!(other.open(&id, &sealed), Err(CryptoError::Decrypt));
        let id2 = Identity::new("mail.example.com.", ip4(), kgc.params()).unwrap();
        assert_eq!(sv.open(&id2, &sealed), Err(CryptoError::Decrypt));
    }

    #[test]
    fn debug_hides_secrets() {
        let kgc = Kgc::setup(".", &mut OsRng).unwrap();
        let (id, sv, _req, pk) = enrol(&kgc, "a.", ip4());
        let ek = EntityKey::combine(&id, &sv, &pk, kgc.params()).unwrap();
        let ms = hex::encode(*kgc.secret_bytes());
        let x = hex::encode(*sv.to_bytes());
        let d = hex::encode(&pk.encode()[34..]);
        let sk = hex::encode(*ek.secret_bytes());
        let all = format!("{kgc:?} {kgc:#?} {sv:?} {pk:?} {ek:?} {ek:#?}");
        assert!(all.contains("[secret]"));
        for s in [ms, x, d, sk] {
            assert!(!all.to_lowercase().contains(&s));
        }
    }

    #[test]
    fn decoders_refuse_bad_input() {
        assert!(point_from_bytes(&[0u8; 33]).is_err());
        assert!(point_from_bytes(&[2u8; 32]).is_err());
        let g = PublicKey::from_affine(p256::AffinePoint::GENERATOR).unwrap();
        let unc = g.to_encoded_point(false);
        assert!(point_from_bytes(unc.as_bytes()).is_err());
        assert!(scalar_from_bytes(&[0u8; 32]).is_err());
        assert!(scalar_from_bytes(&[0xffu8; 32]).is_err());
        let p = KgcParams::new("x.", g).unwrap();
        let mut e = p.encode();
        e.push(0);
        assert_eq!(
            KgcParams::decode(&e),
            Err(CryptoError::Malformed("trailing bytes"))
        );
        let nc = KgcParams {
            name: "X.".into(),
            p_pub: g,
        };
        assert!(KgcParams::decode(&nc.encode()).is_err());
        let kgc = Kgc::setup(".", &mut OsRng).unwrap();
        let ek = kgc.self_issue(ip4(), &mut OsRng).unwrap();
        assert_eq!(ek.open(&[0u8; 10]), Err(CryptoError::Decrypt));
    }
}
