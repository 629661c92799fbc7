// archive.js: "Your past sessions" (archive.html, served at /archive). A session's name and
// password (sent once, in a POST body: any characters, never in a URL) list its archived
// performances, newest first, each with a link to replay it and its code and timeline to
// download. The hub answers with a short-lived token for them (X-Archive-Token); downloads
// use it, and opening a replay leaves it (never the password) in this tab's sessionStorage
// under that session's id, so replay.js need not ask again. The password is kept nowhere.
// Names and reasons from the hub are hostile text: textContent only.
(function () {
  "use strict";

  var NAME_RE = /^[A-Za-z0-9._-]{1,64}$/;
  var TOKEN_KEY = "troop-archive-token:";   // + id; read by replay.js

  function $(id) { return document.getElementById(id); }
  var el = {
    body: document.body, form: $("lookup"), name: $("name"), password: $("password"),
    show: $("show"), error: $("error"), found: $("found"), sessions: $("sessions")
  };

  var asked = null;               // {name, token} of the list shown
  var retryTimer = 0;

  var hook = window.troopArchive = { state: "form", sessions: [], error: "", lastDownload: null };

  function setState(state, error) {
    hook.state = state;
    el.body.dataset.state = state;
    hook.error = error || "";
    el.error.textContent = error || "";
  }

  function errorOf(r) {
    return r.json().then(function (b) { return b && typeof b.error === "string" ? b.error : ""; }, function () { return ""; });
  }

  // One line for an answer that is not OK.
  function sentence(r, text) {
    if (r.status === 429) {
      var after = r.headers.get("Retry-After");
      return text || ("Too many wrong passwords; try again" + (after ? " in " + after + " s." : " later."));
    }
    if (r.status === 401 || r.status === 403) return text || "Wrong password, or nothing archived under that name.";
    if (r.status === 503) return text || "The hub is busy; try again in a moment.";
    if (r.status === 404) return text || "This hub keeps no archive.";
    return text || ("The hub could not answer (HTTP " + r.status + ").");
  }

  el.form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var name = el.name.value.trim(), password = el.password.value;
    if (!NAME_RE.test(name)) {
      setState("error", "Session names are 1 to 64 letters, digits, dots, dashes or underscores.");
      el.name.focus();
      return;
    }
    if (!password) { setState("error", "Type the session's password."); el.password.focus(); return; }
    lookUp(name, password);
  });

  function lookUp(name, password) {
    setState("loading", "");
    el.show.disabled = true;
    el.show.textContent = "Looking…";
    fetch("api/v1/archive/access", {
      method: "POST", cache: "no-store", credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ name: name, password: password })
    }).then(function (r) {
      if (r.ok) return r.json();
      return errorOf(r).then(function (text) {
        if (r.status === 429) holdOff(Number(r.headers.get("Retry-After")));
        throw new Error(sentence(r, text));
      });
    }).then(function (granted) {
      var list = granted && granted.sessions;
      if (!Array.isArray(list) || typeof granted.token !== "string") throw new Error("The hub's answer is not a list of sessions.");
      asked = { name: name, token: granted.token };
      show(list);
      setState("list", list.length ? "" : "Nothing is archived under that name.");
    }).catch(function (e) {
      clear();
      var text = e && e.message ? e.message : String(e);
      if (e instanceof TypeError) text = "The hub could not be reached. Try again in a moment.";
      setState("error", text);
    }).then(function () {
      el.show.textContent = "Show";
      if (!retryTimer) el.show.disabled = false;
    });
  }

  // After a 429: no new attempt until the hub takes them again.
  function holdOff(seconds) {
    if (!(seconds > 0)) return;
    clearTimeout(retryTimer);
    el.show.disabled = true;
    retryTimer = setTimeout(function () { retryTimer = 0; el.show.disabled = false; }, Math.min(seconds, 3600) * 1000);
  }

  function clear() {
    asked = null;
    hook.sessions = [];
    el.sessions.replaceChildren();
    el.found.hidden = true;
  }

  // ---- the list ---------------------------------------------------------------------------
  function num(v) { return typeof v === "number" && isFinite(v) ? v : NaN; }

  function when(ms) {
    return new Date(ms).toLocaleString(undefined, {
      weekday: "short", year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit"
    });
  }

  function duration(ms) {
    var s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + " s";
    var m = Math.round(s / 60);
    if (m < 60) return m + " min";
    var h = Math.floor(m / 60);
    m %= 60;
    return h + " h " + (m < 10 ? "0" : "") + m + " min";
  }

  function size(bytes) {
    if (bytes < 1024) return bytes + " bytes";
    if (bytes < 1024 * 1024) return (bytes / 1024).toFixed(bytes < 10240 ? 1 : 0) + " KB";
    return (bytes / 1048576).toFixed(bytes < 10485760 ? 1 : 0) + " MB";
  }

  function count(n, one, many) {
    n = num(n) || 0;
    return n.toLocaleString() + " " + (n === 1 ? one : many);
  }

  function utcDate(ms) {
    var d = new Date(ms);
    return isNaN(d.getTime()) ? "" : d.toISOString().slice(0, 10);
  }

  function node(tag, cls, text) {
    var n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text != null) n.textContent = text;
    return n;
  }

  function show(list) {
    hook.sessions = list;
    el.found.textContent = list.length === 1 ? "1 performance of " + asked.name
      : list.length + " performances of " + asked.name;
    el.found.hidden = !list.length;
    var frag = document.createDocumentFragment();
    list.forEach(function (s) { if (s && typeof s === "object") frag.appendChild(item(s)); });
    el.sessions.replaceChildren(frag);
  }

  function item(s) {
    var id = String(s.id == null ? "" : s.id), name = String(s.name == null ? asked.name : s.name);
    var started = num(s.started_ms), ended = num(s.ended_ms);
    var li = node("li", "session");
    li.dataset.id = id;

    var head = node("div", "head");
    head.appendChild(node("h3", "when", started === started ? when(started) : "Unknown start"));
    var running = ended !== ended;
    var dur = started === started ? duration((running ? Date.now() : ended) - started) : "";
    head.appendChild(node("span", "duration" + (running ? " running" : ""), running ? "running" + (dur ? " for " + dur : "") : dur));
    li.appendChild(head);

    var how = running ? "Still running: the replay shows what is recorded so far."
      : "Ended" + (s.end_reason ? ": " + String(s.end_reason) : ".");
    li.appendChild(node("p", "ended", how));

    var perf = Array.isArray(s.performers) ? s.performers : [];
    var stats = s.stats && typeof s.stats === "object" ? s.stats : {};
    var pp = node("p", "performers");
    if (perf.length) {
      pp.appendChild(node("span", "label", perf.length === 1 ? "Performer" : "Performers"));
      perf.forEach(function (p) {
        var who = node("span", "who", String(p)), st = stats[String(p)];
        // Their share of the final code and their runs, small beside the name.
        if (st && typeof st === "object") {
          var line = node("span", "stats", Math.round((Number(st.share) || 0) * 100) + "% · " +
            count(st.evaluations, "run", "runs") + " · " + count(st.typed, "char typed", "chars typed"));
          line.title = count(st.deleted, "character", "characters") + " deleted, active " + (Number(st.active_s) || 0) + " s";
          who.appendChild(line);
        }
        pp.appendChild(who);
      });
    } else {
      pp.appendChild(node("span", "label", "No performers recorded"));
    }
    li.appendChild(pp);

    li.appendChild(node("p", "counts", [
      count(s.operations, "edit", "edits"), count(s.evaluations, "evaluation", "evaluations"),
      size(num(s.bytes) || 0) + " recorded"
    ].join(" · ")));
    if (s.truncated) {
      li.appendChild(node("p", "truncated", "Not all of it was recorded (the archive's size limit or a busy hub): the replay may jump."));
    }

    var actions = node("div", "actions");
    var replay = node("a", "button replay", "Replay");
    replay.href = "a/" + encodeURIComponent(id);
    var remember = function () {
      try { sessionStorage.setItem(TOKEN_KEY + id, asked.token); } catch (e) { /* the replay asks */ }
    };
    replay.addEventListener("click", remember);
    replay.addEventListener("auxclick", remember);
    actions.appendChild(replay);
    var err = node("p", "action-error");
    err.setAttribute("role", "alert");
    var date = utcDate(started);
    // A button that downloads .../PATH as NAME-DATE+SUFFIX (or the name the hub gives).
    function downloadButton(cls, label, path, suffix, title) {
      var b = node("button", "button " + cls, label);
      b.type = "button";
      if (title) b.title = title;
      b.addEventListener("click", function () { download(id, path, name + (date ? "-" + date : "") + suffix, b, err); });
      actions.appendChild(b);
    }
    downloadButton("download-code", "Download code", "/code", ".txt");
    downloadButton("download-timeline", "Download timeline (JSON lines)", "/timeline", "-timeline.jsonl");
    downloadButton("download-file", "Keep as one file (HTML)", "/replay.html", ".html",
      "The replay with the whole performance inside: it plays from disk in any browser, offline");
    downloadButton("download-evaluations", "Evaluations (text)", "/evaluations.txt", "-evaluations.txt");
    var shareButton = node("button", "button share", "Share the replay");
    shareButton.type = "button";
    var shared = node("div", "shared");
    shared.hidden = true;
    shareButton.addEventListener("click", function () { shareReplay(id, shareButton, shared, err); });
    actions.appendChild(shareButton);
    li.appendChild(actions);
    li.appendChild(shared);
    li.appendChild(err);
    return li;
  }

  // A link to the replay that opens without the password (7 days), with its QR code.
  function shareReplay(id, button, shared, err) {
    if (!asked) return;
    button.disabled = true;
    err.textContent = "";
    fetch("api/v1/archive/" + encodeURIComponent(id) + "/links", {
      method: "POST", cache: "no-store", credentials: "same-origin",
      headers: { "X-Archive-Token": asked.token, "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ expires_in: "7d", base: new URL(".", location.href).href })
    }).then(function (r) {
      if (!r.ok) return errorOf(r).then(function (text) { throw new Error(sentence(r, text)); });
      return r.json();
    }).then(function (made) {
      var url = node("input", "share-url");
      url.type = "text";
      url.readOnly = true;
      url.value = String(made.url || "");
      url.setAttribute("aria-label", "A link to this replay, for 7 days");
      var qr = node("img", "qr");
      qr.alt = "The link as a QR code";
      qr.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(String(made.qr_svg || ""));
      var note = node("p", "hint", "Anyone with this link can replay it, without the password, for 7 days.");
      shared.replaceChildren(url, note, qr);
      shared.hidden = false;
      hook.lastShare = made.url;
    }).catch(function (e) {
      err.textContent = e instanceof TypeError ? "The hub could not be reached. Try again in a moment."
        : (e && e.message ? e.message : String(e));
    }).then(function () { button.disabled = false; });
  }

  // ---- downloads --------------------------------------------------------------------------
  function cleanName(n) {
    n = String(n).replace(/[\/\\:*?"<>|\u0000-\u001f\u007f]/g, "_").trim();
    return n && n !== "." && n !== ".." ? n.slice(0, 200) : null;
  }

  function fileNameOf(cd) {
    if (!cd) return null;
    var m = /filename\*\s*=\s*(?:UTF-8|utf-8)''([^;]+)/.exec(cd);
    if (m) { try { return cleanName(decodeURIComponent(m[1].trim())); } catch (e) { /* fall through */ } }
    m = /filename\s*=\s*"((?:[^"\\]|\\.)*)"/i.exec(cd) || /filename\s*=\s*([^;\s]+)/i.exec(cd);
    return m ? cleanName(m[1].replace(/\\(.)/g, "$1")) : null;
  }

  function download(id, path, fallback, button, err) {
    if (!asked) return;
    var label = button.textContent;
    button.disabled = true;
    button.textContent = "Downloading…";
    err.textContent = "";
    fetch("api/v1/archive/" + encodeURIComponent(id) + path, {
      cache: "no-store", credentials: "same-origin", headers: { "X-Archive-Token": asked.token }
    }).then(function (r) {
      if (!r.ok) return errorOf(r).then(function (text) { throw new Error(sentence(r, text)); });
      var name = fileNameOf(r.headers.get("Content-Disposition")) || cleanName(fallback) || "troop.txt";
      return r.blob().then(function (blob) { save(blob, name); });
    }).catch(function (e) {
      err.textContent = e instanceof TypeError ? "The hub could not be reached. Try again in a moment."
        : (e && e.message ? e.message : String(e));
    }).then(function () {
      button.disabled = false;
      button.textContent = label;
    });
  }

  function save(blob, name) {
    var url = URL.createObjectURL(blob);
    var a = document.createElement("a");
    a.href = url;
    a.download = name;
    a.hidden = true;
    document.body.appendChild(a);
    a.click();
    hook.lastDownload = { name: name, size: blob.size, type: blob.type };
    setTimeout(function () { URL.revokeObjectURL(url); a.remove(); }, 60000);
  }

  // ---- page setup -------------------------------------------------------------------------
  var q = new URLSearchParams(location.search).get("name");
  if (q && NAME_RE.test(q)) el.name.value = q;
  (el.name.value ? el.password : el.name).focus();
})();
