//! Session passwords at rest: an argon2id PHC string (OWASP parameters: 19 MiB, t = 2, p = 1,
//! random 16-byte salt) of the lowercase md5 hex that Troop clients send; the md5 itself is
//! never stored. Checks against a missing hash spend one argon2 computation all the same.
//!
//! Every computation borrows its 19 MiB work area from [`WorkAreas`] and gives it back: at most
//! as many areas exist as hashes ever ran at once (the hasher thread's one plus the HTTP
//! gate's two), so the hub neither maps and unmaps 19 MiB per check nor leaves freed areas
//! fragmenting malloc's heap. Areas unused for a while go back to the system
//! ([`release_idle_work_areas`]): a hub at rest does not hold 19 MiB for the next start.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use argon2::password_hash::{self, Output, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};

/// Memory cost in KiB (19 MiB).
const M_COST: u32 = 19 * 1024;
/// Iterations.
const T_COST: u32 = 2;
/// Lanes.
const P_COST: u32 = 1;
/// Bytes of a new hash's output.
const OUTPUT_LEN: usize = 32;
/// Work areas kept for reuse; more than this many hashes at once free their extra areas.
const KEPT_AREAS: usize = 4;

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HashError {
    #[error("no OS randomness for the salt: {0}")]
    Random(getrandom::Error),
    #[error("argon2: {0}")]
    Argon2(password_hash::Error),
    #[error("argon2: {0}")]
    Compute(argon2::Error),
}

fn params() -> Params {
    // The constants are valid; DEFAULT holds the same OWASP values should that ever change.
    Params::new(M_COST, T_COST, P_COST, Some(OUTPUT_LEN)).unwrap_or(Params::DEFAULT)
}

/// The argon2 work areas that finished hashes left behind, for the next ones, each with the
/// time its last hash finished.
struct WorkAreas(Mutex<Vec<(Area, Instant)>>);

/// One argon2 work area (19 MiB).
type Area = Box<[Block]>;

static AREAS: WorkAreas = WorkAreas::new();

/// Frees the kept work areas no hash has used for `idle`; returns how many were freed.
pub fn release_idle_work_areas(idle: Duration) -> usize {
    AREAS.release_idle(idle, Instant::now())
}

impl WorkAreas {
    const fn new() -> Self {
        WorkAreas(Mutex::new(Vec::new()))
    }

    fn release_idle(&self, idle: Duration, now: Instant) -> usize {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let before = kept.len();
        kept.retain(|(_, done)| now.saturating_duration_since(*done) < idle);
        before - kept.len()
    }

    /// Runs argon2id with `params` into `out`, on a reused work area.
    fn compute(&self, params: Params, pwd: &[u8], salt: &[u8], out: &mut [u8]) -> Result<(), argon2::Error> {
        let blocks = params.block_count();
        // The most recently used first: under a steady trickle of hashes the others go idle.
        let reused = self.0.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut area = match reused {
            Some((area, _)) if area.len() == blocks => area,
            _ => vec![Block::default(); blocks].into_boxed_slice(),
        };
        let result = Argon2::new(Algorithm::Argon2id, Version::V0x13, params).hash_password_into_with_memory(
            pwd,
            salt,
            out,
            &mut area[..],
        );
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() < KEPT_AREAS {
            kept.push((area, Instant::now()));
        }
        result
    }

    #[cfg(test)]
    fn kept(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) of `md5_hex`.
pub(crate) fn hash(md5_hex: &str) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(HashError::Random)?;
    let mut out = [0u8; OUTPUT_LEN];
    AREAS.compute(params(), md5_hex.as_bytes(), &salt, &mut out).map_err(HashError::Compute)?;
    let salt = SaltString::encode_b64(&salt).map_err(HashError::Argon2)?;
    let out = Output::new(&out).map_err(HashError::Argon2)?;
    Ok(format!("$argon2id$v=19$m={M_COST},t={T_COST},p={P_COST}${}${out}", salt.as_str()))
}

/// Whether `md5_hex` matches the stored PHC string. A string that does not parse, or asks for
/// another algorithm or more memory than the hub's own (a damaged row), never matches and is
/// logged.
pub(crate) fn verify(phc: &str, md5_hex: &str) -> bool {
    match stored(phc) {
        Ok((params, salt, expected)) => {
            let mut out = vec![0u8; expected.len()];
            let computed = AREAS.compute(params, md5_hex.as_bytes(), &salt, &mut out).is_ok();
            // Output's equality is constant-time.
            computed && Output::new(&out).is_ok_and(|out| out == expected)
        }
        Err(why) => {
            tracing::warn!(why, "archive: a stored password hash is not one the hub makes; treated as not matching");
            dummy(md5_hex);
            false
        }
    }
}

