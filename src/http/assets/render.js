// render.js: the drawing shared by the live audience view (view.js) and the archive replay
// (replay.js), loaded before either as window.TroopRender: performer colour classes, the
// document as lines of author runs with cursors and selections, evaluation flashes, keeping
// the last typist's cursor in sight, the performer list, and the ?font= / full-screen setup.
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

  // The performer list in the top bar: performers is a Map id -> {id, name}.
  function drawPerformers(listEl, performers, colour) {
    var frag = document.createDocumentFragment();
    performers.forEach(function (p) {
      var li = document.createElement("li");
      li.className = "p" + colour(p.id);
      li.dataset.id = String(p.id);
      li.textContent = p.name;
      frag.appendChild(li);
    });
    listEl.replaceChildren(frag);
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

  // ?font=N (8 to 96 px) sets the code's size.
  function fontFromQuery() {
    var v = new URLSearchParams(location.search).get("font");
    if (v === null || v === "" || !isFinite(Number(v))) return;
    var px = Math.min(96, Math.max(8, Number(v)));
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
    Lines: Lines,
    fontFromQuery: fontFromQuery,
    setUpFullscreen: setUpFullscreen
  };
})();
