// citysignal command center: plain JS, no dependencies. Data: REST under /api, live frames on /api/ws (1 Hz).
// Every text from the server goes into the page through textContent (never innerHTML).
"use strict";

const TOKEN_KEY = "citysignal-token";
const MAX_LOG_ROWS = 300;
const MAX_SAMPLES = 360;

const S = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  me: null, info: null, geo: null, frame: null,
  selected: "", detail: null, detailBusy: false,
  samples: [], sampleKeys: new Set(), lastKpiId: 0, kpiBusy: false,
  events: [], lastEventId: 0, eventsBusy: false,
  ws: null, wsRetry: 0,
  view: { cx: 0, cy: 0, scale: 1, fitted: false },
  lanesDrawn: 0,
  race: null, racePolling: false,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function toast(message, bad) {
  const t = $("toast");
  t.textContent = message;
  t.className = "show" + (bad ? " bad" : "");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.className = ""; }, 4500);
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options) {
  const opts = Object.assign({ headers: {} }, options || {});
  if (S.token) opts.headers["Authorization"] = "Bearer " + S.token;
  if (opts.body) opts.headers["Content-Type"] = "application/json";
  const res = await fetch(path, opts);
  if (!res.ok) {
    let msg = res.statusText;
    try {
      const body = await res.json();
      msg = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (_) { /* keep statusText */ }
    throw new ApiError(res.status, msg);
  }
  return res.json();
}

// ---------------------------------------------------------------- sign in / roles
const ROLE_RANK = { viewer: 1, operator: 2, admin: 3 };

function showLogin(message) {
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").focus();
}

function applyRole() {
  const rank = S.me ? ROLE_RANK[S.me.role] : 0;
  $("user").textContent = S.me ? `${S.me.name} (${S.me.role})` : "not signed in";
  $("signin").hidden = !!S.me;
  $("signout").hidden = !S.me;
  for (const b of document.querySelectorAll(".needs-operator")) {
    b.disabled = rank < 2;
    b.title = rank < 2 ? "needs the operator role" : "";
  }
  for (const b of document.querySelectorAll(".needs-admin")) {
    b.disabled = rank < 3;
    b.title = rank < 3 ? "needs the admin role" : "";
  }
  if (S.detail) renderDetail();
  renderRace();
}

async function signIn(token) {
  S.token = token;
  try {
    S.me = await api("/api/me");
  } catch (e) {
    S.token = "";
    S.me = null;
    throw e;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  applyRole();
}

// ---------------------------------------------------------------- boot
async function boot() {
  wireUi();
  try {
    if (S.token) await signIn(S.token).catch(() => { sessionStorage.removeItem(TOKEN_KEY); });
    S.info = await api("/api/info");
  } catch (e) {
    if (e.status === 401) { showLogin(S.token ? "token refused" : ""); return; }
    toast("cannot reach the service: " + e.message, true);
    setTimeout(boot, 3000);
    return;
  }
  applyRole();
  $("scenario").textContent = `${S.info.scenario} · ${S.info.intersections} signals`;
  for (const sel of [$("city-select"), $("inter-controller")]) {
    sel.replaceChildren(...S.info.controllers.map((c) => el("option", { value: c, text: c })));
  }
  $("city-select").value = S.info.controller;
  S.geo = await api("/api/network");
  $("inter-select").append(...S.geo.intersections.map((x) => x.id).sort()
    .map((id) => el("option", { value: id, text: id })));
  $("map-empty").hidden = true;
  fitView();
  drawMap();
  await refreshKpis();
  drawCharts();
  await refreshEvents(true);
  setupWhatIf();
  await loadRaces();
  connect();
}

let wired = false;
function wireUi() {
  if (wired) return;
  wired = true;
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await signIn($("token").value.trim());
      $("login").hidden = true;
      $("token").value = "";
      if (!S.geo) boot(); else reconnect();
    } catch (e) {
      $("login-error").textContent = e.status === 401 ? "token refused" : e.message;
    }
  });
  $("login-cancel").addEventListener("click", () => { if (S.geo) $("login").hidden = true; });
  $("signin").addEventListener("click", () => showLogin());
  $("signout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    S.token = ""; S.me = null;
    applyRole();
    if (!S.info || !S.info.read_open) location.reload(); else reconnect();
  });
  $("inter-select").addEventListener("change", (ev) => select(ev.target.value));
  $("btn-hold").addEventListener("click", () => override("hold"));
  $("btn-auto").addEventListener("click", () => override("auto"));
  $("btn-inter-controller").addEventListener("click", () => switchController($("inter-controller").value, [S.selected]));
  $("btn-city-controller").addEventListener("click", () => switchController($("city-select").value, null));
  $("btn-whatif").addEventListener("click", startWhatIf);
  $("btn-whatif-deploy").addEventListener("click", () => {
    if (S.race && S.race.status === "done") switchController(S.race.winner, null, S.race.id);
  });
  $("log-filter").addEventListener("change", renderLog);
  $("zoom-in").addEventListener("click", () => zoomAt(1.5));
  $("zoom-out").addEventListener("click", () => zoomAt(1 / 1.5));
  $("zoom-fit").addEventListener("click", () => { fitView(); drawMap(); });
  wireMap();
  window.addEventListener("resize", () => { drawMap(); drawCharts(); });
}

