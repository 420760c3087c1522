// The permit pages: apply for a data permit, review applications for an institution, and
// decide on them as the health data access body, over /api/v1/permits. The view comes from
// the address (/permits, /permits/new, /permits/edit/<pid>, /permits/view/<pid>). The page
// decides nothing: every step goes to the API, and a refusal is shown with its reason.
// Everything from the API is written as text (textContent via el()), never as HTML.
"use strict";

(() => {
  const {root, $, el, fill, errorHeading, showError, hide, when} = SPEWeb;
  const TOKEN_KEY = "spe.permits.token";
  const session = SPEWeb.session(TOKEN_KEY);
  const {token, api} = session;

  // ---- words -------------------------------------------------------------------------------

  // EHDS Art. 53(1): the purposes for which data may be processed for secondary use.
  const PURPOSES = [
    ["public_health", "(a) Public interest in public and occupational health"],
    ["policy_and_regulation", "(b) Policy-making and regulatory activities"],
    ["official_statistics", "(c) Official statistics"],
    ["education", "(d) Education or teaching in health or care"],
    ["scientific_research", "(e) Scientific research in health or care"],
    ["improving_care", "(f) Improving the delivery of care and treatment"],
  ];
  const purposeLabel = (v) => (PURPOSES.find(([k]) => k === v) || [v, v])[1];
  const STATUS = {draft: "draft", submitted: "submitted", changes_requested: "changes requested",
    rejected: "rejected", approved: "approved", refused: "refused",
    not_yet_active: "not yet active", active: "active", expired: "expired",
    suspended: "suspended", revoked: "revoked"};
  const REVIEW = {approve: "approved", reject: "rejected", changes: "asked for changes"};
  const DECISIONS = {
    issue: {label: "Issue the permit", done: "The permit is issued."},
    refuse: {label: "Refuse the application", done: "The application is refused."},
    suspend: {label: "Suspend the permit", done: "The permit is suspended."},
    resume: {label: "Resume the permit", done: "The permit is resumed."},
    revoke: {label: "Revoke the permit", done: "The permit is revoked."},
  };
  const EDITABLE = ["draft", "changes_requested"];

  function statusBadge(status, testid = "status") {
    return el("span", {className: `status status-${status}`, dataset: {testid}},
      STATUS[status] || status);
  }

  const lines = (text) => text.split("\n").map((s) => s.trim()).filter(Boolean);
  const viewUrl = (pid) => `${root}/permits/view/${encodeURIComponent(pid)}`;
  const editUrl = (pid) => `${root}/permits/edit/${encodeURIComponent(pid)}`;

  // ---- sign-in -------------------------------------------------------------------------------

  let me = null;

  // Signed in (a token checked against /api/v1/me) or out: the page follows.
  async function changed(who) {
    me = who;
    SPEWeb.showSignedIn(me, me && me.institution ? ` at ${me.institution}` : "");
    if (me) $("my-id").textContent = me.id;
    await render();
  }

  const has = (role) => Boolean(me && me.roles.includes(role));

  // ---- /permits: the lists -------------------------------------------------------------------

  function permitTable(permits, testid, {applicant = true} = {}) {
    if (!permits.length) {
      return el("p", {className: "note", dataset: {testid: `${testid}-empty`}}, "None.");
    }
    return el("table", {className: "permits", dataset: {testid}},
      el("thead", {}, el("tr", {},
        ["Application", "Title", applicant ? "Applicant" : null, "Status", "Institutions",
          "Updated"].filter(Boolean).map((h) => el("th", {scope: "col"}, h)))),
      el("tbody", {}, permits.map((p) => el("tr",
        {dataset: {testid: "permit-row", pid: p.id, status: p.status}},
        el("th", {scope: "row"}, el("a", {href: viewUrl(p.id), dataset: {testid: "permit-link"}},
          p.id)),
        el("td", {}, p.title),
        applicant ? el("td", {}, p.applicant) : null,
        el("td", {}, statusBadge(p.status)),
        el("td", {}, p.institutions.map((n) => el("span", {
          className: p.waiting_for.includes(n) ? "inst waiting" : "inst",
          title: p.waiting_for.includes(n) ? "still to review" : null,
        }, n, p.waiting_for.includes(n) ? " (to review)" : ""))),
        el("td", {}, when(p.updated_at))))));
  }

  function listSection(id, heading, note, content) {
    return el("section", {className: "panel", "aria-labelledby": `${id}-heading`,
      dataset: {testid: id}},
    el("h2", {id: `${id}-heading`}, heading),
    note ? el("p", {className: "hint"}, note) : null,
    content);
  }

  async function showNotifications() {
    const notes = await api("/notifications");
    $("notes-empty").hidden = notes.length > 0;
    fill($("notes"), notes.map((n) => {
      // The message starts with the permit's id ("P-2026-1a2b3c4d (title): ...").
      const pid = n.permit || (/^(P-\d{4}-[0-9a-f]+)\b/.exec(n.message) || [])[1];
      return el("li", {dataset: {testid: "notification"}, className: n.read_at ? "read" : null},
        el("span", {className: "when"}, when(n.created_at)), " ",
        pid ? el("a", {href: viewUrl(pid)}, n.message) : n.message);
    }));
  }

  async function showLists() {
    $("page-title").textContent = "Applications and permits";
    $("view-list").hidden = false;
    if (!me) {
      fill($("lists"), el("p", {className: "note", dataset: {testid: "signin-needed"}},
        "Sign in to see your applications, your institution's review queue or the access "
        + "body's decisions."));
      $("view-list").querySelector('[data-testid="notifications"]').hidden = true;
      return;
    }
    $("view-list").querySelector('[data-testid="notifications"]').hidden = false;
    const sections = [];
    const inst = me.institution;
    if (has("researcher") || !(has("approver") || has("hdab"))) {
      const mine = await api("/permits?mine=true");
      sections.push(listSection("list-mine", "My applications",
        "Applications you made or are named on.",
        el("div", {}, permitTable(mine, "mine-table", {applicant: false}),
          el("p", {}, el("a", {href: `${root}/permits/new`, className: "button primary",
            dataset: {testid: "new-application"}}, "New application")))));
    }
    if (has("approver") && inst) {
      // Every state but draft (drafts are the applicant's alone).
      const statuses = Object.keys(STATUS).filter((s) => !["draft", "active",
        "not_yet_active", "expired"].includes(s)).concat("issued");
      const all = await api(`/permits?${statuses.map((s) => `status=${s}`).join("&")}`);
      const queue = all.filter((p) => p.status === "submitted" && p.waiting_for.includes(inst));
      sections.push(listSection("list-queue", `Waiting for ${inst}'s review`,
        `Submitted applications asking for ${inst}'s data that ${inst} has not reviewed yet.`,
        permitTable(queue, "queue-table")));
      sections.push(listSection("list-institution", `Every application for ${inst}'s data`,
        null, permitTable(all, "institution-table")));
    }
    if (has("hdab")) {
      const waiting = await api("/permits?status=approved");
      const permits = await api("/permits?status=issued&status=suspended");
      sections.push(listSection("list-decide", "Awaiting the access body's decision",
        "Approved by every institution holding a requested dataset.",
        permitTable(waiting, "decide-table")));
      sections.push(listSection("list-permits", "Permits",
        "Issued permits (active, not yet active or expired) and suspended ones.",
        permitTable(permits, "permits-table")));
    }
    fill($("lists"), sections);
    await showNotifications();
  }

  // ---- /permits/new, /permits/edit/<pid>: the application ----------------------------------

  let editing = null;  // the application's id once saved
  let lastSaved = null;  // the form as last saved (a PATCH sends only what changed)

  const field = (name) => $(`f-${name}`);

  function formKind() {
    const checked = document.querySelector('input[name="form"]:checked');
    return checked ? checked.value : "anonymised";
  }

  function showJustification() {
    $("justification-field").hidden = formKind() !== "pseudonymised";
  }

  function readForm() {
    const body = {};
    for (const name of ["organisation", "title", "summary", "purpose", "legal_basis",
      "ethics_reference"]) body[name] = field(name).value.trim();
    body.declaration = field("declaration").checked;
    body.form = formKind();
    body.justification = body.form === "pseudonymised" ? field("justification").value.trim()
      : "";
    for (const name of ["start_date", "end_date"]) {
      if (field(name).value) body[name] = field(name).value;
    }
    body.members = lines(field("members").value);
    body.datasets = lines(field("datasets").value);
    return body;
  }

  function writeForm(p) {
    for (const name of ["organisation", "title", "summary", "purpose", "legal_basis",
      "ethics_reference", "justification", "start_date", "end_date"]) {
      field(name).value = p[name] || "";
    }
    field("declaration").checked = Boolean(p.declaration);
    const radio = document.querySelector(`input[name="form"][value="${p.form}"]`);
    if (radio) radio.checked = true;
    field("members").value = p.members.filter((m) => m !== p.applicant).join("\n");
    field("datasets").value = p.datasets.map((d) => d.dataset).join("\n");
    showJustification();
  }

  function clearFieldErrors() {
    for (const node of $("view-form").querySelectorAll(".field-error")) node.remove();
    for (const node of $("view-form").querySelectorAll("[aria-invalid]")) {
      node.removeAttribute("aria-invalid");
    }
  }

  // A 422's messages also go next to the fields they name.
  function markFields(exc) {
    if (!Array.isArray(exc.detail)) return;
    for (const d of exc.detail) {
      const loc = (d.loc || []).filter((p) => p !== "body");
      const input = loc.length ? field(String(loc[0])) : null;
      if (!input) continue;
      input.setAttribute("aria-invalid", "true");
      input.closest(".field").append(el("p", {className: "field-error",
        dataset: {testid: `error-${loc[0]}`}}, String(d.msg || "").replace(/^Value error, /, "")));
    }
  }

  function formOk(...children) {
    fill($("form-ok"), el("p", {}, ...children));
    $("form-ok").hidden = false;
  }

  function savedAs(pid) {
    editing = pid;
    window.history.replaceState(null, "", editUrl(pid));
    $("form-heading").textContent = `Application ${pid}`;
    $("form-state").textContent = "A draft: only you see it until you submit it.";
  }

  // Save the form: a new draft (POST), or only what changed since the last save (PATCH).
  async function save() {
    const body = readForm();
    if (!editing) {
      const out = await api("/permits", {method: "POST", body});
      savedAs(out.id);
      lastSaved = body;
      return out.id;
    }
    const changes = Object.fromEntries(Object.entries(body).filter(([key, value]) =>
      !lastSaved || JSON.stringify(value) !== JSON.stringify(lastSaved[key])));
    if (Object.keys(changes).length) {
      await api(`/permits/${encodeURIComponent(editing)}`, {method: "PATCH", body: changes});
    }
    lastSaved = body;
    return editing;
  }

  function setFormBusy(on) {
    $("save").disabled = on;
    $("submit").disabled = on;
    $("view-form").setAttribute("aria-busy", on ? "true" : "false");
  }

  async function onSave() {
    hide($("form-error"), $("form-ok"));
    clearFieldErrors();
    setFormBusy(true);
    try {
      const pid = await save();
      formOk(`Draft ${pid} saved. `, el("a", {href: viewUrl(pid),
        dataset: {testid: "saved-link"}}, "See the application"));
    } catch (exc) {
      markFields(exc);
      showError($("form-error"), errorHeading(exc, "Not saved"), exc.messages);
    } finally {
      setFormBusy(false);
    }
  }

  async function onSubmit(event) {
    event.preventDefault();
    hide($("form-error"), $("form-ok"));
    clearFieldErrors();
    setFormBusy(true);
    let saved = null;
    try {
      saved = await save();
      await api(`/permits/${encodeURIComponent(saved)}/submit`, {method: "POST"});
      window.location.assign(viewUrl(saved));
    } catch (exc) {
      markFields(exc);
      const what = saved ? `Saved as draft ${saved}, but not submitted` : "Not saved";
      showError($("form-error"), errorHeading(exc, what), exc.messages);
      setFormBusy(false);
    }
  }

  async function showForm(pid) {
    $("view-form").hidden = false;
    $("page-title").textContent = pid ? "Edit the application" : "Apply for a data permit";
    $("f-my-id").textContent = me ? me.id : "shown once you sign in";
    if (!me) {
      $("form-state").textContent = "Sign in (above) to save or submit the application.";
    }
    if (!pid) return;
    savedAs(pid);
    const p = await api(`/permits/${encodeURIComponent(pid)}`);
    writeForm(p);
    lastSaved = readForm();
    $("form-state").textContent = EDITABLE.includes(p.status)
      ? `Status: ${STATUS[p.status] || p.status}. Edit, save, and submit when ready.`
      : `Status: ${STATUS[p.status] || p.status}: this application can no longer be edited.`;
  }

  function prepareForm() {
    fill(field("purpose"), PURPOSES.map(([value, text]) => el("option", {value}, text)));
    field("purpose").value = "scientific_research";
    const today = new Date();
    const iso = (d) => d.toISOString().slice(0, 10);
    field("start_date").value = iso(today);
    field("end_date").value = iso(new Date(today.getTime() + 364 * 86400 * 1000));
    const params = new URLSearchParams(window.location.search);
    field("datasets").value = params.getAll("dataset").join("\n");
    for (const radio of document.querySelectorAll('input[name="form"]')) {
      radio.addEventListener("change", showJustification);
    }
    $("save").addEventListener("click", onSave);
    $("view-form").addEventListener("submit", onSubmit);
    showJustification();
  }

  // ---- /permits/view/<pid>: one application ---------------------------------------------------

  function fact(label, value, testid) {
    return [el("dt", {}, label), el("dd", {dataset: {testid}}, value === "" ? "—" : value)];
  }

  function reviewsOf(p) {
    if (!p.reviews.length) {
      return el("p", {className: "note", dataset: {testid: "no-reviews"}},
        "No review of this revision yet.");
    }
    return el("ul", {className: "reviews"}, p.reviews.map((r) => el("li",
      {dataset: {testid: "review", node: r.node_id, decision: r.decision}},
      el("p", {}, el("strong", {}, r.node_id), " ",
        el("span", {className: `review review-${r.decision}`}, REVIEW[r.decision] || r.decision),
        ` by ${r.reviewer}, ${when(r.at)}`),
      r.reason ? el("p", {dataset: {testid: "review-reason"}}, `Reason: ${r.reason}`) : null,
      r.conditions.length ? el("div", {}, el("p", {}, "Conditions:"),
        el("ul", {dataset: {testid: "review-conditions"}},
          r.conditions.map((c) => el("li", {}, c)))) : null)));
  }

  function institutionsOf(p) {
    const by = Object.fromEntries(p.reviews.map((r) => [r.node_id, r.decision]));
    return el("table", {className: "permits", dataset: {testid: "institutions"}},
      el("caption", {}, `Institutions reviewing (revision ${p.revision})`),
      el("thead", {}, el("tr", {}, ["Institution", "Review"].map((h) =>
        el("th", {scope: "col"}, h)))),
      el("tbody", {}, p.institutions.map((n) => {
        const state = by[n] ? REVIEW[by[n]] || by[n]
          : p.waiting_for.includes(n) ? "still to review" : "—";
        return el("tr", {dataset: {testid: "institution-row", node: n}},
          el("th", {scope: "row"}, n), el("td", {dataset: {testid: "institution-review"}},
            state));
      })));
  }

  function historyOf(p) {
    return el("table", {className: "permits history", dataset: {testid: "history"}},
      el("caption", {}, "History"),
      el("thead", {}, el("tr", {}, ["When", "Who", "What", "Status", "Reason"].map((h) =>
        el("th", {scope: "col"}, h)))),
      el("tbody", {}, p.events.map((e) => el("tr",
        {dataset: {testid: "event-row", action: e.action}},
        el("td", {}, when(e.at)), el("td", {}, e.actor), el("td", {}, e.action),
        el("td", {}, e.from_status === e.to_status ? STATUS[e.to_status] || e.to_status
          : `${STATUS[e.from_status] || e.from_status} → ${STATUS[e.to_status] || e.to_status}`),
        el("td", {}, e.reason || "—")))));
  }

  function renderPermit(p) {
    $("page-title").textContent = `Application ${p.id}`;
    // Only the people named on it may ask under it (the hub checks that again).
    const active = p.status === "active" && Boolean(me) && p.members.includes(me.id);
    fill($("permit"),
      el("header", {className: "permit-head"},
        el("h2", {dataset: {testid: "permit-title"}}, p.title),
        el("p", {}, el("code", {dataset: {testid: "permit-id"}}, p.id), " ",
          statusBadge(p.status, "permit-status")),
        p.waiting_for.length ? el("p", {dataset: {testid: "waiting-for"}},
          `Still to review: ${p.waiting_for.join(", ")}.`) : null,
        active ? el("p", {}, el("a", {href: `${root}/query?permit=${encodeURIComponent(p.id)}`,
          className: "button primary", dataset: {testid: "ask-under-permit"}},
        "Ask a federated question under this permit"), " ",
        el("a", {href: `${root}/jobs?permit=${encodeURIComponent(p.id)}`,
          className: "button", dataset: {testid: "job-under-permit"}},
        "Send a job under this permit")) : null),
      el("section", {className: "panel", "aria-label": "The application"},
        el("dl", {className: "facts", dataset: {testid: "facts"}},
          fact("Applicant", p.applicant, "applicant"),
          fact("Team", p.members.filter((m) => m !== p.applicant).join(", ") || "—", "members"),
          fact("Organisation", p.organisation, "organisation"),
          fact("Purpose", purposeLabel(p.purpose), "purpose"),
          fact("Art. 54 declaration", p.declaration
            ? "declared: no prohibited use is intended" : "not declared", "declaration"),
          fact("Legal basis", p.legal_basis, "legal-basis"),
          fact("Form of the data", p.form, "form"),
          p.form === "pseudonymised" ? fact("Justification", p.justification, "justification")
            : null,
          fact("Ethics reference", p.ethics_reference, "ethics"),
          fact("Period", `${p.start_date} to ${p.end_date}`, "period"),
          fact("Revision", String(p.revision), "revision"),
          fact("Summary", p.summary, "summary"),
          p.conditions.length ? fact("Conditions", el("ul", {},
            p.conditions.map((c) => el("li", {}, c))), "conditions") : null,
          p.decision_reason ? fact("Access body's reason", p.decision_reason,
            "decision-reason") : null)),
      el("section", {className: "panel", "aria-label": "Datasets and reviews"},
        el("h3", {}, "Datasets"),
        el("table", {className: "permits", dataset: {testid: "datasets"}},
          el("thead", {}, el("tr", {}, ["Dataset", "Held by"].map((h) =>
            el("th", {scope: "col"}, h)))),
          el("tbody", {}, p.datasets.map((d) => el("tr", {dataset: {testid: "dataset-row"}},
            el("td", {}, el("a", {href: `${root}/catalogue/datasets/${d.dataset}`}, d.dataset)),
            el("td", {}, d.node_id))))),
        institutionsOf(p),
        el("h3", {}, "Reviews"),
        reviewsOf(p)),
      el("section", {className: "panel", "aria-label": "History"}, historyOf(p)));
  }

  function actionOk(text, pushed) {
    const entries = Object.entries(pushed || {}).sort(([a], [b]) => (a < b ? -1 : 1));
    fill($("action-ok"), el("p", {dataset: {testid: "action-done"}}, text),
      entries.length ? el("div", {}, el("p", {}, "The permit's signed document went to the "
        + "institutions holding its datasets:"),
      el("ul", {dataset: {testid: "pushed"}}, entries.map(([node, outcome]) => el("li",
        {dataset: {testid: "pushed-node", node, outcome}}, `${node}: ${outcome}`)))) : null);
    $("action-ok").hidden = false;
  }

  // Run one action: the API's answer replaces the page's copy, a refusal is shown.
  async function act(button, call, done) {
    hide($("action-error"), $("action-ok"));
    const buttons = [...$("actions").querySelectorAll("button")];
    buttons.forEach((b) => { b.disabled = true; });
    $("actions-panel").setAttribute("aria-busy", "true");
    try {
      const out = await call();
      renderPermit(out);
      renderActions(out);
      actionOk(done, out.pushed);
    } catch (exc) {
      buttons.forEach((b) => { b.disabled = false; });
      showError($("action-error"), errorHeading(exc), exc.messages);
    } finally {
      $("actions-panel").setAttribute("aria-busy", "false");
    }
  }

  function applicantActions(p, pid) {
    if (!p || p.applicant !== me.id) return null;
    if (!EDITABLE.includes(p.status)) return null;
    return el("div", {className: "action", dataset: {testid: "applicant-actions"}},
      el("h3", {}, "Your application"),
      el("p", {className: "row"},
        el("a", {href: editUrl(pid), className: "button", dataset: {testid: "edit-application"}},
          "Edit the application"),
        el("button", {type: "button", dataset: {testid: "submit-application"},
          onclick: (e) => act(e.target, () => api(`/permits/${encodeURIComponent(pid)}/submit`,
            {method: "POST"}), "The application is submitted.")}, "Submit")));
  }

  function reviewForm(p, pid) {
    const inst = me.institution;
    if (!has("approver") || !inst) return null;
    if (p && !(p.status === "submitted" && p.waiting_for.includes(inst))) {
      const done = p.reviews.find((r) => r.node_id === inst);
      return done ? el("p", {className: "note", dataset: {testid: "reviewed-note"}},
        `${inst} has reviewed this revision (${REVIEW[done.decision] || done.decision}).`)
        : null;
    }
    // Not readable (p is null), or waiting for this institution: the API decides.
    const id = (s) => `review-${s}`;
    const choice = (value, text) => el("label", {className: "inline"},
      el("input", {type: "radio", name: "decision", value, checked: value === "approve",
        dataset: {testid: `review-${value}`}}), ` ${text}`);
    const form = el("form", {className: "action", dataset: {testid: "review-form"}},
      el("h3", {}, `Review for ${inst}`),
      el("fieldset", {}, el("legend", {}, "Decision"),
        el("div", {className: "row"}, choice("approve", "Approve"), choice("reject", "Reject"),
          choice("changes", "Ask for changes"))),
      el("div", {className: "field"},
        el("label", {for: id("reason")}, "Reason"),
        el("p", {className: "hint", id: id("reason-hint")},
          "Needed to reject or to ask for changes; the applicant reads it."),
        el("textarea", {id: id("reason"), rows: 3, "aria-describedby": id("reason-hint"),
          dataset: {testid: "review-reason-input"}})),
      el("div", {className: "field"},
        el("label", {for: id("conditions")}, "Conditions"),
        el("p", {className: "hint", id: id("conditions-hint")},
          "One per line, if approving on conditions; they become the permit's."),
        el("textarea", {id: id("conditions"), rows: 3, "aria-describedby": id("conditions-hint"),
          dataset: {testid: "review-conditions-input"}})),
      el("button", {type: "submit", dataset: {testid: "send-review"}},
        `Send ${inst}'s review`));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const body = {decision: form.querySelector('input[name="decision"]:checked').value,
        reason: $(id("reason")).value.trim(), conditions: lines($(id("conditions")).value)};
      act(event.submitter, () => api(`/permits/${encodeURIComponent(pid)}/reviews`,
        {method: "POST", body}), `${inst}'s review is recorded: ${REVIEW[body.decision]}.`);
    });
    return form;
  }

  function decisionActions(p, pid) {
    if (!has("hdab") || !p) return null;
    const offered = {
      approved: ["issue", "refuse"], submitted: ["refuse"], changes_requested: ["refuse"],
      active: ["suspend", "revoke"], not_yet_active: ["revoke"], expired: [],
      suspended: ["resume", "revoke"],
    }[p.status] || [];
    if (!offered.length) return null;
    const reason = el("textarea", {id: "decision-reason", rows: 3,
      "aria-describedby": "decision-reason-hint", dataset: {testid: "decision-reason"}});
    return el("div", {className: "action", dataset: {testid: "decision-actions"}},
      el("h3", {}, "The access body's decision"),
      el("div", {className: "field"},
        el("label", {for: "decision-reason"}, "Reason"),
        el("p", {className: "hint", id: "decision-reason-hint"},
          "Recorded in the history and sent to the applicant."), reason),
      el("p", {className: "row"}, offered.map((action) => el("button", {
        type: "button", className: action === "issue" || action === "resume" ? "primary"
          : action === "revoke" || action === "refuse" ? "danger" : null,
        dataset: {testid: `decide-${action}`},
        onclick: (e) => act(e.target, () => api(
          `/permits/${encodeURIComponent(pid)}/${action}`,
          {method: "POST", body: {reason: reason.value.trim()}}), DECISIONS[action].done),
      }, DECISIONS[action].label))));
  }

  function renderActions(p) {
    const pid = p ? p.id : currentPid;
    const parts = me ? [applicantActions(p, pid), reviewForm(p, pid), decisionActions(p, pid)]
      .filter(Boolean) : [];
    fill($("actions"), parts.length ? parts : el("p", {className: "note",
      dataset: {testid: "no-actions"}}, me ? "Nothing for you to do here now."
      : "Sign in to act on this application."));
    $("actions-panel").hidden = false;
  }

  let currentPid = null;

  async function showOne(pid) {
    currentPid = pid;
    $("view-one").hidden = false;
    $("page-title").textContent = `Application ${pid}`;
    if (!me) {
      fill($("permit"), el("p", {className: "note", dataset: {testid: "signin-needed"}},
        "Sign in to read this application."));
      renderActions(null);
      return;
    }
    let p = null;
    try {
      p = await api(`/permits/${encodeURIComponent(pid)}`);
    } catch (exc) {
      fill($("permit"));
      showError($("page-error"), errorHeading(exc, "You may not read this application"),
        exc.messages);
      if (exc.status === 404) return;
    }
    if (p) renderPermit(p);
    renderActions(p);
  }

  // ---- start ---------------------------------------------------------------------------------

  async function render() {
    for (const id of ["view-list", "view-form", "view-one", "actions-panel"]) $(id).hidden = true;
    hide($("page-error"), $("action-error"), $("action-ok"));
    const path = window.location.pathname.slice(root.length).replace(/\/+$/, "");
    let m;
    await SPEWeb.loadView(async () => {
      if (path === "/permits") await showLists();
      else if (path === "/permits/new") await showForm(editing);
      else if ((m = /^\/permits\/edit\/([^/]+)$/.exec(path))) {
        await showForm(decodeURIComponent(m[1]));
      } else if ((m = /^\/permits\/view\/([^/]+)$/.exec(path))) {
        await showOne(decodeURIComponent(m[1]));
      } else {
        showError($("page-error"), "Not found:", [`no page at ${path}`]);
      }
    });
  }

  async function start() {
    prepareForm();
    SPEWeb.wireSignIn(session, changed);
    await changed(token() ? await session.signIn(token()) : null);
  }

  start();
})();
