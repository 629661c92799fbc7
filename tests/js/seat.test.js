// The browser seat's logic without a DOM (src/http/assets/seatlogic.js, root.TroopSeat): code point
// <-> CodeMirror position conversion (astral characters are 2 UTF-16 units, 1 code point),
// operations as editor changes, Troop 0.10.3's block-of-code rules, what each hub message
// means and the sentences the page shows. Run: node --test tests/js/
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const path = require("node:path");

require(path.join(__dirname, "../../src/http/assets/doc.js"));
require(path.join(__dirname, "../../src/http/assets/seatlogic.js"));
const S = globalThis.TroopSeat;
const TroopDoc = globalThis.TroopDoc;

const cps = (s) => Array.from(s);

// Applies editor changes (as CodeMirror would, in order) to text split in lines, UTF-16 units.
function applyChanges(text, changes) {
  let lines = text.split("\n");
  for (const c of changes) {
    const before = lines.slice(0, c.from.line).concat([lines[c.from.line].slice(0, c.from.ch)]).join("\n");
    const after = [lines[c.to.line].slice(c.to.ch)].concat(lines.slice(c.to.line + 1)).join("\n");
    lines = (before + c.text + after).split("\n");
  }
  return lines.join("\n");
}

// Troop's operation on a string, by code points.
function applyOps(text, ops) {
  const a = cps(text);
  let at = 0;
  const out = [];
  for (const op of ops) {
    if (typeof op === "string") out.push(op);
    else if (op > 0) { out.push(a.slice(at, at + op).join("")); at += op; }
    else at -= op;
  }
  return out.join("");
}

test("code points are counted as Python counts them", () => {
  assert.equal(S.cpLength(""), 0);
  assert.equal(S.cpLength("abc"), 3);
  assert.equal(S.cpLength("🎵"), 1);
  assert.equal("🎵".length, 2);
  assert.equal(S.cpLength("a🎵b🎶\n"), 5);
  assert.equal(S.cpLength("é"), 1);
  assert.equal(S.cpLength("\uD83C"), 1, "a lone surrogate is one code point");
  assert.equal(S.cpLength("\uDFB5x"), 2);
});

test("UTF-16 units and code points convert both ways within a line", () => {
  const s = "a🎵b🎶c";
  assert.equal(S.unitsToCp(s, 0), 0);
  assert.equal(S.unitsToCp(s, 1), 1);
  assert.equal(S.unitsToCp(s, 3), 2);   // after 🎵
  assert.equal(S.unitsToCp(s, 4), 3);
  assert.equal(S.unitsToCp(s, 6), 4);   // after 🎶
  assert.equal(S.unitsToCp(s, 7), 5);
  assert.equal(S.unitsToCp(s, 99), 5);
  assert.equal(S.unitsToCp(s, 2), 2, "inside a pair counts the pair");
  for (let cp = 0; cp <= 5; cp++) assert.equal(S.unitsToCp(s, S.cpToUnits(s, cp)), cp);
  assert.equal(S.cpToUnits(s, 2), 3);
  assert.equal(S.cpToUnits(s, 4), 6);
  assert.equal(S.cpToUnits(s, 10), 7);
});

test("positions and code point indices round-trip over lines with astral characters", () => {
  const text = "d1 >> play('x')\n🎵🎵 = 1\n\nb🎶 >> pads([0, 2])\n";
  const chars = cps(text);
  const m = new S.LineMap(chars);
  assert.equal(m.lineCount(), 5);
  for (let i = 0; i <= chars.length; i++) {
    const pos = m.pos(i);
    assert.equal(m.index(pos), i, `index ${i} -> ${JSON.stringify(pos)}`);
    // The position is the one CodeMirror has: line and UTF-16 offset into it.
    const before = chars.slice(0, i).join("");
    const line = before.split("\n").length - 1;
    const ch = before.length - (before.lastIndexOf("\n") + 1);
    assert.deepEqual(pos, { line, ch });
  }
  assert.deepEqual(m.pos(17), { line: 1, ch: 2 }, "after the first 🎵 of line 2");
  assert.deepEqual(m.pos(18), { line: 1, ch: 4 });
  assert.equal(m.index({ line: 1, ch: 4 }), 18);
  assert.equal(m.index({ line: 1, ch: 3 }), 18, "inside a pair: after it");
  assert.equal(m.index({ line: 2, ch: 5 }), 23, "past a line's end (an empty one): its end");
  assert.equal(m.index({ line: 1, ch: 99 }), 22, "past a line's end: its end");
  assert.equal(m.index({ line: 9, ch: 0 }), chars.length, "past the last line: the last line");
  assert.deepEqual(m.pos(-3), { line: 0, ch: 0 });
  assert.deepEqual(m.pos(1e9), m.pos(chars.length));
  assert.equal(S.posToIndex(chars, { line: 3, ch: 3 }), 26);
  assert.deepEqual(S.indexToPos(chars, 26), { line: 3, ch: 3 });
});

