// render.js: the drawing shared by the live audience view (view.js) and the archive replay
// (replay.js), loaded before either as window.TroopRender: performer colour classes, the
// document as lines of author runs with cursors and selections, evaluation flashes, keeping
// the last typist's cursor in sight, centring an evaluated block (the stage view), the
// performer list with each one's share of the code, and the page parameters (?font=,
// ?stage, ?bg=transparent, ?lines=, read from the query and from after a share link's token
// in the fragment) and the full-screen setup.
// Each page keeps its own state and decides when to draw. Data is hostile: it only ever goes
// into the page through textContent and attributes, never innerHTML.
(function () {
  "use strict";

  var FLASH_MS = 600;

  // Troop colours a client by its id (id % 10), so text by someone who left before this
  // page arrived keeps its colour too; "u" is text whose author the hub never saw.
  // `colours`: id -> colour index, as the page learnt them.
  function colourOf(colours, id) {
    var c = colours.get(id);
    if (typeof c !== "number" && typeof id === "number" && id >= 0) c = id % 10;
    return typeof c === "number" && c >= 0 && c <= 9 ? String(Math.floor(c)) : "u";
  }

  // The lines (1-based, `to` excluded) an evaluation flashes: the block start..end, or the
  // line of the author's cursor when it is not a block.
  function flashLines(doc, author, block, start, end) {
    if (!block) {
      var from = doc.lineOf(doc.marks.has(author) ? doc.marks.get(author) : 0);
      return { from: from, to: from + 1 };
    }
    return { from: start, to: end > start ? end : start + 1 };
  }

  // The performer list in the top bar: performers is a Map id -> {id, name}; shares (if
  // given) a Map id -> the part of the code they wrote (0..1), drawn small beside the name.
  function drawPerformers(listEl, performers, colour, shares) {
    var frag = document.createDocumentFragment();
    performers.forEach(function (p) {
      var li = document.createElement("li");
      li.className = "p" + colour(p.id);
      li.dataset.id = String(p.id);
      li.textContent = p.name;
      if (shares) {
        var share = document.createElement("span");
        share.className = "share";
        share.textContent = Math.round((shares.get(p.id) || 0) * 100) + "%";
        share.title = "Share of the code " + p.name + " wrote";
        li.appendChild(share);
      }
      frag.appendChild(li);
    });
    listEl.replaceChildren(frag);
  }

  // Each author's part of a TroopDoc's characters (a Map id -> 0..1), as Troop's own client
  // charts it; text whose author is unknown counts in the whole but for nobody.
  function shares(doc) {
    var counts = new Map(), n = doc.authors.length;
    for (var i = 0; i < n; i++) {
      var a = doc.authors[i];
      if (a !== null && a !== undefined) counts.set(a, (counts.get(a) || 0) + 1);
    }
    var out = new Map();
    counts.forEach(function (c, id) { out.set(id, n ? c / n : 0); });
    return out;
  }

  // One page's document view. opts: docEl (the <pre>), editor (its scrolling box), colour
  // (id -> colour class), schedule (asks the page for a redraw), altRestart (restart a flash
  // on a flashing line by toggling data-alt, as replay.css styles it, instead of a reflow).
  function Lines(opts) {
    this.docEl = opts.docEl;
    this.editor = opts.editor;
    this.colour = opts.colour;
    this.schedule = opts.schedule;
    this.altRestart = !!opts.altRestart;
    this.lineEls = [];
    this.digits = 0;
    this.flashes = [];            // {from, to (1-based lines, to excluded), colour, until, id}
    this.flashIds = 0;
    this.flashTimer = 0;
    this.followId = null;
    this.userScrolledAt = -1e9;
    var self = this;
    ["wheel", "touchmove", "keydown", "mousedown"].forEach(function (t) {
      self.editor.addEventListener(t, function () { self.userScrolledAt = Date.now(); }, { passive: true });
    });
  }

  // Splits the document into lines of segments {cls, text} and cursors {cur: performer}, and
  // rebuilds only the line elements whose content changed. Only connected performers (the Map
  // id -> {id, name}) show their cursors and selections.
  Lines.prototype.drawDoc = function (doc, performers) {
    var colour = this.colour;
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
    doc.selections.forEach(function (s, id) { if (performers.has(id)) sels.push({ s: s, cls: " s" + colour(id) }); });

    var lines = [], line = [], seg = null;
    for (var i = 0; i <= n; i++) {
      var here = cursorsAt.get(i);
      if (here) {
        here.forEach(function (p) { line.push({ cur: p }); });
        seg = null;
      }
      if (i === n) break;
      var cls = "t p" + colour(authors[i]);
      for (var k = 0; k < sels.length; k++) if (i >= sels[k].s.start && i < sels[k].s.end) cls += sels[k].cls;
      var ch = chars[i];
      if (seg && seg.cls === cls) seg.text += ch;
      else { seg = { cls: cls, text: ch }; line.push(seg); }
      if (ch === "\n") { lines.push(line); line = []; seg = null; }
    }
    lines.push(line);

    var digits = String(lines.length).length;
    if (digits !== this.digits) {
      this.digits = digits;
      this.docEl.style.setProperty("--gw", (Math.max(digits, 2) + 0.5) + "ch");
    }
    var lineEls = this.lineEls;
    for (var l = 0; l < lines.length; l++) {
      var key = this.lineKey(lines[l]);
      var le = lineEls[l];
      if (!le) {
        le = lineEls[l] = document.createElement("span");
        le.className = "line";
        le.dataset.n = String(l + 1);
        le._key = null;
        this.docEl.appendChild(le);
      }
      if (le._key !== key) { le._key = key; le.replaceChildren(this.buildLine(lines[l])); }
    }
    while (lineEls.length > lines.length) lineEls.pop().remove();
  };

  Lines.prototype.lineKey = function (line) {
    var parts = [];
    for (var i = 0; i < line.length; i++) {
      var x = line[i];
      parts.push(x.cur ? "\u0001" + x.cur.id + "\u0002" + x.cur.name + "\u0002" + this.colour(x.cur.id) : x.cls + "\u0002" + x.text);
    }
    return parts.join("\u0003");
  };

  Lines.prototype.buildLine = function (line) {
    var frag = document.createDocumentFragment(), colour = this.colour;
    line.forEach(function (x) {
      var s = document.createElement("span");
      if (x.cur) {
        s.className = "cur p" + colour(x.cur.id);
        s.dataset.name = x.cur.name;
        // The name is drawn by CSS; assistive technology reads it from here.
        s.setAttribute("role", "img");
        s.setAttribute("aria-label", x.cur.name + "'s cursor");
        s.dataset.id = String(x.cur.id);
      } else {
        s.className = x.cls;
        s.textContent = x.text;
      }
      frag.appendChild(s);
    });
    return frag;
  };

  // Flashes lines from..to (1-based, to excluded) in the author's colour for FLASH_MS.
  Lines.prototype.flash = function (from, to, author) {
    var self = this;
    var f = { from: from, to: to, colour: this.colour(author), until: Date.now() + FLASH_MS, id: ++this.flashIds };
    this.flashes.push(f);
    setTimeout(function () {
      self.flashes = self.flashes.filter(function (x) { return x !== f; });
      self.schedule();
    }, FLASH_MS + 20);
  };

  Lines.prototype.clearFlashes = function () { this.flashes = []; };

  Lines.prototype.drawFlashes = function () {
    var now = Date.now(), lineEls = this.lineEls;
    var flashes = this.flashes = this.flashes.filter(function (f) { return f.until > now; });
    for (var l = 0; l < lineEls.length; l++) {
      var le = lineEls[l], want = null;
      for (var k = flashes.length - 1; k >= 0; k--) {
        if (l + 1 >= flashes[k].from && l + 1 < flashes[k].to) { want = flashes[k]; break; }
      }
      var fid = want ? want.id : 0;
      if (le._flash === fid) continue;
      var had = !!le._flash;
      le._flash = fid;
      if (this.altRestart) {
        if (want) {
          le.className = "line f" + want.colour;
          le.dataset.flash = want.colour;
          // A new flash on a flashing line: the other (identical) animation name restarts it,
          // without forcing a layout as reading offsetWidth would.
          if (had) le.toggleAttribute("data-alt");
        } else {
          le.className = "line";
          le.removeAttribute("data-flash");
          le.removeAttribute("data-alt");
        }
      } else {
        le.className = "line";
        le.removeAttribute("data-flash");
        if (want) {
          void le.offsetWidth;   // restart the animation
          le.className = "line f" + want.colour;
          le.dataset.flash = want.colour;
        }
      }
    }
    clearTimeout(this.flashTimer);
    if (flashes.length) this.flashTimer = setTimeout(this.schedule, Math.max(16, flashes[0].until - now));
  };

  // Asks the next follow() to bring this performer's cursor into sight.
  Lines.prototype.keepInSight = function (id) { this.followId = id; };

  // Keeps the cursor of whoever typed last in sight, unless the reader scrolled lately.
  Lines.prototype.follow = function () {
    if (this.followId === null) return;
    var id = this.followId;
    this.followId = null;
    if (Date.now() - this.userScrolledAt < 4000) return;
    var cur = this.docEl.querySelector('.cur[data-id="' + String(id).replace(/[^0-9A-Za-z_-]/g, "") + '"]');
    if (!cur) return;
    var editor = this.editor;
    var r = cur.getBoundingClientRect(), box = editor.getBoundingClientRect();
    var margin = r.height * 2;
    if (r.top < box.top + margin) editor.scrollTop -= box.top + margin - r.top;
    else if (r.bottom > box.bottom - margin) editor.scrollTop += r.bottom - (box.bottom - margin);
    if (r.left < box.left + margin * 3) editor.scrollLeft -= box.left + margin * 3 - r.left;
    else if (r.right > box.right - margin) editor.scrollLeft += r.right - (box.right - margin);
  };

  // Centres lines from..to (1-based, to excluded) in the editor: the stage view follows each
  // evaluation this way, whoever scrolled.
  Lines.prototype.centre = function (from, to) {
    var first = this.lineEls[Math.max(0, from - 1)], last = this.lineEls[Math.max(0, Math.min(to - 1, this.lineEls.length) - 1)];
    if (!first) return;
    last = last || first;
    var editor = this.editor, box = editor.getBoundingClientRect();
    var top = first.getBoundingClientRect().top, bottom = last.getBoundingClientRect().bottom;
    var middle = (top + bottom) / 2 - box.top;
    var target = editor.scrollTop + middle - editor.clientHeight / 2;
    if (bottom - top > editor.clientHeight) target = editor.scrollTop + top - box.top - editor.clientHeight * 0.1;
    var smooth = !matchMedia("(prefers-reduced-motion: reduce)").matches;
    editor.scrollTo({ top: Math.max(0, target), left: 0, behavior: smooth ? "smooth" : "auto" });
  };

  // The page's parameters: the query's, then those after a share link's token in the
  // fragment (#share=TOKEN&stage&bg=transparent), which win.
  function params() {
    var p = new URLSearchParams(location.search);
    var hash = location.hash.replace(/^#/, "");
    new URLSearchParams(hash).forEach(function (v, k) { p.set(k, v); });
    return p;
  }

  // A share link's token, if the page was opened with one (the fragment never reaches the hub).
  function shareToken() {
    var t = params().get("share");
    return t && /^[0-9a-f]{16,128}$/.test(t) ? t : null;
  }

  // The stage view (?stage): the code alone, large, for a projector or a stream; with
  // ?bg=transparent for an OBS browser source, ?lines=N to fit N lines on the screen.
  // Returns whether the page is on stage.
  function stageFromQuery() {
    var p = params(), root = document.documentElement;
    if (!p.has("stage")) return false;
    root.classList.add("stage");
    if (p.get("bg") === "transparent") root.classList.add("transparent");
    var lines = Number(p.get("lines"));
    if (p.get("lines") && isFinite(lines) && lines >= 5 && lines <= 200 && !p.get("font")) {
      var fit = function () {
        var px = Math.max(8, Math.min(160, window.innerHeight / (lines * 1.45)));
        root.style.setProperty("--font", px.toFixed(2) + "px");
      };
      fit();
      window.addEventListener("resize", fit);
    }
    return true;
  }

  // ?font=N (8 to 96 px; 160 on stage) sets the code's size.
  function fontFromQuery() {
    var v = params().get("font");
    if (v === null || v === "" || !isFinite(Number(v))) return;
    var max = document.documentElement.classList.contains("stage") ? 160 : 96;
    var px = Math.min(max, Math.max(8, Number(v)));
    document.documentElement.style.setProperty("--font", px + "px");
  }

  // Shows the full-screen button, which puts `target` full screen, where the browser can.
  function setUpFullscreen(button, target) {
    if (!document.fullscreenEnabled || !target.requestFullscreen) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      if (document.fullscreenElement) document.exitFullscreen();
      else target.requestFullscreen().catch(function () { /* refused: stay as we are */ });
    });
    document.addEventListener("fullscreenchange", function () {
      button.textContent = document.fullscreenElement ? "Exit full screen" : "Full screen";
    });
  }

  window.TroopRender = {
    FLASH_MS: FLASH_MS,
    colourOf: colourOf,
    flashLines: flashLines,
    drawPerformers: drawPerformers,
    shares: shares,
    Lines: Lines,
    params: params,
    shareToken: shareToken,
    stageFromQuery: stageFromQuery,
    fontFromQuery: fontFromQuery,
    setUpFullscreen: setUpFullscreen
  };
})();
