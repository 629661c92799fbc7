//! Operational transformation, as Troop's `src/ot/text_operation.py` defines it.
//!
//! An operation is a list of parts: a positive integer retains that many characters, a
//! negative one deletes, a string inserts. Lengths count Unicode code points, like Python
//! `str`. Parts of length zero (`0`, `""`) are no-ops everywhere. `transform` and `compose`
//! build their results with the same builder rules as ot.py (adjacent parts merged, an insert
//! placed before a delete), so their output is byte-for-byte what upstream would send.

use std::fmt;

/// One part of an operation. In JSON (Troop's form): an integer or a string (read by hand in
/// `control/types.rs`: serde's `untagged` would buffer every part).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum Part {
    /// `n > 0` retains `n` characters, `n < 0` deletes `-n`, `0` does nothing.
    Int(i64),
    /// Inserts this text.
    Insert(String),
}

impl Part {
    /// Length in code points (retain / delete count, or inserted characters).
    pub fn len(&self) -> u64 {
        match self {
            Part::Int(n) => n.unsigned_abs(),
            Part::Insert(s) => s.chars().count() as u64,
        }
    }

    /// True for the parts that change nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn is_retain(&self) -> bool {
        matches!(self, Part::Int(n) if *n > 0)
    }

    fn is_delete(&self) -> bool {
        matches!(self, Part::Int(n) if *n < 0)
    }

    fn is_insert(&self) -> bool {
        matches!(self, Part::Insert(_))
    }

    /// The part without its first `by` characters (`by` < `len()`).
    fn shorten(&self, by: u64) -> Part {
        match self {
            Part::Int(n) if *n < 0 => Part::Int(n + by as i64),
            Part::Int(n) => Part::Int(n - by as i64),
            Part::Insert(s) => Part::Insert(skip_chars(s, by).to_string()),
        }
    }
}

/// Why an operation cannot be applied, transformed or composed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtError {
    #[error("operation is too long for the document")]
    TooLong,
    #[error("operation is too short for the document")]
    TooShort,
    #[error("operations do not have the same base length")]
    LengthMismatch,
    #[error("operation part is out of range")]
    OutOfRange,
}

/// An ot.py style operation. In JSON: the list of its parts, e.g. `[4, -1, "g"]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Operation {
    pub parts: Vec<Part>,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.parts)
    }
}

impl From<Vec<Part>> for Operation {
    fn from(parts: Vec<Part>) -> Self {
        Operation { parts }
    }
}

/// What walking an operation over a document of known length produces, in order.
enum Step<'a> {
    /// Keep the document's characters `[from, to)`.
    Keep(u64, u64),
    /// Insert this text.
    Insert(&'a str),
}

impl Operation {
    pub fn new() -> Self {
        Self::default()
    }

    /// Characters the operation expects in its input document (retains + deletes).
    pub fn base_len(&self) -> u64 {
        self.parts.iter().filter(|p| !p.is_insert()).map(Part::len).sum()
    }

    /// Characters of the document after applying the operation.
    pub fn target_len(&self) -> u64 {
        self.parts.iter().filter(|p| !p.is_delete()).map(Part::len).sum()
    }

    /// Characters the operation inserts.
    pub fn inserted_chars(&self) -> u64 {
        self.parts.iter().filter(|p| p.is_insert()).map(Part::len).sum()
    }

    /// Characters the operation deletes.
    pub fn deleted_chars(&self) -> u64 {
        self.parts.iter().filter(|p| p.is_delete()).map(Part::len).sum()
    }

    /// Builder: skip `n` characters, merged into a trailing retain.
    pub fn retain(&mut self, n: u64) -> &mut Self {
        if n == 0 {
            return self;
        }
        let n = n as i64;
        match self.parts.last_mut() {
            Some(Part::Int(last)) if *last > 0 => *last += n,
            _ => self.parts.push(Part::Int(n)),
        }
        self
    }

