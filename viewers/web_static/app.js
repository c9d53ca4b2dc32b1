// beatssl-edge live page: Server-Sent Events from /events (see viewers/web.py) → per-device state → canvas strips.
// Times are seconds on each device's own clock; every number shown comes from a published message unchanged.
"use strict";

const KEEP_S = 16;            // signal, beats kept per device (s of device time)
const LAG_S = 0.35;           // the drawn right edge trails the newest sample by this much (hides the 100 ms ticks)
const RHYTHM_HISTORY = 10;
const GAP_FLAG_S = 10;        // a missing_seq / time_jump error flags "gap" this long (s of wall time)
const PX_PER_MM = 96 / 25.4;  // CSS px per mm: a CSS pixel is 1/96 inch (true mm on a 96 dpi screen at 100 % zoom)
const SWEEP_MM_S = 25;        // sweep speed, mm/s
const CAL_MV = 1, CAL_S = 0.2; // calibration pulse: 1 mV for 200 ms
const TREND_S = 3600;         // HR trend: last hour of device time
const TREND_POINTS = 1800;    // one point per rhythm message (every 2 s)
const BEAT_COLOUR = { N: "#e6edf3", S: "#d2a8ff", V: "#ff9e64", F: "#79c0ff", Q: "#8b949e" };
const ALARM_RANK = { high: 3, medium: 2, low: 1 };
const CALL_NAMES = { N: "sinus / normal", SBR: "sinus brady", STACH: "sinus tachy", AFIB: "AF", AFL: "flutter",
  SVTA: "SVT", VT: "V-tach", VFL: "V-fib", B: "bigeminy", T: "trigeminy", PAUSE: "pause", ASYSTOLE: "asystole",
  PACED: "paced", NOISE: "noise" };
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
    this.alarms = null;        // last alarms message (its "active" list)
    this.truths = [];          // last two truth messages (reduced by the server): the passes in view
    this.episodes = [];        // detected episodes: {type, start, end|null} (device s)
    this.trend = [];           // [t_end s, hr_bpm] of rhythm messages, last hour
  }
  addTrend(t, hr) {
    if (this.trend.length && t <= this.trend[this.trend.length - 1][0]) {
      if (t < this.trend[this.trend.length - 1][0] - TREND_S) this.trend = [];  // clock went back: new stream
      else return;
    }
    this.trend.push([t, hr]);
    while (this.trend.length > TREND_POINTS || (this.trend.length && this.trend[0][0] < t - TREND_S)) this.trend.shift();
  }
  addTruth(m) {
    if (this.truths.some((x) => x.t0 === m.t0 && x.loop === m.loop)) return;
    this.truths.push(m);
    if (this.truths.length > 2) this.truths.shift();
  }
  addEpisode(e) {
    const open = this.episodes.find((x) => x.type === e.type && x.start === e.start);
    if (open) open.end = e.state === "end" ? e.end : open.end;
    else this.episodes.push({ type: e.type, start: e.start, end: e.state === "end" ? e.end : null });
    while (this.episodes.length > 20) this.episodes.shift();
  }
  activeAlarms() { return (this.alarms && this.alarms.active) || []; }
  alarmLevel() {
    let best = "none";
    for (const a of this.activeAlarms()) if ((ALARM_RANK[a.priority] || 0) > (ALARM_RANK[best] || 0)) best = a.priority;
    return best;
  }
  label() {
    const t = this.truths.length ? this.truths[this.truths.length - 1] : null;
    return t ? `record ${t.record}` + (t.dataset ? ` (${t.dataset})` : "") : "";
  }
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
  /** Heart rate shown: hr_bpm of the last rhythm message (60 / median RR over its window); the terminal view shows
   *  the same number. None before the first rhythm message or when it has none (never a single beat's RR). */
  heartRate() {
    const r = this.lastRhythm();
    if (r && r.hr_bpm !== null && r.hr_bpm !== undefined) return { bpm: r.hr_bpm, source: "rhythm", t: r.t_end };
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
  leadPreference: ["II", "MLII"],
  demoEngines: [],                 // engines whose manifest says metrics.demo (viewers/web.py demo_engines)
  gainMmPerMv: 10,
  reference: false,  // replaced by the server's order (edge.ecg.LEAD_PREFERENCE) with each snapshot
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
    if (msg.demo_engines) page.demoEngines = msg.demo_engines;
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
      if (snapshot && upd.trend) d.trend = upd.trend.slice();
      else for (const r of upd.rhythm || []) if (r.hr_bpm !== null && r.hr_bpm !== undefined) d.addTrend(r.t_end, r.hr_bpm);
      for (const a of upd.alarms || []) d.alarms = a;
      for (const t of upd.truth || []) d.addTruth(t);
      for (const e of upd.episodes || []) d.addEpisode(e);
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
    const r = d.lastRhythm();
    const iv = el.querySelector(".intervals");
    const ims = (r && r.median_intervals_ms) || {};
    setText(iv, `PR ${fmt(ims.PR)} · QRS ${fmt(ims.QRS)} · QT ${fmt(ims.QT)} · QTc ${fmt(ims.QTc_bazett)}`);
    setAttr(iv, "data-t", r ? r.t_end : "");
    const call = el.querySelector(".call");
    setText(call, r && r.rhythm ? `${CALL_NAMES[r.rhythm] || r.rhythm} · ${fmt(r.t_end - r.rhythm_since)} s` : "–");
    setAttr(call, "data-rhythm", r && r.rhythm ? r.rhythm : "");
    setAttr(call, "title", r && r.rhythm ? `rhythm call ${r.rhythm} since device time ${fmt(r.rhythm_since, 1)} s` : "");
    const pvc = el.querySelector(".pvc");
    setText(pvc, `PVC ${fmt(r ? r.pvc_per_min : null, 1)}/min`);
    setAttr(pvc, "data-value", r && r.pvc_per_min !== undefined && r.pvc_per_min !== null ? r.pvc_per_min : "");
    const demo = el.querySelector(".demo");
    demo.hidden = !(r && r.diagnosis_engine && page.demoEngines.includes(r.diagnosis_engine));
    setText(el.querySelector(".patient"), d.label());
    setAttr(el, "data-alarm", d.alarmLevel());
    renderRhythm(r, el.querySelector(".labels"), el.querySelector(".rhythm"));
    setAttr(el, "data-beats", d.beatCount);
    const lastBeat = d.beats.length ? d.beats[d.beats.length - 1] : null;
    setAttr(el, "data-last-beat", lastBeat ? lastBeat.time : "");
  }
  updateLeadChoices(allLeads);
  updateBanner();
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

