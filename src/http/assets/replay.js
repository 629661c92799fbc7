// replay.js: an archived Troop session played back (replay.html, served at /a/{id}). It asks
// for the session's password once (unless archive.js left a token for this id in
// sessionStorage) and trades it for a short-lived token (POST .../access; the password is
// kept nowhere, and may have any characters); with the token it reads
// the summary, streams the timeline (JSON lines) into compact typed arrays while building
// keyframes (the whole state every KEYFRAME_EVERY events) so that seeking anywhere costs one
// keyframe restore plus at most that many events, then plays it with the live view's look:
// TroopDoc (doc.js) for the document, the line/cursor/flash drawing it shares with view.js
// (TroopRender, render.js).
// Archived data is hostile: it only reaches the page through textContent and attributes.
(function () {
  "use strict";

  var R = window.TroopRender;
  var GAP_CAP_MS = 5000;          // a silence longer than this plays as this long (session time)
  var KEYFRAME_EVERY = 1000;      // events between keyframes, at first
  var KEYFRAME_BUDGET = 16e6;     // code points + author runs kept in keyframes, at most
  var SLICE_MS = 12;              // work between yields while loading
  var TOKEN_KEY = "troop-archive-token:";   // + id, in sessionStorage (set by archive.js or here)
  var SPEEDS = [1, 4, 16];

  // Event kinds in the store.
  var OP = 0, GOP = 1, FIX = 2, EVAL = 3, JOIN = 4, LEAVE = 5, MARK = 6, SNAP = 7, MOD = 8;

  function $(id) { return document.getElementById(id); }
  var el = {
    body: document.body, session: $("session"), when: $("when"), status: $("status-word"),
    performers: $("performers"), fullscreen: $("fullscreen"), editor: $("editor"), doc: $("doc"),
    message: $("message"), messageTitle: $("message-title"), messageDetail: $("message-detail"),
    progress: $("progress"), form: $("password-form"), password: $("password"),
    passwordError: $("password-error"), play: $("play"), playWord: $("play-word"),
    scrubber: $("scrubber"), ticks: $("ticks"), now: $("now"), total: $("total"), clock: $("clock"),
    speed: $("speed"), gapNote: $("gap-note"), missedNote: $("missed-note"), moderation: $("moderation")
  };

  var id = "";
  try { id = decodeURIComponent(location.pathname.split("/").pop() || ""); } catch (e) { id = ""; }
  var token = null;
  var summary = null;
  // A file downloaded from .../replay.html carries the performance in itself (no network).
  var embedded = (function () {
    var node = document.getElementById("troop-embedded");
    if (!node) return null;
    try { return JSON.parse(node.textContent); } catch (e) { return null; }
  })();
  if (embedded && embedded.summary && typeof embedded.summary.id === "string") id = embedded.summary.id;
  var share = R.shareToken();     // a share link's token, from the fragment
  var onStage = false;            // the stage view (?stage): plays by itself, code only
  var centreOn = null;            // the last evaluation's lines, to centre on the next frame
  var finalCode = null;           // the archive's final code, when it could be read

  // ---- the event store: one entry per timeline line, in parallel typed arrays -------------
  // T: time (Unix ms, made non-decreasing), S: seq (NaN: none), A: author / client id (NaN:
  // none), K: kind, and by kind: OP (one edit: retain P, delete D, insert X, on a document of
  // L code points), GOP/FIX (any operation, X), EVAL (lines P..D when L is 1, text X), JOIN
  // (colour P, name X), MARK (index P), SNAP (the snapshot object X).
  var store = {
    n: 0, cap: 0, T: null, S: null, A: null, K: null, P: null, D: null, L: null, X: [],
    grow: function (cap) {
      function g(Ctor, old) { var a = new Ctor(cap); if (old) a.set(old); return a; }
      this.T = g(Float64Array, this.T); this.S = g(Float64Array, this.S); this.A = g(Float64Array, this.A);
      this.K = g(Uint8Array, this.K); this.P = g(Int32Array, this.P); this.D = g(Int32Array, this.D);
      this.L = g(Int32Array, this.L);
      this.cap = cap;
    },
    push: function (k, t, seq, a, p, d, l, x) {
      if (this.n === this.cap) this.grow(Math.max(4096, this.cap * 2));
      var i = this.n++;
      this.K[i] = k; this.T[i] = t; this.S[i] = seq; this.A[i] = a;
      this.P[i] = p; this.D[i] = d; this.L[i] = l; this.X.push(x === undefined ? null : x);
      return i;
    }
  };
  var colours = new Map();        // client id -> colour, from joins and snapshots (Troop: id % 10)

  function num(v) { return typeof v === "number" && isFinite(v) ? v : NaN; }
  function int32(v) { v = Math.floor(num(v)); return v === v ? Math.max(-2147483648, Math.min(2147483647, v)) : 0; }
  function who(a) { return a === a ? a : null; }

  // One edit [retain?, -delete?, "insert"?, retain?] as {p, d, x, l}; null for any other shape.
  function compact(ops) {
    if (!Array.isArray(ops)) return null;
    var i = 0, p = 0, d = 0, x = null, r = 0, o;
    o = ops[i]; if (typeof o === "number" && o > 0 && o === Math.floor(o)) { p = o; i++; }
    o = ops[i]; if (typeof o === "number" && o < 0 && o === Math.floor(o)) { d = -o; i++; }
    o = ops[i]; if (typeof o === "string" && o !== "") { x = o; i++; }
    o = ops[i]; if (typeof o === "number" && o > 0 && o === Math.floor(o)) { r = o; i++; }
    if (i !== ops.length || (d === 0 && x === null) || p + d + r > 2147483647) return null;
    return { p: p, d: d, x: x, l: p + d + r };
  }

  // Adds one parsed timeline line to the store; its index, or -1 if it is nothing to replay.
  function ingest(m) {
    if (!m || typeof m !== "object") return -1;
    var t = num(m.time_ms), seq = num(m.seq), last = store.n - 1;
    // A snapshot is stamped when the hub took it, which can be after the events that follow
    // it happened (a hub that subscribed late is sent them since): its state held before the
    // first of them, so it moves back to that event's time instead of holding them up.
    if (last >= 0 && store.K[last] === SNAP && t < store.T[last] && seq > num(store.X[last].revision)) {
      store.T[last] = last ? Math.max(store.T[last - 1], t) : t;
    }
    var prev = store.n ? store.T[store.n - 1] : (summary ? summary.started_ms : 0);
    t = t === t ? (store.n ? Math.max(prev, t) : t) : prev;
    switch (m.type) {
      case "operation": {
        var c = compact(m.ops);
        if (c) return store.push(OP, t, seq, num(m.author), c.p, c.d, c.l, c.x);
        return store.push(GOP, t, seq, num(m.author), 0, 0, 0, m.ops);
      }
      case "evaluate": {
        var block = m.kind !== "string" && typeof m.start === "number";
        return store.push(EVAL, t, seq, num(m.author), int32(m.start), int32(m.end), block ? 1 : 0,
          typeof m.text === "string" ? m.text : "");
      }
      case "join": {
        var cid = num(m.id), colour = num(m.colour);
        if (cid === cid && colour === colour && !colours.has(cid)) colours.set(cid, colour);
        return store.push(JOIN, t, seq, cid, colour === colour ? colour : -1, 0, 0, String(m.name == null ? "" : m.name));
      }
      case "leave":
        return store.push(LEAVE, t, seq, num(m.id), 0, 0, 0, null);
      case "mark":
        return store.push(MARK, t, seq, num(m.id), int32(m.index), 0, 0, null);
      case "removed":
        return store.push(MOD, t, seq, num(m.id), 0, 0, 0,
          String(m.name == null ? "A performer" : m.name) + " was removed by the session's owner");
      case "lock":
        return store.push(MOD, t, seq, NaN, 0, 0, 0, m.locked
          ? "The owner locked the session to new performers" : "The owner opened the session to new performers again");
      case "snapshot":
        (Array.isArray(m.performers) ? m.performers : []).forEach(function (p) {
          if (p && typeof p.id === "number" && typeof p.colour === "number" && !colours.has(p.id)) colours.set(p.id, p.colour);
        });
        return store.push(SNAP, t, NaN, NaN, 0, 0, 0, m);
      default:
        return -1;   // something newer than this page: ignore it
    }
  }

  // ---- replicas: the state after the first i events ----------------------------------------
  function Replica() {
    this.i = 0;
    this.doc = new window.TroopDoc();
    this.performers = new Map();  // connected now: id -> {id, name}
    this.evaluations = 0;
    this.revision = -Infinity;
    this.broken = false;          // an edit did not fit: edits are skipped until a snapshot
    this.missed = 0;              // edits that did not fit
    this.lastAuthor = null;
  }

  function marksOf(doc) {
    var out = [];
    doc.marks.forEach(function (index, who) { out.push({ id: who, index: index }); });
    return out;
  }

  // The whole state, compactly: the text, author runs in typed arrays, cursors, performers.
  function keyframe(rep) {
    var runs = rep.doc.runs(), who = new Float64Array(runs.length), len = new Int32Array(runs.length);
    for (var r = 0; r < runs.length; r++) {
      who[r] = runs[r][0] === null ? NaN : runs[r][0];
      len[r] = runs[r][1];
    }
    return {
      i: rep.i, text: rep.doc.text(), runWho: who, runLen: len, marks: marksOf(rep.doc),
      performers: Array.from(rep.performers.values()), evaluations: rep.evaluations,
      revision: rep.revision, broken: rep.broken, missed: rep.missed, lastAuthor: rep.lastAuthor
    };
  }

  function restore(kf) {
    var rep = new Replica();
    rep.i = kf.i;
    var runs = new Array(kf.runLen.length);
    for (var r = 0; r < runs.length; r++) runs[r] = [who(kf.runWho[r]), kf.runLen[r]];
    rep.doc = window.TroopDoc.fromSnapshot(kf.text, runs, kf.marks);
    kf.performers.forEach(function (p) { rep.performers.set(p.id, p); });
    rep.evaluations = kf.evaluations; rep.revision = kf.revision; rep.broken = kf.broken;
    rep.missed = kf.missed; rep.lastAuthor = kf.lastAuthor;
    return rep;
  }

  // Applies event i to rep (which must be at i). `live`: it happens now on screen (flashes).
  function apply(rep, i, live) {
    rep.i = i + 1;
    var k = store.K[i], seq = store.S[i], a = who(store.A[i]);
    if (seq === seq) {
      if (seq <= rep.revision) return;   // already in the last snapshot
      rep.revision = seq;
    }
    switch (k) {
      case OP: {
        if (rep.broken) { rep.missed++; return; }
        var p = store.P[i], d = store.D[i], x = store.X[i], l = store.L[i];
        if (rep.doc.chars.length !== l) { broke(rep); return; }
        var ops = [];
        if (p) ops.push(p);
        if (d) ops.push(-d);
        if (x !== null) ops.push(x);
        if (l - p - d) ops.push(l - p - d);
        rep.doc.applyOperation(a, ops);
        rep.lastAuthor = a;
        return;
      }
      case GOP:
      case FIX:
        if (rep.broken && k === GOP) { rep.missed++; return; }
        try { rep.doc.applyOperation(a, store.X[i]); } catch (e) { broke(rep); return; }
        if (a !== null) rep.lastAuthor = a;
        return;
      case EVAL:
        rep.evaluations++;
        if (live) flash(rep, i);
        return;
      case JOIN:
        if (a !== null) rep.performers.set(a, { id: a, name: store.X[i] });
        return;
      case LEAVE:
        rep.performers.delete(a);
        rep.doc.removePeer(a);
        return;
      case MARK:
        if (a !== null) rep.doc.setMark(a, store.P[i]);
        return;
      case MOD:
        if (live) moderation(store.X[i]);
        return;
      case SNAP: {
        var m = store.X[i];
        rep.doc = window.TroopDoc.fromSnapshot(m.document, m.authors, m.marks);
        rep.performers = new Map();
        (Array.isArray(m.performers) ? m.performers : []).forEach(function (pf) {
          if (pf && typeof pf.id === "number") rep.performers.set(pf.id, { id: pf.id, name: String(pf.name == null ? "" : pf.name) });
        });
        rep.revision = typeof m.revision === "number" ? m.revision : -Infinity;
        rep.broken = false;
        if (live) painter.clearFlashes();
        return;
      }
    }
  }

  function broke(rep) {
    rep.broken = true;
    rep.missed++;
  }

  // ---- loading ----------------------------------------------------------------------------
  var builder = null, keyframes = [];
  var keyframeEvery = KEYFRAME_EVERY, keyframeSize = 0;

  function kfSize(kf) { return kf.text.length + kf.runLen.length; }

  // Keeps a keyframe; over the budget (a long session with a big document), every other one
  // goes and they are kept twice as far apart from then on.
  function addKeyframe(kf) {
    keyframes.push(kf);
    keyframeSize += kfSize(kf);
    if (keyframeSize <= KEYFRAME_BUDGET || keyframes.length < 3) return;
    keyframes = keyframes.filter(function (k, j) { return j === 0 || j % 2 === 0 || j === keyframes.length - 1; });
    keyframeSize = keyframes.reduce(function (sum, k) { return sum + kfSize(k); }, 0);
    keyframeEvery *= 2;
  }
  var lines = 0;

  var hook = window.troopReplay = {
    state: "loading", id: id, lines: 0, speed: 1, keyframes: 0, error: null, code: null, moderation: [],
    seek: function (ms) { return seek(ms); },
    play: function () { return play(); },
    pause: function () { return pause(); },
    setSpeed: function (n) { return setSpeed(n); }
  };
  Object.defineProperty(hook, "document", { enumerable: true, get: function () { return player ? player.doc.text() : ""; } });
  Object.defineProperty(hook, "time_ms", { enumerable: true, get: function () { return ready() ? pos - base : 0; } });
  Object.defineProperty(hook, "end_ms", { enumerable: true, get: function () { return ready() ? endAbs - base : 0; } });
  Object.defineProperty(hook, "start_ms", { enumerable: true, get: function () { return ready() ? base : null; } });
  Object.defineProperty(hook, "evaluations", { enumerable: true, get: function () { return player ? player.evaluations : 0; } });

  function ready() { return player !== null && /^(ready|playing|paused|ended)$/.test(hook.state); }

  var STATE_WORDS = { password: "password needed", loading: "loading", ready: "ready", playing: "playing",
    paused: "paused", ended: "at the end", error: "error" };
  function setState(state) {
    hook.state = state;
    el.body.dataset.state = state;
    el.status.textContent = STATE_WORDS[state] || state;
    var usable = /^(ready|playing|paused|ended)$/.test(state);
    el.play.disabled = el.scrubber.disabled = el.speed.disabled = !usable;
    var playing = state === "playing";
    el.playWord.textContent = playing ? "Pause" : (state === "ended" ? "Again" : "Play");
    el.play.setAttribute("aria-label", playing ? "Pause" : "Play");
    el.play.classList.toggle("playing", playing);
  }

  function showMessage(title, detail) {
    el.messageTitle.textContent = title;
    el.messageDetail.textContent = detail || "";
    el.message.hidden = false;
  }
  function hideMessage() { el.message.hidden = true; el.progress.hidden = true; }

  function fail(title, detail) {
    el.form.hidden = true;
    hook.error = title + (detail ? " " + detail : "");
    showMessage(title, detail);
    el.progress.hidden = true;
    setState("error");
  }

  function storageGet() { try { return sessionStorage.getItem(TOKEN_KEY + id); } catch (e) { return null; } }
  function storageSet(v) {
    try { if (v === null) sessionStorage.removeItem(TOKEN_KEY + id); else sessionStorage.setItem(TOKEN_KEY + id, v); } catch (e) { /* no storage */ }
  }

  function askPassword(error) {
    hideMessage();
    setState("password");
    el.passwordError.textContent = error || "";
    el.form.hidden = false;
    el.password.value = "";
    el.password.focus();
  }

  el.form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var v = el.password.value;
    if (!v) return;
    el.password.value = "";
    el.form.hidden = true;
    setState("loading");
    showMessage("Checking the password…", "");
    access({ password: v });
  });

  // Trades the password (or a share link's token) for a token that reads this performance.
  function access(proof) {
    fetch("../api/v1/archive/" + encodeURIComponent(id) + "/access", {
      method: "POST", cache: "no-store", credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(proof)
    }).then(function (r) {
      if (!r.ok) return refused(r);
      return r.json();
    }).then(function (granted) {
      if (!granted || typeof granted.token !== "string") throw new Error("The hub's answer holds no token.");
      token = granted.token;
      storageSet(token);   // this tab may reload without asking again, while the token holds
      load();
    }).catch(function (e) {
      if (e && e.message === "refused") return;
      fail("The hub could not be reached.", e instanceof TypeError ? "Try again in a moment." : String(e && e.message || e));
    });
  }

  function api(path) {
    if (embedded) {
      var body = { "": JSON.stringify(embedded.summary), "/code": embedded.code, "/timeline": embedded.timeline }[path];
      return Promise.resolve(typeof body === "string" ? new Response(body) : new Response("", { status: 404 }));
    }
    return fetch("../api/v1/archive/" + encodeURIComponent(id) + path, {
      cache: "no-store", credentials: "same-origin", headers: { "X-Archive-Token": token }
    });
  }

  function errorOf(r) {
    return r.json().then(function (b) { return b && typeof b.error === "string" ? b.error : ""; }, function () { return ""; });
  }

  // Non-OK answers: a wrong password asks again, the rest stop here. Returns a rejection.
  function refused(r) {
    return errorOf(r).then(function (text) {
      if (r.status === 401 || r.status === 403) {
        token = null;
        storageSet(null);
        askPassword(text || "Wrong password.");
      } else if (r.status === 429 || r.status === 503) {
        token = null;
        var after = r.headers.get("Retry-After");
        askPassword(text || ("Too many wrong passwords; try again" + (after ? " in " + after + " s." : " later.")));
      } else if (r.status === 404) {
        fail(text || "No such archived session.", "");
      } else {
        fail("The archive could not be read.", text || ("HTTP " + r.status));
      }
      throw new Error("refused");
    });
  }

  function load() {
    setState("loading");
    showMessage("Opening the archive…", "");
    api("").then(function (r) {
      if (!r.ok) return refused(r);
      return r.json();
    }).then(function (s) {
      if (!s || typeof s !== "object") throw new Error("The hub's answer is not a session summary.");
      summary = s;
      showSummary();
      var code = api("/code").then(function (r) { return r.ok ? r.text() : null; }, function () { return null; });
      return Promise.all([loadTimeline(), code]);
    }).then(function (both) {
      finalCode = both[1];
      hook.code = finalCode;
      finish();
    }).catch(function (e) {
      if (e && e.message === "refused") return;
      console.warn("troop replay:", e);
      fail("The performance could not be loaded.", e && e.message ? e.message : String(e));
    });
  }

  function showSummary() {
    var name = String(summary.name || "");
    el.session.textContent = name;
    $("username").value = name;
    document.title = (name || "Troop") + " · Troop replay";
    var started = num(summary.started_ms);
    if (started === started) {
      el.when.textContent = new Date(started).toLocaleString(undefined, {
        weekday: "short", year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit"
      });
    }
  }

  var yieldQueue = [], channel = new MessageChannel();
  channel.port1.onmessage = function () { var f = yieldQueue.shift(); if (f) f(); };
  function yieldToPage() { return new Promise(function (res) { yieldQueue.push(res); channel.port2.postMessage(0); }); }

  function loadTimeline() {
    store.n = 0; store.X = []; colours.clear(); lines = 0;
    builder = new Replica();
    keyframes = [keyframe(builder)];
    keyframeEvery = KEYFRAME_EVERY;
    keyframeSize = 0;
    var expected = Math.max(1, num(summary.bytes) || 0);
    var seen = 0, bad = 0;
    el.progress.hidden = false;
    el.progress.value = 0;
    showMessage("Loading the performance…", "");

    function progress() {
      hook.lines = lines;
      hook.keyframes = keyframes.length;
      el.progress.value = Math.min(0.99, seen / expected);
      el.messageDetail.textContent = lines.toLocaleString() + " events";
    }

    function line(text) {
      if (!text) return;
      var m;
      try { m = JSON.parse(text); } catch (e) { bad++; return; }
      lines++;
      var i = ingest(m);
      if (i < 0) return;
      apply(builder, i, false);
      if (builder.i - keyframes[keyframes.length - 1].i >= keyframeEvery) addKeyframe(keyframe(builder));
    }

    // Feeds text's complete lines; returns the unfinished rest. Yields now and then.
    function feed(text) {
      var start = 0, nl, t0 = performance.now(), count = 0;
      function more() {
        while ((nl = text.indexOf("\n", start)) >= 0) {
          line(text.slice(start, nl));
          start = nl + 1;
          if (++count % 32 === 0 && performance.now() - t0 > SLICE_MS) {
            progress();
            return yieldToPage().then(function () { t0 = performance.now(); return more(); });
          }
        }
        return Promise.resolve(text.slice(start));
      }
      return more();
    }

    return api("/timeline").then(function (r) {
      if (!r.ok) return refused(r);
      if (!r.body || !r.body.getReader) {
        return r.text().then(function (all) { seen = all.length; return feed(all + "\n"); });
      }
      var reader = r.body.getReader(), decoder = new TextDecoder(), rest = "";
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) return feed(rest + decoder.decode() + "\n");
          seen += chunk.value.length;
          return feed(rest + decoder.decode(chunk.value, { stream: true })).then(function (r2) {
            rest = r2;
            progress();
            return pump();
          });
        });
      }
      return pump();
    }).then(function () {
      progress();
      if (bad) console.warn("troop replay: " + bad + " timeline lines did not parse");
    });
  }

  // ---- the player -------------------------------------------------------------------------
  var player = null;
  var base = 0, endAbs = 0;       // the performance's span (Unix ms)
  var pos = 0;                    // the moment shown (Unix ms)
  var silenceFrom = 0;            // where a silence being played began (a seek starts one)
  var speed = 1;
  var raf = 0, lastNow = 0;

  function finish() {
    var n = store.n;
    var started = num(summary.started_ms), ended = num(summary.ended_ms);
    base = n ? store.T[0] : (started === started ? started : 0);
    if (started === started) base = Math.min(base, started);
    endAbs = n ? store.T[n - 1] : base;
    if (ended === ended) endAbs = Math.max(endAbs, ended);

    // A whole recording (not truncated, nothing missed) is the last word: its edits made the
    // code. Only where the recording missed edits (a size cap, a full queue) is the archive's
    // final code the last word, and the end moves to it in one step by the unknown author.
    var notes = [];
    var text = builder.doc.text();
    var gaps = builder.missed || summary.truncated;
    if (!gaps && typeof finalCode === "string" && ended === ended && finalCode !== text) {
      console.warn("troop replay: the stored final code differs from the whole recording's end; the recording is shown");
    }
    if (gaps && typeof finalCode === "string" && ended === ended && finalCode !== text) {
      var a = builder.doc.chars, b = Array.from(finalCode), pre = 0, suf = 0;
      while (pre < a.length && pre < b.length && a[pre] === b[pre]) pre++;
      while (suf < a.length - pre && suf < b.length - pre && a[a.length - 1 - suf] === b[b.length - 1 - suf]) suf++;
      var ops = [];
      if (pre) ops.push(pre);
      if (a.length - pre - suf) ops.push(-(a.length - pre - suf));
      if (b.length - pre - suf) ops.push(b.slice(pre, b.length - suf).join(""));
      if (suf) ops.push(suf);
      var fi = store.push(FIX, endAbs, NaN, NaN, 0, 0, 0, ops);
      apply(builder, fi, false);
      console.warn("troop replay: the timeline does not end in the archived code; the last step jumps to it");
      notes.push("Parts of this performance were not recorded: the replay jumps at those places and at the end.");
    } else if (gaps) {
      notes.push("Parts of this performance were not recorded: the replay may jump.");
    }
    if (ended !== ended) notes.push("This session is still running: the replay ends where the recording was when you opened it.");
    el.missedNote.textContent = notes.join(" ");
    el.missedNote.hidden = !notes.length;

    var longGap = false;
    for (var i = 0, prev = base; i <= n && !longGap; i++) {
      var t = i < n ? store.T[i] : endAbs;
      if (t - prev > GAP_CAP_MS) longGap = true;
      prev = t;
    }
    el.gapNote.hidden = !longGap;

    el.scrubber.max = String(Math.max(0, Math.round(endAbs - base)));
    el.total.textContent = clockOf(endAbs - base);
    drawTicks();
    hook.lines = lines;
    hook.keyframes = keyframes.length;
    player = restore(keyframes[0]);
    el.body.classList.add("has-doc");
    hideMessage();
    setState("ready");
    goToTime(base, false);
    renderNow();
    if (onStage) play();   // on a big screen nobody is at the controls
  }

  // The last keyframe at or before event index idx.
  function keyframeFor(idx) {
    var lo = 0, hi = keyframes.length - 1;
    while (lo < hi) {
      var mid = (lo + hi + 1) >> 1;
      if (keyframes[mid].i <= idx) lo = mid; else hi = mid - 1;
    }
    return keyframes[lo];
  }

  // How many events happen at or before abs.
  function countUpTo(abs) {
    var lo = 0, hi = store.n;
    while (lo < hi) {
      var mid = (lo + hi) >> 1;
      if (store.T[mid] <= abs) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  function goToIndex(idx, live) {
    if (idx < player.i || idx - player.i > keyframeEvery) {
      var kf = keyframeFor(idx);
      if (idx < player.i || kf.i > player.i) {
        player = restore(kf);
        painter.clearFlashes();
      }
    }
    while (player.i < idx) apply(player, player.i, live);
  }

  function goToTime(abs, live) {
    abs = Math.min(Math.max(abs, base), endAbs);
    goToIndex(countUpTo(abs), live);
    pos = abs;
    if (!live) painter.keepInSight(player.lastAuthor);
    scheduleRender();
  }

  function seek(ms) {
    if (!ready()) return false;
    ms = Number(ms);
    if (!isFinite(ms)) return false;
    // Offsets from the start; a Unix time in ms (from a timeline line) is taken as such.
    var abs = ms >= 1e12 ? ms : base + ms;
    goToTime(abs, false);
    silenceFrom = pos;
    if (pos >= endAbs) { stopLoop(); setState("ended"); }
    else if (hook.state === "ended" || hook.state === "ready") setState("paused");
    renderNow();
    return true;
  }

  function play() {
    if (!ready()) return false;
    if (hook.state === "playing") return true;
    if (pos >= endAbs) goToTime(base, false);
    silenceFrom = pos;
    setState("playing");
    lastNow = performance.now();
    if (!raf) raf = requestAnimationFrame(step);
    scheduleRender();
    return true;
  }

  function pause() {
    if (!ready()) return false;
    if (hook.state === "playing") { stopLoop(); setState("paused"); }
    return true;
  }

  function stopLoop() {
    if (raf) cancelAnimationFrame(raf);
    raf = 0;
  }

  function setSpeed(n) {
    n = Number(n);
    if (!isFinite(n) || n <= 0) return false;
    speed = hook.speed = n;
    var opt = Array.prototype.some.call(el.speed.options, function (o) { return Number(o.value) === n; });
    if (opt) el.speed.value = String(n);
    return true;
  }

  function step(now) {
    raf = 0;
    if (hook.state !== "playing") return;
    var dt = Math.min(Math.max(now - lastNow, 0), 250);
    lastNow = now;
    var target = pos + dt * speed;
    var nextT = player.i < store.n ? store.T[player.i] : endAbs;
    var lastT = player.i > 0 ? store.T[player.i - 1] : base;
    var from = Math.max(lastT, silenceFrom);
    if (target - from > GAP_CAP_MS && nextT > target) target = nextT;   // cut the long silence short
    var before = player.i;
    while (player.i < store.n && store.T[player.i] <= target) {
      apply(player, player.i, true);
      if (store.K[player.i - 1] === OP || store.K[player.i - 1] === GOP) painter.keepInSight(player.lastAuthor);
    }
    if (player.i !== before) silenceFrom = store.T[player.i - 1];
    pos = Math.min(target, endAbs);
    if (pos >= endAbs && player.i >= store.n) {
      setState("ended");
      renderNow();
      return;
    }
    scheduleRender();
    raf = requestAnimationFrame(step);
  }

  // ---- controls ---------------------------------------------------------------------------
  var dragging = false;
  el.play.addEventListener("click", function () {
    if (hook.state === "playing") pause(); else play();
  });
  el.speed.addEventListener("change", function () { setSpeed(el.speed.value); });
  el.scrubber.addEventListener("input", function () { seek(Number(el.scrubber.value)); });
  el.scrubber.addEventListener("pointerdown", function () { dragging = true; });
  window.addEventListener("pointerup", function () { dragging = false; });
  el.scrubber.addEventListener("keydown", function (ev) {
    var d = { ArrowLeft: -5000, ArrowDown: -5000, ArrowRight: 5000, ArrowUp: 5000, PageDown: -60000, PageUp: 60000 }[ev.key];
    if (d) seek(pos - base + d);
    else if (ev.key === "Home") seek(0);
    else if (ev.key === "End") seek(endAbs - base);
    else return;
    ev.preventDefault();
  });
  document.addEventListener("keydown", function (ev) {
    if (!ready() || ev.altKey || ev.ctrlKey || ev.metaKey) return;
    var t = ev.target, tag = t && t.tagName;
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA" || tag === "BUTTON" || tag === "A") return;
    if (ev.key === " " || ev.key === "k") { if (hook.state === "playing") pause(); else play(); }
    else if (ev.key === "ArrowLeft") seek(pos - base - 5000);
    else if (ev.key === "ArrowRight") seek(pos - base + 5000);
    else return;
    ev.preventDefault();
  });

  function clockOf(ms) {
    var s = Math.max(0, Math.floor(ms / 1000)), h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60;
    s %= 60;
    return (h ? h + ":" + (m < 10 ? "0" : "") : "") + m + ":" + (s < 10 ? "0" : "") + s;
  }

  // The owner's moderation, said for a few seconds as the replay passes it.
  var modTimer = 0;
  function moderation(text) {
    hook.moderation.push(text);
    el.moderation.textContent = text;
    el.moderation.hidden = false;
    clearTimeout(modTimer);
    modTimer = setTimeout(function () { el.moderation.hidden = true; }, 4000);
  }

  function drawTicks() {
    var frag = document.createDocumentFragment(), span = Math.max(1, endAbs - base);
    for (var i = 0; i < store.n; i++) {
      if (store.K[i] === MOD) {
        var mt = document.createElement("div");
        mt.className = "tick mod";
        mt.style.left = ((store.T[i] - base) / span * 100).toFixed(3) + "%";
        mt.title = clockOf(store.T[i] - base) + "  " + store.X[i];
        frag.appendChild(mt);
        continue;
      }
      if (store.K[i] !== EVAL) continue;
      var d = document.createElement("div");
      d.className = "tick p" + colourOf(who(store.A[i]));
      d.style.left = ((store.T[i] - base) / span * 100).toFixed(3) + "%";
      var text = store.X[i].split("\n").filter(function (s) { return s.trim(); })[0] || "";
      d.title = clockOf(store.T[i] - base) + "  " + (text.length > 80 ? text.slice(0, 79) + "…" : text);
      frag.appendChild(d);
    }
    el.ticks.replaceChildren(frag);
  }

  // ---- drawing (render.js, shared with view.js) -------------------------------------------
  function colourOf(cid) { return R.colourOf(colours, cid); }

  function flash(rep, i) {
    var a = who(store.A[i]);
    var f = R.flashLines(rep.doc, a, store.L[i] === 1, store.P[i], store.D[i]);
    painter.flash(f.from, f.to, a);
    if (onStage) centreOn = f;
  }

  var frame = 0, drawn = { doc: null, version: -1, perf: "", perfList: "", sharesOf: -1, sharesAt: 0 };
  var painter = new R.Lines({ docEl: el.doc, editor: el.editor, colour: colourOf, schedule: scheduleRender, altRestart: true });

  function scheduleRender() {
    if (!frame) frame = requestAnimationFrame(render);
  }
  function renderNow() {
    if (frame) { cancelAnimationFrame(frame); frame = 0; }
    render();
  }

  function render() {
    frame = 0;
    if (!player) return;
    var perfKey = performersKey();
    // Each performer's share of the code at this moment, at most twice a second.
    var t = performance.now();
    if (drawn.perfList !== perfKey || (drawn.sharesOf !== player.doc.version && t - drawn.sharesAt > 500)) {
      drawn.perfList = perfKey;
      drawn.sharesOf = player.doc.version;
      drawn.sharesAt = t;
      R.drawPerformers(el.performers, player.performers, colourOf, R.shares(player.doc));
    }
    if (drawn.doc !== player.doc || drawn.version !== player.doc.version || drawn.perf !== perfKey) {
      drawn.doc = player.doc; drawn.version = player.doc.version; drawn.perf = perfKey;
      painter.drawDoc(player.doc, player.performers);
    }
    painter.drawFlashes();
    if (centreOn) {
      painter.centre(centreOn.from, centreOn.to);
      centreOn = null;
    } else {
      painter.follow();
    }
    if (!dragging) el.scrubber.value = String(Math.round(pos - base));
    el.scrubber.style.setProperty("--pct", ((pos - base) / Math.max(1, endAbs - base) * 100).toFixed(2) + "%");
    var now = clockOf(pos - base);
    if (el.now.textContent !== now) {
      el.now.textContent = now;
      el.scrubber.setAttribute("aria-valuetext", now + " of " + el.total.textContent);
    }
    el.clock.textContent = new Date(pos).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function performersKey() {
    var parts = [];
    player.performers.forEach(function (p) { parts.push(p.id + "\u0002" + p.name); });
    return parts.join("\u0003");
  }

  // ---- page setup -------------------------------------------------------------------------
  onStage = hook.stage = R.stageFromQuery();
  R.fontFromQuery();
  R.setUpFullscreen(el.fullscreen, document.documentElement);
  setSpeed(Number(el.speed.value) || SPEEDS[0]);
  if (embedded) {
    // A kept file: no hub to go back to, nothing to ask.
    $("back").hidden = true;
    load();
  } else if (!id || id.length > 200) {
    fail("That is not an archived session's address.", "");
  } else {
    token = storageGet();
    if (token) load();
    else if (share) { showMessage("Opening the shared performance…", ""); access({ share: share }); }
    else askPassword("");
  }
})();
