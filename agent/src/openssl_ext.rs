//! The few libssl calls the `openssl` crate does not wrap, each a thin safe function:
//!
//! - `SSL_set_session` for a session built from DER (it has no context of another `SSL_CTX`);
//! - `DTLSv1_handle_timeout`, `SSL_get_extms_support` and `SSL_clear_mode`, which are
//!   `SSL_ctrl` macros in C;
//! - `SSL_SESSION_get0_ticket` / `SSL_SESSION_get_ticket_lifetime_hint` (the agent exports a
//!   session ticket, RFC 5077) and `SSL_set_options` (the device offers no ticket extension
//!   when it resumes by session ID);
//! - `EVP_KDF_fetch`/`EVP_MAC_fetch`, to fetch once at boot what libssl would fetch by name in
//!   the first handshake;
//! - TLS 1.3: `SSL_get_early_data_status` (was 0-RTT data accepted) and `SSL_get_peer_tmp_key`
//!   (did the server send a key share: psk_dhe_ke, or none: psk_ke).
#![allow(unsafe_code)]

use std::ffi::c_int;
use std::sync::OnceLock;

use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::ssl::{SslRef, SslSessionRef};
use openssl_sys as sys;

// SSL_ctrl commands behind C macros (openssl/ssl.h of 3.0).
const DTLS_CTRL_HANDLE_TIMEOUT: c_int = 74;
const SSL_CTRL_GET_EXTMS_SUPPORT: c_int = 122;
const SSL_CTRL_CLEAR_MODE: c_int = 78;
const SSL_MODE_AUTO_RETRY: std::ffi::c_long = 0x4;

unsafe extern "C" {
    fn SSL_SESSION_get0_ticket(s: *const sys::SSL_SESSION, tick: *mut *const u8, len: *mut usize);
    fn SSL_SESSION_get_ticket_lifetime_hint(s: *const sys::SSL_SESSION) -> std::ffi::c_ulong;
    fn SSL_set_options(s: *mut sys::SSL, op: u64) -> u64;
    fn SSL_get_early_data_status(s: *const sys::SSL) -> c_int;
}

/// `SSL_EARLY_DATA_ACCEPTED` (openssl/ssl.h of 3.0).
const SSL_EARLY_DATA_ACCEPTED: c_int = 2;

/// Puts a session on `ssl` for resumption.
///
/// Sessions given here are built by [`crate::session`] from DER, so they carry no ex-data of
/// another `SslContext` (the reason `SslRef::set_session` is `unsafe`).
pub fn set_imported_session(ssl: &mut SslRef, session: &SslSessionRef) -> Result<(), ErrorStack> {
    // SAFETY: see above; SSL_set_session up-refs the session.
    unsafe { ssl.set_session(session) }
}

/// `SSL_clear_mode(ssl, SSL_MODE_AUTO_RETRY)`: `SSL_read` then returns (want-read) after a
/// record that carries no application data, such as a NewSessionTicket, instead of reading on
/// until data or the socket's timeout. (The `openssl` crate can set modes, not clear them.)
pub fn no_auto_retry(ssl: &SslRef) {
    // SAFETY: `ssl` is a live SSL; this ctrl takes no pointer argument.
    unsafe {
        sys::SSL_ctrl(
            ssl.as_ptr(),
            SSL_CTRL_CLEAR_MODE,
            SSL_MODE_AUTO_RETRY,
            std::ptr::null_mut(),
        );
    }
}

/// `DTLSv1_handle_timeout`: retransmits the last flight if its timer has run out.
/// Returns Ok(true) when a retransmission was sent.
pub fn dtls_handle_timeout(ssl: &SslRef) -> Result<bool, ErrorStack> {
    // SAFETY: `ssl` is a live SSL; this ctrl takes no pointer argument.
    let ret = unsafe {
        sys::SSL_ctrl(
            ssl.as_ptr(),
            DTLS_CTRL_HANDLE_TIMEOUT,
            0,
            std::ptr::null_mut(),
        )
    };
    match ret {
        r if r > 0 => Ok(true),
        0 => Ok(false),
        _ => Err(ErrorStack::get()),
    }
}

