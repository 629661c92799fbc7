// view.js: the live audience page (view.html). It owns the connection (session look-up,
// optional password, the live WebSocket, reconnects with backoff), applies each message to a
// TroopDoc (doc.js) at once, and draws the document, cursors, selections, evaluation flashes
// and the top bar at most once per animation frame with the drawing it shares with replay.js
// (TroopRender, render.js). Wire data is hostile: it only ever goes into the page through
// textContent and attributes, never innerHTML.
(function () {
  "use strict";

  var R = window.TroopRender;
  var NAME_RE = /^[A-Za-z0-9._-]{1,64}$/;
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
  var evaluations = 0;
  var password = null;          // kept here only, for reconnects
  var share = R.shareToken();   // a share link's token, from the fragment (never sent in a URL)
  var onStage = false;          // the stage view (?stage): set up below
  var centreOn = null;          // the last evaluation's lines, to centre on the next frame
  var audience = null;
  var ws = null, stopped = false, backoff = BACKOFF_MIN_MS, timer = null, snapshotTimer = null;

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
        } else if (audience === "password" && password === null && !share) {
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
      if (audience === "password") {
        sock.send(JSON.stringify(share && password === null ? { share: share } : { password: password || "" }));
      }
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
  // A large document's snapshot comes in parts: the snapshot with the first part and `more`,
  // then that many `more` messages with the rest, before anything else.
  var parts = null;   // {msg, texts, left} while a snapshot's parts arrive

  function handle(msg) {
    if (msg.type === "snapshot" && msg.more > 0) {
      parts = { msg: msg, texts: [String(msg.document || "")], left: msg.more };
      return;
    }
    if (msg.type === "more") {
      if (!parts) return;
      parts.texts.push(String(msg.text || ""));
      if (--parts.left > 0) return;
      var whole = parts.msg;
      whole.document = parts.texts.join("");
      parts = null;
      return snapshot(whole);
    }
    if (parts) return;   // nothing else comes between a snapshot's parts
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
        painter.keepInSight(msg.author);
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
    painter.clearFlashes();
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
    } else if (audience === "password" && share && password === null && /share link/i.test(text)) {
      share = null;   // expired or revoked: the password still opens the view
      wrongPassword(text);
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
    var block = msg.kind !== "string" && typeof msg.start === "number";
    var f = R.flashLines(doc, msg.author, block, msg.start, msg.end);
    painter.flash(f.from, f.to, msg.author);
    if (onStage) centreOn = f;
  }

  function colourOf(id) { return R.colourOf(colours, id); }

  var perfVersion = 0, perfDrawn = -1, sharesAt = 0, sharesVersion = -1;
  var SHARES_EVERY_MS = 1000;
  function performersChanged() {
    perfVersion++;
    view.performers = Array.from(performers.values());
  }

  // ---- drawing (render.js) ----------------------------------------------------------------
  var frame = 0, drawn = { doc: null, version: -1, perf: -1 };
  var painter = new R.Lines({ docEl: el.doc, editor: el.editor, colour: colourOf, schedule: scheduleRender });

  function scheduleRender() {
    if (!frame) frame = requestAnimationFrame(render);
  }

  function render() {
    frame = 0;
    // Each performer's share of the code, beside their name: redrawn when they come and go,
    // and at most once a second while the code changes.
    var now = Date.now();
    var sharesStale = sharesVersion !== doc.version && now - sharesAt >= SHARES_EVERY_MS;
    if (perfDrawn !== perfVersion || sharesStale) {
      perfDrawn = perfVersion;
      sharesAt = now;
      sharesVersion = doc.version;
      R.drawPerformers(el.performers, performers, colourOf, R.shares(doc));
    } else if (sharesVersion !== doc.version) {
      clearTimeout(sharesTimer);
      sharesTimer = setTimeout(scheduleRender, SHARES_EVERY_MS - (now - sharesAt));
    }
    if (drawn.doc !== doc || drawn.version !== doc.version || drawn.perf !== perfVersion) {
      drawn.doc = doc; drawn.version = doc.version; drawn.perf = perfVersion;
      painter.drawDoc(doc, performers);
    }
    painter.drawFlashes();
    if (centreOn) {
      painter.centre(centreOn.from, centreOn.to);
      centreOn = null;
    } else {
      painter.follow();
    }
  }
  var sharesTimer = 0;

  // ---- page setup -------------------------------------------------------------------------
  onStage = view.stage = R.stageFromQuery();
  R.fontFromQuery();
  R.setUpFullscreen(el.fullscreen, el.stage);
  el.session.textContent = name;
  // Performers join from here in a browser: the seat page is this page's address + /play.
  if (NAME_RE.test(name)) {
    $("play").href = encodeURIComponent(name) + "/play";
    $("play").title = "Play in this session from your browser";
    $("play").hidden = false;
  }
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
