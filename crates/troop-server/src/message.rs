//! Troop 0.10.3 message types: their fields, how they are parsed and how they are written.
//!
//! Every message is `type, msg_id, src_id` then the type's own fields in a fixed order
//! (upstream `src/message.py`). Fields are converted as upstream converts them (`int()`,
//! `str()`); `CONNECT_ACK`'s and `REQUEST_ACK`'s `reply` and the containers of `SET_ALL` /
//! `RESET` are kept as sent. Encoding re-serialises like upstream, so relays are byte-exact.

use crate::frame::push_field;
use crate::json::{py_int, py_str, write_str, write_value};
use crate::ot::{Operation, Part};
use serde_json::Value;
use std::fmt::Write;

pub const CONNECT: i64 = 1;
pub const OPERATION: i64 = 2;
pub const SET_MARK: i64 = 3;
pub const PASSWORD: i64 = 4;
pub const REMOVE: i64 = 5;
pub const EVALUATE_STRING: i64 = 6;
pub const EVALUATE_BLOCK: i64 = 7;
pub const GET_ALL: i64 = 8;
pub const SET_ALL: i64 = 9;
pub const SELECT: i64 = 10;
pub const RESET: i64 = 11;
pub const KILL: i64 = 12;
pub const CONNECT_ACK: i64 = 13;
pub const REQUEST_ACK: i64 = 14;
pub const CONSTRAINT: i64 = 15;
pub const CONSOLE: i64 = 16;
pub const KEEP_ALIVE: i64 = 17;

/// The text upstream sends with MSG_KILL when it shuts down.
pub const KILL_TEXT: &str = "Warning: Server manually killed by keyboard interrupt. Please close the application";

/// Total field count (type, msg_id, src_id and own fields) of a message type.
pub fn field_count(type_id: i64) -> Option<usize> {
    Some(match type_id {
        REMOVE | GET_ALL | KEEP_ALIVE => 3,
        KILL | CONNECT_ACK | CONSTRAINT | CONSOLE => 4,
        OPERATION | SET_MARK | EVALUATE_STRING | REQUEST_ACK => 5,
        PASSWORD | EVALUATE_BLOCK | SET_ALL | SELECT | RESET => 6,
        CONNECT => 7,
        _ => return None,
    })
}

/// A field that does not convert the way upstream converts it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message type {type_id}: field {field} has an unusable value")]
pub struct MessageError {
    pub type_id: i64,
    pub field: &'static str,
}

/// The type-specific part of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Connect { name: String, hostname: String, port: i64, dummy: i64 },
    Operation { operation: Operation, revision: i64 },
    SetMark { index: i64, reply: i64 },
    Password { password: String, name: String, version: String },
    Remove,
    EvaluateString { string: String, reply: i64 },
    EvaluateBlock { start: i64, end: i64, reply: i64 },
    GetAll,
    SetAll { document: String, peer_tag_loc: Value, peer_loc: Value },
    Select { start: i64, end: i64, reply: i64 },
    Reset { document: String, peer_tag_loc: Value, peer_loc: Value },
    Kill { string: String },
    ConnectAck { reply: Value },
    RequestAck { flag: i64, reply: Value },
    Constraint { constraint_id: i64 },
    Console { string: String },
    KeepAlive,
}

/// One Troop message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub msg_id: i64,
    pub src_id: i64,
    pub body: Body,
}

impl Message {
    /// A message the server makes itself (msg_id 0).
    pub fn new(src_id: i64, body: Body) -> Self {
        Message { msg_id: 0, src_id, body }
    }

