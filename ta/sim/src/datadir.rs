//! The data directory: created 0700, and locked so that only one ta-sim
//! ever serves it.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Name of the lock file in the data directory.
pub const LOCK_FILE: &str = "ta-sim.lock";

/// Why the data directory cannot be used.
#[derive(Debug, Error)]
pub enum DataDirError {
    /// Another ta-sim holds the lock.
    #[error("data directory {0} is in use by another ta-sim; refusing to start")]
    InUse(PathBuf),
    /// The path exists and is not a directory.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// The locked data directory; the lock is held until this is dropped.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Create `path` (mode 0700, with missing parents) if it does not exist
    /// and take its exclusive lock.
    pub fn open(path: &Path) -> Result<Self, DataDirError> {
        let io_err = |op: &'static str, p: &Path| {
            let p = p.to_owned();
            move |source| DataDirError::Io {
                op,
                path: p,
                source,
            }
        };
        match fs::metadata(path) {
            Ok(m) if !m.is_dir() => return Err(DataDirError::NotADirectory(path.to_owned())),
            Ok(m) => {
                let mode = m.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        path = %path.display(),
                        mode = format_args!("{mode:04o}"),
                        "the data directory is accessible by group or others; 0700 is recommended"
                    );
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(path)
                    .map_err(io_err("cannot create data directory", path))?;
                tracing::info!(path = %path.display(), "created the data directory");
            }
            Err(e) => return Err(io_err("cannot inspect", path)(e)),
        }
        let lock_path = path.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err("cannot open", &lock_path))?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::AGAIN => {
                return Err(DataDirError::InUse(path.to_owned()));
            }
            Err(e) => return Err(io_err("cannot lock", &lock_path)(e.into())),
        }
        Ok(Self {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_0700_and_locks() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        let d = DataDir::open(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(matches!(DataDir::open(&dir), Err(DataDirError::InUse(_))));
        drop(d);
        DataDir::open(&dir).unwrap();
        let file = tmp.path().join("f");
        fs::write(&file, b"").unwrap();
        assert!(matches!(
            DataDir::open(&file),
            Err(DataDirError::NotADirectory(_))
        ));
    }
}
