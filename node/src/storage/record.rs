//! The framing of every value kuberaft stores in sled: a CRC-32 (IEEE, big
//! endian) of the payload, then the payload.
//!
//! sled checksums its own log, but not what a bad disk, a bad RAM stick or a
//! bug hands back later through its page cache; our own checksum lets a member
//! refuse to start on a damaged value instead of voting or acknowledging with
//! it (a Raft member that lies about its log breaks safety for everyone).

/// Why a stored value cannot be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("it is {0} bytes long, shorter than its 4-byte checksum")]
    TooShort(usize),
    #[error("its checksum does not match (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("it cannot be decoded: {0}")]
    Undecodable(String),
}

const CRC_LEN: usize = 4;

/// Frames raw bytes.
pub fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CRC_LEN + payload.len());
    out.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of a framed value, once its checksum is verified.
pub fn open(value: &[u8]) -> Result<&[u8], RecordError> {
    let Some((crc, payload)) = value.split_first_chunk::<CRC_LEN>() else {
        return Err(RecordError::TooShort(value.len()));
    };
    let stored = u32::from_be_bytes(*crc);
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(RecordError::Checksum { stored, computed });
    }
    Ok(payload)
}

/// Frames a protobuf message.
pub fn seal_message(m: &impl prost::Message) -> Vec<u8> {
    seal(&m.encode_to_vec())
}

/// Verifies and decodes a framed protobuf message.
pub fn open_message<M: prost::Message + Default>(value: &[u8]) -> Result<M, RecordError> {
    M::decode(open(value)?).map_err(|e| RecordError::Undecodable(e.to_string()))
}

/// Frames a big-endian u64 (the applied index).
pub fn seal_u64(n: u64) -> Vec<u8> {
    seal(&n.to_be_bytes())
}

pub fn open_u64(value: &[u8]) -> Result<u64, RecordError> {
    let payload = open(value)?;
    let bytes: [u8; 8] = payload.try_into().map_err(|_| {
        RecordError::Undecodable(format!("expected 8 bytes, found {}", payload.len()))
    })?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_and_damaged_ones_do_not() {
        let v = seal(b"hello");
        assert_eq!(open(&v), Ok(&b"hello"[..]));
        let mut bad = v.clone();
        bad[6] ^= 0x01;
        assert!(matches!(open(&bad), Err(RecordError::Checksum { .. })));
        assert_eq!(open(&v[..3]), Err(RecordError::TooShort(3)));
        assert_eq!(open_u64(&seal_u64(42)), Ok(42));
        assert!(open_u64(&seal(b"abc")).is_err());
    }
}
