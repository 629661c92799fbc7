//! Session passwords at rest: an argon2id PHC string (OWASP parameters: 19 MiB, t = 2, p = 1,
//! random 16-byte salt) of the lowercase md5 hex that Troop clients send; the md5 itself is
//! never stored. Checks against a missing hash spend one argon2 computation all the same.

use argon2::password_hash::{self, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};

/// Memory cost in KiB (19 MiB).
const M_COST: u32 = 19 * 1024;
/// Iterations.
const T_COST: u32 = 2;
/// Lanes.
const P_COST: u32 = 1;

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HashError {
    #[error("no OS randomness for the salt: {0}")]
    Random(getrandom::Error),
    #[error("argon2: {0}")]
    Argon2(password_hash::Error),
}

fn hasher() -> Argon2<'static> {
    // The constants are valid; DEFAULT holds the same OWASP values should that ever change.
    let params = Params::new(M_COST, T_COST, P_COST, None).unwrap_or(Params::DEFAULT);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) of `md5_hex`.
pub(crate) fn hash(md5_hex: &str) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(HashError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(HashError::Argon2)?;
    let hash = hasher().hash_password(md5_hex.as_bytes(), &salt).map_err(HashError::Argon2)?;
    Ok(hash.to_string())
}

/// Whether `md5_hex` matches the stored PHC string. An unparsable string (a damaged row) never
/// matches and is logged.
pub(crate) fn verify(phc: &str, md5_hex: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => hasher().verify_password(md5_hex.as_bytes(), &parsed).is_ok(),
        Err(e) => {
            tracing::warn!(error = %e, "archive: a stored password hash does not parse; treated as not matching");
            dummy(md5_hex);
            false
        }
    }
}

/// The name key of `md5_hex` for sessions named `name`: argon2id (the same cost) with a salt
/// made from the name, hex. The same name and password always give the same key, so one
/// computation finds every session of a name that password proves; sessions of other names
/// have other salts.
pub(crate) fn name_key(name: &str, md5_hex: &str) -> Option<String> {
    let salt = format!("troop-hub-archive-name/{name}");
    let mut out = [0u8; 32];
    hasher().hash_password_into(md5_hex.as_bytes(), salt.as_bytes(), &mut out).ok()?;
    Some(out.iter().map(|b| format!("{b:02x}")).collect())
}

/// Spends what one [`verify`] costs, for answers about unknown sessions to take as long as
/// answers about known ones.
pub(crate) fn dummy(md5_hex: &str) {
    let mut out = [0u8; 32];
    // Only fails for out-of-range lengths, which these are not; the cost is spent either way.
    let _ = hasher().hash_password_into(md5_hex.as_bytes(), b"troop-hub-archive-dummy-salt", &mut out);
}
