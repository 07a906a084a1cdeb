// The smf grid auditioner: opens any grid from the store (/grids/<id>, /view?id=<artifact id>[&compare=<id>]).
//
// Keeps the interactions of the original svgSoundGrid (click plays a cell; drag draws an ordered path; clicking a
// path cell plays the path, one clip per inter-onset interval = clip length; shift-click appends; ctrl-click
// removes; Esc or a background click clears) and adds: gapless sequences scheduled with Web Audio, spectrogram
// thumbnails (the grid's mosaic.png used as a sprite sheet), hover read-out of dim0/dim1, keyboard navigation, two
// grids side by side, and export of a path as an RNN conditioning array (.npy, columns dim0, dim1).
//
// No framework, no build step. Tests drive it through window.__smf (lastPlayed, played, panels, exportPath).
"use strict";

const smf = (window.__smf = {
  ready: false,       // true once every panel is drawn
  panels: [],
  lastPlayed: null,   // {grid, file, url, i, j, k, at} of the most recently started clip
  played: [],         // every started clip, in start order
  errors: [],
});

// ---------------------------------------------------------------------------------------------- fetching

const api = {
  grid: (id) => `/api/grid?id=${encodeURIComponent(id)}`,
  file: (id, name) => `/api/file?id=${encodeURIComponent(id)}&name=${encodeURIComponent(name)}`,
};

async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText} for ${url}`);
  return body;
}

function setStatus(text, isError = false) {
  const el = document.getElementById("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
  if (isError) smf.errors.push(text);
}

// ---------------------------------------------------------------------------------------------- audio

// One AudioContext for the page; decoded clips are cached by URL (artifact files never change).
const audio = { ctx: null, buffers: new Map(), sources: [], timers: [], generation: 0 };

function audioContext() {
  if (!audio.ctx) audio.ctx = new AudioContext();
  if (audio.ctx.state === "suspended") audio.ctx.resume();
  return audio.ctx;
}

function loadBuffer(url) {
  if (!audio.buffers.has(url)) {
    const p = fetch(url, { credentials: "same-origin" })
      .then((r) => { if (!r.ok) throw new Error(`${r.status} for ${url}`); return r.arrayBuffer(); })
      .then((data) => audioContext().decodeAudioData(data));
    p.catch(() => audio.buffers.delete(url)); // a failed load may be retried
    audio.buffers.set(url, p);
  }
  return audio.buffers.get(url);
}

function stopPlayback() {
  audio.generation += 1;
  for (const s of audio.sources) { try { s.stop(); } catch (e) { /* already ended */ } }
  audio.sources = [];
  for (const t of audio.timers) clearTimeout(t);
  audio.timers = [];
  for (const p of smf.panels) p.markPlaying(null);
}

// Play cells back to back: clip n starts at t0 + n * ioi on the audio clock (sample-accurate, no setTimeout
// jitter); ioi = the clip length, as in svgSoundGrid. Only the highlight uses timers.
async function playSequence(panel, cells) {
  stopPlayback();
  const generation = audio.generation;
  const urls = cells.map((c) => panel.fileUrl(c));
  let buffers;
  try {
    buffers = await Promise.all(urls.map(loadBuffer));
  } catch (e) {
    setStatus(`cannot play: ${e.message}`, true);
    return;
  }
  if (generation !== audio.generation) return; // something else started meanwhile
  const ctx = audioContext();
  const ioi = buffers[0].duration;
  const t0 = ctx.currentTime + 0.05;
  cells.forEach((cell, n) => {
    const src = ctx.createBufferSource();
    src.buffer = buffers[n];
    src.connect(ctx.destination);
    const at = t0 + n * ioi;
    src.start(at);
    audio.sources.push(src);
    const entry = { grid: panel.id, file: cell.file, url: urls[n], i: cell.i, j: cell.j, k: cell.k, at };
    smf.played.push(entry);
    smf.lastPlayed = entry;
    audio.timers.push(setTimeout(() => panel.markPlaying(cell), Math.max(0, (at - ctx.currentTime) * 1000)));
  });
  document.body.dataset.lastPlayed = cells[cells.length - 1].file;
  const end = t0 + cells.length * ioi;
  audio.timers.push(setTimeout(() => panel.markPlaying(null), Math.max(0, (end - ctx.currentTime) * 1000)));
}

// ---------------------------------------------------------------------------------------------- .npy export

// NPY format version 1.0: magic, version, little-endian uint16 header length, a Python-dict header padded with
// spaces to a multiple of 64 bytes (ending in a newline), then the raw little-endian data.
function npyBytes(values, shape) {
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(", ")})`;
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': ${shapeText}, }`;
  header += " ".repeat((64 - ((10 + header.length + 1) % 64)) % 64) + "\n";
  const out = new Uint8Array(10 + header.length + values.length * 4);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0], 0); // \x93NUMPY v1.0
  const view = new DataView(out.buffer);
  view.setUint16(8, header.length, true);
  for (let n = 0; n < header.length; n++) out[10 + n] = header.charCodeAt(n);
  values.forEach((v, n) => view.setFloat32(10 + header.length + 4 * n, v, true));
  return out;
}

