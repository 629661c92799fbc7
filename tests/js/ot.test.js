// The page's OT (src/http/assets/ot.js): apply, compose, transform and the builder rules on
// hand cases (astral, combining and CJK characters count as ot.rs counts them, in code points),
// random properties (transform converges, compose is one then the other), and three
// TroopOT.Client instances typing against a simulated Troop server with messages delivered in
// random order (FIFO per connection) until every document equals the server's. The same
// functions are compared case by case with ot.rs in tests/ot_differential.rs.
// Run: node --test tests/js/   (TROOP_OT_SEED=<n> replays the random tests)
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const path = require("node:path");

require(path.join(__dirname, "../../src/http/assets/ot.js"));
const T = globalThis.TroopOT;

// --- hand cases -------------------------------------------------------------------------

test("apply counts code points, not UTF-16 units", () => {
  assert.equal(T.apply("a😀b", [1, "é😀", 1, -1]), "aé😀😀");
  assert.equal(T.apply("🎵🎵", [1, -1, "x"]), "🎵x");
  assert.equal(T.length("🎵"), 1);
  // "é" as e + U+0301 is two code points: an operation may split it.
  assert.equal(T.apply("e\u0301", [1, -1, "\u0300"]), "e\u0300");
  assert.equal(T.apply("漢字", [-1, 1, "\n"]), "字\n");
  assert.equal(T.apply("", []), "");
  assert.equal(T.apply("", [0, "", 0]), "");
  assert.equal(T.apply("abc", [0, "", 3, 0]), "abc");
});

test("apply refuses an operation that does not fit, as ot.rs does", () => {
  const kind = (text, ops) => {
    try {
      T.apply(text, ops);
    } catch (e) {
      return e.kind;
    }
    return "ok";
  };
  assert.equal(kind("abc", [4]), "TooLong");
  assert.equal(kind("abc", [2]), "TooShort");
  assert.equal(kind("abc", [-4]), "TooLong");
  assert.equal(kind("a", []), "TooShort");
  assert.equal(kind("🎵", [2]), "TooLong"); // two UTF-16 units, one code point
  assert.equal(kind("e\u0301", [1]), "TooShort");
  assert.equal(kind("a", [1, "x", 1]), "TooLong");
  assert.equal(kind("a", [1.5]), "BadPart");
  assert.equal(kind("a", [2 ** 60]), "BadPart"); // not representable exactly: refused
  assert.equal(kind("a", "1"), "BadPart");
  assert.equal(kind("a", [null]), "BadPart");
});

test("the builder merges parts and puts an insert before a delete", () => {
  assert.deepEqual(T.normalize([2, -1, "x", "y", 3]), [2, "xy", -1, 3]);
  assert.deepEqual(T.normalize([1, 0, 2, "", -1, -2, "a", 0, "b", 1, 1]), [3, "ab", -3, 2]);
  assert.deepEqual(T.normalize(["a", -1, "b"]), ["ab", -1]);
  assert.deepEqual(T.normalize([-1, "b", -1, "c"]), ["bc", -2]);
  assert.deepEqual(T.normalize([0, "", -0]), []);
  assert.deepEqual(T.normalize([]), []);
});

test("lengths", () => {
  assert.equal(T.baseLength([2, "🎵x", -3, 0, ""]), 5);
  assert.equal(T.targetLength([2, "🎵x", -3, 0, ""]), 4);
  assert.equal(T.targetLength(["e\u0301漢"]), 3);
  assert.equal(T.isNoop([3, 0, ""]), true);
  assert.equal(T.isNoop([]), true);
  assert.equal(T.isNoop([3, "x"]), false);
  assert.equal(T.isNoop([3, -1]), false);
});

test("transform: the first argument's insert goes first at a tie", () => {
  assert.deepEqual(T.transform([1, "Y", 2], [1, "X", 2]), [
    [1, "Y", 3],
    [2, "X", 2],
  ]);
  // Recorded from upstream: [2, "Y", 1] at revision 1 against [1, "X", 2].
  assert.deepEqual(T.transform([2, "Y", 1], [1, "X", 2])[0], [3, "Y", 1]);
  assert.deepEqual(T.transform(["🎵"], ["漢"]), [["🎵", 1], [1, "漢"]]);
  assert.deepEqual(T.transform([-3], [-3]), [[], []]);
  assert.deepEqual(T.transform([0, "", 3, 0], [3, "d"]), [[4], [3, "d"]]);
  assert.deepEqual(T.transform([1, -2, 1], [2, "e\u0301", -2]), [[1, -1, 2], [1, "e\u0301", -1]]);
  assert.deepEqual(T.transform([], []), [[], []]);
  assert.throws(() => T.transform([3], [2]), (e) => e.kind === "LengthMismatch");
  assert.throws(() => T.transform([3, "x"], [4]), (e) => e.kind === "LengthMismatch");
  assert.throws(() => T.transform([], [1]), (e) => e.kind === "LengthMismatch");
});

