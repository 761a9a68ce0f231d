// The saga lab's dashboard: plain JavaScript, no build step. It listens to /api/live (Server-Sent
// Events: a snapshot every second and the records the lab's observer reads) and renders one view
// at a time from the URL's hash: #/ (the chain), #/orders[/<id>], #/topics[/<name>],
// #/groups[/<name>], #/dlq, #/brokers, #/schemas[/<subject>].
"use strict";

const SERVICES = ["order", "payment", "inventory", "notification"];
const FAILURE_TOPICS = new Set(["payment.failed", "inventory.failed", "payment.refunded", "order.cancelled"]);
const STATUSES = ["PENDING", "PAID", "COMPENSATING", "CONFIRMED", "CANCELLED"];
const PRESETS = [
  { name: "Happy path", why: "alice has the money, LATTE is in stock: CONFIRMED",
    body: { customer_id: "alice", items: [{ sku: "LATTE", quantity: 2 }] } },
  { name: "Unpaid", why: "bob holds 10,000 won, three mochas cost 16,500: CANCELLED by payment",
    body: { customer_id: "bob", items: [{ sku: "MOCHA", quantity: 3 }] } },
  { name: "Sold out", why: "ICED_TEA has no stock: charged, then refunded (compensation)",
    body: { customer_id: "carol", items: [{ sku: "ICED_TEA", quantity: 1 }] } },
];

const state = {
  contract: null,
  snapshot: null,
  history: [],          // recent snapshots, for the charts
  listeners: new Set(), // called with ("snapshot" | "records", data)
  view: null,           // the current view's cleanup function
};

// ---- helpers -------------------------------------------------------------------------------

// Attributes a person reads (translated like text).
const HUMAN_ATTRS = new Set(["title", "placeholder", "aria-label"]);

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else if (HUMAN_ATTRS.has(k)) el.setAttribute(k, tr(v));
    else el.setAttribute(k, v === true ? "" : v);
  }
  // Text children are shown in the page's language (i18n.js); what it has no words for (data,
  // names, numbers) stays as it is.
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(tr(String(c))));
  }
  return el;
}

const svgNS = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") el.textContent = v; else el.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c) el.append(c);
  return el;
}

async function api(path, options = {}) {
  const init = { ...options };
  if (init.body !== undefined && typeof init.body !== "string") {
    init.body = JSON.stringify(init.body);
    init.headers = { "content-type": "application/json" };
  }
  const res = await fetch(path, init);
  const body = await res.json().catch(() => null);
  if (!res.ok) throw new Error((body && body.detail) || `${res.status} ${res.statusText}`);
  return body;
}

function toast(content) {
  const t = document.getElementById("toast");
  t.replaceChildren(content instanceof Node ? content : document.createTextNode(content));
  t.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove("show"), 5000);
}

