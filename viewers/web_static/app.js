// beatssl-edge live page: Server-Sent Events from /events (see viewers/web.py) → per-device state → canvas strips.
// Times are seconds on each device's own clock; every number shown comes from a published message unchanged.
"use strict";

const GRID_WINDOW_S = 6;      // seconds of signal in a grid strip
const FOCUS_WINDOW_S = 10;    // seconds of signal in the focus view
const KEEP_S = 16;            // signal, beats kept per device (s of device time)
const LAG_S = 0.35;           // the drawn right edge trails the newest sample by this much (hides the 100 ms ticks)
const BEAT_MARGIN_S = 3;      // a strip is at least this much wider than the beats' delay, so marks are seen
const RHYTHM_HISTORY = 10;
const GAP_FLAG_S = 10;        // a missing_seq / time_jump error flags "gap" this long (s of wall time)
const WAVE_FILL = { P: "rgba(88,166,255,0.25)", QRS: "rgba(248,81,73,0.25)", T: "rgba(63,185,80,0.25)" };

/** Decimated points of one lead: a ring of (time s, value mV); NaN values break the line at gaps. */
class Trace {
  constructor(capacity = 4096) {
    this.t = new Float64Array(capacity);
    this.v = new Float32Array(capacity);
    this.capacity = capacity;
    this.start = 0;
    this.n = 0;
  }
  push(t, v) {
    const i = (this.start + this.n) % this.capacity;
    this.t[i] = t;
    this.v[i] = v;
    if (this.n < this.capacity) this.n++;
    else this.start = (this.start + 1) % this.capacity;
  }
  lastT() { return this.n ? this.t[(this.start + this.n - 1) % this.capacity] : -Infinity; }
  dropBefore(t) {
    while (this.n && this.t[this.start] < t) { this.start = (this.start + 1) % this.capacity; this.n--; }
  }
  /** Calls fn(t, v) for the points with t in [t0, t1]. */
  each(t0, t1, fn) {
    for (let k = 0; k < this.n; k++) {
      const i = (this.start + k) % this.capacity;
      const t = this.t[i];
      if (t < t0) continue;
      if (t > t1) break;
      fn(t, this.v[i]);
    }
  }
}

/** Maps device time to the drawn right edge: advances at the device's measured rate (any replay speed), trails
 *  the newest sample by LAG_S, snaps after jumps, and freezes when the stream stops. */
class Clock {
  constructor() { this.latest = null; this.display = null; this.rate = 1; this.prevWall = null; this.prevLatest = null; }
  observe(tEnd, wall) {
    if (this.latest === null || tEnd < this.latest - 2) {
      this.latest = tEnd;
      this.display = tEnd - LAG_S;
      this.prevWall = wall;
      this.prevLatest = tEnd;
      return;
    }
    this.latest = Math.max(this.latest, tEnd);
    const dw = wall - this.prevWall;
    if (dw > 0.5) {
      const r = (this.latest - this.prevLatest) / dw;
      if (r >= 0 && r < 1000) this.rate = this.rate * 0.7 + r * 0.3;
      this.prevWall = wall;
      this.prevLatest = this.latest;
    }
  }
  advance(dtWall) {
    if (this.latest === null) return;
    this.display += dtWall * this.rate;
    const lag = this.latest - this.display;
    if (lag > 3 + LAG_S || lag < -1) this.display = this.latest - LAG_S;
    else this.display += (lag - LAG_S) * Math.min(1, dtWall * 2);
    this.display = Math.min(this.display, this.latest);
  }
}