    /// Builds a message from its type and the decoded JSON of the fields after the type.
    pub fn from_fields(type_id: i64, v: &[Value]) -> Result<Message, MessageError> {
        let err = |field| MessageError { type_id, field };
        let int = |k: usize, field| v.get(k).and_then(py_int).ok_or(err(field));
        let text = |k: usize, field| v.get(k).and_then(py_str).ok_or(err(field));
        let raw = |k: usize, field| v.get(k).cloned().ok_or(err(field));
        let msg_id = int(0, "msg_id")?;
        let src_id = int(1, "src_id")?;
        let body = match type_id {
            CONNECT => Body::Connect {
                name: text(2, "name")?,
                hostname: text(3, "hostname")?,
                port: int(4, "port")?,
                dummy: int(5, "dummy")?,
            },
            OPERATION => Body::Operation {
                operation: parse_operation(v.get(2)).ok_or(err("operation"))?,
                revision: int(3, "revision")?,
            },
            SET_MARK => Body::SetMark { index: int(2, "index")?, reply: int(3, "reply")? },
            PASSWORD => {
                Body::Password { password: text(2, "password")?, name: text(3, "name")?, version: text(4, "version")? }
            }
            REMOVE => Body::Remove,
            EVALUATE_STRING => Body::EvaluateString { string: text(2, "string")?, reply: int(3, "reply")? },
            EVALUATE_BLOCK => {
                Body::EvaluateBlock { start: int(2, "start")?, end: int(3, "end")?, reply: int(4, "reply")? }
            }
            GET_ALL => Body::GetAll,
            SET_ALL | RESET => {
                let document = text(2, "document")?;
                let peer_tag_loc = raw(3, "peer_tag_loc")?;
                let peer_loc = raw(4, "peer_loc")?;
                if type_id == SET_ALL {
                    Body::SetAll { document, peer_tag_loc, peer_loc }
                } else {
                    Body::Reset { document, peer_tag_loc, peer_loc }
                }
            }
            SELECT => Body::Select { start: int(2, "start")?, end: int(3, "end")?, reply: int(4, "reply")? },
            KILL => Body::Kill { string: text(2, "string")? },
            CONNECT_ACK => Body::ConnectAck { reply: raw(2, "reply")? },
            REQUEST_ACK => Body::RequestAck { flag: int(2, "flag")?, reply: raw(3, "reply")? },
            CONSTRAINT => Body::Constraint { constraint_id: int(2, "constraint_id")? },
            CONSOLE => Body::Console { string: text(2, "string")? },
            KEEP_ALIVE => Body::KeepAlive,
            _ => return Err(err("type")),
        };
        Ok(Message { msg_id, src_id, body })
    }

    /// The message type number.
    pub fn type_id(&self) -> i64 {
        match self.body {
            Body::Connect { .. } => CONNECT,
            Body::Operation { .. } => OPERATION,
            Body::SetMark { .. } => SET_MARK,
            Body::Password { .. } => PASSWORD,
            Body::Remove => REMOVE,
            Body::EvaluateString { .. } => EVALUATE_STRING,
            Body::EvaluateBlock { .. } => EVALUATE_BLOCK,
            Body::GetAll => GET_ALL,
            Body::SetAll { .. } => SET_ALL,
            Body::Select { .. } => SELECT,
            Body::Reset { .. } => RESET,
            Body::Kill { .. } => KILL,
            Body::ConnectAck { .. } => CONNECT_ACK,
            Body::RequestAck { .. } => REQUEST_ACK,
            Body::Constraint { .. } => CONSTRAINT,
            Body::Console { .. } => CONSOLE,
            Body::KeepAlive => KEEP_ALIVE,
        }
    }

    /// `None` for types without a `reply` field, else whether it equals 1 (Python `== 1`).
    pub fn reply_is_one(&self) -> Option<bool> {
        let raw_is_one = |v: &Value| match v {
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() == Some(1.0),
            _ => false,
        };
        match &self.body {
            Body::SetMark { reply, .. }
            | Body::EvaluateString { reply, .. }
            | Body::EvaluateBlock { reply, .. }
            | Body::Select { reply, .. } => Some(*reply == 1),
            Body::ConnectAck { reply } | Body::RequestAck { reply, .. } => Some(raw_is_one(reply)),
            _ => None,
        }
    }