/** The banner: every active alarm of every device, highest priority first; high ones flash until acknowledged. */
function updateBanner() {
  const items = [];
  for (const d of page.devices.values()) for (const a of d.activeAlarms()) items.push([d.id, a]);
  items.sort((x, y) => (ALARM_RANK[y[1].priority] || 0) - (ALARM_RANK[x[1].priority] || 0) || x[1].time - y[1].time);
  const banner = document.getElementById("alarm-banner");
  const key = JSON.stringify(items.map(([id, a]) => [id, a.type, a.priority, a.acknowledged]));
  if (banner.dataset.key === key) return;
  banner.dataset.key = key;
  banner.hidden = items.length === 0;
  banner.replaceChildren(...items.map(([id, a]) => {
    const el = Object.assign(document.createElement("div"), { className: "alarm" });
    Object.assign(el.dataset, { device: id, type: a.type, priority: a.priority, acked: String(!!a.acknowledged) });
    const text = Object.assign(document.createElement("span"), {
      textContent: `${id} ${a.type.toUpperCase()} (${a.priority}) since ${fmt(a.time, 1)} s`,
    });
    el.append(text);
    if (!a.acknowledged) {
      const btn = Object.assign(document.createElement("button"), { type: "button", textContent: "Acknowledge" });
      btn.addEventListener("click", () => acknowledge(id, a.type, btn));
      el.append(btn);
    }
    return el;
  }));
}

/** POST /ack: the server publishes {"v":1,"type":...} on beatssl/<device>/alarms/ack. */
async function acknowledge(device, type, btn) {
  btn.disabled = true;
  try {
    const resp = await fetch("ack", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ device, type }) });
    btn.dataset.status = String(resp.status);
    if (!resp.ok) btn.disabled = false;
  } catch (e) {
    btn.dataset.status = "error";
    btn.disabled = false;
  }
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
  const im = (r && r.median_intervals_ms) || {};
  document.getElementById("focus-intervals").replaceChildren(
    ...["PR", "QRS", "QT", "QTc_bazett", "QTc_fridericia"].map((k) => row([k, `${fmt(im[k])} ms`])),
    row(["beats", fmt(im.beats)]), row(["PVC/min", fmt(r ? r.pvc_per_min : null, 1)]),
    row(["PAC/min", fmt(r ? r.pac_per_min : null, 1)]), row(["AF burden", `${fmt(r ? r.af_burden_pct : null, 1)} %`]));
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
    rows.push(row(["class", b.class || "–"]), row(["quality", b.quality || "–"]),
      row(["latency", `${fmt(b.proc_ms, 1)} ms`]));
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