// ---------------------------------------------------------------- live stream
function setConn(on, text) {
  const c = $("conn");
  c.className = "conn " + (on ? "on" : "off");
  c.textContent = text;
}

function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/api/ws`);
  S.ws = ws;
  ws.onopen = () => ws.send(JSON.stringify({ token: S.token }));
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.type === "hello") { S.wsRetry = 0; setConn(true, "live"); }
    else if (msg.type === "state") onFrame(msg);
  };
  ws.onclose = (ev) => {
    if (S.ws !== ws) return;
    setConn(false, "offline");
    if (ev.code === 4401) { showLogin("please sign in"); return; }
    S.wsRetry = Math.min(S.wsRetry + 1, 5);
    setTimeout(connect, 1000 * S.wsRetry);
  };
}

function reconnect() {
  if (S.ws) { const old = S.ws; S.ws = null; old.close(); }
  connect();
}

function fmtClock(t) {
  const s = Math.max(0, Math.floor(t));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return `${String(h).padStart(2, "0")}:${String(m).padStart(2, "0")}:${String(sec).padStart(2, "0")}`;
}

function onFrame(f) {
  S.frame = f;
  if (f.error) setConn(false, "twin stopped: " + f.error);
  if (f.time === undefined) return;
  $("clock").textContent = `${fmtClock(f.time)} · ep ${f.episode + 1}`;
  $("pace").textContent = `×${f.pace.toFixed(1)} of ×${f.speed} (max ×${Math.round(f.capacity)})`;
  const names = new Set(f.assignment.map((i) => f.controllers[i]));
  $("city-controller").textContent = names.size === 1 ? [...names][0] : `mixed (${[...names].join(", ")})`;
  const k = f.kpi;
  $("kpi-halting").textContent = Math.round(k.halting);
  $("kpi-vehicles").textContent = Math.round(k.vehicles);
  $("kpi-speed").textContent = (k.mean_speed * 3.6).toFixed(1) + " km/h";
  $("kpi-preemptions").textContent = k.preemptions;
  $("kpi-overrides").textContent = k.overrides;
  const v = $("kpi-violations");
  v.textContent = k.violations;
  v.className = k.violations ? "bad" : "ok";
  $("kpi-time").textContent = `at ${fmtClock(f.time)}`;
  if (f.kpi_sample && !S.sampleKeys.has(sampleKey(Object.assign({ run_id: f.run_id }, f.kpi_sample)))) refreshKpis();
  renderPriority(f.priority);
  renderField(f.field);
  drawMap();
  if (f.last_event_id > S.lastEventId) refreshEvents(false);
  if (S.selected) refreshDetail();
}

// ---------------------------------------------------------------- priority vehicles
const PRIORITY_NAMES = { emergency: "preemption", bus: "bus priority" };

// p: the frame's `priority` (null when the service adds no priority vehicles)
function renderPriority(p) {
  const panel = $("priority-panel");
  panel.hidden = !p;
  const active = p ? p.active : [];
  document.body.dataset.preemptions = String(active.filter((a) => a.kind === "emergency").length);
  document.body.dataset.busGrants = String(active.filter((a) => a.kind === "bus").length);
  if (!p) return;
  $("priority-note").textContent = p.enabled
    ? `${p.preemptions} preemptions, ${p.bus_grants} bus grants so far`
    : "watching only (--no-priority)";
  const now = S.frame.time;
  const item = (kind, label, inter, text, right) => el("li",
    { "data-kind": kind, "data-intersection": inter, onclick: () => select(inter) },
    el("span", { class: "kind " + kind, text: label }), el("b", { text: inter }), el("span", { text }),
    el("span", { class: "muted", text: right }));
  const none = (text) => [el("li", { class: "empty", text })];
  $("priority-active").replaceChildren(...(active.length ? active.map((a) => item(a.kind, PRIORITY_NAMES[a.kind],
    a.intersection, `${a.vehicle} · green ${a.green}`, `${Math.max(0, Math.round(now - a.since))} s`))
    : none(p.enabled ? "no preemption or bus priority in force" : "priority off")));
  const held = new Set(active.map((a) => `${a.intersection}|${a.vehicle}`));
  $("priority-calls").replaceChildren(...(p.calls.length ? p.calls.map((c) => item(c.kind, c.kind, c.intersection,
    c.vehicle, `${Math.round(c.distance)} m · ${held.has(`${c.intersection}|${c.vehicle}`) ? "served" : "waiting"}`))
    : none("no priority vehicle near a signal")));
}

// ---------------------------------------------------------------- field controllers
// fl: the frame's `field` (null on the twin): intersections in comm loss, and those on their local plan
function renderField(fl) {
  $("field-panel").hidden = !fl;
  document.body.dataset.commLoss = String(fl ? fl.comm_loss.length : 0);
  if (!fl) return;
  $("field-note").textContent = `${fl.address} · ${fl.missed_polls} of ${fl.polls} polls missed`;
  const rows = [...fl.comm_loss.map((id) => [id, "comm loss"]),
    ...fl.local_plan.filter((id) => !fl.comm_loss.includes(id)).map((id) => [id, "local plan"])];
  $("field-list").replaceChildren(...(rows.length ? rows.map(([id, what]) => el("li",
    { "data-intersection": id, onclick: () => select(id) },
    el("span", { class: "kind " + (what === "comm loss" ? "emergency" : "bus"), text: what }), el("b", { text: id })))
    : [el("li", { class: "empty", text: "every controller answers and follows the centre" })]));
}

// ---------------------------------------------------------------- map
const map = () => $("map");

function fitView() {
  if (!S.geo) return;
  const c = map();
  const [x0, y0, x1, y1] = S.geo.bounds;
  const w = c.clientWidth || 800, h = c.clientHeight || 600;
  S.view.cx = (x0 + x1) / 2;
  S.view.cy = (y0 + y1) / 2;
  S.view.scale = 0.94 * Math.min(w / Math.max(1, x1 - x0), h / Math.max(1, y1 - y0));
  S.view.fitted = true;
}

function toScreen(x, y, w, h) {
  return [(x - S.view.cx) * S.view.scale + w / 2, h / 2 - (y - S.view.cy) * S.view.scale];
}

const LEVELS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_";

// q: the queue's share of the lane (0..1); fully red from two thirds on
function congestionColor(q0) {
  const q = Math.min(1, Math.max(0, q0) / 0.66);
  const hue = 130 - 130 * q;
  return `hsl(${hue}, ${55 + 20 * q}%, ${45 + 8 * q}%)`;
}

function signalColor(state, signals) {
  let best = "r";
  for (const s of signals) {
    const ch = state[s];
    if (ch === "G" || ch === "g") return "#2fbf71";
    if ("yYu".includes(ch)) best = "y";
    else if ((ch === "o" || ch === "O") && best === "r") best = "o";
  }
  return best === "y" ? "#f2b134" : best === "o" ? "#777" : "#e5484d";
}

function drawMap() {
  const c = map();
  if (!S.geo) return;
  const dpr = window.devicePixelRatio || 1;
  const w = c.clientWidth, h = c.clientHeight;
  if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
    c.width = Math.round(w * dpr);
    c.height = Math.round(h * dpr);
  }
  const g = c.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const f = S.frame;
  const lanes = f && f.lanes ? f.lanes : null; // one character per observed lane, see LEVELS
  const width = Math.max(1, Math.min(7, 3.0 * S.view.scale));
  g.lineCap = "round";
  g.lineJoin = "round";
  // Lanes of one road overlap at city zoom: draw free lanes first and queues on top, a little wider.
  const level = (lane) => (lane.i >= 0 && lanes ? LEVELS.indexOf(lanes[lane.i]) / 63 : -1);
  const order = S.geo.lanes.map((lane) => [level(lane), lane]).sort((a, b) => a[0] - b[0]);
  let drawn = 0;
  for (const [q, lane] of order) {
    const s = lane.s;
    g.strokeStyle = q >= 0 ? congestionColor(q) : "#3a4350";
    g.lineWidth = q > 0.15 ? width + 1.5 : width;
    g.beginPath();
    for (let j = 0; j < s.length; j += 2) {
      const [x, y] = toScreen(s[j], s[j + 1], w, h);
      if (j === 0) g.moveTo(x, y); else g.lineTo(x, y);
    }
    g.stroke();
    drawn++;
  }
  S.lanesDrawn = drawn;
  document.body.dataset.lanesDrawn = String(drawn);
  // stop lines: the last few metres of each incoming lane, in its signal's colour
  const stopLen = Math.max(4, 8 * S.view.scale);
  g.lineWidth = width + 1.5;
  g.lineCap = "butt";
  S.geo.intersections.forEach((inter, k) => {
    const state = f && f.signals ? f.signals[k] : null;
    if (!state) return;
    for (const [laneIdx, signals] of inter.stops) {
      const s = S.geo.lanes[laneIdx].s;
      const n = s.length;
      const [ex, ey] = toScreen(s[n - 2], s[n - 1], w, h);
      const [px, py] = toScreen(s[n - 4], s[n - 3], w, h);
      const len = Math.hypot(ex - px, ey - py) || 1;
      const l = Math.min(stopLen, len);
      g.strokeStyle = signalColor(state, signals);
      g.beginPath();
      g.moveTo(ex - ((ex - px) / len) * l, ey - ((ey - py) / len) * l);
      g.lineTo(ex, ey);
      g.stroke();
    }
  });
  // intersection markers
  const r = Math.max(4, Math.min(12, 9 * S.view.scale));
  // intersection id -> kind ("emergency" wins over "bus"): in force, and requested
  const byKind = (rows) => rows.reduce((m, a) => (m.get(a.intersection) === "emergency" ? m
    : m.set(a.intersection, a.kind)), new Map());
  const priority = byKind(f && f.priority ? f.priority.active : []);
  const calling = byKind(f && f.priority ? f.priority.calls : []);
  const lost = new Set(f && f.field ? f.field.comm_loss : []);
  let rings = 0;
  g.lineWidth = 2.5;
  S.geo.intersections.forEach((inter, k) => {
    const [x, y] = toScreen(inter.x, inter.y, w, h);
    if (x < -20 || y < -20 || x > w + 20 || y > h + 20) return;
    const green = f && f.green ? f.green[k] : 0;
    const over = f && f.overrides && f.overrides[inter.id];
    g.fillStyle = "#0d1117";
    g.strokeStyle = lost.has(inter.id) ? "#8b949e" : over ? "#b07cff" : green >= 0 ? "#2fbf71" : "#f2b134";
    g.setLineDash(lost.has(inter.id) ? [2, 3] : []);  // comm loss: grey and dashed, its state is unknown
    g.beginPath();
    g.arc(x, y, r, 0, 2 * Math.PI);
    g.fill();
    g.stroke();
    g.setLineDash([]);
    const kind = priority.get(inter.id);
    if (kind || calling.has(inter.id)) {  // preemption / bus priority in force: a solid ring; a request: dashed
      g.strokeStyle = (kind || calling.get(inter.id)) === "bus" ? "#29c5f6" : "#e5484d";
      g.lineWidth = kind ? 4 : 2;
      g.setLineDash(kind ? [] : [4, 3]);
      g.beginPath();
      g.arc(x, y, r + 9, 0, 2 * Math.PI);
      g.stroke();
      g.setLineDash([]);
      g.lineWidth = 2.5;
      if (kind) rings++;
    }
    if (inter.id === S.selected) {
      g.strokeStyle = "#4ea1ff";
      g.lineWidth = 3;
      g.beginPath();
      g.arc(x, y, r + 5, 0, 2 * Math.PI);
      g.stroke();
      g.lineWidth = 2.5;
    }
    if (S.view.scale > 0.35 || inter.id === S.selected) {
      g.fillStyle = "#d6dde6";
      g.font = "11px system-ui, sans-serif";
      g.fillText(inter.id, x + r + 3, y - r - 2);
    }
  });
  document.body.dataset.priorityRings = String(rings);
}

function nearestIntersection(mx, my) {
  const c = map();
  const w = c.clientWidth, h = c.clientHeight;
  let best = null, bestD = 16;
  for (const inter of S.geo ? S.geo.intersections : []) {
    const [x, y] = toScreen(inter.x, inter.y, w, h);
    const d = Math.hypot(x - mx, y - my);
    if (d < bestD) { bestD = d; best = inter.id; }
  }
  return best;
}

function zoomAt(factor, mx, my) {
  const c = map();
  const w = c.clientWidth, h = c.clientHeight;
  if (mx === undefined) { mx = w / 2; my = h / 2; }
  const wx = (mx - w / 2) / S.view.scale + S.view.cx;
  const wy = (h / 2 - my) / S.view.scale + S.view.cy;
  S.view.scale *= factor;
  S.view.cx = wx - (mx - w / 2) / S.view.scale;
  S.view.cy = wy - (h / 2 - my) / S.view.scale;
  drawMap();
}

function wireMap() {
  const c = map();
  let drag = null;
  c.addEventListener("mousedown", (ev) => { drag = { x: ev.offsetX, y: ev.offsetY, moved: false }; });
  c.addEventListener("mousemove", (ev) => {
    if (drag) {
      const dx = ev.offsetX - drag.x, dy = ev.offsetY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
      if (drag.moved) {
        c.classList.add("dragging");
        S.view.cx -= dx / S.view.scale;
        S.view.cy += dy / S.view.scale;
        drag.x = ev.offsetX; drag.y = ev.offsetY;
        drawMap();
      }
    } else {
      c.classList.toggle("pointing", !!nearestIntersection(ev.offsetX, ev.offsetY));
    }
  });
  window.addEventListener("mouseup", (ev) => {
    if (drag && !drag.moved && ev.target === c) {
      const id = nearestIntersection(ev.offsetX, ev.offsetY);
      if (id) select(id);
    }
    drag = null;
    c.classList.remove("dragging");
  });
  c.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    zoomAt(ev.deltaY < 0 ? 1.2 : 1 / 1.2, ev.offsetX, ev.offsetY);
  }, { passive: false });
}

// ---------------------------------------------------------------- intersection panel
function select(id) {
  S.selected = id;
  S.detail = null;
  $("inter-select").value = id;
  $("inter-body").hidden = !id;
  drawMap();
  if (id) refreshDetail();
}

async function refreshDetail() {
  if (S.detailBusy || !S.selected) return;
  S.detailBusy = true;
  const id = S.selected;
  try {
    const d = await api("/api/intersections/" + encodeURIComponent(id));
    if (id === S.selected) { S.detail = d; renderDetail(); }
  } catch (e) {
    if (e.status === 401) showLogin("please sign in");
  } finally {
    S.detailBusy = false;
  }
}

function sigBoxes(state) {
  return el("span", { class: "sig", title: state }, ...[...state].map((ch) => el("i", { class: ch })));
}

function renderDetail() {
  const d = S.detail;
  if (!d) return;
  const canOperate = S.me && ROLE_RANK[S.me.role] >= 2;
  const status = $("inter-status");
  const phase = d.green >= 0 ? `green ${d.green} for ${Math.round(d.time_in_phase)} s`
    : `transition to green ${d.target} (${Math.round(d.time_in_phase)} s)`;
  status.replaceChildren(el("b", { text: d.controller }), ` · ${phase}`);
  if (d.override) {
    const o = d.override;
    status.append(el("span", { class: "badge override",
      text: `${o.mode === "hold" ? "held" : "forced"} green ${o.green} by ${o.actor}` }));
    if (o.preempted) status.append(el("span", { class: "badge preempted", text: "guard: max-red preemption" }));
  }
  $("inter-why").textContent = d.explain;
  $("inter-phases").replaceChildren(...d.greens.map((gr) => {
    const cls = gr.index === d.green ? "current" : gr.index === d.target ? "target" : "";
    const btn = el("button", { type: "button", class: "small needs-operator", text: "Force",
      title: canOperate ? `force green ${gr.index}` : "needs the operator role",
      onclick: () => override("force", gr.index) });
    btn.disabled = !canOperate;
    return el("li", { class: cls }, el("span", { class: "idx", text: String(gr.index) }), sigBoxes(gr.state),
      el("span", { class: "min", text: `min ${gr.min_green}s` }), btn);
  }));
  const most = Math.max(1, ...d.approaches.map((a) => a.vehicles));
  $("inter-approaches").replaceChildren(...d.approaches.map((a) => {
    const bar = el("span");
    bar.style.width = `${(100 * a.halting) / most}%`;
    const faults = Object.entries(a.faulty || {}).map(([lane, why]) => `${lane}: ${why}`);
    const name = el("span", { class: "name", text: faults.length ? `${a.edge} \u26a0` : a.edge,
      title: faults.length ? `faulty detector(s): ${faults.join("; ")}` : a.lanes.join(", ") });
    if (faults.length) name.style.color = "#f0a030";
    return el("div", { class: "ap" }, name,
      el("div", { class: "bar" }, bar), el("span", { class: "num", text: `${a.halting} / ${a.vehicles}` }));
  }));
  if (document.activeElement !== $("inter-controller")) $("inter-controller").value = d.controller;
}

async function override(mode, green) {
  if (!S.selected) return;
  const body = { mode, reason: $("reason").value.trim() };
  if (mode === "force") body.green = green;
  try {
    const r = await api(`/api/intersections/${encodeURIComponent(S.selected)}/override`,
      { method: "POST", body: JSON.stringify(body) });
    toast(`${S.selected}: ${mode} ${r.result} — ${r.detail.guard || ""} (audit #${r.event_id})`);
  } catch (e) {
    toast(`${S.selected}: ${mode} refused — ${e.message}`, true);
  }
  refreshEvents(false);
  refreshDetail();
}