const short = (id) => (id ? String(id).slice(-8) : "–");
const fmtTime = (ms) => (ms ? new Date(ms).toLocaleTimeString([], { hour12: false }) + "." + String(ms % 1000).padStart(3, "0") : "–");
const fmtNum = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString());
// How far behind a group is in time: "0.4 s", "12 s", "3 min".
const fmtBehind = (ms) => (ms === null || ms === undefined ? "–" : ms < 10000 ? `${(ms / 1000).toFixed(1)} s` : ms < 120000 ? `${Math.round(ms / 1000)} s` : `${Math.round(ms / 60000)} min`);
const fmtBytes = (n) => (n >= 1 << 20 ? (n / (1 << 20)).toFixed(1) + " MiB" : n >= 1024 ? (n / 1024).toFixed(1) + " KiB" : n + " B");
const badge = (text) => h("span", { class: `badge ${text}` }, tr(text));
const serviceOf = (source) => (source || "").replace(/^\//, "").replace(/-service$/, "");
const isFailure = (topic) => FAILURE_TOPICS.has(topic);

function pretty(value) {
  if (value === null || value === undefined) return "(no value)";
  try { return JSON.stringify(JSON.parse(value), null, 2); } catch { return value; }
}

function onLive(fn) {
  state.listeners.add(fn);
  return () => state.listeners.delete(fn);
}

// ---- the live connection -------------------------------------------------------------------

function connect() {
  const conn = document.getElementById("conn");
  const es = new EventSource("/api/live");
  es.onopen = () => { conn.textContent = tr("live"); conn.className = "conn live"; };
  es.onerror = () => { conn.textContent = tr("reconnecting…"); conn.className = "conn down"; };
  es.addEventListener("history", (e) => {
    state.history = JSON.parse(e.data).filter(Boolean);
    if (state.history.length) state.snapshot = state.history[state.history.length - 1];
    for (const fn of state.listeners) fn("snapshot", state.snapshot);
  });
  es.addEventListener("snapshot", (e) => {
    const snap = JSON.parse(e.data);
    state.snapshot = snap;
    state.history.push(snap);
    if (state.history.length > 300) state.history.shift();
    for (const fn of state.listeners) fn("snapshot", snap);
  });
  es.addEventListener("records", (e) => {
    const batch = JSON.parse(e.data);
    for (const fn of state.listeners) fn("records", batch);
  });
}

// ---- the chain -----------------------------------------------------------------------------

const W = 1000, TOP = 16, BOX_H = 92, LANE0 = 150, LANE_H = 46;
// A column for the lanes' names on the left, then one column per service.
const svcX = (i) => 300 + i * 195;

function chainView(main) {
  const c = state.contract;
  const topics = c.topics;
  const height = LANE0 + topics.length * LANE_H + 10;
  const svg = s("svg", { id: "chain", viewBox: `0 0 ${W} ${height}`, role: "img",
    "aria-label": "The services (boxes) and the topics (lanes) between them; dots are events as they flow" });
  const laneY = (i) => LANE0 + i * LANE_H;
  // Lanes: one per topic, the log every producer appends to and every consumer group reads.
  topics.forEach((t, i) => {
    const y = laneY(i);
    const lane = s("g", { class: "lane" + (isFailure(t) ? " failure" : ""), "data-topic": t },
      s("rect", { x: 20, y: y, width: W - 40, height: 34, rx: 6 }),
      s("text", { class: "label", x: 30, y: y + 15, text: t }),
      s("text", { class: "count", x: 30, y: y + 29, text: "" }));
    svg.append(lane);
  });
  // Services: a box each, and a bus line down to the lanes it touches.
  c.services.forEach((svc, i) => {
    const x = svcX(i);
    const touched = topics.map((t, j) => [t, j]).filter(([t]) => svc.consumes.includes(t) || svc.publishes.includes(t));
    const lowest = Math.max(...touched.map(([, j]) => j));
    svg.append(s("line", { class: "bus", x1: x, y1: TOP + BOX_H, x2: x, y2: laneY(lowest) + 17 }));
    for (const [t, j] of touched) {
      const y = laneY(j) + 17;
      const lane = svg.querySelector(`.lane[data-topic="${t}"]`);
      if (svc.publishes.includes(t)) lane.append(s("circle", { class: "pub", cx: x, cy: y, r: 7 }, s("title", { text: `${svc.name} publishes ${t}` })));
      else lane.append(s("circle", { class: "sub", cx: x, cy: y, r: 6 }, s("title", { text: `${svc.name} consumes ${t}` })));
    }
    const g = s("g", { class: "svc", id: `svc-${svc.short}`, "data-service": svc.short },
      s("rect", { x: x - 92, y: TOP, width: 184, height: BOX_H }),
      s("text", { class: "name", x: x - 80, y: TOP + 22, text: svc.name }),
      s("text", { class: "stat state", x: x - 80, y: TOP + 42, text: "" }),
      s("text", { class: "stat lag", x: x - 80, y: TOP + 60, text: "" }),
      s("text", { class: "stat behind", x: x - 10, y: TOP + 60, text: "" }),
      s("text", { class: "stat outbox", x: x - 80, y: TOP + 78, text: "" }));
    svg.append(g);
  });
  const dots = s("g", { class: "dots" });
  svg.append(dots);

  const controls = controlsPanel();
  const lagChart = h("div", { class: "panel chart" }, h("h2", {}, "Consumer lag per group"), h("div", { id: "lag-chart" }));
  const behindChart = h("div", { class: "panel chart" }, h("h2", {}, "Seconds behind per group"), h("div", { id: "behind-chart" }));
  const rateChart = h("div", { class: "panel chart" }, h("h2", {}, "Events per second per topic"), h("div", { id: "rate-chart" }));
  const latency = h("div", { class: "panel chart", id: "latency" }, h("h2", {}, "Saga end-to-end latency"), h("div", { class: "hist" }), h("div", { class: "hist-labels" }), h("p", { class: "muted summary" }));
  main.replaceChildren(
    h("h1", {}, "The event chain"),
    h("p", { class: "lead" }, "Each box is a service with its own database; each lane is a topic, a log on the broker. A filled dot is where a service publishes (through its outbox), a ring where its consumer group reads. Events move along the lanes as they happen. Lag is how far a group's committed offsets are behind the end of its topics, in records and in time (how long ago the oldest record it has not processed was written); the outbox is what a service has committed but not yet published."),
    h("div", { class: "grid chain-layout" },
      h("div", {},
        h("div", { class: "panel" }, svg,
          h("div", { class: "legend" },
            h("span", {}, h("i", { style: "background:var(--happy)" }), "the happy path"),
            h("span", {}, h("i", { style: "background:var(--failure)" }), "failure and compensation"),
            h("span", {}, h("i", { style: "background:var(--dlq)" }), "dead-lettered"))),
        h("div", { class: "grid charts" }, lagChart, behindChart, rateChart, latency)),
      controls));

  const charts = makeCharts();
  const render = (snap) => {
    if (!snap) return;
    for (const t of snap.topics) {
      const lane = svg.querySelector(`.lane[data-topic="${t.name}"] .count`);
      if (lane) {
        const dlq = snap.topics.find((d) => d.name === t.name + ".dlq");
        lane.textContent = tr(t.end === 1 ? "{0} record · {1}/s" : "{0} records · {1}/s", fmtNum(t.end), t.rate.toFixed(1)) + (dlq && dlq.records ? ` · DLQ ${dlq.records}` : "");
      }
    }
    for (const svc of snap.services) {
      const g = svg.querySelector(`#svc-${svc.short}`);
      if (!g) continue;
      g.classList.toggle("stopped", !svc.running && svc.started);
      g.classList.toggle("absent", !svc.started);
      const faults = [svc.fail_handlers && tr("handlers fail"), svc.slow_ms && tr("slow {0} ms", svc.slow_ms)].filter(Boolean).join(", ");
      const stateText = tr(svc.running ? "running" : svc.started ? "stopped" : "not started");
      g.querySelector(".state").textContent = stateText + (faults ? ` · ${faults}` : "");
      const lag = g.querySelector(".lag");
      lag.textContent = tr("lag {0}", fmtNum(svc.lag));
      lag.classList.toggle("hot", svc.lag > 0);
      const behind = g.querySelector(".behind");
      behind.textContent = svc.lag > 0 && svc.behind_ms !== null ? tr("· {0} behind", fmtBehind(svc.behind_ms)) : "";
      behind.classList.toggle("hot", svc.lag > 0);
      g.querySelector(".outbox").textContent = tr("outbox {0} pending", fmtNum(svc.outbox));
    }
    updateControls(controls, snap);
    charts.update();
    renderLatency(latency, snap.latency);
  };
  // A few dots show the flow; at hundreds of events a second, drawing each would cost the
  // machine more than it shows: at most one dot per topic per batch, and a bounded number in
  // flight.
  let inFlight = 0;
  const animate = (batch) => {
    // Hundreds of events a second: no moving dots (each frame of them is painted by the CPU);
    // the lanes that carried events light up instead, a few times a second.
    if (batch.records.length + batch.dropped > 12) {
      const busy = new Set(batch.records.map((r) => r.topic.replace(/\.dlq$/, "")));
      for (const lane of svg.querySelectorAll(".lane")) lane.classList.toggle("busy", busy.has(lane.dataset.topic));
      return;
    }
    for (const lane of svg.querySelectorAll(".lane.busy")) lane.classList.remove("busy");
    const seen = new Set();
    for (const r of batch.records) {
      if (inFlight > 24) break;
      if (seen.has(r.topic)) continue;
      seen.add(r.topic);
      const base = r.topic.replace(/\.dlq$/, "");
      const i = topics.indexOf(base);
      if (i < 0) continue;
      const producer = c.services.findIndex((svc) => svc.publishes.includes(base));
      const consumers = c.services.map((svc, j) => [svc, j]).filter(([svc]) => svc.consumes.includes(base)).map(([, j]) => j);
      const y = laneY(i) + 17;
      const kind = r.topic.endsWith(".dlq") ? "dlq" : isFailure(base) ? "failure" : "";
      for (const j of consumers) {
        const x0 = svcX(producer < 0 ? 0 : producer), x1 = svcX(j);
        const dot = s("circle", { class: `dot ${kind}`, cx: x0, cy: y, r: 5 });
        dots.append(dot);
        inFlight++;
        requestAnimationFrame(() => requestAnimationFrame(() => { dot.style.transform = `translateX(${x1 - x0}px)`; }));
        setTimeout(() => { dot.style.opacity = "0"; }, 750);
        setTimeout(() => { dot.remove(); inFlight--; }, 1500);
      }
    }
  };
  render(state.snapshot);
  const off = onLive((kind, data) => (kind === "snapshot" ? render(data) : animate(data)));
  return () => { off(); charts.destroy(); };
}

function controlsPanel() {
  const panel = h("div", { class: "panel controls" });
  panel.append(h("h2", {}, "Place an order"));
  for (const p of PRESETS) {
    panel.append(h("button", { class: "preset", "data-preset": p.name, onclick: () => placeOrder(p.body) },
      h("strong", {}, p.name), h("small", {}, p.why)));
  }
  panel.append(h("h2", {}, "Services"));
  const list = h("div", { id: "service-controls" });
  for (const svc of state.contract.services) {
    const stopBtn = h("button", { "data-action": "toggle", "data-service": svc.short,
      onclick: async (e) => {
        const running = e.currentTarget.dataset.running === "true";
        try {
          await api(`/api/services/${svc.short}/${running ? "stop" : "start"}`, { method: "POST" });
          toast(`${svc.name} ${running ? "stopped" : "started"}`);
        } catch (err) { toast(err.message); }
      } }, "…");
    const fail = h("input", { type: "checkbox", "data-fault": "fail", onchange: () => setFaults(svc.short, fail.checked, Number(slow.value)) });
    const slow = h("select", { "data-fault": "slow", "aria-label": `${svc.name}: delay per event`, onchange: () => setFaults(svc.short, fail.checked, Number(slow.value)) },
      [0, 100, 500, 2000].map((ms) => h("option", { value: ms }, ms ? tr("slow {0} ms", ms) : "no delay")));
    list.append(h("div", { class: "svcline", "data-service": svc.short },
      h("span", {}, h("strong", {}, svc.short), " ", h("span", { class: "svc-state" })),
      stopBtn,
      h("div", { class: "faults" }, h("label", {}, fail, "handlers fail"), slow)));
  }
  panel.append(list);
  panel.append(h("h2", {}, "Poison"));
  const topic = h("select", { "aria-label": "topic" }, state.contract.topics.map((t) => h("option", { value: t }, t)));
  const kind = h("select", { "aria-label": "kind" }, h("option", { value: "garbage" }, "garbage bytes"), h("option", { value: "invalid" }, "invalid JSON event"));
  panel.append(h("div", { class: "row" }, topic, kind,
    h("button", { onclick: async () => {
      try {
        const r = await api("/api/poison", { method: "POST", body: { topic: topic.value, kind: kind.value } });
        toast(`poison at ${r.topic}[${r.partition}]@${r.offset}: watch it go to ${r.topic}.dlq`);
      } catch (err) { toast(err.message); }
    } }, "Publish")));
  return panel;
}

function updateControls(panel, snap) {
  for (const svc of snap.services) {
    const line = panel.querySelector(`.svcline[data-service="${svc.short}"]`);
    if (!line) continue;
    line.querySelector(".svc-state").replaceChildren(badge(svc.running ? "running" : svc.started ? "stopped" : "not started"));
    const btn = line.querySelector("button[data-action=toggle]");
    btn.textContent = tr(svc.running ? "Stop" : "Start");
    btn.dataset.running = String(svc.running);
    const fail = line.querySelector("[data-fault=fail]");
    if (document.activeElement !== fail) fail.checked = svc.fail_handlers;
    const slow = line.querySelector("[data-fault=slow]");
    if (document.activeElement !== slow) slow.value = String(svc.slow_ms);
  }
}

async function setFaults(service, fail, slowMs) {
  try {
    await api(`/api/faults/${service}`, { method: "POST", body: { fail_handlers: fail, slow_ms: slowMs } });
    toast(`${service}: ${fail ? "handlers fail" : "handlers work"}${slowMs ? `, ${slowMs} ms per event` : ""}`);
  } catch (err) { toast(err.message); }
}

async function placeOrder(body) {
  try {
    const order = await api("/api/orders", { method: "POST", body });
    toast(h("span", {}, tr("order {0} placed: ", short(order.id)), h("a", { href: `#/orders/${order.id}` }, "follow its saga")));
    return order;
  } catch (err) { toast(err.message); }
}

function makeCharts() {
  const charts = [];
  const size = (el) => ({ width: Math.max(280, el.clientWidth - 4), height: 180 });
  const series = (names) => [{}].concat(names.map((n, i) => ({ label: n, stroke: `hsl(${(i * 67) % 360} 65% 45%)`, width: 1.5 })));
  const build = (id, names, pick) => {
    const el = document.getElementById(id);
    if (!el || typeof uPlot === "undefined") return;
    const data = () => [state.history.map((s) => s.time / 1000)].concat(names.map((n) => state.history.map((snap) => pick(snap, n))));
    const plot = new uPlot({ ...size(el), series: series(names), scales: { x: { time: true } }, axes: [{}, { size: 50 }], legend: { live: false } }, data(), el);
    charts.push({ plot, data, el });
  };
  build("lag-chart", SERVICES.map((s) => `${s}-service`), (snap, name) => (snap.services.find((x) => x.name === name) || {}).lag ?? null);
  build("behind-chart", SERVICES.map((s) => `${s}-service`), (snap, name) => { const b = (snap.services.find((x) => x.name === name) || {}).behind_ms; return b === null || b === undefined ? null : b / 1000; });
  build("rate-chart", state.contract.topics, (snap, name) => (snap.topics.find((t) => t.name === name) || {}).rate ?? null);
  return {
    update() { for (const c of charts) c.plot.setData(c.data()); },
    destroy() { for (const c of charts) c.plot.destroy(); },
  };
}

function renderLatency(panel, lat) {
  if (!lat) return;
  const max = Math.max(1, ...lat.buckets.map(([, ok, ko]) => ok + ko));
  panel.querySelector(".hist").replaceChildren(...lat.buckets.map(([, ok, ko]) =>
    h("div", { class: "bar", title: `${ok} confirmed, ${ko} cancelled` },
      h("span", { class: "ok", style: `height:${(ok / max) * 130}px` }),
      h("span", { class: "ko", style: `height:${(ko / max) * 130}px` }))));
  panel.querySelector(".hist-labels").replaceChildren(...lat.buckets.map(([le]) => h("span", {}, le === null ? "more" : `≤${le}`)));
  panel.querySelector(".summary").textContent = lat.count
    ? tr("{0} sagas (ms from order.created to the last event): p50 {1}, p95 {2}, p99 {3}, max {4}. Green: confirmed, red: cancelled.", fmtNum(lat.count), lat.p50, lat.p95, lat.p99, lat.max)
    : tr("No saga has finished yet: place an order.");
}

// ---- orders and their sagas ----------------------------------------------------------------

function ordersView(main, id) {
  if (id) return orderView(main, id);
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const status = params.get("status") || "";
  const chips = h("div", { class: "chips", role: "group", "aria-label": "Filter by status" },
    ["", ...STATUSES].map((st) => h("button", { "aria-pressed": String(st === status),
      onclick: () => { location.hash = st ? `#/orders?status=${st}` : "#/orders"; } }, st || "All", " ", h("span", { class: "muted", "data-count": st }))));
  const tbody = h("tbody");
  main.replaceChildren(
    h("h1", {}, "Orders"),
    h("p", { class: "lead" }, "The order service's view, newest first. Open one to see its saga: every event with its topic, partition and offset, and what caused it."),
    h("div", { class: "row" }, PRESETS.map((p) => h("button", { onclick: () => placeOrder(p.body) }, `+ ${p.name}`))),
    chips,
    h("div", { class: "panel" }, h("table", { id: "orders" },
      h("thead", {}, h("tr", {}, h("th", {}, "order"), h("th", {}, "customer"), h("th", { class: "num" }, "total"), h("th", {}, "status"), h("th", {}, "reason"), h("th", {}, "created"))),
      tbody)));
  const load = async () => {
    try {
      const q = status ? `?status=${status}&limit=100` : "?limit=100";
      const orders = await api(`/api/orders${q}`);
      tbody.replaceChildren(...orders.map((o) => h("tr", { class: "link", "data-order": o.id, tabindex: 0,
        onclick: () => { location.hash = `#/orders/${o.id}`; },
        onkeydown: (e) => { if (e.key === "Enter") location.hash = `#/orders/${o.id}`; } },
        h("td", { class: "mono" }, short(o.id)), h("td", {}, o.customer_id), h("td", { class: "num" }, fmtNum(o.total)),
        h("td", {}, badge(o.status)), h("td", { class: "muted" }, o.reason || ""), h("td", { class: "muted" }, new Date(o.created_at).toLocaleTimeString()))));
    } catch (err) { tbody.replaceChildren(h("tr", {}, h("td", { class: "error", colspan: 6 }, err.message))); }
  };
  const counts = (snap) => {
    if (!snap) return;
    let all = 0;
    for (const st of STATUSES) { const n = snap.orders[st] || 0; all += n; const el = chips.querySelector(`[data-count="${st}"]`); if (el) el.textContent = fmtNum(n); }
    chips.querySelector('[data-count=""]').textContent = fmtNum(all);
  };
  load();
  counts(state.snapshot);
  // New records mean new or moved orders: reload the list, at most every 2 s.
  let pending = null;
  const off = onLive((kind, data) => {
    if (kind === "snapshot") counts(data);
    else if (!pending) pending = setTimeout(() => { pending = null; load(); }, 2000);
  });
  return () => { off(); clearTimeout(pending); };
}

function orderView(main, id) {
  const head = h("div");
  const timeline = h("div", { class: "timeline", id: "timeline", role: "table", "aria-label": "The saga, one lane per service" });
  main.replaceChildren(h("p", {}, h("a", { href: "#/orders" }, "← orders")), head, timeline,
    h("p", { class: "muted" }, "Each event sits in the lane of the service that published it. Time is from order.created; \"+ms\" is the time since the event that caused it (ce_causationid). Compensation events are amber; dead-lettered copies red."));
  let latest = null;
  const load = async () => {
    try {
      latest = await api(`/api/orders/${id}`);
      render(latest);
    } catch (err) { head.replaceChildren(h("p", { class: "error" }, err.message)); }
  };
  const render = ({ order, events }) => {
    head.replaceChildren(
      h("h1", {}, "Order ", h("span", { class: "mono" }, id), " ", order ? badge(order.status) : ""),
      order ? h("p", { class: "lead" }, `${order.customer_id} · ${fmtNum(order.total)} ${order.currency} · `,
        order.items.map((i) => `${i.quantity} × ${i.sku}`).join(", "), order.reason ? ` · ${order.reason}` : "") : "");
    const start = (events.find((e) => e.topic === "order.created") || events[0] || {}).time || 0;
    const byId = new Map(events.filter((e) => e.id).map((e) => [e.id, e]));
    const rows = [...events].sort((a, b) => (a.time || a.timestamp) - (b.time || b.timestamp));
    timeline.replaceChildren(h("div", { class: "head", role: "columnheader" }, "time"),
      ...SERVICES.map((svc) => h("div", { class: "head", role: "columnheader" }, `${svc}-service`)));
    for (const e of rows) {
      const base = e.topic.replace(/\.dlq$/, "");
      const lane = e.topic.endsWith(".dlq") ? serviceOfDlq(e) : serviceOf(e.source);
      const cause = e.cause && byId.get(e.cause);
      const kind = e.topic.endsWith(".dlq") ? "dlq" : isFailure(base) ? "failure" : "";
      const card = h("div", { class: `event ${kind}`, "data-topic": e.topic, "data-offset": e.offset },
        h("div", {}, h("span", { class: "topic" }, e.topic),
          kind === "failure" && (base === "payment.refunded" || base === "order.cancelled") ? h("span", { class: "tag" }, "compensation") : "",
          kind === "dlq" ? h("span", { class: "tag" }, "dead-lettered") : ""),
        h("div", { class: "mono" }, tr("partition {0} · offset {1}", e.partition, e.offset)),
        h("div", { class: "mono muted" }, `ce_id …${short(e.id)}`, cause ? tr(" · caused by {0} …{1}", cause.topic, short(e.cause)) : e.cause ? tr(" · caused by …{0}", short(e.cause)) : ""),
        cause && e.time && cause.time ? h("div", { class: "muted" }, tr("+{0} ms after its cause", e.time - cause.time)) : "",
        e.error ? h("div", { class: "error" }, e.error) : "");
      timeline.append(h("div", { class: "when", role: "cell" }, e.time ? `${e.time - start} ms` : fmtTime(e.timestamp)));
      for (const svc of SERVICES) timeline.append(h("div", { class: "cell", role: "cell" }, svc === lane ? card : ""));
    }
  };
  load();
  // Reload when the order's records arrive (or may have been among those not sent), at most
  // twice a second, until its saga is over.
  let pending = null;
  const finished = () => latest && latest.order && ["CONFIRMED", "CANCELLED"].includes(latest.order.status) &&
    latest.events.some((e) => e.topic === "inventory.updated" || e.topic === "order.cancelled" || e.topic === "order.created.dlq");
  const off = onLive((kind, batch) => {
    if (kind !== "records" || pending) return;
    const mine = batch.records.some((r) => r.order === id);
    if (mine || (batch.dropped && !finished())) pending = setTimeout(() => { pending = null; load(); }, 500);
  });
  return () => { off(); clearTimeout(pending); };
}

// A dead-lettered copy sits in the lane of the group that gave up on it.
function serviceOfDlq(e) {
  return e.group ? serviceOf(e.group) : serviceOf(e.source);
}

// ---- topics --------------------------------------------------------------------------------

function topicsView(main, name) {
  if (name) return topicView(main, decodeURIComponent(name));
  const tbody = h("tbody");
  const cluster = h("p", { id: "cluster", class: "muted" });
  main.replaceChildren(h("h1", {}, "Topics"), cluster,
    h("p", { class: "lead" }, "Every topic on the broker, read through the Kafka protocol. A topic is split into partitions; each partition is a log whose records keep their offsets from the log start (earliest) to the end (latest). Records stay after they are read: consumers only move their offsets."),
    h("div", { class: "panel" }, h("table", { id: "topics" },
      h("thead", {}, h("tr", {}, h("th", {}, "topic"), h("th", { class: "num" }, "partitions"), h("th", { class: "num" }, "records"), h("th", { class: "num" }, "size"))), tbody)));
  const load = async () => {
    try {
      const { topics, brokers, bootstrap } = await api("/api/topics");
      cluster.textContent = `Bootstrap ${bootstrap}; ${brokers.length} broker(s): ` +
        brokers.map((b) => `node ${b.id} at ${b.host}:${b.port}`).join(", ") + ` · ${topics.length} topics`;
      tbody.replaceChildren(...topics.map((t) => h("tr", { class: "link", "data-topic": t.name, tabindex: 0,
        onclick: () => { location.hash = `#/topics/${encodeURIComponent(t.name)}`; },
        onkeydown: (e) => { if (e.key === "Enter") location.hash = `#/topics/${encodeURIComponent(t.name)}`; } },
        h("td", { class: "mono" }, t.name, t.internal ? [" ", h("span", { class: "badge internal", title: "Kafka's internal topic: the coordinators' state (committed offsets, transactions), replicated like any topic on a cluster" }, "internal")] : ""), h("td", { class: "num" }, t.partitions.length), h("td", { class: "num" }, fmtNum(t.records)), h("td", { class: "num" }, fmtBytes(t.bytes)))));
    } catch (err) { tbody.replaceChildren(h("tr", {}, h("td", { class: "error", colspan: 5 }, err.message))); }
  };
  load();
  const timer = setInterval(load, 2000);
  return () => clearInterval(timer);
}

function topicView(main, name) {
  const parts = h("tbody");
  const configs = h("tbody");
  const partition = h("select", { id: "partition", "aria-label": "partition" });
  const from = h("select", { id: "from", "aria-label": "start from" },
    ["latest", "earliest", "offset", "timestamp"].map((f) => h("option", { value: f }, f === "latest" ? "the latest 20" : f === "timestamp" ? "a time" : f)));
  const value = h("input", { id: "from-value", "aria-label": "offset or time", placeholder: "offset", size: 12 });
  const time = h("input", { id: "from-time", type: "datetime-local", step: 1, "aria-label": "time", hidden: true });
  from.onchange = () => { value.hidden = from.value !== "offset"; time.hidden = from.value !== "timestamp"; };
  from.onchange();
  const isolation = h("select", { id: "isolation", "aria-label": "isolation level", title: "read_committed shows only committed transactions and stops at the last stable offset; read_uncommitted shows every record, aborted ones too" },
    h("option", { value: "read_committed" }, "read_committed"), h("option", { value: "read_uncommitted" }, "read_uncommitted"));
  const follow = h("input", { type: "checkbox", id: "follow" });
  const list = h("div", { id: "records" });
  const key = h("input", { placeholder: "key (optional)", "aria-label": "key" });
  const headers = h("textarea", { rows: 2, placeholder: "headers, one per line: name: value", "aria-label": "headers" });
  const payload = h("textarea", { rows: 4, placeholder: "value", "aria-label": "value" });
  const target = h("select", { "aria-label": "partition to produce to" }, h("option", { value: "" }, "partition by key"));
  const produced = h("span", { class: "muted", role: "status" });
  main.replaceChildren(h("p", {}, h("a", { href: "#/topics" }, "← topics")),
    h("h1", {}, "Topic ", h("span", { class: "mono" }, name)),
    h("div", { class: "two" },
      h("div", { class: "panel" }, h("h2", {}, "Partitions"), h("table", { id: "partitions" },
        h("thead", {}, h("tr", {}, h("th", {}, "partition"), h("th", { class: "num" }, "earliest"), h("th", { class: "num" }, "latest"), h("th", { class: "num" }, "records"), h("th", { class: "num" }, "size"), h("th", { class: "num" }, "leader"))), parts)),
      h("div", { class: "panel" }, h("h2", {}, "Configs"), h("table", { id: "configs" }, configs))),
    h("div", { class: "panel", style: "margin-top:1rem" }, h("h2", {}, "Messages"),
      h("form", { class: "row", onsubmit: (e) => { e.preventDefault(); browse(); } },
        h("label", {}, "partition", partition), h("label", {}, "from", from), value, time, h("label", {}, "as", isolation),
        h("button", { class: "primary", type: "submit" }, "Load"),
        h("label", {}, follow, "follow live")),
      list),
    h("div", { class: "panel", style: "margin-top:1rem" }, h("h2", {}, "Produce a record"),
      h("form", { onsubmit: async (e) => {
        e.preventDefault();
        const hs = headers.value.split("\n").map((l) => l.trim()).filter(Boolean).map((l) => { const i = l.indexOf(":"); return i < 0 ? [l, ""] : [l.slice(0, i).trim(), l.slice(i + 1).trim()]; });
        try {
          const r = await api(`/api/topics/${encodeURIComponent(name)}/messages`, { method: "POST",
            body: { key: key.value || null, headers: hs, value: payload.value, partition: target.value === "" ? null : Number(target.value) } });
          produced.textContent = `produced to partition ${r.partition} at offset ${r.offset}`;
        } catch (err) { produced.textContent = err.message; }
      } }, h("div", { class: "row" }, key, target), headers, payload, h("div", { class: "row" }, h("button", { type: "submit" }, "Produce"), produced))));

  const recordEl = (r) => h("div", { class: "record", "data-partition": r.partition, "data-offset": r.offset },
    h("div", { class: "meta" }, h("strong", {}, tr("partition {0} · offset {1}", r.partition, r.offset)), h("span", { class: "muted" }, new Date(r.timestamp).toISOString()), h("span", {}, "key ", h("code", {}, r.key ?? "(none)")), h("span", { class: "muted" }, fmtBytes(r.size)),
      r.schema_id != null ? h("span", { class: "schema" }, tr("schema v{0} (id {1})", r.schema_version ?? "?", r.schema_id)) : null),
    r.headers.length ? h("table", { class: "headers" }, h("tbody", {}, r.headers.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", { class: "mono" }, v))))) : h("div", { class: "muted" }, "no headers"),
    h("pre", {}, pretty(r.value)));
  // Only the answer to the latest Load is shown: an earlier one that arrives late is dropped.
  let browsing = 0;
  async function browse() {
    const mine = ++browsing;
    const q = new URLSearchParams({ partition: partition.value || "0", from: from.value, limit: "20", isolation: isolation.value });
    if (from.value === "offset") q.set("value", value.value || "0");
    if (from.value === "timestamp") q.set("value", String(time.value ? new Date(time.value).getTime() : Date.now()));
    try {
      const r = await api(`/api/topics/${encodeURIComponent(name)}/messages?${q}`);
      if (mine !== browsing) return;
      list.replaceChildren(...(r.records.length ? r.records.map(recordEl) : [h("p", { class: "muted" }, "No records there.")]));
    } catch (err) { if (mine === browsing) list.replaceChildren(h("p", { class: "error" }, err.message)); }
  }
  const load = async () => {
    try {
      const { topic, configs: cfg } = await api(`/api/topics/${encodeURIComponent(name)}`);
      parts.replaceChildren(...topic.partitions.map((p) => h("tr", {}, h("td", {}, p.partition), h("td", { class: "num" }, fmtNum(p.start)), h("td", { class: "num" }, fmtNum(p.end)), h("td", { class: "num" }, fmtNum(p.end - p.start)), h("td", { class: "num" }, fmtBytes(p.bytes)), h("td", { class: "num" }, p.leader))));
      if (!partition.options.length) {
        for (const p of topic.partitions) { partition.append(h("option", { value: p.partition }, p.partition)); target.append(h("option", { value: p.partition }, `partition ${p.partition}`)); }
        browse();
      }
      configs.replaceChildren(...cfg.map((c) => h("tr", {}, h("td", { class: "mono" }, c.name), h("td", { class: "mono" }, c.value ?? ""), h("td", { class: "muted" }, c.is_default ? "default" : "set"))));
    } catch (err) { parts.replaceChildren(h("tr", {}, h("td", { class: "error" }, err.message))); }
  };
  load();
  const timer = setInterval(load, 3000);
  const off = onLive((kind, batch) => {
    if (kind !== "records" || !follow.checked) return;
    const shown = browsing;
    for (const r of batch.records) {
      if (r.topic !== name || String(r.partition) !== partition.value) continue;
      // The live feed carries where a record is; fetch it whole.
      api(`/api/topics/${encodeURIComponent(name)}/messages?partition=${r.partition}&from=offset&value=${r.offset}&limit=1&isolation=${isolation.value}`)
        .then((res) => { if (shown === browsing) for (const rec of res.records) list.prepend(recordEl(rec)); }).catch(() => {});
    }
  });
  return () => { clearInterval(timer); off(); };
}

// ---- consumer groups -----------------------------------------------------------------------

function groupsView(main, name) {
  if (name) return groupView(main, decodeURIComponent(name));
  const tbody = h("tbody");
  main.replaceChildren(h("h1", {}, "Consumer groups"),
    h("p", { class: "lead" }, "A group shares the partitions of its topics among its members (rebalancing when one joins or leaves) and commits how far it has read. Each service is one group; its consumers are the members. Lag is the records between a group's committed offset and the end of the log; behind is how long ago the oldest of them was written."),
    h("div", { class: "panel" }, h("table", { id: "groups" },
      h("thead", {}, h("tr", {}, h("th", {}, "group"), h("th", {}, "state"), h("th", { class: "num" }, "members"), h("th", { class: "num" }, "lag"), h("th", { class: "num" }, "behind"))), tbody)));
  const load = async () => {
    try {
      const { groups } = await api("/api/groups");
      tbody.replaceChildren(...groups.map((g) => h("tr", { class: "link", "data-group": g.name, tabindex: 0,
        onclick: () => { location.hash = `#/groups/${encodeURIComponent(g.name)}`; },
        onkeydown: (e) => { if (e.key === "Enter") location.hash = `#/groups/${encodeURIComponent(g.name)}`; } },
        h("td", { class: "mono" }, g.name), h("td", {}, badge(g.state)), h("td", { class: "num" }, g.members.length), h("td", { class: "num lag" }, fmtNum(g.lag)), h("td", { class: "num behind" }, fmtBehind(g.behind_ms)))));
    } catch (err) { tbody.replaceChildren(h("tr", {}, h("td", { class: "error", colspan: 4 }, err.message))); }
  };
  load();
  const timer = setInterval(load, 2000);
  return () => clearInterval(timer);
}

function groupView(main, name) {
  const head = h("div");
  const members = h("tbody");
  const parts = h("tbody");
  const to = h("select", { id: "reset-to", "aria-label": "reset to" }, ["earliest", "latest", "timestamp", "offset"].map((v) => h("option", { value: v }, v === "timestamp" ? "a time" : v)));
  const offset = h("input", { id: "reset-offset", placeholder: "offset", size: 10, hidden: true, "aria-label": "offset" });
  const time = h("input", { id: "reset-time", type: "datetime-local", step: 1, hidden: true, "aria-label": "time" });
  to.onchange = () => { offset.hidden = to.value !== "offset"; time.hidden = to.value !== "timestamp"; };
  const topic = h("select", { id: "reset-topic", "aria-label": "topic" }, h("option", { value: "" }, "every topic"));
  const resetBtn = h("button", { id: "reset", class: "primary", type: "submit" }, "Reset offsets");
  const why = h("p", { id: "reset-why", class: "warn", hidden: true });
  const result = h("p", { id: "reset-result", role: "status" });
  const svc = state.contract.services.find((s) => s.name === name);
  const stopBtn = svc ? h("button", { id: "group-service", onclick: async (e) => {
    const running = e.currentTarget.dataset.running === "true";
    try { await api(`/api/services/${svc.short}/${running ? "stop" : "start"}`, { method: "POST" }); toast(`${svc.name} ${running ? "stopped" : "started"}`); load(); } catch (err) { toast(err.message); }
  } }, "…") : "";
  main.replaceChildren(h("p", {}, h("a", { href: "#/groups" }, "← consumer groups")), head,
    h("div", { class: "two" },
      h("div", { class: "panel" }, h("h2", {}, "Members"), h("table", { id: "members" }, h("thead", {}, h("tr", {}, h("th", {}, "client id"), h("th", {}, "host"), h("th", {}, "partitions"))), members)),
      h("div", { class: "panel" }, h("h2", {}, "Reset offsets (reprocessing)"),
        h("p", { class: "note" }, "Moving a group's committed offsets back makes it read those records again when it next runs; moving them forward skips records. Kafka allows it only while the group has no active member, so stop the service first. The services are idempotent consumers: every event id they applied is in their consumed_events table, so a replayed event is recognised as a duplicate and changes nothing (no second charge, no second reservation)."),
        svc ? h("div", { class: "row" }, tr("This group is {0}:", svc.name), stopBtn) : "",
        why,
        h("form", { class: "row", onsubmit: async (e) => {
          e.preventDefault();
          const body = { to: to.value };
          if (to.value === "offset") body.value = Number(offset.value || 0);
          if (to.value === "timestamp") body.value = time.value ? new Date(time.value).getTime() : Date.now();
          if (topic.value) body.topic = topic.value;
          try {
            const r = await api(`/api/groups/${encodeURIComponent(name)}/reset`, { method: "POST", body });
            result.textContent = tr("Moved: ") + r.partitions.map((p) => `${p.topic}[${p.partition}] → ${p.offset}`).join(", ") + tr(". Start the service to see it re-read them.");
            load();
          } catch (err) { result.textContent = err.message; }
        } }, h("label", {}, "to", to), offset, time, h("label", {}, "topic", topic), resetBtn),
        result)),
    h("div", { class: "panel", style: "margin-top:1rem" }, h("h2", {}, "Offsets and lag per partition"),
      h("table", { id: "group-partitions" }, h("thead", {}, h("tr", {}, h("th", {}, "topic"), h("th", { class: "num" }, "partition"), h("th", {}, "owner"), h("th", { class: "num" }, "committed"), h("th", { class: "num" }, "log end"), h("th", { class: "num" }, "lag"), h("th", { class: "num" }, "behind"))), parts)));
  to.onchange();
  const load = async () => {
    let g;
    try { g = await api(`/api/groups/${encodeURIComponent(name)}`); } catch (err) { head.replaceChildren(h("h1", {}, name), h("p", { class: "error" }, err.message)); return; }
    head.replaceChildren(h("h1", {}, "Group ", h("span", { class: "mono" }, g.name), " ", badge(g.state), " ", h("span", { class: "muted", id: "group-lag" }, tr("lag {0}", fmtNum(g.lag))), " ", h("span", { class: "muted", id: "group-behind" }, g.lag > 0 ? tr("{0} behind", fmtBehind(g.behind_ms)) : "")));
    members.replaceChildren(...(g.members.length ? g.members.map((m) => h("tr", {}, h("td", { class: "mono" }, m.client_id), h("td", { class: "mono" }, m.client_host),
      h("td", { class: "mono" }, m.assignment.map(([t, ps]) => `${t} ${JSON.stringify(ps)}`).join(" ")))) : [h("tr", {}, h("td", { colspan: 3, class: "muted" }, "No active member."))]));
    parts.replaceChildren(...g.partitions.map((p) => h("tr", {}, h("td", { class: "mono" }, p.topic), h("td", { class: "num" }, p.partition), h("td", { class: "mono muted" }, p.owner || "–"),
      h("td", { class: "num" }, fmtNum(p.committed)), h("td", { class: "num" }, fmtNum(p.end)), h("td", { class: "num" }, fmtNum(p.lag)), h("td", { class: "num" }, p.lag > 0 ? fmtBehind(p.behind_ms) : "0"))));
    const topics = [...new Set(g.partitions.map((p) => p.topic))];
    if (topic.options.length !== topics.length + 1) topic.replaceChildren(h("option", { value: "" }, "every topic"), ...topics.map((t) => h("option", { value: t }, t)));
    const active = g.members.length > 0;
    resetBtn.disabled = active;
    why.hidden = !active;
    why.textContent = active ? tr("{0} member(s) are active: stop the group's consumers first, then reset.", g.members.length) : "";
    if (svc && state.snapshot) {
      const live = state.snapshot.services.find((s) => s.name === svc.name);
      if (live) { stopBtn.textContent = tr(live.running ? "Stop {0}" : "Start {0}", svc.short); stopBtn.dataset.running = String(live.running); }
    }
  };
  load();
  const timer = setInterval(load, 1500);
  return () => clearInterval(timer);
}

// ---- dead-letter queues --------------------------------------------------------------------

function dlqView(main) {
  const body = h("div");
  // The records whose details are open stay open when the page refreshes.
  const opened = new Set();
  main.replaceChildren(h("h1", {}, "Dead-letter queues"),
    h("p", { class: "lead" }, "A record a service can never process (not JSON, a payload that breaks a rule, a handler that keeps failing) is published to <topic>.dlq with headers that say where it came from, which consumer group gave up on it and why, so its partition is never blocked. Replay is a redrive: once the cause is fixed, each waiting record goes back to its original topic addressed to the group that dead-lettered it (header dlq_redrive_group), and only that group processes it again; the other groups skip it. The consumer group dlq-replay commits how far replay has gone, so a replayed record is marked replayed and is never sent twice."),
    body);
  const replay = async (t, query) => {
    try {
      const res = await api(`/api/dlq/${t}/replay${query}`, { method: "POST" });
      toast(tr("replayed {0} record(s) of {1}", res.replayed, res.topic) + (res.already_replayed ? ` (${res.already_replayed} replayed before)` : ""));
      load();
    } catch (err) { toast(err.message); }
  };
  const load = async () => {
    const sections = [];
    for (const t of state.contract.topics) {
      let r;
      try { r = await api(`/api/dlq/${t}`); } catch (err) { sections.push(h("p", { class: "error" }, err.message)); continue; }
      const header = (rec, name) => ((rec.headers || []).find((p) => p[0] === name) || [])[1] || "–";
      sections.push(h("div", { class: "panel", style: "margin-bottom:1rem", "data-dlq": r.topic },
        h("div", { class: "row" }, h("h2", { style: "margin:0" }, h("span", { class: "mono" }, r.topic)),
          h("span", { class: "count" }, tr("{0} record(s), {1} waiting", r.records.length, r.waiting)),
          r.waiting ? h("button", { "data-replay": t, title: "Send every waiting record back to the group that dead-lettered it", onclick: () => replay(t, "") }, "Replay all waiting") : "",
          // One button per group with waiting records: redrive only what that group gave up on.
          [...new Set(r.records.filter((rec) => !rec.replayed).map((rec) => header(rec, "dlq_consumer_group")))].map((g) =>
            h("button", { "data-replay-group": g, title: "Send the waiting records this group dead-lettered back to it", onclick: () => replay(t, `?group=${encodeURIComponent(g)}`) }, tr("Replay {0}'s", g)))),
        r.records.length ? h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "at"), h("th", {}, "state"), h("th", {}, "from"), h("th", {}, "group"), h("th", { class: "num" }, "attempts"), h("th", {}, "error"), h("th", {}, ""))),
          h("tbody", {}, r.records.map((rec) => h("tr", { "data-at": `${rec.partition}@${rec.offset}`, "data-state": rec.replayed ? "replayed" : "waiting" },
            h("td", { class: "mono" }, `${rec.partition}@${rec.offset}`),
            h("td", {}, rec.replayed ? "replayed" : "waiting"),
            h("td", { class: "mono" }, `${header(rec, "dlq_original_topic")}[${header(rec, "dlq_original_partition")}]@${header(rec, "dlq_original_offset")}`),
            h("td", {}, header(rec, "dlq_consumer_group")), h("td", { class: "num" }, header(rec, "dlq_attempts")),
            h("td", { class: "error" }, h("details", { open: opened.has(`${t}/${rec.partition}@${rec.offset}`),
              ontoggle: (e) => { const k = `${t}/${rec.partition}@${rec.offset}`; if (e.currentTarget.open) opened.add(k); else opened.delete(k); } },
              h("summary", {}, header(rec, "dlq_error")),
              h("dl", { class: "record" }, (rec.headers || []).flatMap(([k, v]) => [h("dt", { class: "mono" }, k), h("dd", { class: "mono" }, v)]),
                h("dt", {}, "key"), h("dd", { class: "mono" }, rec.key ?? "(none)"),
                h("dt", {}, "value"), h("dd", {}, h("pre", {}, pretty(rec.value)))))),
            h("td", {}, rec.replayed ? "" : h("button", { "data-replay-one": `${rec.partition}@${rec.offset}`, title: "Send this record back to its group", onclick: () => replay(t, `?partition=${rec.partition}&offset=${rec.offset}`) }, "Replay")))))) : ""));
    }
    body.replaceChildren(...sections);
  };
  load();
  const timer = setInterval(load, 3000);
  return () => clearInterval(timer);
}

