// Flint dashboard: polls the JobManager REST API (relative URLs) and renders
// the cluster overview, the task managers and the jobs. Everything taken from
// a response is inserted as text nodes, never parsed as HTML.
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
          el("td", { class: "job-name" }, job.name),
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

  // ---- Main loop -----------------------------------------------------------

  async function refresh() {
    try {
      if (!config) renderConfig(await getJson("config"));
      const [overview, tms, jobs] = await Promise.all([
        getJson("overview"),
        getJson("taskmanagers"),
        getJson("jobs/overview"),
      ]);
      renderOverview(overview);
      renderTaskManagers(tms.taskmanagers || []);
      renderJobs(jobs.jobs || []);
      renderFooter();
      setText("last-updated", `Updated ${formatTime(Date.now())}`);
      hideError();
      document.body.dataset.loaded = "true";
    } catch (error) {
      showError(error);
    } finally {
      setTimeout(refresh, refreshMs);
    }
  }

  refresh();
})();
