// owner.js: the session owner's page (owner.html). With the session's password (kept in this
// page's memory only, sent in X-Session-Password as utf-8''<percent-encoded> so it may have
// any characters) it shows who plays with their statistics (refreshed every few seconds),
// removes a performer, locks or unlocks the session, and makes, lists and revokes share links,
// each shown with its QR code. Wire data only ever goes into the page through textContent and
// attributes, never innerHTML.
(function () {
  "use strict";

  var REFRESH_MS = 4000;
  function $(id) { return document.getElementById(id); }
  var el = {
    body: document.body, session: $("session"), lockState: $("lock-state"), form: $("password-form"),
    password: $("password"), passwordError: $("password-error"), panel: $("panel"), rows: $("performer-rows"),
    nobody: $("nobody"), reason: $("reason"), lock: $("lock"), expires: $("expires"), stage: $("stage"),
    transparent: $("transparent"), make: $("make"), made: $("made"), madeUrl: $("made-url"), copy: $("copy"),
    qr: $("qr"), links: $("links"), error: $("error")
  };

  var parts = location.pathname.split("/");
  var name = "";
  try { name = decodeURIComponent(parts[parts.length - 2] || ""); } catch (e) { name = ""; }
  var password = null;
  var locked = false;
  var timer = 0;
  var owner = window.troopOwner = { state: "password", performers: [], links: [], lastLink: null, locked: false };

  function api(path, method, body) {
    var headers = { Accept: "application/json", "X-Session-Password": "utf-8''" + encodeURIComponent(password || "") };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    return fetch("../../api/v1/sessions/" + encodeURIComponent(name) + path, {
      method: method || "GET", cache: "no-store", credentials: "same-origin", headers: headers,
      body: body === undefined ? undefined : JSON.stringify(body)
    }).then(function (r) {
      if (r.status === 204) return null;
      return r.json().catch(function () { return {}; }).then(function (b) {
        if (r.ok) return b;
        var e = new Error(b && typeof b.error === "string" ? b.error : "HTTP " + r.status);
        e.status = r.status;
        throw e;
      });
    });
  }

  function problem(e) {
    if (e && (e.status === 403 || e.status === 429) && owner.state !== "open") return ask(e.message);
    if (e && e.status === 403) return ask("The password is no longer right: " + e.message);
    el.error.textContent = e && e.message ? e.message : String(e);
  }

  function ask(error) {
    clearTimeout(timer);
    password = null;
    owner.state = "password";
    el.body.dataset.state = "password";
    el.panel.hidden = true;
    el.form.hidden = false;
    el.passwordError.textContent = error || "";
    el.password.focus();
  }

  el.form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    if (!el.password.value) return;
    password = el.password.value;
    el.password.value = "";
    refresh(true);
  });

  // Reads the session's record (performers, statistics, lock) and the live links.
  function refresh(first) {
    clearTimeout(timer);
    return api("").then(function (info) {
      if (!info || !info.session) throw Object.assign(new Error("The hub did not give this session's record."), { status: 500 });
      if (first) {
        owner.state = "open";
        el.body.dataset.state = "open";
        el.form.hidden = true;
        el.panel.hidden = false;
      }
      el.error.textContent = "";
      drawSession(info.session);
      return api("/links").then(drawLinks);
    }).then(function () {
      timer = setTimeout(function () { refresh(false); }, REFRESH_MS);
    }, function (e) {
      if (e && e.status === 404) {
        el.error.textContent = "The session " + name + " is not running.";
        return;
      }
      problem(e);
      if (owner.state === "open") timer = setTimeout(function () { refresh(false); }, REFRESH_MS);
    });
  }

  function cell(row, text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function duration(s) {
    s = Math.max(0, Math.round(Number(s) || 0));
    return s >= 60 ? Math.floor(s / 60) + " min " + (s % 60) + " s" : s + " s";
  }

  function drawSession(s) {
    locked = owner.locked = !!s.locked;
    el.body.dataset.locked = String(locked);
    el.lockState.textContent = locked ? "locked to new performers" : "open to performers";
    el.lock.textContent = locked ? "Unlock" : "Lock to new performers";
    var stats = s.stats && typeof s.stats === "object" ? s.stats : {};
    var performers = Array.isArray(s.performers) ? s.performers : [];
    owner.performers = performers.map(function (p) { return String(p.name); });
    var frag = document.createDocumentFragment();
    performers.forEach(function (p) {
      var pname = String(p.name), st = stats[pname] || {};
      var row = document.createElement("tr");
      var who = cell(row, pname, "who");
      who.className = "who p" + (typeof p.id === "number" ? p.id % 10 : "u");
      cell(row, String(st.typed || 0), "n");
      cell(row, String(st.deleted || 0), "n");
      cell(row, String(st.evaluations || 0), "n");
      cell(row, duration(st.active_s), "n");
      cell(row, Math.round((st.share || 0) * 100) + "%", "n");
      var act = cell(row, "");
      var remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "Remove";
      remove.dataset.performer = pname;
      remove.addEventListener("click", function () { removePerformer(pname, remove); });
      act.appendChild(remove);
      frag.appendChild(row);
    });
    el.rows.replaceChildren(frag);
    el.nobody.hidden = performers.length > 0;
  }

  function removePerformer(performer, button) {
    button.disabled = true;
    var reason = el.reason.value.trim();
    api("/performers/" + encodeURIComponent(performer), "DELETE", reason ? { reason: reason } : undefined)
      .then(function () { refresh(false); }, problem)
      .then(function () { button.disabled = false; });
  }

  el.lock.addEventListener("click", function () {
    el.lock.disabled = true;
    api("/lock", "POST", { locked: !locked })
      .then(function () { return refresh(false); }, problem)
      .then(function () { el.lock.disabled = false; });
  });

  function when(unixS) {
    return new Date(unixS * 1000).toLocaleString(undefined, { weekday: "short", hour: "2-digit", minute: "2-digit" });
  }

  function drawLinks(list) {
    owner.links = Array.isArray(list) ? list : [];
    var frag = document.createDocumentFragment();
    owner.links.forEach(function (l) {
      var li = document.createElement("li");
      var text = document.createElement("span");
      text.textContent = "Link " + String(l.id).slice(0, 6) + " · works until " + when(Number(l.expires));
      var revoke = document.createElement("button");
      revoke.type = "button";
      revoke.textContent = "Revoke";
      revoke.addEventListener("click", function () {
        revoke.disabled = true;
        api("/links/" + encodeURIComponent(l.id), "DELETE").then(function () {
          if (owner.lastLink && owner.lastLink.id === l.id) el.made.hidden = true;
          return refresh(false);
        }, problem);
      });
      li.append(text, revoke);
      frag.appendChild(li);
    });
    el.links.replaceChildren(frag);
  }

  el.make.addEventListener("click", function () {
    var params = [];
    if (el.stage.checked || el.transparent.checked) params.push("stage");
    if (el.transparent.checked) params.push("bg=transparent");
    el.make.disabled = true;
    api("/links", "POST", { expires_in: el.expires.value, base: new URL("../../", location.href).href, params: params.join("&") })
      .then(function (made) {
        owner.lastLink = made;
        el.madeUrl.value = made.url;
        el.qr.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(String(made.qr_svg || ""));
        el.made.hidden = false;
        return refresh(false);
      }, problem)
      .then(function () { el.make.disabled = false; });
  });

  el.copy.addEventListener("click", function () {
    el.madeUrl.select();
    if (navigator.clipboard) navigator.clipboard.writeText(el.madeUrl.value).catch(function () { /* selected: Ctrl+C */ });
  });

  el.session.textContent = name;
  $("username").value = name;
  $("watch-link").href = "../" + encodeURIComponent(name);
  document.title = name + " · Troop session owner";
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(name)) {
    el.form.hidden = true;
    el.error.textContent = "That is not a session name.";
  } else {
    ask("");
  }
})();
