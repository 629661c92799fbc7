//! The browser seat's OT (`src/http/assets/ot.js`) is ot.rs's: on tens of thousands of
//! generated cases (documents mixing ASCII, "ü", "é" as e + combining accent, "🎵", "漢" and
//! newlines; unnormalized operations with empty and adjacent same-kind parts, as clients send
//! them; concurrent pairs, sequential pairs, mismatched pairs, and chains of operations
//! composed and transformed one by one as a Troop server and client do) `apply`, `normalize`,
//! `compose` and `transform` give the same JSON parts, in the same order, merged the same way,
//! and fail on exactly the same inputs. All cases go through one `node tests/js/ot_cli.js`.
//!
//! Needs node (`apt-get install nodejs`): without it the test fails, it never skips. The seed
//! is printed on failure; `TROOP_OT_SEED=<seed>` replays it.

use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use troop_server::ot::{Operation, Part};

/// Rounds of generation; each makes ~50 cases.
const ROUNDS: usize = 600;

/// What documents and inserts are made of: "é" is e + U+0301 (two code points, one glyph),
/// "🎵" is outside the BMP (two UTF-16 units, one code point).
const PIECES: &[&str] = &["a", "b", "z", " ", "(", "\"", "\n", "ü", "e\u{301}", "🎵", "漢", "字"];

/// xorshift64*, written out so the test needs no crate.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng((seed ^ 0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (0 when n is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

fn chars(s: &str) -> u64 {
    s.chars().count() as u64
}

/// One input line for ot_cli.js and the line ot.rs says it must answer.
struct Case {
    input: Value,
    expect: Value,
}

struct Gen {
    seed: u64,
    rng: Rng,
    cases: Vec<Case>,
}

impl Gen {
    /// Up to `max` pieces of text.
    fn text(&mut self, max: u64) -> String {
        let n = self.rng.below(max + 1);
        (0..n).map(|_| PIECES[self.rng.below(PIECES.len() as u64) as usize]).collect()
    }

    /// A random operation on a document of `n` code points, assembled part by part (not through
    /// the builder): zero parts, adjacent retains, deletes and inserts, as a client may send.
    /// A third of them are normalized, as most clients send.
    fn op(&mut self, n: u64) -> Operation {
        let mut parts = Vec::new();
        let mut left = n;
        let big = if self.rng.one_in(4) { n.max(1) } else { 5 };
        for _ in 0..self.rng.below(9) {
            match self.rng.below(20) {
                0..=6 if left > 0 => {
                    let k = self.rng.range(1, left.min(big));
                    parts.push(Part::Int(k as i64));
                    left -= k;
                }
                7..=11 if left > 0 => {
                    let k = self.rng.range(1, left.min(big));
                    parts.push(Part::Int(-(k as i64)));
                    left -= k;
                }
                12..=16 => {
                    let s = self.text(3);
                    parts.push(Part::Insert(if s.is_empty() { "x".into() } else { s }));
                }
                17 => parts.push(Part::Int(0)),
                18 => parts.push(Part::Insert(String::new())),
                _ => {}
            }
        }
        // The rest of the document: kept (sometimes in two adjacent retains) or deleted.
        if left > 0 {
            match self.rng.below(6) {
                0 if left > 1 => {
                    let k = self.rng.range(1, left - 1);
                    parts.push(Part::Int(k as i64));
                    parts.push(Part::Int((left - k) as i64));
                }
                1 => parts.push(Part::Int(-(left as i64))),
                _ => parts.push(Part::Int(left as i64)),
            }
        }
        match self.rng.below(12) {
            0 => parts.push(Part::Int(0)),
            1 => parts.push(Part::Insert(self.text(2))),
            _ => {}
        }
        let op = Operation::from(parts);
        if self.rng.one_in(3) {
            op.normalized()
        } else {
            op
        }
    }