test("compose: one operation with the effect of both", () => {
  assert.deepEqual(T.compose(["abc"], [1, -1, 1]), ["ac"]);
  assert.deepEqual(T.compose(["a🎵b"], [-1, 2]), ["🎵b"]);
  assert.deepEqual(T.compose(["a🎵b"], [2, -1, "漢"]), ["a🎵漢"]);
  assert.deepEqual(T.compose([14, -6], ["x", "y", -3, "z", 11]), ["xyz", -3, 11, -6]);
  assert.deepEqual(T.compose([2, "x"], [3]), [2, "x"]);
  assert.deepEqual(T.compose(["x"], [-1]), []);
  assert.deepEqual(T.compose([], []), []);
  assert.throws(() => T.compose([2, "x"], [2]), (e) => e.kind === "LengthMismatch");
  assert.throws(() => T.compose([2, "x"], [4]), (e) => e.kind === "LengthMismatch");
});

test("replace builds retain, insert, delete, retain", () => {
  assert.deepEqual(T.replace(5, 1, 3, "x"), [1, "x", -2, 2]);
  assert.deepEqual(T.replace(5, 0, 0, "🎵"), ["🎵", 5]);
  assert.deepEqual(T.replace(5, 5, 5, "z"), [5, "z"]);
  assert.deepEqual(T.replace(5, 0, 5, ""), [-5]);
  assert.deepEqual(T.replace(5, 2, 2, ""), [5]);
  assert.deepEqual(T.replace(0, 0, 0, ""), []);
  assert.equal(T.apply("ab🎵cd", T.replace(5, 2, 3, "漢字")), "ab漢字cd");
  assert.throws(() => T.replace(5, 3, 2, "x"), RangeError);
  assert.throws(() => T.replace(5, 0, 6, "x"), RangeError);
  assert.throws(() => T.replace(5, -1, 2, "x"), RangeError);
});

test("apply and compose stay linear on a large document", () => {
  const piece = "ab🎵漢\n";
  const doc = piece.repeat(200000); // 1,000,000 code points
  const n = T.length(doc);
  assert.equal(n, 1000000);
  const ops = [];
  for (let i = 0; i < n / 10; i++) ops.push(i % 2 ? 9 : -9, "x");
  ops.push(n - (n / 10) * 9);
  let started = Date.now();
  const out = T.apply(doc, ops);
  assert.equal(T.length(out), T.targetLength(ops));
  assert.ok(Date.now() - started < 2000, `apply took ${Date.now() - started} ms`);
  // A large insert walked against many small parts.
  const big = ["🎵".repeat(200000)];
  const cuts = [];
  for (let i = 0; i < 100000; i++) cuts.push(1, -1);
  started = Date.now();
  const c = T.compose(big, cuts);
  assert.deepEqual(c, ["🎵".repeat(100000)]);
  assert.ok(Date.now() - started < 2000, `compose took ${Date.now() - started} ms`);
});

// --- the client state machine -----------------------------------------------------------

test("client: send, buffer, ack, remote, reset", () => {
  const sent = [];
  const c = new T.Client((ops, revision) => sent.push([ops, revision]));
  assert.equal(c.state, "synchronized");
  assert.equal(c.pending(), false);
  c.local([0, "a"]); // doc "" -> "a"
  assert.deepEqual(sent, [[[0, "a"], 0]]);
  assert.equal(c.state, "awaiting");
  assert.equal(c.pending(), true);
  c.local([1, "b"]); // "ab"
  assert.equal(c.state, "buffer");
  c.local([2, "c"]); // "abc"
  assert.deepEqual(c.buffer, [1, "bc"]);
  assert.equal(sent.length, 1);
  // A peer's insert at 0 (on ""): our own operations win the tie (the server transforms
  // our late "a" against the peer's "X" and puts it first too), so it lands after "abc".
  assert.deepEqual(c.remote(["X"]), [3, "X"]); // "abcX"
  assert.equal(c.revision, 1);
  assert.deepEqual(c.outstanding, ["a", 1]);
  assert.deepEqual(c.buffer, [1, "bc", 1]);
  c.ack(); // "a" applied: the buffer goes out at revision 2
  assert.equal(c.revision, 2);
  assert.equal(c.state, "awaiting");
  assert.deepEqual(sent[1], [[1, "bc", 1], 2]);
  c.ack();
  assert.equal(c.revision, 3);
  assert.equal(c.state, "synchronized");
  assert.deepEqual(c.remote([4, "!"]), [4, "!"]);
  assert.equal(c.revision, 4);
  c.local([5, "?"]);
  c.reset();
  assert.equal(c.revision, 0);
  assert.equal(c.state, "synchronized");
  assert.equal(c.pending(), false);
  assert.equal(c.outstanding, null);
  assert.equal(c.buffer, null);
});