    /// Builder: insert `s`; an insert right after a delete goes before it, as in ot.py.
    pub fn insert(&mut self, s: &str) -> &mut Self {
        if s.is_empty() {
            return self;
        }
        let len = self.parts.len();
        match self.parts.last_mut() {
            Some(Part::Insert(last)) => last.push_str(s),
            Some(Part::Int(d)) if *d < 0 => {
                let d = *d;
                if len > 1 {
                    if let Part::Insert(prev) = &mut self.parts[len - 2] {
                        prev.push_str(s);
                        return self;
                    }
                }
                self.parts[len - 1] = Part::Insert(s.to_string());
                self.parts.push(Part::Int(d));
            }
            _ => self.parts.push(Part::Insert(s.to_string())),
        }
        self
    }

    /// Builder: delete `n` characters, merged into a trailing delete.
    pub fn delete(&mut self, n: u64) -> &mut Self {
        if n == 0 {
            return self;
        }
        let n = n as i64;
        match self.parts.last_mut() {
            Some(Part::Int(last)) if *last < 0 => *last -= n,
            _ => self.parts.push(Part::Int(-n)),
        }
        self
    }

    fn push_part(&mut self, part: &Part) {
        match part {
            Part::Int(n) if *n > 0 => self.retain(part.len()),
            Part::Int(_) => self.delete(part.len()),
            Part::Insert(s) => self.insert(s),
        };
    }

    /// Walks the operation over a document of `doc_len` characters, checking it fits.
    fn walk<'a>(&'a self, doc_len: u64, mut f: impl FnMut(Step<'a>)) -> Result<(), OtError> {
        let mut i: u64 = 0;
        for part in &self.parts {
            match part {
                Part::Insert(s) => f(Step::Insert(s)),
                Part::Int(n) if *n > 0 => {
                    let end = i.checked_add(part.len()).ok_or(OtError::OutOfRange)?;
                    if end > doc_len {
                        return Err(OtError::TooLong);
                    }
                    f(Step::Keep(i, end));
                    i = end;
                }
                Part::Int(_) => {
                    i = i.checked_add(part.len()).ok_or(OtError::OutOfRange)?;
                    if i > doc_len {
                        return Err(OtError::TooLong);
                    }
                }
            }
        }
        if i != doc_len {
            return Err(OtError::TooShort);
        }
        Ok(())
    }

    /// Checks that the operation fits a document of `doc_len` characters.
    pub fn check(&self, doc_len: u64) -> Result<(), OtError> {
        self.walk(doc_len, |_| {})
    }

    /// Applies the operation to `doc`, returning the new text. `doc` is unchanged on error.
    pub fn apply(&self, doc: &str) -> Result<String, OtError> {
        self.apply_counted(doc, doc.chars().count() as u64)
    }

    /// [`Operation::apply`] for a document whose length in characters is already known.
    pub fn apply_counted(&self, doc: &str, doc_len: u64) -> Result<String, OtError> {
        self.check(doc_len)?;
        let ascii = doc.len() as u64 == doc_len;
        let mut out = String::with_capacity(doc.len() + self.inserted_bytes());
        // Forward-only cursor from character positions to byte offsets.
        let (mut at_char, mut at_byte) = (0u64, 0usize);
        let mut to_byte = |c: u64| -> usize {
            if ascii {
                return c as usize;
            }
            let skipped = skip_chars(&doc[at_byte..], c - at_char);
            at_byte = doc.len() - skipped.len();
            at_char = c;
            at_byte
        };
        self.walk(doc_len, |step| match step {
            Step::Insert(s) => out.push_str(s),
            Step::Keep(from, to) => {
                let (a, b) = (to_byte(from), to_byte(to));
                out.push_str(&doc[a..b]);
            }
        })?;
        Ok(out)
    }