    /// The wire form, as upstream would write it.
    pub fn encode(&self) -> String {
        let mut w = FieldWriter::default();
        w.int(self.type_id());
        w.int(self.msg_id);
        w.int(self.src_id);
        match &self.body {
            Body::Connect { name, hostname, port, dummy } => {
                w.text(name);
                w.text(hostname);
                w.int(*port);
                w.int(*dummy);
            }
            Body::Operation { operation, revision } => {
                w.json(|s| write_operation(s, operation));
                w.int(*revision);
            }
            Body::SetMark { index, reply } => {
                w.int(*index);
                w.int(*reply);
            }
            Body::Password { password, name, version } => {
                w.text(password);
                w.text(name);
                w.text(version);
            }
            Body::Remove | Body::GetAll | Body::KeepAlive => {}
            Body::EvaluateString { string, reply } => {
                w.text(string);
                w.int(*reply);
            }
            Body::EvaluateBlock { start, end, reply } | Body::Select { start, end, reply } => {
                w.int(*start);
                w.int(*end);
                w.int(*reply);
            }
            Body::SetAll { document, peer_tag_loc, peer_loc } | Body::Reset { document, peer_tag_loc, peer_loc } => {
                w.text(document);
                w.json(|s| write_value(s, peer_tag_loc));
                w.json(|s| write_value(s, peer_loc));
            }
            Body::Kill { string } | Body::Console { string } => w.text(string),
            Body::ConnectAck { reply } => w.json(|s| write_value(s, reply)),
            Body::RequestAck { flag, reply } => {
                w.int(*flag);
                w.json(|s| write_value(s, reply));
            }
            Body::Constraint { constraint_id } => w.int(*constraint_id),
        }
        w.out
    }
}

/// Writes fields one after the other, escaping `<` and `>` in their JSON.
#[derive(Default)]
struct FieldWriter {
    out: String,
    scratch: String,
}

impl FieldWriter {
    fn int(&mut self, n: i64) {
        let _ = write!(self.out, "<{n}>");
    }

    fn text(&mut self, t: &str) {
        self.json(|s| write_str(s, t));
    }

    fn json(&mut self, f: impl FnOnce(&mut String)) {
        self.scratch.clear();
        f(&mut self.scratch);
        push_field(&mut self.out, &self.scratch);
    }
}

/// An operation list: integers and strings only (what any real client sends).
fn parse_operation(v: Option<&Value>) -> Option<Operation> {
    let items = v?.as_array()?;
    let mut parts = Vec::with_capacity(items.len());
    for item in items {
        parts.push(match item {
            Value::Number(n) => Part::Int(n.as_i64()?),
            Value::String(s) => Part::Insert(s.clone()),
            _ => return None,
        });
    }
    Some(Operation::from(parts))
}

/// Writes an operation as a JSON list, `json.dumps` style.
pub fn write_operation(out: &mut String, op: &Operation) {
    out.push('[');
    for (k, part) in op.parts.iter().enumerate() {
        if k > 0 {
            out.push_str(", ");
        }
        match part {
            Part::Int(n) => drop(write!(out, "{n}")),
            Part::Insert(s) => write_str(out, s),
        }
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Decoder;

    fn roundtrip(wire: &str) -> String {
        let mut d = Decoder::new(1 << 20);
        d.feed(wire.as_bytes());
        d.next_message().unwrap().unwrap().encode()
    }

    #[test]
    fn relays_are_byte_exact() {
        for wire in [
            "<2><4><0><[4, -1, \"g\", 17]><2>",
            "<2><3><0><[\"x = \\\"\\<a\\>\\\" \\\\ y\\n\\tz\\>\"]><0>",
            "<16><4><0><\"\\<console\\> \\> out\\n\">",
            "<3><3><1><13><0>",
            "<11><0><-1><\"ab\"><[[0, 2]]><{\"0\": 2, \"1\": 0}>",
            "<13><1><0><0>",
            "<1><0><1><\"bob\"><\"127.0.0.1\"><4000><1>",
        ] {
            assert_eq!(roundtrip(wire), wire);
        }
    }

    #[test]
    fn huge_numbers_reencode_to_a_fixed_point() {
        // Found by fuzzing (troop_message): an integer too large for i64 is carried as a float,
        // and its re-encoding must decode to the same float.
        let wire = "<11><0><-1><\"ab\"><[[0]]><{\"0~\": 11111111111111111111111111111111111111111111112}>";
        let once = roundtrip(wire);
        assert_eq!(roundtrip(&once), once);
    }

    #[test]
    fn compact_and_raw_utf8_input_goes_out_canonical() {
        assert_eq!(roundtrip("<2><1><0><[1,\"é\"]><0>"), "<2><1><0><[1, \"\\u00e9\"]><0>");
    }

    #[test]
    fn refuses_unconvertible_fields() {
        let fields: Vec<Value> = serde_json::from_str("[1, 0, [1.5], 0]").unwrap();
        assert!(Message::from_fields(OPERATION, &fields).is_err());
        let fields: Vec<Value> = serde_json::from_str("[1, 0, \"x\", 0]").unwrap();
        assert!(Message::from_fields(SET_MARK, &fields).is_err());
    }
}