// A path as a conditioning array [1, N, 2] (columns dim0, dim1), N = duration * rate points. "steps" holds each
// cell for an equal share of the duration (what the sequence playback sounds like); "glide" moves linearly from
// cell to cell. The RNN stretches the N points over the duration it is asked to generate.
function pathArray(cells, { duration, rate = 100, mode = "steps" }) {
  if (!cells.length) throw new Error("draw a path first");
  if (!(duration > 0) || !(rate > 0)) throw new Error("duration and rate must be > 0");
  const n = Math.max(2, Math.round(duration * rate));
  const values = [];
  const p = cells.length;
  for (let t = 0; t < n; t++) {
    let d0, d1;
    if (mode === "glide" && p > 1) {
      const u = (t / (n - 1)) * (p - 1);
      const a = cells[Math.floor(u)], b = cells[Math.min(p - 1, Math.floor(u) + 1)], f = u - Math.floor(u);
      d0 = a.dim0 + f * (b.dim0 - a.dim0);
      d1 = a.dim1 + f * (b.dim1 - a.dim1);
    } else {
      const c = cells[Math.min(p - 1, Math.floor((t * p) / n))];
      d0 = c.dim0;
      d1 = c.dim1;
    }
    values.push(d0, d1);
  }
  return { values, shape: [1, n, 2] };
}

