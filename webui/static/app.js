// Flint dashboard: polls the JobManager REST API (relative URLs) and renders
// the cluster overview, the task managers and the jobs (`#/`), and a job's page
// (`#/jobs/<id>`, `#/jobs/<id>/vertices/<vertex id>`): its graph laid out with
// dagre, its vertices, and the subtasks of the selected vertex. Everything taken
// from a response is inserted as text nodes, never parsed as HTML.
"use strict";

(function () {
  const DEFAULT_REFRESH_MS = 3000;
  const COMPLETED_STATES = new Set(["FINISHED", "CANCELED", "FAILED", "SUSPENDED"]);

  let refreshMs = DEFAULT_REFRESH_MS;
  let config = null;

  // ---- DOM helpers -------------------------------------------------------

  const byId = (id) => document.getElementById(id);

  function setText(id, value) {
    byId(id).textContent = value === undefined || value === null ? "–" : String(value);
  }

  // Creates an element; `children` are nodes or plain values (added as text).
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      node.setAttribute(name, String(value));
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : String(child ?? "–"));
    }
    return node;
  }

  function placeholderRow(columns, text) {
    return el("tr", { class: "placeholder" }, el("td", { colspan: columns }, text));
  }

  // ---- Formatting ----------------------------------------------------------

  const isNum = (n) => typeof n === "number" && Number.isFinite(n);

  function formatBytes(n) {
    if (!isNum(n) || n < 0) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    return `${n.toFixed(i === 0 || n >= 100 ? 0 : 1)} ${units[i]}`;
  }

  function formatDuration(ms) {
    if (!isNum(ms) || ms < 0) return "–";
    if (ms < 1000) return `${Math.round(ms)} ms`;
    const s = Math.floor(ms / 1000);
    const m = Math.floor(s / 60);
    const h = Math.floor(m / 60);
    const d = Math.floor(h / 24);
    if (s < 60) return `${s}s`;
    if (m < 60) return `${m}m ${s % 60}s`;
    if (h < 24) return `${h}h ${m % 60}m`;
    return `${d}d ${h % 24}h`;
  }

  // `ts` is an epoch-millisecond timestamp (Flink's "timeSinceLastHeartbeat").
  function formatAgo(ts) {
    if (!isNum(ts) || ts <= 0) return "–";
    const ms = Math.max(0, Date.now() - ts);
    return ms < 60000 ? `${Math.floor(ms / 1000)} s ago` : `${formatDuration(ms)} ago`;
  }

  function formatTime(ts) {
    if (!isNum(ts) || ts <= 0) return "–";
    const d = new Date(ts);
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
      `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }

  // ---- REST ----------------------------------------------------------------

  async function getJson(path) {
    let response;
    try {
      response = await fetch(path, { cache: "no-store", headers: { Accept: "application/json" } });
    } catch (e) {
      throw new Error(`GET ${path}: ${e.message}`);
    }
    if (!response.ok) {
      throw new Error(`GET ${path}: HTTP ${response.status} ${response.statusText}`.trim());
    }
    return response.json();
  }

  // ---- Rendering -----------------------------------------------------------

  function renderConfig(cfg) {
    config = cfg;
    const interval = cfg["refresh-interval"];
    refreshMs = isNum(interval) && interval > 0 ? interval : DEFAULT_REFRESH_MS;
    setText("flint-version", cfg["flink-version"]);
    if (cfg["flink-revision"]) byId("flint-version").title = `revision ${cfg["flink-revision"]}`;
  }

  function renderOverview(o) {
    setText("tm-count", o.taskmanagers);
    setText("slots-total", o["slots-total"]);
    setText("slots-available", o["slots-available"]);
    setText("jobs-running", o["jobs-running"]);
    setText("jobs-finished", o["jobs-finished"]);
    setText("jobs-cancelled", o["jobs-cancelled"]);
    setText("jobs-failed", o["jobs-failed"]);
    byId("jobs-failed").closest(".card").classList.toggle("alert", o["jobs-failed"] > 0);
  }

  function renderTaskManagers(tms) {
    const tbody = byId("taskmanagers-table").tBodies[0];
    if (tms.length === 0) {
      tbody.replaceChildren(placeholderRow(8, "No task managers registered"));
      return;
    }
    const rows = [...tms]
      .sort((a, b) => String(a.id).localeCompare(String(b.id)))
      .map((tm) => {
        const hw = tm.hardware || {};
        return el("tr", { "data-tm-id": tm.id },
          el("td", { class: "tm-id mono" }, tm.id),
          el("td", { class: "tm-path mono" }, tm.path),
          el("td", { class: "tm-data-port num" }, tm.dataPort),
          el("td", { class: "tm-slots num" }, tm.slotsNumber),
          el("td", { class: "tm-free-slots num" }, tm.freeSlots),
          el("td", { class: "tm-cpu num" }, hw.cpuCores),
          el("td", { class: "tm-memory num" }, formatBytes(hw.physicalMemory)),
          el("td", { class: "tm-heartbeat", title: formatTime(tm.timeSinceLastHeartbeat) },
            formatAgo(tm.timeSinceLastHeartbeat)));
      });
    tbody.replaceChildren(...rows);
  }

  function taskSummary(tasks) {
    const parts = Object.entries(tasks || {})
      .filter(([state, count]) => state !== "total" && count > 0)
      .map(([state, count]) => `${count} ${state}`);
    const total = tasks && isNum(tasks.total) ? ` (of ${tasks.total})` : "";
    return parts.length ? parts.join(", ") + total : "–";
  }

  function jobLink(jid, text) {
    return el("a", { href: `#/jobs/${jid}` }, text);
  }

  function renderJobs(jobs) {
    const tbody = byId("jobs-table").tBodies[0];
    if (jobs.length === 0) {
      tbody.replaceChildren(placeholderRow(7, "No jobs"));
      return;
    }
    // Running (non-terminal) jobs first, newest first; then completed ones.
    const done = (j) => COMPLETED_STATES.has(j.state);
    const rows = [...jobs]
      .sort((a, b) => (done(a) - done(b)) || ((b["start-time"] || 0) - (a["start-time"] || 0)))
      .map((job) => {
        const state = String(job.state || "UNKNOWN");
        return el("tr", { "data-job-id": job.jid, class: done(job) ? "completed" : "active" },
          el("td", { class: "job-name" }, jobLink(job.jid, job.name)),
          el("td", { class: "job-id mono" }, job.jid),
          el("td", { class: "job-state" },
            el("span", { class: `badge state-${state.toLowerCase()}` }, state)),
          el("td", { class: "job-start" }, formatTime(job["start-time"])),
          el("td", { class: "job-end" }, formatTime(job["end-time"])),
          el("td", { class: "job-duration num" }, formatDuration(job.duration)),
          el("td", { class: "job-tasks" }, taskSummary(job.tasks)));
      });
    tbody.replaceChildren(...rows);
  }

  function renderFooter() {
    const parts = [];
    if (config && config["flink-revision"]) parts.push(`Revision ${config["flink-revision"]}`);
    if (config && config["timezone-name"]) parts.push(`Server time zone: ${config["timezone-name"]}`);
    parts.push(`Refreshing every ${formatDuration(refreshMs)}`);
    setText("footer", parts.join(" · "));
  }

  function showError(error) {
    const banner = byId("error-banner");
    banner.textContent = `Cannot reach the JobManager REST API: ${error.message} — retrying…`;
    banner.hidden = false;
    document.body.classList.add("stale");
  }

  function hideError() {
    byId("error-banner").hidden = true;
    document.body.classList.remove("stale");
  }

  // ---- Job page --------------------------------------------------------------

  const SVG_NS = "http://www.w3.org/2000/svg";
  const NODE_W = 240;
  const NODE_H = 84;

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    for (const child of children) node.append(child instanceof Node ? child : String(child ?? "–"));
    return node;
  }

  const metric = (v, name) => (v.metrics && isNum(v.metrics[name]) ? v.metrics[name] : undefined);
  const formatCount = (n) => (isNum(n) ? n.toLocaleString("en-US") : "–");

  // The graph is laid out once per job (its plan does not change); refreshes update the
  // texts and classes of the nodes in place, so the picture neither moves nor flickers.
  let laidOut = null;

  const MAX_NAME = 34;

  function vertexLines(v) {
    const name = String(v.name ?? v.id);
    return [
      name.length > MAX_NAME ? `${name.slice(0, MAX_NAME - 1)}…` : name,
      `Parallelism ${v.parallelism} · ${v.status}`,
      `In ${formatCount(metric(v, "read-records"))} · Out ${formatCount(metric(v, "write-records"))}`,
    ];
  }

  function layoutGraph(job) {
    const vertexById = new Map(job.vertices.map((v) => [v.id, v]));
    const g = new dagre.graphlib.Graph();
    g.setGraph({ rankdir: "LR", nodesep: 30, ranksep: 80, marginx: 10, marginy: 10 });
    g.setDefaultEdgeLabel(() => ({}));
    for (const node of job.plan.nodes) g.setNode(node.id, { width: NODE_W, height: NODE_H });
    for (const node of job.plan.nodes) {
      for (const input of node.inputs || []) {
        g.setEdge(input.id, node.id, { label: input.ship_strategy, width: 70, height: 16, labelpos: "c" });
      }
    }
    dagre.layout(g);
    const root = svg("svg", { class: "graph", width: g.graph().width, height: g.graph().height,
      viewBox: `0 0 ${g.graph().width} ${g.graph().height}` });
    root.append(svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
      markerWidth: 8, markerHeight: 8, orient: "auto-start-reverse" }, svg("path", { d: "M 0 0 L 10 5 L 0 10 z" }))));
    for (const e of g.edges()) {
      const edge = g.edge(e);
      const d = edge.points.map((p, i) => `${i ? "L" : "M"} ${p.x} ${p.y}`).join(" ");
      root.append(svg("g", { class: "edge", "data-from": e.v, "data-to": e.w },
        svg("path", { d, "marker-end": "url(#arrow)" }),
        svg("text", { class: "edge-label", x: edge.x, y: edge.y, "text-anchor": "middle" }, edge.label)));
    }
    for (const id of g.nodes()) {
      const n = g.node(id);
      const v = vertexById.get(id) || { id, name: id, parallelism: "–", status: "–" };
      const group = svg("g", { class: "vertex", "data-vertex-id": id, tabindex: 0,
        transform: `translate(${n.x - NODE_W / 2}, ${n.y - NODE_H / 2})` },
        svg("title", {}, v.name), svg("rect", { width: NODE_W, height: NODE_H, rx: 6 }));
      vertexLines(v).forEach((line, i) => {
        group.append(svg("text", { class: `line line-${i}`, x: 10, y: 24 + i * 22 }, line));
      });
      group.addEventListener("click", () => { location.hash = `#/jobs/${job.jid}/vertices/${id}`; });
      root.append(group);
    }
    byId("job-graph").replaceChildren(root);
    laidOut = { jid: job.jid, nodes: job.plan.nodes.map((n) => n.id).join(",") };
  }

  function renderGraph(job, selected) {
    const key = job.plan.nodes.map((n) => n.id).join(",");
    if (!laidOut || laidOut.jid !== job.jid || laidOut.nodes !== key) layoutGraph(job);
    for (const v of job.vertices) {
      const group = document.querySelector(`#job-graph g.vertex[data-vertex-id="${v.id}"]`);
      if (!group) continue;
      vertexLines(v).forEach((line, i) => { group.querySelector(`.line-${i}`).textContent = line; });
      group.setAttribute("class", `vertex state-${String(v.status).toLowerCase()}` +
        (v.id === selected ? " selected" : ""));
    }
  }

  function renderJobHeader(job) {
    setText("job-name", job.name);
    const state = String(job.state || "UNKNOWN");
    setText("job-state", state);
    byId("job-state").className = `badge state-${state.toLowerCase()}`;
    setText("job-id", job.jid);
    setText("job-start", formatTime(job["start-time"]));
    setText("job-duration", formatDuration(job.duration));
  }

  function renderVertices(job, selected) {
    const rows = job.vertices.map((v) => {
      const status = String(v.status || "UNKNOWN");
      return el("tr", { "data-vertex-id": v.id, class: v.id === selected ? "selected" : "" },
        el("td", { "data-col": "name" }, el("a", { href: `#/jobs/${job.jid}/vertices/${v.id}` }, v.name)),
        el("td", { "data-col": "status" }, el("span", { class: `badge state-${status.toLowerCase()}` }, status)),
        el("td", { class: "num", "data-col": "parallelism" }, v.parallelism),
        el("td", { class: "num", "data-col": "read-records" }, formatCount(metric(v, "read-records"))),
        el("td", { class: "num", "data-col": "write-records" }, formatCount(metric(v, "write-records"))),
        el("td", { class: "num", "data-col": "read-bytes" }, formatBytes(metric(v, "read-bytes"))),
        el("td", { class: "num", "data-col": "write-bytes" }, formatBytes(metric(v, "write-bytes"))),
        el("td", { class: "num", "data-col": "duration" }, formatDuration(v.duration)),
        el("td", { "data-col": "tasks" }, taskSummary(v.tasks)));
    });
    byId("vertices-table").tBodies[0].replaceChildren(...rows);
  }

  function renderSubtasks(vertex) {
    byId("subtasks-section").hidden = false;
    setText("subtasks-vertex", vertex.name);
    const rows = (vertex.subtasks || []).map((t) => {
      const status = String(t.status || "UNKNOWN");
      return el("tr", { "data-subtask": t.subtask },
        el("td", { class: "num", "data-col": "subtask" }, t.subtask),
        el("td", { "data-col": "status" }, el("span", { class: `badge state-${status.toLowerCase()}` }, status)),
        el("td", { class: "num", "data-col": "attempt" }, t.attempt),
        el("td", { class: "mono", "data-col": "host" }, t.endpoint || t.host),
        el("td", { class: "num", "data-col": "read-records" }, formatCount(metric(t, "read-records"))),
        el("td", { class: "num", "data-col": "write-records" }, formatCount(metric(t, "write-records"))),
        el("td", { class: "num", "data-col": "read-bytes" }, formatBytes(metric(t, "read-bytes"))),
        el("td", { class: "num", "data-col": "write-bytes" }, formatBytes(metric(t, "write-bytes"))),
        el("td", { class: "num", "data-col": "duration" }, formatDuration(t.duration)));
    });
    byId("subtasks-table").tBodies[0].replaceChildren(...rows);
  }

  async function refreshJob(r) {
    const job = await getJson(`jobs/${r.jid}`);
    renderJobHeader(job);
    renderGraph(job, r.vertex);
    renderVertices(job, r.vertex);
    if (r.vertex) {
      renderSubtasks(await getJson(`jobs/${r.jid}/vertices/${r.vertex}`));
    } else {
      byId("subtasks-section").hidden = true;
    }
  }

  // ---- Routing ---------------------------------------------------------------

  // `#/` (or nothing): the overview; `#/jobs/<id>[/vertices/<id>]`: a job.
  function route() {
    const m = location.hash.match(/^#\/jobs\/([0-9a-f]{32})(?:\/vertices\/([0-9a-f]{32}))?$/);
    return m ? { page: "job", jid: m[1], vertex: m[2] || null } : { page: "overview" };
  }

  function showPage(r) {
    byId("page-overview").hidden = r.page !== "overview";
    byId("page-job").hidden = r.page !== "job";
  }

  // ---- Main loop -----------------------------------------------------------

  let timer = null;
  // Each refresh has a number; a page change starts a new one, and only the newest one
  // schedules the next (so one loop runs, whatever the timing of the answers).
  let generation = 0;

  async function refresh() {
    clearTimeout(timer);
    const gen = ++generation;
    const r = route();
    showPage(r);
    try {
      if (!config) renderConfig(await getJson("config"));
      if (r.page === "job") {
        await refreshJob(r);
      } else {
        const [overview, tms, jobs] = await Promise.all([
          getJson("overview"),
          getJson("taskmanagers"),
          getJson("jobs/overview"),
        ]);
        renderOverview(overview);
        renderTaskManagers(tms.taskmanagers || []);
        renderJobs(jobs.jobs || []);
      }
      renderFooter();
      setText("last-updated", `Updated ${formatTime(Date.now())}`);
      hideError();
      document.body.dataset.loaded = "true";
    } catch (error) {
      showError(error);
    } finally {
      if (gen === generation) timer = setTimeout(refresh, refreshMs);
    }
  }

  window.addEventListener("hashchange", () => {
    document.body.dataset.loaded = "false";
    refresh();
  });
  refresh();
})();