    /// Applies the operation to a per-character tag sequence: inserted characters get `tag`.
    pub fn apply_tags(&self, tags: &[u8], tag: u8) -> Result<Vec<u8>, OtError> {
        self.check(tags.len() as u64)?;
        let mut out = Vec::with_capacity(self.target_len() as usize);
        self.walk(tags.len() as u64, |step| match step {
            Step::Insert(s) => out.extend(std::iter::repeat_n(tag, s.chars().count())),
            Step::Keep(from, to) => out.extend_from_slice(&tags[from as usize..to as usize]),
        })?;
        Ok(out)
    }

    fn inserted_bytes(&self) -> usize {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Insert(s) => s.len(),
                Part::Int(_) => 0,
            })
            .sum()
    }

    /// Where upstream puts the author's cursor after this operation: retains and inserts up
    /// to the last part that changes something (a trailing retain does not count).
    pub fn cursor_after(&self) -> i64 {
        let mut index: i64 = match self.parts.last() {
            Some(Part::Int(n)) if *n > 0 => -n,
            _ => 0,
        };
        for part in &self.parts {
            match part {
                Part::Int(n) if *n > 0 => index = index.saturating_add(*n),
                Part::Insert(s) => index = index.saturating_add(s.chars().count() as i64),
                Part::Int(_) => {}
            }
        }
        index
    }

    /// ot.py's `transform(a, b)`: returns `(a', b')` with `apply(apply(d, b), a') ==
    /// apply(apply(d, a), b')`. At the same position `a`'s insert goes first.
    pub fn transform(a: &Operation, b: &Operation) -> Result<(Operation, Operation), OtError> {
        let mut iter_a = a.parts.iter().filter(|p| !p.is_empty()).cloned();
        let mut iter_b = b.parts.iter().filter(|p| !p.is_empty()).cloned();
        let (mut a_prime, mut b_prime) = (Operation::new(), Operation::new());
        let (mut pa, mut pb) = (iter_a.next(), iter_b.next());
        loop {
            match (&pa, &pb) {
                (None, None) => break,
                (Some(Part::Insert(s)), _) => {
                    a_prime.insert(s);
                    b_prime.retain(s.chars().count() as u64);
                    pa = iter_a.next();
                    continue;
                }
                (_, Some(Part::Insert(s))) => {
                    a_prime.retain(s.chars().count() as u64);
                    b_prime.insert(s);
                    pb = iter_b.next();
                    continue;
                }
                (None, _) | (_, None) => return Err(OtError::LengthMismatch),
                (Some(x), Some(y)) => {
                    let min = x.len().min(y.len());
                    if x.is_retain() && y.is_retain() {
                        a_prime.retain(min);
                        b_prime.retain(min);
                    } else if x.is_delete() && y.is_retain() {
                        a_prime.delete(min);
                    } else if x.is_retain() && y.is_delete() {
                        b_prime.delete(min);
                    }
                    // Both delete: the text is gone either way.
                    let (na, nb) = shorten_pair(x, y);
                    pa = na.or_else(|| iter_a.next());
                    pb = nb.or_else(|| iter_b.next());
                }
            }
        }
        Ok((a_prime, b_prime))
    }

    /// ot.py's `compose(a, b)`: one operation with the effect of `a` then `b`.
    pub fn compose(a: &Operation, b: &Operation) -> Result<Operation, OtError> {
        let mut iter_a = a.parts.iter().filter(|p| !p.is_empty()).cloned();
        let mut iter_b = b.parts.iter().filter(|p| !p.is_empty()).cloned();
        let mut out = Operation::new();
        let (mut pa, mut pb) = (iter_a.next(), iter_b.next());
        loop {
            match (&pa, &pb) {
                (None, None) => break,
                (Some(x), _) if x.is_delete() => {
                    out.delete(x.len());
                    pa = iter_a.next();
                    continue;
                }
                (_, Some(Part::Insert(s))) => {
                    out.insert(s);
                    pb = iter_b.next();
                    continue;
                }
                (None, _) | (_, None) => return Err(OtError::LengthMismatch),
                (Some(x), Some(y)) => {
                    let min = x.len().min(y.len());
                    match (x, y) {
                        (Part::Int(_), Part::Int(m)) if x.is_retain() && *m > 0 => {
                            out.retain(min);
                        }
                        (Part::Insert(s), Part::Int(m)) if *m > 0 => {
                            out.insert(take_chars(s, min));
                        }
                        (Part::Int(_), Part::Int(_)) if x.is_retain() => {
                            out.delete(min);
                        }
                        // An insert that `b` deletes again: nothing.
                        _ => {}
                    }
                    let (na, nb) = shorten_pair(x, y);
                    pa = na.or_else(|| iter_a.next());
                    pb = nb.or_else(|| iter_b.next());
                }
            }
        }
        Ok(out)
    }

    /// The operation rebuilt through the builder (adjacent parts merged, zeros dropped).
    pub fn normalized(&self) -> Operation {
        let mut out = Operation::new();
        for part in &self.parts {
            out.push_part(part);
        }
        out
    }
}

