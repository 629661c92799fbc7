//! What audience viewers receive on `GET /api/v1/sessions/{name}/live`: JSON text messages,
//! each with a `type`. A snapshot first (and again whenever the hub resynchronises), then the
//! session's events in its one order, then `ended`. Built once per event and shared by every
//! viewer. Performers' addresses, passwords and console text never appear here.

use super::doc::LiveDoc;
use serde::{Deserialize, Serialize};
use troop_server::control::{EvalKind, Event, EventKind, Performer};
use troop_server::ot::Operation;
use troop_server::session::ClientId;
use utoipa::ToSchema;

/// One message to viewers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum LiveMessage {
    /// The whole state: replaces whatever the viewer had.
    Snapshot(LiveSnapshot),
    /// A performer joined. `colour` indexes Troop's palette (client id % 10).
    Join { seq: u64, time_ms: u64, id: ClientId, name: String, colour: u8 },
    /// A performer left (their text keeps its colour).
    Leave { seq: u64, time_ms: u64, id: ClientId },
    /// An edit as the server applied it, in Troop's form: a positive number keeps that many
    /// characters, a negative one deletes, a string inserts; counted in Unicode code points.
    Operation {
        seq: u64,
        time_ms: u64,
        author: ClientId,
        #[schema(value_type = Vec<Object>, example = json!([3, "x", -1, 5]))]
        ops: serde_json::Value,
    },
    /// Code was run: `kind` "block" with lines `start..end` (1-based, `end` excluded, one line
    /// when equal), or "string".
    Evaluate {
        seq: u64,
        time_ms: u64,
        author: ClientId,
        kind: String,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end: Option<i64>,
    },
    /// A performer's cursor is at `index`.
    Mark { seq: u64, time_ms: u64, id: ClientId, index: i64 },
    /// A performer selected `start..end` (equal: nothing).
    Select { seq: u64, time_ms: u64, id: ClientId, start: i64, end: i64 },
    /// The owner removed a performer from the session (the reason they were given stays
    /// between the owner and them).
    Removed { seq: u64, time_ms: u64, id: ClientId, name: String },
    /// The owner locked the session to new performers, or unlocked it.
    Lock { seq: u64, time_ms: u64, locked: bool },
    /// The session ended, and why; the hub closes the socket after it.
    Ended { reason: String },
    /// The hub refuses or drops this viewer; with `retry` a new connection may succeed.
    Error { message: String, retry: bool },
    /// The next part of the last snapshot's document: a large document comes in parts of at
    /// most [`PART_BYTES`], the snapshot saying how many follow (`more`), at once, before any
    /// event. Append them in order.
    More { text: String },
}

/// The most document bytes one viewer message carries: each viewer's socket buffers one
/// message whole, and keeps that buffer while it stays, so a multi-MiB snapshot in one
/// message cost every viewer that much of the hub's memory.
pub const PART_BYTES: usize = 32 * 1024;

/// The state of a session for a viewer who arrives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LiveSnapshot {
    pub session: String,
    /// The number of the last event applied. Later events have larger numbers (numbers of
    /// events viewers do not get, such as console text, are skipped).
    pub revision: u64,
    pub document: String,
    pub performers: Vec<ViewerPerformer>,
    /// `[author, length]` runs covering the document in order; author `null` is text from
    /// before the hub followed the session.
    #[schema(value_type = Vec<Vec<Object>>, example = json!([[1, 5], [null, 3]]))]
    pub authors: Vec<(Option<ClientId>, u64)>,
    pub marks: Vec<ViewerMark>,
    /// Whether anyone with the link may watch.
    pub public: bool,
    /// When it was taken (Unix ms), in archived timelines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ms: Option<u64>,
    /// How many `more` messages follow with the rest of `document` (absent: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more: u32,
}

/// A performer as viewers see them: no address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ViewerPerformer {
    pub id: ClientId,
    pub name: String,
    pub colour: u8,
    pub since_ms: u64,
}

/// A performer's cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ViewerMark {
    pub id: ClientId,
    pub index: i64,
}

impl From<&Performer> for ViewerPerformer {
    fn from(p: &Performer) -> Self {
        ViewerPerformer { id: p.id, name: p.name.clone(), colour: p.colour, since_ms: p.since_ms }
    }
}

impl LiveSnapshot {
    pub fn new(session: &str, revision: u64, doc: &LiveDoc, performers: &[Performer], public: bool) -> Self {
        LiveSnapshot {
            session: session.to_string(),
            revision,
            document: doc.text().to_string(),
            performers: performers.iter().map(Into::into).collect(),
            authors: doc.runs().iter().map(|r| (r.author, r.len)).collect(),
            marks: doc.marks().iter().map(|(&id, &index)| ViewerMark { id, index }).collect(),
            public,
            time_ms: None,
            more: 0,
        }
    }