test("an operation becomes editor changes, last first, that give the same text", () => {
  const cases = [
    ["hello", [5, " world"]],
    ["hello", ["oh ", 5]],
    ["hello", [1, -3, "ipp", 1]],
    ["a🎵b\nc🎶d", [1, -1, "♪", 3, "🎹", 2]],
    ["a🎵b\nc🎶d", [2, "\n\n", 5]],
    ["line1\nline2\nline3", [-6, 6, "X", -5]],
    ["🎵🎵🎵", [-1, "x", 1, "y", -1]],
    ["", ["🎵 new\ntext"]],
    ["abc", [3]],
  ];
  for (const [text, ops] of cases) {
    const changes = S.opsToChanges(cps(text), ops);
    assert.equal(applyChanges(text, changes), applyOps(text, ops), `${JSON.stringify(text)} ${JSON.stringify(ops)}`);
    for (let i = 1; i < changes.length; i++) {
      const a = changes[i - 1], b = changes[i];
      assert.ok(a.from.line > b.to.line || (a.from.line === b.to.line && a.from.ch >= b.to.ch), "last first, not overlapping");
    }
  }
  assert.deepEqual(S.opsToChanges(cps("a🎵b"), [2, "x", 1]), [{ from: { line: 0, ch: 3 }, to: { line: 0, ch: 3 }, text: "x" }]);
  assert.deepEqual(S.opsToChanges(cps("a🎵b"), [1, -1, "x", 1]), [{ from: { line: 0, ch: 1 }, to: { line: 0, ch: 3 }, text: "x" }],
    "a delete next to an insert is one change");
  assert.deepEqual(S.opsToChanges(cps("abc"), [3]), []);
  assert.throws(() => S.opsToChanges(cps("abc"), [2, "x"]), /covers 2/);
  assert.throws(() => S.opsToChanges(cps("abc"), [1.5, 2]), /bad operation part/);
});

test("own cursor moves as Troop moves a peer's: stays before text inserted right at it", () => {
  assert.equal(S.mapIndex([3, "xy", 2], 3), 3, "insert at the cursor: stays put");
  assert.equal(S.mapIndex([3, "xy", 2], 4), 6);
  assert.equal(S.mapIndex([3, "xy", 2], 2), 2);
  assert.equal(S.mapIndex([3, "🎵", 2], 5), 6, "one code point");
  assert.equal(S.mapIndex([1, -2, 2], 4), 2, "after a delete: moves back");
  assert.equal(S.mapIndex([1, -2, 2], 2), 1, "inside a delete: to where it was");
  assert.equal(S.mapIndex([1, -2, 2], 1), 1);
  assert.equal(S.mapIndex([-2, "abc", 3], 0), 0);
  assert.equal(S.mapIndex([-2, "abc", 3], 3), 4);
  assert.equal(S.mapIndex([5, "end"], 5), 5);
  assert.equal(S.mapIndex(["start", 5], 0), 0);
  // The same as TroopDoc moves another performer's mark, on random operations.
  let seed = 7;
  const rnd = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
  for (let k = 0; k < 300; k++) {
    const len = rnd(8);
    const ops = [];
    let left = len;
    while (left > 0 || ops.length === 0) {
      const r = rnd(3);
      if (r === 0) ops.push("ab🎵".slice(0, 1 + rnd(3)));
      else if (left > 0) { const n = 1 + rnd(left); ops.push(r === 1 ? n : -n); left -= n; }
      if (left === 0 && ops.length) break;
    }
    const merged = [];
    for (const op of ops) {
      const last = merged[merged.length - 1];
      if (typeof op === "number" && typeof last === "number" && Math.sign(op) === Math.sign(last)) merged[merged.length - 1] += op;
      else merged.push(op);
    }
    const index = rnd(len + 1);
    const doc = TroopDoc.fromSnapshot("x".repeat(len), [], [{ id: 1, index }]);
    doc.applyOperation(2, merged);
    assert.equal(S.mapIndex(merged, index), doc.marks.get(1), `${JSON.stringify(merged)} at ${index}`);
  }
});

