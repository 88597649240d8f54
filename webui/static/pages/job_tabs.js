// The job page's tabs after Overview: Timeline, Exceptions, Checkpoints and Configuration
// (`#/jobs/<id>/<tab>`), as Flink 1.20's dashboard shows them. `pages/job.js` draws the job
// header and the tab bar and calls `Flint.jobTabs[tab].render(container, jid, job)` on every
// refresh, with `job` the `jobs/<id>` answer.
//
// Each tab builds its skeleton once per (tab, job) — `container.dataset.tabKey` records
// which one the shared container holds — and then updates it in place: rows are replaced
// only when their markup changed, so scroll, text selection, expanded rows, the selected
// vertex and the chosen checkpoint sub-tab survive refreshes.
//
// - Timeline: an SVG Gantt chart of the job's states (`job.timestamps`) and its vertices
//   (`job.vertices[]` start, end, duration). A click on a vertex shows its subtasks' Gantt
//   (`…/vertices/<vid>/subtasktimes`: the time spent in each state), with the earlier
//   attempts of restarted subtasks (`…/subtasks/<i>/attempts/<n>` for n below the current
//   attempt that `…/vertices/<vid>` reports; fetched once, they do not change).
// - Exceptions: `jobs/<id>/exceptions` (root exception and history, newest first; a click
//   on an entry shows its stack trace and concurrent exceptions).
// - Checkpoints: sub-tabs Overview, History, Summary and Configuration from
//   `jobs/<id>/checkpoints` and `…/checkpoints/config` (once per job). A click on a history
//   row shows its vertices (`…/checkpoints/details/<cid>`), a click on a vertex its
//   subtasks (`…/details/<cid>/subtasks/<vid>`): details are fetched only for expanded rows,
//   and only again while the checkpoint is in progress.
// - Configuration: `jobs/<id>/config` and, when it answers, `jobs/<id>/jobmanager/config`
//   (both once per job: they do not change).
"use strict";

