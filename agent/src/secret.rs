//! Secret files (pairing keys, the device's private key, a config holding a pairing key): read
//! through one function that refuses a file its group or others may read, as the key server
//! does with its key files, and returns the bytes in a buffer wiped when dropped.

use std::io::Read;
use std::path::Path;

use thiserror::Error;
use zeroize::Zeroizing;

/// A secret file that cannot be used.
#[derive(Debug, Error)]
#[error("{path}: {reason}")]
pub struct SecretFileError {
    /// The file.
    pub path: String,
    /// Why.
    pub reason: String,
}

fn fail(path: &Path, reason: impl Into<String>) -> SecretFileError {
    SecretFileError {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// A file's text and its permission bits (0 where the system has none).
pub(crate) struct FileText {
    /// The text, wiped when dropped.
    pub text: Zeroizing<String>,
    mode: u32,
}

impl FileText {
    /// Refuses the file if group or others may read or write it: it holds `what`.
    pub fn refuse_loose(&self, path: &Path, what: &str) -> Result<(), SecretFileError> {
        if self.mode & 0o077 != 0 {
            return Err(fail(
                path,
                format!(
                    "holds {what} but its permissions {:o} let others read it; run `chmod 600 {}`",
                    self.mode & 0o777,
                    path.display()
                ),
            ));
        }
        Ok(())
    }
}

/// Reads a whole UTF-8 file into a buffer wiped on drop, with the mode of the opened file.
pub(crate) fn read_text(path: &Path) -> Result<FileText, SecretFileError> {
    let mut f = std::fs::File::open(path).map_err(|e| fail(path, format!("cannot read: {e}")))?;
    // The mode of the file opened, not of whatever the path names a moment later.
    let meta = f
        .metadata()
        .map_err(|e| fail(path, format!("cannot read: {e}")))?;
    #[cfg(unix)]
    let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
    #[cfg(not(unix))]
    let mode = 0;
    // Room for the whole file up front: no reallocation leaves a copy behind.
    let size = usize::try_from(meta.len()).unwrap_or(0).min(1 << 20);
    let mut bytes = Zeroizing::new(Vec::with_capacity(size + 1));
    f.read_to_end(&mut bytes)
        .map_err(|e| fail(path, format!("cannot read: {e}")))?;
    let text = String::from_utf8(std::mem::take(&mut *bytes)).map_err(|e| {
        // The bytes go back into a wiped buffer before the error is reported.
        *bytes = e.into_bytes();
        fail(path, "not UTF-8 text")
    })?;
    Ok(FileText {
        text: Zeroizing::new(text),
        mode,
    })
}

/// Reads a secret file that only its owner may read (mode 0600 or stricter).
pub fn read_secret(path: &Path, what: &str) -> Result<Zeroizing<String>, SecretFileError> {
    let file = read_text(path)?;
    file.refuse_loose(path, what)?;
    Ok(file.text)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn loose_modes_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.hex");
        std::fs::write(&p, "secret").unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660, 0o602] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = read_secret(&p, "a pairing key").unwrap_err().to_string();
            assert!(
                e.contains(&format!("permissions {mode:o}")) && e.contains("chmod 600"),
                "{e}"
            );
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(&*read_secret(&p, "a pairing key").unwrap(), "secret");
        }
        let missing = read_secret(&dir.path().join("nope"), "x").unwrap_err();
        assert!(missing.to_string().contains("cannot read"), "{missing}");
    }
}