test("the difference between the model and the editor is one change in code points", () => {
  assert.equal(S.replaceDiff(cps("same🎵"), "same🎵"), null);
  assert.deepEqual(S.replaceDiff(cps("a🎵c"), "a🎵🎶c"), { from: 2, to: 2, text: "🎶" });
  assert.deepEqual(S.replaceDiff(cps("a🎵c"), "ac"), { from: 1, to: 2, text: "" });
  assert.deepEqual(S.replaceDiff(cps("aaa"), "aa"), { from: 2, to: 3, text: "" });
  assert.deepEqual(S.replaceDiff(cps(""), "x\ny"), { from: 0, to: 0, text: "x\ny" });
});

// The document Troop's get_block_of_code is asked about in the tests below (1-based lines):
const LINES = [
  "Clock.bpm = 120",          // 1
  "",                         // 2
  "d1 >> play('x-o-')",       // 3
  "d2 >> play('  * ')",       // 4
  "   ",                      // 5 (only spaces: blank)
  "p1 >> pads([0, 2, 🎵])",   // 6
  "    .every(4, 'stutter')", // 7
];

test("Ctrl+Enter evaluates Troop's block: up to a blank line (inclusive) or line 1, down to a blank line (exclusive)", () => {
  assert.deepEqual(S.blockOfCode(LINES, 1, null), { start: 1, end: 2 }, "first line: from line 1");
  assert.deepEqual(S.blockOfCode(LINES, 3, null), { start: 2, end: 5 }, "the blank line above is the start");
  assert.deepEqual(S.blockOfCode(LINES, 4, null), { start: 2, end: 5 });
  assert.deepEqual(S.blockOfCode(LINES, 6, null), { start: 5, end: 8 }, "to the line after the last");
  assert.deepEqual(S.blockOfCode(LINES, 7, null), { start: 5, end: 8 });
  assert.equal(S.blockOfCode(LINES, 2, null), null, "a blank line: nothing");
  assert.equal(S.blockOfCode(LINES, 5, null), null, "whitespace only: nothing");
  assert.deepEqual(S.blockOfCode(["a", "b", "c"], 2, null), { start: 1, end: 4 });
  assert.equal(S.blockOfCode([""], 1, null), null);
  assert.deepEqual(S.blockOfCode(["x"], 1, null), { start: 1, end: 2 });
  assert.deepEqual(S.blockOfCode(["", "", "x", ""], 3, null), { start: 2, end: 4 });
});

test("Ctrl+Enter with a selection evaluates its first line to its last, inclusive", () => {
  assert.deepEqual(S.blockOfCode(LINES, 4, { first: 3, last: 4 }), { start: 3, end: 5 });
  assert.deepEqual(S.blockOfCode(LINES, 7, { first: 1, last: 7 }), { start: 1, end: 8 });
  assert.deepEqual(S.blockOfCode(LINES, 1, { first: 1, last: 1 }), { start: 1, end: 2 });
  assert.equal(S.blockOfCode(LINES, 2, { first: 2, last: 2 }), null, "only blank lines selected: nothing");
  assert.deepEqual(S.blockOfCode(LINES, 2, { first: 2, last: 3 }), { start: 2, end: 4 });
});

test("Alt+Enter evaluates the cursor's line unless it is blank", () => {
  assert.deepEqual(S.lineOfCode(LINES, 3), { start: 3, end: 3 });
  assert.deepEqual(S.lineOfCode(LINES, 7), { start: 7, end: 7 });
  assert.equal(S.lineOfCode(LINES, 2), null);
  assert.equal(S.lineOfCode(LINES, 5), null);
  assert.equal(S.lineOfCode(LINES, 99), null);
});