    /// An operation on a document of some length other than `n`.
    fn bad_op(&mut self, n: u64) -> Operation {
        let off = self.rng.range(1, 3);
        if n >= off && self.rng.one_in(2) {
            self.op(n - off)
        } else {
            self.op(n + off)
        }
    }

    /// A chain of 3 to 6 operations from `doc`, each on the result of the one before.
    fn chain(&mut self, doc: &str) -> (Vec<Operation>, Vec<String>) {
        let (mut ops, mut docs) = (Vec::new(), vec![doc.to_string()]);
        for _ in 0..self.rng.range(3, 6) {
            let last = docs.last().expect("docs starts with one");
            let op = self.op(chars(last));
            let next = self.apply(last, &op).unwrap_or_else(|| self.fail("a chain operation applies"));
            ops.push(op);
            docs.push(next);
        }
        (ops, docs)
    }

    fn fail(&self, what: &str) -> ! {
        panic!("ot.rs itself broke: {what} (seed {0}; replay: TROOP_OT_SEED={0})", self.seed)
    }

    fn push(&mut self, input: Value, expect: Value) {
        self.cases.push(Case { input, expect });
    }

    fn apply(&mut self, doc: &str, op: &Operation) -> Option<String> {
        let r = op.apply(doc).ok();
        let expect = match &r {
            Some(text) => json!({ "ok": text }),
            None => json!({ "error": true }),
        };
        self.push(json!({ "kind": "apply", "text": doc, "ops": op }), expect);
        r
    }

    fn normalize(&mut self, op: &Operation) {
        self.push(json!({ "kind": "normalize", "ops": op }), json!({ "ok": op.normalized() }));
    }

    fn compose(&mut self, a: &Operation, b: &Operation) -> Option<Operation> {
        let r = Operation::compose(a, b).ok();
        let expect = match &r {
            Some(op) => json!({ "ok": op }),
            None => json!({ "error": true }),
        };
        self.push(json!({ "kind": "compose", "a": a, "b": b }), expect);
        r
    }

    fn transform(&mut self, a: &Operation, b: &Operation) -> Option<(Operation, Operation)> {
        let r = Operation::transform(a, b).ok();
        let expect = match &r {
            Some((a2, b2)) => json!({ "ok": [a2, b2] }),
            None => json!({ "error": true }),
        };
        self.push(json!({ "kind": "transform", "a": a, "b": b }), expect);
        r
    }

    fn same(&self, left: Option<String>, right: Option<String>, what: &str) {
        if left.is_none() || left != right {
            self.fail(&format!("{what}: {left:?} != {right:?}"));
        }
    }

    /// Hand-picked edges: empty documents, empty and zero-only operations, lengths counted in
    /// code points where UTF-16 units or bytes would differ.
    fn edges(&mut self) {
        let r = |n: i64| Part::Int(n);
        let i = |s: &str| Part::Insert(s.into());
        let op = |parts: Vec<Part>| Operation::from(parts);
        for (doc, o) in [
            ("", op(vec![])),
            ("", op(vec![r(0)])),
            ("", op(vec![i(""), r(0), i("")])),
            ("a", op(vec![])),
            ("🎵", op(vec![r(2)])),
            ("🎵", op(vec![r(1), i("🎵")])),
            ("e\u{301}", op(vec![r(-2)])),
            ("e\u{301}", op(vec![r(1), r(-1), i("\u{301}")])),
            ("漢字", op(vec![r(-1), r(1), i("\n")])),
            ("漢字", op(vec![r(3)])),
            ("ab", op(vec![r(1), r(-2)])),
            ("ab", op(vec![r(-1)])),
        ] {
            self.apply(doc, &o);
            self.normalize(&o);
        }
        let pairs = [
            (op(vec![]), op(vec![])),
            (op(vec![r(0)]), op(vec![i("x")])),
            (op(vec![i("🎵")]), op(vec![i("漢")])),
            (op(vec![r(1), i("Y"), r(2)]), op(vec![r(1), i("X"), r(2)])),
            (op(vec![r(-3)]), op(vec![r(-3)])),
            (op(vec![r(2), r(-1)]), op(vec![r(-1), r(2)])),
            (op(vec![r(3)]), op(vec![r(2)])),
            (op(vec![i("abc")]), op(vec![r(1), r(-1), r(1)])),
            (op(vec![i("a🎵b")]), op(vec![r(-1), r(2)])),
            (op(vec![r(2), i("x")]), op(vec![r(2)])),
        ];
        for (a, b) in pairs {
            self.transform(&a, &b);
            self.compose(&a, &b);
        }
    }

