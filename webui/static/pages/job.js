// The job page: `#/jobs/<id>` (header with the job's actions, its graph and vertices),
// `#/jobs/<id>/vertices/<vertex id>[/<vertex tab>]` (a vertex selected; its details come
// from `pages/vertex.js`) and `#/jobs/<id>/<tab>` for the tabs that `pages/job_tabs.js`
// registers in `Flint.jobTabs` (timeline, exceptions, checkpoints, configuration).
//
// The graph is laid out with dagre once per job. While the job runs, every refresh asks
// each vertex (in parallel, one request per vertex) for the maximum over its subtasks of
// `backPressuredTimeMsPerSecond` and `busyTimeMsPerSecond`, writes them on the node and
// colours it as Flink 1.20 does: idle blue, blended towards red by busy time and towards
// grey by back-pressured time.
"use strict";

(function () {
  const { byId, el, svg, setText, isNum, formatBytes, formatDuration, formatTime, formatCount, metric,
    taskSummary, syncRows, getJson, send, pollUntil, confirmAction, notify, COMPLETED_STATES } = Flint;

  // Tabs other pages add: key -> { title, render(container, jid, job) }, in tab order.
  Flint.jobTabs = Flint.jobTabs || {};

  // ---- Job graph ---------------------------------------------------------------

  const NODE_W = 250;
  const NODE_H = 124;
  const MAX_NAME = 36;

  // The graph is laid out once per job (its plan does not change); refreshes update the
  // texts, classes and colours of the nodes in place, so the picture neither moves nor
  // flickers.
  let laidOut = null;

  // Flink's node colours (flink-runtime-web, dagre node component).
  const COLOURS = {
    fillIdle: "#5db1ff", fillBusy: "#ee6464", fillBackPressured: "#888888",
    strokeIdle: "#1890ff", strokeBusy: "#ee2222", strokeBackPressured: "#000000",
  };

  // Linear blend of two #rrggbb colours; p in [0, 1].
  function blend(from, to, p) {
    const rgb = (c) => [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16));
    const [f, t] = [rgb(from), rgb(to)];
    return "#" + f.map((x, i) => Math.round(x + (t[i] - x) * p).toString(16).padStart(2, "0")).join("");
  }

  // Fill and stroke for a vertex with `busy` and `backPressured` percentages (0–100).
  function loadColours(busy, backPressured) {
    let fill = COLOURS.fillIdle;
    let stroke = COLOURS.strokeIdle;
    if (busy > 0) {
      fill = blend(fill, COLOURS.fillBusy, busy / 100);
      stroke = blend(stroke, COLOURS.strokeBusy, busy / 100);
    }
    if (backPressured > 0) {
      fill = blend(fill, COLOURS.fillBackPressured, backPressured / 100);
      stroke = blend(stroke, COLOURS.strokeBackPressured, backPressured / 100);
    }
    return { fill, stroke };
  }

  const percent = (p) => (isNum(p) ? `${p}%` : "N/A");

  function vertexLines(v, load) {
    const name = String(v.name ?? v.id);
    return [
      name.length > MAX_NAME ? `${name.slice(0, MAX_NAME - 1)}…` : name,
      `Parallelism ${v.parallelism} · ${v.status}`,
      `In ${formatCount(metric(v, "read-records"))} · Out ${formatCount(metric(v, "write-records"))}`,
      `Backpressured (max): ${percent(load && load.backPressured)}`,
      `Busy (max): ${percent(load && load.busy)}`,
    ];
  }

  function vertexHref(jid, vid) {
    const vtab = currentRoute && currentRoute.jid === jid && currentRoute.vertex ? currentRoute.vtab : null;
    return `#/jobs/${jid}/vertices/${vid}` + (vtab ? `/${vtab}` : "");
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
    // A wide graph shrinks to the page, but to no less than 70 % (then the box scrolls).
    root.style.minWidth = `${Math.round(g.graph().width * 0.7)}px`;
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
      const group = svg("g", { class: "vertex", "data-vertex-id": id, tabindex: 0, role: "link",
        transform: `translate(${n.x - NODE_W / 2}, ${n.y - NODE_H / 2})` },
        svg("title", {}, v.name), svg("rect", { width: NODE_W, height: NODE_H, rx: 6 }));
      vertexLines(v, null).forEach((line, i) => {
        group.append(svg("text", { class: `line line-${i}`, x: 12, y: 24 + i * 21 }, line));
      });
      const open = () => { location.hash = vertexHref(job.jid, id); };
      group.addEventListener("click", open);
      group.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
      root.append(group);
    }
    byId("job-graph").replaceChildren(root);
    laidOut = { jid: job.jid, nodes: job.plan.nodes.map((n) => n.id).join(",") };
  }

  // `loads`: vertex id -> { busy, backPressured } (percentages), or null when the job is
  // not running (then the nodes are coloured by state).
  function renderGraph(job, selected, loads) {
    const key = job.plan.nodes.map((n) => n.id).join(",");
    if (!laidOut || laidOut.jid !== job.jid || laidOut.nodes !== key) layoutGraph(job);
    for (const v of job.vertices) {
      const group = byId("job-graph").querySelector(`g.vertex[data-vertex-id="${v.id}"]`);
      if (!group) continue;
      const load = loads ? loads.get(v.id) : null;
      vertexLines(v, load).forEach((line, i) => { group.querySelector(`.line-${i}`).textContent = line; });
      group.setAttribute("class", `vertex state-${String(v.status).toLowerCase()}` +
        (v.id === selected ? " selected" : "") + (load ? " load" : ""));
      const rect = group.querySelector("rect");
      if (load && isNum(load.busy) && isNum(load.backPressured)) {
        group.setAttribute("data-backpressured", load.backPressured);
        group.setAttribute("data-busy", load.busy);
        const { fill, stroke } = loadColours(load.busy, load.backPressured);
        rect.style.fill = fill;
        rect.style.stroke = stroke;
      } else {
        group.removeAttribute("data-backpressured");
        group.removeAttribute("data-busy");
        rect.style.fill = "";
        rect.style.stroke = "";
      }
    }
    byId("graph-legend").hidden = !loads;
  }

  // One request per vertex, in parallel: the max over the subtasks of the two per-second
  // times, as percentages (Flink: min(round(ms / 10), 100)). A failed request gives N/A.
  async function fetchLoads(job) {
    const pct = (answer, id) => {
      const m = (Array.isArray(answer) ? answer : []).find((x) => x.id === id);
      const max = m ? Number(m.max) : NaN;
      return Number.isFinite(max) ? Math.min(Math.round(max / 10), 100) : undefined;
    };
    const entries = await Promise.all(job.vertices.map(async (v) => {
      try {
        const answer = await getJson(`jobs/${job.jid}/vertices/${v.id}/subtasks/metrics` +
          "?get=backPressuredTimeMsPerSecond,busyTimeMsPerSecond&agg=max");
        return [v.id, { backPressured: pct(answer, "backPressuredTimeMsPerSecond"),
          busy: pct(answer, "busyTimeMsPerSecond") }];
      } catch (_) {
        return [v.id, {}];
      }
    }));
    return new Map(entries);
  }

  // ---- Header and actions ----------------------------------------------------------

  function renderJobHeader(job) {
    setText("job-name", job.name);
    const state = String(job.state || "UNKNOWN");
    setText("job-state", state);
    byId("job-state").className = `badge state-${state.toLowerCase()}`;
    setText("job-id", job.jid);
    setText("job-start", formatTime(job["start-time"]));
    setText("job-duration", formatDuration(job.duration));
    const active = !COMPLETED_STATES.has(state);
    byId("job-actions").hidden = !active;
    const features = (Flint.config && Flint.config.features) || {};
    byId("job-cancel").hidden = features["web-cancel"] === false;
    const busy = pending.has(job.jid);
    for (const id of ["job-cancel", "job-savepoint", "job-stop"]) byId(id).disabled = busy || state === "CANCELLING";
    actionJob = { jid: job.jid, name: job.name };
  }

  // Jobs with an action under way (their buttons are disabled until it ends).
  const pending = new Set();
  // The job the header shows (the buttons act on it).
  let actionJob = null;

  async function withPending(jid, work) {
    pending.add(jid);
    for (const id of ["job-cancel", "job-savepoint", "job-stop"]) byId(id).disabled = true;
    try {
      await work();
    } finally {
      pending.delete(jid);
      Flint.refresh();
    }
  }

  // Flink's failure cause: the first line of its stack trace, else its class.
  function failureText(cause) {
    if (!cause) return "unknown cause";
    if (typeof cause === "string") return cause;
    const trace = String(cause["stack-trace"] || "").split("\n")[0];
    return trace || cause.class || JSON.stringify(cause);
  }

  // Polls Flink's asynchronous savepoint operation until it completes; returns the path.
  async function awaitSavepoint(jid, requestId) {
    const answer = await pollUntil(() => getJson(`jobs/${jid}/savepoints/${requestId}`),
      (a) => a && a.status && a.status.id === "COMPLETED", 10 * 60 * 1000, 500);
    const op = answer.operation || {};
    if (op["failure-cause"]) throw new Error(failureText(op["failure-cause"]));
    if (!op.location) throw new Error("the savepoint completed without a location");
    return op.location;
  }

  const savepointDir = () => byId("savepoint-dir").value.trim();
  const where = (dir) => (dir ? `into ${dir}` : "into the configured state.savepoints.dir");

  async function cancelJob() {
    const job = actionJob;
    if (!job) return;
    const ok = await confirmAction("Cancel Job",
      `Cancel job "${job.name}" (${job.jid})? Its tasks are stopped without a savepoint.`, "Cancel Job");
    if (!ok) return;
    await withPending(job.jid, async () => {
      try {
        await send("PATCH", `jobs/${job.jid}?mode=cancel`);
        notify("ok", `Cancelling job "${job.name}" (${job.jid}).`);
      } catch (e) {
        notify("error", `Could not cancel job "${job.name}": ${e.message}`);
      }
    });
  }

  async function triggerSavepoint() {
    const job = actionJob;
    if (!job) return;
    const dir = savepointDir();
    const ok = await confirmAction("Trigger Savepoint",
      `Take a savepoint of job "${job.name}" ${where(dir)}? The job keeps running.`, "Trigger Savepoint");
    if (!ok) return;
    await withPending(job.jid, async () => {
      try {
        const body = { "cancel-job": false };
        if (dir) body["target-directory"] = dir;
        const { "request-id": requestId } = await send("POST", `jobs/${job.jid}/savepoints`, body);
        notify("ok", `Savepoint of "${job.name}" triggered (request ${requestId}); waiting for it to complete…`);
        const location = await awaitSavepoint(job.jid, requestId);
        notify("ok", `Savepoint of "${job.name}" completed: ${location}`);
      } catch (e) {
        notify("error", `Savepoint of "${job.name}" failed: ${e.message}`);
      }
    });
  }

  async function stopWithSavepoint() {
    const job = actionJob;
    if (!job) return;
    const dir = savepointDir();
    const ok = await confirmAction("Stop with Savepoint",
      `Stop job "${job.name}" after a savepoint ${where(dir)}? The job finishes once the savepoint is taken.`,
      "Stop Job");
    if (!ok) return;
    await withPending(job.jid, async () => {
      try {
        const body = { drain: false };
        if (dir) body.targetDirectory = dir;
        const { "request-id": requestId } = await send("POST", `jobs/${job.jid}/stop`, body);
        notify("ok", `Stopping "${job.name}" with a savepoint (request ${requestId})…`);
        const location = await awaitSavepoint(job.jid, requestId);
        notify("ok", `Job "${job.name}" stopped with a savepoint: ${location}`);
      } catch (e) {
        notify("error", `Stop with savepoint of "${job.name}" failed: ${e.message}`);
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    byId("job-cancel").addEventListener("click", cancelJob);
    byId("job-savepoint").addEventListener("click", triggerSavepoint);
    byId("job-stop").addEventListener("click", stopWithSavepoint);
  });

  // ---- Vertex table ---------------------------------------------------------------

  function renderVertices(job, selected, loads) {
    const rows = job.vertices.map((v) => {
      const status = String(v.status || "UNKNOWN");
      const load = loads ? loads.get(v.id) || {} : {};
      return el("tr", { "data-vertex-id": v.id, class: v.id === selected ? "selected" : "" },
        el("td", { "data-col": "name" }, el("a", { href: vertexHref(job.jid, v.id) }, v.name)),
        el("td", { "data-col": "status" }, el("span", { class: `badge state-${status.toLowerCase()}` }, status)),
        el("td", { class: "num", "data-col": "parallelism" }, v.parallelism),
        el("td", { class: "num", "data-col": "read-records" }, formatCount(metric(v, "read-records"))),
        el("td", { class: "num", "data-col": "write-records" }, formatCount(metric(v, "write-records"))),
        el("td", { class: "num", "data-col": "read-bytes" }, formatBytes(metric(v, "read-bytes"))),
        el("td", { class: "num", "data-col": "write-bytes" }, formatBytes(metric(v, "write-bytes"))),
        el("td", { class: "num", "data-col": "backpressured" }, loads ? percent(load.backPressured) : "–"),
        el("td", { class: "num", "data-col": "busy" }, loads ? percent(load.busy) : "–"),
        el("td", { class: "num", "data-col": "duration" }, formatDuration(v.duration)),
        el("td", { "data-col": "tasks" }, taskSummary(v.tasks)));
    });
    syncRows(byId("vertices-table").tBodies[0], rows);
  }

  // ---- Refresh ----------------------------------------------------------------------

  // The route being shown: { jid, vertex, vtab, tab }.
  let currentRoute = null;
  let lastSelected = null;

  async function refreshJob(r) {
    currentRoute = r;
    const job = await getJson(`jobs/${r.jid}`);
    renderJobHeader(job);
    const tabs = [["overview", "Overview", `#/jobs/${r.jid}`]]
      .concat(Object.entries(Flint.jobTabs).map(([k, t]) => [k, t.title, `#/jobs/${r.jid}/${k}`]));
    Flint.tabBar(byId("job-tabs"), tabs, r.tab);
    byId("job-overview-tab").hidden = r.tab !== "overview";
    byId("job-tab-content").hidden = r.tab === "overview";
    if (r.tab !== "overview") {
      const tab = Flint.jobTabs[r.tab];
      if (!tab) throw new Error(`no tab ${r.tab}`);
      await tab.render(byId("job-tab-content"), r.jid, job);
      return;
    }
    const running = job.state === "RUNNING";
    const section = byId("vertex-section");
    section.hidden = !r.vertex;
    const isCurrent = () => currentRoute === r;
    const [loads] = await Promise.all([
      running ? fetchLoads(job) : Promise.resolve(null),
      r.vertex ? Flint.vertexDetail.refresh({ jid: r.jid, job, vid: r.vertex, vtab: r.vtab, isCurrent }) : null,
    ]);
    if (!isCurrent()) return; // the user moved on while the answers came
    renderGraph(job, r.vertex, loads);
    renderVertices(job, r.vertex, loads);
    // Bring a newly selected vertex's details into view (not on refreshes).
    const selection = r.vertex ? `${r.jid}/${r.vertex}` : null;
    if (selection && selection !== lastSelected) {
      const box = section.getBoundingClientRect();
      if (box.top > window.innerHeight - 120) section.scrollIntoView({ block: "start" });
    }
    lastSelected = selection;
  }

  // For pages/vertex.js.

  Flint.page({
    name: "job",
    nav: "jobs",
    pattern: /^#\/jobs\/([0-9a-f]{32})(?:\/vertices\/([0-9a-f]{32})(?:\/([a-z-]+))?|\/([a-z-]+))?$/,
    refresh: (m) => refreshJob({ jid: m[1], vertex: m[2] || null, vtab: m[3] || null, tab: m[4] || "overview" }),
  });
})();