// `whatif`: the race whose candidate this deploys (recorded with the switch)
async function switchController(name, intersections, whatif) {
  const body = { controller: name, intersections };
  if (whatif) body.whatif = whatif;
  try {
    const r = await api("/api/controller", { method: "POST", body: JSON.stringify(body) });
    const from = whatif ? ` from what-if race ${whatif}` : "";
    toast(`${name} now runs ${r.detail.intersections} intersection(s)${from} (audit #${r.event_id})`);
  } catch (e) {
    toast(`controller switch refused — ${e.message}`, true);
  }
  refreshEvents(false);
  refreshDetail();
}

// ---------------------------------------------------------------- KPI charts
// Samples come from the audit store (every 10 s simulated, over every run); a frame only says a new one exists.
const sampleKey = (s) => `${s.run_id}:${s.episode}:${s.sim_time}`;

async function refreshKpis() {
  if (S.kpiBusy) return;
  S.kpiBusy = true;
  try {
    const after = S.lastKpiId ? `&after_id=${S.lastKpiId}` : "";
    const rows = await api(`/api/kpis?limit=${MAX_SAMPLES}${after}`);
    let added = false;
    for (const s of rows) {
      S.lastKpiId = Math.max(S.lastKpiId, s.id);
      added = addSample(s) || added;
    }
    if (added) drawCharts();
  } catch (e) {
    if (e.status === 401) showLogin("please sign in");
  } finally {
    S.kpiBusy = false;
  }
}