test("client: an operation that changes nothing is never sent", () => {
  const sent = [];
  const c = new T.Client((ops, revision) => sent.push([ops, revision]));
  c.local([3]);
  c.local([]);
  assert.equal(sent.length, 0);
  assert.equal(c.state, "synchronized");
  c.local([3, "x"]); // "abc" -> "abcx", sent
  c.local([3, -1]); // "abc", buffered
  c.local([3]); // nothing: the buffer stays
  assert.equal(c.state, "buffer");
  assert.deepEqual(c.buffer, [3, -1]);
  c.ack();
  assert.deepEqual(sent, [[[3, "x"], 0], [[3, -1], 1]]);
  c.ack();
  // An insert and its delete in the buffer compose to nothing: nothing goes out.
  c.local([3, "y"]); // "abcy", sent
  c.local([4, "z"]); // "abcyz", buffered
  c.local([4, -1, 0]); // "abcy": the buffer is [4]
  assert.equal(c.state, "buffer");
  assert.deepEqual(c.buffer, [4]);
  c.ack();
  assert.equal(c.state, "synchronized");
  assert.equal(c.revision, 3);
  assert.equal(sent.length, 3);
});

test("client: an operation that does not fit throws and changes nothing", () => {
  const c = new T.Client(() => {});
  c.local([2, "x"]);
  assert.throws(() => c.remote([5, "y"]), (e) => e.kind === "LengthMismatch");
  assert.equal(c.revision, 0);
  assert.deepEqual(c.outstanding, [2, "x"]);
});

// --- random properties ------------------------------------------------------------------

function seed() {
  const s = process.env.TROOP_OT_SEED;
  return s ? Number(s) >>> 0 : (Date.now() ^ (process.pid << 16)) >>> 0;
}

// mulberry32: a small seeded PRNG; below(n) in [0, n).
function prng(s) {
  let a = s >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    below: (n) => Math.floor(next() * n),
    range: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    oneIn: (n) => Math.floor(next() * n) === 0,
  };
}

// Runs fn(rng) and names the seed if it fails.
function seeded(name, fn) {
  test(name, () => {
    const s = seed();
    try {
      fn(prng(s));
    } catch (e) {
      e.message = `${e.message}\n(seed ${s}; replay: TROOP_OT_SEED=${s} node --test tests/js/)`;
      throw e;
    }
  });
}

const PIECES = ["a", "b", "z", " ", "(", '"', "\n", "ü", "e\u0301", "🎵", "漢", "字"];

function text(rng, max) {
  let s = "";
  for (let n = rng.below(max + 1); n > 0; n--) s += PIECES[rng.below(PIECES.length)];
  return s;
}

// A random operation on n code points, unnormalized (zero and adjacent parts) two times in three.
function randomOp(rng, n) {
  const ops = [];
  let left = n;
  const big = rng.oneIn(4) ? Math.max(n, 1) : 5;
  for (let steps = rng.below(9); steps > 0; steps--) {
    const r = rng.below(20);
    if (r <= 6 && left > 0) {
      const k = rng.range(1, Math.min(left, big));
      ops.push(k);
      left -= k;
    } else if (r >= 7 && r <= 11 && left > 0) {
      const k = rng.range(1, Math.min(left, big));
      ops.push(-k);
      left -= k;
    } else if (r >= 12 && r <= 16) {
      ops.push(text(rng, 3) || "x");
    } else if (r === 17) {
      ops.push(0);
    } else if (r === 18) {
      ops.push("");
    }
  }
  if (left > 0) {
    const r = rng.below(6);
    if (r === 0 && left > 1) {
      const k = rng.range(1, left - 1);
      ops.push(k, left - k);
    } else if (r === 1) {
      ops.push(-left);
    } else {
      ops.push(left);
    }
  }
  return rng.oneIn(3) ? T.normalize(ops) : ops;
}