/** Everything the page knows about one device, and its strip element. */
class Device {
  constructor(id, el) {
    this.id = id;
    this.el = el;
    this.traces = new Map();   // lead → Trace
    this.beats = [];           // beat messages, by time
    this.beatCount = 0;        // distinct beats received since the page opened
    this.rhythm = [];          // last RHYTHM_HISTORY rhythm messages
    this.status = null;
    this.errors = {};          // code → last error message
    this.gapWall = -Infinity;  // wall time of the last missing_seq / time_jump error
    this.clock = new Clock();
    this.visible = true;
    this.scale = null;         // smoothed [lo, hi] of the grid strip, mV
    this.beatDelay = 0;        // how far beat messages trail the newest sample (s; segmented beats wait for T)
  }
  /** Seconds of signal to draw: ``base``, widened so beats arriving ``beatDelay`` late still show up. */
  windowS(base) { return Math.min(KEEP_S - 1, Math.max(base, this.beatDelay + BEAT_MARGIN_S)); }
  addSamples(block, wall) {
    const n = block.data.length ? block.data[0].length : 0;
    if (!n) return;
    const tEnd = block.t0 + (n - 1) * block.dt;
    if (this.clock.latest !== null && block.t0 < this.clock.latest - 2) this.restart();
    block.leads.forEach((lead, j) => {
      let tr = this.traces.get(lead);
      if (!tr) { tr = new Trace(); this.traces.set(lead, tr); }
      if (block.t0 - tr.lastT() > 2.5 * block.dt && tr.n) tr.push(block.t0 - block.dt, NaN);
      const row = block.data[j];
      for (let k = 0; k < n; k++) tr.push(block.t0 + k * block.dt, row[k]);
      tr.dropBefore(tEnd - KEEP_S);
    });
    this.clock.observe(tEnd, wall);
  }
  restart() {  // the device's clock went back (stream restarted at an earlier t0): start its picture over
    this.traces.clear();
    this.beats = [];
    this.clock = new Clock();
  }
  addBeat(b) {
    const last = this.beats.length ? this.beats[this.beats.length - 1].time : -Infinity;
    if (b.time <= last && b.time > last - 5) return;  // already known (snapshot overlap)
    this.beats.push(b);
    this.beatCount++;
    if (this.clock.latest !== null) {
      const delay = Math.max(0, this.clock.latest - b.time);
      this.beatDelay = delay > this.beatDelay ? delay : this.beatDelay * 0.95 + delay * 0.05;
    }
    const horizon = b.time - KEEP_S;
    while (this.beats.length && this.beats[0].time < horizon) this.beats.shift();
  }
  /** A snapshot's beats replace the known ones; only those newer than the last known beat are counted. */
  replaceBeats(beats) {
    const last = this.beats.length ? this.beats[this.beats.length - 1].time : -Infinity;
    this.beatCount += beats.filter((b) => b.time > last).length;
    this.beats = beats.slice();
  }
  addRhythm(r) {
    if (this.rhythm.some((x) => x.t_end === r.t_end)) return;
    this.rhythm.push(r);
    if (this.rhythm.length > RHYTHM_HISTORY) this.rhythm.shift();
  }
  addError(e, wall) {
    this.errors[e.code] = e;
    if (e.code === "missing_seq" || e.code === "time_jump") this.gapWall = wall;
  }
  lastRhythm() { return this.rhythm.length ? this.rhythm[this.rhythm.length - 1] : null; }
  lastSegmentedBeat() {
    for (let i = this.beats.length - 1; i >= 0; i--) if (this.beats[i].intervals_ms) return this.beats[i];
    return null;
  }
  /** Heart rate shown: the last rhythm message's (60 / median RR over its window), else the last beat's. */
  heartRate() {
    for (let i = this.rhythm.length - 1; i >= 0; i--) {
      const r = this.rhythm[i];
      if (r.hr_bpm !== null && r.hr_bpm !== undefined) return { bpm: r.hr_bpm, source: "rhythm", t: r.t_end };
    }
    for (let i = this.beats.length - 1; i >= 0; i--) {
      const b = this.beats[i];
      if (b.hr_bpm !== null && b.hr_bpm !== undefined) return { bpm: b.hr_bpm, source: "beat", t: b.time };
    }
    return null;
  }
  errorCount() {
    const fromStatus = (this.status && this.status.counters && this.status.counters.errors) || {};
    const codes = new Set([...Object.keys(fromStatus), ...Object.keys(this.errors)]);
    let total = 0;
    for (const c of codes) total += Math.max(fromStatus[c] || 0, (this.errors[c] && this.errors[c].count) || 0);
    return total;
  }
  flags(wall) {
    const r = this.lastRhythm();
    const reason = r && !r.usable ? r.reason : null;
    const out = [];
    if (reason === "gap" || wall - this.gapWall < GAP_FLAG_S) out.push("gap");
    if (reason === "noise") out.push("noise");
    const off = (this.status && this.status.leads_off) || [];
    if (off.length) out.push("lead off: " + off.join(","));
    else if (reason === "lead_off") out.push("lead off");
    return out;
  }
  leads() {
    if (this.status && this.status.leads) return this.status.leads;
    return [...this.traces.keys()];
  }
}

