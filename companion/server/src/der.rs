//! A strict, bounds-checked parser of ASN.1 DER ECDSA signatures
//! (`SEQUENCE { r INTEGER, s INTEGER }`) for P-256. Never panics; every
//! malformed input is an error (HTTP 422).

/// Why a DER signature was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DerError {
    /// Input ended early or a length runs past the end.
    #[error("DER signature is truncated")]
    Truncated,
    /// Not the expected tag.
    #[error("DER signature has an unexpected tag")]
    Tag,
    /// A length is not minimally encoded, or uses the long form where the
    /// short one applies.
    #[error("DER signature has a non-canonical length")]
    Length,
    /// An INTEGER is negative, zero-length, not minimal, or over 32 bytes.
    #[error("DER signature has an invalid integer")]
    Integer,
    /// Bytes follow the SEQUENCE.
    #[error("DER signature has trailing bytes")]
    Trailing,
    /// r or s is zero.
    #[error("DER signature has a zero component")]
    Zero,
}

fn read_len(input: &[u8], pos: &mut usize) -> Result<usize, DerError> {
    let first = *input.get(*pos).ok_or(DerError::Truncated)?;
    *pos += 1;
    if first < 0x80 {
        return Ok(usize::from(first));
    }
    // Long form: one length byte is enough for any P-256 signature.
    if first != 0x81 {
        return Err(DerError::Length);
    }
    let b = *input.get(*pos).ok_or(DerError::Truncated)?;
    *pos += 1;
    if b < 0x80 {
        return Err(DerError::Length);
    }
    Ok(usize::from(b))
}

fn read_int(input: &[u8], pos: &mut usize) -> Result<[u8; 32], DerError> {
    if *input.get(*pos).ok_or(DerError::Truncated)? != 0x02 {
        return Err(DerError::Tag);
    }
    *pos += 1;
    let len = read_len(input, pos)?;
    let end = pos.checked_add(len).ok_or(DerError::Truncated)?;
    let bytes = input.get(*pos..end).ok_or(DerError::Truncated)?;
    *pos = end;
    let (&first, rest) = bytes.split_first().ok_or(DerError::Integer)?;
    if first & 0x80 != 0 {
        return Err(DerError::Integer); // negative
    }
    let digits = if first == 0 {
        // A leading zero is allowed only before a byte with the top bit set.
        match rest.first() {
            Some(b) if b & 0x80 != 0 => rest,
            Some(_) => return Err(DerError::Integer),
            None => rest, // the integer 0
        }
    } else {
        bytes
    };
    if digits.len() > 32 {
        return Err(DerError::Integer);
    }
    let mut out = [0u8; 32];
    out[32 - digits.len()..].copy_from_slice(digits);
    Ok(out)
}

/// Parse a DER ECDSA signature into 32-byte big-endian `r` and `s`.
pub fn parse_ecdsa_signature(input: &[u8]) -> Result<([u8; 32], [u8; 32]), DerError> {
    let mut pos = 0usize;
    if *input.first().ok_or(DerError::Truncated)? != 0x30 {
        return Err(DerError::Tag);
    }
    pos += 1;
    let len = read_len(input, &mut pos)?;
    let end = pos.checked_add(len).ok_or(DerError::Truncated)?;
    if end > input.len() {
        return Err(DerError::Truncated);
    }
    if end < input.len() {
        return Err(DerError::Trailing);
    }
    let r = read_int(input, &mut pos)?;
    let s = read_int(input, &mut pos)?;
    if pos != end {
        return Err(DerError::Trailing);
    }
    if r == [0; 32] || s == [0; 32] {
        return Err(DerError::Zero);
    }
    Ok((r, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(r: &[u8], s: &[u8]) -> Vec<u8> {
        let mut body = vec![0x02, r.len() as u8];
        body.extend_from_slice(r);
        body.extend_from_slice(&[0x02, s.len() as u8]);
        body.extend_from_slice(s);
        let mut out = vec![0x30, body.len() as u8];
        out.extend(body);
        out
    }

    #[test]
    fn accepts_canonical() {
        let mut r = vec![0x00, 0x80];
        r.extend([1u8; 31]);
        let (pr, ps) = parse_ecdsa_signature(&sig(&r, &[5])).unwrap();
        assert_eq!(pr[0], 0x80);
        assert_eq!(ps[31], 5);
    }

    #[test]
    fn refuses_malformed_without_panicking() {
        assert_eq!(parse_ecdsa_signature(&[]), Err(DerError::Truncated));
        assert_eq!(parse_ecdsa_signature(&[0x31, 0]), Err(DerError::Tag));
        assert_eq!(
            parse_ecdsa_signature(&[0x30, 0x05, 0x02]),
            Err(DerError::Truncated)
        );
        assert_eq!(
            parse_ecdsa_signature(&[0x30, 0x84, 0, 0, 0, 1]),
            Err(DerError::Length)
        );
        assert_eq!(
            parse_ecdsa_signature(&[0x30, 0x81, 0x05]),
            Err(DerError::Length)
        );
        let mut t = sig(&[1], &[2]);
        t.push(0);
        assert_eq!(parse_ecdsa_signature(&t), Err(DerError::Trailing));
        assert_eq!(
            parse_ecdsa_signature(&sig(&[0x80], &[1])),
            Err(DerError::Integer)
        );
        assert_eq!(
            parse_ecdsa_signature(&sig(&[0, 1], &[1])),
            Err(DerError::Integer)
        );
        assert_eq!(
            parse_ecdsa_signature(&sig(&[], &[1])),
            Err(DerError::Integer)
        );
        assert_eq!(
            parse_ecdsa_signature(&sig(&[1; 33], &[1])),
            Err(DerError::Integer)
        );
        assert_eq!(parse_ecdsa_signature(&sig(&[0], &[1])), Err(DerError::Zero));
        // Inner length running past the sequence.
        assert_eq!(
            parse_ecdsa_signature(&[0x30, 0x03, 0x02, 0x09, 0x01]),
            Err(DerError::Truncated)
        );
        // Every truncation and every single-byte corruption of a good one.
        let good = sig(&[7; 32], &[9; 32]);
        for cut in 0..good.len() {
            assert!(parse_ecdsa_signature(&good[..cut]).is_err());
        }
        for i in 0..good.len() {
            for v in [0u8, 0x7f, 0x80, 0xff] {
                let mut g = good.clone();
                g[i] = v;
                let _ = parse_ecdsa_signature(&g);
            }
        }
    }
}
