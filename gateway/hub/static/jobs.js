// The jobs page: send a Python script to the data under a permit, follow it at each
// institution, and fetch its outputs once the airlock has released them, over
// /api/v1/jobs and /api/v1/airlock. The view comes from the address: /jobs (a new job, my
// jobs) or /jobs?job=<id> (one job). The page decides nothing: every step goes to the API,
// and a refusal is shown with its reason.
// Everything from the API is written as text (textContent via el()), never as HTML.
"use strict";

(() => {
  const {root, $, el, fill, send, saveBlob, errorHeading, showError, hide, bytes, pathUrl,
    verdictBadge, reasonList, signinMessage} = SPEWeb;
  const TOKEN_KEY = "spe.jobs.token";
  const PERMITS_TOKEN_KEY = "spe.permits.token";  // the permit pages' (spe/permits/static)
  const OTHER = "__other__";  // the permit select's "type an id" option
  const session = SPEWeb.session(TOKEN_KEY);
  const {token, headers, api} = session;
  // To the second: a job's steps at a node are often seconds apart.
  const when = (text) => SPEWeb.when(text, {seconds: true});

  // ---- words -------------------------------------------------------------------------------

  // The states at a node, and what kept the hub from learning one.
  const STATE = {queued: "queued", awaiting_approval: "awaiting approval", staging: "staging", running: "running",
    succeeded: "succeeded", failed: "failed", timed_out: "timed out", cancelled: "cancelled",
    refused: "refused", unreachable: "unreachable", error: "error",
    "not submitted": "not submitted"};
  const FINAL = new Set(["succeeded", "failed", "timed_out", "cancelled", "refused",
    "not submitted"]);
  const REQUEST = {pending: "pending review", released: "released", rejected: "rejected",
    withheld: "withheld", closed: "closed"};
  const REQUEST_NOTE = {
    pending: "Waiting for two output checkers to approve.",
    released: "Released: the stored files below may be downloaded.",
    rejected: "Rejected by an output checker: nothing leaves.",
    withheld: "Withheld: the permit was suspended or revoked while it waited; nothing leaves.",
    closed: "Closed: every file was blocked by the automatic checks, so nothing leaves and "
      + "no output checker is asked. Why, per file, below.",
  };
  // The job's one request has a section per site (RequestOut.sites, files' node_id).
  const siteIds = (r) => {
    const ids = (r.sites || []).map((s) => s.node_id);
    for (const f of r.files) if (!ids.includes(f.node_id)) ids.push(f.node_id);
    return ids.sort();  // by institution, not by which one's outputs arrived first
  };
  const LIMITS = ["wall_seconds", "memory_mb", "cpu_seconds", "output_mb"];

  function badge(kind, value, words, testid) {
    return el("span", {className: `status ${kind}-${String(value).replace(/\s+/g, "_")}`,
      dataset: {testid}}, words[value] || value);
  }

  const jobUrl = (id) => `${root}/jobs?job=${encodeURIComponent(id)}`;

  // ---- sign-in -----------------------------------------------------------------------------

  let me = null;

  // Signed in (a token checked against /api/v1/me) or out: the page follows.
  async function changed(who) {
    me = who;
    if (me && !me.roles.includes("researcher") && !me.roles.includes("output_checker")) {
      signinMessage("warning", "This token has no researcher role: the hub will refuse "
        + "its jobs.");
    }
    SPEWeb.showSignedIn(me);
    await render();
  }

  // ---- /jobs: a new job ----------------------------------------------------------------------

  let permits = [];

  function chosenPermit() {
    const value = $("f-permit").value;
    return value === OTHER ? $("f-permit-other").value.trim() : value;
  }

  function showNodes() {
    const value = $("f-permit").value;
    const other = value === OTHER;
    $("permit-other-field").hidden = !other;
    $("nodes-text-field").hidden = !other;
    const permit = permits.find((p) => p.id === value);
    const institutions = permit ? permit.institutions : [];
    fill($("nodes"), other ? null : institutions.length ? institutions.map((n) =>
      el("label", {className: "inline"}, el("input", {type: "checkbox", name: "node",
        value: n, dataset: {testid: "f-node"}}), ` ${n}`))
      : el("span", {className: "note"}, "Choose a permit first."));
  }

  async function loadPermits(wanted) {
    permits = [];
    try {
      permits = await api("/permits?mine=true");
    } catch (exc) {
      showError($("submit-error"), errorHeading(exc, "Your permits could not be listed"),
        exc.messages);
    }
    // Active permits first: only they may run jobs.
    permits.sort((a, b) => (a.status === "active" ? 0 : 1) - (b.status === "active" ? 0 : 1)
      || (a.id < b.id ? 1 : -1));
    fill($("f-permit"),
      permits.map((p) => el("option", {value: p.id, disabled: p.status !== "active"},
        `${p.id}: ${p.title} (${p.status})`)),
      el("option", {value: OTHER}, "Another permit (type its id)…"));
    const active = permits.filter((p) => p.status === "active");
    if (wanted && permits.some((p) => p.id === wanted && p.status === "active")) {
      $("f-permit").value = wanted;
    } else if (wanted) {
      $("f-permit").value = OTHER;
      $("f-permit-other").value = wanted;
    } else {
      $("f-permit").value = active.length ? active[0].id : OTHER;
    }
    showNodes();
  }

  // The analysis environments the hub lists (GET /api/v1/environments), the default first.
  let environments = [];

  function showPackages() {
    const env = environments.find((e) => e.name === $("f-environment").value);
    $("f-environment-packages").textContent = env
      ? `${env.description}. Python ${env.python || "(version not known here)"}; ` +
        env.packages.map((p) => `${p.name} ${p.version}`).join(", ")
      : "";
  }

  async function loadEnvironments() {
    try {
      environments = await api("/environments");
    } catch (exc) {
      environments = [];
      showError($("submit-error"),
        errorHeading(exc, "The analysis environments could not be listed"), exc.messages);
    }
    environments.sort((a, b) => (b.default - a.default) || (a.name < b.name ? -1 : 1));
    fill($("f-environment"), environments.map((e) => el("option", {value: e.name},
      e.default ? `${e.name} (default)` : e.name)));
    showPackages();
  }

  function chosenNodes() {
    if ($("f-permit").value === OTHER) {
      const list = $("f-nodes-text").value.split(",").map((s) => s.trim()).filter(Boolean);
      return list.length ? list : null;
    }
    const ticked = [...$("nodes").querySelectorAll('input[name="node"]:checked')]
      .map((box) => box.value);
    return ticked.length ? ticked : null;
  }

  function readSubmission(problems) {
    const permit = chosenPermit();
    if (!permit) problems.push("Permit: choose a permit, or type its id.");
    const script = $("f-script").value;
    if (!script.trim()) problems.push("Python script: write or load the script to run.");
    const limits = {};
    for (const name of LIMITS) {
      const input = $(`f-${name}`);
      const text = input.value.trim();
      const value = Number(text);
      if (!text || !Number.isInteger(value) || value <= 0) {
        problems.push(`${input.labels[0].textContent}: a whole number above 0.`);
      } else {
        limits[name] = value;
      }
    }
    const environment = $("f-environment").value;
    if (!environment) problems.push("Analysis environment: none could be listed.");
    return {permit, script, entry: "main.py", limits, nodes: chosenNodes(), environment};
  }

  function setSubmitBusy(on) {
    $("submit").disabled = on;
    $("submit-busy").hidden = !on;
    $("submit-form").setAttribute("aria-busy", on ? "true" : "false");
  }

  async function onSubmit(event) {
    event.preventDefault();
    hide($("submit-error"));
    const problems = [];
    const body = readSubmission(problems);
    if (problems.length) {
      showError($("submit-error"), "The form needs a correction, nothing was sent:", problems);
      return;
    }
    setSubmitBusy(true);
    try {
      const job = await api("/jobs", {method: "POST", body});
      window.location.assign(jobUrl(job.id));
    } catch (exc) {
      showError($("submit-error"), errorHeading(exc, "The job was not accepted"),
        exc.messages);
      setSubmitBusy(false);
    }
  }

  function loadFile() {
    const file = $("f-file").files[0];
    if (!file) return;
    const reader = new FileReader();
    reader.addEventListener("load", () => {
      $("f-script").value = String(reader.result);
    });
    reader.addEventListener("error", () => {
      showError($("submit-error"), "The file could not be read:",
        [String(reader.error || file.name)]);
    });
    reader.readAsText(file);
  }

  // ---- /jobs: my jobs --------------------------------------------------------------------------

  function jobsTable(jobs) {
    if (!jobs.length) {
      return el("p", {className: "note", dataset: {testid: "jobs-empty"}}, "No jobs yet.");
    }
    return el("table", {className: "jobs", dataset: {testid: "jobs-table"}},
      el("thead", {}, el("tr", {}, ["Job", "Permit", "Submitted", "Institutions"].map((h) =>
        el("th", {scope: "col"}, h)))),
      el("tbody", {}, jobs.map((j) => el("tr", {dataset: {testid: "job-row", job: j.id}},
        el("th", {scope: "row"}, el("a", {href: jobUrl(j.id), dataset: {testid: "job-link"}},
          j.id)),
        el("td", {}, j.permit),
        el("td", {}, when(j.created_at)),
        // Each institution's state as the hub knows it now (a finished part's final
        // state), not how its submission went ("queued" for ever).
        el("td", {}, j.nodes.map((n) => el("span", {className: "inst",
          dataset: {testid: "job-row-node", node: n.node_id, state: n.state}},
          `${n.node_id}: `, badge("state", n.state, STATE, "job-row-state"))))))));
  }

  async function showList() {
    $("page-title").textContent = "Jobs";
    $("view-list").hidden = false;
    if (!me) {
      fill($("jobs-list"), el("p", {className: "note", dataset: {testid: "signin-needed"}},
        "Sign in to submit a job or to see yours."));
      return;
    }
    const params = new URLSearchParams(window.location.search);
    await loadPermits(params.get("permit"));
    await loadEnvironments();
    try {
      fill($("jobs-list"), jobsTable(await api("/jobs")));
    } catch (exc) {
      fill($("jobs-list"));
      showError($("page-error"), errorHeading(exc, "Your jobs could not be listed"),
        exc.messages);
    }
  }

  // ---- /jobs?job=<id>: one job ------------------------------------------------------------------

  let jobId = null;
  let timer = null;
  let shown = {job: "", outputs: ""};  // what is on the page, to redraw only on a change
  let lastJob = null;
  let lastOutputs = [];

  function fact(label, value, testid) {
    return [el("dt", {}, label), el("dd", {dataset: {testid}},
      value === "" || value === null || value === undefined ? "—" : value)];
  }

  function renderHead(job) {
    const running = job.nodes.filter((n) => !FINAL.has(n.state)).length;
    fill($("job-head"),
      el("header", {className: "job-head"},
        el("h2", {}, "Job ", el("code", {dataset: {testid: "job-id"}}, job.id)),
        el("p", {dataset: {testid: "job-progress"}}, running
          ? `Running or waiting at ${running} of ${job.nodes.length} institution(s).`
          : `Finished at every institution (${job.nodes.length}).`)),
      el("dl", {className: "facts", dataset: {testid: "job-facts"}},
        fact("Permit", el("a", {href: `${root}/permits/view/${encodeURIComponent(job.permit)}`},
          job.permit), "job-permit"),
        fact("Submitted by", job.user, "job-user"),
        fact("Submitted", when(job.created_at), "job-created"),
        fact("Entry point", job.entry, "job-entry"),
        fact("Environment", job.environment, "job-environment"),
        fact("Code SHA-256", el("code", {}, job.code_sha256), "job-sha256"),
        fact("Limits", Object.entries(job.limits || {}).map(([k, v]) => `${k} ${v}`)
          .join(", "), "job-limits")));
    $("cancel").disabled = running === 0;
  }

  // A value of the staging summary as a line of text ({"k": 5, "ok": true} -> "k 5, ok true").
  function plain(v) {
    if (Array.isArray(v)) return v.map(plain).join(", ");
    if (v && typeof v === "object") {
      return Object.entries(v).map(([k, x]) => `${k} ${plain(x)}`).join(", ");
    }
    return String(v);
  }

  function stagingFacts(staging) {
    if (!staging) return "—";
    return el("dl", {className: "facts small", dataset: {testid: "staging"}},
      Object.entries(staging).flatMap(([k, v]) => [el("dt", {}, k),
        el("dd", {}, plain(v))]));
  }

  function nodeCard(n) {
    return el("section", {className: "node-card", "aria-label": n.node_id,
      dataset: {testid: "job-node", node: n.node_id, state: n.state}},
    el("h3", {}, n.node_id, " ", badge("state", n.state, STATE, "node-state")),
    el("dl", {className: "facts"},
      fact("Reason", n.reason, "node-reason"),
      fact("Sent", n.submitted, "node-submitted"),
      fact("Job at the node", n.job_id ? el("code", {}, n.job_id) : "", "node-job"),
      fact("Attempts", String(n.attempts ?? 0), "node-attempts"),
      fact("Extract staged", stagingFacts(n.staging), "node-staging"),
      fact("Outputs", n.outputs ? [n.outputs, n.airlock ? " (airlock request " : "",
        n.airlock ? el("code", {}, n.airlock) : "", n.airlock ? ")" : ""] : "",
      "node-outputs")));
  }

  function renderJob(job) {
    const text = JSON.stringify(job);
    lastJob = job;
    if (text === shown.job) return;
    shown.job = text;
    $("page-title").textContent = `Job ${job.id}`;
    renderHead(job);
    fill($("job-nodes"), job.nodes.map(nodeCard));
  }

  async function download(rid, name, button) {
    const path = name;  // <site>/<path>, saved as <site>_<path>
    hide($("download-error"));
    button.disabled = true;
    try {
      const resp = await send(
        `${root}/api/v1/airlock/requests/${encodeURIComponent(rid)}/files/${pathUrl(path)}`,
        {headers: headers()});
      saveBlob(await resp.blob(), path.replace(/\//g, "_"));
    } catch (exc) {
      showError($("download-error"), errorHeading(exc, `${path} was not downloaded`),
        exc.messages);
    } finally {
      button.disabled = false;
    }
  }

  function requestFiles(r) {
    if (!r.files.length) {
      return el("p", {className: "note", dataset: {testid: "request-files-hidden"}},
        r.state === "released" || r.state === "closed" ? "No files were released."
          : "The files, the job's log among them, are named here once released.");
    }
    const outcomes = Object.fromEntries((r.sites || []).map((s) => [s.node_id, s.outcome]));
    return siteIds(r).map((node) => {
      const files = r.files.filter((f) => f.node_id === node);
      const outcome = outcomes[node];
      // A part that did not succeed has no outputs (its log is not one): said so, so that
      // its log's verdict does not read as the part's.
      return el("section", {className: "site", dataset: {testid: "output-site", node}},
        el("h4", {}, `From ${node}`),
        outcome && outcome !== "collected" ? el("p", {className: "note",
          dataset: {testid: "site-outcome"}}, outcome) : null,
        files.length ? siteFiles(r, files) : el("p", {className: "note"}, "No files."));
    });
  }

  function siteFiles(r, files) {
    const released = r.state === "released";
    return el("table", {className: "files", dataset: {testid: "request-files"}},
      el("thead", {}, el("tr", {}, ["File", "Size", "Verdict", "Reasons", "Notes",
        released ? "Download" : "Stored"].map((h) => el("th", {scope: "col"}, h)))),
      el("tbody", {}, files.map((f) => el("tr", {dataset: {testid: "request-file",
        path: f.path, node: f.node_id, name: f.name, verdict: f.verdict,
        stored: String(f.stored)}},
      el("th", {scope: "row"}, el("code", {}, f.name)),
      el("td", {className: "num"}, f.size ? bytes(f.size) : "—"),
      el("td", {}, verdictBadge(f.verdict, "request-file-verdict")),
      el("td", {dataset: {testid: "request-file-reasons"}}, reasonList(f.reasons)),
      el("td", {}, reasonList(f.notes, "notes")),
      el("td", {}, !f.stored ? el("span", {className: "note"}, "not stored: never leaves")
        : released ? el("button", {type: "button", className: "primary",
          dataset: {testid: "download", path: f.path, name: f.name},
          onclick: (e) => download(r.id, f.name, e.currentTarget)}, `Download ${f.name}`)
          : "stored, waiting for review")))));
  }

  function reviewsOf(r) {
    if (!r.reviews.length) {
      return el("p", {className: "note", dataset: {testid: "no-reviews"}}, "No review yet.");
    }
    return el("ul", {className: "reviews"}, r.reviews.map((v) => el("li",
      {dataset: {testid: "request-review", decision: v.decision}},
      el("strong", {}, v.decision === "approve" ? "approved" : "rejected"),
      ` by ${v.reviewer}, ${when(v.at)}`, v.reason ? `: ${v.reason}` : "")));
  }

  function requestCard(r) {
    const sites = siteIds(r);
    return el("section", {className: "node-card", "aria-label": "The airlock request",
      dataset: {testid: "output-request", sites: sites.join(" "), state: r.state, rid: r.id}},
    el("h3", {}, `Airlock request (${sites.join(", ") || "no site yet"})`, " ",
      badge("request", r.state, REQUEST, "request-state")),
    el("p", {dataset: {testid: "request-note"}}, REQUEST_NOTE[r.state] || r.state),
    r.review_note ? el("p", {className: "warning", dataset: {testid: "request-review-note"}},
      r.review_note) : null,
    r.awaiting && r.awaiting.length ? el("p", {className: "note",
      dataset: {testid: "request-awaiting"}}, `Still to come: the outputs of `
      + `${r.awaiting.join(", ")}; nothing is released before they arrive.`) : null,
    el("dl", {className: "facts"},
      fact("Airlock request", el("code", {}, r.id), "request-id"),
      fact("Created", when(r.created_at), "request-created"),
      fact("Decided", r.decided_at ? when(r.decided_at) : "", "request-decided"),
      r.reasons.length ? fact("Blocking the whole", reasonList(r.reasons, "request-reasons"),
        "request-reasons-fact") : null),
    requestFiles(r),
    el("h4", {}, "Reviews"),
    reviewsOf(r));
  }

  function renderOutputs(requests) {
    // Over, with nothing to show: every part ended and none sent anything to the airlock.
    const over = Boolean(lastJob) && lastJob.nodes.every((n) => FINAL.has(n.state)
      && (!n.job_id || (n.outputs && !n.airlock)));
    const text = JSON.stringify([requests, over]);
    lastOutputs = requests;
    if (text === shown.outputs) return;
    shown.outputs = text;
    fill($("job-outputs"), requests.length ? requests.map(requestCard)
      : el("p", {className: "note", dataset: {testid: "outputs-empty"}}, over
        ? "No outputs: no institution sent any to the airlock."
        : "No outputs yet: an institution's outputs (or a failed part's log) reach the "
          + "airlock once its part of the job has ended."));
  }

  // More to come: a node still running, a finished node whose outputs have not reached the
  // airlock yet, or a request still waiting for its review.
  function unsettled() {
    if (!lastJob) return true;
    if (lastJob.nodes.some((n) => !FINAL.has(n.state))) return "running";
    const requested = new Set(lastOutputs.flatMap(siteIds));
    if (lastJob.nodes.some((n) => (n.airlock && !requested.has(n.node_id))
      || (n.job_id && !n.outputs))) {
      return "collecting";
    }
    return lastOutputs.some((r) => r.state === "pending") ? "reviewing" : false;
  }

  function schedule() {
    clearTimeout(timer);
    timer = null;
    const state = unsettled();
    if (!$("auto").checked || !state) return;
    timer = setTimeout(refresh, state === "reviewing" ? 10_000 : 2_000);
  }

  async function refresh() {
    clearTimeout(timer);
    timer = null;
    $("view-job").setAttribute("aria-busy", "true");
    $("refresh").disabled = true;
    try {
      renderJob(await api(`/jobs/${encodeURIComponent(jobId)}`));
      hide($("job-error"));
    } catch (exc) {
      showError($("job-error"), errorHeading(exc, "The job could not be read"), exc.messages);
      if ([401, 403, 404].includes(exc.status)) {
        $("auto").checked = false;
        return;
      }
    } finally {
      $("view-job").setAttribute("aria-busy", "false");
      $("refresh").disabled = false;
    }
    try {
      renderOutputs(await api(`/jobs/${encodeURIComponent(jobId)}/outputs`));
      hide($("outputs-error"));
    } catch (exc) {
      showError($("outputs-error"), errorHeading(exc, "The outputs could not be read"),
        exc.messages);
    }
    $("job-updated").textContent = `Updated ${new Date().toLocaleTimeString("en-GB")}.`;
    schedule();
  }

  async function cancel() {
    hide($("job-error"));
    $("cancel").disabled = true;
    try {
      renderJob(await api(`/jobs/${encodeURIComponent(jobId)}/cancel`, {method: "POST"}));
    } catch (exc) {
      $("cancel").disabled = false;
      showError($("job-error"), errorHeading(exc, "Not cancelled"), exc.messages);
      schedule();
      return;
    }
    await refresh();  // the states as the nodes now tell them, and what became of outputs
    $("job-updated").textContent = "Cancel sent to every institution still running it.";
  }

  async function showJob(id) {
    jobId = id;
    $("view-job").hidden = false;
    $("page-title").textContent = `Job ${id}`;
    if (!me) {
      fill($("job-head"), el("p", {className: "note", dataset: {testid: "signin-needed"}},
        "Sign in to follow this job."));
      return;
    }
    await refresh();
  }

  // ---- start -------------------------------------------------------------------------------

  async function render() {
    clearTimeout(timer);
    for (const id of ["view-list", "view-job"]) $(id).hidden = true;
    hide($("page-error"));
    const params = new URLSearchParams(window.location.search);
    await SPEWeb.loadView(() => (params.get("job") ? showJob(params.get("job")) : showList()));
  }

  async function start() {
    SPEWeb.wireSignIn(session, changed);
    $("f-permit").addEventListener("change", showNodes);
    $("f-environment").addEventListener("change", showPackages);
    $("f-file").addEventListener("change", loadFile);
    $("submit-form").addEventListener("submit", onSubmit);
    $("refresh").addEventListener("click", refresh);
    $("auto").addEventListener("change", schedule);
    $("cancel").addEventListener("click", cancel);
    // Coming from a permit's page in this tab: its sign-in carries over (checked again).
    const candidate = token() || sessionStorage.getItem(PERMITS_TOKEN_KEY);
    await changed(candidate ? await session.signIn(candidate) : null);
  }

  start();
})();