// ---- brokers -------------------------------------------------------------------------------

function brokersView(main) {
  const nodes = h("tbody");
  const parts = h("tbody");
  const note = h("p", { id: "brokers-note", class: "note", hidden: true });
  main.replaceChildren(h("h1", {}, "Brokers"),
    h("p", { class: "lead" }, "Every partition has one leader, which takes the writes and serves the reads, and followers that copy it. The replicas that are caught up form the ISR (in-sync replicas); a write with acks=all is acknowledged once every one of them has it, and needs at least min.insync.replicas of them. The controller, elected by the nodes' Raft quorum (KRaft), fences a node that stops and gives each partition it led to another replica of the ISR, at a higher leader epoch. Stop a node and watch its partitions move and the ISRs shrink; start it again and watch it catch up and rejoin them. Isolate a node instead (a network partition: it keeps running, cut off from the others and from every client) and it is fenced the same way; reconnected, it cuts off what only it wrote and catches up."),
    note,
    h("div", { class: "panel" }, h("h2", {}, "Nodes"),
      h("table", { id: "nodes" }, h("thead", {}, h("tr", {}, h("th", {}, "node"), h("th", {}, "address"), h("th", {}, "state"), h("th", {}, "role"), h("th", { class: "num" }, "leads"), h("th", {}, ""))), nodes)),
    h("div", { class: "panel", style: "margin-top:1rem" }, h("h2", {}, "Partitions"),
      h("p", { class: "note" }, "Replicas in bold lead; replicas struck through are out of the ISR."),
      h("table", { id: "placements" }, h("thead", {}, h("tr", {}, h("th", {}, "topic"), h("th", { class: "num" }, "partition"), h("th", { class: "num" }, "leader"), h("th", { class: "num" }, "epoch"), h("th", {}, "replicas"), h("th", {}, "in sync"))), parts)));
  const act = async (id, action) => {
    const done = { stop: "stopped", start: "started", isolate: "isolated", reconnect: "reconnected" }[action];
    try { await api(`/api/nodes/${id}/${action}`, { method: "POST" }); toast(`node ${id} ${done}`); load(); } catch (err) { toast(err.message); }
  };
  const isolation = (n) => (n.keeps_clients ? "isolated from the other nodes" : "isolated");
  const state_of = (n) => (n.isolated ? (n.live ? `${isolation(n)}, not fenced yet` : isolation(n)) : n.running ? (n.live ? "up" : "starting") : (n.live ? "stopped, not fenced yet" : "down"));
  const button = (n, action, label) => h("button", { "data-node-action": `${action}-${n.id}`, onclick: () => act(n.id, action) }, label);
  const actions = (n) => !n.running ? [button(n, "start", "Start")]
    : [button(n, "stop", "Stop"), " ", n.isolated ? button(n, "reconnect", "Reconnect") : button(n, "isolate", "Isolate")];
  const load = async () => {
    let r;
    try { r = await api("/api/nodes"); } catch (err) {
      note.hidden = false;
      note.textContent = `${err.message}. The lab's own broker shows its nodes here.`;
      return;
    }
    note.hidden = r.nodes.length > 1;
    note.textContent = tr("The lab runs its broker as one node. Start it with --nodes 3 to run a three-node cluster: every topic on three replicas.");
    nodes.replaceChildren(...r.nodes.map((n) => h("tr", { "data-node": n.id, "data-state": state_of(n) },
      h("td", { class: "num" }, n.id), h("td", { class: "mono" }, n.address), h("td", {}, badge(state_of(n).split(",")[0])),
      h("td", {}, n.controller ? "controller" : ""), h("td", { class: "num" }, n.leads),
      h("td", {}, r.nodes.length > 1 ? actions(n) : ""))));
    parts.replaceChildren(...r.partitions.map((p) => h("tr", { "data-partition": `${p.topic}[${p.partition}]` },
      h("td", { class: "mono" }, p.topic), h("td", { class: "num" }, p.partition),
      h("td", { class: "num leader" }, p.leader < 0 ? "none" : p.leader), h("td", { class: "num" }, p.leader_epoch),
      h("td", { class: "mono" }, p.replicas.map((id) => h(id === p.leader ? "b" : p.isr.includes(id) ? "span" : "s", {}, id, " "))),
      h("td", { class: "mono isr" }, p.isr.join(",")))));
  };
  load();
  const timer = setInterval(load, 1000);
  return () => clearInterval(timer);
}