/** Draws the mm grid (1 mm minor, 5 mm major at PX_PER_MM), a 1 mV calibration pulse, detected beats coloured by
 *  class, wave spans, episodes, optionally the reference, and one or more leads at the fixed gain and 25 mm/s.
 *  Returns counts of what was drawn (beats, V and S beats, reference beats). */
function drawDevice(d, canvas, leads) {
  const dpr = fitCanvas(canvas);
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height;
  const mm = PX_PER_MM * dpr;
  const drawn = { beats: 0, V: 0, S: 0, ref: 0 };
  ctx.clearRect(0, 0, W, H);
  ctx.lineWidth = 1;
  for (const [step, colour] of [[1, "#1b2430"], [5, "#2c3a4d"]]) {
    ctx.strokeStyle = colour;
    ctx.beginPath();
    for (let k = 0; k * step * mm <= W; k++) { const x = Math.round(k * step * mm) + 0.5; ctx.moveTo(x, 0); ctx.lineTo(x, H); }
    for (let k = 0; k * step * mm <= H; k++) { const y = Math.round(k * step * mm) + 0.5; ctx.moveTo(0, y); ctx.lineTo(W, y); }
    ctx.stroke();
  }
  const calW = 10 * mm;  // the calibration pulse's box: 2 mm + 5 mm (200 ms) + 3 mm
  const pxPerS = SWEEP_MM_S * mm;
  const gain = page.gainMmPerMv * mm;  // px per mV
  const band = H / leads.length;
  ctx.strokeStyle = "#e6edf3";
  ctx.lineWidth = 1.2 * dpr;
  ctx.beginPath();
  leads.forEach((_, i) => {
    const base = i * band + band / 2 + (CAL_MV * gain) / 2;
    ctx.moveTo(1 * mm, base); ctx.lineTo(2 * mm, base); ctx.lineTo(2 * mm, base - CAL_MV * gain);
    ctx.lineTo(2 * mm + CAL_S * pxPerS, base - CAL_MV * gain); ctx.lineTo(2 * mm + CAL_S * pxPerS, base);
    ctx.lineTo(calW - mm, base);
  });
  ctx.stroke();
  if (d.clock.display === null) return drawn;
  const windowS = (W - calW) / pxPerS;
  const t1 = d.clock.display, t0 = t1 - windowS;
  const x = (t) => calW + (t - t0) * pxPerS;
  ctx.save();
  ctx.beginPath();
  ctx.rect(calW, 0, W - calW, H);
  ctx.clip();
  const spans = (list, y, colour) => {
    for (const e of list) {
      const end = e.end === null || e.end === undefined ? t1 : e.end;
      if (end < t0 || e.start > t1) continue;
      ctx.fillStyle = colour;
      ctx.fillRect(x(e.start), y, Math.max(2, x(end) - x(e.start)), 4 * dpr);
      ctx.font = `${10 * dpr}px system-ui, sans-serif`;
      ctx.fillText(e.type, Math.max(calW, x(e.start)) + 2 * dpr, y + 13 * dpr);
    }
  };
  spans(d.episodes, 10 * dpr, "#ffa657");
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
    drawn.beats++;
    if (b.class === "V" || b.class === "S") drawn[b.class]++;
    ctx.fillStyle = BEAT_COLOUR[b.class] || BEAT_COLOUR.N;
    const bx = x(b.time);
    ctx.beginPath();
    ctx.moveTo(bx - 4 * dpr, 0); ctx.lineTo(bx + 4 * dpr, 0); ctx.lineTo(bx, 7 * dpr); ctx.closePath(); ctx.fill();
    if (b.class && b.class !== "N") {
      ctx.font = `bold ${10 * dpr}px system-ui, sans-serif`;
      ctx.fillText(b.class, bx + 5 * dpr, 9 * dpr);
    }
  }
  if (page.reference) {
    for (const t of d.truths) {
      const times = (t.beats && t.beats.time) || [], symbols = (t.beats && t.beats.symbol) || [];
      for (let k = 0; k < times.length; k++) {
        if (times[k] < t0 || times[k] > t1) continue;
        drawn.ref++;
        const bx = x(times[k]);
        ctx.fillStyle = symbols[k] === "N" ? "#8b949e" : "#ff9e64";
        ctx.fillRect(bx - 0.5 * dpr, H - 8 * dpr, 1.5 * dpr, 8 * dpr);
        ctx.font = `${9 * dpr}px system-ui, sans-serif`;
        if (symbols[k] !== "N") ctx.fillText(symbols[k], bx + 2 * dpr, H - 10 * dpr);
      }
      spans(t.episodes || [], H - 26 * dpr, "#79c0ff");
    }
  }
  leads.forEach((lead, i) => {
    const tr = d.traces.get(lead);
    if (!tr) return;
    const vals = [];
    tr.each(t0, t1, (t, v) => { if (!Number.isNaN(v)) vals.push(v); });
    if (!vals.length) return;
    vals.sort((p, q) => p - q);
    const baseline = vals[Math.floor(vals.length / 2)];  // median of the window: the trace sits on its band's centre
    const mid = i * band + band / 2;
    const y = (v) => mid - (v - baseline) * gain;
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
    ctx.fillText(lead, calW + 4 * dpr, i * band + 22 * dpr);
  });
  ctx.restore();
  return drawn;
}

