//! Resolving secret references (`env:NAME`, `file:/path`) on this node.

use raftgate_model::identity::SecretRef;

/// Largest secret file read.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;
/// Shortest secret accepted (HMAC keys below this are guessable).
pub const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error("cannot read secret file {path}: {source}")]
    File { path: String, source: std::io::Error },
    #[error("secret file {0} is larger than {MAX_SECRET_BYTES} bytes")]
    TooLarge(String),
    #[error("the secret from {0} is shorter than {MIN_SECRET_BYTES} bytes")]
    TooShort(String),
}

/// Reads the secret a reference names. A file's one trailing newline is
/// not part of the secret.
pub fn resolve(r: &SecretRef) -> Result<Vec<u8>, SecretError> {
    let (bytes, origin) = match r {
        SecretRef::Env(name) => {
            let v = std::env::var_os(name).ok_or_else(|| SecretError::EnvMissing(name.clone()))?;
            (v.into_encoded_bytes(), format!("env:{name}"))
        }
        SecretRef::File(path) => {
            let meta = std::fs::metadata(path).map_err(|source| SecretError::File { path: path.clone(), source })?;
            if meta.len() > MAX_SECRET_BYTES {
                return Err(SecretError::TooLarge(path.clone()));
            }
            let mut bytes = std::fs::read(path).map_err(|source| SecretError::File { path: path.clone(), source })?;
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
            }
            (bytes, format!("file:{path}"))
        }
    };
    if bytes.len() < MIN_SECRET_BYTES {
        return Err(SecretError::TooShort(origin));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_secret_loses_its_trailing_newline_and_short_secrets_are_refused() {
        let dir = std::env::temp_dir().join(format!("raftgate-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hs.key");
        std::fs::write(&path, format!("{}\n", "s".repeat(40))).unwrap();
        let r = SecretRef::File(path.display().to_string());
        assert_eq!(resolve(&r).unwrap(), "s".repeat(40).into_bytes());
        std::fs::write(&path, "short\n").unwrap();
        assert!(matches!(resolve(&r), Err(SecretError::TooShort(_))));
        let missing = SecretRef::Env("RAFTGATE_TEST_SURELY_UNSET_VARIABLE".into());
        assert!(matches!(resolve(&missing), Err(SecretError::EnvMissing(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
