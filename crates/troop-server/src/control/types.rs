//! The control channel's JSON shapes: requests, snapshots and events, as serde types shared
//! by the server and the client.

use crate::ot::{Operation, Part};
use crate::session::ClientId;
use serde::{Deserialize, Deserializer, Serialize};

/// One request from the hub: `{"op": "...", ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Sets the password; `name` and `idle_exit_ms` are left as they were when absent, and
    /// `idle_exit_ms: null` means never.
    Arm {
        password_md5: String,
        #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
        name: Option<Option<String>>,
        #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
        idle_exit_ms: Option<Option<u64>>,
        /// Kept for older hubs: every arm is refused (`"already armed"`) once the server is
        /// armed, with this flag or without it; a server is armed for one session only.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        once: bool,
    },
    /// `{"ok": true, "match": bool}`: whether this is the session's password md5.
    Verify {
        password_md5: String,
    },
    Snapshot,
    Subscribe,
    /// Every performer gets MSG_KILL with `reason`, then the server exits.
    End {
        reason: String,
    },
    /// Every joined performer called `name` gets MSG_KILL with `reason` and is disconnected;
    /// `{"ok": true, "removed": [ids]}` (empty when nobody by that name is joined).
    Remove {
        name: String,
        reason: String,
    },
    /// Locks the session to new performers (those joined now may come back) or unlocks it;
    /// `{"ok": true, "locked": bool}`.
    Lock {
        locked: bool,
    },
}

/// A field that is present (possibly `null`) deserializes to `Some(value)`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// The session as a whole at one point of its event order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Whether the session has a password (a locked server is not armed until `arm`).
    pub armed: bool,
    /// The display name given by `arm`.
    pub name: Option<String>,
    /// The number of the last event applied; the document is the server's at that point.
    pub seq: u64,
    pub document: String,
    /// Joined, connected performers, in the order they first joined.
    pub performers: Vec<Performer>,
    pub counters: Counters,
    /// Unix time (ms) of the last event, if any.
    pub last_activity_ms: Option<u64>,
    /// Locked to new performers by the owner (`lock`); absent from older servers.
    #[serde(default)]
    pub locked: bool,
}

/// A joined, connected Troop client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Performer {
    pub id: ClientId,
    pub name: String,
    /// Index into upstream Troop's peer palette, see [`super::PALETTE`].
    pub colour: u8,
    /// Unix time (ms) of its join.
    pub since_ms: u64,
    /// The address its connection comes from.
    pub address: String,
}

/// Totals since the server started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Operations applied to the document.
    pub operations: u64,
    /// EVALUATE_STRING and EVALUATE_BLOCK messages relayed.
    pub evaluations: u64,
    /// Bytes queued to performers.
    pub bytes_relayed: u64,
}

/// One numbered event: `{"seq": N, "time_ms": T, "event": "...", ...}`. Read in one pass
/// through [`FlatEvent`] (serde's `flatten` would buffer every event twice).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "FlatEvent")]
pub struct Event {
    /// One more than the previous event's, in the session's one global order.
    pub seq: u64,
    /// Unix time (ms) at which the server published it.
    pub time_ms: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened. Ids are client ids (`src_id` as Troop clients attribute messages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum EventKind {
    /// A performer joined (MSG_CONNECT).
    Join { id: ClientId, name: String, colour: u8, address: String },
    /// A joined performer's connection ended.
    Leave { id: ClientId },
    /// An operation as the server applied it (after transformation).
    Operation { author: ClientId, ops: Operation },
    /// Code was evaluated: the string, or the document text of the lines of a block.
    Evaluate {
        author: ClientId,
        kind: EvalKind,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end: Option<i64>,
    },
    /// A performer's cursor moved.
    Mark { id: ClientId, index: i64 },
    /// A performer's selection changed.
    Select { id: ClientId, start: i64, end: i64 },
    /// Console text a performer shared.
    Console { author: ClientId, text: String },
    /// The session's constraint changed.
    Constraint { id: i64 },
    /// A join reset the revisions (the document is unchanged).
    Reset,
    /// The hub removed a performer (`remove`): it got MSG_KILL with `reason`; its `leave`
    /// follows.
    Removed { id: ClientId, name: String, reason: String },
    /// The session was locked to new performers, or unlocked (`lock`).
    Lock { locked: bool },
}

/// Every field an event frame can have, for reading one in a single pass.
#[derive(Deserialize)]
struct FlatEvent {
    seq: u64,
    time_ms: u64,
    event: Tag,
    id: Option<ClientId>,
    name: Option<String>,
    colour: Option<u8>,
    address: Option<String>,
    author: Option<ClientId>,
    ops: Option<Operation>,
    kind: Option<EvalKind>,
    text: Option<String>,
    start: Option<i64>,
    end: Option<i64>,
    index: Option<i64>,
    reason: Option<String>,
    locked: Option<bool>,
}

/// The `event` field.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Tag {
    Join,
    Leave,
    Operation,
    Evaluate,
    Mark,
    Select,
    Console,
    Constraint,
    Reset,
    Removed,
    Lock,
}

impl TryFrom<FlatEvent> for Event {
    type Error = String;

