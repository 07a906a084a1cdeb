// The live panel: a 2-D pad (x = dim0, y = dim1, as the cells are laid out) and a slider per param drive an RNN
// played by the rnn service's Play stream; the auditioner bridges it (GET /live/<id>/audio, POST .../knobs, see
// services/grid/live.py) and an AudioWorklet (worklet.js) plays it from a bounded buffer.
//
// window.__smf.live records what a test (or a curious user, in the console) wants: frames the page and the worklet
// received, underruns, and the knob-to-sound latency of each move: from the pad or slider event to the first block
// generated with the new values reaching the page (blocks carry the knob revision they were made with).
"use strict";

const live = (window.__smf.live = {
  enabled: false,
  running: false,
  session: null,
  params: [],
  values: {},
  blocks: 0,
  frames: 0,          // frames the page has received from the bridge
  worklet: {},        // the worklet's own report: received, played, underruns, underrunFrames, dropped, fill
  latencies: [],      // ms, one per knob revision heard, in order
  earLatencies: [],   // the same plus the audio the worklet held then (its last report): when it is heard
  heardRev: 0,
  sentRev: 0,
  ended: null,        // why the last session ended
  errors: [],
});

const LIVE_BUFFER_S = 1.0;   // the worklet's ring: at most this much audio is held in the page
const LIVE_PREBUFFER_S = 0.1;

const state = { ctx: null, node: null, abort: null, pending: null, inFlight: false, moves: [], tagTimes: [] };