// ------------------------------------------------------------------------------------------------ page state
const page = {
  devices: new Map(),
  nodes: {},
  lead: "auto",
  leadPreference: ["II", "MLII"],  // replaced by the server's order (edge.ecg.LEAD_PREFERENCE) with each snapshot
  focus: null,
  source: null,
  grid: document.getElementById("grid"),
  template: document.getElementById("strip-template"),
  observer: null,
  lastFrameWall: performance.now() / 1000,
};

function setText(el, text) { if (el.textContent !== text) el.textContent = text; }
function setAttr(el, name, value) { const v = String(value); if (el.getAttribute(name) !== v) el.setAttribute(name, v); }
function fmt(x, digits = 0) { return x === null || x === undefined ? "–" : Number(x).toFixed(digits); }

function device(id) {
  let d = page.devices.get(id);
  if (d) return d;
  const el = page.template.content.firstElementChild.cloneNode(true);
  el.dataset.device = id;
  el.querySelector(".name").textContent = id;
  el.addEventListener("click", () => openFocus(id));
  el.addEventListener("keydown", (ev) => { if (ev.key === "Enter") openFocus(id); });
  d = new Device(id, el);
  page.devices.set(id, d);
  const after = [...page.devices.keys()].sort().find((k) => k > id);
  page.grid.insertBefore(el, after ? page.devices.get(after).el : null);
  page.observer.observe(el);
  document.getElementById("empty").hidden = true;
  return d;
}

// ------------------------------------------------------------------------------------------------ events
function connect() {
  if (page.source) page.source.close();
  const q = new URLSearchParams({ lead: page.lead });
  if (page.focus) q.set("focus", page.focus);
  const conn = document.getElementById("conn");
  const src = new EventSource("events?" + q.toString());
  page.source = src;
  src.onopen = () => { setAttr(conn, "data-state", "open"); setText(conn, "live"); };
  src.onerror = () => { setAttr(conn, "data-state", "error"); setText(conn, "reconnecting…"); };
  src.addEventListener("snapshot", (ev) => apply(JSON.parse(ev.data), true));
  src.addEventListener("frames", (ev) => apply(JSON.parse(ev.data), false));
}

/** Drop a device the server has forgotten (silent too long, or evicted by its device cap). */
function forget(id) {
  const d = page.devices.get(id);
  if (!d) return;
  page.observer.unobserve(d.el);
  d.el.remove();
  page.devices.delete(id);
  if (page.focus === id) closeFocus();
  document.getElementById("empty").hidden = page.devices.size > 0;
}

function apply(msg, snapshot) {
  const wall = performance.now() / 1000;
  if (snapshot) {
    if (msg.lead_preference) page.leadPreference = msg.lead_preference;
    const known = new Set(msg.frames.flatMap((f) => Object.keys(f.devices)));
    for (const id of [...page.devices.keys()]) if (!known.has(id)) forget(id);
    page.nodes = {};
  }
  for (const frame of msg.frames) {
    for (const id of (frame.gone && frame.gone.devices) || []) forget(id);
    for (const n of (frame.gone && frame.gone.nodes) || []) delete page.nodes[n];
    for (const [id, upd] of Object.entries(frame.devices)) {
      const d = device(id);
      if (snapshot) d.traces.clear();  // the snapshot carries the recent signal again, maybe other leads
      for (const s of upd.status || []) d.status = s;
      for (const b of upd.samples || []) d.addSamples(b, wall);
      if (snapshot) d.replaceBeats(upd.beats || []);
      else for (const b of upd.beats || []) d.addBeat(b);
      for (const r of upd.rhythm || []) d.addRhythm(r);
      for (const e of upd.errors || []) d.addError(e, wall);
    }
    Object.assign(page.nodes, frame.nodes);
  }
  updateText(wall);
}