    fn try_from(f: FlatEvent) -> Result<Event, String> {
        let missing = |field: &str| format!("{:?} event without {field}", f.event);
        let id = f.id.ok_or_else(|| missing("id"));
        let author = f.author.ok_or_else(|| missing("author"));
        let kind = match f.event {
            Tag::Join => EventKind::Join {
                id: id?,
                name: f.name.ok_or_else(|| missing("name"))?,
                colour: f.colour.ok_or_else(|| missing("colour"))?,
                address: f.address.ok_or_else(|| missing("address"))?,
            },
            Tag::Leave => EventKind::Leave { id: id? },
            Tag::Operation => EventKind::Operation { author: author?, ops: f.ops.ok_or_else(|| missing("ops"))? },
            Tag::Evaluate => EventKind::Evaluate {
                author: author?,
                kind: f.kind.ok_or_else(|| missing("kind"))?,
                text: f.text.ok_or_else(|| missing("text"))?,
                start: f.start,
                end: f.end,
            },
            Tag::Mark => EventKind::Mark { id: id?, index: f.index.ok_or_else(|| missing("index"))? },
            Tag::Select => EventKind::Select {
                id: id?,
                start: f.start.ok_or_else(|| missing("start"))?,
                end: f.end.ok_or_else(|| missing("end"))?,
            },
            Tag::Console => EventKind::Console { author: author?, text: f.text.ok_or_else(|| missing("text"))? },
            Tag::Constraint => EventKind::Constraint { id: id? },
            Tag::Reset => EventKind::Reset,
            Tag::Removed => EventKind::Removed {
                id: id?,
                name: f.name.ok_or_else(|| missing("name"))?,
                reason: f.reason.ok_or_else(|| missing("reason"))?,
            },
            Tag::Lock => EventKind::Lock { locked: f.locked.ok_or_else(|| missing("locked"))? },
        };
        Ok(Event { seq: f.seq, time_ms: f.time_ms, kind })
    }
}

/// Which evaluate message it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalKind {
    String,
    Block,
}

/// An operation part as Troop writes it: an integer (retain / delete) or a string (insert).
impl<'de> Deserialize<'de> for Part {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Part, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Part;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Part, E> {
                Ok(Part::Int(n))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Part, E> {
                i64::try_from(n).map(Part::Int).map_err(|_| E::custom("integer out of range"))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Part, E> {
                Ok(Part::Insert(s.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Part, E> {
                Ok(Part::Insert(s))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arm_tells_absent_from_null() {
        let absent: Request = serde_json::from_value(json!({"op": "arm", "password_md5": "x"})).unwrap();
        assert_eq!(absent, Request::Arm { password_md5: "x".into(), name: None, idle_exit_ms: None, once: false });
        let null: Request =
            serde_json::from_value(json!({"op": "arm", "password_md5": "x", "name": null, "idle_exit_ms": null}))
                .unwrap();
        assert_eq!(
            null,
            Request::Arm { password_md5: "x".into(), name: Some(None), idle_exit_ms: Some(None), once: false }
        );
        assert_eq!(serde_json::to_value(&null).unwrap()["idle_exit_ms"], json!(null));
    }

    #[test]
    fn events_are_flat_objects() {
        let op = Operation::from(vec![crate::ot::Part::Int(2), crate::ot::Part::Insert("x".into())]);
        let e = Event { seq: 3, time_ms: 9, kind: EventKind::Operation { author: 1, ops: op } };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v, json!({"seq": 3, "time_ms": 9, "event": "operation", "author": 1, "ops": [2, "x"]}));
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), e);
        let reset = serde_json::to_value(Event { seq: 4, time_ms: 9, kind: EventKind::Reset }).unwrap();
        assert_eq!(reset, json!({"seq": 4, "time_ms": 9, "event": "reset"}));
        let s: Event = serde_json::from_value(json!({"seq": 5, "time_ms": 1, "event": "evaluate", "author": 0,
            "kind": "string", "text": "x"}))
        .unwrap();
        assert!(matches!(s.kind, EventKind::Evaluate { kind: EvalKind::String, start: None, .. }));
        assert!(serde_json::from_value::<Event>(json!({"seq": 1, "time_ms": 1, "event": "leave"})).is_err());
        let removed =
            Event { seq: 6, time_ms: 2, kind: EventKind::Removed { id: 1, name: "b".into(), reason: "r".into() } };
        let v = serde_json::to_value(&removed).unwrap();
        assert_eq!(v, json!({"seq": 6, "time_ms": 2, "event": "removed", "id": 1, "name": "b", "reason": "r"}));
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), removed);
        let lock = Event { seq: 7, time_ms: 2, kind: EventKind::Lock { locked: true } };
        let v = serde_json::to_value(&lock).unwrap();
        assert_eq!(v, json!({"seq": 7, "time_ms": 2, "event": "lock", "locked": true}));
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), lock);
        assert!(serde_json::from_value::<Event>(json!({"seq": 1, "time_ms": 1, "event": "party"})).is_err());
    }
}