    /// This snapshot as viewers get it: one message, or (a document over [`PART_BYTES`]) the
    /// snapshot with the document's first part and `more` messages with the rest, each cut at
    /// a character boundary.
    pub fn into_parts(mut self) -> Vec<String> {
        let mut parts: Vec<String> = Vec::new();
        let mut rest = self.document.as_str();
        while rest.len() > PART_BYTES {
            let mut cut = PART_BYTES;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            parts.push(rest[..cut].to_string());
            rest = &rest[cut..];
        }
        parts.push(rest.to_string());
        let mut parts = parts.into_iter();
        self.document = parts.next().unwrap_or_default();
        let more: Vec<String> = parts.collect();
        self.more = u32::try_from(more.len()).unwrap_or(u32::MAX);
        std::iter::once(LiveMessage::Snapshot(self).to_text())
            .chain(more.into_iter().map(|text| LiveMessage::More { text }.to_text()))
            .collect()
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl LiveMessage {
    /// The viewers' form of a server event; `None` for what viewers do not get (console
    /// text, constraint changes, revision resets).
    pub fn from_event(e: &Event) -> Option<LiveMessage> {
        let (seq, time_ms) = (e.seq, e.time_ms);
        Some(match &e.kind {
            EventKind::Join { id, name, colour, .. } => {
                LiveMessage::Join { seq, time_ms, id: *id, name: name.clone(), colour: *colour }
            }
            EventKind::Leave { id } => LiveMessage::Leave { seq, time_ms, id: *id },
            EventKind::Operation { author, ops } => {
                LiveMessage::Operation { seq, time_ms, author: *author, ops: ops_json(ops) }
            }
            EventKind::Evaluate { author, kind, text, start, end } => LiveMessage::Evaluate {
                seq,
                time_ms,
                author: *author,
                kind: match kind {
                    EvalKind::String => "string".into(),
                    EvalKind::Block => "block".into(),
                },
                text: text.clone(),
                start: *start,
                end: *end,
            },
            EventKind::Mark { id, index } => LiveMessage::Mark { seq, time_ms, id: *id, index: *index },
            EventKind::Select { id, start, end } => {
                LiveMessage::Select { seq, time_ms, id: *id, start: *start, end: *end }
            }
            EventKind::Removed { id, name, .. } => LiveMessage::Removed { seq, time_ms, id: *id, name: name.clone() },
            EventKind::Lock { locked } => LiveMessage::Lock { seq, time_ms, locked: *locked },
            EventKind::Console { .. } | EventKind::Constraint { .. } | EventKind::Reset => return None,
        })
    }

    /// The JSON text sent on the socket.
    pub fn to_text(&self) -> String {
        // Cannot fail: every field is a string, number, list or string-keyed map.
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn ops_json(op: &Operation) -> serde_json::Value {
    serde_json::to_value(op).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use troop_server::ot::Part;

    #[test]
    fn events_become_messages_without_addresses() {
        let join = Event {
            seq: 1,
            time_ms: 5,
            kind: EventKind::Join { id: 2, name: "ann".into(), colour: 2, address: "10.0.0.9".into() },
        };
        let text = LiveMessage::from_event(&join).unwrap().to_text();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            json!({"type": "join", "seq": 1, "time_ms": 5, "id": 2, "name": "ann", "colour": 2})
        );
        let op = Operation::from(vec![Part::Int(3), Part::Insert("é".into()), Part::Int(-1)]);
        let e = Event { seq: 2, time_ms: 6, kind: EventKind::Operation { author: 2, ops: op } };
        let v = serde_json::to_value(LiveMessage::from_event(&e).unwrap()).unwrap();
        assert_eq!(v, json!({"type": "operation", "seq": 2, "time_ms": 6, "author": 2, "ops": [3, "é", -1]}));
        let console = Event { seq: 3, time_ms: 7, kind: EventKind::Console { author: 1, text: "secret".into() } };
        assert_eq!(LiveMessage::from_event(&console), None);
    }

    #[test]
    fn a_snapshot_carries_authors_and_marks() {
        let mut doc = LiveDoc::from_snapshot("ab", None);
        doc.apply(1, &Operation::from(vec![Part::Int(2), Part::Insert("c".into())])).unwrap();
        let p = Performer { id: 1, name: "bo".into(), colour: 1, since_ms: 9, address: "1.2.3.4".into() };
        let m = LiveMessage::Snapshot(LiveSnapshot::new("jam", 7, &doc, &[p], false));
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(
            v,
            json!({"type": "snapshot", "session": "jam", "revision": 7, "document": "abc",
                "performers": [{"id": 1, "name": "bo", "colour": 1, "since_ms": 9}],
                "authors": [[null, 2], [1, 1]], "marks": [{"id": 1, "index": 3}], "public": false})
        );
        assert!(!m.to_text().contains("1.2.3.4"));
    }
}

#[cfg(test)]
mod parts_tests {
    use super::*;
    use serde_json::Value;

    fn snapshot(document: &str) -> LiveSnapshot {
        let doc = LiveDoc::from_snapshot(document, None);
        LiveSnapshot::new("jam", 7, &doc, &[], false)
    }

    #[test]
    fn a_small_document_comes_whole_and_a_large_one_in_parts_cut_at_characters() {
        let small = snapshot("d1 >> play('x')").into_parts();
        assert_eq!(small.len(), 1);
        assert!(!small[0].contains("\"more\""), "{}", small[0]);
        // 100 KiB of three- and four-byte characters: parts never split one.
        let big: String = "é🎵x\n".repeat(100 * 1024 / 8);
        let parts = snapshot(&big).into_parts();
        assert!(parts.len() > 3, "{}", parts.len());
        let first: Value = serde_json::from_str(&parts[0]).unwrap_or_default();
        assert_eq!(first["type"], "snapshot");
        assert_eq!(first["more"].as_u64(), Some(parts.len() as u64 - 1));
        let mut whole = first["document"].as_str().unwrap_or_default().to_string();
        for part in &parts[1..] {
            let m: Value = serde_json::from_str(part).unwrap_or_default();
            assert_eq!(m["type"], "more");
            let text = m["text"].as_str().unwrap_or_default();
            assert!(!text.is_empty() && text.len() <= PART_BYTES, "{} bytes", text.len());
            whole.push_str(m["text"].as_str().unwrap_or_default());
        }
        assert_eq!(whole, big, "the parts make the document");
    }
}
