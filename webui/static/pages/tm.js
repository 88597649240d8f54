// The Task Managers pages, modelled on Flink 1.20's:
// - `#/taskmanagers`: the list from `taskmanagers` (id, address, data port, last heartbeat,
//   slots, free slots, CPU cores, physical / free / managed / network / Flink memory);
// - `#/taskmanagers/<id>[/<tab>]`, one route per tab; the id may be percent-encoded (the
//   overview's links) or not (the vertex page's):
//   - `metrics` (default): `taskmanagers/<id>` (slots, resources, allocated slots with their
//     jobs, the memory model from `memoryConfiguration`, JVM memory and network buffers) and
//     one `taskmanagers/<id>/metrics?get=…` per refresh, feeding uPlot charts of CPU load
//     (`Status.JVM.CPU.Load`), memory (`Status.Process.Memory.Resident`,
//     `Status.JVM.Memory.Heap.Used`) and Netty shuffle buffers
//     (`Status.Shuffle.Netty.UsedMemorySegments` / `.TotalMemorySegments`);
//   - `logs`: `taskmanagers/<id>/logs`; each name opens `#/taskmanagers/<id>/logs/<name>`
//     (`taskmanagers/<id>/logs/<name>`);
//   - `log`, `stdout`, `thread-dump`: `taskmanagers/<id>/log`, `/stdout`, `/thread-dump`.
// Texts are fetched when a view is opened and again only by its Reload button
// (`#log-reload`), keeping the scroll position.
//
// The pieces shared with the Job Manager page (`pages/jm.js`, loaded after this file) are
// exported as `Flint.clusterViews`: `textView`, `logsTable`, `fillLogs`, `Chart`, `kvRow`,
// `formatMetric`.
"use strict";