// ---- schemas -------------------------------------------------------------------------------

function schemasView(main, arg) {
  const rows = h("tbody");
  const detail = h("section", { class: "schema-detail" });
  const note = h("p", { class: "muted" });
  const chosen = arg ? decodeURIComponent(arg) : null;
  main.replaceChildren(h("h1", {}, "Schemas"),
    h("p", { class: "muted" }, "The events' JSON Schemas in the lab's schema registry, generated by the services from their event types and registered at start: one subject per topic (<topic>-value), its versions, each version's id (the one records carry in their first five bytes) and the subject's compatibility level. Choose a subject to compare two of its versions."),
    note,
    h("table", { class: "schemas" }, h("thead", {}, h("tr", {}, h("th", {}, "subject"), h("th", {}, "level"), h("th", {}, "versions"))), rows),
    detail);
  (async () => {
    let r;
    try { r = await api("/api/schemas"); } catch (err) { note.textContent = err.message; return; }
    note.textContent = tr("Registry: {0} (Confluent's REST API)", r.registry);
    rows.replaceChildren(...r.subjects.map((sub) => h("tr", { "data-subject": sub.subject, class: sub.subject === chosen ? "active" : null },
      h("td", { class: "mono" }, h("a", { href: `#/schemas/${encodeURIComponent(sub.subject)}` }, sub.subject)),
      h("td", {}, sub.level),
      h("td", { class: "mono" }, sub.versions.map((v) => `v${v.version} (id ${v.id})`).join(", ")))));
    const subject = r.subjects.find((sub) => sub.subject === chosen);
    if (subject) showSubject(detail, subject);
  })();
}

