//! The `ta-sim` wire frames: the single definition used by the `ta-sim`
//! server and by the simulator backend of the host client
//! (`kms-tee-client`). Needs the `std` feature (it reads and writes
//! `std::io` streams); the TA core never sees it.
//!
//! One Unix-socket connection is one TA session. On it the client sends
//! requests and reads responses strictly in turn (one call in flight per
//! session):
//!
//! ```text
//! request:  [u32 BE length][u32 BE command id][request bytes]
//!            length = 4 + len(request bytes),   4 <= length <= MAX_MESSAGE_LEN + 4
//! response: [u32 BE length][response bytes]
//!            length = len(response bytes),      length <= MAX_MESSAGE_LEN
//! ```
//!
//! The length counts the bytes after the length field, so a whole frame is
//! at most [`MAX_FRAME_LEN`] = `MAX_MESSAGE_LEN + 8` bytes. The request and
//! response bytes are exactly what [`crate::codec`] produces; they are
//! never interpreted by the framing. A frame whose length is out of bounds
//! is malformed: the server closes that session (only that one) without
//! answering. A request that frames correctly but does not decode is
//! answered by the TA with a typed error.

/// What `ta-sim` prints on stderr, followed by a space and the socket path, once it listens
/// (`ta-sim ready on <socket>`): the line its launchers (the companion's `--dev` mode, the test
/// harnesses) wait for.
pub const READY_LINE: &str = "ta-sim ready on";

use alloc::vec::Vec;
use std::io::{self, Read, Write};

use thiserror::Error;

use crate::MAX_MESSAGE_LEN;

/// Size of the length prefix.
pub const LEN_PREFIX: usize = 4;
/// Size of the command id in a request frame.
pub const CMD_LEN: usize = 4;
/// Largest value of a request frame's length field.
pub const MAX_REQUEST_BODY: usize = MAX_MESSAGE_LEN + CMD_LEN;
/// Largest value of a response frame's length field.
pub const MAX_RESPONSE_BODY: usize = MAX_MESSAGE_LEN;
/// Largest whole frame, length prefix included.
pub const MAX_FRAME_LEN: usize = MAX_MESSAGE_LEN + 8;

/// A frame that cannot be sent or received.
#[derive(Debug, Error)]
pub enum FrameError {
    /// The peer closed the connection cleanly between frames.
    #[error("connection closed")]
    Closed,
    /// Reading or writing failed (including EOF in the middle of a frame).
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The length field is larger than the bound.
    #[error("frame length {len} exceeds the bound {max}")]
    TooLong {
        /// The announced length.
        len: u64,
        /// The bound.
        max: usize,
    },
    /// A request frame too short to hold a command id.
    #[error("request frame length {0} is too short to hold a command id")]
    TooShort(u32),
}

/// Encode a request frame into `out` (cleared first).
pub fn encode_request(out: &mut Vec<u8>, cmd: u32, input: &[u8]) -> Result<(), FrameError> {
    let body = input.len() + CMD_LEN;
    if body > MAX_REQUEST_BODY {
        return Err(FrameError::TooLong {
            len: body as u64,
            max: MAX_REQUEST_BODY,
        });
    }
    out.clear();
    out.reserve(LEN_PREFIX + body);
    out.extend_from_slice(&(body as u32).to_be_bytes());
    out.extend_from_slice(&cmd.to_be_bytes());
    out.extend_from_slice(input);
    Ok(())
}

/// Encode a response frame into `out` (cleared first).
pub fn encode_response(out: &mut Vec<u8>, response: &[u8]) -> Result<(), FrameError> {
    if response.len() > MAX_RESPONSE_BODY {
        return Err(FrameError::TooLong {
            len: response.len() as u64,
            max: MAX_RESPONSE_BODY,
        });
    }
    out.clear();
    out.reserve(LEN_PREFIX + response.len());
    out.extend_from_slice(&(response.len() as u32).to_be_bytes());
    out.extend_from_slice(response);
    Ok(())
}

