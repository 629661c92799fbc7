//! The JSON the sessions API takes and gives, as types: serde reads and writes them, and
//! utoipa turns them into the OpenAPI document's schemas. The listing types are built from the
//! hub's own (every field named, so a field the hub adds is a compile error here, not a silent
//! gap in the API or its document).

use crate::audience::Access;
use crate::hub::{NodeInfo, PoolInfo, SessionInfo};
use secrecy::SecretString;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

/// A session to start through the API.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewSession {
    /// Letters, digits, '.', '_' and '-'; at most 64.
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub name: String,
    /// What performers join with (never shown, logged or listed).
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    /// How long it lives (default `api_session_ttl`, at most `api_session_max_ttl`).
    #[schema(nullable = false)]
    pub ttl: Option<Ttl>,
}

/// How long an API session lives: a duration like "30m", or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(Duration);

impl From<Ttl> for Duration {
    fn from(t: Ttl) -> Duration {
        t.0
    }
}

impl<'de> Deserialize<'de> for Ttl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ttl, D::Error> {
        struct TtlVisitor;
        impl Visitor<'_> for TtlVisitor {
            type Value = Ttl;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration like \"30m\" or a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, secs: u64) -> Result<Ttl, E> {
                Ok(Ttl(Duration::from_secs(secs)))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Ttl, E> {
                Err(E::custom("must be a positive number of seconds"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Ttl, E> {
                Err(E::custom("must be a whole number of seconds"))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Ttl, E> {
                humantime::parse_duration(s)
                    .map(Ttl)
                    .map_err(|_| E::custom(format!("'{s}' is not a duration like 30m")))
            }
        }
        d.deserialize_any(TtlVisitor)
    }
}

impl utoipa::PartialSchema for Ttl {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String).examples(["30m"]))
            .item(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)))
            .description(Some("A duration like \"30m\", or a number of seconds"))
            .into()
    }
}

impl ToSchema for Ttl {}

/// A session the API started.
#[derive(Debug, Serialize, ToSchema)]
pub struct Started {
    pub name: String,
    /// The host performers dial.
    pub host: String,
    pub port: u16,
    /// When it ends unless DELETEd first, in seconds from now.
    pub ttl_seconds: u64,
}

/// Where performers join a session.
#[derive(Debug, Serialize, ToSchema)]
pub struct Address {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Who may watch it in a browser at `/s/{name}` now: "public", "password" or "off".
    pub audience: Access,
    /// Whether its owner locked it to new performers (viewers are still welcome).
    pub locked: bool,
    /// With the admin token or its password: the session's whole record, as
    /// `GET /api/v1/sessions` lists it (performers, statistics, whether it is locked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<Session>,
}

/// Opens a session's audience view to everyone, or closes it again.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AudienceSwitch {
    /// The session's password (or send the admin token instead).
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<SecretString>,
    /// true: anyone with the link may watch; false: only who knows the password.
    pub public: bool,
}

/// A session's audience view after the switch.
#[derive(Debug, Serialize, ToSchema)]
pub struct AudienceState {
    pub name: String,
    pub audience: Access,
}

/// The owner's switch for a session's browser seats.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SeatSwitch {
    /// The session's password (or send the admin token instead).
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<SecretString>,
    /// true: performers may join from a browser; false: they may not, and open seats close.
    pub on: bool,
}

/// A session's browser seats after the switch.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeatState {
    pub name: String,
    /// Whether browser seats are on for it.
    pub on: bool,
    /// Seats open now.
    pub seats: usize,
}

/// Every session, by name.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<Session>,
}

/// A session as the listing shows it (never its password).
#[derive(Debug, Serialize, ToSchema)]
pub struct Session {
    pub name: String,
    pub id: String,
    /// The host performers dial.
    pub host: String,
    /// The node it runs on ("local" for the local Docker runtime).
    pub node: String,
    pub port: u16,
    /// "starting" or "running".
    #[schema(value_type = String, example = "running")]
    pub state: &'static str,
    /// When it was created, in seconds since 1970.
    pub created: u64,
    pub age_seconds: u64,
    /// Whether the connection that started it is still open (daemon sessions have none).
    pub owner_connected: bool,
    pub daemon: bool,
    /// Its container's short id, once it has one.
    pub container: Option<String>,
    /// Performers connected now, from the session's live stream.
    pub performers: Vec<Performer>,
    /// When something last happened in it, in seconds since 1970.
    pub last_activity: Option<u64>,
    /// Edits applied and code evaluations so far.
    pub operations: u64,
    pub evaluations: u64,
    /// Performers playing from a browser seat now (they are among `performers` too).
    pub seats: usize,
    /// Whether performers may join it from a browser.
    pub seats_on: bool,
    /// Whether its owner locked it to new performers.
    pub locked: bool,
    /// Statistics per performer (by name) since the hub followed it: characters typed and
    /// deleted, evaluations, active seconds and their share of the code now. On one session's
    /// record (`GET /api/v1/sessions/{name}`), not in the listing.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<std::collections::BTreeMap<String, crate::audience::PerformerStats>>)]
    pub stats: Option<crate::audience::StatsByName>,
}