// apply, written the obvious way over an array of code points.
function referenceApply(doc, ops) {
  const chars = Array.from(doc);
  let at = 0, out = "";
  for (const p of ops) {
    if (typeof p === "string") out += p;
    else if (p > 0) out += chars.slice(at, (at += p)).join("");
    else at -= p;
  }
  assert.equal(at, chars.length);
  return out;
}

seeded("random: apply, transform converges, compose is one then the other", (rng) => {
  for (let i = 0; i < 3000; i++) {
    const doc = text(rng, rng.oneIn(20) ? 300 : 25);
    const n = T.length(doc);
    const a = randomOp(rng, n), b = randomOp(rng, n);
    assert.equal(T.baseLength(a), n);
    const da = T.apply(doc, a), db = T.apply(doc, b);
    assert.equal(da, referenceApply(doc, a));
    assert.equal(T.length(da), T.targetLength(a));
    assert.equal(T.apply(doc, T.normalize(a)), da);
    const [a2, b2] = T.transform(a, b);
    assert.equal(T.apply(db, a2), T.apply(da, b2), JSON.stringify({ doc, a, b, a2, b2 }));
    const c = randomOp(rng, T.length(da));
    const ac = T.compose(a, c);
    assert.equal(T.apply(doc, ac), T.apply(da, c), JSON.stringify({ doc, a, c, ac }));
    // Builder output is already normal.
    assert.deepEqual(T.normalize(ac), ac);
    assert.deepEqual(T.normalize(a2), a2);
    // Mismatched lengths fail.
    const bad = randomOp(rng, n + rng.range(1, 3));
    assert.throws(() => T.apply(doc, bad));
    assert.throws(() => T.transform(a, bad));
    assert.throws(() => T.transform(bad, a));
    assert.throws(() => T.compose(a, randomOp(rng, T.length(da) + rng.range(1, 3))));
  }
});

// A Troop server: an operation at revision r is transformed against the history since r,
// applied, recorded and sent to everyone (its sender takes it as the acknowledgement).
seeded("random: three clients and a server converge, whatever the delivery order", (rng) => {
  for (let round = 0; round < 60; round++) {
    const server = { doc: text(rng, 20), history: [] };
    const clients = [0, 1, 2].map((id) => {
      const c = { id, doc: server.doc, up: [], down: [] };
      c.ot = new T.Client((ops, revision) => {
        assert.equal(revision, c.ot.revision);
        c.up.push({ ops, revision });
      });
      return c;
    });
    const receive = (c) => {
      const msg = c.up.shift();
      assert.ok(msg.revision <= server.history.length, "a client is ahead of the server");
      let op = msg.ops;
      for (const earlier of server.history.slice(msg.revision)) op = T.transform(op, earlier)[0];
      server.doc = T.apply(server.doc, op);
      server.history.push(op);
      for (const d of clients) d.down.push({ src: c.id, ops: op });
    };
    const deliver = (c) => {
      const msg = c.down.shift();
      if (msg.src === c.id) c.ot.ack();
      else c.doc = T.apply(c.doc, c.ot.remote(msg.ops));
    };
    const edit = (c) => {
      const n = T.length(c.doc);
      let op;
      if (rng.oneIn(3)) {
        op = randomOp(rng, n);
      } else {
        const from = rng.range(0, n);
        const to = rng.oneIn(3) ? rng.range(from, Math.min(n, from + 3)) : from;
        op = T.replace(n, from, to, rng.oneIn(4) ? "" : text(rng, 3));
      }
      c.doc = T.apply(c.doc, op);
      c.ot.local(op);
    };
    const busy = () => clients.filter((c) => c.up.length || c.down.length);
    for (let step = 0; step < 150; step++) {
      const c = clients[rng.below(3)];
      const r = rng.below(10);
      if (r < 4) edit(c);
      else if (r < 7 && c.up.length) receive(c);
      else if (c.down.length) deliver(c);
    }
    // Drain (an acknowledgement may send the buffer, so until nothing moves).
    for (let b = busy(); b.length; b = busy()) {
      const c = b[rng.below(b.length)];
      if (c.up.length && (rng.oneIn(2) || !c.down.length)) receive(c);
      else deliver(c);
    }
    for (const c of clients) {
      assert.equal(c.doc, server.doc, `client ${c.id} in round ${round}`);
      assert.equal(c.ot.revision, server.history.length);
      assert.equal(c.ot.pending(), false);
    }
  }
});
