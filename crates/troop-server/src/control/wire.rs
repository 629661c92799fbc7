//! Control channel framing: a 4-byte big-endian length, then that many bytes of a UTF-8 JSON
//! object. Pure functions over buffers; the server and the client do their own I/O.

use bytes::{Buf, Bytes, BytesMut};
use serde::Serialize;

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame of {0} bytes is over the {1} byte limit")]
    TooLarge(usize, usize),
    #[error("frame is not a JSON object: {0}")]
    NotObject(String),
}

/// Encodes `value` as one frame.
pub fn encode(value: &impl Serialize) -> Bytes {
    let mut out = Vec::with_capacity(256);
    encode_into(&mut out, value);
    Bytes::from(out)
}

/// Replaces `out`'s contents with `value` as one frame (a buffer reused for many frames).
pub fn encode_into(out: &mut Vec<u8>, value: &impl Serialize) {
    out.clear();
    out.extend_from_slice(&[0; 4]);
    // Serializing our own types into a Vec cannot fail (no maps with non-string keys).
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.truncate(4);
        out.extend_from_slice(b"{}");
    }
    let len = u32::try_from(out.len() - 4).unwrap_or(u32::MAX);
    out[..4].copy_from_slice(&len.to_be_bytes());
}

/// Takes one complete frame body off the front of `buf`; `Ok(None)` if more bytes are needed.
/// A declared length over `max` is an error as soon as the 4 length bytes are in.
pub fn split(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, WireError> {
    let Some(head) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len > max {
        return Err(WireError::TooLarge(len, max));
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(len).freeze()))
}

/// Parses a frame body as a JSON object.
pub fn object(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, WireError> {
    match serde_json::from_slice(body) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(WireError::NotObject("another JSON value".into())),
        Err(e) => Err(WireError::NotObject(e.to_string())),
    }
}

/// A successful reply: `{"ok": true}` followed by `body`'s fields.
#[derive(Serialize)]
pub struct Ok<T: Serialize> {
    pub ok: bool,
    #[serde(flatten)]
    pub body: T,
}

/// `{"ok": true}` and `fields`.
pub fn ok<T: Serialize>(body: T) -> Bytes {
    encode(&Ok { ok: true, body })
}

/// `{"ok": false, "error": message}`.
pub fn error(message: &str) -> Bytes {
    encode(&serde_json::json!({ "ok": false, "error": message }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_split_anywhere() {
        let frame = encode(&serde_json::json!({"op": "snapshot"}));
        assert_eq!(&frame[..4], &(frame.len() as u32 - 4).to_be_bytes());
        for cut in 0..frame.len() {
            let mut buf = BytesMut::from(&frame[..cut]);
            assert_eq!(split(&mut buf, 100), Ok(None));
            buf.extend_from_slice(&frame[cut..]);
            let body = split(&mut buf, 100).unwrap().unwrap();
            assert_eq!(object(&body).unwrap()["op"], "snapshot");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn huge_lengths_and_non_objects_are_refused() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert_eq!(split(&mut buf, 65536), Err(WireError::TooLarge(u32::MAX as usize, 65536)));
        assert!(object(b"[1]").is_err());
        assert!(object(b"\xff").is_err());
        assert!(object(b"").is_err());
    }

    #[test]
    fn replies_have_ok_first() {
        let r = ok(serde_json::json!({"match": true}));
        assert_eq!(&r[4..], br#"{"ok":true,"match":true}"#);
        assert_eq!(&error("no")[4..], br#"{"ok":false,"error":"no"}"#);
    }
}
