// The Job Manager page, `#/jobmanager[/<tab>]`, modelled on Flink 1.20's, one route per tab:
// - `metrics` (default): one `jobmanager/metrics?get=…` per refresh: cluster counters, JVM
//   and process memory, and uPlot charts of CPU load (`Status.JVM.CPU.Load`) and memory
//   (`Status.Process.Memory.Resident`, `Status.JVM.Memory.Heap.Used`);
// - `config`: `jobmanager/config`, sorted by key, with a filter (`#jm-config-filter`, kept
//   across refreshes);
// - `logs`: `jobmanager/logs`; each name opens `#/jobmanager/logs/<name>`
//   (`jobmanager/logs/<name>`);
// - `log`, `stdout`, `thread-dump`: `jobmanager/log`, `/stdout`, `/thread-dump`, loaded when
//   opened and again by Reload (the viewer of `pages/tm.js`);
// - `environment`: `jobmanager/environment` (JVM facts, options, classpath).
"use strict";

(function () {
  const { el, isNum, formatBytes, formatCount, getJson, syncKeyedRows } = Flint;

  const TABS = [["metrics", "Metrics"], ["config", "Configuration"], ["logs", "Logs"], ["log", "Log"],
    ["stdout", "Stdout"], ["environment", "Environment"], ["thread-dump", "Thread Dump"]];

  const main = Flint.page({
    name: "jobmanager",
    nav: "jobmanager",
    pattern: /^#\/jobmanager(?:\/([a-z-]+)(?:\/(.+))?)?\/?$/,
    refresh: (m) => refreshJm(m[1] || "metrics", m[2] ? decodeURIComponent(m[2]) : null),
  });

  // Built on first use: `Flint.clusterViews` comes from pages/tm.js.
  let ui = null;

  function build() {
    const { logsTable, Chart, factTable, cardRow } = Flint.clusterViews;
    const tabs = el("nav", { id: "jm-tabs", class: "tabs" });
    const panes = {};
    for (const [k] of TABS) panes[k] = el("div", { id: `jm-tab-${k}`, class: "jm-tab", "data-tab": k, hidden: "" });

    const cards = cardRow("jm", [["taskmanagers", "Task Managers"], ["jobs-running", "Running Jobs"],
      ["slots-total", "Total Slots"], ["slots-available", "Available Slots"], ["cpu-load", "CPU Load"],
      ["threads", "Threads"]]);
    const charts = {
      cpu: new Chart("jm-chart-cpu", "CPU Load (Status.JVM.CPU.Load)", ["CPU"], "percent"),
      memory: new Chart("jm-chart-memory", "Memory", ["Resident", "Heap used"], "bytes"),
    };
    const memory = factTable("jm-memory-table", ["JVM / Process Memory", "Used", "Committed", "Maximum"]);
    panes.metrics.append(cards.box,
      el("div", { id: "jm-charts", class: "metric-charts cluster-charts" }, charts.cpu.card, charts.memory.card),
      el("section", {}, el("h3", { class: "section-title" }, "Memory"), memory.wrap));

    const filter = el("input", { id: "jm-config-filter", type: "search", placeholder: "Filter by key or value",
      "aria-label": "Filter the configuration", spellcheck: "false", autocomplete: "off" });
    const configCount = el("span", { id: "jm-config-count", class: "jobs-shown" }, "");
    const configTable = el("table", { id: "jm-config-table" },
      el("thead", {}, el("tr", {}, el("th", {}, "Key"), el("th", {}, "Value"))),
      el("tbody", {}, Flint.placeholderRow(2, "Loading…")));
    panes.config.append(el("div", { class: "jobs-toolbar" }, filter, configCount),
      el("div", { class: "table-wrap" }, configTable));

    const logs = logsTable("jm-logs-table");
    panes.logs.append(logs.wrap);
    const logFile = el("div", { id: "jm-logfile", class: "jm-tab", hidden: "" },
      el("p", { class: "crumbs" }, el("a", { href: "#/jobmanager/logs" }, "← All logs")));

    const env = Flint.clusterViews.factTable("jm-environment-table", ["JVM", "Value"]);
    const optionsList = el("ul", { id: "jm-jvm-options", class: "plain-list mono" });
    const classpathList = el("ul", { id: "jm-classpath", class: "plain-list mono" });
    panes.environment.append(env.wrap,
      el("h3", { class: "section-title" }, "Options"), optionsList,
      el("h3", { class: "section-title" }, "Classpath"), classpathList);

    main.append(
      el("p", { class: "crumbs" }, el("a", { href: "#/" }, "Overview"), " / Job Manager"),
      el("h2", {}, "Job Manager"),
      tabs, ...Object.values(panes), logFile);

    const u = { tabs, panes, cards, charts, memory, filter, configCount, configTable, lastConfig: null, logs, logFile,
      env, optionsList, classpathList };
    filter.addEventListener("input", () => { if (u.lastConfig) renderConfig(u, u.lastConfig); });
    return u;
  }

  const METRICS = ["Status.JVM.CPU.Load", "Status.JVM.Threads.Count", "Status.JVM.Memory.Heap.Used",
    "Status.JVM.Memory.Heap.Committed", "Status.JVM.Memory.Heap.Max", "Status.JVM.Memory.NonHeap.Used",
    "Status.JVM.Memory.NonHeap.Committed", "Status.JVM.Memory.NonHeap.Max", "Status.Process.Memory.Resident",
    "Status.Process.Memory.Limit", "numRegisteredTaskManagers", "numRunningJobs", "taskSlotsTotal",
    "taskSlotsAvailable"];

  function renderMetrics(u, values) {
    const { num, kvRow, formatMetric } = Flint.clusterViews;
    const v = new Map((Array.isArray(values) ? values : []).map((m) => [String(m.id), num(m.value)]));
    const set = u.cards.set;
    set("taskmanagers", formatCount(v.get("numRegisteredTaskManagers")));
    set("jobs-running", formatCount(v.get("numRunningJobs")));
    set("slots-total", formatCount(v.get("taskSlotsTotal")));
    set("slots-available", formatCount(v.get("taskSlotsAvailable")));
    set("cpu-load", formatMetric(v.get("Status.JVM.CPU.Load"), "percent"));
    set("threads", formatCount(v.get("Status.JVM.Threads.Count")));
    const load = v.get("Status.JVM.CPU.Load");
    u.charts.cpu.push([isNum(load) ? load * 100 : NaN]);
    u.charts.memory.push([v.get("Status.Process.Memory.Resident"), v.get("Status.JVM.Memory.Heap.Used")]);
    const b = (name) => formatBytes(v.get(name));
    syncKeyedRows(u.memory.tbody, [
      kvRow("heap", "Heap", b("Status.JVM.Memory.Heap.Used"), b("Status.JVM.Memory.Heap.Committed"), b("Status.JVM.Memory.Heap.Max")),
      kvRow("non-heap", "Non-Heap", b("Status.JVM.Memory.NonHeap.Used"), b("Status.JVM.Memory.NonHeap.Committed"), b("Status.JVM.Memory.NonHeap.Max")),
      kvRow("process", "Process (resident / limit)", b("Status.Process.Memory.Resident"), "–", b("Status.Process.Memory.Limit")),
    ], "data-key", "–");
  }

  function renderConfig(u, entries) {
    const q = u.filter.value.trim().toLowerCase();
    const sorted = [...entries].sort((a, b) => String(a.key).localeCompare(String(b.key)));
    const shown = q ? sorted.filter((e) => String(e.key).toLowerCase().includes(q) || String(e.value).toLowerCase().includes(q)) : sorted;
    const rows = shown.map((e) => el("tr", { "data-key": e.key },
      el("td", { class: "mono", "data-col": "key" }, e.key),
      el("td", { class: "mono", "data-col": "value" }, e.value)));
    syncKeyedRows(u.configTable.tBodies[0], rows, "data-key", q ? "No entry matches the filter" : "No configuration");
    const count = q ? `${shown.length} of ${entries.length} entries` : `${entries.length} entries`;
    if (u.configCount.textContent !== count) u.configCount.textContent = count;
  }

  function syncList(list, items) {
    const same = list.children.length === items.length && items.every((t, i) => list.children[i].textContent === String(t));
    if (!same) list.replaceChildren(...items.map((t) => el("li", {}, t)));
    if (items.length === 0) list.replaceChildren(el("li", { class: "placeholder" }, "none"));
  }

  function renderEnvironment(u, env) {
    const { kvRow } = Flint.clusterViews;
    const jvm = env.jvm || {};
    syncKeyedRows(u.env.tbody, [
      kvRow("version", "Version", jvm.version ?? "–"),
      kvRow("arch", "Architecture", jvm.arch ?? "–"),
      kvRow("options", "Options", formatCount((jvm.options || []).length)),
      kvRow("classpath", "Classpath Entries", formatCount((env.classpath || []).length)),
    ], "data-key", "–");
    syncList(u.optionsList, (jvm.options || []).map(String));
    syncList(u.classpathList, (env.classpath || []).map(String));
  }

  async function refreshJm(tab, logName) {
    if (!TABS.some(([k]) => k === tab)) throw new Error(`no job manager tab ${tab}`);
    if (!ui) ui = build();
    const { textView, fillLogs, threadDumpText } = Flint.clusterViews;
    Flint.tabBar(ui.tabs, TABS.map(([k, t]) => [k, t, k === "metrics" ? "#/jobmanager" : `#/jobmanager/${k}`]), tab);
    const showLogFile = tab === "logs" && logName !== null;
    for (const [k, pane] of Object.entries(ui.panes)) pane.hidden = k !== tab || showLogFile;
    ui.logFile.hidden = !showLogFile;

    if (tab === "metrics") {
      renderMetrics(ui, await getJson(`jobmanager/metrics?get=${METRICS.join(",")}`));
    } else if (tab === "config") {
      ui.lastConfig = await getJson("jobmanager/config");
      renderConfig(ui, ui.lastConfig);
    } else if (tab === "environment") {
      renderEnvironment(ui, await getJson("jobmanager/environment"));
    } else if (showLogFile) {
      await textView.show(ui.logFile, { key: `jm:logs:${logName}`, title: logName,
        url: `jobmanager/logs/${encodeURIComponent(logName)}` });
    } else if (tab === "logs") {
      const answer = await getJson("jobmanager/logs");
      fillLogs(ui.logs.tbody, answer.logs || [], (name) => `#/jobmanager/logs/${encodeURIComponent(name)}`);
    } else {
      const titles = { log: "Job Manager Log", stdout: "Job Manager Stdout", "thread-dump": "Job Manager Thread Dump" };
      await textView.show(ui.panes[tab], { key: `jm:${tab}`, title: titles[tab], url: `jobmanager/${tab}`,
        transform: tab === "thread-dump" ? threadDumpText : null });
    }
  }
})();