test("the evaluated code and how the console prints it", () => {
  assert.equal(S.evaluatedCode(LINES, 2, 5), "\nd1 >> play('x-o-')\nd2 >> play('  * ')");
  assert.equal(S.evaluatedCode(LINES, 3, 3), "d1 >> play('x-o-')", "start == end: that line");
  assert.equal(S.evaluatedCode(LINES, 7, 9), "    .every(4, 'stutter')\n", "past the end: empty lines");
  assert.deepEqual(S.consoleLines("bob", "\nd1 >> play('x')\n  \nd2 >> pads()\n"), [
    { lead: "bob", text: "d1 >> play('x')" },
    { lead: "...", text: "d2 >> pads()" },
  ]);
  assert.deepEqual(S.consoleLines("🎵z", "a\nb"), [{ lead: "🎵z", text: "a" }, { lead: "..", text: "b" }]);
  assert.deepEqual(S.consoleLines("bob", "   "), []);
});

test("a reset's peer_tag_loc and peer_loc become the model's authors and cursors", () => {
  // What Troop's server sends: [[client id, length], ...]
  assert.deepEqual(S.runsFromTagLoc([[0, 3], [2, 4]], 7), [[0, 3], [2, 4]]);
  assert.deepEqual(S.runsFromTagLoc([["3", "2"]], 2), [[3, 2]]);
  // The map form (id -> [[start, end], ...]) is read too.
  assert.deepEqual(S.runsFromTagLoc({ "1": [[0, 2], [5, 6]], "4": [[2, 5]] }, 7), [[1, 2], [4, 3], [1, 1], [null, 1]]);
  assert.deepEqual(S.runsFromTagLoc(null, 3), []);
  assert.deepEqual(S.marksFromPeerLoc({ "1": 4, "12": 0 }), [{ id: 1, index: 4 }, { id: 12, index: 0 }]);
  assert.deepEqual(S.marksFromPeerLoc(null), []);
  const text = "ab🎵\ncd";
  const doc = TroopDoc.fromSnapshot(text, S.runsFromTagLoc([[1, 2], [2, 4]], 6), S.marksFromPeerLoc({ "1": 3, "2": 6 }));
  assert.deepEqual(doc.runs(), [[1, 2], [2, 4]]);
  assert.deepEqual([...doc.marks.entries()], [[1, 3], [2, 6]]);
});

test("authors' runs as editor ranges, in UTF-16 positions, unknown authors left out", () => {
  const chars = cps("a🎵b\ncd");
  const authors = [1, 1, 2, 2, 2, null];
  assert.deepEqual(S.authorRanges(chars, authors), [
    { author: 1, from: { line: 0, ch: 0 }, to: { line: 0, ch: 3 } },
    { author: 2, from: { line: 0, ch: 3 }, to: { line: 1, ch: 1 } },
  ]);
  assert.deepEqual(S.authorRanges([], []), []);
  assert.deepEqual(S.authorRanges(cps("xy"), [null, 5]), [{ author: 5, from: { line: 0, ch: 1 }, to: { line: 0, ch: 2 } }]);
});

test("each hub message maps to what the page does", () => {
  const me = 3;
  const cases = [
    [{ type: "welcome", id: 3, name: "alice", session: "gig" }, null, "welcome"],
    [{ type: "connect", src: 5, name: "bob" }, me, "peer-joined"],
    [{ type: "connect", src: 3, name: "alice" }, me, "self-joined"],
    [{ type: "remove", src: 5 }, me, "peer-left"],
    [{ type: "request_ack", flag: 1 }, me, "barrier-up"],
    [{ type: "request_ack", flag: 0 }, me, "barrier-down"],
    [{ type: "request_ack", flag: 7 }, me, "ignore"],
    [{ type: "reset", document: "", peer_tag_loc: [], peer_loc: {} }, me, "reset"],
    [{ type: "operation", src: 3, ops: [1], revision: 2 }, me, "ack"],
    [{ type: "operation", src: 5, ops: [1], revision: 2 }, me, "remote-operation"],
    [{ type: "mark", src: 5, index: 2 }, me, "peer-mark"],
    [{ type: "mark", src: 3, index: 2 }, me, "ignore"],
    [{ type: "select", src: 5, start: 1, end: 2 }, me, "peer-select"],
    [{ type: "evaluate", src: 3, start: 1, end: 2 }, me, "evaluate"],
    [{ type: "evaluate", src: 5, start: 1, end: 2 }, me, "evaluate"],
    [{ type: "evaluate_string", src: 5, string: "x" }, me, "evaluate-string"],
    [{ type: "console", string: "hi" }, me, "console"],
    [{ type: "constraint", id: 0 }, me, "constraint"],
    [{ type: "kill", string: "bye" }, me, "kill"],
    [{ type: "error", message: "no", retry: false }, null, "error"],
    [{ type: "something_new" }, me, "ignore"],
    [null, me, "ignore"],
    ["text", me, "ignore"],
  ];
  for (const [msg, id, want] of cases) assert.equal(S.action(msg, id), want, JSON.stringify(msg));
});

