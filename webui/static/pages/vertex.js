// A selected vertex's details on the job page (`#/jobs/<id>/vertices/<vid>[/<tab>]`), as
// Flink 1.20's vertex drawer shows them, one tab per route:
// - subtasks: `jobs/<id>/vertices/<vid>` plus each subtask's busy / back-pressured / idle
//   share from `.../backpressure` (only while the vertex runs);
// - taskmanagers: `.../taskmanagers`;  watermarks: `.../watermarks`;
// - accumulators: `.../accumulators` and `.../subtasks/accumulators`;
// - backpressure: `.../backpressure`;
// - metrics: the names from `.../metrics`; the metrics the user picks (kept per vertex in
//   localStorage) are fetched in one `.../metrics?get=a,b` per refresh and drawn as uPlot
//   charts that grow with every refresh.
// Only the shown tab's endpoints are called. `pages/job.js` calls `Flint.vertexDetail
// .refresh(...)` on every refresh of a vertex route; everything is updated in place.
"use strict";

(function () {
  const { byId, el, setText, isNum, formatBytes, formatDuration, formatTime, formatAgo, formatCount, metric,
    taskSummary, getJson, placeholderRow } = Flint;

  const TABS = [
    ["subtasks", "Subtasks"],
    ["taskmanagers", "TaskManagers"],
    ["watermarks", "Watermarks"],
    ["accumulators", "Accumulators"],
    ["backpressure", "BackPressure"],
    ["metrics", "Metrics"],
  ];

  const syncRows = Flint.syncRows;
  const base = (ctx) => `jobs/${ctx.jid}/vertices/${ctx.vid}`;
  const ratio = (r) => (isNum(r) ? `${Math.round(r * 100)}%` : "–");
  const badge = (state) => {
    const s = String(state || "UNKNOWN");
    return el("span", { class: `badge state-${s.toLowerCase()}` }, s);
  };
  const levelBadge = (level) => el("span", { class: `badge bp-${String(level || "none").toLowerCase()}` },
    level ? String(level).toUpperCase() : "–");
  // Task manager ids (`host:port-suffix`) are safe in a fragment as they are.
  const tmHref = (id) => `#/taskmanagers/${id}`;
  const tmLink = (id, text) => (id ? el("a", { href: tmHref(id) }, text) : text);

  // Rows of a table, or one placeholder row when there are none.
  function fill(tableId, rows, columns, empty) {
    syncRows(byId(tableId).tBodies[0], rows.length ? rows : [placeholderRow(columns, empty)]);
  }

  // ---- Subtasks -------------------------------------------------------------------

  async function renderSubtasks(ctx, vertex) {
    const running = vertex.status === "RUNNING";
    const [detail, bp] = await Promise.all([
      getJson(base(ctx)),
      running ? getJson(`${base(ctx)}/backpressure`).catch(() => null) : null,
    ]);
    if (!ctx.isCurrent()) return;
    setText("subtasks-vertex", detail.name);
    const load = new Map(((bp && bp.subtasks) || []).map((s) => [s.subtask, s]));
    const rows = (detail.subtasks || []).map((t) => {
      const l = load.get(t.subtask) || {};
      const tm = t["taskmanager-id"];
      const attrs = { "data-subtask": t.subtask };
      if (tm) attrs["data-tm-id"] = tm;
      return el("tr", attrs,
        el("td", { class: "num", "data-col": "subtask" }, t.subtask),
        el("td", { "data-col": "status" }, badge(t.status)),
        el("td", { class: "num", "data-col": "attempt" }, t.attempt),
        el("td", { class: "mono", "data-col": "host" }, tmLink(tm, t.endpoint || t.host)),
        el("td", { class: "num", "data-col": "read-records" }, formatCount(metric(t, "read-records"))),
        el("td", { class: "num", "data-col": "write-records" }, formatCount(metric(t, "write-records"))),
        el("td", { class: "num", "data-col": "read-bytes" }, formatBytes(metric(t, "read-bytes"))),
        el("td", { class: "num", "data-col": "write-bytes" }, formatBytes(metric(t, "write-bytes"))),
        el("td", { class: "num", "data-col": "busy" }, ratio(l.busyRatio)),
        el("td", { class: "num", "data-col": "backpressured" }, ratio(l.ratio)),
        el("td", { class: "num", "data-col": "idle" }, ratio(l.idleRatio)),
        el("td", { "data-col": "start-time" }, formatTime(t["start-time"])),
        el("td", { class: "num", "data-col": "duration" }, formatDuration(t.duration)));
    });
    fill("subtasks-table", rows, 13, "No subtasks");
  }

  // ---- TaskManagers ------------------------------------------------------------------

  async function renderTaskManagers(ctx) {
    const answer = await getJson(`${base(ctx)}/taskmanagers`);
    if (!ctx.isCurrent()) return;
    const rows = (answer.taskmanagers || []).map((tm) => {
      const id = tm["taskmanager-id"];
      return el("tr", { "data-tm-id": id, class: "clickable" },
        el("td", { class: "mono", "data-col": "id" }, tmLink(id, id)),
        el("td", { class: "mono", "data-col": "host" }, tm.endpoint || tm.host),
        el("td", { class: "num", "data-col": "read-records" }, formatCount(metric(tm, "read-records"))),
        el("td", { class: "num", "data-col": "write-records" }, formatCount(metric(tm, "write-records"))),
        el("td", { class: "num", "data-col": "read-bytes" }, formatBytes(metric(tm, "read-bytes"))),
        el("td", { class: "num", "data-col": "write-bytes" }, formatBytes(metric(tm, "write-bytes"))),
        el("td", { "data-col": "start-time" }, formatTime(tm["start-time"])),
        el("td", { "data-col": "end-time" }, formatTime(tm["end-time"])),
        el("td", { class: "num", "data-col": "duration" }, formatDuration(tm.duration)),
        el("td", { "data-col": "tasks" }, taskSummary(tm["status-counts"])),
        el("td", { "data-col": "status" }, badge(tm.status)));
    });
    fill("vertex-taskmanagers-table", rows, 11, "No task managers run this vertex");
  }

  // ---- Watermarks ------------------------------------------------------------------

  const NO_WATERMARK = "No Watermark";
  // Long.MIN_VALUE (no watermark yet) and anything near it.
  const isNoWatermark = (v) => !Number.isFinite(Number(v)) || Number(v) <= -9.2e18;

  async function renderWatermarks(ctx) {
    const answer = await getJson(`${base(ctx)}/watermarks`);
    if (!ctx.isCurrent()) return;
    const marks = (Array.isArray(answer) ? answer : [])
      .map((m) => ({ subtask: Number(String(m.id).split(".")[0]), value: String(m.value) }))
      .sort((a, b) => a.subtask - b.subtask);
    const rows = marks.map((m) => {
      const none = isNoWatermark(m.value);
      return el("tr", { "data-subtask": m.subtask },
        el("td", { class: "num", "data-col": "subtask" }, m.subtask),
        el("td", { class: "mono", "data-col": "watermark" }, none ? NO_WATERMARK : m.value),
        el("td", { "data-col": "time" }, none ? "–" : formatTime(Number(m.value))));
    });
    fill("watermarks-table", rows, 3,
      "No watermarks: the vertex has no input, or it is not running (watermarks come with event time)");
    const low = marks.length && marks.every((m) => !isNoWatermark(m.value))
      ? marks.map((m) => m.value).reduce((a, b) => (Number(a) <= Number(b) ? a : b))
      : null;
    setText("low-watermark", low === null ? NO_WATERMARK : `${low} (${formatTime(Number(low))})`);
  }

  // ---- Accumulators ----------------------------------------------------------------

  async function renderAccumulators(ctx) {
    const [vertexAcc, subtaskAcc] = await Promise.all([
      getJson(`${base(ctx)}/accumulators`),
      getJson(`${base(ctx)}/subtasks/accumulators`),
    ]);
    if (!ctx.isCurrent()) return;
    const rows = (vertexAcc["user-accumulators"] || []).map((a) =>
      el("tr", { "data-name": a.name },
        el("td", { class: "mono", "data-col": "name" }, a.name),
        el("td", { "data-col": "type" }, a.type),
        el("td", { class: "num", "data-col": "value" }, formatValue(a.value))));
    fill("accumulators-table", rows, 3, "No accumulators");
    const subRows = [];
    for (const s of subtaskAcc.subtasks || []) {
      for (const a of s["user-accumulators"] || []) {
        subRows.push(el("tr", { "data-subtask": s.subtask, "data-name": a.name },
          el("td", { class: "num", "data-col": "subtask" }, s.subtask),
          el("td", { class: "mono", "data-col": "host" }, s.endpoint || s.host),
          el("td", { class: "num", "data-col": "attempt" }, s.attempt),
          el("td", { class: "mono", "data-col": "name" }, a.name),
          el("td", { "data-col": "type" }, a.type),
          el("td", { class: "num", "data-col": "value" }, formatValue(a.value))));
      }
    }
    fill("subtask-accumulators-table", subRows, 6, "No accumulators");
  }

  // ---- BackPressure ------------------------------------------------------------------

  function setLevel(level) {
    const b = byId("backpressure-level");
    b.className = `badge bp-${String(level || "none").toLowerCase()}`;
    b.textContent = level ? String(level).toUpperCase() : "–";
  }

  async function renderBackPressure(ctx, vertex) {
    const running = vertex.status === "RUNNING";
    const bp = running ? await getJson(`${base(ctx)}/backpressure`) : null;
    if (!ctx.isCurrent()) return;
    if (!bp || (bp.status === "deprecated" && !bp.subtasks)) {
      setText("backpressure-status", running ? "sampling…" : "not running: cannot sample back pressure");
      setLevel(null);
      setText("backpressure-measured", "–");
      fill("backpressure-table", [], 5, running ? "No measurement yet" : "The vertex is not running");
      return;
    }
    setText("backpressure-status", bp.status);
    setLevel(bp["backpressure-level"] || bp.backpressureLevel);
    const end = bp["end-timestamp"];
    byId("backpressure-measured").textContent = formatAgo(end);
    byId("backpressure-measured").title = formatTime(end);
    const rows = (bp.subtasks || []).map((s) =>
      el("tr", { "data-subtask": s.subtask, "data-level": s["backpressure-level"] },
        el("td", { class: "num", "data-col": "subtask" }, s.subtask),
        el("td", { class: "num", "data-col": "backpressured" }, ratio(s.ratio)),
        el("td", { class: "num", "data-col": "idle" }, ratio(s.idleRatio)),
        el("td", { class: "num", "data-col": "busy" }, ratio(s.busyRatio)),
        el("td", { "data-col": "level" }, levelBadge(s["backpressure-level"]))));
    fill("backpressure-table", rows, 5, "No subtasks");
  }

  // ---- Metrics ------------------------------------------------------------------------

  const MAX_POINTS = 120;
  const memoryChoice = new Map(); // when localStorage is not available
  const storageKey = (key) => `flint.vertex-metrics.${key}`;

  function chosenMetrics(key) {
    try {
      const stored = JSON.parse(localStorage.getItem(storageKey(key)) || "null");
      if (Array.isArray(stored)) return stored.map(String);
    } catch (_) { /* no storage: memory only */ }
    return memoryChoice.get(key) || [];
  }

  function saveChosen(key, list) {
    memoryChoice.set(key, list);
    try {
      if (list.length) localStorage.setItem(storageKey(key), JSON.stringify(list));
      else localStorage.removeItem(storageKey(key));
    } catch (_) { /* memory only */ }
  }

  // Samples per vertex key and metric: { t: [seconds], v: [numbers], last: text }.
  const samples = new Map();
  function seriesOf(key, name) {
    if (!samples.has(key)) samples.set(key, new Map());
    const byName = samples.get(key);
    if (!byName.has(name)) byName.set(name, { t: [], v: [], last: null });
    return byName.get(name);
  }

  // The charts on screen: which vertex they belong to and, per metric, its element and plot.
  const charts = { key: null, byName: new Map() };

  function formatValue(text) {
    const n = Number(text);
    if (text === null || text === undefined) return "–";
    return Number.isFinite(n) && String(text).trim() !== "" ? n.toLocaleString("en-US", { maximumFractionDigits: 3 }) : String(text);
  }

  function plotWidth(box) {
    return Math.max(280, Math.floor(box.clientWidth || 600));
  }

  function createChart(key, name) {
    const remove = el("button", { type: "button", class: "metric-remove", title: `Remove ${name}`,
      "aria-label": `Remove ${name}`, "data-metric": name }, "×");
    const box = el("div", { class: "metric-plot" });
    const card = el("div", { class: "metric-chart", "data-metric": name },
      el("div", { class: "metric-head" },
        el("span", { class: "metric-name mono", title: name }, name),
        el("span", { class: "metric-value num", "data-col": "value" }, "–"),
        remove),
      box);
    remove.addEventListener("click", () => {
      saveChosen(key, chosenMetrics(key).filter((m) => m !== name));
      dropChart(name);
      Flint.refresh();
    });
    byId("metric-charts").append(card);
    const s = seriesOf(key, name);
    const plot = new uPlot({
      width: plotWidth(box),
      height: 170,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true } },
      series: [{}, { label: name, stroke: "#2f6fb0", width: 1.5, fill: "rgba(47, 111, 176, 0.08)", points: { show: false } }],
      axes: [{ stroke: "#66727f", grid: { stroke: "#eef0f3" } },
        { stroke: "#66727f", grid: { stroke: "#eef0f3" }, size: 72 }],
    }, [s.t.slice(), s.v.slice()], box);
    charts.byName.set(name, { card, plot, box });
  }

  function dropChart(name) {
    const c = charts.byName.get(name);
    if (!c) return;
    c.plot.destroy();
    c.card.remove();
    charts.byName.delete(name);
  }

  window.addEventListener("resize", () => {
    for (const c of charts.byName.values()) {
      if (c.box.clientWidth) c.plot.setSize({ width: plotWidth(c.box), height: 170 });
    }
  });

  function updatePicker(names, chosen) {
    const picker = byId("metric-picker");
    const free = names.filter((n) => !chosen.includes(n));
    const have = [...picker.options].map((o) => o.value);
    if (have.length !== free.length || have.some((v, i) => v !== free[i])) {
      const selected = picker.value;
      picker.replaceChildren(...free.map((n) => el("option", { value: n }, n)));
      if (free.includes(selected)) picker.value = selected;
    }
    picker.disabled = free.length === 0;
    byId("metric-add").disabled = free.length === 0;
    setText("metric-count", `${names.length} metrics, ${chosen.length} shown`);
  }

  async function renderMetrics(ctx) {
    const key = `${ctx.jid}/${ctx.vid}`;
    const chosen = chosenMetrics(key);
    const [names, values] = await Promise.all([
      getJson(`${base(ctx)}/metrics`),
      chosen.length ? getJson(`${base(ctx)}/metrics?get=${chosen.map(encodeURIComponent).join(",")}`) : [],
    ]);
    if (!ctx.isCurrent()) return;
    metricsKey = key;
    updatePicker((Array.isArray(names) ? names : []).map((m) => String(m.id)).sort(), chosen);
    const now = Date.now() / 1000;
    const latest = new Map((Array.isArray(values) ? values : []).map((m) => [String(m.id), m.value]));
    for (const name of chosen) {
      if (!latest.has(name)) continue;
      const s = seriesOf(key, name);
      const text = latest.get(name);
      s.last = text;
      const n = Number(text);
      if (Number.isFinite(n) && String(text).trim() !== "") {
        s.t.push(now);
        s.v.push(n);
        if (s.t.length > MAX_POINTS) { s.t.shift(); s.v.shift(); }
      }
    }
    if (charts.key !== key) {
      for (const name of [...charts.byName.keys()]) dropChart(name);
      charts.key = key;
    }
    for (const name of [...charts.byName.keys()]) if (!chosen.includes(name)) dropChart(name);
    for (const name of chosen) {
      if (!charts.byName.has(name)) createChart(key, name);
      const c = charts.byName.get(name);
      const s = seriesOf(key, name);
      c.card.querySelector(".metric-value").textContent = latest.has(name) ? formatValue(s.last) : "not reported";
      c.plot.setData([s.t.slice(), s.v.slice()]);
    }
    byId("metric-charts").classList.toggle("empty", chosen.length === 0);
  }

  // The vertex whose Metrics tab is shown (the Add button adds to it).
  let metricsKey = null;

  document.addEventListener("DOMContentLoaded", () => {
    byId("metric-add").addEventListener("click", () => {
      const name = byId("metric-picker").value;
      if (!metricsKey || !name) return;
      const list = chosenMetrics(metricsKey);
      if (!list.includes(name)) saveChosen(metricsKey, list.concat([name]));
      Flint.refresh();
    });
    // A TaskManager row opens that task manager's page (its id cell is a link too).
    byId("vertex-taskmanagers-table").tBodies[0].addEventListener("click", (e) => {
      const row = e.target.closest("tr[data-tm-id]");
      if (row && !e.target.closest("a")) location.hash = tmHref(row.dataset.tmId);
    });
  });

  // ---- Tabs -----------------------------------------------------------------------------

  const RENDER = {
    subtasks: renderSubtasks,
    taskmanagers: renderTaskManagers,
    watermarks: renderWatermarks,
    accumulators: renderAccumulators,
    backpressure: renderBackPressure,
    metrics: renderMetrics,
  };

  // ctx: { jid, job (jobs/<id>), vid, vtab (null: subtasks), isCurrent() }.
  async function refresh(ctx) {
    const vtab = ctx.vtab || "subtasks";
    const render = RENDER[vtab];
    if (!render) throw new Error(`no vertex tab ${vtab}`);
    const vertex = (ctx.job.vertices || []).find((v) => v.id === ctx.vid);
    if (!vertex) throw new Error(`job ${ctx.jid} has no vertex ${ctx.vid}`);
    setText("vertex-name", vertex.name);
    Flint.tabBar(byId("vertex-tabs"),
      TABS.map(([k, title]) => [k, title, `#/jobs/${ctx.jid}/vertices/${ctx.vid}/${k}`]), vtab);
    for (const pane of document.querySelectorAll("#vertex-section .vertex-tab")) {
      pane.hidden = pane.dataset.vtab !== vtab;
    }
    await render(ctx, vertex);
  }

  Flint.vertexDetail = { refresh, tabs: TABS.map(([k]) => k) };
})();