// ------------------------------------------------------------------------------------------------ text
function updateText(wall) {
  const allLeads = new Set();
  for (const d of page.devices.values()) {
    d.leads().forEach((l) => allLeads.add(l));
    const el = d.el;
    const st = d.status ? d.status.state : "?";
    const state = el.querySelector(".state");
    setText(state, st);
    setAttr(state, "data-state", st);
    const flags = el.querySelector(".flags");
    const fl = d.flags(wall);
    if (flags.dataset.flags !== fl.join("|")) {
      flags.dataset.flags = fl.join("|");
      flags.replaceChildren(...fl.map((f) => Object.assign(document.createElement("span"), { className: "flag", textContent: f })));
    }
    const nerr = d.errorCount();
    const errs = el.querySelector(".errors");
    setAttr(errs, "data-count", nerr);
    setText(errs, nerr ? `errors ${nerr}` : "");
    setAttr(errs, "title", Object.values(d.errors).map((e) => `${e.code} ×${e.count}: ${e.message}`).join("\n"));
    const hr = d.heartRate();
    const hrEl = el.querySelector(".hr");
    setText(hrEl, hr ? fmt(hr.bpm) : "–");
    setAttr(hrEl, "data-source", hr ? hr.source : "none");
    setAttr(hrEl, "data-t", hr ? hr.t : "");
    setAttr(hrEl, "data-bpm", hr ? hr.bpm : "");
    const sb = d.lastSegmentedBeat();
    const iv = el.querySelector(".intervals");
    const ims = sb ? sb.intervals_ms : {};
    setText(iv, `PR ${fmt(ims.PR)} · QRS ${fmt(ims.QRS)} · QTc ${fmt(ims.QTc_bazett)}`);
    setAttr(iv, "data-beat-time", sb ? sb.time : "");
    renderRhythm(d.lastRhythm(), el.querySelector(".labels"), el.querySelector(".rhythm"));
    setAttr(el, "data-beats", d.beatCount);
    const lastBeat = d.beats.length ? d.beats[d.beats.length - 1] : null;
    setAttr(el, "data-last-beat", lastBeat ? lastBeat.time : "");
  }
  updateLeadChoices(allLeads);
  const summary = document.getElementById("summary");
  setAttr(summary, "data-devices", page.devices.size);
  setText(summary, `${page.devices.size} devices`);
  setText(document.getElementById("nodes"), Object.entries(page.nodes).map(([n, h]) => {
    const p99 = h.detection_latency_s ? ` · p99 det ${fmt(h.detection_latency_s.p99 * 1000)} ms` : "";
    return `${n}: ${h.state}${h.devices !== undefined ? ` · ${h.devices} dev` : ""}${p99}`;
  }).join("   "));
  if (page.focus) updateFocusText(page.devices.get(page.focus));
}

/** Labels with their probabilities and the beat-series description of one rhythm message. */
function renderRhythm(r, labelsEl, rhythmEl) {
  const key = r ? String(r.t_end) : "";
  if (labelsEl.dataset.tEnd === key) return;
  labelsEl.dataset.tEnd = key;
  const labels = r ? r.diagnosis || [] : [];
  labelsEl.dataset.labels = labels.join(",");
  labelsEl.replaceChildren(...labels.map((name) => {
    const p = r.diagnosis_probs ? r.diagnosis_probs[name] : null;
    return Object.assign(document.createElement("span"), {
      className: "label", textContent: p === null || p === undefined ? name : `${name} ${fmt(p, 2)}`,
    });
  }));
  if (r && labels.length === 0) labelsEl.textContent = r.diagnosis_probs ? "no label" : "";
  rhythmEl.dataset.usable = r ? String(r.usable) : "";
  rhythmEl.textContent = !r ? "" : r.usable || !r.reason
    ? [r.regularity, r.rate].filter(Boolean).join(" · ")
    : `unusable: ${r.reason}` + (r.regularity ? ` · ${r.regularity}` : "");
}

function updateLeadChoices(leads) {
  const sel = document.getElementById("lead");
  const have = new Set([...sel.options].map((o) => o.value));
  for (const l of [...leads].sort()) {
    if (!have.has(l)) sel.add(new Option(l, l));
  }
}

// ------------------------------------------------------------------------------------------------ focus view
function openFocus(id) {
  page.focus = id;
  document.getElementById("focus").hidden = false;
  setText(document.getElementById("focus-title"), id);
  document.getElementById("focus").dataset.device = id;
  connect();  // the server sends all leads of the focused device
}

