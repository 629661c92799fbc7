// The pages' document model (src/http/assets/doc.js) against the golden vectors it shares
// with the hub's (src/audience/doc.rs, which checks the same file): text, authors and cursors
// agree after the same operations. Run: node --test tests/js/*.test.js
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");

require(path.join(__dirname, "../../src/http/assets/doc.js"));
const TroopDoc = globalThis.TroopDoc;

const vectors = fs
  .readFileSync(path.join(__dirname, "../data/doc_vectors.jsonl"), "utf8")
  .split("\n")
  .filter((l) => l.trim())
  .map((l) => JSON.parse(l));

test("the vectors are there", () => {
  assert.ok(vectors.length >= 10, `${vectors.length} vectors`);
});

for (const v of vectors) {
  test(v.name, () => {
    const doc = TroopDoc.fromSnapshot(v.text, v.runs, v.marks.map(([id, index]) => ({ id, index })));
    for (const step of v.steps) {
      if (step.op) {
        const [author, ops] = step.op;
        let failed = false;
        try {
          doc.applyOperation(author, ops);
        } catch (e) {
          failed = true;
        }
        assert.equal(failed, step.error === true, "an operation that does not fit is refused, one that fits applies");
      } else if (step.mark) {
        doc.setMark(step.mark[0], step.mark[1]);
      } else if (step.leave !== undefined) {
        doc.removePeer(step.leave);
      }
    }
    const marks = [...doc.marks.entries()].sort((a, b) => a[0] - b[0]);
    assert.deepEqual({ text: doc.text(), runs: doc.runs(), marks }, v.expect);
  });
}
