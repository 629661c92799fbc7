//! The Troop hub protocol on the wire: 4 ASCII digits giving the length of the compact JSON
//! that follows. Replies are ASCII only (non-ASCII escaped) and sent as one write, because
//! Troop's `HubClient` reads the 4 digits and then reads the body once.

use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest body a frame can announce.
pub const MAX_BODY: usize = 9999;

/// A frame or request that cannot be used; the text is the reply's one sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("Bad frame: the length must be 4 ASCII digits")]
    BadLength,
    #[error("Bad frame: the length must be between 1 and 9999")]
    LengthOutOfRange,
    #[error("Bad frame: the request is not UTF-8 JSON")]
    BadJson,
    #[error("Bad request: it must be a JSON object")]
    NotAnObject,
    #[error("Request has no type")]
    NoType,
    #[error("Unknown request type '{0}'")]
    UnknownType(String),
    #[error("Request has no name")]
    NoName,
    #[error("Request has no password")]
    NoPassword,
    #[error("Field '{0}' has the wrong type")]
    WrongFieldType(&'static str),
    #[error("Invalid session name: {0}")]
    InvalidName(String),
    #[error("the connection closed")]
    Closed,
    #[error("reply too large for one frame")]
    ReplyTooLarge,
}

/// A request as the first frame of a connection.
#[derive(Debug, Clone)]
pub enum Request {
    /// Start a session; the connection becomes its owner (unless `daemon`).
    Server { name: String, password: SecretString, daemon: bool },
    /// Where is this session?
    Query { name: String },
    /// End a session (trusted addresses only).
    Kill { name: String },
    /// All sessions (trusted addresses only).
    List,
}

impl PartialEq for Request {
    fn eq(&self, other: &Self) -> bool {
        use secrecy::ExposeSecret;
        match (self, other) {
            (
                Request::Server { name: a, password: pa, daemon: da },
                Request::Server { name: b, password: pb, daemon: db },
            ) => a == b && pa.expose_secret() == pb.expose_secret() && da == db,
            (Request::Query { name: a }, Request::Query { name: b }) => a == b,
            (Request::Kill { name: a }, Request::Kill { name: b }) => a == b,
            (Request::List, Request::List) => true,
            _ => false,
        }
    }
}

impl Request {
    /// The request type, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Server { .. } => "server",
            Request::Query { .. } => "query",
            Request::Kill { .. } => "kill",
            Request::List => "list",
        }
    }
}

/// Checks a session name: 1 to 64 characters from `A-Z a-z 0-9 . _ -`.
pub fn validate_name(name: &str) -> Result<(), WireError> {
    if name.is_empty() {
        return Err(WireError::InvalidName("it is empty".into()));
    }
    if name.chars().count() > 64 {
        return Err(WireError::InvalidName("it is longer than 64 characters".into()));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(WireError::InvalidName(format!(
            "it may only use letters, digits, '.', '_' and '-' (found {bad:?})"
        )));
    }
    Ok(())
}

fn string_field(
    obj: &serde_json::Map<String, Value>,
    key: &'static str,
    missing: WireError,
) -> Result<String, WireError> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(missing),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(WireError::WrongFieldType(key)),
    }
}

/// Interprets the first frame of a connection.
pub fn parse_request(v: &Value) -> Result<Request, WireError> {
    let obj = v.as_object().ok_or(WireError::NotAnObject)?;
    let kind = string_field(obj, "type", WireError::NoType)?;
    let name = || -> Result<String, WireError> {
        let n = string_field(obj, "name", WireError::NoName)?;
        validate_name(&n)?;
        Ok(n)
    };
    match kind.as_str() {
        "server" => {
            let name = name()?;
            let password = string_field(obj, "password", WireError::NoPassword)?;
            let daemon = match obj.get("daemon") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(WireError::WrongFieldType("daemon")),
            };
            Ok(Request::Server { name, password: password.into(), daemon })
        }
        "query" => Ok(Request::Query { name: name()? }),
        "kill" => Ok(Request::Kill { name: name()? }),
        "list" => Ok(Request::List),
        other => Err(WireError::UnknownType(other.chars().take(40).collect())),
    }
}

