//! Comparing secrets without leaking them through timing, and judging an admin token's
//! strength. Secrets are compared as SHA-256 digests with `subtle`, so neither their content
//! nor their length shows in how long a comparison takes.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The least an admin token must carry, in bits.
pub const MIN_TOKEN_BITS: f64 = 128.0;

/// Whether two secrets are equal, in time that depends on neither.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

/// What a token can carry at most, in bits: its length times the bits per character of the
/// smallest usual alphabet it is written in (hex 4, letters and digits or base64 6, any
/// printable character 6.55). A random token of that alphabet carries that much; a chosen
/// word carries less, which no count can see.
pub fn token_bits(token: &str) -> f64 {
    let per_char: f64 = if token.chars().all(|c| c.is_ascii_hexdigit()) {
        4.0
    } else if token.chars().all(|c| c.is_ascii_alphanumeric() || "+/=-_".contains(c)) {
        6.0
    } else {
        94f64.log2()
    };
    token.chars().count() as f64 * per_char
}

/// `Err(sentence)` when an admin token is too short to resist guessing, naming the fix.
pub fn check_token_strength(token: &str) -> Result<(), String> {
    let bits = token_bits(token);
    if bits >= MIN_TOKEN_BITS {
        return Ok(());
    }
    Err(format!(
        "the admin token is too weak ({} characters, at most {bits:.0} bits; at least {MIN_TOKEN_BITS:.0} are needed): \
         make one with `openssl rand -hex 32` and put it in TROOP_HUB_ADMIN_TOKEN or admin_token_file",
        token.chars().count()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_and_unequal_secrets_of_any_length() {
        assert!(same(b"s3cret", b"s3cret"));
        assert!(!same(b"s3cret", b"s3cres"));
        assert!(!same(b"s3cret", b"s3cret-and-more"));
        assert!(!same(b"", b"x"));
    }

    #[test]
    fn tokens_under_128_bits_are_refused_with_the_fix() {
        assert!(check_token_strength(&"a1".repeat(16)).is_ok(), "openssl rand -hex 16: 128 bits");
        assert!(check_token_strength("0123456789abcdef0123456789abcde").is_err(), "31 hex characters");
        assert!(check_token_strength("dGhpcyBpcyBhIGJhc2U2NCB0").is_ok(), "22+ base64 characters");
        let why = check_token_strength("s3cret").unwrap_err();
        assert!(why.contains("openssl rand -hex 32"), "{why}");
        assert!(!why.contains("s3cret"), "the token itself is never repeated");
    }
}