/// The session ticket (RFC 5077) the server issued for `session`, with its lifetime hint in
/// seconds; `None` when it issued none.
pub fn session_ticket(session: &SslSessionRef) -> Option<(Vec<u8>, u64)> {
    let mut tick: *const u8 = std::ptr::null();
    let mut len: usize = 0;
    // SAFETY: `session` is a live SSL_SESSION; get0 writes a pointer into the session's own
    // buffer (valid while the session lives, which spans this function) and its length.
    let (ticket, hint) = unsafe {
        SSL_SESSION_get0_ticket(session.as_ptr(), &mut tick, &mut len);
        if tick.is_null() || len == 0 {
            return None;
        }
        (
            std::slice::from_raw_parts(tick, len).to_vec(),
            SSL_SESSION_get_ticket_lifetime_hint(session.as_ptr()),
        )
    };
    // `unsigned long` is 64 bits here and 32 on some targets.
    #[allow(clippy::useless_conversion)]
    Some((ticket, u64::from(hint)))
}

/// Sets `SSL_OP_NO_TICKET` on one connection (the `openssl` crate sets options only on a
/// context): its ClientHello then carries no SessionTicket extension.
pub fn no_ticket(ssl: &mut SslRef) {
    // SAFETY: `ssl` is a live SSL; SSL_set_options only ORs the bits into its options.
    unsafe {
        SSL_set_options(ssl.as_ptr(), openssl::ssl::SslOptions::NO_TICKET.bits());
    }
}

/// Whether the server accepted the early data (TLS 1.3 0-RTT) of this connection.
pub fn early_data_accepted(ssl: &SslRef) -> bool {
    // SAFETY: `ssl` is a live SSL; the call only reads its state.
    unsafe { SSL_get_early_data_status(ssl.as_ptr()) == SSL_EARLY_DATA_ACCEPTED }
}

/// Whether the server sent an ephemeral key share in this handshake (TLS 1.3: a resumption
/// by psk_dhe_ke, or a full handshake; none: psk_ke, no (EC)DHE at all).
pub fn server_key_share(ssl: &SslRef) -> bool {
    let mut key: *mut sys::EVP_PKEY = std::ptr::null_mut();
    // SAFETY: `ssl` is a live SSL; on success the call stores a new reference to the peer's
    // ephemeral key in `key`, which we release at once.
    unsafe {
        let ok = sys::SSL_get_peer_tmp_key(ssl.as_ptr(), &mut key) > 0;
        if !key.is_null() {
            sys::EVP_PKEY_free(key);
        }
        ok && !key.is_null()
    }
}

/// `SSL_get_extms_support`: whether the handshake used the extended master secret (RFC 7627).
pub fn extended_master_secret(ssl: &SslRef) -> Option<bool> {
    // SAFETY: `ssl` is a live SSL; this ctrl takes no pointer argument.
    let ret = unsafe {
        sys::SSL_ctrl(
            ssl.as_ptr(),
            SSL_CTRL_GET_EXTMS_SUPPORT,
            0,
            std::ptr::null_mut(),
        )
    };
    match ret {
        1 => Some(true),
        0 => Some(false),
        _ => None,
    }
}

/// Fetches, once per process, the OpenSSL 3 algorithms a TLS 1.2 / DTLS 1.2 handshake looks up
/// by name only when it first needs them — the TLS 1.2 PRF (`TLS1-PRF`, fetched at every
/// key derivation) and the `HMAC` it runs on — and keeps them for the life of the process.
///
/// OpenSSL 3 builds the method store for an operation (all of its providers' KDFs, say) on the
/// first fetch and caches it; later fetches are a table lookup. Without this, that one-time
/// work (about 0.25 M instructions) lands in the first session's setup. (`SSL_CTX_new` already
/// pre-fetches ciphers and digests the same way; the OpenSSL 3 migration guide recommends
/// explicit fetching for the rest.) The device calls it at boot, in both modes.
pub fn prefetch_algorithms() -> Result<(), ErrorStack> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        // SAFETY: NUL-terminated names, the default library context (null) and no property
        // query (null) are valid arguments. The returned references are deliberately never
        // freed: they keep the fetched methods for the process's lifetime.
        unsafe {
            let kdf =
                sys::EVP_KDF_fetch(std::ptr::null_mut(), c"TLS1-PRF".as_ptr(), std::ptr::null());
            let mac = sys::EVP_MAC_fetch(std::ptr::null_mut(), c"HMAC".as_ptr(), std::ptr::null());
            !kdf.is_null() && !mac.is_null()
        }
    });
    if ok { Ok(()) } else { Err(ErrorStack::get()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_helpers_on_fresh_ssl() {
        let ctx = openssl::ssl::SslContext::builder(openssl::ssl::SslMethod::dtls_client())
            .unwrap()
            .build();
        let ssl = openssl::ssl::Ssl::new(&ctx).unwrap();
        // No handshake yet: EMS unknown, no timer running.
        assert_eq!(extended_master_secret(&ssl), None);
        assert!(!dtls_handle_timeout(&ssl).unwrap_or(false));
    }
}
