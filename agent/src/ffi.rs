//! The audited signing hook, and nothing else: a signing key whose ECDSA `sign` forwards the
//! digest to a callback (the device), built on a custom `EC_KEY_METHOD` (deprecated in OpenSSL
//! 3.0 but present, and the only hook that lets libssl's own CertificateVerify code call out).
//!
//! The other libssl calls the `openssl` crate does not wrap are in [`crate::openssl_ext`]; the
//! benchmarks' probes (counting allocator, OpenSSL memory hooks, CPU clocks) in `measure`,
//! built only with the `measure` feature.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_long, c_uint, c_void};
use std::sync::OnceLock;

use foreign_types::{ForeignType, ForeignTypeRef};
use openssl::ec::EcKeyRef;
use openssl::ecdsa::EcdsaSig;
use openssl::error::ErrorStack;
use openssl::pkey::{PKey, Private, Public};
use openssl_sys as sys;

/// The device's signing service as seen by libssl: digest in, DER ECDSA signature out.
/// `None` makes the handshake fail (the device refused or did not answer).
pub type RemoteSigner = dyn Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync;

#[repr(C)]
struct EcKeyMethod {
    _opaque: [u8; 0],
}

type SignFn = unsafe extern "C" fn(
    c_int,
    *const u8,
    c_int,
    *mut u8,
    *mut c_uint,
    *const sys::BIGNUM,
    *const sys::BIGNUM,
    *mut sys::EC_KEY,
) -> c_int;
type SignSetupFn = unsafe extern "C" fn(
    *mut sys::EC_KEY,
    *mut sys::BN_CTX,
    *mut *mut sys::BIGNUM,
    *mut *mut sys::BIGNUM,
) -> c_int;
type SignSigFn = unsafe extern "C" fn(
    *const u8,
    c_int,
    *const sys::BIGNUM,
    *const sys::BIGNUM,
    *mut sys::EC_KEY,
) -> *mut sys::ECDSA_SIG;

const CRYPTO_EX_INDEX_EC_KEY: c_int = 8;
/// DER ECDSA signature on P-256 is at most 72 bytes; libssl gives at least ECDSA_size().
const MAX_P256_DER_SIG: usize = 72;

unsafe extern "C" {
    fn EC_KEY_OpenSSL() -> *const EcKeyMethod;
    fn EC_KEY_METHOD_new(meth: *const EcKeyMethod) -> *mut EcKeyMethod;
    fn EC_KEY_METHOD_get_sign(
        meth: *const EcKeyMethod,
        psign: *mut Option<SignFn>,
        psign_setup: *mut Option<SignSetupFn>,
        psign_sig: *mut Option<SignSigFn>,
    );
    fn EC_KEY_METHOD_set_sign(
        meth: *mut EcKeyMethod,
        sign: Option<SignFn>,
        sign_setup: Option<SignSetupFn>,
        sign_sig: Option<SignSigFn>,
    );
    fn EC_KEY_set_method(key: *mut sys::EC_KEY, meth: *const EcKeyMethod) -> c_int;
    fn EC_KEY_set_ex_data(key: *mut sys::EC_KEY, idx: c_int, arg: *mut c_void) -> c_int;
    fn EC_KEY_get_ex_data(key: *const sys::EC_KEY, idx: c_int) -> *mut c_void;
}

/// The method table and ex-data slot, made once per process and never freed (process-lifetime
/// statics, as OpenSSL's own methods are).
struct Hook {
    method: usize,
    ex_index: c_int,
}

fn hook() -> Result<&'static Hook, ErrorStack> {
    static HOOK: OnceLock<Option<Hook>> = OnceLock::new();
    let hook = HOOK.get_or_init(|| {
        // SAFETY: EC_KEY_OpenSSL returns a static table; EC_KEY_METHOD_new copies it into a new
        // allocation that we own and deliberately keep for the process lifetime. The get/set
        // calls write/read only through the valid pointers given.
        unsafe {
            let method = EC_KEY_METHOD_new(EC_KEY_OpenSSL());
            if method.is_null() {
                return None;
            }
            let mut sign: Option<SignFn> = None;
            let mut setup: Option<SignSetupFn> = None;
            let mut sign_sig: Option<SignSigFn> = None;
            EC_KEY_METHOD_get_sign(method, &mut sign, &mut setup, &mut sign_sig);
            EC_KEY_METHOD_set_sign(method, Some(remote_sign), setup, Some(remote_sign_sig));
            let ex_index = sys::CRYPTO_get_ex_new_index(
                CRYPTO_EX_INDEX_EC_KEY,
                0,
                std::ptr::null_mut(),
                None,
                None,
                Some(free_signer),
            );
            if ex_index < 0 {
                return None;
            }
            Some(Hook {
                method: method as usize,
                ex_index,
            })
        }
    });
    hook.as_ref().ok_or_else(ErrorStack::get)
}