async function postJSON(url, doc) {
  const r = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(doc),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText} for ${url}`);
  return body;
}

function liveError(message) {
  live.errors.push(message);
  const el = document.getElementById("live-status");
  el.textContent = message;
  el.classList.add("error");
}

function liveStatus(message) {
  const el = document.getElementById("live-status");
  el.textContent = message;
  el.classList.remove("error");
}

// ------------------------------------------------------------------------------------------------ latency

// a block tagged `rev` means every revision up to `rev` was taken: resolve the moves it answers
function onTag(rev, t) {
  if (rev <= live.heardRev) return;
  live.heardRev = rev;
  state.tagTimes.push([rev, t]);
  if (state.tagTimes.length > 1000) state.tagTimes.shift();
  resolveMoves();
}

function resolveMoves() {
  state.moves = state.moves.filter((m) => {
    if (m.rev === null || m.rev > live.heardRev) return true;
    const hit = state.tagTimes.find(([rev]) => rev >= m.rev);
    if (hit) {
      live.latencies.push(Math.max(0, hit[1] - m.t));
      live.earLatencies.push(Math.max(0, hit[1] - m.t) + (1000 * (live.worklet.fill || 0)) / liveInfo.sample_rate);
    }
    if (live.latencies.length > 10000) { live.latencies.shift(); live.earLatencies.shift(); }
    return false;
  });
}

// ------------------------------------------------------------------------------------------------ knobs

// Moves are coalesced: one POST in flight, the latest values wait behind it; a move's time is its first event.
function moveKnobs(values, extra = {}) {
  Object.assign(live.values, values);
  if (!live.running) return;
  const t = performance.now();
  if (!state.pending) state.pending = { values: {}, t };
  Object.assign(state.pending.values, values);
  Object.assign(state.pending, extra);
  sendKnobs();
}

async function sendKnobs() {
  if (state.inFlight || !state.pending || !live.session) return;
  const { t, ...doc } = state.pending;
  state.pending = null;
  state.inFlight = true;
  const move = { rev: null, t };
  state.moves.push(move);
  try {
    const { rev } = await postJSON(`/live/${live.session}/knobs`, doc);
    move.rev = rev;
    live.sentRev = rev;
    resolveMoves();
  } catch (e) {
    state.moves = state.moves.filter((m) => m !== move);
    if (live.running) liveError(`knobs: ${e.message}`);
  } finally {
    state.inFlight = false;
  }
  if (state.pending) sendKnobs();
}

// ------------------------------------------------------------------------------------------------ audio

async function readAudio(session, signal) {
  const r = await fetch(`/live/${session}/audio`, { credentials: "same-origin", signal });
  if (!r.ok) throw new Error(((await r.json().catch(() => ({}))).error) || `${r.status} for the live audio`);
  const reader = r.body.getReader();
  let buf = new Uint8Array(0);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    const joined = new Uint8Array(buf.length + value.length);
    joined.set(buf);
    joined.set(value, buf.length);
    buf = joined;
    let off = 0;
    while (buf.length - off >= 8) {
      const view = new DataView(buf.buffer, buf.byteOffset + off, 8);
      const frames = view.getUint32(0, true);
      const rev = view.getUint32(4, true);
      if (buf.length - off < 8 + 4 * frames) break;
      const samples = new Float32Array(buf.slice(off + 8, off + 8 + 4 * frames).buffer); // a copy: aligned
      off += 8 + 4 * frames;
      const t = performance.now();
      live.blocks += 1;
      live.frames += frames;
      state.node.port.postMessage(samples, [samples.buffer]);
      onTag(rev, t);
    }
    buf = buf.slice(off);
  }
}

async function startLive() {
  if (live.running) return;
  live.ended = null;
  live.session = null;
  try {
    // the sink first: a session produces from the moment it opens, and what it makes before the page reads would
    // sit in the buffer as added latency for the whole session
    const sr = liveInfo.sample_rate;
    state.ctx = new AudioContext({ sampleRate: sr });
    if (!state.ctx.audioWorklet) throw new Error("this page needs AudioWorklet: open it over https or localhost");
    await state.ctx.audioWorklet.addModule("/static/worklet.js");
    state.node = new AudioWorkletNode(state.ctx, "smf-live-sink", {
      numberOfInputs: 0,
      outputChannelCount: [1],
      processorOptions: { capacity: Math.round(sr * LIVE_BUFFER_S), prebuffer: Math.round(sr * LIVE_PREBUFFER_S) },
    });
    state.node.port.onmessage = (e) => { live.worklet = e.data; showStats(); };
    state.node.connect(state.ctx.destination);
    if (state.ctx.state === "suspended") await state.ctx.resume();
    const info = await postJSON("/live", { values: live.values, temperature: Number(tempInput().value) });
    live.session = info.session;
    live.running = true;
    document.getElementById("live-start").textContent = "stop";
    liveStatus(`playing ${liveInfo.model} at ${sr} Hz`);
    state.abort = new AbortController();
    await readAudio(info.session, state.abort.signal);
    live.ended = live.ended || "the stream ended (max duration, idle, or the service stopped)";
  } catch (e) {
    if (e.name !== "AbortError") {
      live.ended = e.message;
      liveError(e.message);
    }
  }
  finishLive();
}

function finishLive() {
  if (state.node) state.node.port.postMessage("end");
  if (state.ctx && !live.session) state.ctx.close(); // it never played (e.g. 429: too many sessions)
  live.running = false;
  state.moves = [];
  document.getElementById("live-start").textContent = "start";
  if (!live.errors.length || live.ended) liveStatus(`stopped: ${live.ended || "by you"}`);
}

async function stopLive() {
  const session = live.session;
  live.ended = "stopped by you";
  live.running = false;
  if (state.abort) state.abort.abort();
  if (session) await postJSON(`/live/${session}/stop`, {}).catch(() => {});
  if (state.ctx) setTimeout(((ctx) => () => ctx.close())(state.ctx), 300);
}

function showStats() {
  const w = live.worklet;
  const lat = live.latencies.slice(-50).sort((a, b) => a - b);
  const p50 = lat.length ? `${lat[Math.floor(lat.length / 2)].toFixed(0)} ms` : "–";
  document.getElementById("live-stats").textContent =
    `frames ${w.received || 0} · buffered ${(1000 * (w.fill || 0) / (state.ctx ? state.ctx.sampleRate : 1)).toFixed(0)} ms` +
    ` · underruns ${w.underruns || 0} · dropped ${w.dropped || 0} · knob→page p50 ${p50}`;
}

// ------------------------------------------------------------------------------------------------ panel

let liveInfo = null;
const tempInput = () => document.getElementById("live-temperature");

function padParams(params) {
  return [params.includes("dim0") ? "dim0" : params[0], params.includes("dim1") ? "dim1" : params[1]];
}

function buildPanel(info) {
  const root = document.getElementById("live");
  document.getElementById("panels").append(root); // beside the grid panels, wrapping below them when narrow
  root.hidden = false;
  document.getElementById("live-model").textContent = info.chain ? `${info.chain} → ${info.model}` : info.model;
  const [xp, yp] = padParams(info.params);
  const pad = document.getElementById("live-pad");
  const dot = document.getElementById("live-dot");
  const sliders = document.getElementById("live-sliders");
  const inputs = {};
  for (const name of info.params) {
    live.values[name] = 0.5;
    const label = document.createElement("label");
    const input = Object.assign(document.createElement("input"), { type: "range", min: 0, max: 1, step: 0.001 });
    input.value = 0.5;
    input.dataset.param = name;
    input.addEventListener("input", () => { moveKnobs({ [name]: Number(input.value) }); place(); });
    label.append(name, input);
    sliders.append(label);
    inputs[name] = input;
  }
  const place = () => {
    dot.style.left = `${100 * (live.values[xp] ?? 0.5)}%`;
    dot.style.top = `${100 * (yp ? live.values[yp] : 0.5)}%`;
  };
  place();
  document.getElementById("live-pad-axes").textContent = `x: ${xp}${yp ? ` · y: ${yp}` : ""}`;
  const fromEvent = (e) => {
    const r = pad.getBoundingClientRect();
    const clamp = (v) => Math.min(1, Math.max(0, v));
    const values = { [xp]: clamp((e.clientX - r.left) / r.width) };
    if (yp) values[yp] = clamp((e.clientY - r.top) / r.height);
    for (const [k, v] of Object.entries(values)) inputs[k].value = v;
    moveKnobs(values);
    place();
  };
  let dragging = false;
  pad.addEventListener("pointerdown", (e) => { dragging = true; pad.setPointerCapture(e.pointerId); fromEvent(e); });
  pad.addEventListener("pointermove", (e) => { if (dragging) fromEvent(e); });
  pad.addEventListener("pointerup", () => { dragging = false; });
  tempInput().addEventListener("change", () => moveKnobs({}, { temperature: Number(tempInput().value) }));
  document.getElementById("live-start").addEventListener("click", () => (live.running ? stopLive() : startLive()));
  // over a grid, the pad shows its cells where their own dim0/dim1 put them (a dot in the cell's colour), so
  // the pad's point over a dot plays that cell's coordinates; very large grids get no dots
  const grid = window.__smf.panels[0];
  if (grid && grid.doc && grid.doc.cells && grid.doc.d0 * grid.doc.d1 <= 1024) {
    const { d0, d1 } = grid.doc;
    for (const c of grid.doc.cells) {
      if (c.k) continue;
      const mark = Object.assign(document.createElement("div"), { className: "live-cell", title: c.file });
      Object.assign(mark.style, { left: `${100 * c.dim0}%`, top: `${100 * c.dim1}%` });
      mark.style.background = cellColour(c.i, c.j, d0, d1);
      pad.insertBefore(mark, dot);
    }
    pad.classList.add("over-grid");
  }
}

async function initLive() {
  try {
    const r = await fetch("/api/live", { credentials: "same-origin" });
    liveInfo = await r.json();
    if (!r.ok || !liveInfo.enabled) return;
    live.enabled = true;
    live.params = liveInfo.params;
    // the grid panels load at the same time; the pad draws their cells once they are in
    for (let n = 0; n < 100 && !smf.ready; n++) await new Promise((ok) => setTimeout(ok, 100));
    buildPanel(liveInfo);
  } catch (e) {
    live.errors.push(`live panel: ${e.message}`);
  } finally {
    live.ready = true;
  }
}

smf.startLive = startLive;
smf.stopLive = stopLive;
initLive();