// A subject's two versions side by side: what changed, a line per property, and the schema.
function showSubject(detail, subject) {
  const versions = subject.versions;
  const last = versions[versions.length - 1].version;
  const pick = (selected) => h("select", {}, versions.map((v) => h("option", { value: v.version, selected: v.version === selected }, `v${v.version}`)));
  const from = pick(versions.length > 1 ? versions[versions.length - 2].version : last);
  const to = pick(last);
  const lines = h("div", { class: "diff mono" });
  const schema = h("pre", {});
  const kinds = { "+": "add", "-": "del", "~": "chg" };
  const show = async () => {
    schema.textContent = JSON.stringify(versions.find((v) => v.version === Number(to.value)).schema, null, 2);
    try {
      const d = await api(`/api/schemas/${encodeURIComponent(subject.subject)}/diff?from=${from.value}&to=${to.value}`);
      lines.replaceChildren(...d.lines.map((l) => h("div", { class: `diff-${kinds[l[0]] || "same"}` }, l)));
    } catch (err) { lines.replaceChildren(h("p", { class: "error" }, err.message)); }
  };
  from.onchange = show;
  to.onchange = show;
  detail.replaceChildren(h("h2", { class: "mono" }, subject.subject),
    h("div", { class: "controls" }, h("label", {}, "from ", from), h("label", {}, "to ", to)),
    lines, h("h3", {}, "The schema of the second version"), schema);
  show();
}