/// One frame: 4 digits and compact ASCII JSON.
pub fn encode(v: &Value) -> Result<Vec<u8>, WireError> {
    let compact = serde_json::to_string(v).map_err(|_| WireError::ReplyTooLarge)?;
    let mut body = String::with_capacity(compact.len());
    for c in compact.chars() {
        if c.is_ascii() {
            body.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                body.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    if body.is_empty() || body.len() > MAX_BODY {
        return Err(WireError::ReplyTooLarge);
    }
    Ok(format!("{:04}{}", body.len(), body).into_bytes())
}

/// `{"error": message}` as a frame.
pub fn error_frame(message: &str) -> Vec<u8> {
    let mut msg: String = message.chars().take(400).collect();
    loop {
        if let Ok(f) = encode(&json!({ "error": msg })) {
            return f;
        }
        msg.truncate(msg.len() / 2);
    }
}

/// The body length announced by a frame's 4-byte prefix.
pub fn parse_length(prefix: &[u8]) -> Result<usize, WireError> {
    if prefix.len() != 4 || !prefix.iter().all(u8::is_ascii_digit) {
        return Err(WireError::BadLength);
    }
    let n: usize = std::str::from_utf8(prefix).ok().and_then(|s| s.parse().ok()).ok_or(WireError::BadLength)?;
    if n == 0 || n > MAX_BODY {
        return Err(WireError::LengthOutOfRange);
    }
    Ok(n)
}

/// A frame's JSON body.
pub fn parse_body(body: &[u8]) -> Result<Value, WireError> {
    serde_json::from_slice(body).map_err(|_| WireError::BadJson)
}

/// Decodes one whole frame held in memory (what [`read_frame`] does on a stream).
pub fn decode_frame(bytes: &[u8]) -> Result<Value, WireError> {
    let prefix = bytes.get(..4).ok_or(WireError::BadLength)?;
    let n = parse_length(prefix)?;
    parse_body(bytes.get(4..4 + n).ok_or(WireError::Closed)?)
}

/// Reads one frame. `Closed` on EOF before the first byte.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Value, WireError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]).await {
            Ok(0) if got == 0 => return Err(WireError::Closed),
            Ok(0) => return Err(WireError::BadLength),
            Ok(n) => got += n,
            Err(_) => return Err(WireError::Closed),
        }
        if !len[..got].iter().all(u8::is_ascii_digit) {
            return Err(WireError::BadLength);
        }
    }
    let n = parse_length(&len)?;
    let mut body = vec![0u8; n];
    r.read_exact(&mut body).await.map_err(|_| WireError::Closed)?;
    parse_body(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parsed_password_never_prints() {
        let r = parse_request(&json!({"type": "server", "name": "x", "password": "hunter2"}));
        let shown = format!("{r:?} {:?}", r.as_ref().map(Request::kind));
        assert!(!shown.contains("hunter2"), "{shown}");
        let start = crate::hub::StartRequest {
            name: "x".into(),
            password: "hunter2".to_string().into(),
            daemon: false,
            peer: None,
            ttl: None,
        };
        assert!(!format!("{start:?}").contains("hunter2"));
    }

    #[test]
    fn requests_parse_like_upstream_sends_them() {
        let v = json!({"type": "server", "name": "mySession", "password": "pw"});
        assert_eq!(
            parse_request(&v),
            Ok(Request::Server { name: "mySession".into(), password: "pw".into(), daemon: false })
        );
        assert_eq!(
            parse_request(&json!({"type": "query", "name": "a.b-c_d"})),
            Ok(Request::Query { name: "a.b-c_d".into() })
        );
        assert_eq!(parse_request(&json!({"name": "x"})), Err(WireError::NoType));
        assert_eq!(parse_request(&json!({"type": "dance"})), Err(WireError::UnknownType("dance".into())));
        assert_eq!(parse_request(&json!({"type": "server", "name": "x"})), Err(WireError::NoPassword));
        assert_eq!(parse_request(&json!({"type": "query"})), Err(WireError::NoName));
        assert_eq!(parse_request(&json!([1])), Err(WireError::NotAnObject));
        assert_eq!(parse_request(&json!({"type": "query", "name": 5})), Err(WireError::WrongFieldType("name")));
    }

    #[test]
    fn names_are_checked_with_a_reason() {
        assert!(validate_name("ok-Name_1.2").is_ok());
        for (bad, why) in [("", "empty"), (&"x".repeat(65), "longer than 64"), ("a b", "' '")] {
            let e = validate_name(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn frames_are_ascii_and_length_prefixed() {
        let f = encode(&json!({"error": "né"})).unwrap();
        assert_eq!(f, b"0019{\"error\":\"n\\u00e9\"}".to_vec());
        assert!(f.is_ascii());
        assert!(encode(&json!({"x": "y".repeat(10_000)})).is_err());
        assert!(error_frame(&"z".repeat(20_000)).len() <= 4 + MAX_BODY);
    }

    #[tokio::test]
    async fn bad_frames_are_refused() {
        for (input, want) in [
            (&b"00x1{}"[..], WireError::BadLength),
            (b"0000", WireError::LengthOutOfRange),
            (b"0002{]", WireError::BadJson),
            (b"", WireError::Closed),
        ] {
            let mut r = input;
            assert_eq!(read_frame(&mut r).await, Err(want), "{input:?}");
        }
        let mut r = &b"0015{\"type\":\"list\"}"[..];
        assert_eq!(read_frame(&mut r).await, Ok(json!({"type": "list"})));
    }
}
