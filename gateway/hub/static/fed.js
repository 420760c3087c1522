// The federated runs page: start a ComBat harmonisation under a permit, and follow a run
// round by round (each institution's answer in its gate's words, the pooled metrics as a
// curve, the privacy spent, the result's airlock request), over /api/v1/fed/runs. The view
// comes from the address: /fed (a new run, my runs) or /fed?run=<id> (one run). The page
// decides nothing: every step goes to the API, and a refusal is shown with its reason.
// Everything from the API is written as text (textContent via el() and SPECharts.svg()),
// never as HTML; colours are classes (fed.css): the page's CSP forbids inline styles.
"use strict";

(() => {
  const {root, $, el, fill, errorHeading, showError, hide, signinMessage} = SPEWeb;
  const {svg, ticks, num} = SPECharts;
  const TOKEN_KEY = "spe.fed.token";
  const JOBS_TOKEN_KEY = "spe.jobs.token";  // the jobs page's: a sign-in there carries over
  const OTHER = "__other__";  // the permit select's "type an id" option
  const session = SPEWeb.session(TOKEN_KEY);
  const {token, api} = session;
  const when = (text) => SPEWeb.when(text, {seconds: true});

  // ---- words -------------------------------------------------------------------------------

  const APP = {combat: "ComBat", flower: "Flower"};
  const RUN = {running: "running", succeeded: "succeeded", failed: "failed",
    cancelled: "cancelled"};
  const NODE = {accepted: "accepted", refused: "refused", failed: "failed",
    unreachable: "unreachable", skipped: "skipped"};
  // ComBat's covariates and their kinds (as `spe fed run --covariates`).
  const COVARIATES = {age: "continuous", sex: "categorical", diagnosis: "categorical"};
  const REQUEST = {pending: "pending review", released: "released", rejected: "rejected",
    withheld: "withheld", closed: "closed"};

  const cls = (value) => String(value).replace(/[^a-z0-9_-]+/gi, "_");

  function badge(value, words, testid) {
    return el("span", {className: `status state-${cls(value)}`, dataset: {testid}},
      words[value] || value);
  }

  const runUrl = (id) => `${root}/fed?run=${encodeURIComponent(id)}`;
  const metricText = (metrics) => Object.keys(metrics || {}).sort()
    .map((k) => `${k} ${num(metrics[k])}`).join(", ");

  // ---- sign-in -----------------------------------------------------------------------------

  let me = null;

  async function changed(who) {
    me = who;
    if (me && !me.roles.includes("researcher") && !me.roles.includes("output_checker")) {
      signinMessage("warning", "This token has no researcher role: the hub will refuse "
        + "its runs.");
    }
    SPEWeb.showSignedIn(me);
    await render();
  }

  // ---- /fed: a new run ---------------------------------------------------------------------

  let permits = [];

  function chosenPermit() {
    const value = $("f-permit").value;
    return value === OTHER ? $("f-permit-other").value.trim() : value;
  }

  function showCommand() {
    $("flower-command").textContent =
      `spe fed run --permit ${chosenPermit() || "PID"} path/to/app`;
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
    showCommand();
  }

  async function loadPermits(wanted) {
    permits = [];
    try {
      permits = await api("/permits?mine=true");
    } catch (exc) {
      showError($("start-error"), errorHeading(exc, "Your permits could not be listed"),
        exc.messages);
    }
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

  function chosenNodes() {
    if ($("f-permit").value === OTHER) {
      const list = $("f-nodes-text").value.split(",").map((s) => s.trim()).filter(Boolean);
      return list.length ? list : null;
    }
    const ticked = [...$("nodes").querySelectorAll('input[name="node"]:checked')]
      .map((box) => box.value);
    return ticked.length ? ticked : null;
  }

  function wholeNumber(id, min, problems) {
    const input = $(id);
    const text = input.value.trim();
    const value = Number(text);
    if (!text || !Number.isInteger(value) || value < min) {
      problems.push(`${input.labels[0].textContent}: a whole number, at least ${min}.`);
    }
    return value;
  }

  function positive(id, problems) {
    const input = $(id);
    const value = Number(input.value.trim());
    if (!input.value.trim() || !Number.isFinite(value) || value <= 0) {
      problems.push(`${input.labels[0].textContent}: a number above 0.`);
    }
    return value;
  }

  function readStart(problems) {
    const permit = chosenPermit();
    if (!permit) problems.push("Permit: choose a permit, or type its id.");
    const covariates = {};
    for (const box of document.querySelectorAll('input[name="covariate"]:checked')) {
      covariates[box.value] = COVARIATES[box.value];
    }
    // None ticked would read as the app's defaults (an empty config): said, not sent.
    if (!Object.keys(covariates).length) {
      problems.push("Covariates: tick at least one whose effect the harmonisation keeps.");
    }
    const codes = $("f-diagnosis").value.split(",").map((s) => s.trim()).filter(Boolean);
    if ("diagnosis" in covariates && !codes.length) {
      problems.push("Diagnosis codes: at least one, for the diagnosis covariate.");
    }
    const rule = $("f-on_failure").value;
    const body = {
      permit, app: "combat", nodes: chosenNodes(), on_failure: rule,
      min_nodes: wholeNumber("f-min_nodes", 1, problems),
      config: {covariates, diagnosis_codes: codes, modality: $("f-modality").value.trim(),
        body_part: $("f-body_part").value.trim()},
    };
    if (rule === "retry") body.retries = wholeNumber("f-retries", 0, problems);
    if ($("f-dp").checked) {
      body.privacy = {clip: positive("f-dp-clip", problems),
        noise_multiplier: positive("f-dp-noise", problems),
        delta: positive("f-dp-delta", problems)};
    }
    return body;
  }

  function setStartBusy(on) {
    $("start").disabled = on;
    $("start-busy").hidden = !on;
    $("start-form").setAttribute("aria-busy", on ? "true" : "false");
  }

  async function onStart(event) {
    event.preventDefault();
    hide($("start-error"));
    const problems = [];
    const body = readStart(problems);
    if (problems.length) {
      showError($("start-error"), "The form needs a correction, nothing was sent:", problems);
      return;
    }
    setStartBusy(true);
    try {
      const run = await api("/fed/runs", {method: "POST", body});
      window.location.assign(runUrl(run.id));
    } catch (exc) {
      showError($("start-error"), errorHeading(exc, "The run was not started"),
        exc.messages);
      setStartBusy(false);
    }
  }

  // ---- /fed: my runs -------------------------------------------------------------------------

  const roundsText = (r) => (r.rounds_planned
    ? `${r.rounds.length} of ${r.rounds_planned}` : String(r.rounds.length));

  function runsTable(runs) {
    if (!runs.length) {
      return el("p", {className: "note", dataset: {testid: "runs-empty"}}, "No runs yet.");
    }
    const newest = [...runs].sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
    return el("table", {className: "jobs", dataset: {testid: "runs-table"}},
      el("thead", {}, el("tr", {}, ["Run", "App", "Permit", "State", "Rounds", "Started"]
        .map((h) => el("th", {scope: "col"}, h)))),
      el("tbody", {}, newest.map((r) => el("tr", {dataset: {testid: "run-row", run: r.id,
        state: r.state}},
      el("th", {scope: "row"}, el("a", {href: runUrl(r.id), title: r.id,
        dataset: {testid: "run-link"}}, el("code", {}, r.id.slice(0, 12)))),
      el("td", {dataset: {testid: "run-row-app"}}, APP[r.app] || r.app),
      el("td", {}, r.permit),
      el("td", {}, badge(r.state, RUN, "run-row-state")),
      el("td", {className: "num", dataset: {testid: "run-row-rounds"}}, roundsText(r)),
      el("td", {}, when(r.created_at))))));
  }

  async function showList() {
    $("page-title").textContent = "Federated runs";
    $("view-list").hidden = false;
    if (!me) {
      fill($("runs-list"), el("p", {className: "note", dataset: {testid: "signin-needed"}},
        "Sign in to start a run or to see yours."));
      return;
    }
    const params = new URLSearchParams(window.location.search);
    await loadPermits(params.get("permit"));
    try {
      fill($("runs-list"), runsTable(await api("/fed/runs")));
    } catch (exc) {
      fill($("runs-list"));
      showError($("page-error"), errorHeading(exc, "Your runs could not be listed"),
        exc.messages);
    }
  }

  // ---- /fed?run=<id>: one run ----------------------------------------------------------------

  let runId = null;
  let timer = null;
  let shown = {run: "", outputs: ""};
  let lastRun = null;

  function fact(label, value, testid) {
    return [el("dt", {}, label), el("dd", {dataset: {testid}},
      value === "" || value === null || value === undefined ? "—" : value)];
  }

  function renderHead(run) {
    const mine = Boolean(me) && run.user === me.id;
    fill($("run-head"),
      el("header", {className: "job-head"},
        el("h2", {}, `${APP[run.app] || run.app} run `,
          el("code", {dataset: {testid: "run-id"}}, run.id)),
        el("p", {dataset: {testid: "run-progress"}},
          badge(run.state, RUN, "run-state"), " ",
          run.state === "running" ? `Round ${run.rounds.length + 1}`
            + (run.rounds_planned ? ` of ${run.rounds_planned}` : "") + " under way."
            : `${run.rounds.length} round(s).`)),
      run.reason ? el("p", {className: run.state === "succeeded" ? "note" : "warning",
        dataset: {testid: "run-reason"}}, run.reason) : null,
      el("dl", {className: "facts", dataset: {testid: "run-facts"}},
        fact("Permit", el("a", {href: `${root}/permits/view/${encodeURIComponent(run.permit)}`},
          run.permit), "run-permit"),
        fact("Started by", run.user, "run-user"),
        fact("Started", when(run.created_at), "run-created"),
        fact("Last change", when(run.updated_at), "run-updated-at"),
        fact("Institutions", run.nodes.join(", "), "run-nodes"),
        fact("Rounds", roundsText(run), "run-rounds")));
    // Cancelling is the run's own user's, while it runs (the API says so too).
    $("cancel").hidden = !mine;
    $("cancel").disabled = run.state !== "running";
  }

  // One institution's answer in one round: its state as a coloured word, the gate's words
  // beside it (and as the cell's title), the attempts when more than one, and ε.
  function nodeCell(round, node) {
    const s = round.nodes[node];
    if (!s) {
      return el("td", {className: "cell cell-absent", dataset: {testid: "round-cell",
        node, round: String(round.round), state: "absent"}},
      el("span", {className: "note"}, "not in this round"));
    }
    const title = [NODE[s.state] || s.state, s.reason].filter(Boolean).join(": ");
    return el("td", {className: `cell cell-${cls(s.state)}`, title,
      dataset: {testid: "round-cell", node, round: String(round.round), state: s.state}},
    badge(s.state, NODE, "cell-state"),
    s.attempts > 1 ? el("span", {className: "attempts", dataset: {testid: "cell-attempts"}},
      ` after ${s.attempts} attempts`) : null,
    s.reason ? el("span", {className: "reason", dataset: {testid: "cell-reason"}}, s.reason)
      : null,
    el("span", {className: "cell-facts hint"},
      s.seconds ? `${num(s.seconds)} s` : null,
      s.seconds && s.epsilon !== null && s.epsilon !== undefined ? " · " : null,
      s.epsilon !== null && s.epsilon !== undefined
        ? el("span", {dataset: {testid: "cell-epsilon"}}, `ε ${num(s.epsilon)}`) : null));
  }

  function roundsTable(run) {
    if (!run.rounds.length) {
      return el("p", {className: "note", dataset: {testid: "rounds-empty"}},
        run.state === "running" ? "The first round is under way." : "No round was run.");
    }
    // The run's institutions, and any a round names that the run's list does not.
    const nodes = [...run.nodes];
    for (const r of run.rounds) for (const n of Object.keys(r.nodes)) {
      if (!nodes.includes(n)) nodes.push(n);
    }
    return el("div", {className: "table-scroll"},
      el("table", {className: "rounds", dataset: {testid: "rounds-table"}},
        el("caption", {}, `${run.rounds.length} round(s) × ${nodes.length} institution(s)`),
        el("thead", {}, el("tr", {}, el("th", {scope: "col"}, "Round"),
          el("th", {scope: "col"}, "Step"),
          nodes.map((n) => el("th", {scope: "col", dataset: {testid: "node-column"}}, n)),
          el("th", {scope: "col"}, "Pooled metrics"))),
        el("tbody", {}, run.rounds.map((r) => el("tr", {dataset: {testid: "round-row",
          round: String(r.round), kind: r.kind}},
        el("th", {scope: "row", className: "num"}, String(r.round)),
        el("td", {}, el("span", {title: when(r.at)}, r.kind)),
        nodes.map((n) => nodeCell(r, n)),
        el("td", {className: "metrics", dataset: {testid: "round-metrics"}},
          Object.keys(r.metrics || {}).length ? el("ul", {className: "metric-list"},
            Object.keys(r.metrics).sort().map((k) => el("li", {dataset: {metric: k}},
              el("span", {className: "metric-name"}, k), " ",
              el("span", {className: "metric-value"}, num(r.metrics[k])))))
            : el("span", {className: "note"}, "—")))))));
  }

  // ---- the metrics' curves: inline SVG built with createElementNS ----------------------------

  const W = 760;
  const PLOT = {left: 64, right: 24, top: 16, height: 240, bottom: 48};

  function series(run) {
    const names = [];
    for (const r of run.rounds) {
      for (const k of Object.keys(r.metrics || {})) if (!names.includes(k)) names.push(k);
    }
    return names.sort().map((name) => ({name, points: run.rounds
      .filter((r) => r.metrics && Number.isFinite(r.metrics[name]))
      .map((r) => ({round: r.round, kind: r.kind, value: r.metrics[name]}))}));
  }

  function plot(run) {
    const lines = series(run);
    if (!lines.length) {
      return el("p", {className: "note", dataset: {testid: "plot-empty"}},
        run.app === "flower" && run.rounds.length
          ? "A Flower app's metrics are its own code's figures: they come with its result, "
            + "in rounds.json, once two output checkers have released it."
          : run.rounds.length ? "The rounds so far pooled no metric." : "No round yet.");
    }
    const rounds = run.rounds.map((r) => r.round);
    let [x0, x1] = [Math.min(...rounds), Math.max(...rounds)];
    if (x1 === x0) [x0, x1] = [x0 - 1, x1 + 1];
    const values = lines.flatMap((s) => s.points.map((p) => p.value));
    let lo = Math.min(0, ...values);
    let hi = Math.max(...values);
    if (hi === lo) hi = lo + 1;
    const yv = ticks(lo, hi, 5);
    [lo, hi] = [yv[0], yv[yv.length - 1]];
    const xv = x1 - x0 <= 12 ? rounds.filter((r, i) => rounds.indexOf(r) === i)
      : ticks(x0, x1, 6).filter((t) => t >= x0 && t <= x1);
    const right = W - PLOT.right;
    const bottom = PLOT.top + PLOT.height;
    const x = (v) => PLOT.left + ((v - x0) / (x1 - x0)) * (right - PLOT.left);
    const y = (v) => bottom - ((v - lo) / (hi - lo)) * PLOT.height;
    const label = `${lines.map((s) => s.name).join(", ")} over ${run.rounds.length} round(s) `
      + `of run ${run.id.slice(0, 12)}`;
    const titleId = `plot-title-${run.id}`;
    const root_ = svg("svg", {viewBox: `0 0 ${W} ${bottom + PLOT.bottom}`, width: W,
      height: bottom + PLOT.bottom, role: "img", "aria-labelledby": titleId,
      "aria-label": label, class: "chart chart-rounds", "data-testid": "metrics-plot",
      preserveAspectRatio: "xMinYMin meet"}, svg("title", {id: titleId}, label));
    const g = svg("g", {class: "plot"});
    root_.append(g);
    for (const v of yv) {
      g.append(svg("line", {x1: PLOT.left, x2: right, y1: y(v), y2: y(v), class: "grid"}),
        svg("text", {x: PLOT.left - 6, y: y(v) + 4, class: "tick", "text-anchor": "end"},
          num(v)));
    }
    for (const v of xv) {
      g.append(svg("line", {x1: x(v), x2: x(v), y1: bottom, y2: bottom + 4, class: "axis"}),
        svg("text", {x: x(v), y: bottom + 16, class: "tick", "text-anchor": "middle"},
          String(v)));
    }
    g.append(svg("line", {x1: PLOT.left, x2: right, y1: bottom, y2: bottom, class: "axis"}),
      svg("line", {x1: PLOT.left, x2: PLOT.left, y1: PLOT.top, y2: bottom, class: "axis"}),
      svg("text", {x: (PLOT.left + right) / 2, y: bottom + 34, class: "axis-label",
        "text-anchor": "middle"}, "round"));
    lines.forEach((s, i) => {
      const k = i % 6;
      const pts = s.points.map((p) => `${x(p.round).toFixed(1)},${y(p.value).toFixed(1)}`);
      g.append(svg("polyline", {points: pts.join(" "), class: `series series-${k}`,
        "data-testid": "metric-line", "data-metric": s.name,
        "data-points": String(s.points.length)}, svg("title", {}, s.name)));
      for (const p of s.points) {
        g.append(svg("circle", {cx: x(p.round), cy: y(p.value), r: 3.5,
          class: `marker series-${k}`, "data-metric": s.name},
        svg("title", {}, `round ${p.round} (${p.kind}): ${s.name} ${num(p.value)}`)));
      }
    });
    const legend = el("ul", {className: "plot-legend", dataset: {testid: "plot-legend"}},
      lines.map((s, i) => el("li", {dataset: {metric: s.name}},
        svg("svg", {width: 28, height: 10, viewBox: "0 0 28 10", "aria-hidden": "true",
          class: "swatch"}, svg("line", {x1: 0, x2: 28, y1: 5, y2: 5,
          class: `series series-${i % 6}`})),
        " ", el("span", {className: "metric-name"}, s.name),
        s.points.length ? ` (last ${num(s.points[s.points.length - 1].value)})` : "")));
    const table = el("details", {className: "steps"},
      el("summary", {}, "The metrics as a table"),
      el("table", {className: "chart-table", dataset: {testid: "plot-table"}},
        el("thead", {}, el("tr", {}, el("th", {scope: "col"}, "Round"),
          lines.map((s) => el("th", {scope: "col"}, s.name)))),
        el("tbody", {}, run.rounds.map((r) => el("tr", {},
          el("th", {scope: "row"}, `${r.round} (${r.kind})`),
          lines.map((s) => el("td", {className: "num"}, num((r.metrics || {})[s.name]))))))));
    return el("figure", {className: "chart-figure", dataset: {testid: "plot-figure"}},
      el("figcaption", {}, "The pooled metrics, round by round"), root_, legend,
      el("p", {className: "hint"}, "One axis for every metric: each value is the mean over "
        + "the institutions accepted in that round, weighted by their counts."), table);
  }

  function privacyOf(run) {
    const spent = Object.entries(run.privacy || {});
    $("privacy-section").hidden = !spent.length;
    if (!spent.length) return null;
    return [el("p", {className: "hint"}, "The ε each institution has spent on this run so "
      + "far (at the run's δ): the noise its gate added to every update it sent."),
    el("table", {className: "privacy", dataset: {testid: "privacy-table"}},
      el("thead", {}, el("tr", {}, el("th", {scope: "col"}, "Institution"),
        el("th", {scope: "col"}, "ε spent"))),
      el("tbody", {}, spent.sort(([a], [b]) => (a < b ? -1 : 1)).map(([n, e]) =>
        el("tr", {dataset: {testid: "privacy-row", node: n}},
          el("th", {scope: "row"}, n),
          el("td", {className: "num", dataset: {testid: "privacy-epsilon"}}, num(e))))))];
  }

  function resultOf(run, requests) {
    if (!run.airlock) {
      return el("p", {className: "note", dataset: {testid: "result-none"}},
        run.state === "running" ? "The result goes to the airlock once the last round is "
          + "done." : "No result went to the airlock.");
    }
    const r = (requests || []).find((q) => q.id === run.airlock);
    return el("p", {dataset: {testid: "result-airlock"}},
      "The result is in the airlock, for two output checkers: request ",
      el("a", {href: `${root}/airlock?request=${encodeURIComponent(run.airlock)}`,
        dataset: {testid: "airlock-link"}}, el("code", {}, run.airlock)),
      r ? [" ", el("span", {className: `status request-${cls(r.state)}`,
        dataset: {testid: "airlock-state"}}, REQUEST[r.state] || r.state)] : null, ".");
  }

  function renderRun(run, requests) {
    const text = JSON.stringify([run, requests]);
    lastRun = run;
    if (text === shown.run) return;
    shown.run = text;
    $("page-title").textContent = `${APP[run.app] || "Federated"} run ${run.id.slice(0, 12)}`;
    renderHead(run);
    $("run-body").hidden = false;
    fill($("run-rounds"), roundsTable(run));
    fill($("run-plot"), plot(run));
    fill($("run-privacy"), privacyOf(run));
    fill($("run-result"), resultOf(run, requests));
  }

  function schedule() {
    clearTimeout(timer);
    timer = null;
    if (!$("auto").checked || !lastRun || lastRun.state !== "running") return;
    timer = setTimeout(refresh, 2_000);
  }

  async function outputsOf(run) {
    if (!run.airlock) return [];
    try {
      const found = await api(`/fed/runs/${encodeURIComponent(run.id)}/outputs`);
      hide($("outputs-error"));
      return found;
    } catch (exc) {
      showError($("outputs-error"), errorHeading(exc, "The result's request could not be read"),
        exc.messages);
      return [];
    }
  }

  async function refresh() {
    clearTimeout(timer);
    timer = null;
    $("view-run").setAttribute("aria-busy", "true");
    $("refresh").disabled = true;
    try {
      const run = await api(`/fed/runs/${encodeURIComponent(runId)}`);
      renderRun(run, await outputsOf(run));
      hide($("run-error"));
    } catch (exc) {
      showError($("run-error"), errorHeading(exc, "The run could not be read"), exc.messages);
      if ([401, 403, 404].includes(exc.status)) {
        $("auto").checked = false;
        return;
      }
    } finally {
      $("view-run").setAttribute("aria-busy", "false");
      $("refresh").disabled = false;
    }
    $("run-updated").textContent = `Updated ${new Date().toLocaleTimeString("en-GB")}.`;
    schedule();
  }

  async function cancel() {
    hide($("run-error"));
    $("cancel").disabled = true;
    try {
      const run = await api(`/fed/runs/${encodeURIComponent(runId)}/cancel`, {method: "POST"});
      renderRun(run, await outputsOf(run));
    } catch (exc) {
      $("cancel").disabled = false;
      showError($("run-error"), errorHeading(exc, "Not cancelled"), exc.messages);
      schedule();
      return;
    }
    $("run-updated").textContent = "Cancelled: no further round is sent.";
    schedule();
  }

  async function showRun(id) {
    runId = id;
    $("view-run").hidden = false;
    $("page-title").textContent = "Federated run";
    if (!me) {
      fill($("run-head"), el("p", {className: "note", dataset: {testid: "signin-needed"}},
        "Sign in to follow this run."));
      return;
    }
    await refresh();
  }

  // ---- start -------------------------------------------------------------------------------

  async function render() {
    clearTimeout(timer);
    for (const id of ["view-list", "view-run"]) $(id).hidden = true;
    $("run-body").hidden = true;
    $("cancel").hidden = true;
    shown = {run: "", outputs: ""};
    lastRun = null;
    hide($("page-error"), $("run-error"));
    fill($("run-head"));
    const params = new URLSearchParams(window.location.search);
    await SPEWeb.loadView(() => (params.get("run") ? showRun(params.get("run")) : showList()));
  }

  async function start() {
    SPEWeb.wireSignIn(session, changed);
    $("f-permit").addEventListener("change", showNodes);
    $("f-permit-other").addEventListener("input", showCommand);
    $("f-on_failure").addEventListener("change", () => {
      $("retries-field").hidden = $("f-on_failure").value !== "retry";
    });
    $("f-dp").addEventListener("change", () => { $("dp-fields").hidden = !$("f-dp").checked; });
    $("start-form").addEventListener("submit", onStart);
    $("refresh").addEventListener("click", refresh);
    $("auto").addEventListener("change", schedule);
    $("cancel").addEventListener("click", cancel);
    // Coming from the jobs page in this tab: its sign-in carries over (checked again).
    const candidate = token() || sessionStorage.getItem(JOBS_TOKEN_KEY);
    await changed(candidate ? await session.signIn(candidate) : null);
  }

  start();
})();