(function () {
  const { byId, el, svg, isNum, formatBytes, formatDuration, formatTime, getJson, placeholderRow,
    COMPLETED_STATES } = Flint;

  Flint.jobTabs = Flint.jobTabs || {};

  // ---- Shared helpers ----------------------------------------------------------------

  // Builds the tab's skeleton into `container` unless it already holds this tab of this
  // job; returns the key the render must still find there after its requests.
  function skeleton(container, tab, jid, build) {
    const key = `${tab}/${jid}`;
    if (container.dataset.tabKey !== key) {
      container.dataset.tabKey = key;
      container.replaceChildren(...build());
    }
    return key;
  }

  // Replaces row `i` of `tbody` by `row` when its markup differs (else keeps the old one).
  function putRow(tbody, i, row) {
    const current = tbody.rows[i];
    if (!current) tbody.append(row);
    else if (current.outerHTML !== row.outerHTML) current.replaceWith(row);
  }

  function trimRows(tbody, n) {
    while (tbody.rows.length > n) tbody.rows[tbody.rows.length - 1].remove();
  }

  const syncRows = Flint.syncRows;

  // Keeps one `<tbody data-group>` per item in `table`, in the items' order; `fill(tbody,
  // item)` updates a group's rows in place. With no items, one placeholder row is shown.
  function syncGroups(table, items, keyOf, fill, columns, emptyText) {
    const groups = new Map();
    for (const tb of [...table.tBodies]) {
      if (tb.dataset.group !== undefined) groups.set(tb.dataset.group, tb);
      else if (items.length || tb.textContent !== emptyText) tb.remove();
    }
    let previous = table.tHead;
    for (const item of items) {
      const key = String(keyOf(item));
      const tb = groups.get(key) || el("tbody", { "data-group": key });
      groups.delete(key);
      fill(tb, item);
      if (previous.nextElementSibling !== tb) previous.after(tb);
      previous = tb;
    }
    for (const tb of groups.values()) tb.remove();
    if (items.length === 0 && table.tBodies.length === 0) {
      table.append(el("tbody", {}, placeholderRow(columns, emptyText)));
    }
  }

  const nOrDash = (n) => (isNum(n) && n >= 0 ? n : "–");
  const timeOrNa = (ts) => (isNum(ts) && ts > 0 ? formatTime(ts) : "n/a");
  const durationOrNa = (ms) => (isNum(ms) && ms >= 0 ? formatDuration(ms) : "n/a");
  // Flink writes percentiles it cannot compute as the string "NaN".
  const numeric = (v) => (typeof v === "string" && v !== "" && Number.isFinite(Number(v)) ? Number(v) : v);

  // A numeric cell: the formatted text, the raw value in `data-value` (for scripts).
  function numCell(col, value, format) {
    const attrs = { class: "num", "data-col": col };
    if (isNum(value)) attrs["data-value"] = value;
    return el("td", attrs, isNum(value) ? format(value) : "n/a");
  }

  function section(title, ...children) {
    return el("section", {}, el("h2", {}, title), ...children);
  }

  function keyValueTable(id, keyTitle = "Key") {
    return el("div", { class: "table-wrap" },
      el("table", { id, class: "kv-table" },
        el("thead", {}, el("tr", {}, el("th", {}, keyTitle), el("th", {}, "Value"))),
        el("tbody", {}, placeholderRow(2, "Loading…"))));
  }

  function kvRow(key, label, value) {
    return el("tr", { "data-key": key }, el("td", { class: "kv-key" }, label),
      el("td", { class: "kv-value", "data-col": "value" }, value));
  }

  // ---- Timeline: Gantt charts ----------------------------------------------------------

  // Colours per execution and job state (the task-count colours of the jobs list).
  const STATE_COLOURS = {
    CREATED: "#7b8794", SCHEDULED: "#6f5bb5", DEPLOYING: "#1f8f97", INITIALIZING: "#5b7fd6",
    RUNNING: "#2f6fb0", FINISHED: "#2e7d4f", CANCELING: "#d9a21b", CANCELLING: "#d9a21b",
    CANCELED: "#c08a12", FAILED: "#b3261e", FAILING: "#dd6b61", RECONCILING: "#b23a85",
    RESTARTING: "#14a3a3", SUSPENDED: "#8a94a3",
  };
  const colour = (state) => STATE_COLOURS[state] || "#8a94a3";

  // States in the order a subtask passes them (ties in timestamps keep this order).
  const STATE_ORDER = ["CREATED", "SCHEDULED", "DEPLOYING", "INITIALIZING", "RUNNING", "RECONCILING",
    "CANCELING", "FINISHED", "CANCELED", "FAILED"];
  const JOB_STATE_ORDER = ["INITIALIZING", "CREATED", "RUNNING", "FAILING", "RESTARTING", "CANCELLING",
    "FINISHED", "CANCELED", "FAILED", "SUSPENDED", "RECONCILING"];
  const TERMINAL = new Set(["FINISHED", "CANCELED", "FAILED", "SUSPENDED"]);

  const G = { label: 300, row: 28, bar: 18, axis: 28, right: 24 };
  // Tick steps (ms): at most 7 ticks, aligned to the chart's start as Flink's are.
  const TICK_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 15e3, 3e4, 6e4, 12e4,
    3e5, 6e5, 9e5, 18e5, 36e5, 72e5, 144e5, 288e5, 864e5, 6048e5];

  function clock(ts, millis) {
    const d = new Date(ts);
    const p = (n, w = 2) => String(n).padStart(w, "0");
    return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}` +
      (millis ? `.${p(d.getMilliseconds(), 3)}` : "");
  }

  // Timestamps → bars: each state lasts until the next; the last one until `now`, unless
  // it is terminal (then it is a zero-length mark at its timestamp).
  function stateBars(timestamps, now, order) {
    const entered = Object.entries(timestamps || {})
      .filter(([, ts]) => isNum(ts) && ts > 0)
      .sort((a, b) => (a[1] - b[1]) || (order.indexOf(a[0]) - order.indexOf(b[0])));
    return entered.map(([state, start], i) => {
      const next = entered[i + 1];
      const end = next ? next[1] : (TERMINAL.has(state) ? start : Math.max(start, now));
      return { state, start, end };
    });
  }

  // An earlier attempt (`…/attempts/<n>`: start-time = DEPLOYING, end-time, and the time
  // spent per state) → bars, laid out in the order the states are passed.
  function attemptBars(a) {
    const d = a["status-duration"] || {};
    const deployed = a["start-time"];
    if (!isNum(deployed) || deployed <= 0) return [];
    const bars = [];
    let t = deployed;
    for (const state of ["SCHEDULED", "CREATED"]) {
      if (isNum(d[state])) {
        bars.unshift({ state, start: t - d[state], end: t });
        t -= d[state];
      }
    }
    t = deployed;
    for (const state of ["DEPLOYING", "INITIALIZING", "RUNNING", "CANCELING"]) {
      if (isNum(d[state])) {
        bars.push({ state, start: t, end: t + d[state] });
        t += d[state];
      }
    }
    const status = String(a.status || "");
    if (TERMINAL.has(status)) {
      const end = isNum(a["end-time"]) && a["end-time"] > 0 ? a["end-time"] : t;
      bars.push({ state: status, start: end, end });
    }
    return bars;
  }

  // Draws a Gantt chart into `box`, or updates the one there in place when its rows and
  // bars are the same (then only positions, data attributes and tooltips change).
  // `rows`: [{ key, label, title, attrs, selected, bars: [{ state, start, end, attrs, text }] }].
  function gantt(box, rows, onPick) {
    const width = Math.max(720, box.clientWidth - 2 || 0);
    const plotW = width - G.label - G.right;
    let t0 = Infinity;
    let t1 = -Infinity;
    for (const r of rows) for (const b of r.bars) { t0 = Math.min(t0, b.start); t1 = Math.max(t1, b.end); }
    if (!Number.isFinite(t0)) { t0 = Date.now(); t1 = t0 + 1000; }
    if (t1 - t0 < 1) t1 = t0 + 1;
    const x = (t) => G.label + ((t - t0) / (t1 - t0)) * plotW;
    const height = G.axis + rows.length * G.row + 4;
    const signature = `${width}|` + rows.map((r) => `${r.key}:${r.bars.map((b) => b.state).join(",")}`).join(";");

    let root = box.querySelector("svg.gantt");
    if (!root || root.dataset.signature !== signature) {
      root = svg("svg", { class: "gantt", width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
      root.dataset.signature = signature;
      root.append(svg("g", { class: "axis" }));
      rows.forEach((r, i) => {
        const group = svg("g", { class: "row" + (onPick && r.pickable !== false ? " pickable" : ""),
          "data-row": r.key, transform: `translate(0, ${G.axis + i * G.row})` });
        for (const [k, v] of Object.entries(r.attrs || {})) group.setAttribute(k, v);
        group.append(svg("rect", { class: "row-bg", x: 0, y: 0, width, height: G.row }));
        const maxChars = Math.floor((G.label - 16) / 6.8);
        const text = r.label.length > maxChars ? `${r.label.slice(0, maxChars - 1)}…` : r.label;
        group.append(svg("text", { class: "row-label", x: 8, y: G.row / 2 + 4 }, svg("title", {}, r.title || r.label), text));
        if (r.bars.length === 0 && r.emptyText) {
          group.append(svg("text", { class: "row-empty", x: G.label + 6, y: G.row / 2 + 4 }, r.emptyText));
        }
        for (const b of r.bars) {
          const bar = svg("rect", { class: "bar", y: (G.row - G.bar) / 2, height: G.bar, rx: 2,
            fill: colour(b.state) }, svg("title", {}));
          group.append(bar, svg("text", { class: "bar-text", y: G.row / 2 + 4 }));
        }
        if (onPick && r.pickable !== false) {
          group.setAttribute("tabindex", 0);
          group.addEventListener("click", () => onPick(r.key));
          group.addEventListener("keydown", (e) => { if (e.key === "Enter") onPick(r.key); });
        }
        root.append(group);
      });
      box.replaceChildren(root);
    }

    // The axis: start-aligned ticks with grid lines.
    const step = TICK_STEPS.find((s) => (t1 - t0) / s <= 7) || TICK_STEPS[TICK_STEPS.length - 1];
    const axis = root.querySelector("g.axis");
    axis.replaceChildren();
    for (let t = t0; t <= t1 + 1e-6; t += step) {
      const tx = x(t);
      axis.append(svg("line", { x1: tx, x2: tx, y1: G.axis - 6, y2: height }),
        svg("text", { x: tx, y: G.axis - 10, "text-anchor": t === t0 ? "start" : "middle" }, clock(t, step < 1000)));
    }

    // Bars: geometry, data attributes, tooltip and an inside label where it fits.
    const groups = root.querySelectorAll("g.row");
    rows.forEach((r, i) => {
      const group = groups[i];
      group.classList.toggle("selected", !!r.selected);
      const rects = group.querySelectorAll("rect.bar");
      const texts = group.querySelectorAll("text.bar-text");
      r.bars.forEach((b, j) => {
        const bx = x(b.start);
        const marker = b.start === b.end;
        const w = marker ? 3 : Math.max(0, x(b.end) - bx);
        const rect = rects[j];
        rect.setAttribute("x", marker ? bx - 1.5 : bx);
        rect.setAttribute("width", w);
        rect.setAttribute("data-state", b.state);
        rect.setAttribute("data-start", b.start);
        rect.setAttribute("data-end", b.end);
        for (const [k, v] of Object.entries(b.attrs || {})) rect.setAttribute(k, v);
        rect.firstChild.textContent = `${r.title || r.label}\n${b.state}: ${clock(b.start, true)} – ` +
          `${clock(b.end, true)} (${formatDuration(b.end - b.start)})`;
        const label = b.text !== undefined ? b.text : b.state;
        const fits = !marker && w > label.length * 6.6 + 10;
        texts[j].textContent = fits ? label : "";
        texts[j].setAttribute("x", bx + 5);
      });
    });
    return { from: t0, to: t1 };
  }

  // The colours of `states`, and the time range the chart spans.
  function legend(box, states, range) {
    const key = [...states].join(",");
    if (box.dataset.states !== key) {
      box.dataset.states = key;
      box.replaceChildren(...[...states].map((s) =>
        el("span", { class: "legend-item", "data-state": s },
          el("span", { class: "legend-swatch", style: `background:${colour(s)}` }), s)),
      el("span", { class: "legend-span" }, ""));
    }
    box.lastChild.textContent = `From ${formatTime(range.from)}, spanning ${formatDuration(range.to - range.from)}`;
  }

  // The vertex whose subtasks are shown, per job.
  const timelineSelection = new Map();
  // The selected vertex's answers: { jid, vid, times, detail, final, attempts: Map }.
  let timelineCache = null;
  // At most this many earlier attempts per subtask are fetched.
  const MAX_EARLIER_ATTEMPTS = 10;

  function buildTimeline() {
    return [
      el("section", { class: "timeline-section" },
        el("h2", {}, "Job Timeline"),
        el("p", { class: "tab-note" }, "The job's states and each vertex's run, from its first subtask's " +
          "deployment to its last subtask's end. Click a vertex to see its subtasks."),
        el("div", { id: "timeline-main", class: "gantt-box" }),
        el("div", { id: "timeline-legend", class: "gantt-legend" })),
      el("section", { id: "timeline-subtasks", class: "timeline-section", hidden: "" },
        el("h2", {}, "Subtasks of ", el("span", { id: "timeline-vertex-name", class: "vertex-name" }, "–")),
        el("p", { class: "tab-note" }, "Each subtask's current attempt, and the earlier attempts of " +
          "restarted subtasks, by the time spent in each state."),
        el("div", { id: "timeline-subtask-chart", class: "gantt-box" }),
        el("div", { id: "timeline-subtask-legend", class: "gantt-legend" })),
    ];
  }

  function pickVertex(jid, vid) {
    timelineSelection.set(jid, vid);
    Flint.refresh();
  }

  async function loadSubtaskTimes(jid, job, vid) {
    const final = COMPLETED_STATES.has(String(job.state));
    let c = timelineCache && timelineCache.jid === jid && timelineCache.vid === vid ? timelineCache : null;
    if (!c || !c.final) {
      const [times, detail] = await Promise.all([
        getJson(`jobs/${jid}/vertices/${vid}/subtasktimes`),
        getJson(`jobs/${jid}/vertices/${vid}`),
      ]);
      c = { jid, vid, times, detail, final, attempts: c ? c.attempts : new Map() };
    }
    const missing = [];
    for (const st of c.detail.subtasks || []) {
      const current = isNum(st.attempt) ? st.attempt : 0;
      for (let n = Math.max(0, current - MAX_EARLIER_ATTEMPTS); n < current; n++) {
        if (!c.attempts.has(`${st.subtask}/${n}`)) missing.push([st.subtask, n]);
      }
    }
    await Promise.all(missing.map(async ([i, n]) => {
      let answer = null;
      try {
        answer = await getJson(`jobs/${jid}/vertices/${vid}/subtasks/${i}/attempts/${n}`);
      } catch (_) {
        answer = null; // not kept by the server: the row is left out
      }
      c.attempts.set(`${i}/${n}`, answer);
    }));
    timelineCache = c;
    return c;
  }

  function vertexRows(job, selected) {
    const now = isNum(job.now) ? job.now : Date.now();
    const rows = [{
      key: "job", label: `Job (${job.state})`, title: `Job ${job.name}: its states`, pickable: false,
      attrs: { "data-job-id": job.jid },
      bars: stateBars(job.timestamps, now, JOB_STATE_ORDER).map((b) => ({ ...b, attrs: { "data-job-state": b.state } })),
    }];
    const vertices = [...(job.vertices || [])].sort((a, b) =>
      ((a["start-time"] > 0 ? a["start-time"] : Infinity) - (b["start-time"] > 0 ? b["start-time"] : Infinity)));
    for (const v of vertices) {
      const start = v["start-time"];
      const bars = [];
      if (isNum(start) && start > 0) {
        const end = isNum(v["end-time"]) && v["end-time"] > 0 ? v["end-time"]
          : start + (isNum(v.duration) && v.duration > 0 ? v.duration : 0);
        bars.push({ state: String(v.status), start, end: Math.max(start, end),
          attrs: { "data-vertex-id": v.id }, text: formatDuration(Math.max(0, end - start)) });
      }
      rows.push({ key: v.id, label: String(v.name), title: `${v.name} (parallelism ${v.parallelism}, ${v.status})`,
        emptyText: `not deployed (${v.status})`,
        attrs: { "data-vertex-id": v.id }, selected: v.id === selected, bars });
    }
    return rows;
  }

  function subtaskRows(c, vid) {
    const attemptOf = new Map((c.detail.subtasks || []).map((s) => [s.subtask, isNum(s.attempt) ? s.attempt : 0]));
    const rows = [];
    const subtasks = [...(c.times.subtasks || [])].sort((a, b) => a.subtask - b.subtask);
    for (const st of subtasks) {
      const current = attemptOf.get(st.subtask) || 0;
      for (let n = 0; n < current; n++) {
        const a = c.attempts.get(`${st.subtask}/${n}`);
        if (!a) continue;
        const where = a.endpoint || a.host || "(unassigned)";
        rows.push({ key: `${st.subtask}/${n}`, label: `${st.subtask} - ${where} (attempt ${n})`,
          attrs: { "data-subtask": st.subtask, "data-attempt": n, class: "row earlier" },
          bars: attemptBars(a).map((b) => ({ ...b,
            attrs: { "data-vertex-id": vid, "data-subtask": st.subtask, "data-attempt": n } })) });
      }
      const where = st.endpoint || st.host || "(unassigned)";
      rows.push({ key: `${st.subtask}/${current}`,
        label: `${st.subtask} - ${where}` + (current > 0 ? ` (attempt ${current})` : ""),
        attrs: { "data-subtask": st.subtask, "data-attempt": current },
        bars: stateBars(st.timestamps, c.times.now, STATE_ORDER).map((b) => ({ ...b,
          attrs: { "data-vertex-id": vid, "data-subtask": st.subtask, "data-attempt": current } })) });
    }
    return rows;
  }

  async function renderTimeline(container, jid, job) {
    const key = skeleton(container, "timeline", jid, buildTimeline);
    let selected = timelineSelection.get(jid) || null;
    if (selected && !(job.vertices || []).some((v) => v.id === selected)) selected = null;
    const c = selected ? await loadSubtaskTimes(jid, job, selected) : null;
    if (container.dataset.tabKey !== key) return; // another tab or job took the container meanwhile

    const rows = vertexRows(job, selected);
    const range = gantt(byId("timeline-main"), rows, (vid) => { if (vid !== "job") pickVertex(jid, vid); });
    legend(byId("timeline-legend"), new Set(rows.flatMap((r) => r.bars.map((b) => b.state))), range);

    const sub = byId("timeline-subtasks");
    sub.hidden = !c;
    if (!c) return;
    const vertex = job.vertices.find((v) => v.id === selected);
    byId("timeline-vertex-name").textContent = vertex ? vertex.name : selected;
    sub.dataset.vertexId = selected;
    const srows = subtaskRows(c, selected);
    const srange = gantt(byId("timeline-subtask-chart"), srows, null);
    legend(byId("timeline-subtask-legend"), new Set(srows.flatMap((r) => r.bars.map((b) => b.state))), srange);
    if (sub.dataset.shown !== selected) {
      sub.dataset.shown = selected;
      const box = sub.getBoundingClientRect();
      if (box.top > window.innerHeight - 120) sub.scrollIntoView({ block: "start" });
    }
  }

  Flint.jobTabs.timeline = { title: "Timeline", render: renderTimeline };

  // ---- Exceptions ------------------------------------------------------------------------

  const EXCEPTION_PAGE = 20;
  // Per job: the entries expanded (by key) and how many entries are asked for.
  const expandedExceptions = new Map();
  const exceptionLimit = new Map();

  function buildExceptions(jid) {
    const table = el("table", { id: "exception-history", class: "grouped" },
      el("thead", {}, el("tr", {},
        el("th", { class: "expander-col" }, ""), el("th", {}, "Time"), el("th", {}, "Exception"),
        el("th", {}, "Task"), el("th", {}, "Location"), el("th", {}, "Labels"))),
      el("tbody", {}, placeholderRow(6, "Loading…")));
    table.addEventListener("click", (e) => {
      const row = e.target.closest("tr.exception-row");
      if (!row || e.target.closest("a")) return;
      toggle(expandedExceptions, jid, row.dataset.exceptionKey);
      Flint.refresh();
    });
    const more = el("button", { id: "exceptions-more", type: "button", hidden: "" }, "Load more");
    more.addEventListener("click", () => {
      exceptionLimit.set(jid, (exceptionLimit.get(jid) || EXCEPTION_PAGE) + EXCEPTION_PAGE);
      Flint.refresh();
    });
    return [
      section("Root Exception",
        el("p", { id: "exceptions-none", class: "tab-note", hidden: "" }, "No exceptions"),
        el("div", { id: "root-exception-box" },
          el("p", { class: "tab-note" }, "Time ", el("span", { id: "root-exception-time", class: "mono" }, "–")),
          el("pre", { id: "root-exception", class: "log" }, "–"))),
      section("Exception History",
        el("div", { class: "table-wrap" }, table),
        el("p", { class: "tab-note exceptions-footer" }, el("span", { id: "exceptions-shown" }, ""), " ", more)),
    ];
  }

  function toggle(map, jid, key) {
    const set = map.get(jid) || new Set();
    if (set.has(key)) set.delete(key); else set.add(key);
    map.set(jid, set);
  }

  function locationCell(e) {
    const where = e.endpoint || e.location;
    const tm = e.taskManagerId;
    const td = el("td", { "data-col": "location", class: "mono" });
    if (tm) {
      td.append(el("a", { href: `#/taskmanagers/${encodeURIComponent(tm)}` }, tm));
      if (where && where !== tm) td.append(el("div", { class: "muted" }, where));
    } else {
      td.append(where || "(unknown)");
    }
    return td;
  }

  function labelsCell(labels) {
    const entries = Object.entries(labels || {});
    return el("td", { "data-col": "labels" }, ...(entries.length
      ? entries.map(([k, v]) => el("span", { class: "badge label-badge" }, `${k}: ${v}`))
      : ["–"]));
  }

  function exceptionDetail(e) {
    const box = el("div", { class: "exception-detail" }, el("pre", { class: "log stacktrace" }, e.stacktrace || "(no stack trace)"));
    const concurrent = e.concurrentExceptions || [];
    if (concurrent.length) {
      box.append(el("h3", { class: "vertex-subtitle" }, `Concurrent exceptions (${concurrent.length})`));
      for (const c of concurrent) {
        box.append(el("div", { class: "concurrent-exception" },
          el("div", { class: "concurrent-head" }, el("strong", {}, c.exceptionName || "Exception"),
            ` · ${c.taskName || "(unknown task)"} · ${c.endpoint || c.location || c.taskManagerId || "(unknown location)"}`),
          el("pre", { class: "log stacktrace" }, c.stacktrace || "(no stack trace)")));
      }
    }
    return el("tr", { class: "exception-detail-row" }, el("td", { colspan: 6 }, box));
  }

  async function renderExceptions(container, jid) {
    const key = skeleton(container, "exceptions", jid, () => buildExceptions(jid));
    const limit = exceptionLimit.get(jid) || EXCEPTION_PAGE;
    const answer = await getJson(`jobs/${jid}/exceptions?maxExceptions=${limit}`);
    if (container.dataset.tabKey !== key) return;

    const root = answer["root-exception"];
    const entries = [...((answer.exceptionHistory || {}).entries || [])]
      .sort((a, b) => (b.timestamp || 0) - (a.timestamp || 0));
    const none = !root && entries.length === 0;
    byId("exceptions-none").hidden = !none;
    byId("root-exception-box").hidden = none;
    if (root) {
      const time = byId("root-exception-time");
      time.textContent = formatTime(answer.timestamp);
      time.dataset.timestamp = answer.timestamp;
      const pre = byId("root-exception");
      if (pre.textContent !== root) pre.textContent = root;
    }

    // Keys: the timestamp, task and name, numbered when several entries share them.
    const seen = new Map();
    const keyed = entries.map((e) => {
      const base = `${e.timestamp}|${e.taskName || ""}|${e.exceptionName || ""}`;
      const n = (seen.get(base) || 0) + 1;
      seen.set(base, n);
      return { e, key: `${base}|${n}` };
    });
    const expanded = expandedExceptions.get(jid) || new Set();
    syncGroups(byId("exception-history"), keyed, (k) => k.key, (tb, { e, key: k }) => {
      const open = expanded.has(k);
      putRow(tb, 0, el("tr", { "data-timestamp": e.timestamp, class: "exception-row expandable" + (open ? " expanded" : ""),
        "data-exception-key": k, title: "Click to show the stack trace" },
        el("td", { class: "expander" }, open ? "▾" : "▸"),
        el("td", { "data-col": "time", class: "nowrap" }, formatTime(e.timestamp)),
        el("td", { "data-col": "exception" }, el("strong", {}, e.exceptionName || "(unnamed)")),
        el("td", { "data-col": "task" }, e.taskName || "(global failure)"),
        locationCell(e),
        labelsCell(e.failureLabels)));
      if (open && tb.rows.length < 2) tb.append(exceptionDetail(e));
      if (!open) trimRows(tb, 1);
    }, 6, "No exceptions");

    const truncated = !!(answer.exceptionHistory || {}).truncated;
    byId("exceptions-shown").textContent = truncated ? `Showing the newest ${entries.length} exceptions.` : "";
    byId("exceptions-more").hidden = !truncated;
  }

  Flint.jobTabs.exceptions = { title: "Exceptions", render: renderExceptions };

  // ---- Checkpoints ---------------------------------------------------------------------

  const CP_SUBTABS = [["overview", "Overview"], ["history", "History"], ["summary", "Summary"],
    ["configuration", "Configuration"]];
  let cpSubtab = "overview";
  // Per job: expanded checkpoint ids, and expanded "<checkpoint id>/<vertex id>" pairs.
  const expandedCheckpoints = new Map();
  const expandedCpVertices = new Map();
  // Answers that no longer change (a checkpoint that is no longer in progress; the config).
  const cpDetails = new Map(); // "<jid>/<cid>" -> details
  const cpSubtasks = new Map(); // "<jid>/<cid>/<vid>" -> subtask details
  const cpConfig = new Map(); // jid -> config answer, or { error }

  const HISTORY_COLS = 11;

  function buildCheckpoints(jid) {
    const nav = el("nav", { id: "checkpoint-subtabs", class: "tabs subtabs" }, ...CP_SUBTABS.map(([k, title]) =>
      el("button", { type: "button", class: "tab", "data-subtab": k }, title)));
    nav.addEventListener("click", (e) => {
      const b = e.target.closest("button[data-subtab]");
      if (!b) return;
      cpSubtab = b.dataset.subtab;
      showSubtab();
    });

    const counts = el("div", { class: "cards cp-counts" }, ...[
      ["total", "Triggered"], ["in_progress", "In Progress"], ["completed", "Completed"],
      ["failed", "Failed"], ["restored", "Restored"]].map(([k, label]) =>
      el("div", { class: `card cp-count-${k}` }, el("div", { class: "card-label" }, label),
        el("div", { id: `cp-count-${k}`, class: "card-value", "data-count": k }, "–"))));

    const latest = el("table", { id: "checkpoint-latest" },
      el("thead", {}, el("tr", {}, ...["", "ID", "Time", "End to End Duration", "Checkpointed Data Size",
        "Full Checkpoint Data Size", "Path / Cause"].map((t, i) => el("th", i >= 3 && i <= 5 ? { class: "num" } : {}, t)))),
      el("tbody", {}));
    latest.addEventListener("click", (e) => {
      const a = e.target.closest("button[data-open-checkpoint]");
      if (!a) return;
      const set = expandedCheckpoints.get(jid) || new Set();
      set.add(a.dataset.openCheckpoint);
      expandedCheckpoints.set(jid, set);
      cpSubtab = "history";
      showSubtab();
      Flint.refresh();
    });

    const history = el("table", { id: "checkpoint-history", class: "grouped" },
      el("thead", {}, el("tr", {},
        el("th", { class: "expander-col" }, ""), el("th", { class: "num" }, "ID"), el("th", {}, "Status"),
        el("th", {}, "Type"), el("th", { class: "num" }, "Acknowledged"), el("th", {}, "Trigger Time"),
        el("th", {}, "Latest Acknowledgement"), el("th", { class: "num" }, "End to End Duration"),
        el("th", { class: "num" }, "Checkpointed Data Size"), el("th", { class: "num" }, "Full Checkpoint Data Size"),
        el("th", { class: "num" }, "Processed (Persisted) In-Flight Data"))),
      el("tbody", {}, placeholderRow(HISTORY_COLS, "Loading…")));
    history.addEventListener("click", (e) => {
      if (e.target.closest("a")) return;
      const vrow = e.target.closest("tr.cp-vertex-row");
      if (vrow) {
        toggle(expandedCpVertices, jid, `${vrow.dataset.cpId}/${vrow.dataset.vertexId}`);
        Flint.refresh();
        return;
      }
      const row = e.target.closest("tr.checkpoint-row");
      if (!row) return;
      toggle(expandedCheckpoints, jid, row.dataset.checkpointId);
      Flint.refresh();
    });

    const summary = el("table", { id: "checkpoint-summary" },
      el("thead", {}, el("tr", {}, el("th", {}, ""), el("th", { class: "num" }, "End to End Duration"),
        el("th", { class: "num" }, "Checkpointed Data Size"), el("th", { class: "num" }, "Full Checkpoint Data Size"),
        el("th", { class: "num" }, "Processed (Persisted) In-Flight Data"))),
      el("tbody", {}));

    return [
      nav,
      el("div", { class: "cp-pane", "data-pane": "overview", id: "checkpoints-overview" },
        el("h2", {}, "Checkpoint Counts"), counts,
        el("h2", {}, "Latest Checkpoints"), el("div", { class: "table-wrap" }, latest)),
      el("div", { class: "cp-pane", "data-pane": "history", id: "checkpoints-history" },
        el("p", { class: "tab-note" }, "The most recent checkpoints, newest first (",
          el("code", {}, "web.checkpoints.history"), "). Click a checkpoint to see its vertices, a vertex to see its subtasks."),
        el("div", { class: "table-wrap" }, history)),
      el("div", { class: "cp-pane", "data-pane": "summary", id: "checkpoints-summary" },
        el("p", { class: "tab-note" }, "Over the completed checkpoints the job manager remembers."),
        el("div", { class: "table-wrap" }, summary)),
      el("div", { class: "cp-pane", "data-pane": "configuration", id: "checkpoints-configuration" },
        keyValueTable("checkpoint-config", "Option")),
    ];
  }

  function showSubtab() {
    for (const b of document.querySelectorAll("#checkpoint-subtabs button")) {
      b.classList.toggle("active", b.dataset.subtab === cpSubtab);
    }
    for (const pane of document.querySelectorAll("#job-tab-content .cp-pane")) {
      pane.hidden = pane.dataset.pane !== cpSubtab;
    }
  }

  function cpStatusBadge(status) {
    const s = String(status || "UNKNOWN");
    return el("span", { class: `badge cp-${s.toLowerCase()}` }, s);
  }

  function cpType(c) {
    if (c.is_savepoint || /SAVEPOINT/.test(String(c.checkpoint_type))) return "Savepoint";
    return /UNALIGNED/.test(String(c.checkpoint_type)) ? "Unaligned Checkpoint" : "Checkpoint";
  }

  function acknowledged(c) {
    const acked = c.num_acknowledged_subtasks;
    const total = c.num_subtasks;
    let text = `${nOrDash(acked)}/${nOrDash(total)}`;
    if (c.status === "IN_PROGRESS" && isNum(acked) && total > 0) text += ` (${Math.round((acked / total) * 100)}%)`;
    return text;
  }

  const inflight = (processed, persisted) => `${formatBytes(processed)} (${formatBytes(persisted)})`;

  function latestRow(kind, label, c) {
    if (!c) {
      return el("tr", { "data-latest": kind }, el("th", { scope: "row" }, label),
        el("td", { colspan: 6, class: "muted" }, "None"));
    }
    const failed = kind === "failed";
    const restored = kind === "restored";
    const time = failed ? c.failure_timestamp : restored ? c.restore_timestamp : c.latest_ack_timestamp;
    const idCell = el("td", { class: "num", "data-col": "id" });
    if (restored) idCell.append(String(c.id));
    else idCell.append(el("button", { type: "button", class: "link-button", "data-open-checkpoint": c.id,
      title: "Show in the history" }, String(c.id)));
    const last = failed ? (c.failure_message || "n/a")
      : restored ? `${c.is_savepoint ? "Savepoint" : "Checkpoint"}: ${c.external_path || "n/a"}`
        : (c.external_path || "n/a");
    return el("tr", { "data-latest": kind, "data-checkpoint-id": c.id }, el("th", { scope: "row" }, label), idCell,
      el("td", { "data-col": "time", "data-timestamp": time, class: "nowrap" }, timeOrNa(time)),
      restored ? el("td", { class: "num" }, "–") : numCell("duration", c.end_to_end_duration, formatDuration),
      restored ? el("td", { class: "num" }, "–") : numCell("checkpointed-size", c.checkpointed_size, formatBytes),
      restored ? el("td", { class: "num" }, "–") : numCell("state-size", c.state_size, formatBytes),
      el("td", { "data-col": failed ? "cause" : "path", class: "mono path" }, last));
  }

  function historyRow(c, open) {
    return el("tr", { "data-checkpoint-id": c.id, class: "checkpoint-row expandable" + (open ? " expanded" : ""),
      "data-status": c.status, title: "Click to show the checkpoint's vertices" },
      el("td", { class: "expander" }, open ? "▾" : "▸"),
      el("td", { class: "num", "data-col": "id" }, String(c.id)),
      el("td", { "data-col": "status" }, cpStatusBadge(c.status)),
      el("td", { "data-col": "type" }, cpType(c)),
      el("td", { class: "num", "data-col": "acknowledged" }, acknowledged(c)),
      el("td", { "data-col": "trigger", "data-timestamp": c.trigger_timestamp, class: "nowrap" }, timeOrNa(c.trigger_timestamp)),
      el("td", { "data-col": "latest-ack", "data-timestamp": c.latest_ack_timestamp, class: "nowrap" }, timeOrNa(c.latest_ack_timestamp)),
      numCell("duration", c.end_to_end_duration, durationOrNa),
      numCell("checkpointed-size", c.checkpointed_size, formatBytes),
      numCell("state-size", c.state_size, formatBytes),
      el("td", { class: "num", "data-col": "inflight" }, inflight(c.processed_data, c.persisted_data)));
  }

  function statsCell(col, stats, key, format) {
    const v = stats ? numeric(stats[key]) : undefined;
    return numCell(col, isNum(v) ? v : undefined, format);
  }

  function renderSummary(summary) {
    const s = summary || {};
    const rows = [["min", "Minimum"], ["avg", "Average"], ["max", "Maximum"], ["p50", "50th percentile"],
      ["p90", "90th percentile"], ["p95", "95th percentile"], ["p99", "99th percentile"], ["p999", "99.9th percentile"]]
      .map(([k, label]) => {
        const processed = numeric((s.processed_data || {})[k]);
        const persisted = numeric((s.persisted_data || {})[k]);
        return el("tr", { "data-stat": k }, el("th", { scope: "row" }, label),
          statsCell("duration", s.end_to_end_duration, k, formatDuration),
          statsCell("checkpointed-size", s.checkpointed_size, k, formatBytes),
          statsCell("state-size", s.state_size, k, formatBytes),
          el("td", { class: "num", "data-col": "inflight" },
            isNum(processed) || isNum(persisted) ? inflight(processed, persisted) : "n/a"));
      });
    syncRows(byId("checkpoint-summary").tBodies[0], rows);
  }

  function renderCpConfig(cfg) {
    const tbody = byId("checkpoint-config").tBodies[0];
    if (!cfg || cfg.error) {
      syncRows(tbody, [placeholderRow(2, cfg && cfg.error ? cfg.error : "Loading…")]);
      return;
    }
    const enabled = (b) => (b ? "Enabled" : "Disabled");
    const ms = (v) => (isNum(v) && v >= 0 && v < 9e15 ? formatDuration(v) : "n/a");
    const ext = cfg.externalization || {};
    const rows = [
      kvRow("mode", "Checkpointing Mode", cfg.mode === "exactly_once" ? "Exactly Once"
        : cfg.mode === "at_least_once" ? "At Least Once" : String(cfg.mode ?? "n/a")),
      kvRow("checkpoint_storage", "Checkpoint Storage", cfg.checkpoint_storage ?? "n/a"),
      kvRow("state_backend", "State Backend", cfg.state_backend ?? "n/a"),
      kvRow("interval", "Interval", isNum(cfg.interval) && cfg.interval >= 9e15 ? "Periodic checkpoints disabled" : ms(cfg.interval)),
      kvRow("timeout", "Timeout", ms(cfg.timeout)),
      kvRow("min_pause", "Minimum Pause Between Checkpoints", ms(cfg.min_pause)),
      kvRow("max_concurrent", "Maximum Concurrent Checkpoints", cfg.max_concurrent ?? "n/a"),
      kvRow("unaligned_checkpoints", "Unaligned Checkpoints", enabled(cfg.unaligned_checkpoints) +
        (cfg.unaligned_checkpoints && isNum(cfg.aligned_checkpoint_timeout)
          ? ` (aligned checkpoint timeout ${ms(cfg.aligned_checkpoint_timeout)})` : "")),
      kvRow("externalization", "Persist Checkpoints Externally", ext.enabled
        ? `Enabled (${ext.delete_on_cancellation ? "delete" : "retain"} on cancellation)` : "Disabled"),
      kvRow("tolerable_failed_checkpoints", "Tolerable Failed Checkpoints", cfg.tolerable_failed_checkpoints ?? "n/a"),
      kvRow("checkpoints_after_tasks_finish", "Checkpoints With Finished Tasks", enabled(cfg.checkpoints_after_tasks_finish)),
      kvRow("state_changelog_enabled", "State Changelog", enabled(cfg.state_changelog_enabled)),
    ];
    if (cfg.state_changelog_enabled) {
      rows.push(kvRow("changelog_storage", "Changelog Storage", cfg.changelog_storage ?? "n/a"),
        kvRow("changelog_periodic_materialization_interval", "Changelog Periodic Materialization Interval",
          ms(cfg.changelog_periodic_materialization_interval)));
    }
    syncRows(tbody, rows);
  }

  // The per-vertex table of an expanded checkpoint, and per expanded vertex its subtasks.
  function checkpointDetail(jid, job, cid, details) {
    const box = el("div", { class: "cp-detail" });
    if (!details) {
      box.append(el("p", { class: "tab-note" }, "Loading…"));
      return box;
    }
    if (details.error) {
      box.append(el("p", { class: "tab-note" }, details.error));
      return box;
    }
    const table = el("table", { class: "cp-vertices grouped", "data-cp-id": cid },
      el("thead", {}, el("tr", {}, el("th", { class: "expander-col" }, ""), el("th", {}, "Vertex"),
        el("th", {}, "Status"), el("th", { class: "num" }, "Acknowledged"), el("th", {}, "Latest Acknowledgement"),
        el("th", { class: "num" }, "End to End Duration"), el("th", { class: "num" }, "Checkpointed Data Size"),
        el("th", { class: "num" }, "Full Checkpoint Data Size"),
        el("th", { class: "num" }, "Processed (Persisted) In-Flight Data"))));
    const tasks = details.tasks || {};
    const order = (job.vertices || []).map((v) => v.id).filter((id) => tasks[id]);
    for (const id of Object.keys(tasks)) if (!order.includes(id)) order.push(id);
    const names = new Map((job.vertices || []).map((v) => [v.id, v.name]));
    const expanded = expandedCpVertices.get(jid) || new Set();
    for (const vid of order) {
      const t = tasks[vid];
      const open = expanded.has(`${cid}/${vid}`);
      const tb = el("tbody", { "data-group": vid });
      tb.append(el("tr", { "data-vertex-id": vid, "data-cp-id": cid,
        class: "cp-vertex-row expandable" + (open ? " expanded" : ""), title: "Click to show the subtasks" },
        el("td", { class: "expander" }, open ? "▾" : "▸"),
        el("td", { "data-col": "name" }, names.get(vid) || vid),
        el("td", { "data-col": "status" }, cpStatusBadge(t.status)),
        el("td", { class: "num", "data-col": "acknowledged" }, acknowledged(t)),
        el("td", { "data-col": "latest-ack", "data-timestamp": t.latest_ack_timestamp, class: "nowrap" },
          timeOrNa(t.latest_ack_timestamp)),
        numCell("duration", t.end_to_end_duration, durationOrNa),
        numCell("checkpointed-size", t.checkpointed_size, formatBytes),
        numCell("state-size", t.state_size, formatBytes),
        el("td", { class: "num", "data-col": "inflight" }, inflight(t.processed_data, t.persisted_data))));
      if (open) {
        tb.append(el("tr", { class: "cp-subtasks-row" }, el("td", { colspan: 9 },
          subtaskDetail(cpSubtasks.get(`${jid}/${cid}/${vid}`)))));
      }
      table.append(tb);
    }
    if (order.length === 0) table.append(el("tbody", {}, placeholderRow(9, "No vertex acknowledged yet")));
    box.append(table);
    return box;
  }

  const SUBTASK_COLS = [
    ["end-to-end", "End to End Duration", (s) => s.end_to_end_duration, formatDuration],
    ["checkpointed-size", "Checkpointed Data Size", (s) => s.checkpointed_size, formatBytes],
    ["state-size", "Full Checkpoint Data Size", (s) => s.state_size, formatBytes],
    ["sync", "Sync Duration", (s) => (s.checkpoint || {}).sync, formatDuration],
    ["async", "Async Duration", (s) => (s.checkpoint || {}).async, formatDuration],
    ["buffered", "Alignment Buffered", (s) => (s.alignment || {}).buffered, formatBytes],
    ["processed", "Processed Data", (s) => (s.alignment || {}).processed, formatBytes],
    ["persisted", "Persisted Data", (s) => (s.alignment || {}).persisted, formatBytes],
    ["alignment", "Alignment Duration", (s) => (s.alignment || {}).duration, formatDuration],
    ["start-delay", "Start Delay", (s) => s.start_delay, formatDuration],
  ];

  function subtaskDetail(d) {
    if (!d) return el("p", { class: "tab-note" }, "Loading…");
    if (d.error) return el("p", { class: "tab-note" }, d.error);
    const sum = d.summary || {};
    const summaryOf = {
      "end-to-end": sum.end_to_end_duration, "checkpointed-size": sum.checkpointed_size, "state-size": sum.state_size,
      sync: (sum.checkpoint_duration || {}).sync, async: (sum.checkpoint_duration || {}).async,
      buffered: (sum.alignment || {}).buffered, processed: (sum.alignment || {}).processed,
      persisted: (sum.alignment || {}).persisted, alignment: (sum.alignment || {}).duration,
      "start-delay": sum.start_delay,
    };
    const head = el("tr", {}, el("th", { class: "num" }, "Subtask"), el("th", {}, "Acknowledged"),
      ...SUBTASK_COLS.map(([, title]) => el("th", { class: "num" }, title)), el("th", {}, "Unaligned"));
    const summaryRows = [["min", "Minimum"], ["avg", "Average"], ["max", "Maximum"]].map(([k, label]) =>
      el("tr", { class: "summary-row", "data-stat": k }, el("th", { scope: "row", class: "num" }, label), el("td", {}, ""),
        ...SUBTASK_COLS.map(([col, , , format]) => statsCell(col, summaryOf[col], k, format)), el("td", {}, "")));
    const subtaskRows = (d.subtasks || []).map((s) => {
      const done = s.status === "completed";
      return el("tr", { "data-subtask": s.index, "data-status": s.status },
        el("td", { class: "num", "data-col": "index" }, s.index),
        el("td", { "data-col": "ack", class: "nowrap" }, done ? timeOrNa(s.ack_timestamp) : "pending or failed"),
        ...SUBTASK_COLS.map(([col, , get, format]) => (done ? numCell(col, get(s), format) : el("td", { class: "num" }, "n/a"))),
        el("td", { "data-col": "unaligned" }, done ? (s.unaligned_checkpoint ? "yes" : "no") : "n/a"));
    });
    return el("div", { class: "cp-subtasks" },
      el("table", { class: "cp-subtask-table" }, el("thead", {}, head),
        el("tbody", { class: "summary" }, ...summaryRows), el("tbody", {}, ...subtaskRows)));
  }

  async function loadCheckpointDetails(jid, history) {
    const open = expandedCheckpoints.get(jid) || new Set();
    const openVertices = expandedCpVertices.get(jid) || new Set();
    const byId_ = new Map(history.map((c) => [String(c.id), c]));
    const settled = (c) => c && c.status !== "IN_PROGRESS";
    const jobs = [];
    for (const cid of open) {
      const c = byId_.get(cid);
      if (!c) continue;
      const key = `${jid}/${cid}`;
      if (!(cpDetails.has(key) && settled(c) && !cpDetails.get(key).error)) {
        jobs.push(getJson(`jobs/${jid}/checkpoints/details/${cid}`)
          .then((d) => cpDetails.set(key, d), (e) => cpDetails.set(key, { error: e.message })));
      }
      for (const pair of openVertices) {
        const [pcid, vid] = pair.split("/");
        if (pcid !== cid) continue;
        const skey = `${jid}/${cid}/${vid}`;
        if (cpSubtasks.has(skey) && settled(c) && !cpSubtasks.get(skey).error) continue;
        jobs.push(getJson(`jobs/${jid}/checkpoints/details/${cid}/subtasks/${vid}`)
          .then((d) => cpSubtasks.set(skey, d), (e) => cpSubtasks.set(skey, { error: e.message })));
      }
    }
    await Promise.all(jobs);
  }

  async function renderCheckpoints(container, jid, job) {
    const key = skeleton(container, "checkpoints", jid, () => buildCheckpoints(jid));
    showSubtab();
    // Forget the answers of other jobs.
    for (const m of [cpDetails, cpSubtasks]) for (const k of m.keys()) if (!k.startsWith(`${jid}/`)) m.delete(k);
    let stats;
    let statsError = null;
    try {
      stats = await getJson(`jobs/${jid}/checkpoints`);
    } catch (e) {
      statsError = e.message;
      stats = {};
    }
    const history = [...(stats.history || [])].sort((a, b) => b.id - a.id);
    await Promise.all([
      loadCheckpointDetails(jid, history),
      cpConfig.has(jid) ? null : getJson(`jobs/${jid}/checkpoints/config`)
        .then((c) => cpConfig.set(jid, c), (e) => cpConfig.set(jid, { error: `No checkpoint configuration: ${e.message}` })),
    ]);
    if (container.dataset.tabKey !== key) return;

    const counts = stats.counts || {};
    for (const k of ["total", "in_progress", "completed", "failed", "restored"]) {
      byId(`cp-count-${k}`).textContent = isNum(counts[k]) ? counts[k] : "–";
    }
    const latest = stats.latest || {};
    syncRows(byId("checkpoint-latest").tBodies[0], [
      latestRow("completed", "Latest Completed Checkpoint", latest.completed),
      latestRow("savepoint", "Latest Savepoint", latest.savepoint),
      latestRow("failed", "Latest Failed Checkpoint", latest.failed),
      latestRow("restored", "Latest Restore", latest.restored),
    ]);

    const open = expandedCheckpoints.get(jid) || new Set();
    const openVertices = expandedCpVertices.get(jid) || new Set();
    syncGroups(byId("checkpoint-history"), history, (c) => c.id, (tb, c) => {
      const cid = String(c.id);
      const isOpen = open.has(cid);
      putRow(tb, 0, historyRow(c, isOpen));
      if (!isOpen) {
        trimRows(tb, 1);
        return;
      }
      // The detail row is rebuilt only when what it shows changed.
      const details = cpDetails.get(`${jid}/${cid}`);
      const sig = JSON.stringify([details || null, [...openVertices].filter((p) => p.startsWith(`${cid}/`)).sort()
        .map((p) => [p, cpSubtasks.get(`${jid}/${p}`) || null])]);
      const current = tb.rows[1];
      if (current && current.dataset.sig === sig) return;
      const row = el("tr", { class: "checkpoint-detail-row", "data-detail-of": cid },
        el("td", { colspan: HISTORY_COLS }, checkpointDetail(jid, job, cid, details)));
      row.dataset.sig = sig;
      if (current) current.replaceWith(row); else tb.append(row);
    }, HISTORY_COLS, statsError ? `No checkpoint statistics: ${statsError}` : "No checkpoints yet");

    renderSummary(stats.summary);
    renderCpConfig(cpConfig.get(jid));
  }

  Flint.jobTabs.checkpoints = { title: "Checkpoints", render: renderCheckpoints };

  // ---- Configuration -----------------------------------------------------------------------

  // Per job: { config, jobmanager } (jobmanager null when the endpoint does not answer).
  const jobConfigs = new Map();

  function buildConfiguration() {
    return [
      section("Execution Configuration", keyValueTable("config-execution", "Option")),
      section("User Configuration", keyValueTable("config-user")),
      el("section", { id: "config-jobmanager-section", hidden: "" },
        el("h2", {}, "Job Manager Configuration"),
        el("p", { class: "tab-note" }, "The configuration the job manager runs this job with (",
          el("code", {}, "jobs/<id>/jobmanager/config"), ")."),
        keyValueTable("config-jobmanager")),
    ];
  }

  async function renderConfiguration(container, jid) {
    const key = skeleton(container, "configuration", jid, buildConfiguration);
    if (!jobConfigs.has(jid)) {
      const [config, jobmanager] = await Promise.all([
        getJson(`jobs/${jid}/config`),
        getJson(`jobs/${jid}/jobmanager/config`).catch(() => null),
      ]);
      jobConfigs.set(jid, { config, jobmanager });
    }
    if (container.dataset.tabKey !== key) return;
    const { config, jobmanager } = jobConfigs.get(jid);
    const ec = config["execution-config"] || {};
    syncRows(byId("config-execution").tBodies[0], [
      kvRow("execution-mode", "Execution Mode", ec["execution-mode"] ?? "n/a"),
      kvRow("restart-strategy", "Restart Strategy", ec["restart-strategy"] ?? "n/a"),
      kvRow("job-parallelism", "Job Parallelism", ec["job-parallelism"] ?? "n/a"),
      kvRow("object-reuse-mode", "Object Reuse Mode", ec["object-reuse-mode"] ?? "n/a"),
    ]);
    const user = Object.entries(ec["user-config"] || {}).sort(([a], [b]) => a.localeCompare(b));
    syncRows(byId("config-user").tBodies[0], user.length
      ? user.map(([k, v]) => kvRow(k, el("span", { class: "mono" }, k),
        el("span", { class: "mono" }, typeof v === "string" ? v : JSON.stringify(v))))
      : [placeholderRow(2, "No user configuration")]);
    const jm = Array.isArray(jobmanager) ? [...jobmanager].sort((a, b) => String(a.key).localeCompare(String(b.key))) : null;
    byId("config-jobmanager-section").hidden = !jm;
    if (jm) {
      syncRows(byId("config-jobmanager").tBodies[0], jm.length
        ? jm.map((e) => kvRow(e.key, el("span", { class: "mono" }, e.key), el("span", { class: "mono" }, e.value)))
        : [placeholderRow(2, "No entries")]);
    }
  }

  Flint.jobTabs.configuration = { title: "Configuration", render: renderConfiguration };
})();