function addSample(s) {
  const key = sampleKey(s);
  if (S.sampleKeys.has(key)) return false;
  S.sampleKeys.add(key);
  S.samples.push(s);
  if (S.samples.length > MAX_SAMPLES) S.samples.shift();
  document.body.dataset.kpiSamples = String(S.sampleKeys.size);
  return true;
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// lines: [{ name, color, points: [{ t, v, run, ep }] }]; a new run or episode starts a new stretch of a line.
// xfmt writes the time axis's ends; with several lines their names are the legend.
function drawChart(canvas, lines, label, fmt, xfmt) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const left = 6, right = 46, top = 16, bottom = 16;
  const pw = w - left - right, ph = h - top - bottom;
  g.font = "11px system-ui, sans-serif";
  g.fillStyle = "#8b98a8";
  g.fillText(label, left, 11);
  const all = lines.flatMap((line) => line.points);
  canvas.dataset.points = String(all.length);
  canvas.dataset.lines = String(lines.filter((line) => line.points.length).length);
  if (all.length === 0) { g.fillText("no samples yet", left, top + ph / 2); return; }
  const vmax = niceMax(Math.max(...all.map((p) => p.v)));
  const t0 = Math.min(...all.map((p) => p.t));
  const t1 = Math.max(...all.map((p) => p.t), t0 + 1);
  g.strokeStyle = "#2a3441";
  g.lineWidth = 1;
  for (let i = 0; i <= 2; i++) {
    const y = top + (ph * i) / 2;
    g.beginPath(); g.moveTo(left, y); g.lineTo(left + pw, y); g.stroke();
    g.fillText(fmt(vmax * (1 - i / 2)), left + pw + 4, y + 4);
  }
  g.lineWidth = 1.8;
  for (const line of lines) {
    g.strokeStyle = line.color;
    g.beginPath();
    let prev = null;
    for (const p of line.points) {
      const x = left + ((p.t - t0) / (t1 - t0)) * pw;
      const y = top + ph - (p.v / vmax) * ph;
      if (!prev || p.run !== prev.run || p.ep !== prev.ep) g.moveTo(x, y); else g.lineTo(x, y);
      prev = p;
    }
    g.stroke();
  }
  if (lines.length === 1) {
    const pts = lines[0].points;
    g.fillStyle = lines[0].color;
    g.fillText(fmt(pts[pts.length - 1].v), left + pw - 40, 11);
  } else {
    let x = left + pw;
    for (const line of [...lines].reverse()) {
      x -= g.measureText(line.name).width + 10;
      g.fillStyle = line.color;
      g.fillText(line.name, x, 11);
    }
  }
  g.fillStyle = "#8b98a8";
  g.fillText(xfmt(t0), left, h - 3);
  const endLabel = xfmt(t1);
  g.fillText(endLabel, left + pw - g.measureText(endLabel).width, h - 3);
}

