// seat.js: the browser seat (seat.html, served at <prefix>/s/{name}/play): a performer types
// into CodeMirror 5 and is a Troop 0.10.3 peer beside native Troop clients, over the hub's
// seat WebSocket (SEAT.md). The page is the peer: it keeps Troop's client-side OT state
// (TroopOT.Client, ot.js), the document with who wrote what and where everyone is (TroopDoc,
// doc.js), answers the join barrier, and sends its edits, cursor, selection and evaluations.
//
// The logic without a DOM (positions, Troop's block rules, messages and sentences) is
// root.TroopSeat, in seatlogic.js; this file is the page itself, run only in a browser that
// has the seat's form.
// Positions on the wire are Troop's: code points (Python str indices), never UTF-16 units;
// lines are 1-based as Troop numbers them. Wire data is hostile: it only ever goes into the
// page through textContent, attributes and CodeMirror's own text, never innerHTML.
(function (root) {
  "use strict";

  // ==== The page ============================================================================

  if (typeof document === "undefined" || !document.getElementById("join-form")) return;

  var S = root.TroopSeat;
  var R = root.TroopRender;
  var FLASH_MS = R && R.FLASH_MS ? R.FLASH_MS : 600;
  var CURSOR_MS = 50;               // at most one mark/select per this, while the cursor moves
  var WELCOME_TIMEOUT_MS = 20000;
  var CONSOLE_MAX = 500;            // console entries kept
  var FONT_KEY = "troop-seat-font", FONT_MIN = 10, FONT_MAX = 40, FONT_DEFAULT = 16;
  var STOP_SOUND = { python: "Clock.clear()", haskell: "hush" };

  function $(id) { return document.getElementById(id); }
  var el = {
    body: document.body, form: $("join-form"), sessionInput: $("join-session"), nameInput: $("join-name"),
    passwordInput: $("join-password"), joinButton: $("join-button"), joinError: $("join-error"),
    session: $("session"), status: $("status-word"), performers: $("performers"),
    fontDown: $("font-down"), fontUp: $("font-up"), stop: $("stop-sound"),
    runBlock: $("run-block"), runLine: $("run-line"),
    banner: $("banner"), bannerText: $("banner-text"), rejoin: $("rejoin"),
    seat: $("seat"), editorHost: $("editor"), consolePane: $("console"), consoleToggle: $("console-toggle"),
    consoleLog: $("console-log")
  };

  // ---- state ------------------------------------------------------------------------------
  var params = new URLSearchParams(location.search);
  var modeName = params.get("mode") === "haskell" ? "haskell" : "python";
  var ws = null;
  var joinInfo = null;             // {session, name, password} of the current or last join
  var myId = null;
  var state = "join";              // join, connecting, live (joined; editable once synced), ended, closed
  var barrier = false;             // a join barrier is up: no edits, nothing sent but the ack
  var synced = false;              // a reset has given us the document
  var doc = new root.TroopDoc();   // the text as Troop has it, who wrote it, everyone's cursor
  var map = null, mapText = null;  // LineMap of doc, rebuilt when its text changes
  var client = null;               // TroopOT.Client
  var peers = new Map();           // id -> {id, name}, connected now
  var names = new Map();           // id -> name, kept after a peer leaves (for the console)
  var colours = new Map();         // id -> colour index (Troop's: id % 10; none learnt here)
  var hubReason = null;            // the hub's `error` or `kill` sentence before it closes
  var killed = false;
  var welcomeTimer = 0, cursorTimer = 0, frame = 0;
  var queued = [];                 // evaluations asked for while the barrier was up

  function lineMap() {
    var text = doc.text();
    if (!map || mapText !== text) { map = new S.LineMap(doc.chars); mapText = text; }
    return map;
  }
  function colourOf(id) { return R ? R.colourOf(colours, id) : (typeof id === "number" && id >= 0 ? String(id % 10) : "u"); }

  // For tests and the curious: the seat's state, read-only.
  var seat = root.troopSeat = { get state() { return state; }, get id() { return myId; }, get doc() { return doc; },
    get client() { return client; }, get barrier() { return barrier; }, cm: null };

  function setState(s, words) {
    state = s;
    el.body.dataset.state = s;
    el.status.textContent = words || s;
  }

  // ---- the editor -------------------------------------------------------------------------
  // Undo history of own edits only. CodeMirror 5 records every change made to a document in
  // that document's history; no origin keeps a change out of it. But a change made through a
  // *linked* document whose history is not shared (doc.linkedDoc({sharedHist: false})) is
  // recorded only in the linked document's history, and CodeMirror rebases the editor's own
  // history over it (rebaseHist: own events after it move by the lines it added or removed;
  // an own event on a line it touched is dropped, with everything before it, since it can no
  // longer be undone safely). So remote edits are applied through `remoteDoc` with origin
  // "remote": Ctrl+Z and Ctrl+Y only ever undo and redo this performer's own typing, never
  // another performer's, and never re-insert text someone else has since changed. remoteDoc's
  // own history is cleared after each use. A reset replaces everything and clears the history.
  var CM = root.CodeMirror;
  var cm = null, remoteDoc = null;

  function makeEditor() {
    var mac = /Mac|iPhone|iPad/.test(navigator.platform || navigator.userAgent || "");
    var keys = {
      "Ctrl-Enter": function () { evaluateBlock(); },
      "Cmd-Enter": function () { evaluateBlock(); },
      "Alt-Enter": function () { evaluateLine(); },
      "Ctrl-.": function () { stopSound(); },
      "Cmd-.": function () { stopSound(); },
      "Esc": function () { el.consoleToggle.focus(); },   // a way out of the editor by keyboard
      "Tab": function (c) {
        if (c.somethingSelected()) c.indentSelection("add");
        else c.replaceSelection(new Array(c.getOption("indentUnit") + 1).join(" "), "end", "+input");
      },
      "Shift-Tab": function (c) { c.indentSelection("subtract"); }
    };
    cm = CM(el.editorHost, {
      value: "",
      mode: modeName,
      theme: "troop",
      lineNumbers: true,
      lineSeparator: "\n",
      indentUnit: 4,
      tabSize: 4,
      indentWithTabs: false,
      smartIndent: true,
      readOnly: true,
      undoDepth: 500,
      extraKeys: keys,
      // One cursor, as Troop has: no Ctrl+click for more.
      configureMouse: function () { return { addNew: false }; },
      screenReaderLabel: "Code (" + (mac ? "Cmd" : "Ctrl") + "+Enter evaluates the block, Alt+Enter the line, Esc leaves the editor)",
      spellcheck: false, autocorrect: false, autocapitalize: false
    });
    // Long lines wrap on a phone's narrow screen, as in the audience view.
    if (root.matchMedia) {
      var narrow = root.matchMedia("(max-width: 760px)");
      var wrap = function () { cm.setOption("lineWrapping", narrow.matches); };
      wrap();
      if (narrow.addEventListener) narrow.addEventListener("change", wrap);
    }
    remoteDoc = cm.getDoc().linkedDoc({ sharedHist: false });
    cm.on("changes", onLocalChanges);
    cm.on("cursorActivity", function () { scheduleCursor(); });
    seat.cm = cm;
  }

  function editable() { return state === "live" && synced && !barrier && !killed; }
  function updateReadOnly() {
    if (!cm) return;
    var ro = !editable();
    if (cm.getOption("readOnly") !== ro) cm.setOption("readOnly", ro);
    el.body.classList.toggle("read-only", ro);
    var can = state === "live" && synced && !killed;
    el.stop.disabled = el.runBlock.disabled = el.runLine.disabled = !can;
  }

  // Local edits: each change of an editor operation, in order, against the model as it was just
  // before it; then, as a safety net, any difference left between the editor and the model (it
  // should never happen) is sent as one more change so the two never drift apart.
  function onLocalChanges(_cm, changes) {
    if (!client || !synced) return;
    var any = false;
    for (var i = 0; i < changes.length; i++) {
      var c = changes[i];
      if (c.origin === "remote") continue;
      var m = lineMap();
      var from = m.index(c.from), to = m.index(c.to);
      localEdit(from, to, c.text.join("\n"));
      any = true;
    }
    if (!any) return;
    var d = S.replaceDiff(doc.chars, cm.getValue());
    if (d) {
      console.warn("troop seat: editor and document differ; sending the difference");
      localEdit(d.from, d.to, d.text);
    }
  }

  function localEdit(from, to, text) {
    if (from === to && text === "") return;
    var OT = root.TroopOT;
    var ops = OT.replace(doc.length(), from, to, text);
    if (!ops || !ops.length || (OT.isNoop && OT.isNoop(ops))) return;
    doc.applyOperation(myId, ops);
    client.local(ops);
    authorsStale = true;
    scheduleDecorate();
  }

  // Remote edits: ops (already transformed by the client) applied to the model and, through
  // remoteDoc, to the editor; this performer's cursor and selection stay where Troop keeps
  // them (before text inserted right at them).
  function applyRemote(author, ops) {
    var m = lineMap();
    var changes = S.opsToChanges(doc.chars, ops);
    var sel = cm.listSelections()[0];
    var anchor = m.index(sel.anchor), head = m.index(sel.head);
    doc.applyOperation(author, ops);
    authorsStale = true;
    cm.operation(function () {
      changes.forEach(function (ch) { remoteDoc.replaceRange(ch.text, ch.from, ch.to, "remote"); });
      var after = lineMap();
      var a = after.pos(S.mapIndex(ops, anchor)), h = after.pos(S.mapIndex(ops, head));
      var now = cm.listSelections()[0];
      if (now.anchor.line !== a.line || now.anchor.ch !== a.ch || now.head.line !== h.line || now.head.ch !== h.ch) {
        cm.setSelection(a, h, { scroll: false, origin: "remote" });
      }
    });
    remoteDoc.clearHistory();
    if (cm.getValue() !== doc.text()) throw new Error("the editor does not match the document");
  }

  // A reset: Troop's server sends one to every peer whenever someone joins (after the
  // barrier), so it is most often the text the editor already has; then the editor's text,
  // cursor, selection and undo history are left as they are. Otherwise the text is replaced,
  // the cursor goes where the server has it, and the history is cleared.
  function loadDocument(msg) {
    var text = String(msg.document == null ? "" : msg.document);
    var chars = Array.from(text);
    doc.load(text, S.runsFromTagLoc(msg.peer_tag_loc, chars.length), S.marksFromPeerLoc(msg.peer_loc));
    authorsStale = true;
    if (text !== cm.getValue()) {
      var keep = cm.getDoc().indexFromPos(cm.getCursor());
      cm.operation(function () {
        var last = remoteDoc.lastLine();
        remoteDoc.replaceRange(text, { line: 0, ch: 0 }, { line: last, ch: remoteDoc.getLine(last).length }, "remote");
        var mine = doc.marks.has(myId) ? doc.marks.get(myId) : null;
        var pos = mine != null ? lineMap().pos(mine) : cm.posFromIndex(Math.min(keep, text.length));
        cm.setCursor(pos, null, { scroll: false, origin: "remote" });
      });
      remoteDoc.clearHistory();
      cm.clearHistory();
      clearFlashes();
    }
    synced = true;
    scheduleCursor();   // tells the others where this cursor is if the server had it elsewhere
  }

  // ---- cursor and selection out ------------------------------------------------------------
  function scheduleCursor() {
    scheduleDecorate();
    if (!cursorTimer) cursorTimer = setTimeout(sendCursor, CURSOR_MS);
  }

  // Sends this performer's cursor and selection when they differ from what the peers have (the
  // model keeps that: an own edit moves the own mark there and drops the selection, as Troop
  // does on every peer).
  function sendCursor() {
    cursorTimer = 0;
    if (!cm || !synced || barrier || state !== "live" || myId == null) return;
    var m = lineMap();
    var head = m.index(cm.getCursor("head"));
    var sel = cm.somethingSelected() ? { start: m.index(cm.getCursor("from")), end: m.index(cm.getCursor("to")) } : null;
    var had = doc.selections.get(myId) || null;
    if (sel && (!had || had.start !== sel.start || had.end !== sel.end)) {
      send({ type: "select", start: sel.start, end: sel.end });
      doc.setSelection(myId, sel.start, sel.end);
    } else if (!sel && had) {
      send({ type: "select", start: 0, end: 0 });
      doc.setSelection(myId, 0, 0);
    }
    if (doc.marks.get(myId) !== head) {
      send({ type: "mark", index: head });
      doc.setMark(myId, head);
    }
  }

  // ---- evaluation --------------------------------------------------------------------------
  function docLines() { return doc.text().split("\n"); }

  function evaluateBlock() {
    if (!cm || state !== "live" || !synced || killed) return;
    var sel = null;
    if (cm.somethingSelected()) sel = { first: cm.getCursor("from").line + 1, last: cm.getCursor("to").line + 1 };
    var b = S.blockOfCode(docLines(), cm.getCursor("head").line + 1, sel);
    if (b) sendEvaluation({ type: "evaluate", start: b.start, end: b.end });
  }

  function evaluateLine() {
    if (!cm || state !== "live" || !synced || killed) return;
    var b = S.lineOfCode(docLines(), cm.getCursor("head").line + 1);
    if (b) sendEvaluation({ type: "evaluate", start: b.start, end: b.end });
  }

  function stopSound() {
    if (state !== "live" || !synced || killed) return;
    sendEvaluation({ type: "evaluate_string", string: STOP_SOUND[modeName] + "\n" });
  }

  // Nothing runs here: the server echoes the evaluation to every peer, this one included, and
  // the flash comes with that echo, in the author's colour, like everyone else's.
  function sendEvaluation(msg) {
    if (barrier) { queued.push(msg); return; }
    send(msg);
  }

  // ---- drawing: authors, cursors, selections, flashes ---------------------------------------
  var authorMarks = [];              // CodeMirror marks, one per run of an author's text
  var authorsStale = true;           // the text or who wrote it changed since they were drawn
  var cursorMarks = new Map();       // id -> {marker, key}
  var selectionMarks = new Map();    // id -> {marker, key}

  function scheduleDecorate() { if (!frame) frame = requestAnimationFrame(decorate); }

  function posKey(p) { return p.line + ":" + p.ch; }

  function decorate() {
    frame = 0;
    if (!cm) return;
    cm.operation(function () {
      if (authorsStale) { authorsStale = false; drawAuthors(); }
      drawCursors();
      drawSelections();
    });
    drawPerformers();
  }

  // The text in each author's colour. CodeMirror's marks move with the text, so only the runs
  // whose place or colour changed are marked anew.
  function drawAuthors() {
    var have = new Map();   // "from-to-colour" -> marker, of the marks there now
    authorMarks.forEach(function (mk) {
      var r = mk.find();
      var key = r && posKey(r.from) + "-" + posKey(r.to) + "-" + mk.troopColour;
      if (!r || have.has(key)) mk.clear(); else have.set(key, mk);
    });
    authorMarks = S.authorRanges(doc.chars, doc.authors).map(function (w) {
      var colour = colourOf(w.author), key = posKey(w.from) + "-" + posKey(w.to) + "-" + colour;
      var mk = have.get(key);
      if (mk) { have.delete(key); return mk; }
      mk = cm.markText(w.from, w.to, { className: "cm-author p" + colour, inclusiveLeft: false, inclusiveRight: false });
      mk.troopColour = colour;
      return mk;
    });
    have.forEach(function (mk) { mk.clear(); });
  }

  // Other performers' cursors: a bar in their colour with their name (a bookmark's widget).
  function drawCursors() {
    var m = lineMap(), seen = new Set();
    doc.marks.forEach(function (index, id) {
      var p = peers.get(id);
      if (!p || id === myId) return;
      seen.add(id);
      var pos = m.pos(index), key = posKey(pos) + "|" + p.name + "|" + colourOf(id);
      var old = cursorMarks.get(id);
      if (old) {
        var at = old.marker.find();
        if (old.key === key && at && posKey(at) === posKey(pos)) return;
        old.marker.clear();
      }
      var w = document.createElement("span");
      w.className = "seat-cur p" + colourOf(id);
      w.dataset.name = p.name;
      w.setAttribute("role", "img");
      w.setAttribute("aria-label", p.name + "'s cursor");
      cursorMarks.set(id, { key: key, marker: cm.setBookmark(pos, { widget: w, insertLeft: true, handleMouseEvents: false }) });
    });
    cursorMarks.forEach(function (c, id) { if (!seen.has(id)) { c.marker.clear(); cursorMarks.delete(id); } });
  }

  // Other performers' selections, shaded in their colour.
  function drawSelections() {
    var m = lineMap(), seen = new Set();
    doc.selections.forEach(function (s, id) {
      if (!peers.has(id) || id === myId) return;
      seen.add(id);
      var from = m.pos(s.start), to = m.pos(s.end), key = posKey(from) + "-" + posKey(to) + "|" + colourOf(id);
      var old = selectionMarks.get(id);
      if (old) {
        var r = old.marker.find();
        if (old.key === key && r && posKey(r.from) === posKey(from) && posKey(r.to) === posKey(to)) return;
        old.marker.clear();
      }
      selectionMarks.set(id, { key: key, marker: cm.markText(from, to, { className: "seat-sel s" + colourOf(id) }) });
    });
    selectionMarks.forEach(function (s, id) { if (!seen.has(id)) { s.marker.clear(); selectionMarks.delete(id); } });
  }

  var performersDrawn = "";
  function drawPerformers() {
    var key = Array.from(peers.values()).map(function (p) { return p.id + ":" + p.name; }).join("\n");
    if (key === performersDrawn) return;
    performersDrawn = key;
    if (R) R.drawPerformers(el.performers, peers, colourOf);
    if (cm && myId != null) {
      // This performer's caret and selection in their own colour.
      var w = cm.getWrapperElement(), mine = "mine p" + colourOf(myId);
      if (w.dataset.mine !== mine) {
        if (w.dataset.mine) w.classList.remove.apply(w.classList, w.dataset.mine.split(" "));
        w.classList.add.apply(w.classList, mine.split(" "));
        w.dataset.mine = mine;
      }
    }
  }

  // Evaluation flashes: the lines' background in the author's colour, FLASH_MS long. A line
  // flashed again while it flashes switches between two identical animations to restart.
  var flashing = new Map();          // line handle -> {cls, timer}
  function flash(from, to, author) {
    var colour = colourOf(author);
    cm.operation(function () {
      for (var l = Math.max(1, from); l < to && l <= cm.lineCount(); l++) flashLine(cm.getLineHandle(l - 1), colour);
    });
  }
  function flashLine(handle, colour) {
    var prev = flashing.get(handle), alt = false;
    if (prev) {
      clearTimeout(prev.timer);
      unflash(handle, prev.cls);
      alt = !prev.alt;
    }
    var cls = "seat-flash f" + colour + (alt ? " seat-flash-alt" : "");
    cm.addLineClass(handle, "background", cls);
    var rec = { cls: cls, alt: alt, timer: 0 };
    rec.timer = setTimeout(function () {
      if (flashing.get(handle) !== rec) return;
      flashing.delete(handle);
      unflash(handle, cls);
    }, FLASH_MS + 20);
    flashing.set(handle, rec);
  }
  function unflash(handle, cls) {
    if (cm.getLineNumber(handle) != null) cm.removeLineClass(handle, "background", cls);   // not deleted since
  }
  function clearFlashes() {
    flashing.forEach(function (rec, handle) { clearTimeout(rec.timer); unflash(handle, rec.cls); });
    flashing.clear();
  }

  // ---- the console -------------------------------------------------------------------------
  function consoleAdd(parts, cls) {
    var li = document.createElement("li");
    if (cls) li.className = cls;
    parts.forEach(function (p) {
      if (typeof p === "string") { li.appendChild(document.createTextNode(p)); return; }
      var s = document.createElement(p.code ? "code" : "span");
      if (p.cls) s.className = p.cls;
      s.textContent = p.text;
      li.appendChild(s);
    });
    var log = el.consoleLog;
    var atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.appendChild(li);
    while (log.childElementCount > CONSOLE_MAX) log.firstElementChild.remove();
    if (atEnd) log.scrollTop = log.scrollHeight;
  }
  function consoleText(text, cls) {
    String(text).replace(/\n+$/, "").split("\n").forEach(function (line) { consoleAdd([line], cls); });
  }
  function consoleCode(id, code) {
    var name = names.get(id) || ("peer " + id);
    S.consoleLines(name, code).forEach(function (l) {
      consoleAdd([{ text: l.lead, cls: "who p" + colourOf(id) }, " : ", { text: l.text, code: true }], "eval");
    });
  }

  // ---- the connection ----------------------------------------------------------------------
  function send(msg) {
    if (ws && ws.readyState === 1) ws.send(JSON.stringify(msg));
  }

  function join(info) {
    joinInfo = info;
    closeSocket();
    myId = null; client = null; synced = false; barrier = false; killed = false; hubReason = null; queued = [];
    peers.clear(); names.clear();
    doc = new root.TroopDoc();
    authorsStale = true;
    performersDrawn = null;
    el.banner.hidden = true;
    el.joinError.textContent = "";
    el.joinButton.disabled = true;
    setState("connecting", "connecting");
    el.session.textContent = info.session;
    document.title = info.session + " · Troop seat";
    var sock;
    try { sock = new WebSocket(S.seatUrl(location.href, info.session)); } catch (e) { return failed(null); }
    ws = sock;
    sock.onopen = function () {
      if (ws !== sock) return;
      sock.send(JSON.stringify({ type: "join", name: info.name, password: info.password }));
      clearTimeout(welcomeTimer);
      welcomeTimer = setTimeout(function () {
        if (ws === sock && myId === null) { hubReason = "The hub did not answer: join again."; closeSocket(); failed(null); }
      }, WELCOME_TIMEOUT_MS);
    };
    sock.onmessage = function (ev) {
      if (ws !== sock) return;
      var msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      try {
        handle(msg);
      } catch (e) {
        console.error("troop seat:", e);
        hubReason = "This page lost track of the session's document: join again.";
        closeSocket();
        failed(null);
      }
    };
    sock.onclose = function (ev) {
      if (ws !== sock) return;
      ws = null;
      if (!hubReason && ev.reason) hubReason = ev.reason;
      failed(ev.code);
    };
  }

  function closeSocket() {
    clearTimeout(welcomeTimer);
    clearTimeout(cursorTimer);
    cursorTimer = 0;
    var old = ws;
    ws = null;
    if (old) { try { old.close(1000); } catch (e) { /* closing already */ } }
  }

  // The seat is closed (code: the WebSocket close code, or null when the page closed it).
  function failed(code) {
    clearTimeout(welcomeTimer);
    var joined = myId !== null;
    var info = { session: joinInfo.session, name: joinInfo.name, reason: hubReason, joined: joined };
    var sentence = killed ? hubReason : code === null ? hubReason || S.closeSentence(0, info) : S.closeSentence(code, info);
    var over = killed || code === 1000;
    el.joinButton.disabled = false;
    if (!joined) {
      // Not in: back to the form, the sentence beside it, the field to fix focused.
      showForm(sentence, code === 4409 || code === 4400 ? el.nameInput : code === 4403 ? el.passwordInput : code === 4404 ? el.sessionInput : el.joinButton);
      return;
    }
    var hadFocus = cm && cm.hasFocus();
    setState(over ? "ended" : "closed", over ? "ended" : "disconnected");
    if (!killed) consoleText(sentence, "notice");
    el.bannerText.textContent = sentence;
    el.rejoin.hidden = over || code === 4400;
    el.banner.hidden = false;
    peers.clear();
    clearCursorsAndSelections();
    updateReadOnly();
    scheduleDecorate();
    if (hadFocus && !el.rejoin.hidden) el.rejoin.focus();
  }

  function clearCursorsAndSelections() {
    if (!cm) return;
    cursorMarks.forEach(function (c) { c.marker.clear(); });
    cursorMarks.clear();
    selectionMarks.forEach(function (s) { s.marker.clear(); });
    selectionMarks.clear();
  }

  function showForm(error, focus) {
    setState("join", "not joined");
    el.seat.hidden = true;
    el.form.hidden = false;
    el.joinError.textContent = error || "";
    if (focus) focus.focus();
  }

  // ---- messages ----------------------------------------------------------------------------
  function handle(msg) {
    switch (S.action(msg, myId)) {
      case "welcome": {
        clearTimeout(welcomeTimer);
        myId = Number(msg.id);
        joinInfo.name = String(msg.name || joinInfo.name);
        if (msg.session) joinInfo.session = String(msg.session);
        names.set(myId, joinInfo.name);
        client = new root.TroopOT.Client(function (ops, revision) {
          send({ type: "operation", ops: ops, revision: revision });
        });
        el.form.hidden = true;
        el.seat.hidden = false;
        el.session.textContent = joinInfo.session;
        setState("live", "joining");
        if (!cm) makeEditor(); else cm.refresh();
        updateReadOnly();
        consoleAdd(["Joined " + joinInfo.session + " as '" + joinInfo.name + "'."], "notice");
        break;
      }
      case "self-joined":
      case "peer-joined": {
        var id = Number(msg.src), name = String(msg.name == null ? "" : msg.name);
        peers.set(id, { id: id, name: name });
        names.set(id, name);
        if (id !== myId) consoleAdd(["Peer '" + name + "' has joined the session"], "notice");
        scheduleDecorate();
        break;
      }
      case "peer-left": {
        var who = Number(msg.src);
        if (peers.has(who)) consoleAdd(["Peer '" + peers.get(who).name + "' has disconnected"], "notice");
        peers.delete(who);
        doc.removePeer(who);
        scheduleDecorate();
        break;
      }
      case "barrier-up":
        barrier = true;
        clearTimeout(cursorTimer);
        cursorTimer = 0;
        send({ type: "ack" });
        if (state === "live") el.status.textContent = "paused: someone is joining";
        updateReadOnly();
        break;
      case "barrier-down":
        barrier = false;
        if (state === "live") el.status.textContent = synced ? "live" : "joining";
        updateReadOnly();
        queued.splice(0).forEach(send);
        scheduleCursor();
        break;
      case "reset":
        if (!cm) return;
        client.reset();
        loadDocument(msg);
        if (state === "live") el.status.textContent = barrier ? "paused: someone is joining" : "live";
        updateReadOnly();
        scheduleDecorate();
        if (document.activeElement === el.joinButton || document.activeElement === document.body) cm.focus();
        break;
      case "ack":
        if (client && synced) client.ack();
        break;
      case "remote-operation": {
        if (!client || !synced) return;
        var ops = client.remote(msg.ops);
        if (root.TroopOT.normalize) ops = root.TroopOT.normalize(ops);   // no 0 or "" parts
        if (ops && ops.length) applyRemote(Number(msg.src), ops);
        scheduleDecorate();
        break;
      }
      case "peer-mark":
        if (!synced) return;
        doc.setMark(Number(msg.src), msg.index);
        scheduleDecorate();
        break;
      case "peer-select":
        if (!synced) return;
        doc.setSelection(Number(msg.src), msg.start, msg.end);
        scheduleDecorate();
        break;
      case "evaluate": {
        if (!synced) return;
        var author = Number(msg.src), start = Number(msg.start), end = Number(msg.end);
        consoleCode(author, S.evaluatedCode(docLines(), start, end));
        var f = R ? R.flashLines(doc, author, true, start, end) : { from: start, to: end > start ? end : start + 1 };
        flash(f.from, f.to, author);
        break;
      }
      case "evaluate-string": {
        var by = Number(msg.src);
        consoleCode(by, String(msg.string == null ? "" : msg.string));
        if (synced && R) {
          var g = R.flashLines(doc, by, false);
          flash(g.from, g.to, by);
        }
        break;
      }
      case "console":
        consoleText(String(msg.string == null ? "" : msg.string), "out");
        break;
      case "kill":
        killed = true;
        hubReason = String(msg.string || "The session has ended.");
        consoleText(hubReason, "notice");
        setState("ended", "ended");
        el.bannerText.textContent = hubReason;
        el.rejoin.hidden = true;
        el.banner.hidden = false;
        updateReadOnly();
        break;
      case "error":
        hubReason = S.sentence(msg.message || "The hub refused this seat");
        if (msg.retry === true && !/again/i.test(hubReason)) hubReason = hubReason.replace(/[.!?]$/, ": join again.");
        break;
      default:
        break;   // constraint (Troop 0.10.3 does not enforce one), own marks, newer messages
    }
  }

  // ---- the form, the bar, the console pane ------------------------------------------------
  el.form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var session = el.sessionInput.value.trim(), name = el.nameInput.value.trim();
    if (!S.NAME_RE.test(session)) {
      el.joinError.textContent = "A session's name is 1 to 64 letters, digits, dots, dashes or underscores: check it.";
      el.sessionInput.focus();
      return;
    }
    if (!name) {
      el.joinError.textContent = "Type the name the other performers will see.";
      el.nameInput.focus();
      return;
    }
    if (!root.CodeMirror || !root.TroopOT || !root.TroopDoc) {
      el.joinError.textContent = "The editor did not load: reload the page.";
      return;
    }
    try { localStorage.setItem("troop-seat-name", name); } catch (e) { /* private mode */ }
    // The address follows the session joined, so that a reload comes back to it.
    if (session !== S.sessionFromPath(location.pathname) && S.sessionFromPath(location.pathname)) {
      try { history.replaceState(null, "", "../" + encodeURIComponent(session) + "/play" + location.search); } catch (e) { /* file: */ }
    }
    var password = el.passwordInput.value;
    join({ session: session, name: name, password: password });
  });

  el.rejoin.addEventListener("click", function () {
    if (joinInfo) join({ session: joinInfo.session, name: joinInfo.name, password: joinInfo.password });
  });

  var fontPx = FONT_DEFAULT;
  function setFont(px, remember) {
    fontPx = Math.min(FONT_MAX, Math.max(FONT_MIN, Math.round(px)));
    document.documentElement.style.setProperty("--code-font", fontPx + "px");
    el.fontDown.disabled = fontPx <= FONT_MIN;
    el.fontUp.disabled = fontPx >= FONT_MAX;
    el.fontDown.title = "Smaller code (" + fontPx + " px now)";
    el.fontUp.title = "Larger code (" + fontPx + " px now)";
    if (remember) { try { localStorage.setItem(FONT_KEY, String(fontPx)); } catch (e) { /* private mode */ } }
    if (cm) cm.refresh();
  }
  el.fontDown.addEventListener("click", function () { setFont(fontPx - 1, true); });
  el.fontUp.addEventListener("click", function () { setFont(fontPx + 1, true); });
  // The buttons for a touch screen, which has no Ctrl+Enter: pressing one leaves the focus
  // (and a phone's keyboard) in the editor.
  [[el.runBlock, evaluateBlock], [el.runLine, evaluateLine], [el.stop, stopSound]].forEach(function (b) {
    b[0].addEventListener("mousedown", function (ev) { if (cm && cm.hasFocus()) ev.preventDefault(); });
    b[0].addEventListener("click", function () { b[1](); });
  });

  function setConsoleOpen(open) {
    el.consoleToggle.setAttribute("aria-expanded", String(open));
    el.consolePane.classList.toggle("collapsed", !open);
    el.consoleLog.hidden = !open;
    if (cm) cm.refresh();
  }
  el.consoleToggle.addEventListener("click", function () {
    setConsoleOpen(el.consoleToggle.getAttribute("aria-expanded") !== "true");
  });

  // ---- page setup -------------------------------------------------------------------------
  (function setUp() {
    var saved = null;
    try { saved = Number(localStorage.getItem(FONT_KEY)); } catch (e) { saved = null; }
    setFont(saved && isFinite(saved) ? saved : FONT_DEFAULT, false);
    setConsoleOpen(!(root.matchMedia && root.matchMedia("(max-width: 760px)").matches));
    var session = S.sessionFromPath(location.pathname);
    el.sessionInput.value = session;
    try { el.nameInput.value = localStorage.getItem("troop-seat-name") || ""; } catch (e) { /* private mode */ }
    el.session.textContent = session;
    document.title = (session || "Troop") + " · Troop seat";
    setState("join", "not joined");
    if (!root.CodeMirror || !root.TroopOT) {
      el.joinError.textContent = "The editor did not load: reload the page.";
    }
    (session ? (el.nameInput.value ? el.passwordInput : el.nameInput) : el.sessionInput).focus();
  })();
})(typeof window !== "undefined" ? window : globalThis);