function closeFocus() {
  page.focus = null;
  document.getElementById("focus").hidden = true;
  connect();
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.appendChild(Object.assign(document.createElement("td"), { textContent: c }));
  return tr;
}

function updateFocusText(d) {
  if (!d) return;
  const hr = d.heartRate();
  setText(document.getElementById("focus-hr"), hr ? fmt(hr.bpm) : "");
  const r = d.lastRhythm();
  renderRhythm(r, document.createElement("div"), document.getElementById("focus-rhythm"));
  const b = d.lastSegmentedBeat() || (d.beats.length ? d.beats[d.beats.length - 1] : null);
  const rows = [];
  if (b) {
    rows.push(row(["R peak", `${fmt(b.time, 3)} s`]), row(["RR", b.rr_s ? `${fmt(b.rr_s * 1000)} ms` : "–"]));
    const iv = b.intervals_ms || {};
    for (const k of ["PR", "QRS", "QT", "QTc_bazett", "QTc_fridericia"]) rows.push(row([k, `${fmt(iv[k])} ms`]));
    for (const w of ["P", "QRS", "T"]) {
      const s = b.waves ? b.waves[w] : null;
      rows.push(row([w, s ? `${fmt(s.on, 3)}–${fmt(s.off, 3)} s` : "–"]));
    }
    rows.push(row(["quality", b.quality || "–"]), row(["latency", `${fmt(b.proc_ms, 1)} ms`]));
  }
  document.getElementById("focus-beat").replaceChildren(...rows);
  const probs = document.getElementById("focus-probs");
  probs.replaceChildren(...Object.entries((r && r.diagnosis_probs) || {}).map(([name, p]) => {
    const div = Object.assign(document.createElement("div"), { className: "prob" });
    const bar = Object.assign(document.createElement("span"), { className: "bar" + (r.diagnosis.includes(name) ? " on" : "") });
    bar.style.width = `${Math.round(p * 120)}px`;
    div.append(Object.assign(document.createElement("span"), { className: "name", textContent: name }), bar,
      Object.assign(document.createElement("span"), { textContent: fmt(p, 2) }));
    return div;
  }));
  if (!r || !r.diagnosis_probs) probs.textContent = "no classifier output";
  document.getElementById("focus-history").replaceChildren(...d.rhythm.slice().reverse().map((x) =>
    Object.assign(document.createElement("li"), {
      textContent: `${fmt(x.t_end, 1)} s: ${(x.diagnosis || []).join(", ") || "–"} · HR ${fmt(x.hr_bpm)} · ` +
        (x.usable ? `${x.regularity || ""} ${x.rate || ""}` : `unusable (${x.reason})`),
    })));
  const st = d.status || {};
  const c = st.counters || {};
  const srows = [row(["state", st.state || "?"]), row(["fs", st.fs ? `${st.fs} Hz` : "–"]),
    row(["leads", (st.leads || []).join(" ")]), row(["leads off", (st.leads_off || []).join(" ") || "none"])];
  for (const k of ["chunks", "beats", "duplicates", "reordered", "missing_chunks", "restarts"]) {
    if (c[k] !== undefined) srows.push(row([k, String(c[k])]));
  }
  for (const e of Object.values(d.errors)) srows.push(row([`error ${e.code}`, `×${e.count}`]));
  document.getElementById("focus-status").replaceChildren(...srows);
}

// ------------------------------------------------------------------------------------------------ drawing
function fitCanvas(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(canvas.clientWidth * dpr));
  const h = Math.max(1, Math.round(canvas.clientHeight * dpr));
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  return dpr;
}