function drawCharts() {
  const pts = (key, scale) => S.samples.map((s) => ({ t: s.at, v: s[key] * scale, run: s.run_id, ep: s.episode }));
  const wall = (t) => new Date(t * 1000).toLocaleTimeString();
  drawChart($("chart-queue"), [{ color: "#f2b134", points: pts("halting", 1) }],
    "Queued vehicles (every 10 s simulated)", (v) => String(Math.round(v)), wall);
  drawChart($("chart-speed"), [{ color: "#4ea1ff", points: pts("mean_speed", 3.6) }],
    "Mean speed on approaches, km/h", (v) => v.toFixed(0), wall);
  drawRaceChart();
}

// ---------------------------------------------------------------- what-if race
// An operator forks the live city and races controllers from the same vehicles (POST /api/whatif); the page
// polls the race (GET /api/whatif?race=ID) for its progress, then shows the ranked KPIs and queue curves.
const CANDIDATE_COLORS = ["#4ea1ff", "#f2b134", "#2fbf71", "#b07cff", "#e5484d", "#5fd3d3", "#ff8fb1", "#c8c8c8"];
const RACE_COLUMNS = [["resco_delay", 1], ["mean_waiting", 1], ["p95_waiting", 0], ["max_waiting", 0],
  ["arrived", 0], ["not_inserted", 0], ["safety_violations", 0]];
