// The page's OT (src/http/assets/ot.js) as a filter for tests/ot_differential.rs: reads JSON
// lines from stdin, each {"kind": "apply", "text", "ops"} | {"kind": "compose", "a", "b"} |
// {"kind": "transform", "a", "b"} | {"kind": "normalize", "ops"}, and writes one line per input:
// {"ok": <result>} or {"error": true} (ot.js refused it, as ot.rs must too). A line it cannot
// read, or an unknown kind, is a bug in the test: it exits non-zero saying which line.
"use strict";
const path = require("node:path");

require(path.join(__dirname, "../../src/http/assets/ot.js"));
const OT = globalThis.TroopOT;

function run(c) {
  switch (c.kind) {
    case "apply":
      return OT.apply(c.text, c.ops);
    case "compose":
      return OT.compose(c.a, c.b);
    case "transform":
      return OT.transform(c.a, c.b);
    case "normalize":
      return OT.normalize(c.ops);
    default:
      throw new Error(`unknown kind ${JSON.stringify(c.kind)}`);
  }
}

const chunks = [];
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => chunks.push(chunk));
process.stdin.on("end", () => {
  const out = [];
  const lines = chunks.join("").split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() === "") continue;
    let c;
    try {
      c = JSON.parse(lines[i]);
    } catch (e) {
      process.stderr.write(`ot_cli: line ${i + 1} is not JSON: ${e.message}\n`);
      process.exit(2);
    }
    let result;
    try {
      result = { ok: run(c) };
    } catch (e) {
      if (!e || !e.kind) {
        process.stderr.write(`ot_cli: line ${i + 1}: ${e && e.stack}\n`);
        process.exit(2);
      }
      result = { error: true };
    }
    out.push(JSON.stringify(result));
  }
  process.stdout.write(out.length ? out.join("\n") + "\n" : "");
});
