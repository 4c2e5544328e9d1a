//! The snapshot encoding: the whole sealed key-value map, as one byte string.
//!
//! ```text
//! magic "KMSTASNP" (8) ‖ version 1 (1) ‖ time floor (u64 BE) ‖ count (u32 BE)
//!   ‖ count × ( key length (u16 BE) ‖ key (UTF-8) ‖ value length (u32 BE) ‖ value )
//! ```
//!
//! Keys are strictly increasing (the map's order), so every map has exactly
//! one encoding. Decoding checks every length against the input and refuses
//! duplicates, unsorted keys and trailing bytes. The encoding is plaintext:
//! the backend seals it (OP-TEE secure storage, or the simulator's AEAD).

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use kms_proto::StorageFault;
use zeroize::Zeroizing;

/// First bytes of every snapshot.
pub const MAGIC: [u8; 8] = *b"KMSTASNP";
/// Version of this encoding.
pub const VERSION: u8 = 1;
/// Longest key.
pub const MAX_KEY_LEN: usize = u16::MAX as usize;

/// The map: keys to (secret) values, wiped on drop.
pub type Entries = BTreeMap<String, Zeroizing<Vec<u8>>>;

/// A decoded snapshot.
#[derive(Default)]
pub struct Snapshot {
    /// Highest TA time seen when it was written (see [`crate::clock`]).
    pub time_floor: u64,
    /// The objects.
    pub entries: Entries,
}

impl core::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Snapshot")
            .field("time_floor", &self.time_floor)
            .field("objects", &self.entries.len())
            .finish()
    }
}

/// Size of the encoding of `entries`, or `None` if a key is too long or the
/// size overflows.
pub fn encoded_len(entries: &Entries) -> Option<usize> {
    let mut n: usize = MAGIC.len() + 1 + 8 + 4;
    for (k, v) in entries {
        if k.len() > MAX_KEY_LEN || u32::try_from(v.len()).is_err() {
            return None;
        }
        n = n.checked_add(2 + k.len() + 4 + v.len())?;
    }
    Some(n)
}

/// Encode; `None` if a key or value is too long for the format.
pub fn encode(time_floor: u64, entries: &Entries) -> Option<Zeroizing<Vec<u8>>> {
    let len = encoded_len(entries)?;
    let count = u32::try_from(entries.len()).ok()?;
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&time_floor.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    for (k, v) in entries {
        out.extend_from_slice(&(k.len() as u16).to_be_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v);
    }
    debug_assert_eq!(out.len(), len);
    Some(out)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StorageFault> {
        if self.0.len() < n {
            return Err(StorageFault::Corrupt);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], StorageFault> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

/// Decode; any deviation from the format is [`StorageFault::Corrupt`].
pub fn decode(bytes: &[u8]) -> Result<Snapshot, StorageFault> {
    let mut r = Reader(bytes);
    if r.array::<8>()? != MAGIC || r.array::<1>()?[0] != VERSION {
        return Err(StorageFault::Corrupt);
    }
    let time_floor = u64::from_be_bytes(r.array()?);
    let count = u32::from_be_bytes(r.array()?);
    let mut entries = Entries::new();
    let mut last: Option<String> = None;
    for _ in 0..count {
        let klen = u16::from_be_bytes(r.array()?) as usize;
        let key = core::str::from_utf8(r.take(klen)?).map_err(|_| StorageFault::Corrupt)?;
        if last.as_deref().is_some_and(|l| l >= key) {
            return Err(StorageFault::Corrupt);
        }
        let vlen = u32::from_be_bytes(r.array()?) as usize;
        let value = Zeroizing::new(r.take(vlen)?.to_vec());
        last = Some(String::from(key));
        entries.insert(String::from(key), value);
    }
    if !r.0.is_empty() {
        return Err(StorageFault::Corrupt);
    }
    Ok(Snapshot {
        time_floor,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn sample() -> Entries {
        let mut e = Entries::new();
        e.insert("wallet/1".into(), Zeroizing::new(vec![1, 2, 3]));
        e.insert("a".into(), Zeroizing::new(vec![]));
        e.insert("jwt/secrets".into(), Zeroizing::new(vec![9; 300]));
        e
    }

    #[test]
    fn round_trips() {
        let bytes = encode(42, &sample()).unwrap();
        assert_eq!(bytes.len(), encoded_len(&sample()).unwrap());
        let s = decode(&bytes).unwrap();
        assert_eq!(s.time_floor, 42);
        assert_eq!(s.entries, sample());
        let empty = encode(0, &Entries::new()).unwrap();
        assert!(decode(&empty).unwrap().entries.is_empty());
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let bytes = encode(7, &sample()).unwrap();
        for cut in 0..bytes.len() {
            assert_eq!(
                decode(&bytes[..cut]).unwrap_err(),
                StorageFault::Corrupt,
                "cut {cut}"
            );
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(decode(&longer).unwrap_err(), StorageFault::Corrupt);
    }

    #[test]
    fn bad_magic_version_order_utf8_are_refused() {
        let good = encode(7, &sample()).unwrap();
        let mut b = good.to_vec();
        b[0] ^= 1;
        assert!(decode(&b).is_err());
        let mut b = good.to_vec();
        b[8] = 2;
        assert!(decode(&b).is_err());
        // Two entries "b", "a": out of order.
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC);
        b.push(VERSION);
        b.extend_from_slice(&0u64.to_be_bytes());
        b.extend_from_slice(&2u32.to_be_bytes());
        for k in [b"b", b"a"] {
            b.extend_from_slice(&1u16.to_be_bytes());
            b.extend_from_slice(k);
            b.extend_from_slice(&0u32.to_be_bytes());
        }
        assert!(decode(&b).is_err());
        // Invalid UTF-8 key.
        let n = b.len();
        b[n - 5] = 0xff;
        assert!(decode(&b).is_err());
    }
}