    /// One round: a document, concurrent and sequential operations on it, mismatched ones, and
    /// chains (two clients' edits seen by the server and by a client with a buffer).
    fn round(&mut self) {
        let max = if self.rng.one_in(20) { 400 } else { 30 };
        let doc = self.text(max);
        let n = chars(&doc);
        let (a, b) = (self.op(n), self.op(n));
        self.normalize(&a);
        let after_a = self.apply(&doc, &a).unwrap_or_else(|| self.fail("a applies"));
        let after_b = self.apply(&doc, &b).unwrap_or_else(|| self.fail("b applies"));
        let (a2, b2) = self.transform(&a, &b).unwrap_or_else(|| self.fail("a and b transform"));
        let left = self.apply(&after_b, &a2);
        let right = self.apply(&after_a, &b2);
        self.same(left, right, "transform converges");

        let c = self.op(chars(&after_a));
        let ac = self.compose(&a, &c).unwrap_or_else(|| self.fail("a and c compose"));
        let left = self.apply(&doc, &ac);
        let right = self.apply(&after_a, &c);
        self.same(left, right, "compose is a then c");

        // Operations that do not fit: refused by both sides.
        let bad = self.bad_op(n);
        if self.apply(&doc, &bad).is_some() || self.transform(&a, &bad).is_some() || self.transform(&bad, &a).is_some()
        {
            self.fail("a mismatched operation was accepted");
        }
        let bad_c = self.bad_op(chars(&after_a));
        if self.compose(&a, &bad_c).is_some() {
            self.fail("a mismatched compose was accepted");
        }
        // b's result does not follow a's.
        if chars(&after_b) != n && self.compose(&b, &a).is_some() {
            self.fail("compose accepted an operation on the wrong document");
        }

        self.chains(&doc);
    }

    fn compose_all(&mut self, ops: &[Operation]) -> Operation {
        let mut acc = ops[0].clone();
        for op in &ops[1..] {
            acc = self.compose(&acc, op).unwrap_or_else(|| self.fail("a chain composes"));
        }
        acc
    }

    fn chains(&mut self, doc: &str) {
        let (xs, x_docs) = self.chain(doc);
        let (ys, y_docs) = self.chain(doc);
        let x_end = x_docs.last().expect("chain docs").clone();
        let y_end = y_docs.last().expect("chain docs").clone();
        let x_all = self.compose_all(&xs);
        let y_all = self.compose_all(&ys);

        // The server: X's edits, composed, arrive at revision 0 after Y's history and are
        // transformed against it one operation at a time. (Against Y's composition at once the
        // result may differ: at a tie next to a delete the insert lands on the other side.)
        let mut late = x_all.clone();
        for y in &ys {
            late = self.transform(&late, y).unwrap_or_else(|| self.fail("late op transforms")).0;
        }
        self.apply(&y_end, &late).unwrap_or_else(|| self.fail("the late op applies"));
        let (x_over, y_over) = self.transform(&x_all, &y_all).unwrap_or_else(|| self.fail("chains transform"));
        let left = self.apply(&y_end, &x_over);
        let right = self.apply(&x_end, &y_over);
        self.same(left, right, "composed chains converge");

        // A client with x0 outstanding and x1..xn buffered receives Y's operations.
        let mut outstanding = xs[0].clone();
        let mut buffer = self.compose_all(&xs[1..]);
        let mut local = x_end;
        for y in &ys {
            let (o, y1) = self.transform(&outstanding, y).unwrap_or_else(|| self.fail("outstanding transforms"));
            let (bf, y2) = self.transform(&buffer, &y1).unwrap_or_else(|| self.fail("buffer transforms"));
            outstanding = o;
            buffer = bf;
            local = self.apply(&local, &y2).unwrap_or_else(|| self.fail("a peer's op applies locally"));
        }
        // The server applies the outstanding operation, then the buffer.
        let server = self.apply(&y_end, &outstanding).unwrap_or_else(|| self.fail("outstanding applies"));
        let server = self.apply(&server, &buffer);
        self.same(server, Some(local), "client and server agree");
    }
}