/// Calls the signer stored on `key` and returns its DER signature.
///
/// SAFETY (caller): `key` is an EC_KEY made by [`remote_signing_key`] (or any EC_KEY: the slot
/// is then empty and we return None) and `dgst` points to `dlen` readable bytes.
unsafe fn call_signer(dgst: *const u8, dlen: c_int, key: *mut sys::EC_KEY) -> Option<Vec<u8>> {
    let hook = hook().ok()?;
    let len = usize::try_from(dlen).ok()?;
    if dgst.is_null() || key.is_null() {
        return None;
    }
    // SAFETY: the slot holds a `*mut Box<RemoteSigner>` set by remote_signing_key and freed only
    // by free_signer when the EC_KEY itself is freed, which cannot happen during a sign call.
    let slot = unsafe { EC_KEY_get_ex_data(key, hook.ex_index) } as *const Box<RemoteSigner>;
    if slot.is_null() {
        return None;
    }
    // SAFETY: libssl passes a digest buffer of `dlen` bytes.
    let digest = unsafe { std::slice::from_raw_parts(dgst, len) };
    // SAFETY: see above; shared reference only, the signer is Sync.
    let signer = unsafe { &*slot };
    // A panic must not unwind into C.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| signer(digest)))
        .ok()
        .flatten()
}

unsafe extern "C" fn remote_sign(
    _type: c_int,
    dgst: *const u8,
    dlen: c_int,
    sig: *mut u8,
    siglen: *mut c_uint,
    _kinv: *const sys::BIGNUM,
    _r: *const sys::BIGNUM,
    eckey: *mut sys::EC_KEY,
) -> c_int {
    // SAFETY: arguments come from ECDSA_sign_ex, which guarantees the contract of call_signer.
    let Some(der) = (unsafe { call_signer(dgst, dlen, eckey) }) else {
        return 0;
    };
    if sig.is_null() || siglen.is_null() || der.len() > MAX_P256_DER_SIG {
        return 0;
    }
    // SAFETY: ECDSA_sign's caller provides `sig` of at least ECDSA_size(eckey) = 72 bytes for
    // P-256 (the only curve we build keys for); we write at most 72.
    unsafe {
        std::ptr::copy_nonoverlapping(der.as_ptr(), sig, der.len());
        *siglen = der.len() as c_uint;
    }
    1
}

unsafe extern "C" fn remote_sign_sig(
    dgst: *const u8,
    dlen: c_int,
    _kinv: *const sys::BIGNUM,
    _r: *const sys::BIGNUM,
    eckey: *mut sys::EC_KEY,
) -> *mut sys::ECDSA_SIG {
    // SAFETY: arguments come from ECDSA_do_sign_ex, which guarantees the contract of call_signer.
    let Some(der) = (unsafe { call_signer(dgst, dlen, eckey) }) else {
        return std::ptr::null_mut();
    };
    match EcdsaSig::from_der(&der) {
        // The caller takes ownership of the returned ECDSA_SIG.
        Ok(sig) => into_raw(sig),
        Err(_) => std::ptr::null_mut(),
    }
}

/// Gives up ownership of `sig` to C.
fn into_raw(sig: EcdsaSig) -> *mut sys::ECDSA_SIG {
    let ptr = sig.as_ptr();
    std::mem::forget(sig);
    ptr
}

unsafe extern "C" fn free_signer(
    _parent: *mut c_void,
    ptr: *mut c_void,
    _ad: *mut sys::CRYPTO_EX_DATA,
    _idx: c_int,
    _argl: c_long,
    _argp: *mut c_void,
) {
    if !ptr.is_null() {
        // SAFETY: the only value ever stored in this slot is Box::into_raw(Box<Box<RemoteSigner>>)
        // from remote_signing_key; OpenSSL calls this once when the EC_KEY is freed.
        drop(unsafe { Box::from_raw(ptr as *mut Box<RemoteSigner>) });
    }
}