(function () {
  const { byId, el, isNum, formatBytes, formatTime, formatAgo, formatCount, getJson, syncKeyedRows } = Flint;

  // ---- Shared views ----------------------------------------------------------------

  const num = (v) => (v === null || v === undefined || String(v).trim() === "" ? NaN : Number(v));
  const mib = (n) => (isNum(n) ? formatBytes(n * 1024 * 1024) : "–");
  const percent = (r) => (isNum(r) ? `${(r * 100).toFixed(1)}%` : "–");

  // A key/value row (`data-key`) for the small fact tables.
  function kvRow(key, label, ...values) {
    return el("tr", { "data-key": key },
      el("th", { scope: "row" }, label),
      ...values.map((v, i) => el("td", { class: "num", "data-col": `v${i}` }, v)));
  }

  function factTable(id, headers) {
    const t = el("table", { id, class: "facts-table" },
      el("thead", {}, el("tr", {}, ...headers.map((h, i) => el("th", { class: i ? "num" : "" }, h)))),
      el("tbody", {}));
    return { wrap: el("div", { class: "table-wrap" }, t), tbody: t.tBodies[0] };
  }

  // The text viewer (one for both pages: its element ids are unique): a title, a Reload
  // button and a `<pre class="log">`. `show(container, spec)` moves it into `container` and
  // loads `spec.url` unless that view is loaded already; any hash change forgets what was
  // loaded, so opening a view again loads it again.
  const textView = (() => {
    const title = el("span", { id: "log-title", class: "mono log-title" }, "");
    const reload = el("button", { id: "log-reload", type: "button" }, "Reload");
    const status = el("span", { id: "log-status", class: "log-status" }, "");
    const pre = el("pre", { id: "log-text", class: "log", tabindex: 0 }, "");
    const section = el("section", { id: "log-view", class: "log-view" },
      el("div", { class: "log-head" }, title, reload, status), pre);
    let spec = null;
    let loadedKey = null;

    async function load() {
      const s = spec;
      status.textContent = "loading…";
      let text;
      try {
        const response = await fetch(s.url, { cache: "no-store" });
        const body = await response.text();
        if (!response.ok) {
          let reason = body;
          try { reason = (JSON.parse(body).errors || [body]).join("; "); } catch (_) { /* plain text */ }
          text = `Not available (HTTP ${response.status}): ${reason}`;
        } else {
          text = s.transform ? s.transform(body) : body;
        }
      } catch (e) {
        text = `Not available: ${e.message}`;
      }
      if (spec !== s) return;
      const top = pre.scrollTop;
      const left = pre.scrollLeft;
      const pageY = window.scrollY;
      if (pre.textContent !== text) pre.textContent = text;
      pre.scrollTop = top;
      pre.scrollLeft = left;
      window.scrollTo(window.scrollX, pageY);
      pre.dataset.loaded = s.key;
      pre.dataset.loads = Number(pre.dataset.loads || 0) + 1;
      status.textContent = `${formatBytes(new Blob([text]).size)} · loaded ${formatTime(Date.now())}`;
    }

    reload.addEventListener("click", () => { if (spec) load(); });
    window.addEventListener("hashchange", () => { loadedKey = null; });

    // spec: { key, title, url, transform?(text) -> text }.
    function show(container, next) {
      if (section.parentNode !== container) container.append(section);
      spec = next;
      if (title.textContent !== next.title) title.textContent = next.title;
      if (loadedKey === next.key) return Promise.resolve();
      loadedKey = next.key;
      pre.textContent = "";
      pre.scrollTop = 0;
      delete pre.dataset.loaded;
      return load();
    }
    return { show };
  })();

  // Flink's thread dump answer as one text: every thread's stringified info.
  function threadDumpText(body) {
    const infos = JSON.parse(body).threadInfos || [];
    return infos.map((t) => String(t.stringifiedThreadInfo ?? t.threadName)).join("");
  }

  // The list of log files: name (a link), size, last modified.
  function logsTable(id) {
    const t = el("table", { id },
      el("thead", {}, el("tr", {}, el("th", {}, "Log Name"), el("th", { class: "num" }, "Size"),
        el("th", {}, "Last Modified"))),
      el("tbody", {}, Flint.placeholderRow(3, "Loading…")));
    return { wrap: el("div", { class: "table-wrap" }, t), tbody: t.tBodies[0] };
  }

  function fillLogs(tbody, logs, href) {
    const rows = [...logs].sort((a, b) => String(a.name).localeCompare(String(b.name))).map((l) =>
      el("tr", { "data-name": l.name },
        el("td", { class: "mono", "data-col": "name" }, el("a", { href: href(l.name) }, l.name)),
        el("td", { class: "num", "data-col": "size", title: `${formatCount(l.size)} bytes` }, formatBytes(l.size)),
        el("td", { "data-col": "mtime" }, formatTime(l.mtime))));
    syncKeyedRows(tbody, rows, "data-name", "No log files (the process logs to no file, or env.log.dir is empty)");
  }

  // A live uPlot chart of a few series, one sample per refresh (when any of its metrics is
  // reported), the last MAX_SAMPLES kept.
  // The chart is created once; `push` appends and calls `setData`; the card carries the
  // sample count as `data-samples`.
  const MAX_SAMPLES = 120;
  const COLOURS = ["#2f6fb0", "#2e7d4f", "#b3261e", "#9a6b00"];

  class Chart {
    // kind: "bytes" | "percent" | "count".
    constructor(id, title, labels, kind) {
      this.kind = kind;
      this.labels = labels;
      this.data = [[], ...labels.map(() => [])];
      this.values = el("span", { class: "metric-value num" }, "–");
      this.box = el("div", { class: "metric-plot" });
      this.card = el("div", { id, class: "metric-chart cluster-chart", "data-samples": 0 },
        el("div", { class: "metric-head" }, el("span", { class: "metric-name" }, title), this.values), this.box);
      this.plot = null;
    }

    format(v) {
      if (!isNum(v)) return "–";
      if (this.kind === "bytes") return formatBytes(v);
      if (this.kind === "percent") return `${v.toFixed(1)}%`;
      return formatCount(Math.round(v));
    }

    ensurePlot() {
      if (this.plot || !this.card.isConnected) return;
      const fmt = (v) => this.format(v);
      this.plot = new uPlot({
        width: Math.max(280, Math.floor(this.box.clientWidth || 480)),
        height: 180,
        legend: { show: this.labels.length > 1, live: false },
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: true }, y: this.kind === "percent" ? { range: (u, min, max) => [0, Math.max(5, max * 1.1)] } : {} },
        series: [{}, ...this.labels.map((label, i) => ({
          label, stroke: COLOURS[i % COLOURS.length], width: 1.5, points: { show: false },
          fill: i === 0 ? "rgba(47, 111, 176, 0.08)" : undefined, value: (u, v) => fmt(v),
        }))],
        axes: [{ stroke: "#66727f", grid: { stroke: "#eef0f3" } },
          { stroke: "#66727f", grid: { stroke: "#eef0f3" }, size: 78, values: (u, ticks) => ticks.map(fmt) }],
      }, this.data, this.box);
      Chart.all.add(this);
    }

    // `values`: one number per series (NaN: not reported this time).
    push(values) {
      this.values.textContent = values.map((v, i) => (this.labels.length > 1 ? `${this.labels[i]} ${this.format(v)}` : this.format(v))).join(" · ");
      if (!values.some(isNum)) return; // not reported (yet): no sample
      this.data[0].push(Date.now() / 1000);
      values.forEach((v, i) => this.data[i + 1].push(isNum(v) ? v : null));
      if (this.data[0].length > MAX_SAMPLES) this.data.forEach((a) => a.shift());
      this.card.dataset.samples = this.data[0].length;
      this.ensurePlot();
      if (this.plot) this.plot.setData(this.data);
    }

    reset() {
      this.data.forEach((a) => { a.length = 0; });
      this.card.dataset.samples = 0;
      this.values.textContent = "–";
      if (this.plot) this.plot.setData(this.data);
    }

    resize() {
      if (this.plot && this.box.clientWidth) {
        this.plot.setSize({ width: Math.max(280, Math.floor(this.box.clientWidth)), height: 180 });
      }
    }
  }
  Chart.all = new Set();
  window.addEventListener("resize", () => { for (const c of Chart.all) c.resize(); });

  // A metric value as the dashboard shows it (`kind` as for charts).
  function formatMetric(v, kind) {
    if (!isNum(v)) return "–";
    if (kind === "bytes") return formatBytes(v);
    if (kind === "percent") return percent(v);
    return formatCount(v);
  }

  // A row of cards (`spec`: [[key, label]]) with ids `<prefix>-card-<key>`; `set(key, text)`
  // changes a card's value only when it differs.
  function cardRow(prefix, spec) {
    const values = {};
    const box = el("div", { class: `cards ${prefix}-cards` }, ...spec.map(([k, label]) => {
      values[k] = el("div", { id: `${prefix}-card-${k}`, class: "card-value" }, "–");
      return el("div", { class: "card" }, el("div", { class: "card-label" }, label), values[k]);
    }));
    const set = (k, text) => { if (values[k].textContent !== String(text)) values[k].textContent = text; };
    return { box, set };
  }

  Flint.clusterViews = { textView, threadDumpText, logsTable, fillLogs, Chart, kvRow, factTable, formatMetric, num,
    cardRow };

  // ---- The list ----------------------------------------------------------------------

  const tmHref = (id, tab) => `#/taskmanagers/${encodeURIComponent(id)}` + (tab ? `/${tab}` : "");

  const listMain = Flint.page({
    name: "taskmanagers",
    nav: "taskmanagers",
    pattern: /^#\/taskmanagers\/?$/,
    refresh: () => refreshList(),
  });

  const LIST_COLUMNS = [
    ["id", "ID"], ["address", "Address"], ["data-port", "Data Port", true], ["heartbeat", "Last Heartbeat"],
    ["slots", "All Slots", true], ["free-slots", "Free Slots", true], ["cpu-cores", "CPU Cores", true],
    ["physical-memory", "Physical Memory", true], ["free-memory", "Free Memory", true],
    ["managed-memory", "Managed Memory", true], ["network-memory", "Network Memory", true],
    ["flink-memory", "Total Flink Memory", true],
  ];
  const listTable = el("table", { id: "tm-list-table" },
    el("thead", {}, el("tr", {}, ...LIST_COLUMNS.map(([, t, n]) => el("th", { class: n ? "num" : "" }, t)))),
    el("tbody", {}, Flint.placeholderRow(LIST_COLUMNS.length, "Loading…")));
  const listCount = el("span", { id: "tm-list-count", class: "jobs-count" }, "");
  listMain.append(
    el("p", { class: "crumbs" }, el("a", { href: "#/" }, "Overview"), " / Task Managers"),
    el("section", { "aria-labelledby": "tm-list-title" },
      el("h2", { id: "tm-list-title" }, "Task Managers ", listCount),
      el("div", { class: "table-wrap" }, listTable)));

  async function refreshList() {
    const answer = await getJson("taskmanagers");
    const tms = [...(answer.taskmanagers || [])].sort((a, b) => String(a.id).localeCompare(String(b.id)));
    listCount.textContent = `(${tms.length})`;
    const rows = tms.map((tm) => {
      const hw = tm.hardware || {};
      const mem = tm.memoryConfiguration || {};
      const cell = (col, value, cls, attrs) => el("td", { "data-col": col, class: cls || "num", ...(attrs || {}) }, value);
      return el("tr", { "data-tm-id": tm.id },
        cell("id", el("a", { href: tmHref(tm.id) }, tm.id), "mono"),
        cell("address", tm.path, "mono tm-path"),
        cell("data-port", tm.dataPort),
        cell("heartbeat", formatAgo(tm.timeSinceLastHeartbeat), "", { title: formatTime(tm.timeSinceLastHeartbeat) }),
        cell("slots", tm.slotsNumber),
        cell("free-slots", tm.freeSlots),
        cell("cpu-cores", hw.cpuCores),
        cell("physical-memory", formatBytes(hw.physicalMemory)),
        cell("free-memory", formatBytes(hw.freeMemory)),
        cell("managed-memory", formatBytes(hw.managedMemory)),
        cell("network-memory", formatBytes(mem.networkMemory)),
        cell("flink-memory", formatBytes(mem.totalFlinkMemory)));
    });
    syncKeyedRows(listTable.tBodies[0], rows, "data-tm-id", "No task managers registered");
  }

  // ---- One task manager ----------------------------------------------------------------

  const TABS = [["metrics", "Metrics"], ["logs", "Logs"], ["log", "Log"], ["stdout", "Stdout"],
    ["thread-dump", "Thread Dump"]];

  const main = Flint.page({
    name: "taskmanager",
    nav: "taskmanagers",
    // `#/taskmanagers/<id>[/<tab>[/<log name>]]`: ids contain `:` (raw or as %3A).
    pattern: /^#\/taskmanagers\/([^/?#]+)(?:\/([a-z-]+)(?:\/(.+))?)?\/?$/,
    refresh: (m) => refreshTm(decodeURIComponent(m[1]), m[2] || "metrics", m[3] ? decodeURIComponent(m[3]) : null),
  });

  const head = {
    id: el("span", { id: "tm-id", class: "mono" }, "–"),
    path: el("span", { id: "tm-path", class: "mono" }, "–"),
    dataPort: el("span", { id: "tm-data-port" }, "–"),
    heartbeat: el("span", { id: "tm-heartbeat" }, "–"),
  };
  const tabs = el("nav", { id: "tm-tabs", class: "tabs" });
  const panes = {};
  for (const [k] of TABS) panes[k] = el("div", { id: `tm-tab-${k}`, class: "tm-tab", "data-tab": k, hidden: "" });

  // Metrics tab skeleton.
  const cards = cardRow("tm", [["slots", "All Slots"], ["free-slots", "Free Slots"], ["cpu-cores", "CPU Cores"],
    ["physical-memory", "Physical Memory"], ["free-memory", "Free Memory"], ["cpu-load", "CPU Load"],
    ["threads", "Threads"]]);
  const charts = {
    cpu: new Chart("tm-chart-cpu", "CPU Load (Status.JVM.CPU.Load)", ["CPU"], "percent"),
    memory: new Chart("tm-chart-memory", "Memory", ["Resident", "Heap used"], "bytes"),
    network: new Chart("tm-chart-network", "Netty Shuffle Buffers (segments)", ["Used", "Total"], "count"),
  };
  const slotsTable = el("table", { id: "tm-slots-table" },
    el("thead", {}, el("tr", {}, el("th", { class: "num" }, "Slot"), el("th", {}, "Job"),
      el("th", { class: "num" }, "CPU Cores"), el("th", { class: "num" }, "Task Heap"),
      el("th", { class: "num" }, "Task Off-Heap"), el("th", { class: "num" }, "Managed Memory"),
      el("th", { class: "num" }, "Network Memory"))),
    el("tbody", {}));
  const resources = factTable("tm-resources-table", ["Resource", "Total", "Allocated", "Free"]);
  const memoryModel = factTable("tm-memory-table", ["Flink Memory Model", "Configured", "Used (metric)"]);
  const jvmMemory = factTable("tm-jvm-table", ["JVM / Process Memory", "Used", "Committed", "Maximum"]);
  const network = factTable("tm-network-table", ["Netty Shuffle Buffers", "Value"]);
  const section = (id, title, ...children) =>
    el("section", { "aria-labelledby": id }, el("h3", { id, class: "section-title" }, title), ...children);
  panes.metrics.append(
    cards.box,
    el("div", { id: "tm-charts", class: "metric-charts cluster-charts" }, charts.cpu.card, charts.memory.card, charts.network.card),
    section("tm-slots-title", "Allocated Slots", el("div", { class: "table-wrap" }, slotsTable)),
    el("div", { class: "fact-grid" },
      section("tm-resources-title", "Resources", resources.wrap),
      section("tm-memory-title", "Memory", memoryModel.wrap),
      section("tm-jvm-title", "JVM and Process", jvmMemory.wrap),
      section("tm-network-title", "Network", network.wrap)));

  const logs = logsTable("tm-logs-table");
  panes.logs.append(logs.wrap);
  const textPanes = { log: panes.log, stdout: panes.stdout, "thread-dump": panes["thread-dump"] };
  const logFile = el("div", { id: "tm-logfile", class: "tm-tab", hidden: "" },
    el("p", { class: "crumbs" }, el("a", { id: "tm-logs-back", href: "#" }, "← All logs")));

  main.append(
    el("p", { class: "crumbs" }, el("a", { href: "#/" }, "Overview"), " / ",
      el("a", { href: "#/taskmanagers" }, "Task Managers"), " / Task Manager"),
    el("section", { class: "tm-head" },
      el("h2", {}, "Task Manager ", head.id),
      el("div", { class: "job-facts" },
        el("span", {}, "Address ", head.path), el("span", {}, "Data Port ", head.dataPort),
        el("span", {}, "Last Heartbeat ", head.heartbeat))),
    tabs, ...Object.values(panes), logFile);

  const METRICS = ["Status.JVM.CPU.Load", "Status.JVM.Memory.Heap.Used", "Status.Process.Memory.Resident",
    "Status.Flink.Memory.Managed.Used", "Status.Flink.Memory.Managed.Total", "Status.JVM.Threads.Count",
    "Status.Shuffle.Netty.AvailableMemorySegments", "Status.Shuffle.Netty.UsedMemorySegments",
    "Status.Shuffle.Netty.TotalMemorySegments", "Status.Shuffle.Netty.RequestedMemoryUsage"];

  let chartsFor = null;

  function renderHead(tm) {
    head.id.textContent = tm.id;
    head.path.textContent = tm.path ?? "–";
    head.dataPort.textContent = tm.dataPort ?? "–";
    head.heartbeat.textContent = formatAgo(tm.timeSinceLastHeartbeat);
    head.heartbeat.title = formatTime(tm.timeSinceLastHeartbeat);
  }

  function renderMetrics(id, tm, values) {
    const v = new Map((Array.isArray(values) ? values : []).map((m) => [String(m.id), num(m.value)]));
    const hw = tm.hardware || {};
    const set = cards.set;
    set("slots", tm.slotsNumber ?? "–");
    set("free-slots", tm.freeSlots ?? "–");
    set("cpu-cores", hw.cpuCores ?? "–");
    set("physical-memory", formatBytes(hw.physicalMemory));
    set("free-memory", formatBytes(hw.freeMemory));
    set("cpu-load", percent(v.get("Status.JVM.CPU.Load")));
    set("threads", formatCount(v.get("Status.JVM.Threads.Count")));

    if (chartsFor !== id) {
      for (const c of Object.values(charts)) c.reset();
      chartsFor = id;
    }
    const load = v.get("Status.JVM.CPU.Load");
    charts.cpu.push([isNum(load) ? load * 100 : NaN]);
    charts.memory.push([v.get("Status.Process.Memory.Resident"), v.get("Status.JVM.Memory.Heap.Used")]);
    charts.network.push([v.get("Status.Shuffle.Netty.UsedMemorySegments"), v.get("Status.Shuffle.Netty.TotalMemorySegments")]);

    // Allocated slots.
    const slotRows = (tm.allocatedSlots || []).map((s, i) => {
      const r = s.resource || {};
      return el("tr", { "data-slot": i, "data-job-id": s.jobId },
        el("td", { class: "num", "data-col": "slot" }, i),
        el("td", { class: "mono", "data-col": "job" }, Flint.jobLink(s.jobId, s.jobId)),
        el("td", { class: "num", "data-col": "cpu" }, r.cpuCores),
        el("td", { class: "num", "data-col": "task-heap" }, mib(r.taskHeapMemory)),
        el("td", { class: "num", "data-col": "task-off-heap" }, mib(r.taskOffHeapMemory)),
        el("td", { class: "num", "data-col": "managed" }, mib(r.managedMemory)),
        el("td", { class: "num", "data-col": "network" }, mib(r.networkMemory)));
    });
    syncKeyedRows(slotsTable.tBodies[0], slotRows, "data-slot", "No slot is allocated");

    // Resources: total / allocated / free (Flink's ResourceProfileInfo; memory in MiB).
    const total = tm.totalResource || {};
    const free = tm.freeResource || {};
    const used = (k) => (isNum(total[k]) && isNum(free[k]) ? total[k] - free[k] : undefined);
    syncKeyedRows(resources.tbody, [
      kvRow("slots", "Slots", tm.slotsNumber ?? "–", isNum(tm.slotsNumber) && isNum(tm.freeSlots) ? tm.slotsNumber - tm.freeSlots : "–", tm.freeSlots ?? "–"),
      kvRow("cpu", "CPU Cores", total.cpuCores ?? "–", used("cpuCores") ?? "–", free.cpuCores ?? "–"),
      kvRow("task-heap", "Task Heap", mib(total.taskHeapMemory), mib(used("taskHeapMemory")), mib(free.taskHeapMemory)),
      kvRow("task-off-heap", "Task Off-Heap", mib(total.taskOffHeapMemory), mib(used("taskOffHeapMemory")), mib(free.taskOffHeapMemory)),
      kvRow("managed", "Managed Memory", mib(total.managedMemory), mib(used("managedMemory")), mib(free.managedMemory)),
      kvRow("network", "Network Memory", mib(total.networkMemory), mib(used("networkMemory")), mib(free.networkMemory)),
    ], "data-key", "–");

    // The memory model as Flink's page draws it, with Flint's configured values.
    const mem = tm.memoryConfiguration || {};
    const m = tm.metrics || {};
    const segments = (a, b) => (isNum(a) && isNum(b) ? `${formatCount(a)} / ${formatCount(b)} segments` : "–");
    syncKeyedRows(memoryModel.tbody, [
      kvRow("framework-heap", "Framework Heap", formatBytes(mem.frameworkHeap), "–"),
      kvRow("task-heap", "Task Heap", formatBytes(mem.taskHeap), formatBytes(v.get("Status.JVM.Memory.Heap.Used"))),
      kvRow("managed", "Managed Memory", formatBytes(mem.managedMemory), formatBytes(v.get("Status.Flink.Memory.Managed.Used"))),
      kvRow("framework-off-heap", "Framework Off-Heap", formatBytes(mem.frameworkOffHeap), "–"),
      kvRow("task-off-heap", "Task Off-Heap", formatBytes(mem.taskOffHeap), "–"),
      kvRow("network", "Network", formatBytes(mem.networkMemory),
        segments(v.get("Status.Shuffle.Netty.UsedMemorySegments"), v.get("Status.Shuffle.Netty.TotalMemorySegments"))),
      kvRow("metaspace", "JVM Metaspace", formatBytes(mem.jvmMetaspace), "–"),
      kvRow("overhead", "JVM Overhead", formatBytes(mem.jvmOverhead), "–"),
      kvRow("total-flink", "Total Flink Memory", formatBytes(mem.totalFlinkMemory), "–"),
      kvRow("total-process", "Total Process Memory", formatBytes(mem.totalProcessMemory), formatBytes(v.get("Status.Process.Memory.Resident"))),
    ], "data-key", "–");

    syncKeyedRows(jvmMemory.tbody, [
      kvRow("heap", "Heap", formatBytes(m.heapUsed), formatBytes(m.heapCommitted), formatBytes(m.heapMax)),
      kvRow("non-heap", "Non-Heap", formatBytes(m.nonHeapUsed), formatBytes(m.nonHeapCommitted), formatBytes(m.nonHeapMax)),
      kvRow("direct", "Direct", formatBytes(m.directUsed), `${formatCount(m.directCount)} buffers`, formatBytes(m.directMax)),
      kvRow("mapped", "Mapped", formatBytes(m.mappedUsed), `${formatCount(m.mappedCount)} buffers`, formatBytes(m.mappedMax)),
    ], "data-key", "–");

    const req = v.get("Status.Shuffle.Netty.RequestedMemoryUsage");
    syncKeyedRows(network.tbody, [
      kvRow("available", "Available Segments", formatCount(v.get("Status.Shuffle.Netty.AvailableMemorySegments") ?? m.nettyShuffleMemorySegmentsAvailable)),
      kvRow("used", "Used Segments", formatCount(v.get("Status.Shuffle.Netty.UsedMemorySegments") ?? m.nettyShuffleMemorySegmentsUsed)),
      kvRow("total", "Total Segments", formatCount(v.get("Status.Shuffle.Netty.TotalMemorySegments") ?? m.nettyShuffleMemorySegmentsTotal)),
      kvRow("requested", "Requested Memory Usage", isNum(req) ? `${req}%` : "–"),
    ], "data-key", "–");
  }

  async function refreshTm(id, tab, logName) {
    if (!TABS.some(([k]) => k === tab)) throw new Error(`no task manager tab ${tab}`);
    const base = `taskmanagers/${encodeURIComponent(id)}`;
    Flint.tabBar(tabs, TABS.map(([k, t]) => [k, t, tmHref(id, k)]), tab);
    const showLogFile = tab === "logs" && logName !== null;
    for (const [k, pane] of Object.entries(panes)) pane.hidden = k !== tab || showLogFile;
    logFile.hidden = !showLogFile;

    if (tab === "metrics") {
      const [tm, values] = await Promise.all([getJson(base), getJson(`${base}/metrics?get=${METRICS.join(",")}`)]);
      renderHead(tm);
      renderMetrics(id, tm, values);
      return;
    }
    const tm = await getJson(base);
    renderHead(tm);
    if (showLogFile) {
      byId("tm-logs-back").setAttribute("href", tmHref(id, "logs"));
      await textView.show(logFile, { key: `tm:${id}:logs:${logName}`, title: logName,
        url: `${base}/logs/${encodeURIComponent(logName)}` });
    } else if (tab === "logs") {
      const answer = await getJson(`${base}/logs`);
      fillLogs(logs.tbody, answer.logs || [], (name) => `${tmHref(id, "logs")}/${encodeURIComponent(name)}`);
    } else {
      const titles = { log: "Log", stdout: "Stdout", "thread-dump": "Thread Dump" };
      await textView.show(textPanes[tab], { key: `tm:${id}:${tab}`, title: `${titles[tab]} of ${id}`,
        url: `${base}/${tab}`, transform: tab === "thread-dump" ? threadDumpText : null });
    }
  }
})();