/// A performer in a session (its address is never shown).
#[derive(Debug, Serialize, ToSchema)]
pub struct Performer {
    /// Its Troop client id in the session.
    pub id: i64,
    pub name: String,
    /// When it joined, in seconds since 1970.
    pub since: u64,
}

impl From<SessionInfo> for Session {
    fn from(s: SessionInfo) -> Session {
        let SessionInfo {
            name,
            id,
            host,
            node,
            port,
            state,
            created,
            age_seconds,
            owner_connected,
            daemon,
            container,
            performers,
            last_activity,
            operations,
            evaluations,
            seats,
            seats_on,
            locked,
            stats,
        } = s;
        let performers = performers.into_iter().map(|p| Performer { id: p.id, name: p.name, since: p.since }).collect();
        Session {
            name,
            id,
            host,
            node,
            port,
            state,
            created,
            age_seconds,
            owner_connected,
            daemon,
            container,
            performers,
            last_activity,
            operations,
            evaluations,
            seats,
            seats_on,
            locked,
            stats,
        }
    }
}

/// The placement table.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeList {
    pub nodes: Vec<Node>,
    pub pool: PoolInfo,
}

/// A machine sessions can run on.
#[derive(Debug, Serialize, ToSchema)]
pub struct Node {
    pub id: String,
    /// The host performers are given for sessions on it.
    pub host: String,
    /// Ready and active (drained or down nodes get no new sessions).
    pub usable: bool,
    pub sessions: usize,
    pub free_ports: usize,
    /// Warm pool members on it, ready or starting (their ports are not free).
    pub pool_members: usize,
}

impl From<NodeInfo> for Node {
    fn from(n: NodeInfo) -> Node {
        let NodeInfo { id, host, usable, sessions, free_ports, pool_members } = n;
        Node { id, host, usable, sessions, free_ports, pool_members }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn parse(body: &str) -> Result<NewSession, String> {
        serde_json::from_str(body).map_err(|e| e.to_string())
    }

    #[test]
    fn a_new_session_reads_its_ttl_as_a_duration_or_seconds_and_hides_its_password() {
        let s = parse(r#"{"name":"a","password":"pw","ttl":"10m"}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.ttl, Some(Ttl(Duration::from_secs(600))));
        assert_eq!(s.password.expose_secret(), "pw");
        assert!(!format!("{s:?}").contains("pw\""), "the password never prints: {s:?}");
        let s = parse(r#"{"name":"a","password":"pw","ttl":90}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.ttl, Some(Ttl(Duration::from_secs(90))));
        let s = parse(r#"{"name":"a","password":"pw","ttl":null}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.ttl, None);
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        let err = |body: &str| parse(body).err().unwrap_or_default();
        assert!(err(r#"{"password":"p"}"#).contains("missing field `name`"));
        assert!(err(r#"{"name":"a"}"#).contains("missing field `password`"));
        assert!(err(r#"{"name":"a","password":5}"#).contains("invalid type: integer `5`"));
        assert!(err(r#"{"name":"a","password":"p","ttl":-5}"#).contains("must be a positive number of seconds"));
        assert!(err(r#"{"name":"a","password":"p","ttl":"soon"}"#).contains("'soon' is not a duration like 30m"));
        assert!(err(r#"{"name":"a","password":"p","ttl":true}"#).contains("a duration like \"30m\""));
    }

    #[test]
    fn a_listed_session_serializes_like_the_hubs_own() {
        let info = SessionInfo {
            name: "n".into(),
            id: "i".into(),
            host: "h".into(),
            node: "local".into(),
            port: 1,
            state: "running",
            created: 2,
            age_seconds: 3,
            owner_connected: true,
            daemon: false,
            container: None,
            performers: vec![crate::hub::PerformerInfo { id: 1, name: "alice".into(), since: 4 }],
            last_activity: Some(5),
            operations: 6,
            evaluations: 7,
            seats: 1,
            seats_on: true,
            locked: true,
            stats: Some(
                [("alice".to_string(), crate::audience::PerformerStats { typed: 3, share: 0.5, ..Default::default() })]
                    .into(),
            ),
        };
        let hubs = serde_json::to_value(&info).unwrap_or_default();
        assert_eq!(serde_json::to_value(Session::from(info)).unwrap_or_default(), hubs);
    }
}