const racing = (race) => !!race && (race.status === "forking" || race.status === "running");

function setupWhatIf() {
  const wanted = new Set([S.info.controller, "maxpressure", "fixed"]);
  $("whatif-candidates").replaceChildren(...S.info.controllers.map((c) => {
    const box = el("input", { type: "checkbox", value: c, id: "whatif-c-" + c });
    box.checked = wanted.has(c);
    return el("label", { for: "whatif-c-" + c }, box, " " + c);
  }));
}

async function loadRaces() {
  try {
    const races = await api("/api/whatif");
    if (races.length) { S.race = races[0]; renderRace(); pollRace(); }
  } catch (e) {
    if (e.status === 401) showLogin("please sign in");
  }
}

async function startWhatIf() {
  const candidates = [...document.querySelectorAll("#whatif-candidates input:checked")].map((b) => b.value);
  const horizon = Number($("whatif-horizon").value);
  try {
    const r = await api("/api/whatif", { method: "POST", body: JSON.stringify({ candidates, horizon }) });
    toast(`what-if race ${r.detail.race} started (audit #${r.event_id})`);
    S.race = { id: r.detail.race, status: "forking", candidates, horizon, progress: {}, fraction: 0, rows: [] };
    renderRace();
    pollRace();
  } catch (e) {
    toast(`what-if refused — ${e.message}`, true);
  }
  refreshEvents(false);
}

