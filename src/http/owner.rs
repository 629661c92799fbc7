//! Who may act as a session's owner over HTTP (moderation, share links): the admin token, or
//! the session's password, checked through the hub's password gate like every other one.
//! Scripts send it in `X-Session-Password`; a password that is not ASCII goes there in the
//! RFC 8187 form `utf-8''<percent-encoded>` (browsers cannot put other characters in a
//! header), or in the JSON body's `"password"` where a request has a body.

use super::archive::PASSWORD_HEADER;
use super::auth::owner_or_admin;
use super::error::ApiError;
use crate::hub::Hub;
use axum::http::HeaderMap;
use secrecy::SecretString;
use std::net::IpAddr;

/// The RFC 8187 prefix of a percent-encoded UTF-8 header value.
const UTF8_PREFIX: &str = "utf-8''";

/// The password in `X-Session-Password`, if one was sent.
pub fn header_password(headers: &HeaderMap) -> Result<Option<SecretString>, ApiError> {
    let Some(value) = headers.get(PASSWORD_HEADER) else { return Ok(None) };
    let text = value.to_str().map_err(|_| {
        ApiError::bad_request("X-Session-Password must be ASCII; send utf-8''<percent-encoded> for others")
    })?;
    let prefixed = text.get(..UTF8_PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(UTF8_PREFIX));
    if !prefixed {
        return Ok(Some(SecretString::from(text.to_string())));
    }
    let decoded = percent_encoding::percent_decode_str(&text[UTF8_PREFIX.len()..])
        .decode_utf8()
        .map_err(|_| ApiError::bad_request("X-Session-Password's utf-8'' value is not percent-encoded UTF-8"))?;
    Ok(Some(SecretString::from(decoded.into_owned())))
}

/// Passes the admin, or the session's password from the header or else `body_password`.
pub async fn owner(
    hub: &Hub,
    name: &str,
    ip: IpAddr,
    admin: bool,
    headers: &HeaderMap,
    body_password: Option<SecretString>,
) -> Result<(), ApiError> {
    let password = header_password(headers)?.or(body_password);
    owner_or_admin(hub, name, ip, admin, password.as_ref()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use secrecy::ExposeSecret;

    fn read(value: &[u8]) -> Result<Option<String>, ApiError> {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.insert(PASSWORD_HEADER, v);
        }
        header_password(&headers).map(|p| p.map(|p| p.expose_secret().to_string()))
    }

    #[test]
    fn ascii_as_it_is_and_others_percent_encoded() {
        assert_eq!(read(b"pw gig").ok().flatten().as_deref(), Some("pw gig"));
        assert_eq!(read(b"UTF-8''pw%20%C3%BCber%20%F0%9F%8E%B5").ok().flatten().as_deref(), Some("pw über 🎵"));
        assert!(read(b"utf-8''%FF").is_err(), "not UTF-8");
        assert!(read("über".as_bytes()).is_err(), "raw non-ASCII bytes");
        assert_eq!(header_password(&HeaderMap::new()).ok().flatten().map(|_| ()), None);
    }
}