/// ot.py's `_shorten_ops`: what is left of each part once their common length is consumed.
fn shorten_pair(a: &Part, b: &Part) -> (Option<Part>, Option<Part>) {
    let (la, lb) = (a.len(), b.len());
    if la == lb {
        (None, None)
    } else if la > lb {
        (Some(a.shorten(lb)), None)
    } else {
        (None, Some(b.shorten(la)))
    }
}

/// `s` without its first `n` characters.
fn skip_chars(s: &str, n: u64) -> &str {
    if n == 0 {
        return s;
    }
    match s.char_indices().nth(n as usize) {
        Some((i, _)) => &s[i..],
        None => "",
    }
}

/// The first `n` characters of `s`.
fn take_chars(s: &str, n: u64) -> &str {
    &s[..s.len() - skip_chars(s, n).len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn op(parts: &[Part]) -> Operation {
        Operation::from(parts.to_vec())
    }
    fn r(n: i64) -> Part {
        Part::Int(n)
    }
    fn i(s: &str) -> Part {
        Part::Insert(s.into())
    }

    #[test]
    fn apply_counts_code_points() {
        let o = op(&[r(1), i("é😀"), r(1), r(-1)]);
        assert_eq!(o.apply("a😀b").unwrap(), "aé😀😀");
    }

    #[test]
    fn apply_rejects_ops_that_do_not_fit() {
        assert_eq!(op(&[r(4)]).apply("abc"), Err(OtError::TooLong));
        assert_eq!(op(&[r(2)]).apply("abc"), Err(OtError::TooShort));
        assert_eq!(op(&[r(-4)]).apply("abc"), Err(OtError::TooLong));
        assert_eq!(op(&[r(i64::MAX), r(i64::MAX)]).apply("a"), Err(OtError::TooLong));
    }

    #[test]
    fn builder_puts_insert_before_delete() {
        let mut o = Operation::new();
        o.retain(2).delete(1).insert("x").insert("y").retain(3);
        assert_eq!(o.parts, vec![r(2), i("xy"), r(-1), r(3)]);
    }

    #[test]
    fn transform_tie_puts_first_argument_first() {
        // Upstream's server calls transform(incoming, earlier): the incoming insert wins ties.
        let incoming = op(&[r(1), i("Y"), r(2)]);
        let earlier = op(&[r(1), i("X"), r(2)]);
        let (a, _) = Operation::transform(&incoming, &earlier).unwrap();
        assert_eq!(a.parts, vec![r(1), i("Y"), r(3)]);
    }

    #[test]
    fn transform_matches_recorded_upstream_output() {
        // From the op_concurrent transcript: [2, "Y", 1] at revision 1 against [1, "X", 2].
        let (a, _) = Operation::transform(&op(&[r(2), i("Y"), r(1)]), &op(&[r(1), i("X"), r(2)])).unwrap();
        assert_eq!(a.parts, vec![r(3), i("Y"), r(1)]);
    }

    #[test]
    fn cursor_after_ignores_trailing_retain() {
        assert_eq!(op(&[r(4), r(-1), i("g"), r(17)]).cursor_after(), 5);
        assert_eq!(op(&[i("abc")]).cursor_after(), 3);
        assert_eq!(op(&[r(9), i("    return 1\n")]).cursor_after(), 22);
    }

    #[test]
    fn tags_follow_the_text() {
        let o = op(&[r(1), i("xy"), r(-1), r(1)]);
        assert_eq!(o.apply_tags(b"012", b'7').unwrap(), b"0772".to_vec());
    }

    #[test]
    fn zero_parts_are_no_ops() {
        let o = op(&[r(0), i(""), r(3), r(0)]);
        assert_eq!(o.apply("abc").unwrap(), "abc");
        let (a, b) = Operation::transform(&o, &op(&[r(3), i("d")])).unwrap();
        assert_eq!(a.parts, vec![r(4)]);
        assert_eq!(b.parts, vec![r(3), i("d")]);
    }

    /// A document and a random operation that fits it.
    fn doc_and_op() -> impl Strategy<Value = (String, Operation)> {
        "[a-cé😀]{0,12}".prop_flat_map(|doc| {
            let n = doc.chars().count();
            (Just(doc), op_for(n))
        })
    }

    fn op_for(n: usize) -> impl Strategy<Value = Operation> {
        let step = prop_oneof![
            (1u64..4).prop_map(|k| (0u8, k, String::new())),
            (1u64..4).prop_map(|k| (1u8, k, String::new())),
            "[xyé😀]{1,3}".prop_map(|s| (2u8, 0, s)),
        ];
        proptest::collection::vec(step, 0..8).prop_map(move |steps| {
            let mut o = Operation::new();
            let mut left = n as u64;
            for (kind, k, s) in steps {
                match kind {
                    0 => {
                        let k = k.min(left);
                        o.retain(k);
                        left -= k;
                    }
                    1 => {
                        let k = k.min(left);
                        o.delete(k);
                        left -= k;
                    }
                    _ => {
                        o.insert(&s);
                    }
                }
            }
            o.retain(left);
            o
        })
    }

    fn doc_and_two_ops() -> impl Strategy<Value = (String, Operation, Operation)> {
        "[a-cé😀]{0,12}".prop_flat_map(|doc| {
            let n = doc.chars().count();
            (Just(doc), op_for(n), op_for(n))
        })
    }

    /// A document, an operation on it, and an operation on the result.
    fn doc_and_consecutive_ops() -> impl Strategy<Value = (String, Operation, Operation)> {
        doc_and_op().prop_flat_map(|(doc, a)| {
            let n = a.target_len() as usize;
            (Just(doc), Just(a), op_for(n))
        })
    }

    proptest! {
        #[test]
        fn transform_converges((doc, a, b) in doc_and_two_ops()) {
            let (a2, b2) = Operation::transform(&a, &b).unwrap();
            let left = a2.apply(&b.apply(&doc).unwrap()).unwrap();
            let right = b2.apply(&a.apply(&doc).unwrap()).unwrap();
            prop_assert_eq!(left, right);
        }

        #[test]
        fn compose_matches_sequential_apply((doc, a, b) in doc_and_consecutive_ops()) {
            let mid = a.apply(&doc).unwrap();
            let composed = Operation::compose(&a, &b).unwrap();
            prop_assert_eq!(composed.apply(&doc).unwrap(), b.apply(&mid).unwrap());
        }

        #[test]
        fn tags_stay_as_long_as_the_text((doc, a) in doc_and_op()) {
            let tags = vec![b'0'; doc.chars().count()];
            let text = a.apply(&doc).unwrap();
            prop_assert_eq!(a.apply_tags(&tags, b'1').unwrap().len(), text.chars().count());
        }
    }
}
