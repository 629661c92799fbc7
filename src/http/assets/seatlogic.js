// seatlogic.js: the browser seat's logic without a DOM (root.TroopSeat), used by seat.js and
// required by node's tests (tests/js/seat.test.js): code point <-> CodeMirror position
// conversion, Troop 0.10.3's block-of-code rules, operations as editor changes, the hub's
// messages' meanings and the sentences the page shows. Positions on the wire are Troop's: code
// points (Python str indices), never UTF-16 units; lines are 1-based as Troop numbers them.
(function (root) {
  "use strict";

  var NAME_RE = /^[A-Za-z0-9._-]{1,64}$/;

  function isHigh(c) { return c >= 0xD800 && c <= 0xDBFF; }
  function isLow(c) { return c >= 0xDC00 && c <= 0xDFFF; }

  // The number of code points in s (a lone surrogate counts as one, as Python would).
  function cpLength(s) {
    s = String(s);
    var n = 0;
    for (var i = 0; i < s.length; i++) {
      if (isHigh(s.charCodeAt(i)) && i + 1 < s.length && isLow(s.charCodeAt(i + 1))) i++;
      n++;
    }
    return n;
  }

  // The code points in the first `units` UTF-16 units of s. A position inside a surrogate pair
  // (CodeMirror never leaves the cursor there) counts that whole code point.
  function unitsToCp(s, units) {
    var n = 0, i = 0, end = Math.min(Math.max(0, units | 0), s.length);
    while (i < end) {
      i += isHigh(s.charCodeAt(i)) && i + 1 < s.length && isLow(s.charCodeAt(i + 1)) ? 2 : 1;
      n++;
    }
    return n;
  }

  // The UTF-16 units of the first `cps` code points of s.
  function cpToUnits(s, cps) {
    var i = 0, n = 0;
    while (i < s.length && n < cps) {
      i += isHigh(s.charCodeAt(i)) && i + 1 < s.length && isLow(s.charCodeAt(i + 1)) ? 2 : 1;
      n++;
    }
    return i;
  }

  // Where each line starts in a document held as an array of code points (TroopDoc.chars),
  // to turn code point indices into CodeMirror positions ({line: 0-based, ch: UTF-16 units
  // into the line}) and back. The document's only line break is "\n" (the editor is set up
  // with lineSeparator "\n", so a "\r" is an ordinary character there as it is in Troop).
  function LineMap(chars) {
    this.chars = chars;
    var starts = [0];
    for (var i = 0; i < chars.length; i++) if (chars[i] === "\n") starts.push(i + 1);
    this.starts = starts;
  }

  LineMap.prototype.lineCount = function () { return this.starts.length; };

  // The 0-based line that code point index i is on (i clamped to the document).
  LineMap.prototype.lineOf = function (i) {
    var s = this.starts, lo = 0, hi = s.length - 1;
    while (lo < hi) {
      var mid = (lo + hi + 1) >> 1;
      if (s[mid] <= i) lo = mid; else hi = mid - 1;
    }
    return lo;
  };

  LineMap.prototype.pos = function (index) {
    var i = Math.min(Math.max(0, Math.floor(Number(index)) || 0), this.chars.length);
    var line = this.lineOf(i), ch = 0;
    for (var k = this.starts[line]; k < i; k++) ch += this.chars[k].length;
    return { line: line, ch: ch };
  };

  LineMap.prototype.index = function (pos) {
    var line = Math.min(Math.max(0, pos.line | 0), this.starts.length - 1);
    var k = this.starts[line];
    var end = line + 1 < this.starts.length ? this.starts[line + 1] - 1 : this.chars.length;
    var units = Math.max(0, pos.ch | 0);
    while (k < end && units > 0) { units -= this.chars[k].length; k++; }
    return k;
  };

  function posToIndex(chars, pos) { return new LineMap(chars).index(pos); }
  function indexToPos(chars, index) { return new LineMap(chars).pos(index); }

  function opsCheck(length, ops) {
    if (!Array.isArray(ops)) throw new Error("operation is not a list");
    var covered = 0;
    ops.forEach(function (op) {
      if (typeof op === "string") return;
      if (typeof op !== "number" || op === 0 || Math.floor(op) !== op) throw new Error("bad operation part " + JSON.stringify(op));
      covered += Math.abs(op);
    });
    if (ops.length && covered !== length) throw new Error("operation covers " + covered + " code points, document has " + length);
  }

  // One of Troop's operations on the document `chars` (before it) as editor changes
  // {from, to, text} in CodeMirror positions of that same document, last first: applied in
  // that order, each one's positions are still right when its turn comes. A delete next to an
  // insert becomes one change.
  function opsToChanges(chars, ops) {
    opsCheck(chars.length, ops);
    var map = new LineMap(chars), spans = [], at = 0;
    for (var i = 0; i < ops.length; i++) {
      var op = ops[i], last = spans[spans.length - 1];
      if (typeof op === "string") {
        if (op === "") continue;
        if (last && last.to === at) last.text += op;
        else spans.push({ from: at, to: at, text: op });
      } else if (op > 0) {
        at += op;
      } else {
        if (last && last.to === at) last.to = at - op;
        else spans.push({ from: at, to: at - op, text: "" });
        at -= op;
      }
    }
    return spans.reverse().map(function (s) {
      return { from: map.pos(s.from), to: map.pos(s.to), text: s.text };
    });
  }

  // Where code point index `index` is after operation `ops`, as Troop moves the cursors of the
  // peers who did not make it: one exactly where text is inserted stays put (before it), one
  // inside deleted text goes to where the delete was.
  function mapIndex(ops, index) {
    var pos = 0, shift = 0;
    for (var i = 0; i < ops.length; i++) {
      var op = ops[i];
      if (typeof op === "string") {
        if (pos < index) shift += cpLength(op);
      } else if (op > 0) {
        pos += op;
      } else {
        var end = pos - op;
        if (end <= index) shift += op;
        else if (pos < index) shift -= index - pos;
        pos = end;
      }
      if (pos >= index && typeof op !== "string") break;
    }
    return Math.max(0, index + shift);
  }

  // The one change that turns the code points `oldChars` into the text `newText`: the common
  // beginning and end are kept. {from, to} in code points of the old text; null if equal.
  function replaceDiff(oldChars, newText) {
    var b = Array.from(String(newText)), a = oldChars;
    var p = 0, max = Math.min(a.length, b.length);
    while (p < max && a[p] === b[p]) p++;
    if (p === a.length && p === b.length) return null;
    var s = 0;
    while (s < max - p && a[a.length - 1 - s] === b[b.length - 1 - s]) s++;
    return { from: p, to: a.length - s, text: b.slice(p, b.length - s).join("") };
  }

  // Troop's blank line: nothing but whitespace (Python's str.strip()).
  function isBlank(line) { return line == null || String(line).trim() === ""; }

  // The lines Ctrl+Enter evaluates, as Troop 0.10.3 computes them (interface.evaluate and
  // interpreter.get_block_of_code): `lines` are the document's lines, `row` the cursor's line
  // (1-based). With a selection {first, last} (1-based lines of its start and its end):
  // [first, last + 1]. Otherwise, from the cursor's line up to the first blank line (that blank
  // line is the start) or line 1, and down to the first blank line or the line after the last
  // (the end, excluded). {start, end}, or null when there is nothing but whitespace in it
  // (Troop sends nothing then, e.g. on a blank line).
  function blockOfCode(lines, row, selection) {
    var start, end;
    if (selection) {
      start = selection.first;
      end = selection.last + 1;
    } else {
      var n = lines.length;
      for (start = row; start > 1; start--) if (isBlank(lines[start - 1])) break;
      for (end = row; end <= n; end++) if (isBlank(lines[end - 1])) break;
    }
    for (var l = start; l < end; l++) if (!isBlank(lines[l - 1])) return { start: start, end: end };
    return null;
  }

  // The line Alt+Enter evaluates (interface.single_line_evaluate): the cursor's line, start ==
  // end, unless it is blank.
  function lineOfCode(lines, row) {
    return isBlank(lines[row - 1]) ? null : { start: row, end: row };
  }

  // The code an evaluation of lines start..end (1-based, end excluded; start == end: that one
  // line) runs, as Troop's peer.highlight gathers it.
  function evaluatedCode(lines, start, end) {
    if (end <= start) end = start + 1;
    var out = [];
    for (var l = start; l < end; l++) out.push(lines[l - 1] == null ? "" : lines[l - 1]);
    return out.join("\n");
  }

  // How Troop's console prints code a peer evaluated (interpreter.print_stdin): its non-blank
  // lines, the first after "name : ", the others after as many dots as the name has characters.
  function consoleLines(name, code) {
    name = String(name);
    var lines = String(code).split("\n").filter(function (l) { return l.trim().length > 0; });
    var dots = new Array(cpLength(name) + 1).join(".");
    return lines.map(function (l, i) { return { lead: i === 0 ? name : dots, text: l }; });
  }

  // Who wrote what, from a reset's peer_tag_loc, as TroopDoc runs [[id, length], ...]. Troop
  // sends a list of [client id, length] runs covering the document; a map of client id to
  // [[start, end], ...] ranges is read as well.
  function runsFromTagLoc(tagLoc, length) {
    if (Array.isArray(tagLoc)) {
      return tagLoc.filter(Array.isArray).map(function (r) {
        var id = Number(r[0]);
        return [isFinite(id) ? id : null, Math.max(0, Number(r[1]) || 0)];
      });
    }
    if (!tagLoc || typeof tagLoc !== "object") return [];
    var authors = new Array(length).fill(null);
    Object.keys(tagLoc).forEach(function (key) {
      var id = Number(key), ranges = tagLoc[key];
      if (!isFinite(id) || !Array.isArray(ranges)) return;
      ranges.forEach(function (r) {
        if (!Array.isArray(r)) return;
        for (var i = Math.max(0, r[0] | 0); i < Math.min(length, r[1] | 0); i++) authors[i] = id;
      });
    });
    var runs = [];
    authors.forEach(function (a) {
      var last = runs[runs.length - 1];
      if (last && last[0] === a) last[1]++;
      else runs.push([a, 1]);
    });
    return runs;
  }

  // Everyone's cursor from a reset's peer_loc ({"id": index}) as TroopDoc marks [{id, index}].
  function marksFromPeerLoc(peerLoc) {
    if (!peerLoc || typeof peerLoc !== "object") return [];
    return Object.keys(peerLoc).map(function (k) {
      return { id: Number(k), index: Number(peerLoc[k]) || 0 };
    }).filter(function (m) { return isFinite(m.id); });
  }

  // The runs of text with a known author as CodeMirror ranges [{author, from, to}].
  function authorRanges(chars, authors) {
    var out = [], line = 0, ch = 0, cur = null;
    for (var i = 0; i <= chars.length; i++) {
      var a = i < chars.length ? authors[i] : undefined;
      if (cur && (i === chars.length || a !== cur.author)) {
        cur.to = { line: line, ch: ch };
        out.push(cur);
        cur = null;
      }
      if (i === chars.length) break;
      if (!cur && a != null) cur = { author: a, from: { line: line, ch: ch }, to: null };
      if (chars[i] === "\n") { line++; ch = 0; } else ch += chars[i].length;
    }
    return out;
  }

  // What the page does with a message from the hub, given its own client id (null before the
  // welcome): one word.
  function action(msg, myId) {
    if (!msg || typeof msg !== "object") return "ignore";
    var own = myId != null && msg.src === myId;
    switch (msg.type) {
      case "welcome": return "welcome";
      case "connect": return own ? "self-joined" : "peer-joined";
      case "remove": return own ? "ignore" : "peer-left";
      case "request_ack": return msg.flag === 1 ? "barrier-up" : msg.flag === 0 ? "barrier-down" : "ignore";
      case "reset": return "reset";
      case "operation": return own ? "ack" : "remote-operation";
      case "mark": return own ? "ignore" : "peer-mark";
      case "select": return own ? "ignore" : "peer-select";
      case "evaluate": return "evaluate";
      case "evaluate_string": return "evaluate-string";
      case "console": return "console";
      case "constraint": return "constraint";
      case "kill": return "kill";
      case "error": return "error";
      default: return "ignore";   // something newer than this page
    }
  }

  // A sentence as the page shows it: trimmed, with a full stop.
  function sentence(text) {
    text = String(text).trim();
    return /[.!?]$/.test(text) ? text : text + ".";
  }

  // The one sentence the page shows when the hub closes the seat, with what to do.
  // info: {session, name, joined (the seat was in), reason (the hub's own sentence for it: its
  // `error` message or the close frame's reason, if any)}. The hub's sentence is used where it
  // says more than the code (which session, why a name is refused, why the session is full).
  function closeSentence(code, info) {
    info = info || {};
    var s = info.session || "this session", n = info.name || "that name";
    var reason = info.reason ? sentence(info.reason) : null;
    switch (code) {
      case 1000: return reason || "The session " + s + " has ended.";
      case 1009: return "An edit was too large for the hub (over 1 MiB): join again.";
      case 4400:
        // Before the welcome it is the name (empty, too long, control characters).
        if (reason && !info.joined) return reason;
        return "The hub refused a message from this page: reload the page and join again.";
      case 4403: return "The password is wrong: check it and join again.";
      case 4404: return reason || "There is no session named " + s + ", or it has no browser seats: check the session's name.";
      case 4408: return "The hub got no join message in time: join again.";
      case 4409: return "The name " + n + " is taken in this session: choose another.";
      case 4413: return "This page fell behind the session and was disconnected: join again.";
      case 4429: return "Too many wrong passwords from here: wait a few minutes, then try again.";
      case 4503: return reason || "The session " + s + " is full: try again when someone leaves.";
      default:
        if (reason) return reason;
        return info.joined
          ? "The connection to the hub was lost: join again to go on."
          : "Could not reach the hub: check your connection and join again.";
    }
  }

  // The session's name from the page's path, <prefix>/s/{name}/play; "" if it is not one.
  function sessionFromPath(pathname) {
    var parts = String(pathname || "").split("/");
    if (parts.length < 3 || parts[parts.length - 1] !== "play" || parts[parts.length - 3] !== "s") return "";
    var name;
    try { name = decodeURIComponent(parts[parts.length - 2]); } catch (e) { return ""; }
    return NAME_RE.test(name) ? name : "";
  }

  // The seat's WebSocket URL, relative to the page (<prefix>/s/{name}/play), so that a path
  // prefix in front of the hub is kept: <prefix>/api/v1/sessions/{name}/seat.
  function seatUrl(pageHref, name) {
    var url = new URL("../../api/v1/sessions/" + encodeURIComponent(name) + "/seat", pageHref);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.hash = "";
    url.search = "";
    return url.href;
  }

  root.TroopSeat = {
    NAME_RE: NAME_RE,
    cpLength: cpLength,
    unitsToCp: unitsToCp,
    cpToUnits: cpToUnits,
    LineMap: LineMap,
    posToIndex: posToIndex,
    indexToPos: indexToPos,
    opsToChanges: opsToChanges,
    mapIndex: mapIndex,
    replaceDiff: replaceDiff,
    isBlank: isBlank,
    blockOfCode: blockOfCode,
    lineOfCode: lineOfCode,
    evaluatedCode: evaluatedCode,
    consoleLines: consoleLines,
    runsFromTagLoc: runsFromTagLoc,
    marksFromPeerLoc: marksFromPeerLoc,
    authorRanges: authorRanges,
    action: action,
    sentence: sentence,
    closeSentence: closeSentence,
    sessionFromPath: sessionFromPath,
    seatUrl: seatUrl
  };

})(typeof window !== "undefined" ? window : globalThis);
