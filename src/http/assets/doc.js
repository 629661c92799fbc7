// doc.js: the Troop document model, without any DOM, shared by the live audience page
// (view.js) and, later, a replay page. It owns the text as an array of Unicode code points
// (Troop counts positions in Python str units, i.e. code points, never UTF-16 units), who
// wrote each code point, the performers' cursors ("marks") and selections, and Troop's
// operations on all of them: a list of parts, a positive int retains n, a negative int
// deletes n, a string inserts it; the retains and deletes cover the whole document.
(function (root) {
  "use strict";

  function TroopDoc() {
    this.chars = [];            // one code point (a string of 1 or 2 UTF-16 units) each
    this.authors = [];          // parallel: the client id that wrote it, or null (unknown)
    this.marks = new Map();     // client id -> cursor index (code points)
    this.selections = new Map(); // client id -> {start, end}, start < end
    this.version = 0;           // bumped on every change, so a renderer knows what to redraw
    this._text = "";
  }

  // A document from a snapshot: its text and [author or null, length] runs covering it.
  // Runs that do not cover the text exactly are tolerated (missing authors are unknown).
  TroopDoc.fromSnapshot = function (text, runs, marks) {
    var doc = new TroopDoc();
    doc.load(text, runs, marks);
    return doc;
  };

  TroopDoc.prototype.load = function (text, runs, marks) {
    var chars = Array.from(String(text || ""));
    var authors = new Array(chars.length);
    var at = 0;
    (runs || []).forEach(function (run) {
      var who = run && run[0] != null ? run[0] : null;
      var len = run ? Number(run[1]) || 0 : 0;
      for (var end = Math.min(at + len, chars.length); at < end; at++) authors[at] = who;
    });
    for (; at < chars.length; at++) authors[at] = null;
    this.chars = chars;
    this.authors = authors;
    this.marks = new Map();
    this.selections = new Map();
    var self = this;
    (marks || []).forEach(function (m) { if (m) self.setMark(m.id, m.index); });
    this._changed(true);
  };

  TroopDoc.prototype._changed = function (textChanged) {
    this.version++;
    if (textChanged) this._text = null;
  };

  TroopDoc.prototype.text = function () {
    if (this._text === null) this._text = this.chars.join("");
    return this._text;
  };

  TroopDoc.prototype.length = function () { return this.chars.length; };

  // [[author or null, length], ...] covering the document, as in a snapshot.
  TroopDoc.prototype.runs = function () {
    var out = [], a = this.authors;
    for (var i = 0; i < a.length; i++) {
      var last = out[out.length - 1];
      if (last && last[0] === a[i]) last[1]++;
      else out.push([a[i], 1]);
    }
    return out;
  };

  // The 1-based line (as Troop numbers them) that code point index is on.
  TroopDoc.prototype.lineOf = function (index) {
    var line = 1, end = Math.min(Math.max(0, index | 0), this.chars.length);
    for (var i = 0; i < end; i++) if (this.chars[i] === "\n") line++;
    return line;
  };

  TroopDoc.prototype._clamp = function (i) {
    i = Math.floor(Number(i));
    if (!isFinite(i) || i < 0) return 0;
    return Math.min(i, this.chars.length);
  };

  TroopDoc.prototype.setMark = function (id, index) {
    this.marks.set(id, this._clamp(index));
    this._changed(false);
  };

  TroopDoc.prototype.setSelection = function (id, start, end) {
    var s = this._clamp(Math.min(start, end)), e = this._clamp(Math.max(start, end));
    if (s < e) this.selections.set(id, { start: s, end: e });
    else this.selections.delete(id);
    this._changed(false);
  };

  TroopDoc.prototype.removePeer = function (id) {
    this.marks.delete(id);
    this.selections.delete(id);
    this._changed(false);
  };

  // Throws (and changes nothing) unless ops is a valid operation on this document. An empty
  // list is a valid no-op (Troop skips those too).
  TroopDoc.prototype.check = function (ops) {
    if (!Array.isArray(ops)) throw new Error("operation is not a list");
    if (ops.length === 0) return;
    var covered = 0;
    for (var i = 0; i < ops.length; i++) {
      var op = ops[i];
      if (typeof op === "string") continue;
      if (typeof op !== "number" || op === 0 || Math.floor(op) !== op) {
        throw new Error("bad operation part " + JSON.stringify(op));
      }
      covered += Math.abs(op);
    }
    if (covered !== this.chars.length) {
      throw new Error("operation covers " + covered + " code points, document has " + this.chars.length);
    }
  };

  // Applies one of Troop's operations by `author`: inserted text takes the author, other
  // cursors and selections shift as in Troop (one exactly at an insert stays put), the
  // author's cursor goes where its last non-retain part ended, its selection is dropped.
  TroopDoc.prototype.applyOperation = function (author, ops) {
    this.check(ops);
    if (ops.length === 0) return;
    var pos = 0, last = -1;
    for (var i = 0; i < ops.length; i++) {
      var op = ops[i];
      if (typeof op === "string") {
        var cps = Array.from(op);
        var who = new Array(cps.length).fill(author == null ? null : author);
        this.chars = splice(this.chars, pos, 0, cps);
        this.authors = splice(this.authors, pos, 0, who);
        this._shift(pos, cps.length);
        pos += cps.length;
        last = pos;
      } else if (op > 0) {
        pos += op;
      } else {
        this.chars.splice(pos, -op);
        this.authors.splice(pos, -op);
        this._shift(pos, op);
        last = pos;
      }
    }
    if (author != null) {
      this.selections.delete(author);
      if (last >= 0) this.marks.set(author, last);
    }
    this._changed(true);
  };

  // Moves every index after `at` by `by` (negative: a delete of -by code points at `at`).
  TroopDoc.prototype._shift = function (at, by) {
    function move(i) {
      if (i <= at) return i;
      return by >= 0 ? i + by : Math.max(at, i + by);
    }
    this.marks.forEach(function (i, id, m) { m.set(id, move(i)); });
    this.selections.forEach(function (s, id, m) {
      var start = move(s.start), end = move(s.end);
      if (start < end) m.set(id, { start: start, end: end });
      else m.delete(id);
    });
  };

  // Array splice that also copes with very large inserts (no argument-count limit).
  function splice(arr, at, del, items) {
    if (items.length < 4096) {
      arr.splice.apply(arr, [at, del].concat(items));
      return arr;
    }
    return arr.slice(0, at).concat(items, arr.slice(at + del));
  }

  root.TroopDoc = TroopDoc;
})(typeof window !== "undefined" ? window : globalThis);
