// The pages' shared drawing helpers (src/http/assets/render.js) that need no page: the
// parameters read from the query and from after a share link's token, the token's checks,
// and each author's share of the code. Run: node --test tests/js/*.test.js
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const path = require("node:path");

globalThis.window = globalThis;
require(path.join(__dirname, "../../src/http/assets/doc.js"));
require(path.join(__dirname, "../../src/http/assets/render.js"));
const R = globalThis.TroopRender;
const TOKEN = "0123456789abcdef".repeat(4);

function at(search, hash) {
  globalThis.location = { search, hash };
}

test("parameters come from the query and from after the token, which win", () => {
  at("?font=20&lines=30", "#share=" + TOKEN + "&stage&bg=transparent&font=40");
  const p = R.params();
  assert.equal(p.get("font"), "40");
  assert.equal(p.get("lines"), "30");
  assert.ok(p.has("stage"));
  assert.equal(p.get("bg"), "transparent");
  assert.equal(R.shareToken(), TOKEN);
});

test("only a hex token is a share token", () => {
  for (const bad of ["", "#share=", "#share=xyz", "#share=" + "g".repeat(64), "#share=<script>"]) {
    at("", bad);
    assert.equal(R.shareToken(), null, bad);
  }
  at("?share=" + TOKEN, "");
  assert.equal(R.shareToken(), TOKEN, "a token in the query works too (never made so by the hub)");
});

test("shares count each author's characters over the whole document", () => {
  const doc = window.TroopDoc.fromSnapshot("abcde", [[1, 2], [null, 1], [2, 2]], []);
  const shares = R.shares(doc);
  assert.deepEqual([...shares.entries()].sort(), [[1, 0.4], [2, 0.4]]);
  assert.equal(R.shares(window.TroopDoc.fromSnapshot("", [], [])).size, 0, "an empty document");
});
