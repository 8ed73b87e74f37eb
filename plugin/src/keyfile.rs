//! Files that hold keys: secrets are written 0600 and refused when readable by others;
//! public material (params, requests, responses) is plain text an operator can read.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::clpkc::{self, EntityKey, Identity, KeyRequest, Kgc, KgcParams, SecretValue};
use crate::record::KeyRecord;

/// A key file problem, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// I/O on the file failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause (not a `source`: the message already says it once).
        error: std::io::Error,
    },
    /// The file's content is wrong.
    #[error("{path}: {reason}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn bad(path: &Path, reason: impl Into<String>) -> KeyFileError {
    KeyFileError::Bad {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |error| KeyFileError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Write a secret file with mode 0600, never replacing an existing one.
pub fn write_secret(path: &Path, contents: &str) -> Result<(), KeyFileError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io(path))?;
    f.write_all(contents.as_bytes()).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Read a secret file, refusing one that group or others can read.
pub fn read_secret(path: &Path) -> Result<Zeroizing<String>, KeyFileError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path).map_err(io(path))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(bad(
                path,
                format!(
                    "permissions {:o} let others read a secret; run `chmod 600 {}`",
                    mode & 0o777,
                    path.display()
                ),
            ));
        }
    }
    Ok(Zeroizing::new(fs::read_to_string(path).map_err(io(path))?))
}

/// Write a public file (replacing it).
pub fn write_public(path: &Path, contents: &str) -> Result<(), KeyFileError> {
    fs::write(path, contents).map_err(io(path))
}

fn parse_toml<T: for<'de> Deserialize<'de>>(path: &Path, text: &str) -> Result<T, KeyFileError> {
    toml::from_str(text).map_err(|e| bad(path, e.to_string()))
}

fn hex_field(path: &Path, what: &str, s: &str) -> Result<Vec<u8>, KeyFileError> {
    hex::decode(s.trim()).map_err(|_| bad(path, format!("{what} is not hexadecimal")))
}

/// Params file: the public half of a KGC.
pub fn params_to_text(p: &KgcParams) -> String {
    format!(
        "# TwinPeaks key server params (public)\nname = \"{}\"\nparams = \"{}\"\n",
        p.name,
        hex::encode(p.encode())
    )
}

#[derive(Deserialize)]
struct ParamsFile {
    name: String,
    params: String,
}

/// Read a params file.
pub fn read_params(path: &Path) -> Result<KgcParams, KeyFileError> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    let f: ParamsFile = parse_toml(path, &text)?;
    let p = KgcParams::decode(&hex_field(path, "params", &f.params)?)
        .map_err(|e| bad(path, format!("params: {e}")))?;
    if clpkc::canonical_name(&f.name).ok().as_deref() != Some(p.name.as_str()) {
        return Err(bad(
            path,
            format!("name {} does not match the params' name {}", f.name, p.name),
        ));
    }
    Ok(p)
}

#[derive(Serialize, Deserialize)]
struct KgcFile {
    name: String,
    master_secret: String,
}

/// Write a KGC master secret (0600).
pub fn write_kgc(path: &Path, kgc: &Kgc) -> Result<(), KeyFileError> {
    let text = Zeroizing::new(format!(
        "# TwinPeaks KGC master secret: never share, never serve\nname = \"{}\"\nmaster_secret = \"{}\"\n",
        kgc.params().name,
        hex::encode(kgc.secret_bytes().as_slice())
    ));
    write_secret(path, &text)
}

/// Read a KGC master secret.
pub fn read_kgc(path: &Path) -> Result<Kgc, KeyFileError> {
    let text = read_secret(path)?;
    let f: KgcFile = parse_toml(path, &text)?;
    let ms = Zeroizing::new(hex_field(path, "master_secret", &f.master_secret)?);
    Kgc::from_secret_bytes(&f.name, &ms).map_err(|e| bad(path, e.to_string()))
}

#[derive(Serialize, Deserialize)]
struct EntityFile {
    name: String,
    ip: IpAddr,
    issuer_params: String,
    w: String,
    private_key: String,
}

/// Write an entity's private key (0600), with the params of the key server that issued it.
pub fn write_entity(path: &Path, key: &EntityKey, issuer: &KgcParams) -> Result<(), KeyFileError> {
    let id = key.identity();
    let text = Zeroizing::new(format!(
        "# TwinPeaks private key of {} at {}: keep secret\nname = \"{}\"\nip = \"{}\"\nissuer_params = \"{}\"\nw = \"{}\"\nprivate_key = \"{}\"\n",
        id.name,
        id.ip,
        id.name,
        id.ip,
        hex::encode(issuer.encode()),
        hex::encode(clpkc::point_to_bytes(key.w())),
        hex::encode(key.secret_bytes().as_slice())
    ));
    write_secret(path, &text)
}