async function pollRace() {
  if (S.racePolling) return;
  S.racePolling = true;
  try {
    while (racing(S.race)) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const found = await api(`/api/whatif?race=${S.race.id}`);
      if (found.length) { S.race = found[0]; renderRace(); }
    }
  } catch (e) {
    if (e.status === 401) showLogin("please sign in");
  } finally {
    S.racePolling = false;
  }
  refreshEvents(false);
}

function raceStatus(race) {
  const pct = Math.round(100 * (race.fraction || 0));
  if (race.status === "forking") return "forking: waiting for the twin's next snapshot…";
  if (race.status === "running") {
    return `racing ${race.candidates.join(", ")} from ${fmtClock(race.at)} (${race.vehicles} vehicles on the ` +
      `approaches) for ${race.horizon} s: ${pct} %`;
  }
  if (race.status === "failed") return `race ${race.id} failed: ${race.error}`;
  return `${race.winner} is best over ${race.horizon} s from ${fmtClock(race.at)} (asked at ` +
    `${fmtClock(race.live_time)} by ${race.actor}); race ${race.race_wall_s.toFixed(1)} s`;
}

function renderRace() {
  const race = S.race;
  const rank = S.me ? ROLE_RANK[S.me.role] : 0;
  $("btn-whatif").disabled = rank < 2 || racing(race);
  $("whatif-run").hidden = !race;
  if (!race) return;
  const panel = $("whatif-panel");
  panel.dataset.race = String(race.id);
  panel.dataset.status = race.status;
  panel.dataset.progress = String(race.fraction || 0);
  $("whatif-note").textContent = `race ${race.id}`;
  $("whatif-status").textContent = raceStatus(race);
  $("whatif-bar").style.width = `${100 * (race.status === "done" ? 1 : race.fraction || 0)}%`;
  const done = race.status === "done";
  $("whatif-result").hidden = !done;
  if (!done) return;
  const color = (name) => CANDIDATE_COLORS[race.candidates.indexOf(name) % CANDIDATE_COLORS.length];
  $("whatif-body").replaceChildren(...race.rows.map((row, i) => {
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = color(row.candidate);
    return el("tr", { class: i === 0 ? "best" : "", "data-candidate": row.candidate },
      el("td", {}, swatch, row.candidate),
      ...RACE_COLUMNS.map(([key, digits]) => el("td", { text: Number(row[key]).toFixed(digits) })));
  }));
  const deploy = $("btn-whatif-deploy");
  deploy.textContent = `Deploy ${race.winner} city-wide`;
  deploy.disabled = rank < 3;
  deploy.title = rank < 3 ? "needs the admin role (a city-wide switch)"
    : `switch the city to ${race.winner}, through the safety guard`;
  drawRaceChart();
}

