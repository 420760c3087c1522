// The federated query page: build a query (or write its JSON), send it to the hub with the
// researcher's token, and show what each institution answered and the combined figures.
// Everything from the API is written as text (textContent via el()), never as HTML.
"use strict";

(() => {
  const {root, $, el, fill, numberFormat, fmt, signinMessage, showSignedIn} = SPEWeb;
  const TOKEN_KEY = "spe.query.token";
  const PERMITS_TOKEN_KEY = "spe.permits.token";  // the permit pages' (spe/permits/static)
  const HUB = {unreachable: "the hub could not be reached"};
  const session = SPEWeb.session(TOKEN_KEY, HUB);
  const {token, headers} = session;

  // ---- what the form offers ------------------------------------------------------------

  const TYPES = {patient: "Patient", condition: "Condition", imaging: "Imaging",
    observation: "Observation"};
  const STRATA = {sex: "Sex", age_band: "Age band", modality: "Modality", site: "Institution"};
  const STATUS = {answered: "answered", suppressed: "suppressed", refused: "refused",
    timed_out: "timed out", unreachable: "unreachable", error: "error"};

  // Per criterion type, its fields: name (in the row), label, kind, and extras.
  const FIELDS = {
    patient: [
      {name: "sex", label: "Sex", kind: "select",
        options: [["", "any"], ["female", "female"], ["male", "male"], ["other", "other"],
          ["unknown", "unknown"]]},
      {name: "age_min", label: "Age from", kind: "int"},
      {name: "age_max", label: "Age to", kind: "int"},
      {name: "age_at", label: "Age on", kind: "date",
        hint: "blank: age at each of the patient's imaging studies"},
    ],
    condition: [
      {name: "system", label: "Code system", kind: "select",
        options: [["icd-10", "ICD-10"], ["snomed", "SNOMED CT"]]},
      {name: "code", label: "Code", kind: "text", placeholder: "e.g. C71"},
      {name: "prefix", label: "Prefix (the code and every code under it)", kind: "checkbox"},
    ],
    imaging: [
      {name: "modality", label: "Modalities", kind: "list", placeholder: "e.g. MR, CT",
        hint: "separated by commas; any of them"},
      {name: "body_part", label: "Body parts", kind: "list", placeholder: "e.g. HEAD, CHEST",
        hint: "separated by commas; any of them"},
      {name: "manufacturer", label: "Manufacturer", kind: "text"},
      {name: "study_from", label: "Study date from", kind: "date"},
      {name: "study_to", label: "Study date to", kind: "date"},
    ],
    observation: [
      {name: "code", label: "LOINC code", kind: "text", placeholder: "e.g. 39156-5"},
      {name: "min", label: "Min", kind: "number"},
      {name: "max", label: "Max", kind: "number"},
      {name: "unit", label: "Unit (UCUM)", kind: "text", placeholder: "e.g. kg/m2",
        hint: "needed with min or max"},
    ],
  };

  let permit = null;  // ?permit=PID: ask in the permit tier, under that permit
  let rowSeq = 0;  // ids stay unique however rows come and go
  let edited = false;  // the JSON was edited by hand: it is sent as it is

  function fieldControl(rowId, f) {
    const id = `${rowId}-${f.name}`;
    const common = {id, dataset: {field: f.name, testid: `field-${f.name}`}};
    if (f.kind === "checkbox") {
      return el("div", {className: "field check"},
        el("input", {...common, type: "checkbox"}), el("label", {for: id}, f.label));
    }
    const hintId = f.hint ? `${id}-hint` : null;
    let control;
    if (f.kind === "select") {
      control = el("select", common, f.options.map(([value, text]) =>
        el("option", {value}, text)));
    } else {
      const type = {int: "number", number: "number", date: "date"}[f.kind] || "text";
      control = el("input", {...common, type, placeholder: f.placeholder,
        step: f.kind === "number" ? "any" : f.kind === "int" ? "1" : null,
        min: f.kind === "int" ? "0" : null, max: f.kind === "int" ? "150" : null,
        inputmode: f.kind === "int" ? "numeric" : f.kind === "number" ? "decimal" : null,
        autocomplete: "off", "aria-describedby": hintId});
    }
    return el("div", {className: `field field-${f.kind}`},
      el("label", {for: id}, f.label), control,
      f.hint ? el("span", {className: "hint", id: hintId}, f.hint) : null);
  }

  function setType(row, type) {
    row.dataset.type = type;
    fill(row.querySelector(".fields"), FIELDS[type].map((f) => fieldControl(row.id, f)));
  }

  function addRow(type = "patient", values = {}) {
    rowSeq += 1;
    const rowId = `c${rowSeq}`;
    const typeSelect = el("select", {id: `${rowId}-type`, dataset: {testid: "criterion-type"}},
      Object.entries(TYPES).map(([value, text]) => el("option", {value}, text)));
    const legend = el("legend", {dataset: {testid: "criterion-legend"}});
    const remove = el("button", {type: "button", className: "remove",
      dataset: {testid: "remove-criterion"}}, "Remove");
    const row = el("li", {id: rowId, className: "criterion", dataset: {testid: "criterion"}},
      el("fieldset", {},
        legend,
        el("div", {className: "row criterion-head"},
          el("div", {className: "field"},
            el("label", {for: `${rowId}-type`}, "Type"), typeSelect),
          el("div", {className: "field check not"},
            el("input", {id: `${rowId}-not`, type: "checkbox",
              dataset: {testid: "criterion-not"}}),
            el("label", {for: `${rowId}-not`}, "NOT (patients without this)")),
          remove),
        el("div", {className: "fields row"})));
    typeSelect.value = type;
    setType(row, type);
    typeSelect.addEventListener("change", () => {
      setType(row, typeSelect.value);
      changed();
    });
    remove.addEventListener("click", () => {
      const next = row.nextElementSibling || row.previousElementSibling;
      row.remove();
      renumber();
      changed();
      // Keep the keyboard where it was: the next row's type, else "Add a criterion".
      (next ? next.querySelector("select") : $("add")).focus();
    });
    $("criteria").append(row);
    for (const [name, value] of Object.entries(values)) {
      const input = row.querySelector(`[data-field="${name}"]`);
      if (!input) continue;
      if (input.type === "checkbox") input.checked = Boolean(value);
      else input.value = value;
    }
    renumber();
    return row;
  }

  function renumber() {
    [...$("criteria").children].forEach((row, i) => {
      row.querySelector("legend").textContent = `Criterion ${i + 1}`;
      row.querySelector(".remove").setAttribute("aria-label", `Remove criterion ${i + 1}`);
    });
  }

  // ---- the statistics' variables ----------------------------------------------------------

  // What a statistic is about: a variable of each patient (age, sex, an observation's value,
  // whether they have a condition, how many imaging studies of a modality), or for survival
  // the dated events that start and end the time. Sent as {"type": ..., ...}.
  const VARIABLES = {age: "Age (years)", sex: "Sex", observation: "Observation value",
    condition: "Has a condition", imaging: "Imaging studies"};
  const EVENTS = {condition: "First onset of a condition", study: "First imaging study"};
  const VARIABLE_FIELDS = {
    observation: [
      {name: "code", label: "LOINC code", kind: "text", placeholder: "e.g. 39156-5"},
      {name: "unit", label: "Unit (UCUM)", kind: "text", placeholder: "e.g. kg/m2"},
      {name: "summary", label: "Per patient", kind: "select",
        options: [["latest", "latest value"], ["mean", "mean of the values"]]},
    ],
    condition: [
      {name: "code", label: "ICD-10 code", kind: "text", placeholder: "e.g. E11"},
      {name: "prefix", label: "Prefix (and every code under it)", kind: "checkbox"},
    ],
    imaging: [
      {name: "modality", label: "Modality", kind: "text", placeholder: "e.g. MR"},
    ],
    study: [
      {name: "modality", label: "Modality (blank: any)", kind: "text", placeholder: "e.g. CT"},
    ],
  };
  // Which blocks of the statistics form each kind uses.
  const STAT_BLOCKS = {
    mean: ["variable"], quantiles: ["variable", "probabilities"],
    histogram: ["variable", "bins"], table: ["rows", "cols"], correlation: ["variables"],
    linear: ["outcome", "predictors"], logistic: ["outcome", "predictors"],
    survival: ["start", "end", "unit"],
  };
  let varSeq = 0;

  function variablePicker(label, {events = false, type = null, removable = false} = {}) {
    varSeq += 1;
    const id = `v${varSeq}`;
    const choices = events ? EVENTS : VARIABLES;
    const select = el("select", {id: `${id}-type`, dataset: {testid: "variable-type"}},
      Object.entries(choices).map(([value, text]) => el("option", {value}, text)));
    const fields = el("div", {className: "row"});
    // A picker in a list is named ("Predictor"); one alone has its block's heading.
    const legend = label ? el("span", {className: "vlegend",
      dataset: {testid: "variable-label"}}, label) : null;
    const box = el("div", {className: "variable", id, dataset: {testid: "variable"}},
      legend,
      el("div", {className: "field"}, el("label", {for: `${id}-type`}, "Variable"), select),
      fields);
    const setFields = () => {
      box.dataset.type = select.value;
      fill(fields, (VARIABLE_FIELDS[select.value] || []).map((f) => fieldControl(id, f)));
    };
    select.value = type || Object.keys(choices)[0];
    select.addEventListener("change", setFields);
    setFields();
    if (removable) {
      box.append(el("button", {type: "button", className: "remove",
        dataset: {testid: "remove-variable"},
        onclick: () => {
          box.remove();
          changed();
        }}, "Remove"));
    }
    return box;
  }

  function readVariable(box, what, problems) {
    const type = box.dataset.type;
    const get = (name) => box.querySelector(`[data-field="${name}"]`);
    const text = (name) => (get(name) ? get(name).value.trim() : "");
    const v = {type};
    if (type === "observation") {
      v.system = "loinc";
      v.code = text("code");
      v.unit = text("unit");
      if (text("summary") && text("summary") !== "latest") v.summary = text("summary");
      if (!v.unit) problems.push(`${what}: give the unit (UCUM, e.g. kg/m2)`);
    } else if (type === "condition") {
      v.system = "icd-10";
      v.code = text("code");
      if (get("prefix") && get("prefix").checked) v.prefix = true;
    } else if ((type === "imaging" || type === "study") && text("modality")) {
      v.modality = text("modality");
    }
    if ((type === "observation" || type === "condition") && !v.code) {
      problems.push(`${what}: give the ${type === "observation" ? "LOINC" : "ICD-10"} code`);
    }
    if (type === "imaging" && !v.modality) problems.push(`${what}: give the modality`);
    return v;
  }

  function variableList(block, label, initial) {
    const list = el("div", {className: "variables", dataset: {testid: `${block}-list`}});
    const add = el("button", {type: "button", dataset: {testid: `add-${block}`},
      onclick: () => {
        list.append(variablePicker(label, {removable: true}));
        changed();
      }}, `Add ${label.toLowerCase()}`);
    for (const type of initial) list.append(variablePicker(label, {type, removable: true}));
    return [list, add];
  }

  function statBlocks() {
    const block = (name, label, ...content) => el("div", {className: "block",
      dataset: {block: name, testid: `block-${name}`}},
    el("span", {className: "label"}, label), ...content);
    return [
      block("variable", "Variable", variablePicker(null, {type: "age"})),
      block("probabilities", "Quantiles",
        el("div", {className: "field"},
          el("label", {for: "probabilities"}, "Probabilities (0 to 1, separated by commas)"),
          el("input", {id: "probabilities", type: "text", value: "0.05, 0.25, 0.5, 0.75, 0.95",
            dataset: {testid: "probabilities"}, autocomplete: "off"}))),
      block("bins", "Bins of equal width",
        el("div", {className: "row"},
          el("div", {className: "field field-number"},
            el("label", {for: "bins-start"}, "From"),
            el("input", {id: "bins-start", type: "number", step: "any", value: "0",
              inputmode: "decimal", dataset: {testid: "bins-start"}})),
          el("div", {className: "field field-number"},
            el("label", {for: "bins-stop"}, "To"),
            el("input", {id: "bins-stop", type: "number", step: "any", value: "100",
              inputmode: "decimal", dataset: {testid: "bins-stop"}})),
          el("div", {className: "field field-int"},
            el("label", {for: "bins"}, "Number of bins"),
            el("input", {id: "bins", type: "number", min: "1", max: "50", step: "1",
              value: "10", inputmode: "numeric", dataset: {testid: "bins"}})))),
      block("rows", "Rows", variablePicker(null, {type: "sex"})),
      block("cols", "Columns", variablePicker(null, {type: "condition"})),
      block("variables", "Variables (two or more)",
        ...variableList("variables", "Variable", ["age", "observation"])),
      block("outcome", "Outcome", variablePicker(null, {type: "observation"})),
      block("predictors", "Predictors",
        ...variableList("predictors", "Predictor", ["age", "sex"])),
      block("start", "Time from", variablePicker(null,
        {events: true, type: "condition"})),
      block("end", "to", variablePicker(null,
        {events: true, type: "study"})),
      block("unit", "In",
        el("div", {className: "field"},
          el("label", {for: "time-unit"}, "Time unit"),
          el("select", {id: "time-unit", dataset: {testid: "time-unit"}},
            ["day", "week", "month"].map((u) => el("option", {value: u}, `${u}s`))))),
    ];
  }

  function showStatBlocks(k) {
    const wanted = STAT_BLOCKS[k] || [];
    $("stat-options").hidden = !wanted.length;
    for (const b of $("stat-options").querySelectorAll("[data-block]")) {
      b.hidden = !wanted.includes(b.dataset.block);
    }
  }

  function readStats(k, answer, problems) {
    const blocks = STAT_BLOCKS[k] || [];
    const one = (name, what) => readVariable(
      $("stat-options").querySelector(`[data-block="${name}"] [data-testid="variable"]`),
      what, problems);
    const many = (name, what) => [...$("stat-options").querySelectorAll(
      `[data-block="${name}"] [data-testid="variable"]`)]
      .map((box, i) => readVariable(box, `${what} ${i + 1}`, problems));
    if (blocks.includes("variable")) answer.variable = one("variable", "Variable");
    if (blocks.includes("probabilities")) {
      const ps = $("probabilities").value.split(",").map((t) => t.trim()).filter(Boolean)
        .map(Number);
      if (!ps.length || ps.some((p) => !(p > 0 && p < 1))) {
        problems.push("Quantiles: give probabilities between 0 and 1, such as 0.25, 0.5");
      }
      answer.probabilities = ps;
    }
    if (blocks.includes("bins")) {
      const count = Number($("bins").value);
      const start = Number($("bins-start").value);
      const stop = Number($("bins-stop").value);
      if (!Number.isInteger(count) || count < 1) {
        problems.push("Histogram: the number of bins is a whole number from 1");
      }
      if ($("bins-start").value === "" || $("bins-stop").value === "" || !(start < stop)) {
        problems.push("Histogram: give where the bins start and stop, the start below the stop");
      }
      answer.bins = {start, stop, count};
    }
    if (blocks.includes("rows")) answer.variables = [one("rows", "Rows"), one("cols", "Columns")];
    if (blocks.includes("variables")) {
      answer.variables = many("variables", "Variable");
      if (answer.variables.length < 2) problems.push("Correlation: give at least two variables");
    }
    if (blocks.includes("outcome")) {
      answer.outcome = one("outcome", "Outcome");
      answer.predictors = many("predictors", "Predictor");
      if (!answer.predictors.length) problems.push("Regression: give at least one predictor");
    }
    if (blocks.includes("start")) {
      answer.start = one("start", "Start");
      answer.end = one("end", "End");
      answer.unit = $("time-unit").value;
    }
  }

  // ---- the form as a query ---------------------------------------------------------------

  function readRow(row, index, problems) {
    const type = row.dataset.type;
    const get = (name) => row.querySelector(`[data-field="${name}"]`);
    const text = (name) => get(name).value.trim();
    const num = (name, label) => {
      const input = get(name);
      if (input.validity && input.validity.badInput) {
        problems.push(`Criterion ${index + 1}: ${label} is not a number`);
        return undefined;
      }
      return input.value.trim() === "" ? undefined : Number(input.value);
    };
    const list = (name) => text(name).split(",").map((s) => s.trim()).filter(Boolean);
    const c = {type};
    if (type === "patient") {
      if (text("sex")) c.sex = text("sex");
      const age = {min: num("age_min", "Age from"), max: num("age_max", "Age to")};
      if (text("age_at")) age.at = text("age_at");
      if (Object.values(age).some((v) => v !== undefined)) c.age = age;
      // Said here, before a round trip: the hub refuses it in the same words.
      if (!c.sex && !c.age) problems.push(`Criterion ${index + 1}: a patient criterion needs sex or age`);
    } else if (type === "condition") {
      c.system = text("system");
      c.code = text("code");
      if (get("prefix").checked) c.prefix = true;
    } else if (type === "imaging") {
      for (const name of ["modality", "body_part"]) if (list(name).length) c[name] = list(name);
      for (const name of ["manufacturer", "study_from", "study_to"]) {
        if (text(name)) c[name] = text(name);
      }
    } else if (type === "observation") {
      c.code = text("code");
      const min = num("min", "Min");
      const max = num("max", "Max");
      if (min !== undefined) c.min = min;
      if (max !== undefined) c.max = max;
      if (text("unit")) c.unit = text("unit");
    }
    return row.querySelector('[data-testid="criterion-not"]').checked
      ? {type: "not", of: c} : c;
  }

  function kind() {
    const checked = document.querySelector('input[name="kind"]:checked');
    return checked ? checked.value : "count";
  }

  function build() {
    const problems = [];
    const criteria = [...$("criteria").children].map((row, i) => readRow(row, i, problems));
    const query = {};
    if (criteria.length === 1) query.where = criteria[0];
    else if (criteria.length > 1) query.where = {type: "and", of: criteria};
    query.answer = {kind: kind()};
    if (kind() === "stratified") {
      query.answer.by = [$("by1").value, $("by2").value].filter(Boolean);
    }
    readStats(kind(), query.answer, problems);
    return {query, problems};
  }

  function showJsonState() {
    $("json-state").textContent = edited
      ? "Edited by hand: this JSON is sent as it is; the form above no longer changes it."
      : "Follows the form.";
    $("rebuild").hidden = !edited;
    $("builder").classList.toggle("overridden", edited);
  }

  // Any change to the form: the JSON follows, unless the person has taken it over.
  function changed() {
    const byOn = kind() === "stratified";
    $("by1").disabled = !byOn;
    $("by2").disabled = !byOn;
    if (byOn && !$("by1").value) $("by1").value = "sex";
    $("by-row").hidden = Boolean(STAT_BLOCKS[kind()]);
    showStatBlocks(kind());
    if (!edited) $("json").value = JSON.stringify(build().query, null, 2);
  }

  // ---- sign-in -----------------------------------------------------------------------------

  // Signed in (a token checked against /api/v1/me) or out. The form is kept as it is: a
  // query written before signing in is still there to run.
  function signedInAs(me) {
    showSignedIn(me);
    if (me && !me.roles.includes("researcher")) {
      signinMessage("warning", "This token has no researcher role: the hub will refuse "
        + "its queries.");
    }
  }

  // ---- running and showing the answer ------------------------------------------------------

  function setBusy(on) {
    $("run").disabled = on;
    $("run").textContent = on ? "Running…" : "Run query";
    $("busy").hidden = !on;
    $("results").setAttribute("aria-busy", on ? "true" : "false");
    $("builder").setAttribute("aria-busy", on ? "true" : "false");
  }

  function showError(heading, messages) {
    $("results-empty").hidden = true;
    $("answer").hidden = true;
    SPEWeb.showError($("query-error"), heading, messages);
  }

  function errorHeading(exc) {
    if (exc.status === 422) return "The hub did not accept the query (422):";
    if (exc.status === 401) return "Not signed in, or the token is no longer valid (401):";
    if (exc.status === 403) return "Refused (403):";
    if (exc.status === 0) return "No answer:";
    return `The query failed (HTTP ${exc.status}):`;
  }

  function statusBadge(status) {
    return el("span", {className: `status status-${status}`, dataset: {testid: "node-status"}},
      STATUS[status] || status);
  }

  // A suppressed figure's label; the cell's own reason, when it has one, follows it.
  function suppressedText(answer, cell) {
    return cell && cell.reason ? "suppressed" : `suppressed (fewer than ${answer.threshold})`;
  }

  // A shown count: "≈" before it when perturbed (outside the value itself, which stays a
  // plain number), and how far off it may be.
  function figure(cell, answer) {
    const s = SPECharts.spread(cell);
    return [cell.perturbed ? el("span", {className: "approx", dataset: {testid: "approx"},
      title: "perturbed: a small, consistent noise is added"}, "≈") : null,
    el("span", {dataset: {testid: "node-value"}}, fmt(cell.value)),
    s ? el("span", {className: "hint", dataset: {testid: "node-spread"}},
      ` ±${SPECharts.num(s.half)}`) : null,
    answer.rounding > 1
      ? el("span", {className: "hint"}, ` (rounded to ${answer.rounding})`) : null,
    cell.reason ? el("span", {className: "reason cell-reason", dataset: {testid: "cell-reason"}},
      ` ${cell.reason}`) : null];
  }

  function suppressedCell(answer, cell) {
    return cell && cell.reason
      ? [suppressedText(answer, cell), el("span", {className: "reason cell-reason",
        dataset: {testid: "cell-reason"}}, ` ${cell.reason}`)]
      : suppressedText(answer, cell);
  }

  // A statistic's answer at one node: its patients (n) where the node says, else that it
  // answered; the node's own notes say the rest.
  function nodeStatistic(a) {
    const st = a.statistic;
    if (!st || typeof st !== "object") return "answered (no summary)";
    const n = st.n;
    return typeof n === "number" ? `n = ${st.perturbed ? "≈" : ""}${fmt(n)}` : "answered";
  }

  const COUNT_KINDS = ["boolean", "count", "stratified"];

  function nodeAnswer(n, kindAsked) {
    const a = n.answer;
    if (!a) return el("span", {className: "reason"}, n.reason || STATUS[n.status] || n.status);
    if (kindAsked === "boolean") {
      return a.exists ? `yes (at least ${a.threshold})` : suppressedCell(a, a.total);
    }
    if (!COUNT_KINDS.includes(kindAsked)) return nodeStatistic(a);
    if (a.total && !a.total.suppressed) return figure(a.total, a);
    return suppressedCell(a, a.total);
  }

  function nodeRow(n, kindAsked, datasetSite) {
    const notes = [...((n.answer && n.answer.notes) || [])];
    if (n.answer && n.reason) notes.unshift(n.reason);
    return el("tr", {dataset: {testid: "node-row", node: n.node_id, status: n.status},
      className: n.node_id === datasetSite ? "highlight" : null},
    el("th", {scope: "row", dataset: {testid: "node-id"}}, n.node_id,
      n.node_id === datasetSite ? el("span", {className: "tag"}, "dataset's institution")
        : null),
    el("td", {}, statusBadge(n.status)),
    el("td", {className: "num", dataset: {testid: "node-ms"}},
      `${numberFormat.format(Math.round(n.ms))} ms`),
    el("td", {dataset: {testid: "node-count"}}, nodeAnswer(n, kindAsked)),
    el("td", {dataset: {testid: "node-notes"}},
      notes.length ? el("ul", {className: "notes"}, notes.map((t) => el("li", {}, t))) : "—"));
  }

  function summary(a) {
    const of = `${a.sites_answering} of ${a.nodes.length} institutions answered; a combined `
      + `answer needs at least ${a.min_sites}.`;
    const threshold = Math.max(0, ...a.nodes.filter((n) => n.answer)
      .map((n) => n.answer.threshold));
    let text;
    let value = null;
    if (a.sites_answering < a.min_sites) {
      text = `No combined answer: only ${a.sites_answering} of ${a.nodes.length} `
        + `institutions answered, and at least ${a.min_sites} must.`;
    } else if (a.kind === "boolean") {
      text = a.exists
        ? `Yes: at least one institution has at least ${threshold} such patients.`
        : `No institution can say yes: each has fewer than ${threshold} such patients `
          + "(perhaps none).";
    } else if (!COUNT_KINDS.includes(a.kind)) {
      text = a.result ? "The combined result is drawn below."
        : "No combined result: see each institution's notes and the notes below.";
    } else if (!a.total) {
      text = "No combined total: no institution showed a count.";
    } else if (a.total.suppressed) {
      text = "No combined total: every answering institution suppressed or withheld its "
        + "total.";
    } else {
      text = "Combined total: ";
      value = a.total.value;
    }
    return el("div", {className: "total", dataset: {testid: "total"}},
      el("h3", {}, "All institutions"),
      el("p", {dataset: {testid: "total-text"}}, text,
        value !== null && a.total.perturbed ? el("strong", {className: "approx",
          dataset: {testid: "approx"}}, "≈") : null,
        value !== null ? el("strong", {dataset: {testid: "total-value"}}, fmt(value)) : null,
        value !== null && SPECharts.spread(a.total)
          ? el("span", {className: "hint"}, ` ±${SPECharts.num(SPECharts.spread(a.total).half)}`)
          : null,
        a.total && a.total.reason ? el("span", {className: "reason cell-reason",
          dataset: {testid: "cell-reason"}}, ` ${a.total.reason}`) : null),
      el("p", {dataset: {testid: "sites"}}, of),
      a.notes.length ? el("ul", {className: "notes", dataset: {testid: "answer-notes"}},
        a.notes.map((t) => el("li", {}, t))) : null);
  }

  const keyOf = (key) => Object.entries(key).sort(([x], [y]) => (x < y ? -1 : 1))
    .map(([k, v]) => `${k}=${v}`).join("|");

  function cellsTable(a, by) {
    const strata = by.length ? by : [...new Set(a.cells.flatMap((c) => Object.keys(c.key)))];
    const answering = a.nodes.filter((n) => n.answer);
    const nodeCell = (n, key) => {
      const c = n.answer.cells.find((x) => keyOf(x.key) === key);
      if (!c) return el("td", {title: "not in this institution's answer"}, "—");
      return el("td", {className: "num", title: c.reason || null}, c.suppressed
        ? `suppressed (fewer than ${n.answer.threshold})`
        : `${c.perturbed ? "≈" : ""}${fmt(c.value)}`);
    };
    if (!a.cells.length) {
      return el("p", {dataset: {testid: "cells-empty"}}, "No cells: no institution listed any.");
    }
    return el("table", {className: "cells", dataset: {testid: "cells-table"}},
      el("caption", {}, `By ${strata.map((s) => STRATA[s] || s).join(" and ")}`),
      el("thead", {}, el("tr", {},
        strata.map((s) => el("th", {scope: "col"}, STRATA[s] || s)),
        answering.map((n) => el("th", {scope: "col"}, n.node_id)),
        el("th", {scope: "col"}, "All institutions"))),
      el("tbody", {}, a.cells.map((c) => {
        const key = keyOf(c.key);
        return el("tr", {dataset: {testid: "cell-row", key}},
          strata.map((s) => el("th", {scope: "row"}, c.key[s] ?? "—")),
          answering.map((n) => nodeCell(n, key)),
          el("td", {className: "num", title: c.reason || null},
            c.perturbed && !c.suppressed ? el("span", {className: "approx"}, "≈") : null,
            el("span", {dataset: {testid: "cell-total"}},
              c.suppressed ? "suppressed" : fmt(c.value))));
      })));
  }

  // The drawing of the answer; a slip in drawing is said in the page, never lost, and the
  // figures above it stay.
  function chart(a) {
    try {
      return SPECharts.draw(a);
    } catch (exc) {
      return el("p", {className: "warning", dataset: {testid: "chart-error"}},
        `The answer could not be drawn: ${(exc && exc.message) || exc}`);
    }
  }

  function renderAnswer(a, sent, datasetSite) {
    const by = (sent && sent.answer && Array.isArray(sent.answer.by)) ? sent.answer.by : [];
    fill($("answer"),
      el("table", {className: "nodes", dataset: {testid: "node-table"}},
        el("caption", {}, "Each institution"),
        el("thead", {}, el("tr", {},
          ["Institution", "Status", "Time", "Answer", "Notes"].map((h) =>
            el("th", {scope: "col"}, h)))),
        el("tbody", {}, a.nodes.map((n) => nodeRow(n, a.kind, datasetSite)))),
      summary(a),
      chart(a),
      a.kind === "stratified" ? cellsTable(a, by) : null,
      el("p", {className: "hint"}, "Query hash (as audited): ",
        el("code", {dataset: {testid: "query-hash"}}, a.query_hash)));
    $("answer").dataset.kind = a.kind;
    $("answer").hidden = false;
  }

  async function run(event, datasetSite) {
    event.preventDefault();
    let body;
    if (edited) {
      try {
        body = JSON.parse($("json").value);
      } catch (exc) {
        showError("The JSON is not valid, nothing was sent:", [exc.message]);
        return;
      }
    } else {
      const built = build();
      if (built.problems.length) {
        showError("The form needs a correction, nothing was sent:", built.problems);
        return;
      }
      body = built.query;
    }
    $("query-error").hidden = true;
    $("answer").hidden = true;
    $("results-empty").hidden = true;
    setBusy(true);
    try {
      const url = permit ? `${root}/api/v1/query?permit=${encodeURIComponent(permit)}`
        : `${root}/api/v1/query`;
      const options = {method: "POST", body: JSON.stringify(body),
        headers: headers({"Content-Type": "application/json", Accept: "application/json"})};
      const answer = await SPEWeb.request(url, options, HUB);
      renderAnswer(answer, body, datasetSite);
    } catch (exc) {
      const messages = [...exc.messages];
      if (exc.status === 401) {
        messages.push("Sign in with a researcher's token.");
        if (token()) {
          session.forget();
          showSignedIn(null);
        }
      }
      showError(permit && exc.status === 403
        ? `The hub refused the query under permit ${permit} (403):` : errorHeading(exc),
      messages);
    } finally {
      setBusy(false);
    }
  }

  // ---- start -------------------------------------------------------------------------------

  function start() {
    const params = new URLSearchParams(window.location.search);
    permit = params.get("permit");
    if (permit) {
      // From a permit's page (spe/permits): the hub checks the permit (a member, active),
      // and each node holding one of its datasets answers with exact counts.
      $("dataset-note").before(el("p", {id: "permit-note", className: "note-box",
        dataset: {testid: "permit-note"}}, `Asking under permit ${permit}: the institutions `
        + "holding its datasets answer with exact counts; the others refuse. ",
      el("a", {href: `${root}/permits/view/${encodeURIComponent(permit)}`}, "The permit")));
      document.title = `Query under permit ${permit} · EHDS SPE`;
    }
    const dataset = params.get("dataset");
    const datasetSite = dataset ? dataset.split("/")[0] : null;
    if (dataset) {
      $("dataset-note").textContent = "Asking all institutions; the dataset's institution is "
        + `${datasetSite} (dataset ${dataset}).`;
      $("dataset-note").hidden = false;
    }

    for (const select of [$("by1"), $("by2")]) {
      fill(select, el("option", {value: ""}, "—"),
        Object.entries(STRATA).map(([value, text]) => el("option", {value}, text)));
    }
    fill($("stat-options"), statBlocks());
    SPEWeb.wireSignIn(session, signedInAs);
    $("add").addEventListener("click", () => {
      addRow().querySelector("select").focus();
      changed();
    });
    // Typing, ticking, choosing: one listener for the whole form (the JSON box aside).
    for (const type of ["input", "change"]) {
      $("builder").addEventListener(type, (event) => {
        if (event.target !== $("json")) changed();
      });
    }
    $("json").addEventListener("input", () => {
      edited = true;
      showJsonState();
    });
    $("rebuild").addEventListener("click", () => {
      edited = false;
      showJsonState();
      changed();
    });
    $("builder").addEventListener("submit", (event) => run(event, datasetSite));

    addRow("patient");
    showJsonState();
    changed();
    // Coming from a permit's page in this tab: its sign-in carries over (checked again).
    const candidate = token() || (permit ? sessionStorage.getItem(PERMITS_TOKEN_KEY) : null);
    if (candidate) session.signIn(candidate).then(signedInAs);
  }

  start();
})();