test("close codes become one sentence saying what to do", () => {
  const info = { session: "gig", name: "alice", joined: false };
  assert.equal(S.closeSentence(4409, info), "The name alice is taken in this session: choose another.");
  assert.match(S.closeSentence(4403, info), /password is wrong: check it/);
  assert.match(S.closeSentence(4404, info), /no session named gig/);
  assert.match(S.closeSentence(4408, info), /join again/);
  assert.match(S.closeSentence(4413, info), /fell behind.*join again/);
  assert.match(S.closeSentence(4429, info), /wait/);
  assert.match(S.closeSentence(4503, info), /gig is full/);
  assert.match(S.closeSentence(4400, info), /reload/);
  assert.equal(S.closeSentence(1000, { session: "gig" }), "The session gig has ended.");
  assert.equal(S.closeSentence(1000, { reason: "The performers ended the session." }), "The performers ended the session.");
  assert.match(S.closeSentence(1006, { joined: true }), /lost: join again/);
  assert.match(S.closeSentence(1006, { joined: false }), /Could not reach the hub/);
  assert.equal(S.closeSentence(4999, { reason: "The hub is shutting down." }), "The hub is shutting down.");
  assert.equal(S.closeSentence(4400, { reason: "Give a performer name", joined: false }), "Give a performer name.",
    "before the welcome, 4400 is about the name: the hub's sentence");
  assert.match(S.closeSentence(4400, { reason: "bad message", joined: true }), /reload/);
  assert.equal(S.closeSentence(4404, { session: "gig", reason: "Browser seats are off on this hub" }), "Browser seats are off on this hub.");
  assert.equal(S.closeSentence(4503, { reason: "The session is full: Troop gives out 62 client ids over a session's life" }),
    "The session is full: Troop gives out 62 client ids over a session's life.");
  assert.equal(S.closeSentence(4409, { name: "bob", reason: "The name bob is taken" }), "The name bob is taken in this session: choose another.");
  assert.match(S.closeSentence(1009, {}), /too large/);
  assert.equal(S.sentence("  Wrong password "), "Wrong password.");
  assert.equal(S.sentence("Done!"), "Done!");
  for (const code of [1000, 1006, 4400, 4403, 4404, 4408, 4409, 4413, 4429, 4503]) {
    const s = S.closeSentence(code, info);
    assert.equal(s.split(/[.!?](\s|$)/).filter((x) => x && x.trim()).length, 1, `one sentence: ${s}`);
  }
});

test("the session's name and the WebSocket's URL come from the page's address", () => {
  assert.equal(S.sessionFromPath("/s/gig/play"), "gig");
  assert.equal(S.sessionFromPath("/prefix/troop/s/my-set.2/play"), "my-set.2");
  assert.equal(S.sessionFromPath("/s/gig"), "");
  assert.equal(S.sessionFromPath("/s/gig/play/"), "");
  assert.equal(S.sessionFromPath("/x/gig/play"), "");
  assert.equal(S.sessionFromPath("/s/%E0%A4/play"), "", "undecodable");
  assert.equal(S.sessionFromPath("/s/a%20b/play"), "", "not a session name");
  assert.equal(S.seatUrl("https://hub.example/s/gig/play", "gig"), "wss://hub.example/api/v1/sessions/gig/seat");
  assert.equal(S.seatUrl("http://hub.example:8080/troop/s/gig/play?mode=haskell#x", "other"),
    "ws://hub.example:8080/troop/api/v1/sessions/other/seat");
});