// ---- routing -------------------------------------------------------------------------------

function route() {
  if (state.view) state.view();
  const [path] = location.hash.replace(/^#/, "").split("?");
  const [, view = "", arg] = path.split("/");
  const main = document.getElementById("view");
  const views = { "": chainView, orders: ordersView, topics: topicsView, groups: groupsView, dlq: dlqView, brokers: brokersView, schemas: schemasView };
  const render = views[view] || chainView;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === (view || "chain"));
  state.view = render(main, arg) || null;
}

// The header is static HTML: its words are put in the page's language once, and a switch offers
// the other language.
function translateHeader() {
  document.documentElement.lang = LANG;
  for (const el of document.querySelectorAll("header .brand, nav a, #conn")) el.textContent = tr(el.textContent);
  const other = LANG === "ko" ? "en" : "ko";
  document.querySelector("header").append(h("button", { id: "lang", class: "lang", lang: other,
    onclick: () => setLang(other) }, other === "ko" ? "한국어" : "English"));
}

async function start() {
  translateHeader();
  state.contract = await api("/api/contract");
  connect();
  window.addEventListener("hashchange", route);
  route();
}

start().catch((err) => {
  document.getElementById("view").replaceChildren(h("p", { class: "error" }, `The dashboard could not start: ${err.message}`));
});