/// Read the length prefix; `Closed` on a clean EOF before its first byte.
fn read_len<R: Read>(r: &mut R) -> Result<u32, FrameError> {
    let mut len = [0u8; LEN_PREFIX];
    let mut got = 0;
    while got < LEN_PREFIX {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(u32::from_be_bytes(len))
}

/// Read one request frame: returns the command id and fills `input` (cleared
/// first) with the request bytes.
pub fn read_request<R: Read>(r: &mut R, input: &mut Vec<u8>) -> Result<u32, FrameError> {
    let len = read_len(r)?;
    if (len as usize) < CMD_LEN {
        return Err(FrameError::TooShort(len));
    }
    if len as usize > MAX_REQUEST_BODY {
        return Err(FrameError::TooLong {
            len: len.into(),
            max: MAX_REQUEST_BODY,
        });
    }
    let mut cmd = [0u8; CMD_LEN];
    r.read_exact(&mut cmd)?;
    input.clear();
    input.resize(len as usize - CMD_LEN, 0);
    r.read_exact(input)?;
    Ok(u32::from_be_bytes(cmd))
}

/// Read one response frame into `output` (cleared first).
pub fn read_response<R: Read>(r: &mut R, output: &mut Vec<u8>) -> Result<(), FrameError> {
    let len = read_len(r)?;
    if len as usize > MAX_RESPONSE_BODY {
        return Err(FrameError::TooLong {
            len: len.into(),
            max: MAX_RESPONSE_BODY,
        });
    }
    output.clear();
    output.resize(len as usize, 0);
    r.read_exact(output)?;
    Ok(())
}

/// Write a whole encoded frame.
pub fn write_frame<W: Write>(w: &mut W, frame: &[u8]) -> Result<(), FrameError> {
    w.write_all(frame)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use std::io::Cursor;

    #[test]
    fn request_round_trips() {
        let mut frame = Vec::new();
        encode_request(&mut frame, 22, b"\x01abc").unwrap();
        assert_eq!(&frame[..8], &[0, 0, 0, 8, 0, 0, 0, 22]);
        let mut input = Vec::new();
        let cmd = read_request(&mut Cursor::new(&frame), &mut input).unwrap();
        assert_eq!((cmd, input.as_slice()), (22, &b"\x01abc"[..]));
    }

    #[test]
    fn response_round_trips() {
        let mut frame = Vec::new();
        encode_response(&mut frame, b"xyz").unwrap();
        assert_eq!(&frame[..4], &[0, 0, 0, 3]);
        let mut out = Vec::new();
        read_response(&mut Cursor::new(&frame), &mut out).unwrap();
        assert_eq!(out, b"xyz");
    }

    #[test]
    fn bounds_are_enforced() {
        let mut out = Vec::new();
        let big = vec![0u8; MAX_MESSAGE_LEN + 1];
        assert!(matches!(
            encode_request(&mut out, 1, &big),
            Err(FrameError::TooLong { .. })
        ));
        assert!(matches!(
            encode_response(&mut out, &big),
            Err(FrameError::TooLong { .. })
        ));
        // The largest legal request frame is MAX_FRAME_LEN - 4 bytes long
        // plus its prefix.
        let max = vec![0u8; MAX_MESSAGE_LEN];
        encode_request(&mut out, 1, &max).unwrap();
        assert_eq!(out.len(), MAX_FRAME_LEN);

        let mut input = Vec::new();
        let too_long = (MAX_REQUEST_BODY as u32 + 1).to_be_bytes();
        assert!(matches!(
            read_request(&mut Cursor::new(&too_long), &mut input),
            Err(FrameError::TooLong { .. })
        ));
        assert!(matches!(
            read_request(&mut Cursor::new(&[0, 0, 0, 3, 1, 2, 3]), &mut input),
            Err(FrameError::TooShort(3))
        ));
        assert!(matches!(
            read_response(&mut Cursor::new(&u32::MAX.to_be_bytes()), &mut input),
            Err(FrameError::TooLong { .. })
        ));
    }

    #[test]
    fn eof_between_frames_is_closed_and_inside_is_io() {
        let mut input = Vec::new();
        assert!(matches!(
            read_request(&mut Cursor::new(&[] as &[u8]), &mut input),
            Err(FrameError::Closed)
        ));
        assert!(matches!(
            read_request(&mut Cursor::new(&[0, 0]), &mut input),
            Err(FrameError::Io(_))
        ));
        assert!(matches!(
            read_request(&mut Cursor::new(&[0, 0, 0, 9, 0, 0, 0, 1, 5]), &mut input),
            Err(FrameError::Io(_))
        ));
    }
}