/** Draws beats, wave spans and one or more leads of a device into a canvas; returns the beats drawn. */
function drawDevice(d, canvas, leads, windowS, smoothScale) {
  const dpr = fitCanvas(canvas);
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height;
  ctx.clearRect(0, 0, W, H);
  if (d.clock.display === null) return 0;
  const t1 = d.clock.display, t0 = t1 - windowS;
  const x = (t) => ((t - t0) / windowS) * W;
  ctx.strokeStyle = "#222a35";
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (let s = Math.ceil(t0); s <= t1; s++) { ctx.moveTo(x(s) + 0.5, 0); ctx.lineTo(x(s) + 0.5, H); }
  ctx.stroke();
  let marked = 0;
  for (const b of d.beats) {
    if (b.time < t0 - 1 || b.time > t1 + 1) continue;
    if (b.waves) {
      for (const [w, span] of Object.entries(b.waves)) {
        if (!span || !WAVE_FILL[w]) continue;
        ctx.fillStyle = WAVE_FILL[w];
        ctx.fillRect(x(span.on), 0, Math.max(1, x(span.off) - x(span.on)), H);
      }
    }
    if (b.time < t0 || b.time > t1) continue;
    marked++;
    ctx.fillStyle = "#f0c674";
    const bx = x(b.time);
    ctx.beginPath();
    ctx.moveTo(bx - 4 * dpr, 0); ctx.lineTo(bx + 4 * dpr, 0); ctx.lineTo(bx, 7 * dpr); ctx.closePath(); ctx.fill();
  }
  const band = H / leads.length;
  leads.forEach((lead, i) => {
    const tr = d.traces.get(lead);
    if (!tr) return;
    let lo = Infinity, hi = -Infinity;
    tr.each(t0, t1, (t, v) => { if (v < lo) lo = v; if (v > hi) hi = v; });
    if (!isFinite(lo)) return;
    if (hi - lo < 1) { const m = (hi + lo) / 2; lo = m - 0.5; hi = m + 0.5; }
    if (smoothScale) {
      d.scale = d.scale ? [d.scale[0] + (lo - d.scale[0]) * 0.05, d.scale[1] + (hi - d.scale[1]) * 0.05] : [lo, hi];
      [lo, hi] = d.scale;
    }
    const top = i * band + 8 * dpr, h = band - 12 * dpr;
    const y = (v) => top + (1 - (v - lo) / (hi - lo)) * h;
    ctx.strokeStyle = "#7ee787";
    ctx.lineWidth = 1.2 * dpr;
    ctx.beginPath();
    let pen = false;
    tr.each(t0 - 0.05, t1, (t, v) => {
      if (Number.isNaN(v)) { pen = false; return; }
      if (pen) ctx.lineTo(x(t), y(v)); else { ctx.moveTo(x(t), y(v)); pen = true; }
    });
    ctx.stroke();
    ctx.fillStyle = "#8b949e";
    ctx.font = `${11 * dpr}px system-ui, sans-serif`;
    ctx.fillText(lead, 4 * dpr, top + 10 * dpr);
  });
  return marked;
}

function gridLead(d) {
  const have = [...d.traces.keys()];
  for (const l of [page.lead, ...page.leadPreference]) if (have.includes(l)) return l;
  return have[0];
}

function frame(nowMs) {
  const wall = nowMs / 1000;
  const dt = Math.min(0.25, Math.max(0, wall - page.lastFrameWall));
  page.lastFrameWall = wall;
  const focused = page.focus ? page.devices.get(page.focus) : null;
  for (const d of page.devices.values()) {
    d.clock.advance(dt);
    if (focused || !d.visible) continue;  // the focus view covers the grid; off-screen strips are not drawn
    const lead = gridLead(d);
    const marked = lead ? drawDevice(d, d.el.querySelector("canvas"), [lead], d.windowS(GRID_WINDOW_S), true) : 0;
    setAttr(d.el, "data-marked", marked);
    setAttr(d.el, "data-lead", lead || "");
  }
  if (focused) {
    const leads = focused.leads().filter((l) => focused.traces.has(l));
    const marked = drawDevice(focused, document.getElementById("focus-canvas"), leads.length ? leads : [...focused.traces.keys()],
      focused.windowS(FOCUS_WINDOW_S), false);
    setAttr(document.getElementById("focus"), "data-marked", marked);
  }
  requestAnimationFrame(frame);
}

// ------------------------------------------------------------------------------------------------ start
page.observer = new IntersectionObserver((entries) => {
  for (const e of entries) {
    const d = page.devices.get(e.target.dataset.device);
    if (d) d.visible = e.isIntersecting;
  }
});
document.getElementById("lead").addEventListener("change", (ev) => { page.lead = ev.target.value; connect(); });
document.getElementById("focus-close").addEventListener("click", closeFocus);
document.addEventListener("keydown", (ev) => { if (ev.key === "Escape" && page.focus) closeFocus(); });
setInterval(() => updateText(performance.now() / 1000), 1000);  // flags that expire with time
connect();
requestAnimationFrame(frame);
