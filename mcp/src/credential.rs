//! The agent's credential: from an environment variable or from a file readable only by its
//! owner. It is held in a [`Credential`] whose `Debug` and `Display` never show it.

use std::path::{Path, PathBuf};

/// The agent's Bearer credential (a JWT issued by the companion). Never printed.
#[derive(Clone)]
pub struct Credential(String);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

impl std::fmt::Display for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why no credential could be loaded. No variant carries the credential.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// Neither the variable nor the file was given.
    #[error(
        "no agent credential: set KMS_AGENT_CREDENTIAL to the agent's JWT, or \
         KMS_AGENT_CREDENTIAL_FILE (--credential-file) to a file holding it, readable only by \
         you (chmod 600)"
    )]
    Missing,
    /// Both were given.
    #[error("both KMS_AGENT_CREDENTIAL and a credential file were given: set only one of them")]
    Both,
    /// The file could not be read.
    #[error("cannot read the credential file {path}: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file may be read by others than its owner.
    #[error(
        "the credential file {path} is readable by its group or by others (mode {mode:04o}): \
         make it readable only by you (chmod 600 {path})",
        path = path.display()
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The credential is empty.
    #[error("the agent credential ({source_name}) is empty")]
    Empty {
        /// Where it came from.
        source_name: String,
    },
}

impl Credential {
    /// A credential from a string (surrounding whitespace trimmed).
    pub fn new(value: &str, source_name: &str) -> Result<Self, CredentialError> {
        let v = value.trim();
        if v.is_empty() {
            return Err(CredentialError::Empty {
                source_name: source_name.to_owned(),
            });
        }
        Ok(Self(v.to_owned()))
    }

    /// The credential of the variable's `value` or of the file at `file`; exactly one must be
    /// given. A file must not be readable by its group or by others.
    pub fn load(value: Option<&str>, file: Option<&Path>) -> Result<Self, CredentialError> {
        match (value, file) {
            (Some(_), Some(_)) => Err(CredentialError::Both),
            (None, None) => Err(CredentialError::Missing),
            (Some(v), None) => Self::new(v, "KMS_AGENT_CREDENTIAL"),
            (None, Some(path)) => Self::from_file(path),
        }
    }

    /// The credential held in `path`, refused when the file may be read by others.
    pub fn from_file(path: &Path) -> Result<Self, CredentialError> {
        let unreadable = |e: std::io::Error| CredentialError::Unreadable {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        let meta = std::fs::metadata(path).map_err(unreadable)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(CredentialError::TooOpen {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
        #[cfg(not(unix))]
        let _ = meta;
        let text = std::fs::read_to_string(path).map_err(unreadable)?;
        Self::new(&text, &path.display().to_string())
    }

    /// The credential itself, for the `Authorization` header only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the credential replaced by `<credential>`.
    pub fn redact(&self, text: &str) -> String {
        text.replace(self.0.as_str(), "<credential>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn never_printed() {
        let c = Credential::new(" secret.jwt.value\n", "test").unwrap();
        assert_eq!(format!("{c:?}"), "Credential(<redacted>)");
        assert_eq!(c.to_string(), "<redacted>");
        assert_eq!(c.expose(), "secret.jwt.value");
        assert_eq!(c.redact("a secret.jwt.value b"), "a <credential> b");
    }

    #[test]
    fn exactly_one_source() {
        assert!(matches!(
            Credential::load(None, None),
            Err(CredentialError::Missing)
        ));
        assert!(matches!(
            Credential::load(Some("x"), Some(Path::new("/nonexistent"))),
            Err(CredentialError::Both)
        ));
        assert!(matches!(
            Credential::load(Some("  "), None),
            Err(CredentialError::Empty { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn file_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.jwt");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(b"the.jwt\n")
            .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Credential::from_file(&path).unwrap_err();
        assert!(matches!(e, CredentialError::TooOpen { mode: 0o644, .. }));
        let msg = e.to_string();
        assert!(msg.contains("chmod 600"), "{msg}");
        assert!(!msg.contains("the.jwt"), "{msg}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Credential::from_file(&path).unwrap().expose(), "the.jwt");
        let missing = Credential::from_file(&dir.path().join("none")).unwrap_err();
        assert!(matches!(missing, CredentialError::Unreadable { .. }));
    }
}
