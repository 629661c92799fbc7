//! A session's document as the hub follows it for its audience: the text, who wrote each
//! part of it (runs of characters by author), and where each performer's cursor is. Built from
//! a control-channel snapshot, then kept in step by applying the server's events in order, so a
//! viewer who arrives late gets the same document and colours as one who watched from the start.

use std::collections::BTreeMap;
use troop_server::ot::{Operation, OtError, Part};
use troop_server::session::ClientId;

/// Author runs kept at most. Past this, the shortest runs are merged into the run before them
/// (their colour becomes that run's), so two performers alternating single characters cost a
/// bounded amount, not ~24 bytes per character.
pub const MAX_RUNS: usize = 4096;

/// `len` characters written by `author` (`None`: from before the hub followed the session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub author: Option<ClientId>,
    pub len: u64,
}

/// The followed document. Lengths and positions count Unicode code points, as Troop does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveDoc {
    text: String,
    len: u64,
    runs: Vec<Run>,
    marks: BTreeMap<ClientId, i64>,
}

impl LiveDoc {
    /// The document of a snapshot. Authorship is unknown, unless `before` (what the hub had
    /// until a resubscription) holds the very same text: then its colours and cursors stay.
    pub fn from_snapshot(document: &str, before: Option<&LiveDoc>) -> LiveDoc {
        if let Some(before) = before.filter(|b| b.text == document) {
            return before.clone();
        }
        let len = document.chars().count() as u64;
        let runs = if len == 0 { Vec::new() } else { vec![Run { author: None, len }] };
        LiveDoc { text: document.to_string(), len, runs, marks: BTreeMap::new() }
    }

    /// The document of an archived snapshot with its `[author, length]` runs (as
    /// [`super::LiveSnapshot::authors`] gives them); runs that do not cover the text exactly
    /// are not trusted, and it is [`LiveDoc::from_snapshot`].
    pub fn with_authors(document: &str, authors: &[(Option<ClientId>, u64)], before: Option<&LiveDoc>) -> LiveDoc {
        let mut doc = LiveDoc::from_snapshot(document, before);
        let runs: Vec<Run> = authors.iter().map(|&(author, len)| Run { author, len }).collect();
        if runs.iter().map(|r| r.len).sum::<u64>() == doc.len && before.is_none_or(|b| b.text != document) {
            doc.runs = bounded(runs);
        }
        doc
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    pub fn marks(&self) -> &BTreeMap<ClientId, i64> {
        &self.marks
    }

    /// Applies `author`'s operation: the text changes, inserted characters are theirs, other
    /// cursors move with the text and the author's goes where upstream Troop puts it. Nothing
    /// changes if the operation does not fit the document.
    pub fn apply(&mut self, author: ClientId, op: &Operation) -> Result<(), OtError> {
        let text = op.apply_counted(&self.text, self.len)?;
        self.runs = bounded(apply_to_runs(&self.runs, author, op));
        for (id, mark) in self.marks.iter_mut() {
            if *id != author {
                *mark = shift(*mark, op);
            }
        }
        // The author's cursor goes after its last insert or delete (a retain-only operation
        // moves nothing).
        if op.parts.iter().any(|p| !matches!(p, Part::Int(n) if *n > 0)) {
            self.marks.insert(author, op.cursor_after());
        }
        self.text = text;
        self.len = op.target_len();
        Ok(())
    }

    /// A performer's cursor moved (clamped to the document).
    pub fn set_mark(&mut self, id: ClientId, index: i64) {
        self.marks.insert(id, index.clamp(0, self.len as i64));
    }

    /// A performer left.
    pub fn remove_mark(&mut self, id: ClientId) {
        self.marks.remove(&id);
    }
}

/// `runs`, with the shortest merged into the run before them until at most [`MAX_RUNS`] remain.
fn bounded(mut runs: Vec<Run>) -> Vec<Run> {
    let mut shorter_than = 2;
    while runs.len() > MAX_RUNS {
        let mut out: Vec<Run> = Vec::with_capacity(runs.len());
        for run in runs {
            match out.last_mut() {
                Some(last) if last.author == run.author || run.len < shorter_than => last.len += run.len,
                _ => out.push(run),
            }
        }
        runs = out;
        shorter_than *= 2;
    }
    runs
}

/// The runs after `op` (which fits them: it was checked against the text first).
fn apply_to_runs(runs: &[Run], author: ClientId, op: &Operation) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::with_capacity(runs.len() + 2);
    let push = |out: &mut Vec<Run>, run: Run| {
        if run.len == 0 {
            return;
        }
        match out.last_mut() {
            Some(last) if last.author == run.author => last.len += run.len,
            _ => out.push(run),
        }
    };
    let mut source = runs.iter().copied();
    let mut current: Option<Run> = None;
    // Takes `n` characters from the old runs, keeping them or dropping them.
    let mut take = |out: &mut Vec<Run>, mut n: u64, keep: bool| {
        while n > 0 {
            let run = match current.take().or_else(|| source.next()) {
                Some(r) => r,
                None => return,
            };
            let k = n.min(run.len);
            if keep {
                push(out, Run { author: run.author, len: k });
            }
            n -= k;
            if k < run.len {
                current = Some(Run { author: run.author, len: run.len - k });
            }
        }
    };
    for part in &op.parts {
        match part {
            Part::Int(n) if *n > 0 => take(&mut out, part.len(), true),
            Part::Int(_) => take(&mut out, part.len(), false),
            Part::Insert(s) => push(&mut out, Run { author: Some(author), len: s.chars().count() as u64 }),
        }
    }
    out
}

