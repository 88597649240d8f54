// The job lists: `#/jobs[?q=<text>&state=<STATE>]`, Flink's "Running Jobs" and "Completed
// Jobs" (terminal states: `Flint.COMPLETED_STATES`) from `jobs/overview`, newest first.
//
// A search box (name or id, case-insensitive) and a state filter apply to both tables. The
// inputs are built once and never replaced; the filter lives in memory and is mirrored into
// the hash with `history.replaceState` (no hashchange, so typing never triggers a reload),
// which lets the back button return to the filtered list. A hash the page did not write
// itself (a deep link, the back button) sets the filter; a bare `#/jobs` (the top
// navigation) keeps the one in memory.
//
// Refreshes patch the tables in place (`Flint.syncKeyedRows`): rows are matched by key,
// only cells whose markup changed are replaced, so unchanged rows keep their hover and
// text selection.
"use strict";

(function () {
  const { el, isNum, formatDuration, formatTime, jobLink, getJson, COMPLETED_STATES } = Flint;

  // Task states in lifecycle order (the keys of Flink's `tasks` object).
  const TASK_STATES = ["created", "scheduled", "deploying", "initializing", "running", "finished",
    "canceling", "canceled", "failed", "reconciling"];

  // Flink's task badge: one coloured count per state that has tasks.
  function taskCounts(tasks) {
    const t = tasks || {};
    const known = new Set(TASK_STATES);
    const states = TASK_STATES.concat(Object.keys(t).filter((s) => s !== "total" && !known.has(s)));
    const pills = states.filter((s) => isNum(t[s]) && t[s] > 0).map((s) =>
      el("span", { class: `task-count state-${s}`, "data-state": s, title: `${t[s]} ${s}` }, t[s]));
    if (pills.length === 0) return el("span", { class: "task-counts" }, "–");
    return el("span", { class: "task-counts", title: Flint.taskSummary(t) }, ...pills);
  }

  // ---- Skeleton (built once) -----------------------------------------------------

  const PATTERN = /^#\/jobs\/?(?:\?(.*))?$/;

  const main = Flint.page({
    name: "jobs",
    nav: "jobs",
    pattern: PATTERN,
    refresh: () => refreshJobs(),
  });

  const filterInput = el("input", { id: "jobs-filter", type: "search", placeholder: "Filter by job name or ID",
    "aria-label": "Filter jobs by name or ID", spellcheck: "false", autocomplete: "off" });
  const stateSelect = el("select", { id: "jobs-state-filter", "aria-label": "Filter jobs by state" },
    el("option", { value: "" }, "All states"));
  const shown = el("span", { id: "jobs-shown", class: "jobs-shown" }, "");

  function table(id, title) {
    const countId = `${id}-count`;
    const heading = el("h2", { id: `${id}-title` }, title, " ", el("span", { id: countId, class: "jobs-count" }, ""));
    const t = el("table", { id: `${id}-table`, class: "jobs-list" },
      el("thead", {}, el("tr", {},
        el("th", {}, "Job Name"), el("th", {}, "Job ID"), el("th", {}, "Start Time"),
        el("th", {}, "End Time"), el("th", { class: "num" }, "Duration"), el("th", {}, "Status"),
        el("th", {}, "Tasks"))),
      el("tbody", {}, Flint.placeholderRow(7, "Loading…")));
    return { section: el("section", { "aria-labelledby": `${id}-title` }, heading, el("div", { class: "table-wrap" }, t)),
      tbody: t.tBodies[0], count: heading.querySelector(".jobs-count") };
  }

  const running = table("running-jobs", "Running Jobs");
  const completed = table("completed-jobs", "Completed Jobs");
  main.append(
    el("p", { class: "crumbs" }, el("a", { href: "#/" }, "Overview"), " / Jobs"),
    el("div", { class: "jobs-toolbar" }, filterInput, stateSelect, shown),
    running.section,
    completed.section);

  // ---- Filter ------------------------------------------------------------------------

  const filter = { q: "", state: "" };
  // The hash this page last wrote or applied: any other hash came from outside.
  let knownHash = null;
  // The last `jobs/overview` answer, to re-render at once when the filter changes.
  let lastJobs = null;

  function filterHash() {
    const params = new URLSearchParams();
    if (filter.q) params.set("q", filter.q);
    if (filter.state) params.set("state", filter.state);
    const query = params.toString();
    return query ? `#/jobs?${query}` : "#/jobs";
  }

  function writeHash() {
    const hash = filterHash();
    if (location.hash !== hash) history.replaceState(history.state, "", hash);
    knownHash = location.hash;
  }

  // Takes the filter from the hash when it changed from outside (deep link, back button);
  // a bare `#/jobs` keeps the filter in memory (and gets it written into the hash).
  function readHash() {
    const m = location.hash.match(PATTERN);
    if (!m || location.hash === knownHash) return;
    if (m[1] !== undefined) {
      const params = new URLSearchParams(m[1]);
      filter.q = params.get("q") || "";
      filter.state = params.get("state") || "";
    }
    if (filterInput.value !== filter.q) filterInput.value = filter.q;
    writeHash();
  }

  filterInput.addEventListener("input", () => {
    filter.q = filterInput.value;
    writeHash();
    if (lastJobs) render(lastJobs);
  });
  stateSelect.addEventListener("change", () => {
    filter.state = stateSelect.value;
    writeHash();
    if (lastJobs) render(lastJobs);
  });

  function matches(job) {
    if (filter.state && job.state !== filter.state) return false;
    const q = filter.q.trim().toLowerCase();
    if (!q) return true;
    return String(job.name ?? "").toLowerCase().includes(q) || String(job.jid ?? "").toLowerCase().includes(q);
  }

  // The state options: every state present, plus the chosen one (kept even when no job
  // has it any more). Options are rebuilt only when that set changes.
  function renderStateOptions(jobs) {
    const states = new Set(jobs.map((j) => String(j.state || "UNKNOWN")));
    if (filter.state) states.add(filter.state);
    const wanted = [...states].sort();
    const have = [...stateSelect.options].slice(1).map((o) => o.value);
    if (wanted.join(",") !== have.join(",")) {
      stateSelect.replaceChildren(el("option", { value: "" }, "All states"),
        ...wanted.map((s) => el("option", { value: s }, s)));
    }
    if (stateSelect.value !== filter.state) stateSelect.value = filter.state;
  }

  // ---- Tables --------------------------------------------------------------------------

  function jobRow(job) {
    const state = String(job.state || "UNKNOWN");
    return el("tr", { "data-job-id": job.jid, "data-state": state },
      el("td", { "data-col": "name", class: "job-name" }, jobLink(job.jid, job.name)),
      el("td", { "data-col": "id", class: "job-id mono" }, job.jid),
      el("td", { "data-col": "start", class: "job-start" }, formatTime(job["start-time"])),
      el("td", { "data-col": "end", class: "job-end" }, formatTime(job["end-time"])),
      el("td", { "data-col": "duration", class: "num" }, formatDuration(job.duration)),
      el("td", { "data-col": "state" }, el("span", { class: `badge state-${state.toLowerCase()}` }, state)),
      el("td", { "data-col": "tasks" }, taskCounts(job.tasks)));
  }

  function renderTable(t, all, kind) {
    const visible = all.filter(matches);
    const filtered = filter.q.trim() !== "" || filter.state !== "";
    const count = filtered ? `(${visible.length} of ${all.length})` : `(${all.length})`;
    if (t.count.textContent !== count) t.count.textContent = count;
    const empty = all.length === 0 ? `No ${kind} jobs` : `No ${kind} jobs match the filter`;
    Flint.syncKeyedRows(t.tbody, visible.map(jobRow), "data-job-id", empty);
    return visible.length;
  }

  function render(jobs) {
    const newestFirst = (a, b) => (b["start-time"] || 0) - (a["start-time"] || 0) ||
      String(a.jid).localeCompare(String(b.jid));
    const sorted = [...jobs].sort(newestFirst);
    renderStateOptions(sorted);
    const done = (j) => COMPLETED_STATES.has(j.state);
    const n = renderTable(running, sorted.filter((j) => !done(j)), "running") +
      renderTable(completed, sorted.filter(done), "completed");
    const text = filter.q.trim() || filter.state ? `Showing ${n} of ${jobs.length} jobs` : "";
    if (shown.textContent !== text) shown.textContent = text;
  }

  async function refreshJobs() {
    const answer = await getJson("jobs/overview");
    readHash();
    lastJobs = answer.jobs || [];
    render(lastJobs);
  }
})();
