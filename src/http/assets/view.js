// view.js: the live audience page (view.html). It owns the connection (session look-up,
// optional password, the live WebSocket, reconnects with backoff), applies each message to a
// TroopDoc (doc.js) at once, and draws the document, cursors, selections, evaluation flashes
// and the top bar at most once per animation frame. Wire data is hostile: it only ever goes
// into the page through textContent and attributes, never innerHTML.
(function () {
  "use strict";

  var NAME_RE = /^[A-Za-z0-9._-]{1,64}$/;
  var FLASH_MS = 600;
  var MISSING_RETRY_MS = 5000;
  var BACKOFF_MIN_MS = 500, BACKOFF_MAX_MS = 5000;
  var SNAPSHOT_TIMEOUT_MS = 15000;

  function $(id) { return document.getElementById(id); }
  var el = {
    body: document.body, session: $("session"), status: $("status-word"), performers: $("performers"),
    fullscreen: $("fullscreen"), stage: $("stage"), editor: $("editor"), doc: $("doc"),
    banner: $("banner"), message: $("message"), messageTitle: $("message-title"),
    messageDetail: $("message-detail"), form: $("password-form"), password: $("password"),
    passwordError: $("password-error")
  };

  // ---- state ------------------------------------------------------------------------------
  var name = "";
  try { name = decodeURIComponent(location.pathname.split("/").pop() || ""); } catch (e) { name = ""; }
  var doc = new window.TroopDoc();
  var performers = new Map();   // id -> {id, name, colour, since_ms}, connected now
  var colours = new Map();      // id -> colour index, kept after a performer leaves
  var flashes = [];             // {from, to (1-based lines, to excluded), colour, until, id}
  var flashIds = 0, evaluations = 0;
  var password = null;          // kept here only, for reconnects
  var audience = null;
  var ws = null, stopped = false, backoff = BACKOFF_MIN_MS, timer = null, snapshotTimer = null;
  var followId = null, userScrolledAt = -1e9;

  var view = window.troopView = {
    state: "connecting", session: name, revision: 0, performers: [], evaluations: 0, doc: doc
  };
  Object.defineProperty(view, "document", { enumerable: true, get: function () { return doc.text(); } });

  function setState(state, words) {
    view.state = state;
    el.body.dataset.state = state;
    el.body.classList.toggle("reconnecting", words === "reconnecting");
    el.status.textContent = words || state;
  }

  function showMessage(title, detail) {
    el.messageTitle.textContent = title;
    el.messageDetail.textContent = detail || "";
    el.message.hidden = false;
  }
  function hideMessage() { el.message.hidden = true; }

  // ---- connection -------------------------------------------------------------------------
  function later(fn, ms) { clearTimeout(timer); timer = setTimeout(fn, ms); }

  function retrySoon(words) {
    if (stopped) return;
    setState("connecting", words || "reconnecting");
    later(lookUp, backoff);
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
  }

  function stop(state, words) {
    stopped = true;
    clearTimeout(timer);
    clearTimeout(snapshotTimer);
    setState(state, words);
    closeSocket(1000);
  }

  function closeSocket(code) {
    var old = ws;
    ws = null;
    if (old) { try { old.close(code || 1000); } catch (e) { /* already closing */ } }
  }

  function lookUp() {
    if (stopped) return;
    fetch("../api/v1/sessions/" + encodeURIComponent(name), { cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (r.status === 404) return null;
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (info) {
        if (stopped) return;
        if (!info) {
          setState("error", "waiting");
          showMessage("No session named " + name + " is running.", "Checking again every 5 seconds.");
          later(lookUp, MISSING_RETRY_MS);
          return;
        }
        audience = info.audience;
        if (audience === "off") {
          showMessage("This hub does not show sessions to an audience.");
          stop("error", "not shown");
        } else if (audience === "password" && password === null) {
          askPassword("");
        } else {
          connect();
        }
      })
      .catch(function () { retrySoon(); });
  }

  function askPassword(error) {
    hideMessage();
    setState("password", "password needed");
    el.passwordError.textContent = error || "";
    el.form.hidden = false;
    el.password.value = "";
    el.password.focus();
  }

  el.form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    if (!el.password.value) return;
    password = el.password.value;
    el.password.value = "";
    el.form.hidden = true;
    stopped = false;
    backoff = BACKOFF_MIN_MS;
    setState("connecting", "connecting");
    connect();
  });

  function wrongPassword(message) {
    password = null;
    closeSocket(1000);
    askPassword(message || "Wrong password");
  }

  function connect() {
    if (stopped) return;
    closeSocket(1000);
    var url = new URL("../api/v1/sessions/" + encodeURIComponent(name) + "/live", location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    var sock;
    try { sock = new WebSocket(url.href); } catch (e) { retrySoon(); return; }
    ws = sock;
    sock.onopen = function () {
      if (ws !== sock) return;
      if (audience === "password") sock.send(JSON.stringify({ password: password || "" }));
      clearTimeout(snapshotTimer);
      snapshotTimer = setTimeout(function () { if (ws === sock) { closeSocket(4000); retrySoon(); } }, SNAPSHOT_TIMEOUT_MS);
    };
    sock.onmessage = function (ev) {
      if (ws !== sock) return;
      var msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      if (msg && typeof msg === "object") handle(msg);
    };
    sock.onclose = function (ev) {
      if (ws !== sock) return;   // closed on purpose, or replaced
      ws = null;
      clearTimeout(snapshotTimer);
      if (stopped) return;
      if (ev.code === 4404) return ended("The session is no longer running.");
      if (ev.code === 4403) return wrongPassword(ev.reason || "Wrong password");
      retrySoon();
    };
  }

  function ended(reason) {
    hideMessage();
    el.form.hidden = true;
    el.banner.textContent = reason;
    el.banner.hidden = false;
    performers.clear();
    performersChanged();
    stop("ended", "ended");
    scheduleRender();
  }

  // ---- messages ---------------------------------------------------------------------------
  function handle(msg) {
    if (msg.type === "snapshot") return snapshot(msg);
    if (msg.type === "ended") return ended(String(msg.reason || "The session has ended."));
    if (msg.type === "error") return wireError(msg);
    if (typeof msg.seq === "number") {
      if (msg.seq <= view.revision) return;   // already in the snapshot
      view.revision = msg.seq;
    }
    switch (msg.type) {
      case "join":
        performers.set(msg.id, { id: msg.id, name: String(msg.name), colour: msg.colour, since_ms: msg.time_ms });
        colours.set(msg.id, msg.colour);
        performersChanged();
        break;
      case "leave":
        performers.delete(msg.id);
        doc.removePeer(msg.id);
        performersChanged();
        break;
      case "operation":
        try {
          doc.applyOperation(msg.author, msg.ops);
        } catch (e) {
          console.warn("troop view: resynchronising:", e.message);
          closeSocket(4000);
          later(lookUp, 0);
          return;
        }
        followId = msg.author;
        break;
      case "mark":
        doc.setMark(msg.id, msg.index);
        break;
      case "select":
        doc.setSelection(msg.id, msg.start, msg.end);
        break;
      case "evaluate":
        evaluate(msg);
        break;
      default:
        return;   // something newer than this page: ignore it
    }
    scheduleRender();
  }

  function snapshot(msg) {
    clearTimeout(snapshotTimer);
    doc = view.doc = window.TroopDoc.fromSnapshot(msg.document, msg.authors, msg.marks);
    performers.clear();
    (msg.performers || []).forEach(function (p) {
      performers.set(p.id, { id: p.id, name: String(p.name), colour: p.colour, since_ms: p.since_ms });
      colours.set(p.id, p.colour);
    });
    view.revision = typeof msg.revision === "number" ? msg.revision : 0;
    el.body.classList.add("has-doc");
    flashes = [];
    backoff = BACKOFF_MIN_MS;
    hideMessage();
    el.form.hidden = true;
    el.banner.hidden = true;
    setState("live", "live");
    performersChanged();
    scheduleRender();
  }

  function wireError(msg) {
    var text = String(msg.message || "Error");
    if (msg.retry) {
      // A resynchronisation or a busy hub: brief, so no big panel in front of the code.
      closeSocket(1000);
      el.status.parentNode.title = text;
      retrySoon();
    } else if (audience === "password" && /password/i.test(text)) {
      wrongPassword(text);
    } else {
      showMessage(text);
      stop("error", "error");
    }
  }

  function evaluate(msg) {
    evaluations++;
    view.evaluations = evaluations;
    el.body.dataset.evaluations = String(evaluations);
    var from, to;
    if (msg.kind === "string" || typeof msg.start !== "number") {
      from = doc.lineOf(doc.marks.has(msg.author) ? doc.marks.get(msg.author) : 0);
      to = from + 1;
    } else {
      from = msg.start;
      to = msg.end > msg.start ? msg.end : msg.start + 1;
    }
    var f = { from: from, to: to, colour: colourOf(msg.author), until: Date.now() + FLASH_MS, id: ++flashIds };
    flashes.push(f);
    setTimeout(function () {
      flashes = flashes.filter(function (x) { return x !== f; });
      scheduleRender();
    }, FLASH_MS + 20);
  }

  // Troop colours a client by its id (id % 10), so text by someone who left before this
  // page arrived keeps its colour too; "u" is text whose author the hub never saw.
  function colourOf(id) {
    var c = colours.get(id);
    if (typeof c !== "number" && typeof id === "number" && id >= 0) c = id % 10;
    return typeof c === "number" && c >= 0 && c <= 9 ? String(Math.floor(c)) : "u";
  }

  var perfVersion = 0, perfDrawn = -1;
  function performersChanged() {
    perfVersion++;
    view.performers = Array.from(performers.values());
  }

  // ---- drawing ----------------------------------------------------------------------------
  var frame = 0, lineEls = [], drawn = { doc: null, version: -1, perf: -1, digits: 0 };

  function scheduleRender() {
    if (!frame) frame = requestAnimationFrame(render);
  }

  function render() {
    frame = 0;
    if (perfDrawn !== perfVersion) drawPerformers();
    if (drawn.doc !== doc || drawn.version !== doc.version || drawn.perf !== perfVersion) drawDoc();
    drawFlashes();
    follow();
  }

  function drawPerformers() {
    perfDrawn = perfVersion;
    var frag = document.createDocumentFragment();
    performers.forEach(function (p) {
      var li = document.createElement("li");
      li.className = "p" + colourOf(p.id);
      li.dataset.id = String(p.id);
      li.textContent = p.name;
      frag.appendChild(li);
    });
    el.performers.replaceChildren(frag);
  }

  // Splits the document into lines of segments {cls, text} and cursors {cur: performer}, and
  // rebuilds only the line elements whose content changed.
  function drawDoc() {
    drawn.doc = doc; drawn.version = doc.version; drawn.perf = perfVersion;
    var chars = doc.chars, authors = doc.authors, n = chars.length;
    var cursorsAt = new Map();
    doc.marks.forEach(function (index, id) {
      var p = performers.get(id);
      if (!p) return;
      var list = cursorsAt.get(index) || [];
      list.push(p);
      cursorsAt.set(index, list);
    });
    var sels = [];
    doc.selections.forEach(function (s, id) { if (performers.has(id)) sels.push({ s: s, cls: " s" + colourOf(id) }); });

    var lines = [], line = [], seg = null;
    for (var i = 0; i <= n; i++) {
      var here = cursorsAt.get(i);
      if (here) {
        here.forEach(function (p) { line.push({ cur: p }); });
        seg = null;
      }
      if (i === n) break;
      var cls = "t p" + colourOf(authors[i]);
      for (var k = 0; k < sels.length; k++) if (i >= sels[k].s.start && i < sels[k].s.end) cls += sels[k].cls;
      var ch = chars[i];
      if (seg && seg.cls === cls) seg.text += ch;
      else { seg = { cls: cls, text: ch }; line.push(seg); }
      if (ch === "\n") { lines.push(line); line = []; seg = null; }
    }
    lines.push(line);

    var digits = String(lines.length).length;
    if (digits !== drawn.digits) {
      drawn.digits = digits;
      el.doc.style.setProperty("--gw", (Math.max(digits, 2) + 0.5) + "ch");
    }
    for (var l = 0; l < lines.length; l++) {
      var key = lineKey(lines[l]);
      var le = lineEls[l];
      if (!le) {
        le = lineEls[l] = document.createElement("span");
        le.className = "line";
        le.dataset.n = String(l + 1);
        le._key = null;
        el.doc.appendChild(le);
      }
      if (le._key !== key) { le._key = key; le.replaceChildren(buildLine(lines[l])); }
    }
    while (lineEls.length > lines.length) lineEls.pop().remove();
  }

  function lineKey(line) {
    var parts = [];
    for (var i = 0; i < line.length; i++) {
      var x = line[i];
      parts.push(x.cur ? "\u0001" + x.cur.id + "\u0002" + x.cur.name + "\u0002" + colourOf(x.cur.id) : x.cls + "\u0002" + x.text);
    }
    return parts.join("\u0003");
  }

  function buildLine(line) {
    var frag = document.createDocumentFragment();
    line.forEach(function (x) {
      var s = document.createElement("span");
      if (x.cur) {
        s.className = "cur p" + colourOf(x.cur.id);
        s.dataset.name = x.cur.name;
        s.dataset.id = String(x.cur.id);
      } else {
        s.className = x.cls;
        s.textContent = x.text;
      }
      frag.appendChild(s);
    });
    return frag;
  }

  var flashTimer = 0;
  function drawFlashes() {
    var now = Date.now();
    flashes = flashes.filter(function (f) { return f.until > now; });
    for (var l = 0; l < lineEls.length; l++) {
      var le = lineEls[l], want = null;
      for (var k = flashes.length - 1; k >= 0; k--) {
        if (l + 1 >= flashes[k].from && l + 1 < flashes[k].to) { want = flashes[k]; break; }
      }
      var id = want ? want.id : 0;
      if (le._flash === id) continue;
      le._flash = id;
      le.className = "line";
      le.removeAttribute("data-flash");
      if (want) {
        void le.offsetWidth;   // restart the animation
        le.className = "line f" + want.colour;
        le.dataset.flash = want.colour;
      }
    }
    clearTimeout(flashTimer);
    if (flashes.length) flashTimer = setTimeout(scheduleRender, Math.max(16, flashes[0].until - now));
  }

  // Keeps the cursor of whoever typed last in sight, unless the reader scrolled lately.
  function follow() {
    if (followId === null) return;
    var id = followId;
    followId = null;
    if (Date.now() - userScrolledAt < 4000) return;
    var cur = el.doc.querySelector('.cur[data-id="' + String(id).replace(/[^0-9A-Za-z_-]/g, "") + '"]');
    if (!cur) return;
    var r = cur.getBoundingClientRect(), box = el.editor.getBoundingClientRect();
    var margin = r.height * 2;
    if (r.top < box.top + margin) el.editor.scrollTop -= box.top + margin - r.top;
    else if (r.bottom > box.bottom - margin) el.editor.scrollTop += r.bottom - (box.bottom - margin);
    if (r.left < box.left + margin * 3) el.editor.scrollLeft -= box.left + margin * 3 - r.left;
    else if (r.right > box.right - margin) el.editor.scrollLeft += r.right - (box.right - margin);
  }
  ["wheel", "touchmove", "keydown", "mousedown"].forEach(function (t) {
    el.editor.addEventListener(t, function () { userScrolledAt = Date.now(); }, { passive: true });
  });

  // ---- page setup -------------------------------------------------------------------------
  function fontFromQuery() {
    var v = new URLSearchParams(location.search).get("font");
    if (v === null || v === "" || !isFinite(Number(v))) return;
    var px = Math.min(96, Math.max(8, Number(v)));
    document.documentElement.style.setProperty("--font", px + "px");
  }

  function setUpFullscreen() {
    var target = el.stage;
    if (!document.fullscreenEnabled || !target.requestFullscreen) return;
    el.fullscreen.hidden = false;
    el.fullscreen.addEventListener("click", function () {
      if (document.fullscreenElement) document.exitFullscreen();
      else target.requestFullscreen().catch(function () { /* refused: stay as we are */ });
    });
    document.addEventListener("fullscreenchange", function () {
      el.fullscreen.textContent = document.fullscreenElement ? "Exit full screen" : "Full screen";
    });
  }

  fontFromQuery();
  setUpFullscreen();
  el.session.textContent = name;
  $("username").value = name;
  document.title = (name || "Troop") + " · Troop audience view";
  scheduleRender();
  if (!NAME_RE.test(name)) {
    el.session.textContent = "";
    showMessage("That is not a session name.", "Session names are 1 to 64 letters, digits, dots, dashes or underscores.");
    stop("error", "error");
  } else {
    setState("connecting", "connecting");
    lookUp();
  }
})();
