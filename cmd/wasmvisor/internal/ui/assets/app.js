// The wasmvisor dashboard: one server-sent event stream (GET /v1/dashboard/stream) drives
// everything; the page never polls. Strings from the server are put in the page as text
// (textContent), never as markup. The admin token lives in sessionStorage only and is sent as
// Authorization: Bearer on admin calls; the admin controls exist only once GET /v1/auth
// accepted it.

const RING = 300; // stats frames kept per plugin: 5 minutes at one a second
const FEED = 500; // feed entries kept
const TOKEN_KEY = "wasmvisor.admin_token";

const state = {
  plugins: new Map(), // name -> dashPlugin (slots by index)
  rings: new Map(), // name -> [{t, rate, p50, p90, p99, pages: [], pending}]
  last: new Map(), // name -> previous stats frame entry, for rates
  admin: false,
  streamDropped: 0,
  busDropped: 0,
  decisionsSkipped: 0,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

function duration(ms) {
  if (ms < 0) ms = 0;
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + (s % 60) + "s";
  return Math.floor(s / 3600) + "h" + Math.floor((s % 3600) / 60) + "m";
}

// ---- admin ----

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

async function checkToken() {
  const t = token();
  let ok = false;
  if (t) {
    try {
      const r = await fetch("/v1/auth", { headers: { Authorization: "Bearer " + t }, cache: "no-store" });
      ok = r.status === 204;
      if (!ok) $("auth-state").textContent = "token refused (" + r.status + ")";
    } catch (e) {
      $("auth-state").textContent = "token check failed: " + e;
    }
  }
  state.admin = ok;
  if (ok) $("auth-state").textContent = "admin";
  else if (!t) $("auth-state").textContent = "read-only";
  $("token-forget").hidden = !t;
  document.body.dataset.admin = ok ? "yes" : "no";
  renderTree();
}

async function admin(method, path, what) {
  const out = $("admin-result");
  out.textContent = what + "…";
  try {
    const r = await fetch(path, { method, headers: { Authorization: "Bearer " + token() }, cache: "no-store" });
    if (r.ok) {
      out.textContent = what + ": done";
      return;
    }
    let msg = String(r.status);
    try {
      const b = await r.json();
      msg += " " + b.error.code + ": " + b.error.message;
    } catch (e) {
      // not the API's JSON error: the status says it
    }
    out.textContent = what + ": " + msg;
    if (r.status === 401 || r.status === 403) checkToken();
  } catch (e) {
    out.textContent = what + ": " + e;
  }
}

function adminButton(label, method, path, what, confirmText) {
  return el("button", {
    class: "admin", type: "button", "data-action": label, text: label,
    onclick: () => {
      if (confirmText && !window.confirm(confirmText)) return;
      admin(method, path, what);
    },
  });
}

// ---- tree ----

function renderTree() {
  const root = el("div", { class: "node root" }, el("span", { class: "name", text: "host" }),
    el("span", { class: "muted", text: " " + state.plugins.size + " plugins" }));
  const names = [...state.plugins.keys()].sort();
  for (const name of names) root.append(renderPlugin(state.plugins.get(name)));
  $("tree").replaceChildren(root);
}

function renderPlugin(p) {
  const enc = encodeURIComponent(p.name);
  const head = el("div", { class: "node" },
    el("span", { class: "name", text: p.name }), " ",
    el("span", { class: "badge state", "data-state": p.state, text: p.state }), " ",
    el("span", { class: "muted", text: "config v" + p.config_version + " · restarts " + p.restarts + " · " + p.format }));
  if (p.failed) head.append(" ", el("span", { class: "reason", title: p.failed, text: p.failed }));
  if (state.admin) {
    head.append(" ",
      adminButton("restart", "POST", "/v1/plugins/" + enc + "/restart", "restart " + p.name),
      adminButton("reset", "POST", "/v1/plugins/" + enc + "/reset", "reset " + p.name),
      adminButton("unload", "DELETE", "/v1/plugins/" + enc, "unload " + p.name, "Unload plugin " + p.name + "?"));
  }
  const node = el("div", { class: "plugin", "data-plugin": p.name, "data-state": p.state }, head);
  const slots = [...p.slots.values()].sort((a, b) => a.index - b.index);
  for (const s of slots) node.append(renderSlot(p, s));
  return node;
}

function renderSlot(p, s) {
  const node = el("div", {
    class: "slot", "data-plugin": p.name, "data-slot": s.index, "data-state": s.state,
    "data-incarnation": s.incarnation, "data-restarts": s.restarts,
  },
  el("span", { class: "name", text: "#" + s.index }),
  el("span", { class: "badge state", "data-state": s.state, text: s.state }),
  el("span", { class: "incarnation", text: "incarnation " + s.incarnation }),
  el("span", { class: "uptime", "data-started": s.started_at && s.state !== "restarting" ? s.started_at : null,
    text: s.started_at ? "up " + duration(Date.now() - Date.parse(s.started_at)) : "" }),
  el("span", { class: "restarts", text: "restarts " + s.restarts }),
  el("span", { class: "pages muted", text: (s.memory_pages || 0) + " pages" }));
  if (s.last_end) {
    node.append(el("span", {
      class: "reason", "data-kind": s.last_end.kind, title: s.last_end.error || "",
      text: "last end: " + s.last_end.kind + (s.last_end.error ? " (" + s.last_end.error + ")" : ""),
    }));
  }
  if (state.admin) {
    node.append(adminButton("restart", "POST",
      "/v1/plugins/" + encodeURIComponent(p.name) + "/restart?slot=" + s.index, "restart " + p.name + " #" + s.index));
  }
  return node;
}

function applySnapshot(snap) {
  state.plugins.clear();
  for (const p of snap.plugins) {
    const slots = new Map();
    for (const s of p.slots) slots.set(s.index, s);
    state.plugins.set(p.name, { ...p, slots });
  }
  for (const name of [...state.rings.keys()]) if (!state.plugins.has(name)) state.rings.delete(name);
  state.streamDropped = snap.dropped;
  renderTree();
  renderDrops();
}

function applyLifecycle(ev) {
  state.streamDropped = ev.dropped;
  const p = state.plugins.get(ev.plugin);
  if (p) {
    if (ev.plugin_state) p.state = ev.plugin_state;
    if (ev.slot) {
      const old = p.slots.get(ev.slot.index);
      if (!old || ev.slot.incarnation >= old.incarnation) {
        ev.slot.memory_pages = old ? old.memory_pages : 0;
        p.slots.set(ev.slot.index, ev.slot);
      }
      p.restarts = [...p.slots.values()].reduce((n, s) => n + s.restarts, 0);
    }
    if (p.state !== "running") { // quarantined or probing: the slots that are down wait for it
      for (const s of p.slots.values()) if (s.state !== "running" && s.state !== "busy") s.state = p.state;
    }
    if (ev.kind === "quarantined" && ev.reason) p.failed = ev.reason.error;
    if (ev.kind === "recovered") p.failed = "";
    if (ev.kind === "config applied" && ev.config_version > p.config_version) p.config_version = ev.config_version;
    renderTree();
  }
  let text = ev.kind;
  if (ev.slot) text += " #" + ev.slot.index + " incarnation " + ev.slot.incarnation;
  if (ev.reason) text += ": " + ev.reason.kind + (ev.reason.error ? " (" + ev.reason.error + ")" : "");
  if (ev.config_version) text += " v" + ev.config_version;
  if (ev.detail) text += ": " + ev.detail;
  feed("lifecycle", ev.time, ev.plugin, text);
  renderDrops();
}

// ---- stats ----

function applyStats(f) {
  state.streamDropped = f.dropped;
  state.busDropped = f.bus_dropped;
  state.decisionsSkipped = f.decisions_skipped;
  const t = Date.parse(f.time);
  $("stats-time").textContent = "at " + new Date(t).toLocaleTimeString() + " · " + f.streams + " streams";
  for (const ps of f.plugins || []) {
    const prev = state.last.get(ps.name);
    const rate = prev && t > prev.t ? Math.max(0, (ps.calls - prev.calls) * 1000 / (t - prev.t)) : 0;
    state.last.set(ps.name, { t, calls: ps.calls });
    let ring = state.rings.get(ps.name);
    if (!ring) state.rings.set(ps.name, (ring = []));
    ring.push({ t, rate, p50: ps.p50_us, p90: ps.p90_us, p99: ps.p99_us, pages: ps.slots.map((s) => s.memory_pages), pending: ps.bus_pending });
    if (ring.length > RING) ring.splice(0, ring.length - RING);
    const p = state.plugins.get(ps.name);
    if (p) { // memory pages and busy come with the frame; the lifecycle events carry the rest
      let changed = false;
      for (const s of ps.slots) {
        const v = p.slots.get(s.index);
        if (!v || v.incarnation !== s.incarnation) continue;
        const st = s.busy ? "busy" : (s.up && v.state === "busy" ? "running" : v.state);
        if (v.memory_pages !== s.memory_pages || v.state !== st) changed = true;
        v.memory_pages = s.memory_pages;
        v.state = st;
      }
      if (p.config_version !== ps.config_version) { p.config_version = ps.config_version; changed = true; }
      if (changed) renderTree();
    }
    for (const g of ps.guest_events || []) {
      const body = g.data !== undefined ? JSON.stringify(g.data) : g.text || "";
      feed("guest", f.time, ps.name, "#" + g.instance + " " + g.topic + " " + body);
    }
    if (ps.guest_lost) feed("guest", f.time, ps.name, ps.guest_lost + " guest events lost");
  }
  renderStats(f);
  renderDrops();
}

function plot(series, colors, label) {
  const w = 220, h = 60;
  const s = svg("svg", { class: "plot", viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": label });
  let maxV = 0;
  for (const ys of series) for (const y of ys) if (y !== null && y > maxV) maxV = y;
  if (maxV <= 0) maxV = 1;
  // The x axis spans the frames kept, at least a minute's: a young page's plot fills it.
  const span = Math.max(60, ...series.map((ys) => ys.length));
  series.forEach((ys, i) => {
    const pts = [];
    ys.forEach((y, x) => {
      if (y === null || y === undefined) return;
      pts.push(((x + span - ys.length) * w / (span - 1)).toFixed(1) + "," + (h - 2 - y * (h - 4) / maxV).toFixed(1));
    });
    if (pts.length) s.append(svg("polyline", { points: pts.join(" "), stroke: colors[i % colors.length] }));
  });
  const top = svg("text", { x: 2, y: 10, "font-size": 9, fill: "#6b7280" });
  top.textContent = maxV.toPrecision(3);
  s.append(top);
  return el("figure", {}, s, el("figcaption", { text: label }));
}

const PALETTE = ["#2563eb", "#b76e00", "#c62828", "#1a7f37", "#7c3aed", "#0891b2"];

function renderStats(f) {
  const out = [];
  for (const ps of f.plugins || []) {
    const ring = state.rings.get(ps.name) || [];
    const errs = Object.entries(ps.errors || {}).map(([k, v]) => k + " " + v).join(", ") || "none";
    const fmt = (v) => (v === null || v === undefined ? "–" : v < 1000 ? v.toFixed(1) + " µs" : (v / 1000).toFixed(2) + " ms");
    const card = el("div", { class: "card", "data-plugin": ps.name },
      el("h3", {}, ps.name + " ", el("span", { class: "badge", "data-state": ps.state, text: ps.state })),
      el("div", { class: "kv" },
        el("span", { class: "calls", text: "calls " + ps.calls }),
        el("span", { class: "errors", text: "errors: " + errs }),
        el("span", { text: "p50 " + fmt(ps.p50_us) + " · p90 " + fmt(ps.p90_us) + " · p99 " + fmt(ps.p99_us) }),
        el("span", { text: "bus backlog " + ps.bus_pending }),
        el("span", { text: "config v" + ps.config_version }),
        el("span", { text: "restarts " + ps.restarts })));
    const nSlots = Math.max(0, ...ring.map((r) => r.pages.length));
    const pages = [];
    for (let i = 0; i < nSlots; i++) pages.push(ring.map((r) => (i < r.pages.length ? r.pages[i] : null)));
    card.append(el("div", { class: "plots" },
      plot([ring.map((r) => r.rate)], PALETTE, "calls/s"),
      plot([ring.map((r) => r.p50), ring.map((r) => r.p90), ring.map((r) => r.p99)], PALETTE, "latency µs: p50 p90 p99"),
      plot(pages, PALETTE, "memory pages per slot"),
      plot([ring.map((r) => r.pending)], PALETTE, "bus backlog")));
    const rows = [];
    for (const s of ps.slots) {
      for (const m of s.telemetry || []) {
        const v = m.kind === "histogram" ? "count " + m.count + ", sum " + m.sum : String(m.value);
        rows.push(el("tr", {}, el("td", { text: "#" + s.index }), el("td", { text: m.name }), el("td", { text: m.kind }), el("td", { text: v })));
      }
    }
    if (rows.length) card.append(el("table", { class: "telemetry" }, el("tr", {}, el("th", { text: "slot" }), el("th", { text: "guest metric" }), el("th", { text: "kind" }), el("th", { text: "value" })), ...rows));
    out.push(card);
  }
  $("stats").replaceChildren(...out);
}

function renderDrops() {
  $("drops").textContent = "stream drops " + state.streamDropped + " · bus drops " + state.busDropped +
    " · decisions not shown " + state.decisionsSkipped;
}

// ---- feed ----

function feed(type, time, plugin, text) {
  const li = el("li", { "data-type": type, "data-plugin": plugin || "" },
    new Date(Date.parse(time) || Date.now()).toLocaleTimeString() + " " + type + " " + (plugin || "") + " " + text);
  if (!visible(li)) li.classList.add("hidden");
  const list = $("feed");
  list.prepend(li);
  while (list.children.length > FEED) list.lastElementChild.remove();
  $("feed-count").textContent = list.children.length + " kept (last " + FEED + ")";
}

function visible(li) {
  if (!$("f-" + li.dataset.type).checked) return false;
  const q = $("f-text").value.trim().toLowerCase();
  return !q || li.textContent.toLowerCase().includes(q);
}

function refilter() {
  for (const li of $("feed").children) li.classList.toggle("hidden", !visible(li));
}

// ---- stream ----

function connect() {
  const es = new EventSource("/v1/dashboard/stream");
  es.addEventListener("open", () => { $("conn").textContent = "live"; $("conn").dataset.state = "open"; });
  es.addEventListener("error", () => { $("conn").textContent = "reconnecting"; $("conn").dataset.state = "closed"; });
  es.addEventListener("snapshot", (m) => applySnapshot(JSON.parse(m.data)));
  es.addEventListener("lifecycle", (m) => applyLifecycle(JSON.parse(m.data)));
  es.addEventListener("stats", (m) => applyStats(JSON.parse(m.data)));
  es.addEventListener("decision", (m) => {
    const d = JSON.parse(m.data);
    state.streamDropped = d.dropped;
    feed("decision", d.time, d.plugin, d.handler + " → " + d.outcome + (d.error_kind ? " (" + d.error_kind + ")" : "") +
      " " + d.status + " " + d.duration_us.toFixed(0) + " µs");
  });
}

function init() {
  $("auth").addEventListener("submit", (e) => {
    e.preventDefault();
    const t = $("token").value;
    $("token").value = "";
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    checkToken();
  });
  $("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    checkToken();
  });
  for (const id of ["f-lifecycle", "f-guest", "f-decision"]) $(id).addEventListener("change", refilter);
  $("f-text").addEventListener("input", refilter);
  // Uptimes tick on the page's clock: no request is made for them.
  setInterval(() => {
    for (const u of document.querySelectorAll(".uptime[data-started]")) {
      u.textContent = "up " + duration(Date.now() - Date.parse(u.dataset.started));
    }
  }, 1000);
  connect();
  checkToken();
}

init();
