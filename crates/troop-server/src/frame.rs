//! Troop's wire framing: a message is a run of `<field>` parts with no length prefix.
//!
//! Each field is a JSON text in which `<` and `>` are written `\<` and `\>`; a field ends at
//! the first `>` not preceded by `\`. The first field is the message type, which fixes how
//! many fields follow. [`Decoder`] reassembles messages from reads that split them anywhere or
//! carry several at once, resumes its scan where it stopped (no quadratic rescans of a large
//! message) and refuses anything that is not framing, or a message larger than its cap.

use crate::message::{self, Message, MessageError};
use bytes::{Buf, BytesMut};

/// Why the byte stream cannot be read as Troop messages.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("bytes outside a <field> at offset {0}")]
    Garbage(usize),
    #[error("message larger than {0} bytes")]
    TooLarge(usize),
    #[error("field is not UTF-8")]
    NotUtf8,
    #[error("field is not valid JSON: {0}")]
    BadJson(String),
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error(transparent)]
    Message(#[from] MessageError),
}

/// Incremental decoder for one connection's byte stream.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    max_message: usize,
    /// Field spans `(start, end)` (inside the brackets) found so far in the pending message.
    fields: Vec<(usize, usize)>,
    /// Where the scan for the next field resumes.
    scan: usize,
    /// The pending message's type and how many fields it needs, once known.
    want: Option<(i64, usize)>,
}

impl Decoder {
    /// A decoder that refuses any single message over `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Decoder { buf: BytesMut::with_capacity(4096), max_message, fields: Vec::new(), scan: 0, want: None }
    }

    /// Changes the largest message accepted from now on (e.g. raised after a login).
    pub fn set_max_message(&mut self, max_message: usize) {
        self.max_message = max_message;
    }

    /// Adds bytes read from the socket.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The buffer to read into directly (avoids a copy); see [`Decoder::feed`].
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// True when no partial message is waiting for more bytes.
    pub fn is_idle(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next complete message, `Ok(None)` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        loop {
            if let Some((type_id, count)) = self.want {
                if self.fields.len() == count {
                    return self.finish(type_id).map(Some);
                }
            }
            let Some((start, end)) = self.next_field()? else {
                if self.buf.len() > self.max_message {
                    return Err(FrameError::TooLarge(self.max_message));
                }
                return Ok(None);
            };
            self.fields.push((start, end));
            if self.want.is_none() {
                let raw = std::str::from_utf8(&self.buf[start..end]).map_err(|_| FrameError::NotUtf8)?;
                let type_id: i64 =
                    raw.trim().parse().map_err(|_| FrameError::UnknownType(raw.chars().take(20).collect()))?;
                let count =
                    message::field_count(type_id).ok_or_else(|| FrameError::UnknownType(type_id.to_string()))?;
                self.want = Some((type_id, count));
            }
        }
    }

    /// Finds the next `<...>` field from the scan position, or `None` if it is incomplete.
    fn next_field(&mut self) -> Result<Option<(usize, usize)>, FrameError> {
        let buf = &self.buf[..];
        if self.scan >= buf.len() {
            return Ok(None);
        }
        let start = match self.fields.last() {
            Some(&(_, end)) => end + 1,
            None => 0,
        };
        if buf[start] != b'<' {
            return Err(FrameError::Garbage(start));
        }
        let from = self.scan.max(start + 1);
        let mut i = from;
        while i < buf.len() {
            match memchr_gt(&buf[i..]) {
                Some(off) => {
                    let at = i + off;
                    if at > start + 1 && buf[at - 1] == b'\\' {
                        i = at + 1;
                        continue;
                    }
                    self.scan = at + 1;
                    return Ok(Some((start + 1, at)));
                }
                None => break,
            }
        }
        // Resume after what was scanned; a `\` at the end is looked at again with the next `>`.
        self.scan = buf.len().max(start + 1);
        Ok(None)
    }

    fn finish(&mut self, type_id: i64) -> Result<Message, FrameError> {
        let consumed = self.fields.last().map(|&(_, end)| end + 1).unwrap_or(0);
        if consumed > self.max_message {
            return Err(FrameError::TooLarge(self.max_message));
        }
        let mut values = Vec::with_capacity(self.fields.len());
        for &(start, end) in &self.fields[1..] {
            values.push(parse_field(&self.buf[start..end])?);
        }
        let msg = Message::from_fields(type_id, &values);
        self.buf.advance(consumed);
        self.fields.clear();
        self.scan = 0;
        self.want = None;
        Ok(msg?)
    }
}

fn memchr_gt(hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == b'>')
}

/// Unescapes `\>` and `\<` (in upstream's order) and decodes the JSON of one field.
pub fn parse_field(raw: &[u8]) -> Result<serde_json::Value, FrameError> {
    let text = std::str::from_utf8(raw).map_err(|_| FrameError::NotUtf8)?;
    let result = if text.contains('\\') {
        serde_json::from_str(&text.replace("\\>", ">").replace("\\<", "<"))
    } else {
        serde_json::from_str(text)
    };
    result.map_err(|e| FrameError::BadJson(e.to_string()))
}

/// Appends one field: `<`, the JSON with `<` / `>` escaped, `>`.
pub fn push_field(out: &mut String, json: &str) {
    out.push('<');
    if json.contains(['<', '>']) {
        for c in json.chars() {
            match c {
                '<' => out.push_str("\\<"),
                '>' => out.push_str("\\>"),
                c => out.push(c),
            }
        }
    } else {
        out.push_str(json);
    }
    out.push('>');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Body;

    fn decode_all(d: &mut Decoder) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(m) = d.next_message().unwrap() {
            out.push(m);
        }
        out
    }

    #[test]
    fn reassembles_split_and_merged_messages() {
        let wire = b"<16><1><0><\"a\\>b\"><16><2><0><\"c\">";
        for cut in 0..wire.len() {
            let mut d = Decoder::new(1024);
            d.feed(&wire[..cut]);
            let mut got = decode_all(&mut d);
            d.feed(&wire[cut..]);
            got.extend(decode_all(&mut d));
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert_eq!(got[0].body, Body::Console { string: "a>b".into() });
            assert!(d.is_idle());
        }
    }

    #[test]
    fn refuses_garbage_unknown_types_and_bad_json() {
        let mut d = Decoder::new(1024);
        d.feed(b"x<16>");
        assert!(matches!(d.next_message(), Err(FrameError::Garbage(0))));
        let mut d = Decoder::new(1024);
        d.feed(b"<99><1><2>");
        assert!(matches!(d.next_message(), Err(FrameError::UnknownType(_))));
        let mut d = Decoder::new(1024);
        d.feed(b"<2><2><1><[\"x]><1>");
        assert!(matches!(d.next_message(), Err(FrameError::BadJson(_))));
        let mut d = Decoder::new(1024);
        d.feed(b"<16><3><0><\"\xff\xfe\">");
        assert!(matches!(d.next_message(), Err(FrameError::NotUtf8)));
    }

    #[test]
    fn caps_message_size() {
        let mut d = Decoder::new(16);
        d.feed(b"<16><1><0><\"aaaaaaaaaaaaaaaaaaaaaaaa");
        assert!(matches!(d.next_message(), Err(FrameError::TooLarge(16))));
    }
}
