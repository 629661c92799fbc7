//! The browser seat's messages (SEAT.md): what a page may send and how each becomes a Troop
//! 0.10.3 message, and how the Troop messages a session's server sends become the page's JSON.
//! Pure translation, no sockets: `http/seat.rs` carries them.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use troop_server::message::Body;
use troop_server::ot::Operation;

/// A page's message after its `join`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FromPage {
    Operation { ops: Operation, revision: i64 },
    Mark { index: i64 },
    Select { start: i64, end: i64 },
    Evaluate { start: i64, end: i64 },
    EvaluateString { string: String },
    Ack,
}

/// A page's first message.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Join {
    Join { name: String, password: secrecy::SecretString },
}

/// The longest performer name a seat may take (Troop's own clients have no limit; the hub's
/// pages and logs need one).
pub const MAX_NAME_CHARS: usize = 32;

/// Checks a performer's name: 1 to [`MAX_NAME_CHARS`] characters, no control characters, not
/// only spaces. The sentence says what is wrong.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    let chars = name.chars().count();
    if name.trim().is_empty() {
        return Err("Give a performer name");
    }
    if chars > MAX_NAME_CHARS {
        return Err("A performer name has at most 32 characters");
    }
    if name.chars().any(|c| c.is_control() || invisible(c)) {
        return Err("A performer name cannot hold control or invisible characters");
    }
    Ok(())
}

/// Characters that show nothing or turn text around (zero-width, bidi overrides and isolates,
/// word joiners, the BOM): in a name they would hide it or let it pass for another.
fn invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}' | '\u{00AD}')
}

impl FromPage {
    /// The Troop message body this becomes; `Err` with a sentence when a value is out of
    /// range (the server would refuse it or misread it).
    pub fn into_body(self) -> Result<Body, &'static str> {
        let index = |n: i64| if n >= 0 { Ok(n) } else { Err("A position cannot be negative") };
        Ok(match self {
            FromPage::Operation { ops, revision } => Body::Operation { operation: ops, revision: index(revision)? },
            FromPage::Mark { index: i } => Body::SetMark { index: index(i)?, reply: 0 },
            FromPage::Select { start, end } => Body::Select { start: index(start)?, end: index(end)?, reply: 0 },
            // As Troop's client sends them: evaluations come back to their sender too (reply 1),
            // which runs them then, like every other peer; cursors and selections do not.
            FromPage::Evaluate { start, end } => {
                Body::EvaluateBlock { start: index(start)?, end: index(end)?, reply: 1 }
            }
            FromPage::EvaluateString { string } => Body::EvaluateString { string, reply: 1 },
            FromPage::Ack => Body::ConnectAck { reply: Value::from(0) },
        })
    }
}

/// What the hub sends a page.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToPage {
    Welcome { id: i64, name: String, session: String },
    Connect { src: i64, name: String },
    Remove { src: i64 },
    RequestAck { flag: i64 },
    Reset { document: String, peer_tag_loc: Value, peer_loc: Value },
    Operation { src: i64, ops: Operation, revision: i64 },
    Mark { src: i64, index: i64 },
    Select { src: i64, start: i64, end: i64 },
    Evaluate { src: i64, start: i64, end: i64 },
    EvaluateString { src: i64, string: String },
    Console { string: String },
    Constraint { id: i64 },
    Kill { string: String },
    Error { message: String, retry: bool },
}

impl ToPage {
    /// The page's form of a message from the session's server; `None` for what a client
    /// answers itself or never gets (keep-alives, logins, requests for everything).
    pub fn from_troop(src: i64, body: Body) -> Option<ToPage> {
        Some(match body {
            Body::Connect { name, .. } => ToPage::Connect { src, name },
            Body::Remove => ToPage::Remove { src },
            Body::RequestAck { flag, .. } => ToPage::RequestAck { flag },
            Body::Reset { document, peer_tag_loc, peer_loc } | Body::SetAll { document, peer_tag_loc, peer_loc } => {
                ToPage::Reset { document, peer_tag_loc, peer_loc }
            }
            Body::Operation { operation, revision } => ToPage::Operation { src, ops: operation, revision },
            Body::SetMark { index, .. } => ToPage::Mark { src, index },
            Body::Select { start, end, .. } => ToPage::Select { src, start, end },
            Body::EvaluateBlock { start, end, .. } => ToPage::Evaluate { src, start, end },
            Body::EvaluateString { string, .. } => ToPage::EvaluateString { src, string },
            Body::Console { string } => ToPage::Console { string },
            Body::Constraint { constraint_id } => ToPage::Constraint { id: constraint_id },
            Body::Kill { string } => ToPage::Kill { string },
            Body::KeepAlive | Body::Password { .. } | Body::GetAll | Body::ConnectAck { .. } => return None,
        })
    }

    /// The JSON text the page gets.
    pub fn to_text(&self) -> String {
        // Serialising these types cannot fail (string keys, no maps with other keys).
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<FromPage, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn page_messages_become_the_troop_messages_a_troop_client_sends() {
        let op = parse(json!({"type": "operation", "ops": [3, "🎵", -1, 2], "revision": 7})).unwrap();
        let Body::Operation { operation, revision } = op.into_body().unwrap() else { panic!() };
        assert_eq!((operation.base_len(), revision), (6, 7));
        assert_eq!(
            parse(json!({"type": "evaluate", "start": 2, "end": 5})).unwrap().into_body().unwrap(),
            Body::EvaluateBlock { start: 2, end: 5, reply: 1 }
        );
        assert_eq!(parse(json!({"type": "ack"})).unwrap().into_body().unwrap(), Body::ConnectAck { reply: json!(0) });
        assert_eq!(
            parse(json!({"type": "mark", "index": 4})).unwrap().into_body().unwrap(),
            Body::SetMark { index: 4, reply: 0 }
        );
    }

    #[test]
    fn what_a_page_may_not_send_is_refused() {
        for bad in [
            json!({"type": "kill", "string": "x"}),
            json!({"type": "remove"}),
            json!({"type": "operation", "ops": [1, {"x": 1}], "revision": 0}),
            json!({"type": "operation", "ops": [1], "revision": 0, "src": 9}),
            json!({"type": "mark"}),
            json!("hello"),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad} was taken");
        }
        let negative = parse(json!({"type": "select", "start": -1, "end": 2})).unwrap();
        assert!(negative.into_body().is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("alice 🎵").is_ok());
        assert!(check_name("  ").is_err());
        assert!(check_name("a\nb").is_err());
        assert!(check_name(&"x".repeat(33)).is_err());
        assert!(check_name("al\u{200B}ice").is_err(), "zero-width");
        assert!(check_name("\u{202E}ecila").is_err(), "right-to-left override");
    }

    #[test]
    fn server_messages_reach_the_page_and_keep_alives_do_not() {
        let reset = ToPage::from_troop(
            -1,
            Body::Reset { document: "ü\n".into(), peer_tag_loc: json!({"1": [[0, 2]]}), peer_loc: json!({"1": 2}) },
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&reset).unwrap(),
            json!({"type": "reset", "document": "ü\n", "peer_tag_loc": {"1": [[0, 2]]}, "peer_loc": {"1": 2}})
        );
        let mut op = Operation::new();
        op.retain(1).insert("x");
        assert_eq!(
            ToPage::from_troop(3, Body::Operation { operation: op, revision: 4 }).unwrap().to_text(),
            r#"{"type":"operation","src":3,"ops":[1,"x"],"revision":4}"#
        );
        assert_eq!(ToPage::from_troop(-1, Body::KeepAlive), None);
    }
}