function download(bytes, name) {
  const url = URL.createObjectURL(new Blob([bytes], { type: "application/octet-stream" }));
  const a = Object.assign(document.createElement("a"), { href: url, download: name });
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// ---------------------------------------------------------------------------------------------- a grid panel

// Colour of cell (i, j) on an HSL disk, as svgSoundGrid: position mapped to [-0.7, 0.7]^2, hue = angle,
// saturation = radius, lightness 0.4 — neighbouring cells get similar colours.
function cellColour(i, j, d0, d1) {
  const x = -0.7 + (1.4 * j) / (d0 - 1), y = -0.7 + (1.4 * i) / (d1 - 1);
  const hue = (Math.atan2(y, x) * 180) / Math.PI;
  const sat = Math.min(1, Math.hypot(x, y)) * 100;
  return `hsl(${hue.toFixed(1)}, ${sat.toFixed(1)}%, 40%)`;
}

class Panel {
  constructor(root, doc) {
    this.doc = doc;
    this.id = doc.id;
    this.d0 = doc.d0;
    this.d1 = doc.d1;
    this.variation = 0;
    this.path = [];             // ordered list of cells
    this.cursor = { i: 0, j: 0 };
    this.clipDuration = doc.duration || 1;
    this.durationEdited = false;
    this.byKey = new Map(doc.cells.map((c) => [`${c.i},${c.j},${c.k}`, c]));
    this.elements = new Map(); // "i,j" -> cell element
    this.build(root);
  }

  cell(i, j) { return this.byKey.get(`${i},${j},${this.variation}`); }
  fileUrl(cell) { return api.file(this.id, cell.file); }

  build(root) {
    const el = (tag, props = {}, ...children) => {
      const e = Object.assign(document.createElement(tag), props);
      e.append(...children);
      return e;
    };
    const d = this.doc;
    this.root = el("section", { className: "panel" });
    this.root.dataset.grid = this.id;
    const kindNote = d.kind && d.kind !== "grid" ? ` · ${d.kind}` : "";
    this.root.append(
      el("h2", {}, this.id),
      el("div", { className: "meta" },
        `${d.model || "?"} · d0 ${d.d0} × d1 ${d.d1} · ${d.variations || 1} variation(s) · ` +
        `${(d.duration || 0).toFixed(3)} s @ ${d.sample_rate} Hz${d.interpolation ? " · " + d.interpolation : ""}` +
        kindNote));

    // d0 columns across, d1 rows down: cell width = width / d0, height = height / d1 (the original swapped them)
    const grid = el("div", { className: "grid", tabIndex: 0 });
    grid.setAttribute("role", "grid");
    grid.setAttribute("aria-label", `grid ${this.id}`);
    grid.style.gridTemplateColumns = `repeat(${this.d0}, 1fr)`;
    grid.style.gridTemplateRows = `repeat(${this.d1}, 1fr)`;
    const mosaic = d.mosaic || {};
    const tileW = mosaic.tile_width || 4, tileH = mosaic.tile_height || 3;
    const ratio = (this.d0 * tileW) / (this.d1 * tileH);
    grid.style.aspectRatio = `${this.d0 * tileW} / ${this.d1 * tileH}`;
    grid.style.width = `min(100%, calc(75vh * ${ratio.toFixed(4)}))`; // tall grids fit the window too
    const sprite = mosaic.file ? `url("${api.file(this.id, mosaic.file)}")` : "";
    for (let i = 0; i < this.d1; i++) {
      for (let j = 0; j < this.d0; j++) {
        const c = el("div", { className: "cell" });
        c.dataset.i = i;
        c.dataset.j = j;
        c.style.background = cellColour(i, j, this.d0, this.d1);
        c.style.gridRow = String(i + 1);
        c.style.gridColumn = String(j + 1);
        if (sprite) {
          // mosaic.png is d1 x d0 tiles in the same layout: show tile (i, j) scaled to the cell
          const t = el("div", { className: "thumb" });
          t.style.backgroundImage = sprite;
          t.style.backgroundSize = `${this.d0 * 100}% ${this.d1 * 100}%`;
          t.style.backgroundPosition = `${this.d0 > 1 ? (j / (this.d0 - 1)) * 100 : 0}% ` +
                                       `${this.d1 > 1 ? (i / (this.d1 - 1)) * 100 : 0}%`;
          c.append(t);
        }
        c.append(el("span", { className: "order" }));
        this.elements.set(`${i},${j}`, c);
        grid.append(c);
      }
    }
    this.grid = grid;
    this.readout = el("div", { className: "readout" }, "\u00a0");

    // export controls
    this.durationInput = el("input", { type: "number", min: "0.01", step: "0.01", value: "0", title: "seconds" });
    this.rateInput = el("input", { type: "number", min: "1", step: "1", value: "100", title: "points per second" });
    this.modeInput = el("select", {}, el("option", { value: "steps" }, "steps"),
                        el("option", { value: "glide" }, "glide"));
    this.durationInput.addEventListener("input", () => { this.durationEdited = true; });
    const exportButton = el("button", { type: "button", className: "export" }, "export path (.npy)");
    exportButton.addEventListener("click", () => this.exportDownload());
    const playButton = el("button", { type: "button", className: "play-path" }, "play path");
    playButton.addEventListener("click", () => this.playPath());
    const controls = el("div", { className: "controls" }, playButton,
      el("label", {}, "duration s ", this.durationInput), el("label", {}, "points/s ", this.rateInput),
      el("label", {}, "", this.modeInput), exportButton);
    if ((d.variations || 1) > 1) {
      const v = el("input", { type: "number", min: "0", max: String(d.variations - 1), value: "0" });
      v.addEventListener("change", () => {
        this.variation = Math.max(0, Math.min(d.variations - 1, Number(v.value) || 0));
        this.path = this.path.map((c) => this.cell(c.i, c.j));
        this.render();
      });
      controls.prepend(el("label", {}, "variation ", v));
    }
    this.root.append(grid, this.readout, controls);
    root.append(this.root);
    this.bindEvents();
    this.render();
  }

  cellAt(target) {
    const e = target && target.closest ? target.closest(".cell") : null;
    if (!e || !this.grid.contains(e)) return null;
    return this.cell(Number(e.dataset.i), Number(e.dataset.j));
  }

  bindEvents() {
    const g = this.grid;
    let down = null; // {cell, dragged}
    g.addEventListener("contextmenu", (e) => e.preventDefault());
    g.addEventListener("mousedown", (e) => {
      if (e.button !== 0) return;
      const cell = this.cellAt(e.target);
      if (!cell) return;
      e.preventDefault();
      g.focus({ preventScroll: true });
      activePanel = this;
      this.cursor = { i: cell.i, j: cell.j };
      down = { cell, dragged: false, modified: e.shiftKey || e.ctrlKey || e.metaKey };
      this.render();
    });
    g.addEventListener("mouseover", (e) => {
      const cell = this.cellAt(e.target);
      if (cell) this.showReadout(cell);
      if (!down || down.modified || !cell) return;
      const last = this.path[this.path.length - 1];
      if (!down.dragged) {
        if (cell === down.cell) return;
        down.dragged = true; // a drag starts a new path at the pressed cell
        this.path = [down.cell];
      } else if (last === cell) {
        return;
      }
      this.extendPathTo(cell);
      this.render();
    });
    g.addEventListener("mouseleave", () => { this.readout.textContent = "\u00a0"; });
    window.addEventListener("mouseup", (e) => {
      if (!down) return;
      const { cell, dragged } = down;
      down = null;
      if (dragged) return; // the path is drawn; play it by clicking one of its cells
      if (e.shiftKey) this.append(cell);
      else if (e.ctrlKey || e.metaKey) this.remove(cell);
      else if (this.path.includes(cell)) this.playPath();
      else playSequence(this, [cell]);
      this.render();
    });
    g.addEventListener("keydown", (e) => this.onKey(e));
    g.addEventListener("focus", () => { activePanel = this; });
  }

  // Append `cell`, filling the straight line of cells from the path's last cell so a fast drag leaves no gaps.
  extendPathTo(cell) {
    const last = this.path[this.path.length - 1];
    const steps = last ? Math.max(Math.abs(cell.i - last.i), Math.abs(cell.j - last.j)) : 0;
    for (let s = 1; s < steps; s++) {
      const i = Math.round(last.i + ((cell.i - last.i) * s) / steps);
      const j = Math.round(last.j + ((cell.j - last.j) * s) / steps);
      const between = this.cell(i, j);
      if (between && between !== this.path[this.path.length - 1]) this.path.push(between);
    }
    this.path.push(cell);
  }

  append(cell) { this.path.push(cell); }
  remove(cell) {
    const n = this.path.lastIndexOf(cell);
    if (n >= 0) this.path.splice(n, 1);
  }
  clear() { this.path = []; this.render(); }

  playPath() { if (this.path.length) playSequence(this, this.path.slice()); }

  onKey(e) {
    const moves = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] };
    const cur = this.cell(this.cursor.i, this.cursor.j);
    if (moves[e.key]) {
      const [di, dj] = moves[e.key];
      this.cursor = { i: Math.max(0, Math.min(this.d1 - 1, this.cursor.i + di)),
                      j: Math.max(0, Math.min(this.d0 - 1, this.cursor.j + dj)) };
      const next = this.cell(this.cursor.i, this.cursor.j);
      if (e.shiftKey) this.append(next); // shift+arrows draw a path from the keyboard
      this.showReadout(next);
    } else if (e.key === "Enter" || e.key === " ") {
      if (e.shiftKey) this.append(cur);
      else if (this.path.includes(cur)) this.playPath();
      else playSequence(this, [cur]);
    } else if (e.key === "a") this.append(cur);
    else if (e.key === "Delete" || e.key === "Backspace") this.remove(cur);
    else if (e.key === "p") this.playPath();
    else return;
    e.preventDefault();
    this.render();
  }

  showReadout(cell) {
    this.readout.textContent = `i ${cell.i}  j ${cell.j}  ·  dim0 ${cell.dim0.toFixed(3)}  ` +
                               `dim1 ${cell.dim1.toFixed(3)}  ·  ${cell.file.split("/").pop()}`;
  }

  markPlaying(cell) {
    for (const e of this.elements.values()) e.classList.remove("playing");
    if (cell) this.elements.get(`${cell.i},${cell.j}`).classList.add("playing");
  }

  render() {
    const order = new Map();
    this.path.forEach((c, n) => {
      const key = `${c.i},${c.j}`;
      order.set(key, (order.has(key) ? order.get(key) + "," : "") + (n + 1));
    });
    for (const [key, e] of this.elements) {
      e.classList.toggle("onpath", order.has(key));
      e.classList.toggle("cursor", key === `${this.cursor.i},${this.cursor.j}` && document.activeElement === this.grid);
      e.querySelector(".order").textContent = order.get(key) || "";
    }
    this.root.dataset.path = this.path.map((c) => `${c.i},${c.j}`).join(" ");
    if (!this.durationEdited) {
      this.durationInput.value = (Math.max(1, this.path.length) * this.clipDuration).toFixed(3);
    }
  }

  exportArray(options = {}) {
    const duration = options.duration ?? Number(this.durationInput.value);
    const rate = options.rate ?? Number(this.rateInput.value);
    const mode = options.mode ?? this.modeInput.value;
    const { values, shape } = pathArray(this.path, { duration, rate, mode });
    return { bytes: npyBytes(values, shape), shape, duration };
  }

  exportDownload() {
    try {
      const { bytes, duration } = this.exportArray();
      const name = `path-${this.path.length}cells-${duration}s.npy`;
      download(bytes, name);
      setStatus(`exported ${name}: play it with  smf rnn generate -m MODEL --cond ${name} --duration ${duration}`);
    } catch (e) {
      setStatus(e.message, true);
    }
  }
}

