// The Submit page: `#/submit`, Flink's "Submit New Job" on Flint's `/jars` API
// (docs/packages.md).
//
// - Upload: a job package (.zip, .jar) or a job file (.yaml, .yml, .json), posted as
//   multipart field `jarfile` to `jars/upload` (XMLHttpRequest, for the upload progress);
//   the server's refusals (400, 413) are shown as it words them.
// - The uploads (`jars`), newest first. A click on a row selects it and opens the form:
//   parallelism, program arguments (split as a shell would, simple quoting, and sent as
//   `programArgsList`), savepoint path and allow-non-restored-state. Show Plan posts them to
//   `jars/<id>/plan` and lays the plan out with dagre; Submit posts them to `jars/<id>/run`
//   and opens the new job's page; Delete (confirmed) removes the upload.
// - With `features.web-submit: false` in `config` the page only says so (`/jars` is 404).
//
// The skeleton and the form are built once; a refresh only patches the list's rows, so
// typed values, the chosen file and the shown plan survive it. Typed values are kept per
// upload when the selection changes.
"use strict";

(function () {
  const { el, svg, isNum, formatBytes, formatTime, getJson, send, confirmAction, notify } = Flint;

  const main = Flint.page({
    name: "submit",
    nav: "submit",
    pattern: /^#\/submit\/?$/,
    refresh: () => refreshSubmit(),
  });

  // ---- Skeleton (built once) -----------------------------------------------------

  const fileInput = el("input", { id: "submit-file", type: "file", accept: ".zip,.jar,.yaml,.yml,.json",
    "aria-label": "Job package or job file to upload" });
  const uploadButton = el("button", { id: "submit-upload", type: "button", class: "primary", disabled: "" }, "Upload");
  const progress = el("progress", { id: "submit-progress", max: 100, value: 0, hidden: "" });
  const uploadStatus = el("span", { id: "submit-upload-status", class: "submit-status", role: "status" }, "");

  const jarsTable = el("table", { id: "jars-table" },
    el("thead", {}, el("tr", {},
      el("th", {}, "Name"), el("th", {}, "Job Name"), el("th", {}, "Job File"), el("th", {}, "Uploaded"),
      el("th", { class: "actions" }, ""))),
    el("tbody", {}, Flint.placeholderRow(5, "Loading…")));
  const jarsCount = el("span", { id: "jars-count", class: "jobs-count" }, "");

  const input = (attrs) => el("input", { spellcheck: "false", autocomplete: "off", ...attrs });
  const parallelismInput = input({ id: "submit-parallelism", type: "number", min: 1, step: 1,
    placeholder: "default", inputmode: "numeric" });
  const argsInput = input({ id: "submit-args", type: "text", placeholder: "--input data/a.txt --name 'a b'" });
  const savepointInput = input({ id: "submit-savepoint", type: "text", placeholder: "none: start without state" });
  const allowInput = el("input", { id: "submit-allow-non-restored", type: "checkbox" });
  const planButton = el("button", { id: "submit-plan", type: "button" }, "Show Plan");
  const runButton = el("button", { id: "submit-run", type: "button", class: "primary" }, "Submit");
  const deleteButton = el("button", { id: "submit-delete", type: "button", class: "danger" }, "Delete");
  const formTitle = el("span", { id: "submit-jar-name", class: "mono" }, "–");
  const formEntry = el("span", { id: "submit-entry" }, "–");
  const planTitle = el("span", { id: "submit-plan-title" }, "");
  const planGraph = el("div", { id: "submit-plan-graph", class: "job-graph" });
  const planView = el("div", { id: "submit-plan-view", hidden: "" },
    el("h3", { class: "submit-subtitle" }, planTitle), planGraph);

  const field = (label, control, hint) => el("label", { class: "submit-field" },
    el("span", { class: "submit-label" }, label), control, hint ? el("span", { class: "submit-hint" }, hint) : "");

  const form = el("section", { id: "submit-form", class: "submit-form", hidden: "", "aria-labelledby": "submit-form-title" },
    el("h2", { id: "submit-form-title" }, "Submit ", formTitle),
    el("p", { class: "submit-hint" }, "Job file: ", formEntry),
    el("div", { class: "submit-grid" },
      field("Parallelism", parallelismInput, "for operators the job file gives none (empty: parallelism.default)"),
      field("Program Arguments", argsInput, "fill the job file's ${name} parameters: --name value"),
      field("Savepoint Path", savepointInput, "restore the job's state from this savepoint"),
      el("label", { class: "submit-check" }, allowInput, " Allow Non Restored State")),
    el("div", { class: "submit-buttons" }, planButton, runButton, el("span", { class: "spacer" }), deleteButton),
    planView);

  const enabledPart = el("div", { id: "submit-enabled" },
    el("section", { "aria-labelledby": "submit-title" },
      el("h2", { id: "submit-title" }, "Submit New Job"),
      el("div", { class: "submit-upload" }, fileInput, uploadButton, progress, uploadStatus),
      el("p", { class: "submit-hint" },
        "A job package (.zip or .jar: one job file at its root, with the files it reads) or a job file (.yaml, .yml, .json).")),
    el("section", { "aria-labelledby": "jars-title" },
      el("h2", { id: "jars-title" }, "Uploaded Jobs ", jarsCount),
      el("div", { class: "table-wrap" }, jarsTable)),
    form);
  const disabledPart = el("section", { id: "submit-disabled", hidden: "" },
    el("h2", {}, "Submit New Job"),
    el("p", { class: "submit-disabled" },
      "Job submission through the web interface is disabled on this cluster (web.submit.enable: false)."));
  main.append(disabledPart, enabledPart);

  // ---- Upload ------------------------------------------------------------------------

  fileInput.addEventListener("change", () => {
    const file = fileInput.files[0];
    uploadButton.disabled = !file || uploading;
    setStatus("", file ? `${file.name} (${formatBytes(file.size)})` : "");
  });
  uploadButton.addEventListener("click", upload);

  let uploading = false;

  function setStatus(kind, text) {
    uploadStatus.className = `submit-status${kind ? ` submit-status-${kind}` : ""}`;
    uploadStatus.textContent = text;
  }

  // POSTs `form` with XMLHttpRequest (fetch cannot report upload progress); resolves with
  // the JSON answer, rejects with Flink's `errors` as `Flint.send` words them.
  function postWithProgress(path, body, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", path);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); });
      xhr.addEventListener("load", () => {
        let json = null;
        try { json = xhr.responseText ? JSON.parse(xhr.responseText) : {}; } catch (_) { json = null; }
        if (xhr.status >= 200 && xhr.status < 300) return resolve(json || {});
        const errors = json && Array.isArray(json.errors) ? json.errors.join("; ") : xhr.responseText;
        reject(new Error(`POST ${path}: HTTP ${xhr.status}: ${errors}`.trim()));
      });
      xhr.addEventListener("error", () => reject(new Error(`POST ${path}: the connection closed before an answer ` +
        "(an upload larger than rest.server.max-content-length is cut off)")));
      xhr.addEventListener("timeout", () => reject(new Error(`POST ${path}: timed out`)));
      xhr.send(body);
    });
  }

  async function upload() {
    const file = fileInput.files[0];
    if (!file || uploading) return;
    uploading = true;
    uploadButton.disabled = true;
    progress.value = 0;
    progress.hidden = false;
    setStatus("", `Uploading ${file.name}…`);
    const body = new FormData();
    body.append("jarfile", file, file.name);
    try {
      const answer = await postWithProgress("jars/upload", body, (p) => {
        progress.value = Math.round(p * 100);
        setStatus("", `Uploading ${file.name}… ${Math.round(p * 100)}%`);
      });
      setStatus("ok", `Uploaded ${file.name}`);
      notify("ok", `Uploaded ${file.name} as ${answer.filename}.`);
      fileInput.value = "";
    } catch (e) {
      setStatus("error", `Upload of ${file.name} failed`);
      notify("error", `Upload of ${file.name} failed: ${e.message}`);
    } finally {
      uploading = false;
      progress.hidden = true;
      uploadButton.disabled = !fileInput.files[0];
      Flint.refresh();
    }
  }

  // ---- The list ----------------------------------------------------------------------

  // The selected upload's id, the last `jars` answer, and typed values per upload.
  let selected = null;
  let jars = [];
  const drafts = new Map();

  function jarRow(jar) {
    const entry = (jar.entry || [])[0] || {};
    const open = el("button", { type: "button", class: "jar-open", "data-jar-action": "open" },
      jar.id === selected ? "Selected" : "Submit…");
    return el("tr", { "data-jar-id": jar.id, class: jar.id === selected ? "jar-row selected" : "jar-row" },
      el("td", { "data-col": "name", class: "jar-name" }, jar.name),
      el("td", { "data-col": "job-name" }, entry.description ?? "–"),
      el("td", { "data-col": "job-file", class: "mono" }, entry.name ?? "unreadable"),
      el("td", { "data-col": "uploaded", class: "job-start" }, formatTime(jar.uploaded)),
      el("td", { "data-col": "actions", class: "actions" }, open));
  }

  function renderJars() {
    const sorted = [...jars].sort((a, b) => (b.uploaded || 0) - (a.uploaded || 0) ||
      String(a.id).localeCompare(String(b.id)));
    const count = `(${sorted.length})`;
    if (jarsCount.textContent !== count) jarsCount.textContent = count;
    Flint.syncKeyedRows(jarsTable.tBodies[0], sorted.map(jarRow), "data-jar-id",
      "No job packages uploaded yet");
  }

  jarsTable.tBodies[0].addEventListener("click", (e) => {
    const row = e.target.closest("tr[data-jar-id]");
    if (!row || e.target.closest("a")) return;
    select(row.getAttribute("data-jar-id"));
    if (e.target.closest("[data-jar-action]")) parallelismInput.focus();
  });

  // ---- The form ----------------------------------------------------------------------

  const jarById = (id) => jars.find((j) => j.id === id);

  function saveDraft() {
    if (!selected) return;
    drafts.set(selected, { parallelism: parallelismInput.value, args: argsInput.value,
      savepoint: savepointInput.value, allow: allowInput.checked });
  }

  function select(id) {
    if (id === selected) return;
    saveDraft();
    selected = id;
    const d = drafts.get(id) || { parallelism: "", args: "", savepoint: "", allow: false };
    parallelismInput.value = d.parallelism;
    argsInput.value = d.args;
    savepointInput.value = d.savepoint;
    allowInput.checked = d.allow;
    clearPlan();
    renderForm();
    renderJars();
  }

  function renderForm() {
    const jar = selected ? jarById(selected) : null;
    form.hidden = !jar;
    if (!jar) return;
    if (formTitle.textContent !== jar.name) formTitle.textContent = jar.name;
    const entry = (jar.entry || [])[0];
    const text = entry ? `${entry.name}${entry.description ? ` (job "${entry.description}")` : ""}` :
      "the package cannot be read any more";
    if (formEntry.textContent !== text) formEntry.textContent = text;
  }

  // Flink's `programArgs` string as a shell splits it: spaces separate, single or double
  // quotes keep spaces together (as the server's `split_program_args`).
  function splitArgs(text) {
    const out = [];
    let current = "";
    let quote = null;
    let started = false;
    for (const c of text) {
      if (quote) {
        if (c === quote) quote = null;
        else current += c;
      } else if (c === "'" || c === '"') {
        quote = c;
        started = true;
      } else if (/\s/.test(c)) {
        if (started || current) out.push(current);
        current = "";
        started = false;
      } else {
        current += c;
      }
    }
    if (started || current) out.push(current);
    return out;
  }

  // The request body of plan and run (Flink's JarRunRequestBody), or throws on a bad value.
  function requestBody() {
    const body = { programArgsList: splitArgs(argsInput.value), allowNonRestoredState: allowInput.checked };
    const p = parallelismInput.value.trim();
    if (p !== "") {
      const n = Number(p);
      if (!Number.isInteger(n) || n < 1) throw new Error(`The parallelism must be a positive whole number, not "${p}".`);
      body.parallelism = n;
    }
    const savepoint = savepointInput.value.trim();
    if (savepoint) body.savepointPath = savepoint;
    return body;
  }

  function setBusy(busy) {
    for (const b of [planButton, runButton, deleteButton]) b.disabled = busy;
  }

  async function withJar(work) {
    const jar = selected ? jarById(selected) : null;
    if (!jar) return;
    setBusy(true);
    try {
      await work(jar);
    } finally {
      setBusy(false);
    }
  }

  planButton.addEventListener("click", () => withJar(async (jar) => {
    try {
      const answer = await send("POST", `jars/${encodeURIComponent(jar.id)}/plan`, requestBody());
      if (selected !== jar.id) return;
      const plan = answer.plan || {};
      renderPlan(plan);
      const n = Array.isArray(plan.nodes) ? plan.nodes.length : 0;
      notify("ok", `Plan of ${jar.name}: ${n} ${n === 1 ? "vertex" : "vertices"}.`);
    } catch (e) {
      notify("error", `Could not plan ${jar.name}: ${e.message}`);
    }
  }));

  runButton.addEventListener("click", () => withJar(async (jar) => {
    try {
      const answer = await send("POST", `jars/${encodeURIComponent(jar.id)}/run`, requestBody());
      notify("ok", `Submitted ${jar.name}: job ${answer.jobid}.`);
      location.hash = `#/jobs/${answer.jobid}`;
    } catch (e) {
      notify("error", `Could not submit ${jar.name}: ${e.message}`);
    }
  }));

  deleteButton.addEventListener("click", () => withJar(async (jar) => {
    const ok = await confirmAction("Delete Job Package",
      `Delete the upload "${jar.name}" (${jar.id})? Jobs already running from it are not affected.`, "Delete");
    if (!ok) return;
    try {
      await send("DELETE", `jars/${encodeURIComponent(jar.id)}`);
      notify("ok", `Deleted ${jar.name}.`);
      drafts.delete(jar.id);
      if (selected === jar.id) {
        selected = null;
        clearPlan();
      }
      jars = jars.filter((j) => j.id !== jar.id);
      renderForm();
      renderJars();
    } catch (e) {
      notify("error", `Could not delete ${jar.name}: ${e.message}`);
    }
    Flint.refresh();
  }));

  // ---- The plan ------------------------------------------------------------------------

  const NODE_W = 280;
  const LINE_H = 18;
  const MAX_LINE = 38;
  const MAX_LINES = 6;

  function clearPlan() {
    planView.hidden = true;
    planGraph.replaceChildren();
  }

  // A node's description as text lines: Flink's plan separates the chained operators with
  // `<br/>`; the few entities it may hold are decoded (everything is inserted as text).
  function descriptionLines(node) {
    const decode = (s) => s.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, '"')
      .replace(/&#39;/g, "'").replace(/&amp;/g, "&");
    const raw = String(node.description || node.operator || node.id || "");
    const lines = raw.split(/<br\s*\/?>/i).map((l) => decode(l).replace(/\s+$/, "")).filter((l) => l.trim() !== "");
    const cut = lines.map((l) => (l.length > MAX_LINE ? `${l.slice(0, MAX_LINE - 1)}…` : l));
    if (cut.length > MAX_LINES) return cut.slice(0, MAX_LINES - 1).concat(`… ${cut.length - MAX_LINES + 1} more`);
    return cut.length ? cut : [String(node.id)];
  }

  function renderPlan(plan) {
    const nodes = Array.isArray(plan.nodes) ? plan.nodes : [];
    planTitle.textContent = `Plan of ${plan.name ?? "the job"}` + (plan.type ? ` (${plan.type})` : "") +
      ` · ${nodes.length} ${nodes.length === 1 ? "vertex" : "vertices"}`;
    const g = new dagre.graphlib.Graph();
    g.setGraph({ rankdir: "LR", nodesep: 30, ranksep: 80, marginx: 10, marginy: 10 });
    g.setDefaultEdgeLabel(() => ({}));
    const linesById = new Map();
    for (const node of nodes) {
      const lines = descriptionLines(node);
      linesById.set(node.id, lines);
      g.setNode(node.id, { width: NODE_W, height: 24 + (lines.length + 1) * LINE_H });
    }
    for (const node of nodes) {
      for (const inp of node.inputs || []) {
        if (!g.hasNode(inp.id)) continue;
        g.setEdge(inp.id, node.id, { label: inp.ship_strategy ?? "", width: 70, height: 16, labelpos: "c" });
      }
    }
    dagre.layout(g);
    const { width, height } = g.graph();
    const root = svg("svg", { class: "graph plan-graph", width, height, viewBox: `0 0 ${width} ${height}` });
    root.append(svg("defs", {}, svg("marker", { id: "plan-arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
      markerWidth: 8, markerHeight: 8, orient: "auto-start-reverse" }, svg("path", { d: "M 0 0 L 10 5 L 0 10 z" }))));
    for (const e of g.edges()) {
      const edge = g.edge(e);
      const d = edge.points.map((p, i) => `${i ? "L" : "M"} ${p.x} ${p.y}`).join(" ");
      root.append(svg("g", { class: "edge", "data-from": e.v, "data-to": e.w },
        svg("path", { d, "marker-end": "url(#plan-arrow)" }),
        svg("text", { class: "edge-label", x: edge.x, y: edge.y + 4, "text-anchor": "middle" }, edge.label)));
    }
    for (const node of nodes) {
      const n = g.node(node.id);
      const lines = linesById.get(node.id);
      const group = svg("g", { class: "vertex plan-node", "data-node-id": node.id,
        transform: `translate(${n.x - n.width / 2}, ${n.y - n.height / 2})` },
        svg("title", {}, lines.join("\n")), svg("rect", { width: n.width, height: n.height, rx: 6 }));
      lines.forEach((line, i) => {
        group.append(svg("text", { class: `line line-${i}`, x: 12, y: 22 + i * LINE_H, "xml:space": "preserve" }, line));
      });
      group.append(svg("text", { class: "line plan-parallelism", x: 12, y: 22 + lines.length * LINE_H },
        `Parallelism ${isNum(node.parallelism) ? node.parallelism : "–"}`));
      root.append(group);
    }
    planGraph.replaceChildren(root);
    planView.hidden = false;
    planView.scrollIntoView({ block: "nearest" });
  }

  // ---- Refresh -----------------------------------------------------------------------

  async function refreshSubmit() {
    const features = (Flint.config && Flint.config.features) || {};
    const enabled = features["web-submit"] !== false;
    disabledPart.hidden = enabled;
    enabledPart.hidden = !enabled;
    if (!enabled) return;
    const answer = await getJson("jars");
    jars = Array.isArray(answer.files) ? answer.files : [];
    if (selected && !jarById(selected)) {
      drafts.delete(selected);
      selected = null;
      clearPlan();
    }
    renderJars();
    renderForm();
  }

  // Keeps the typed values of the selected upload (refreshes never touch the inputs).
  for (const i of [parallelismInput, argsInput, savepointInput, allowInput]) i.addEventListener("change", saveDraft);
})();