/// Read an entity's private key and its issuer's params; checks that the key matches its
/// public derivation.
pub fn read_entity(path: &Path) -> Result<(EntityKey, KgcParams), KeyFileError> {
    let text = read_secret(path)?;
    let f: EntityFile = parse_toml(path, &text)?;
    let issuer = KgcParams::decode(&hex_field(path, "issuer_params", &f.issuer_params)?)
        .map_err(|e| bad(path, format!("issuer_params: {e}")))?;
    let id = Identity::new(&f.name, f.ip, &issuer).map_err(|e| bad(path, e.to_string()))?;
    let w = clpkc::point_from_bytes(&hex_field(path, "w", &f.w)?)
        .map_err(|e| bad(path, format!("w: {e}")))?;
    let sk = Zeroizing::new(hex_field(path, "private_key", &f.private_key)?);
    let key =
        EntityKey::from_parts_checked(id, &sk, w, &issuer).map_err(|e| bad(path, e.to_string()))?;
    Ok((key, issuer))
}

#[derive(Serialize, Deserialize)]
struct SecretValueFile {
    name: String,
    ip: IpAddr,
    secret_value: String,
}

/// Write an entity's secret value `x` (0600).
pub fn write_secret_value(path: &Path, id: &Identity, x: &SecretValue) -> Result<(), KeyFileError> {
    let text = Zeroizing::new(format!(
        "# TwinPeaks secret value of {} at {}: keep secret until finalized\nname = \"{}\"\nip = \"{}\"\nsecret_value = \"{}\"\n",
        id.name,
        id.ip,
        id.name,
        id.ip,
        hex::encode(x.to_bytes().as_slice())
    ));
    write_secret(path, &text)
}

/// Read an entity's secret value.
pub fn read_secret_value(path: &Path) -> Result<SecretValue, KeyFileError> {
    let text = read_secret(path)?;
    let f: SecretValueFile = parse_toml(path, &text)?;
    let x = Zeroizing::new(hex_field(path, "secret_value", &f.secret_value)?);
    SecretValue::from_bytes(&x).map_err(|e| bad(path, e.to_string()))
}

#[derive(Serialize, Deserialize)]
struct RequestFile {
    name: String,
    ip: IpAddr,
    request: String,
}

/// A key request as a public text file (like a CSR).
pub fn request_to_text(req: &KeyRequest) -> String {
    format!(
        "# TwinPeaks key request (public): the issuing key server checks it and answers with a partial key\nname = \"{}\"\nip = \"{}\"\nrequest = \"{}\"\n",
        req.identity.name,
        req.identity.ip,
        hex::encode(req.encode())
    )
}

/// Read a key request and check its proof of possession.
pub fn read_request(path: &Path) -> Result<KeyRequest, KeyFileError> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    let f: RequestFile = parse_toml(path, &text)?;
    let req = KeyRequest::decode(&hex_field(path, "request", &f.request)?)
        .map_err(|e| bad(path, format!("request: {e}")))?;
    if req.identity.ip != f.ip
        || clpkc::canonical_name(&f.name).ok().as_deref() != Some(req.identity.name.as_str())
    {
        return Err(bad(path, "name/ip lines do not match the encoded request"));
    }
    req.verify_pop()
        .map_err(|e| bad(path, format!("proof of possession: {e}")))?;
    Ok(req)
}

/// The response to a key request (public): the record as issued and the partial key `(W, d)`
/// sealed to the requester's `X` (ECIES, identity bound, [`clpkc::seal`]), so it may travel
/// over any channel; only the holder of `x` can open it.
pub fn response_to_text(
    req: &KeyRequest,
    issuer: &KgcParams,
    sealed_partial_key: &[u8],
    record: &KeyRecord,
) -> String {
    let (name, ip) = (&req.identity.name, req.identity.ip);
    format!(
        "# TwinPeaks response to the key request of {name} at {ip}; the partial key is sealed to\n# the requester's X: finish with `tp finalize`\nname = \"{name}\"\nip = \"{ip}\"\nissuer_params = \"{}\"\nsealed_partial_key = \"{}\"\nrecord = \"{record}\"\n",
        hex::encode(issuer.encode()),
        hex::encode(sealed_partial_key)
    )
}

#[derive(Deserialize)]
struct ResponseFile {
    name: String,
    ip: IpAddr,
    issuer_params: String,
    sealed_partial_key: String,
}

/// A response file's fields, as [`parse_response`] reads them.
pub struct Response {
    /// The requester's name, as written.
    pub name: String,
    /// Its IP.
    pub ip: IpAddr,
    /// The issuer's params, encoded ([`KgcParams::decode`]).
    pub issuer_params: Vec<u8>,
    /// The partial key sealed to the requester ([`SecretValue::open`]).
    pub sealed_partial_key: Vec<u8>,
}

/// Parse the text of the response file `path` (made by [`response_to_text`]).
pub fn parse_response(path: &Path, text: &str) -> Result<Response, KeyFileError> {
    let f: ResponseFile = parse_toml(path, text)?;
    let issuer_params = hex::decode(&f.issuer_params).map_err(|_| bad(path, "issuer_params"))?;
    let sealed_partial_key = hex::decode(&f.sealed_partial_key)
        .map_err(|_| bad(path, "sealed_partial_key is not hex"))?;
    Ok(Response {
        name: f.name,
        ip: f.ip,
        issuer_params,
        sealed_partial_key,
    })
}