/// The parameters, salt and hash of a stored PHC string the hub made.
fn stored(phc: &str) -> Result<(Params, Vec<u8>, Output), &'static str> {
    let parsed = PasswordHash::new(phc).map_err(|_| "does not parse")?;
    if parsed.algorithm != Algorithm::Argon2id.ident() || parsed.version != Some(Version::V0x13.into()) {
        return Err("another algorithm or version");
    }
    let params = Params::try_from(&parsed).map_err(|_| "bad parameters")?;
    if params.m_cost() > M_COST || params.t_cost() > 4 * T_COST || params.p_cost() != P_COST {
        return Err("costs beyond the hub's own");
    }
    let expected = parsed.hash.ok_or("no hash")?;
    let mut buf = [0u8; 64];
    let salt = parsed.salt.ok_or("no salt")?.decode_b64(&mut buf).map_err(|_| "bad salt")?.to_vec();
    Ok((params, salt, expected))
}

/// The name key of `md5_hex` for sessions named `name`: argon2id (the same cost) with a salt
/// made from the name, hex. The same name and password always give the same key, so one
/// computation finds every session of a name that password proves; sessions of other names
/// have other salts.
pub(crate) fn name_key(name: &str, md5_hex: &str) -> Option<String> {
    let salt = format!("troop-hub-archive-name/{name}");
    let mut out = [0u8; OUTPUT_LEN];
    AREAS.compute(params(), md5_hex.as_bytes(), salt.as_bytes(), &mut out).ok()?;
    Some(out.iter().map(|b| format!("{b:02x}")).collect())
}

/// Spends what one [`verify`] costs, for answers about unknown sessions to take as long as
/// answers about known ones.
pub(crate) fn dummy(md5_hex: &str) {
    let mut out = [0u8; OUTPUT_LEN];
    // Only fails for out-of-range lengths, which these are not; the cost is spent either way.
    let _ = AREAS.compute(params(), md5_hex.as_bytes(), b"troop-hub-archive-dummy-salt", &mut out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::{PasswordHasher, PasswordVerifier};

    const MD5: &str = "5f4dcc3b5aa765d61d8327deb882cf99";

    #[test]
    fn hashes_are_phc_strings_the_argon2_crate_verifies_and_the_other_way_round() {
        let ours = hash(MD5).unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        let reference = Argon2::new(Algorithm::Argon2id, Version::V0x13, params());
        assert!(reference.verify_password(MD5.as_bytes(), &parsed).is_ok());
        assert!(reference.verify_password(b"wrong", &parsed).is_err());

        // A hash stored by an earlier hub (the crate's own hash_password) still matches.
        let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
        let theirs = reference.hash_password(MD5.as_bytes(), &salt).unwrap().to_string();
        assert!(verify(&theirs, MD5));
        assert!(!verify(&theirs, "00000000000000000000000000000000"));
        assert!(verify(&ours, MD5));
    }

    #[test]
    fn damaged_or_foreign_hashes_never_match() {
        let ours = hash(MD5).unwrap();
        for bad in [
            "not a hash".to_owned(),
            ours.replace("argon2id", "argon2i"),
            ours.replace("m=19456", "m=4000000"),
            ours.replace("p=1", "p=2"),
        ] {
            assert!(!verify(&bad, MD5), "{bad} matched");
        }
    }

    #[test]
    fn work_areas_are_reused_not_multiplied() {
        for _ in 0..10 {
            dummy(MD5);
        }
        let threads: Vec<_> = (0..3).map(|_| std::thread::spawn(|| dummy(MD5))).collect();
        for t in threads {
            t.join().unwrap();
        }
        let kept = AREAS.kept();
        assert!((1..=KEPT_AREAS).contains(&kept), "{kept} work areas kept");
    }

    #[test]
    fn work_areas_go_back_once_no_hash_has_run_for_a_while() {
        let areas = WorkAreas::new();
        let mut out = [0u8; OUTPUT_LEN];
        areas.compute(params(), MD5.as_bytes(), b"sixteen byte salt", &mut out).unwrap();
        let done = Instant::now();
        assert_eq!(areas.release_idle(Duration::from_secs(10), done), 0, "kept while hashes are recent");
        assert_eq!(areas.kept(), 1);
        assert_eq!(areas.release_idle(Duration::from_secs(10), done + Duration::from_secs(11)), 1, "freed when idle");
        assert_eq!(areas.kept(), 0);
        // The next hash makes a new area and keeps it.
        areas.compute(params(), MD5.as_bytes(), b"sixteen byte salt", &mut out).unwrap();
        assert_eq!(areas.kept(), 1);
        // An area left over from a burst goes idle while another keeps being used.
        let older = Instant::now();
        areas.0.lock().unwrap().insert(0, (vec![Block::default(); params().block_count()].into_boxed_slice(), older));
        areas.compute(params(), MD5.as_bytes(), b"sixteen byte salt", &mut out).unwrap();
        let later = Instant::now();
        assert_eq!(areas.kept(), 2);
        assert_eq!(areas.release_idle(later - older, later), 1, "the unused one goes");
        assert_eq!(areas.kept(), 1, "the one in use stays");
    }
}