/// A P-256 key holding only `public` whose ECDSA signatures are made by `signer`.
///
/// It is typed `Private` because libssl signs with it; it has no private scalar at all.
pub fn remote_signing_key(
    public: &EcKeyRef<Public>,
    signer: Box<RemoteSigner>,
) -> Result<PKey<Private>, ErrorStack> {
    let hook = hook()?;
    // SAFETY: every pointer below is either checked for NULL or borrowed from a live openssl
    // object (`public`). The new EC_KEY is owned by `key` right after creation, so it is freed
    // on every error path; the boxed signer is owned by the EC_KEY's ex-data slot from the
    // moment EC_KEY_set_ex_data succeeds, and by us (dropped) if it fails.
    unsafe {
        let raw = sys::EC_KEY_new();
        if raw.is_null() {
            return Err(ErrorStack::get());
        }
        let key = openssl::ec::EcKey::<Private>::from_ptr(raw);
        if EC_KEY_set_method(raw, hook.method as *const EcKeyMethod) != 1
            || sys::EC_KEY_set_group(raw, sys::EC_KEY_get0_group(public.as_ptr())) != 1
            || sys::EC_KEY_set_public_key(raw, sys::EC_KEY_get0_public_key(public.as_ptr())) != 1
        {
            return Err(ErrorStack::get());
        }
        let slot = Box::into_raw(Box::new(signer));
        if EC_KEY_set_ex_data(raw, hook.ex_index, slot as *mut c_void) != 1 {
            drop(Box::from_raw(slot));
            return Err(ErrorStack::get());
        }
        PKey::from_ec_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::sign::{Signer, Verifier};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn pair() -> (EcKey<Private>, EcKey<Public>) {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let sk = EcKey::generate(&group).unwrap();
        let pk = EcKey::from_public_key(&group, sk.public_key()).unwrap();
        (sk, pk)
    }

    #[test]
    fn remote_key_signs_through_callback_and_verifies() {
        let (sk, pk) = pair();
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let remote = remote_signing_key(
            &pk,
            Box::new(move |digest| {
                seen.fetch_add(1, Ordering::SeqCst);
                assert_eq!(digest.len(), 32);
                EcdsaSig::sign(digest, &sk).ok()?.to_der().ok()
            }),
        )
        .unwrap();
        let mut signer = Signer::new(MessageDigest::sha256(), &remote).unwrap();
        signer.update(b"transcript").unwrap();
        let sig = signer.sign_to_vec().unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let pkey = PKey::from_ec_key(pk).unwrap();
        let mut verifier = Verifier::new(MessageDigest::sha256(), &pkey).unwrap();
        verifier.update(b"transcript").unwrap();
        assert!(verifier.verify(&sig).unwrap());
    }

    #[test]
    fn refusing_signer_fails_the_signature() {
        let (_sk, pk) = pair();
        let remote = remote_signing_key(&pk, Box::new(|_| None)).unwrap();
        let mut signer = Signer::new(MessageDigest::sha256(), &remote).unwrap();
        signer.update(b"x").unwrap();
        assert!(signer.sign_to_vec().is_err());
    }

    #[test]
    fn oversized_signature_is_rejected() {
        let (_sk, pk) = pair();
        let remote = remote_signing_key(&pk, Box::new(|_| Some(vec![0x30; 200]))).unwrap();
        let mut signer = Signer::new(MessageDigest::sha256(), &remote).unwrap();
        signer.update(b"x").unwrap();
        assert!(signer.sign_to_vec().is_err());
    }

    #[test]
    fn signer_is_dropped_with_the_key() {
        let (_sk, pk) = pair();
        let token = Arc::new(());
        let held = token.clone();
        let remote = remote_signing_key(
            &pk,
            Box::new(move |_| {
                let _ = &held;
                None
            }),
        )
        .unwrap();
        assert_eq!(Arc::strong_count(&token), 2);
        drop(remote);
        assert_eq!(Arc::strong_count(&token), 1);
    }
}
