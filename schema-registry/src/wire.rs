//! Confluent's wire format: a record's value is a zero "magic" byte, the id of the schema it was
//! written with (4 bytes, big endian), then the payload (here, JSON). Any Confluent-aware
//! consumer or tool reads the id, asks the registry for the schema, and decodes.

/// The first byte of a framed value.
pub const MAGIC: u8 = 0;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 5;

/// `payload` framed with schema `id`.
pub fn frame(id: i32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The schema id and payload of a framed value; `None` if it is not framed (it does not start
/// with the magic byte and an id).
pub fn unframe(value: &[u8]) -> Option<(i32, &[u8])> {
    let (head, payload) = value.split_at_checked(HEADER_LEN)?;
    (head[0] == MAGIC).then(|| {
        (
            i32::from_be_bytes([head[1], head[2], head[3], head[4]]),
            payload,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_framed_value_gives_back_its_id_and_payload() {
        let framed = frame(7, b"{\"a\":1}");
        assert_eq!(&framed[..5], &[0, 0, 0, 0, 7]);
        assert_eq!(unframe(&framed), Some((7, &b"{\"a\":1}"[..])));
        assert_eq!(
            unframe(b"{\"a\":1}"),
            None,
            "plain JSON starts with a brace"
        );
        assert_eq!(unframe(&[0, 0, 0]), None, "too short");
    }
}