/// Where a cursor at `mark` ends up after someone else's `op`: text inserted at or before it
/// pushes it right, text deleted before it pulls it left.
fn shift(mark: i64, op: &Operation) -> i64 {
    let (mut old, mut new) = (0i64, 0i64);
    for part in &op.parts {
        match part {
            Part::Int(n) if *n > 0 => {
                if mark <= old.saturating_add(*n) {
                    return new.saturating_add(mark - old);
                }
                old = old.saturating_add(*n);
                new = new.saturating_add(*n);
            }
            Part::Int(n) => {
                let n = n.saturating_neg();
                if mark <= old.saturating_add(n) {
                    return new;
                }
                old = old.saturating_add(n);
            }
            // A cursor exactly where text is inserted stays before it (as at any other place).
            Part::Insert(_) if mark <= old => return new,
            Part::Insert(s) => new = new.saturating_add(s.chars().count() as i64),
        }
    }
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(parts: &[Part]) -> Operation {
        Operation::from(parts.to_vec())
    }
    fn ins(s: &str) -> Part {
        Part::Insert(s.into())
    }
    fn n(i: i64) -> Part {
        Part::Int(i)
    }

    #[test]
    fn authors_follow_inserts_and_deletes_in_code_points() {
        let mut doc = LiveDoc::from_snapshot("ab", None);
        assert_eq!(doc.runs(), &[Run { author: None, len: 2 }]);
        doc.apply(1, &op(&[n(1), ins("🎵x"), n(1)])).unwrap();
        assert_eq!(doc.text(), "a🎵xb");
        let runs = [Run { author: None, len: 1 }, Run { author: Some(1), len: 2 }, Run { author: None, len: 1 }];
        assert_eq!(doc.runs(), &runs);
        doc.apply(2, &op(&[n(2), n(-2), ins("yy")])).unwrap();
        assert_eq!(doc.text(), "a🎵yy");
        let runs = [Run { author: None, len: 1 }, Run { author: Some(1), len: 1 }, Run { author: Some(2), len: 2 }];
        assert_eq!(doc.runs(), &runs);
        assert_eq!(doc.runs().iter().map(|r| r.len).sum::<u64>(), doc.text().chars().count() as u64);
    }

    #[test]
    fn an_operation_that_does_not_fit_changes_nothing() {
        let mut doc = LiveDoc::from_snapshot("abc", None);
        doc.set_mark(3, 1);
        let before = doc.clone();
        assert!(doc.apply(1, &op(&[n(5), ins("x")])).is_err());
        assert!(doc.apply(1, &op(&[n(1), ins("x")])).is_err());
        assert_eq!(doc, before);
    }

    #[test]
    fn cursors_move_with_the_text() {
        let mut doc = LiveDoc::from_snapshot("hello world", None);
        doc.set_mark(2, 6); // before "world"
        doc.set_mark(3, 99); // clamped to the end
        assert_eq!(doc.marks()[&3], 11);
        doc.apply(1, &op(&[ins(">> "), n(11)])).unwrap();
        assert_eq!((doc.marks()[&2], doc.marks()[&3], doc.marks()[&1]), (9, 14, 3));
        doc.apply(1, &op(&[n(-3), n(11)])).unwrap();
        assert_eq!((doc.marks()[&2], doc.marks()[&1]), (6, 0));
        doc.remove_mark(2);
        assert!(!doc.marks().contains_key(&2));
    }

    #[test]
    fn a_resubscription_keeps_colours_only_for_the_same_text() {
        let mut doc = LiveDoc::from_snapshot("", None);
        doc.apply(4, &op(&[ins("x")])).unwrap();
        let same = LiveDoc::from_snapshot("x", Some(&doc));
        assert_eq!(same.runs(), &[Run { author: Some(4), len: 1 }]);
        let changed = LiveDoc::from_snapshot("xy", Some(&doc));
        assert_eq!(changed.runs(), &[Run { author: None, len: 2 }]);
        assert!(LiveDoc::from_snapshot("", None).runs().is_empty());
    }

    #[test]
    fn two_performers_alternating_single_characters_cost_a_bounded_number_of_runs() {
        let mut doc = LiveDoc::from_snapshot("", None);
        for i in 0..20_000i64 {
            let edit = if i == 0 { op(&[ins("x")]) } else { op(&[n(i), ins("x")]) };
            doc.apply((i % 2) as ClientId, &edit).unwrap();
        }
        assert_eq!(doc.text().len(), 20_000);
        assert!(doc.runs().len() <= MAX_RUNS, "{} runs", doc.runs().len());
        assert_eq!(doc.runs().iter().map(|r| r.len).sum::<u64>(), 20_000, "the runs still cover the document");
    }

    /// The golden vectors `tests/data/doc_vectors.jsonl`, which `tests/js/doc.test.js` checks
    /// against the pages' `doc.js` too: both models agree on text, authors and cursors.
    #[test]
    fn the_golden_vectors_shared_with_doc_js() {
        use serde_json::{json, Value};
        let vectors = include_str!("../../tests/data/doc_vectors.jsonl");
        let mut checked = 0;
        for line in vectors.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).expect("a vector is JSON");
            let name = v["name"].as_str().unwrap_or_default();
            let mut doc = LiveDoc::from_snapshot(v["text"].as_str().unwrap_or_default(), None);
            let runs: Vec<(Option<ClientId>, u64)> = serde_json::from_value(v["runs"].clone()).expect("runs");
            doc.runs = runs.into_iter().map(|(author, len)| Run { author, len }).collect();
            for m in v["marks"].as_array().into_iter().flatten() {
                doc.set_mark(m[0].as_u64().unwrap_or(0) as ClientId, m[1].as_i64().unwrap_or(0));
            }
            for step in v["steps"].as_array().into_iter().flatten() {
                if let Some(op) = step.get("op") {
                    let author = op[0].as_u64().unwrap_or(0) as ClientId;
                    let parts: Operation = serde_json::from_value(op[1].clone()).expect("an operation");
                    let applied = doc.apply(author, &parts);
                    assert_eq!(applied.is_err(), step["error"] == json!(true), "{name}: {applied:?}");
                } else if let Some(m) = step.get("mark") {
                    doc.set_mark(m[0].as_u64().unwrap_or(0) as ClientId, m[1].as_i64().unwrap_or(0));
                } else if let Some(id) = step.get("leave") {
                    doc.remove_mark(id.as_u64().unwrap_or(0) as ClientId);
                }
            }
            let runs: Vec<Value> = doc.runs().iter().map(|r| json!([r.author, r.len])).collect();
            let marks: Vec<Value> = doc.marks().iter().map(|(id, i)| json!([id, i])).collect();
            let got = json!({ "text": doc.text(), "runs": runs, "marks": marks });
            assert_eq!(got, v["expect"], "{name}");
            checked += 1;
        }
        assert!(checked >= 10, "{checked} vectors");
    }
}