let activePanel = null;

// Export from tests and the console: base64 of the .npy bytes of panel `index`'s path.
smf.exportPath = (index = 0, options = {}) => {
  const { bytes } = smf.panels[index].exportArray(options);
  let s = "";
  bytes.forEach((b) => { s += String.fromCharCode(b); });
  return btoa(s);
};
smf.npyBytes = npyBytes;
smf.pathArray = pathArray;

// ---------------------------------------------------------------------------------------------- page

document.addEventListener("keydown", (e) => {
  if (e.key === "Escape") {
    stopPlayback();
    for (const p of smf.panels) p.clear();
  }
});
// a click on the page background (not a cell, not a control) clears the paths, as in svgSoundGrid
document.addEventListener("mousedown", (e) => {
  if (e.button === 0 && !e.target.closest(".cell, .controls, a, input, select, button")) {
    for (const p of smf.panels) p.clear();
  }
});

function gridIdFromLocation() {
  const params = new URLSearchParams(location.search);
  if (location.pathname.startsWith("/grids/")) return decodeURIComponent(location.pathname.slice(1));
  return params.get("id");
}

async function showList() {
  document.getElementById("list").hidden = false;
  const ul = document.getElementById("grid-list");
  const { grids } = await getJSON("/api/grids");
  if (!grids.length) ul.append(Object.assign(document.createElement("li"), { textContent: "no grids yet" }));
  for (const g of grids) {
    const li = document.createElement("li");
    const a = Object.assign(document.createElement("a"), { href: `/${g.id}`, textContent: g.id });
    li.append(a, ` — ${g.model || "?"}, d0 ${g.d0} × d1 ${g.d1}, ${g.created_at}`);
    ul.append(li);
  }
  setStatus(`${grids.length} grid(s)`);
}

async function main() {
  const params = new URLSearchParams(location.search);
  if (params.has("token")) {
    // the server has set a cookie; keep the token out of the address bar (and of bookmarks)
    params.delete("token");
    history.replaceState(null, "", location.pathname + (params.toString() ? "?" + params : ""));
  }
  const id = gridIdFromLocation();
  try {
    if (!id) {
      await showList();
    } else {
      const ids = [id];
      const compare = params.get("compare");
      if (compare) ids.push(compare.includes("/") ? compare : `grids/${compare}`);
      const docs = await Promise.all(ids.map((g) => getJSON(api.grid(g))));
      const root = document.getElementById("panels");
      for (const doc of docs) smf.panels.push(new Panel(root, doc));
      activePanel = smf.panels[0];
      document.title = `smf · ${ids.join(" vs ")}`;
      setStatus(`${docs.map((d) => `${d.d0}×${d.d1}`).join(" | ")} — click a cell to play it`);
    }
  } catch (e) {
    setStatus(e.message, true);
  }
  smf.ready = true;
  document.body.dataset.ready = "1";
}

main();