/** The HR trend sparkline: rhythm messages' hr_bpm over the last hour of device time. */
function drawTrend(d, canvas) {
  const dpr = fitCanvas(canvas);
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height;
  ctx.clearRect(0, 0, W, H);
  if (d.trend.length < 2) return;
  const tEnd = d.trend[d.trend.length - 1][0];
  let lo = Infinity, hi = -Infinity;
  for (const [, hr] of d.trend) { lo = Math.min(lo, hr); hi = Math.max(hi, hr); }
  lo = Math.floor(lo / 10) * 10 - 5; hi = Math.ceil(hi / 10) * 10 + 5;
  const x = (t) => W - ((tEnd - t) / TREND_S) * W;
  const y = (hr) => H - 2 * dpr - ((hr - lo) / (hi - lo)) * (H - 4 * dpr);
  ctx.strokeStyle = "#3fe07a";
  ctx.lineWidth = 1.2 * dpr;
  ctx.beginPath();
  d.trend.forEach(([t, hr], k) => { if (k) ctx.lineTo(x(t), y(hr)); else ctx.moveTo(x(t), y(hr)); });
  ctx.stroke();
  ctx.fillStyle = "#8b949e";
  ctx.font = `${9 * dpr}px system-ui, sans-serif`;
  ctx.fillText(`${hi}`, 1, 9 * dpr);
  ctx.fillText(`${lo} · 1 h`, 1, H - 1);
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
    const drawn = lead ? drawDevice(d, d.el.querySelector("canvas.wave"), [lead]) : { beats: 0, V: 0, S: 0, ref: 0 };
    drawTrend(d, d.el.querySelector("canvas.trend"));
    setAttr(d.el, "data-marked", drawn.beats);
    setAttr(d.el, "data-marked-v", drawn.V);
    setAttr(d.el, "data-marked-s", drawn.S);
    setAttr(d.el, "data-ref-marked", drawn.ref);
    setAttr(d.el, "data-trend", d.trend.length);
    setAttr(d.el, "data-lead", lead || "");
  }
  if (focused) {
    const leads = focused.leads().filter((l) => focused.traces.has(l));
    const drawn = drawDevice(focused, document.getElementById("focus-canvas"), leads.length ? leads : [...focused.traces.keys()]);
    setAttr(document.getElementById("focus"), "data-marked", drawn.beats);
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
document.getElementById("gain").addEventListener("change", (ev) => {
  page.gainMmPerMv = Number(ev.target.value);
  setText(document.getElementById("scale"), `${SWEEP_MM_S} mm/s · ${page.gainMmPerMv} mm/mV · grid 1 mm / 5 mm`);
});
document.getElementById("reference").addEventListener("change", (ev) => { page.reference = ev.target.checked; });
document.getElementById("focus-close").addEventListener("click", closeFocus);
document.addEventListener("keydown", (ev) => { if (ev.key === "Escape" && page.focus) closeFocus(); });
setInterval(() => updateText(performance.now() / 1000), 1000);  // flags that expire with time
connect();
requestAnimationFrame(frame);
