// Flint dashboard core: helpers shared by the pages (DOM building, formatting, REST
// calls, dialogs), the router and the refresh loop, and the overview page (`#/`).
// Every other page lives in `pages/*.js` and registers itself with `Flint.page(...)`;
// the loop starts once all deferred scripts ran (DOMContentLoaded). Everything taken
// from a response is inserted as text nodes, never parsed as HTML.
"use strict";

window.Flint = (function () {
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

  // ---- Updating tables in place ----------------------------------------------

  // Replaces the rows of `tbody` by `rows`, keeping every row whose markup did not change
  // (so a refresh leaves unchanged rows, their hover and text selection alone).
  function syncRows(tbody, rows) {
    rows.forEach((row, i) => {
      const current = tbody.rows[i];
      if (!current) tbody.append(row);
      else if (current.outerHTML !== row.outerHTML) current.replaceWith(row);
    });
    while (tbody.rows.length > rows.length) tbody.rows[tbody.rows.length - 1].remove();
  }

  // Replaces the rows of `tbody` by `rows` (each carrying attribute `keyAttr`): a row whose
  // key exists already is moved into place and only its changed cells are replaced; new
  // rows are inserted, missing ones removed. `empty` is the placeholder text for no rows.
  function syncKeyedRows(tbody, rows, keyAttr, empty) {
    const columns = tbody.closest("table").tHead.rows[0].cells.length;
    if (rows.length === 0) {
      const only = tbody.rows.length === 1 ? tbody.rows[0] : null;
      if (!only || !only.classList.contains("placeholder") || only.textContent !== empty) {
        tbody.replaceChildren(placeholderRow(columns, empty));
      }
      return;
    }
    const existing = new Map();
    for (const row of [...tbody.rows]) {
      const key = row.getAttribute(keyAttr);
      if (key === null) row.remove();
      else existing.set(key, row);
    }
    rows.forEach((row, i) => {
      const key = row.getAttribute(keyAttr);
      let current = existing.get(key);
      if (current) {
        existing.delete(key);
        patchRow(current, row);
      } else {
        current = row;
      }
      if (tbody.rows[i] !== current) tbody.insertBefore(current, tbody.rows[i] || null);
    });
    for (const row of existing.values()) row.remove();
  }

  function patchRow(current, fresh) {
    for (const { name, value } of [...fresh.attributes]) {
      if (current.getAttribute(name) !== value) current.setAttribute(name, value);
    }
    for (const { name } of [...current.attributes]) {
      if (!fresh.hasAttribute(name)) current.removeAttribute(name);
    }
    const cells = [...fresh.cells];
    if (current.cells.length !== cells.length) {
      current.replaceChildren(...cells);
      return;
    }
    cells.forEach((cell, i) => {
      if (current.cells[i].outerHTML !== cell.outerHTML) current.cells[i].replaceWith(cell);
    });
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

  const SVG_NS = "http://www.w3.org/2000/svg";

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    for (const child of children) node.append(child instanceof Node ? child : String(child ?? "–"));
    return node;
  }

  const metric = (v, name) => (v.metrics && isNum(v.metrics[name]) ? v.metrics[name] : undefined);
  const formatCount = (n) => (isNum(n) ? n.toLocaleString("en-US") : "–");

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
          el("td", { class: "tm-id mono" }, el("a", { href: `#/taskmanagers/${encodeURIComponent(tm.id)}` }, tm.id)),
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

  // ---- REST writes -----------------------------------------------------------

  // Sends `body` (an object, sent as JSON, or FormData) and returns the parsed answer.
  // A non-2xx answer throws an Error carrying Flink's `errors` texts.
  async function send(method, path, body) {
    const init = { method, cache: "no-store", headers: { Accept: "application/json" } };
    if (body instanceof FormData) {
      init.body = body;
    } else if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      throw new Error(`${method} ${path}: ${e.message}`);
    }
    const text = await response.text();
    let json = null;
    try { json = text ? JSON.parse(text) : {}; } catch (_) { json = null; }
    if (!response.ok) {
      const errors = json && Array.isArray(json.errors) ? json.errors.join("; ") : text;
      const error = new Error(`${method} ${path}: HTTP ${response.status}: ${errors}`.trim());
      error.status = response.status;
      throw error;
    }
    return json;
  }

  // Polls `get()` until `done(answer)` holds (Flink's asynchronous operations:
  // savepoints, stop); gives up after `timeoutMs`.
  async function pollUntil(get, done, timeoutMs = 60000, everyMs = 500) {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const answer = await get();
      if (done(answer)) return answer;
      if (Date.now() > until) throw new Error("no result in time; the operation may still complete");
      await new Promise((resolve) => setTimeout(resolve, everyMs));
    }
  }

  // ---- Dialog ------------------------------------------------------------------

  // A modal confirmation (`#confirm-dialog`): resolves true when the user confirms.
  function confirmAction(title, message, confirmLabel) {
    const dialog = byId("confirm-dialog");
    setText("confirm-title", title);
    setText("confirm-message", message);
    setText("confirm-ok", confirmLabel || "Confirm");
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.returnValue = "";
      dialog.showModal();
    });
  }

  // Shows the result of an action in `#notice` (kind: "ok" or "error").
  function notify(kind, text) {
    const notice = byId("notice");
    notice.className = `notice notice-${kind}`;
    notice.textContent = text;
    notice.hidden = false;
  }

  // ---- Tabs ------------------------------------------------------------------------

  // Renders a tab bar into `container`: `tabs` is [[key, title, href]]; `active` the key.
  function tabBar(container, tabs, active) {
    const key = tabs.map((t) => t.join("|")).join(",") + "#" + active;
    if (container.dataset.key === key) return;
    container.dataset.key = key;
    container.replaceChildren(...tabs.map(([k, title, href]) =>
      el("a", { href, class: k === active ? "tab active" : "tab", "data-tab": k }, title)));
  }

  // ---- Pages and routing -------------------------------------------------------

  // A page: `name`, `pattern` (a RegExp matched against location.hash; its groups are
  // given to `refresh`), `nav` (the top navigation entry it belongs to), and
  // `refresh(match, main)` which (re)renders into its `<main>` and may be called again
  // every refresh interval: it must update in place, keeping scroll and selection.
  const pages = [];

  function page(spec) {
    const main = byId(`page-${spec.name}`) || el("main", { id: `page-${spec.name}`, hidden: "" });
    pages.push({ ...spec, main });
    return main;
  }

  function route() {
    const hash = location.hash || "#/";
    for (const p of pages) {
      const m = hash.match(p.pattern);
      if (m) return { page: p, match: m };
    }
    return { page: pages.find((p) => p.name === "overview"), match: ["#/"] };
  }

  function showPage(r) {
    for (const p of pages) {
      if (!p.main.isConnected) byId("pages").append(p.main);
      p.main.hidden = p !== r.page;
    }
    for (const a of document.querySelectorAll(".nav a")) {
      a.classList.toggle("active", a.dataset.nav === r.page.nav);
    }
  }

  page({
    name: "overview",
    nav: "overview",
    pattern: /^#\/?$/,
    refresh: async () => {
      const [overview, tms, jobs] = await Promise.all([
        getJson("overview"),
        getJson("taskmanagers"),
        getJson("jobs/overview"),
      ]);
      renderOverview(overview);
      renderTaskManagers(tms.taskmanagers || []);
      renderJobs(jobs.jobs || []);
    },
  });

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
      await r.page.refresh(r.match, r.page.main);
      if (gen !== generation) return;
      renderFooter();
      setText("last-updated", `Updated ${formatTime(Date.now())}`);
      hideError();
      document.body.dataset.loaded = "true";
      // The first time the page shows data after it was opened (read by bench_dashboard).
      if (performance.getEntriesByName("flint-first-render").length === 0) {
        performance.mark("flint-first-render");
      }
    } catch (error) {
      if (gen === generation) showError(error);
    } finally {
      if (gen === generation) timer = setTimeout(refresh, refreshMs);
    }
  }

  window.addEventListener("hashchange", () => {
    document.body.dataset.loaded = "false";
    refresh();
  });
  document.addEventListener("DOMContentLoaded", () => {
    refresh();
  });

  return {
    byId, el, svg, setText, placeholderRow, isNum, formatBytes, formatDuration, formatAgo, formatTime,
    formatCount, metric, taskSummary, jobLink, syncRows, syncKeyedRows, getJson, send, pollUntil, confirmAction, notify, tabBar,
    page, refresh, get config() { return config; }, get refreshMs() { return refreshMs; },
    COMPLETED_STATES,
  };
})();
