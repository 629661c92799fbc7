// ot.js: the browser seat's operational transformation. It owns Troop's text operations in
// the page (apply, compose, transform, normalize, exactly as crates/troop-server/src/ot.rs
// ports Troop's src/ot/text_operation.py, pinned to it by tests/ot_differential.rs) and the
// client-side OT state machine (synchronized / awaiting confirm / awaiting with buffer, as
// crates/troop-server/src/client.rs and Troop's src/ot/client.py). No DOM, no dependencies.
//
// An operation is an array of parts: a positive integer retains that many characters, a
// negative one deletes -n, a string inserts it; 0 and "" do nothing. Every length counts
// Unicode code points (Python str), never UTF-16 units: "🎵" has length 1.
(function (root) {
  "use strict";

  var MESSAGES = {
    TooLong: "operation is too long for the document",
    TooShort: "operation is too short for the document",
    LengthMismatch: "operations do not have the same base length",
  };

  // Throws the error ot.rs returns; `kind` names its variant.
  function fail(kind) {
    var e = new Error(MESSAGES[kind]);
    e.name = "TroopOTError";
    e.kind = kind;
    throw e;
  }

  // An operation from outside must be an array of strings and safe integers (ot.rs reads
  // i64; integers beyond 2^53 cannot be told apart in a JS number, so they are refused).
  function check(ops) {
    if (!Array.isArray(ops)) badPart("an operation is an array of parts");
    for (var i = 0; i < ops.length; i++) {
      var p = ops[i];
      if (typeof p !== "string" && !(typeof p === "number" && Number.isSafeInteger(p))) {
        badPart("operation part " + i + " is neither a (safe) integer nor a string");
      }
    }
  }

  function badPart(message) {
    var e = new TypeError(message);
    e.kind = "BadPart";
    throw e;
  }

  function isHigh(c) { return c >= 0xd800 && c <= 0xdbff; }
  function isLow(c) { return c >= 0xdc00 && c <= 0xdfff; }

  // Code points in `s` (a lone surrogate counts as one, as Array.from does).
  function cpLength(s) {
    var n = s.length, count = 0;
    for (var i = 0; i < n; i++) {
      if (isHigh(s.charCodeAt(i)) && i + 1 < n && isLow(s.charCodeAt(i + 1))) i++;
      count++;
    }
    return count;
  }

  // The UTF-16 index `n` code points after UTF-16 index `at` (clamped to the end).
  function advance(s, at, n) {
    var len = s.length;
    while (n > 0 && at < len) {
      at += isHigh(s.charCodeAt(at)) && at + 1 < len && isLow(s.charCodeAt(at + 1)) ? 2 : 1;
      n--;
    }
    return at;
  }

  function partLength(p) {
    return typeof p === "string" ? cpLength(p) : Math.abs(p);
  }

  // Builds operations with ot.py's rules: adjacent retains, deletes and inserts merge, an
  // insert right after a delete goes before it, parts of length zero are dropped.
  function Builder() {
    this.ops = [];
  }

  Builder.prototype.retain = function (n) {
    if (n === 0) return this;
    var ops = this.ops, last = ops.length - 1;
    if (last >= 0 && typeof ops[last] === "number" && ops[last] > 0) ops[last] += n;
    else ops.push(n);
    return this;
  };

  // Deletes n (> 0) characters.
  Builder.prototype.del = function (n) {
    if (n === 0) return this;
    var ops = this.ops, last = ops.length - 1;
    if (last >= 0 && typeof ops[last] === "number" && ops[last] < 0) ops[last] -= n;
    else ops.push(-n);
    return this;
  };

  Builder.prototype.insert = function (s) {
    if (s === "") return this;
    var ops = this.ops, last = ops.length - 1;
    if (last >= 0 && typeof ops[last] === "string") {
      ops[last] += s;
    } else if (last >= 0 && typeof ops[last] === "number" && ops[last] < 0) {
      if (last >= 1 && typeof ops[last - 1] === "string") {
        ops[last - 1] += s;
      } else {
        var d = ops[last];
        ops[last] = s;
        ops.push(d);
      }
    } else {
      ops.push(s);
    }
    return this;
  };

  Builder.prototype.push = function (p) {
    if (typeof p === "string") return this.insert(p);
    if (p > 0) return this.retain(p);
    return this.del(-p);
  };

  // The parts that do something (ot.rs filters out 0 and "" before transform and compose).
  function nonEmpty(ops) {
    var out = [];
    for (var i = 0; i < ops.length; i++) if (ops[i] !== 0 && ops[i] !== "") out.push(ops[i]);
    return out;
  }

  // Characters the operation expects in its input document (retains + deletes).
  function baseLength(ops) {
    check(ops);
    var n = 0;
    for (var i = 0; i < ops.length; i++) if (typeof ops[i] === "number") n += Math.abs(ops[i]);
    return n;
  }

  // Characters of the document after the operation (retains + inserts).
  function targetLength(ops) {
    check(ops);
    var n = 0;
    for (var i = 0; i < ops.length; i++) {
      var p = ops[i];
      if (typeof p === "string") n += cpLength(p);
      else if (p > 0) n += p;
    }
    return n;
  }

  // The operation rebuilt through the builder (ot.rs `normalized`).
  function normalize(ops) {
    check(ops);
    var b = new Builder();
    for (var i = 0; i < ops.length; i++) b.push(ops[i]);
    return b.ops;
  }

  // True when the operation changes no text (only retains and empty parts).
  function isNoop(ops) {
    check(ops);
    for (var i = 0; i < ops.length; i++) {
      var p = ops[i];
      if (typeof p === "string" ? p !== "" : p < 0) return false;
    }
    return true;
  }

  // The text after the operation; throws (kind TooLong / TooShort) where ot.rs `apply` fails,
  // checking the whole operation before building anything.
  function apply(text, ops) {
    check(ops);
    text = String(text);
    var n = cpLength(text), i = 0, k, p;
    for (k = 0; k < ops.length; k++) {
      p = ops[k];
      if (typeof p === "string") continue;
      i += Math.abs(p);
      if (i > n) fail("TooLong");
    }
    if (i !== n) fail("TooShort");
    var ascii = n === text.length;
    var out = [], atUnit = 0;
    for (k = 0; k < ops.length; k++) {
      p = ops[k];
      if (typeof p === "string") {
        if (p !== "") out.push(p);
        continue;
      }
      var len = Math.abs(p);
      if (len === 0) continue;
      var end = ascii ? atUnit + len : advance(text, atUnit, len);
      if (p > 0) out.push(text.slice(atUnit, end));
      atUnit = end;
    }
    return out.join("");
  }

  // ot.py's transform(a, b): [a', b'] with apply(apply(d, b), a') === apply(apply(d, a), b').
  // At the same position a's insert goes first. Throws (LengthMismatch) unless both
  // operations have the same base length.
  function transform(a, b) {
    check(a);
    check(b);
    var A = nonEmpty(a), B = nonEmpty(b), ia = 0, ib = 0;
    var pa = A[ia++], pb = B[ib++];
    var a1 = new Builder(), b1 = new Builder();
    for (;;) {
      if (pa === undefined && pb === undefined) break;
      if (typeof pa === "string") {
        a1.insert(pa);
        b1.retain(cpLength(pa));
        pa = A[ia++];
        continue;
      }
      if (typeof pb === "string") {
        a1.retain(cpLength(pb));
        b1.insert(pb);
        pb = B[ib++];
        continue;
      }
      if (pa === undefined || pb === undefined) fail("LengthMismatch");
      var la = Math.abs(pa), lb = Math.abs(pb), min = la < lb ? la : lb;
      if (pa > 0 && pb > 0) {
        a1.retain(min);
        b1.retain(min);
      } else if (pa < 0 && pb > 0) {
        a1.del(min);
      } else if (pa > 0 && pb < 0) {
        b1.del(min);
      }
      // Both delete: the text is gone either way.
      if (la === lb) {
        pa = A[ia++];
        pb = B[ib++];
      } else if (la > lb) {
        pa = pa > 0 ? pa - lb : pa + lb;
        pb = B[ib++];
      } else {
        pb = pb > 0 ? pb - la : pb + la;
        pa = A[ia++];
      }
    }
    return [a1.ops, b1.ops];
  }

  // ot.py's compose(a, b): one operation with the effect of a then b. Throws
  // (LengthMismatch) unless b's base length is a's target length.
  function compose(a, b) {
    check(a);
    check(b);
    var A = nonEmpty(a), B = nonEmpty(b), ia = 0, ib = 0, out = new Builder();
    // The current part of a; when it is an insert, `ua` is the UTF-16 index of what is left
    // of it and `na` how many code points are left (so long inserts are walked only once).
    var pa, ua = 0, na = 0;
    function nextA() {
      pa = A[ia++];
      if (typeof pa === "string") {
        ua = 0;
        na = cpLength(pa);
      }
    }
    nextA();
    var pb = B[ib++];
    for (;;) {
      if (pa === undefined && pb === undefined) break;
      if (typeof pa === "number" && pa < 0) {
        out.del(-pa);
        nextA();
        continue;
      }
      if (typeof pb === "string") {
        out.insert(pb);
        pb = B[ib++];
        continue;
      }
      if (pa === undefined || pb === undefined) fail("LengthMismatch");
      // pa retains or inserts, pb retains or deletes.
      var isInsert = typeof pa === "string";
      var la = isInsert ? na : pa, lb = Math.abs(pb), min = la < lb ? la : lb;
      if (isInsert) {
        var end = advance(pa, ua, min);
        if (pb > 0) out.insert(pa.slice(ua, end));
        // An insert that b deletes again: nothing.
        ua = end;
        na -= min;
      } else if (pb > 0) {
        out.retain(min);
      } else {
        out.del(min);
      }
      if (la === lb) {
        nextA();
        pb = B[ib++];
      } else if (la > lb) {
        if (!isInsert) pa -= lb;
        pb = B[ib++];
      } else {
        pb = pb > 0 ? pb - la : pb + la;
        nextA();
      }
    }
    return out.ops;
  }

  // The operation replacing code points [from, to) with `text` in a document of `docLength`
  // code points (normalized; [docLength] when it changes nothing).
  function replace(docLength, from, to, text) {
    if (!(Number.isSafeInteger(docLength) && Number.isSafeInteger(from) && Number.isSafeInteger(to)) ||
        from < 0 || from > to || to > docLength) {
      throw new RangeError("replace: need 0 <= from <= to <= docLength, got " + [from, to, docLength]);
    }
    return new Builder().retain(from).del(to - from).insert(String(text || "")).retain(docLength - to).ops;
  }

  // Client-side OT, as client.rs: `send(ops, revision)` puts an operation on the wire.
  // revision counts the operations the server applied since the last RESET, as the page's
  // document has them. One deliberate difference: an operation that changes no text is never
  // sent (the server drops a client that sends [], and a lone retain would move the sender's
  // cursor to 0 for its peers); the revision counting is the same, as the server never sees it.
  function Client(send) {
    this.send = send;
    this.revision = 0;
    this.state = "synchronized"; // | "awaiting" | "buffer"
    this.outstanding = null; // sent, not acknowledged yet ("awaiting", "buffer")
    this.buffer = null; // local edits made since, composed ("buffer")
  }

  // A local edit, already applied to the page's text.
  Client.prototype.local = function (ops) {
    if (isNoop(ops)) return;
    if (this.state === "synchronized") {
      this.outstanding = ops;
      this.state = "awaiting";
      this.send(ops, this.revision);
    } else if (this.state === "awaiting") {
      this.buffer = ops;
      this.state = "buffer";
    } else {
      this.buffer = compose(this.buffer, ops);
    }
  };

  // The server echoed our own operation: it is applied; the buffer goes out next.
  Client.prototype.ack = function () {
    this.revision++;
    var buffer = this.state === "buffer" ? this.buffer : null;
    this.buffer = null;
    if (buffer !== null && !isNoop(buffer)) {
      this.outstanding = buffer;
      this.state = "awaiting";
      this.send(buffer, this.revision);
    } else {
      this.outstanding = null;
      this.state = "synchronized";
    }
  };

  // A peer's operation as the server applied it: returns the operation to apply to the
  // page's text (transformed past what we have not had acknowledged). Throws, changing
  // nothing, when it does not fit.
  Client.prototype.remote = function (ops) {
    check(ops);
    var op = ops, outstanding = this.outstanding, buffer = this.buffer, pair;
    if (this.state === "awaiting" || this.state === "buffer") {
      pair = transform(outstanding, op);
      outstanding = pair[0];
      op = pair[1];
    }
    if (this.state === "buffer") {
      pair = transform(buffer, op);
      buffer = pair[0];
      op = pair[1];
    }
    this.outstanding = outstanding;
    this.buffer = buffer;
    this.revision++;
    return op;
  };

  // RESET: the document was replaced; revision 0, nothing outstanding.
  Client.prototype.reset = function () {
    this.revision = 0;
    this.state = "synchronized";
    this.outstanding = null;
    this.buffer = null;
  };

  // True while an own operation waits for the server's acknowledgement.
  Client.prototype.pending = function () {
    return this.state !== "synchronized";
  };

  root.TroopOT = {
    length: function (text) { return cpLength(String(text)); },
    baseLength: baseLength,
    targetLength: targetLength,
    normalize: normalize,
    isNoop: isNoop,
    apply: apply,
    compose: compose,
    transform: transform,
    replace: replace,
    Client: Client,
  };
})(typeof window !== "undefined" ? window : globalThis);
