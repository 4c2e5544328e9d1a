//! Choosing a backend from configuration.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use thiserror::Error;

use crate::{SimTransport, TeeClient, TeeError};

/// Which TA to talk to.
///
/// Parsed from (and displayed as) a short string, for flags and environment
/// variables:
///
/// | string                                   | backend                         |
/// |------------------------------------------|---------------------------------|
/// | `sim:/path/ta.sock`, `simulator:/path/…` | [`TeeBackend::Simulator`]       |
/// | `optee`                                  | [`TeeBackend::Optee`] (feature `optee`) |
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TeeBackend {
    /// The `ta-sim` process listening on a Unix socket.
    Simulator {
        /// Its socket.
        socket: PathBuf,
    },
    /// The real TA through libteec (`/dev/tee*`, tee-supplicant running, the
    /// TA installed as `/lib/optee_armtz/<TA_UUID>.ta`).
    Optee,
}

/// A backend string that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("invalid TEE backend {input:?}: expected `sim:<socket path>` or `optee`")]
pub struct BackendParseError {
    input: String,
}

impl FromStr for TeeBackend {
    type Err = BackendParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || BackendParseError {
            input: s.to_owned(),
        };
        if s == "optee" {
            return Ok(TeeBackend::Optee);
        }
        let path = s
            .strip_prefix("sim:")
            .or_else(|| s.strip_prefix("simulator:"))
            .ok_or_else(err)?;
        if path.is_empty() {
            return Err(err());
        }
        Ok(TeeBackend::Simulator {
            socket: PathBuf::from(path),
        })
    }
}

impl fmt::Display for TeeBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TeeBackend::Simulator { socket } => write!(f, "sim:{}", socket.display()),
            TeeBackend::Optee => f.write_str("optee"),
        }
    }
}

impl TeeBackend {
    /// The backend used when none is configured: the simulator at `<data_dir>/ta.sock` (the
    /// companion and `kms-admin` resolve it the same way).
    pub fn default_for_data_dir(data_dir: &std::path::Path) -> TeeBackend {
        TeeBackend::Simulator {
            socket: data_dir.join("ta.sock"),
        }
    }

    /// Open the backend and check that the TA answers: one session is
    /// opened now and kept for the first call.
    pub fn connect(&self) -> Result<TeeClient, TeeError> {
        match self {
            TeeBackend::Simulator { socket } => {
                Ok(TeeClient::new(SimTransport::connect(socket.clone())?))
            }
            #[cfg(feature = "optee")]
            TeeBackend::Optee => Ok(TeeClient::new(crate::OpteeTransport::connect()?)),
            #[cfg(not(feature = "optee"))]
            TeeBackend::Optee => Err(TeeError::NotBuilt("optee")),
        }
    }

    /// A client that opens sessions lazily, on the first call (so a process
    /// may start before the TA is reachable; calls fail with
    /// [`TeeError::Unavailable`] until it is).
    pub fn lazy(&self) -> Result<TeeClient, TeeError> {
        match self {
            TeeBackend::Simulator { socket } => {
                Ok(TeeClient::new(SimTransport::new(socket.clone())))
            }
            #[cfg(feature = "optee")]
            TeeBackend::Optee => Ok(TeeClient::new(crate::OpteeTransport::new())),
            #[cfg(not(feature = "optee"))]
            TeeBackend::Optee => Err(TeeError::NotBuilt("optee")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        let b: TeeBackend = "sim:/run/kms/ta.sock".parse().unwrap();
        assert_eq!(
            b,
            TeeBackend::Simulator {
                socket: "/run/kms/ta.sock".into()
            }
        );
        assert_eq!(b.to_string(), "sim:/run/kms/ta.sock");
        assert_eq!(
            "simulator:rel/ta.sock".parse::<TeeBackend>().unwrap(),
            TeeBackend::Simulator {
                socket: "rel/ta.sock".into()
            }
        );
        assert_eq!("optee".parse::<TeeBackend>().unwrap(), TeeBackend::Optee);
        assert_eq!(TeeBackend::Optee.to_string(), "optee");
        for bad in ["", "sim:", "tcp:1.2.3.4", "OPTEE", "/path/ta.sock"] {
            assert!(bad.parse::<TeeBackend>().is_err(), "{bad}");
        }
    }

    #[cfg(not(feature = "optee"))]
    #[test]
    fn optee_without_the_feature_says_so() {
        assert_eq!(
            TeeBackend::Optee.connect().unwrap_err(),
            TeeError::NotBuilt("optee")
        );
    }
}