fn seed() -> u64 {
    match std::env::var("TROOP_OT_SEED") {
        Ok(s) => s.trim().parse().unwrap_or_else(|_| panic!("TROOP_OT_SEED={s:?} is not a u64")),
        Err(_) => SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1),
    }
}

/// Runs `node tests/js/ot_cli.js` once with every case; returns its output lines.
fn run_node(input: String, seed: u64) -> Vec<String> {
    let mut child = match Command::new("node")
        .arg("tests/js/ot_cli.js")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("node is needed: apt-get install nodejs (this test compares ot.js with ot.rs and never skips)")
        }
        Err(e) => panic!("could not start node: {e}"),
    };
    let mut stdin = child.stdin.take().expect("node's stdin is piped");
    // Written from a thread: node answers while reading, and both pipes are finite.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("waiting for node");
    let written = writer.join().expect("the stdin writer thread");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "node tests/js/ot_cli.js failed ({}), seed {seed}:\n{stderr}", out.status);
    if let Err(e) = written {
        panic!("writing the cases to node failed: {e} (seed {seed}); node said:\n{stderr}");
    }
    let stdout = String::from_utf8(out.stdout).unwrap_or_else(|e| panic!("node wrote invalid UTF-8: {e}"));
    stdout.lines().map(str::to_string).collect()
}

#[test]
fn ot_js_matches_ot_rs() {
    let seed = seed();
    let started = Instant::now();
    let mut generator = Gen { seed, rng: Rng::new(seed), cases: Vec::new() };
    generator.edges();
    for _ in 0..ROUNDS {
        generator.round();
    }
    let cases = generator.cases;
    assert!(cases.len() >= 5000, "only {} cases", cases.len());
    let errors = cases.iter().filter(|c| c.expect.get("error").is_some()).count();

    let mut input = String::new();
    for c in &cases {
        input.push_str(&c.input.to_string());
        input.push('\n');
    }
    let lines = run_node(input, seed);
    assert_eq!(
        lines.len(),
        cases.len(),
        "ot_cli.js answered {} lines for {} cases (seed {seed})",
        lines.len(),
        cases.len()
    );

    let mut differ = Vec::new();
    for (k, (case, line)) in cases.iter().zip(&lines).enumerate() {
        // serde_json refuses what ot.rs could never produce (a lone surrogate, say): a difference.
        let got = serde_json::from_str::<Value>(line)
            .unwrap_or_else(|e| Value::String(format!("unreadable JSON ({e}): {line}")));
        if got != case.expect {
            differ.push((k, got));
        }
    }
    if !differ.is_empty() {
        let mut report = format!(
            "ot.js differs from ot.rs in {} of {} cases (seed {seed}; replay: TROOP_OT_SEED={seed})\n",
            differ.len(),
            cases.len()
        );
        for (k, got) in differ.iter().take(5) {
            let case = &cases[*k];
            report.push_str(&format!(
                "\ncase {}:\n  input: {}\n  ot.rs: {}\n  ot.js: {}\n",
                k + 1,
                case.input,
                case.expect,
                got
            ));
        }
        panic!("{report}");
    }
    println!(
        "ot.js agrees with ot.rs on {} cases ({} of them refusals) in {:.2?}, seed {seed}",
        cases.len(),
        errors,
        started.elapsed()
    );
}