function drawRaceChart() {
  const race = S.race;
  if (!race || race.status !== "done" || $("whatif-result").hidden) return;
  const lines = race.rows.map((row) => ({
    name: row.candidate,
    color: CANDIDATE_COLORS[race.candidates.indexOf(row.candidate) % CANDIDATE_COLORS.length],
    points: race.curves[row.candidate].t.map((t, i) => ({ t, v: race.curves[row.candidate].queue[i] })),
  }));
  drawChart($("whatif-chart"), lines, "Queued vehicles per candidate", (v) => String(Math.round(v)), fmtClock);
}

// ---------------------------------------------------------------- audit log
const PEOPLE = (e) => e.actor !== "system";

async function refreshEvents(initial) {
  if (S.eventsBusy) return;
  S.eventsBusy = true;
  try {
    const url = initial || !S.lastEventId ? "/api/events?limit=200" : `/api/events?limit=500&after_id=${S.lastEventId}`;
    const fresh = await api(url);
    if (fresh.length) {
      const known = new Set(S.events.map((e) => e.id));
      S.events = fresh.filter((e) => !known.has(e.id)).concat(S.events).slice(0, MAX_LOG_ROWS);
      S.events.sort((a, b) => b.id - a.id);
      S.lastEventId = Math.max(S.lastEventId, S.events[0].id);
      renderLog();
    }
  } catch (e) {
    if (e.status === 401) showLogin("please sign in");
  } finally {
    S.eventsBusy = false;
  }
}

function fmtWall(at) {
  const d = new Date(at * 1000);
  const p2 = (n) => String(n).padStart(2, "0");
  const day = `${d.getFullYear()}-${p2(d.getMonth() + 1)}-${p2(d.getDate())}`;
  return `${day} ${p2(d.getHours())}:${p2(d.getMinutes())}:${p2(d.getSeconds())}`;
}

function summarize(detail) {
  return Object.entries(detail || {})
    .filter(([, v]) => v !== null && v !== "" && !(Array.isArray(v) && v.length === 0))
    .map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(" · ");
}

function renderLog() {
  const filter = $("log-filter").value;
  const rows = S.events.filter((e) => filter === "all" || (filter === "people") === PEOPLE(e));
  $("log-body").replaceChildren(...rows.map((e) => el("tr", { class: PEOPLE(e) ? "people" : "system",
    "data-id": String(e.id), "data-action": e.action },
  el("td", { class: "when", text: fmtWall(e.at) }),
  el("td", { text: e.sim_time === null ? "" : fmtClock(e.sim_time) }),
  el("td", { class: "who", text: PEOPLE(e) ? `${e.actor} (${e.role})` : e.actor }),
  el("td", { text: e.action }),
  el("td", { text: e.target }),
  el("td", { class: "res-" + e.result, text: e.result }),
  el("td", { class: "detail", text: summarize(e.detail), title: JSON.stringify(e.detail) }))));
}

document.addEventListener("DOMContentLoaded", boot);
