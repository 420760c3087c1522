// The code review page for an institution's approvers, over /api/v1/code-reviews: the
// code awaiting their institution (/code-reviews) and one code (/code-reviews?node=&
// permit=&code=) with its files, the diff against the permit's code approved last and the
// decisions so far, approved or rejected with a reason. The page decides nothing: the hub
// and the node do (policies/jobs), and a refusal is shown with its reason.
// Everything from the API is written as text (textContent via el()), never as HTML.
"use strict";

(() => {
  const {root, $, el, fill, errorHeading, showError, hide, signinMessage} = SPEWeb;
  const session = SPEWeb.session("spe.code-reviews.token");
  const {api} = session;
  const when = (text) => SPEWeb.when(text, {seconds: true});
  const short = (sha) => `${sha.slice(0, 12)}…`;
  let me = null;

  const codeUrl = (r) => `${root}/code-reviews?` + new URLSearchParams(
    {node: r.node_id, permit: r.pid, code: r.code_sha256});

  async function changed(who) {
    me = who;
    if (me && !me.roles.includes("approver")) {
      signinMessage("warning", "This token has no approver role: the hub will refuse it.");
    }
    SPEWeb.showSignedIn(me, me && me.institution ? ` of ${me.institution}` : "");
    await render();
  }

  // ---- the list ----------------------------------------------------------------------------

  async function showList() {
    $("view-list").hidden = false;
    if (!me) {
      fill($("reviews"), el("p", {className: "note"}, "Sign in to see your queue."));
      return;
    }
    const reviews = await api("/code-reviews");
    fill($("reviews"), reviews.length === 0
      ? el("p", {className: "note", dataset: {testid: "no-reviews"}},
        "No code awaits your institution's review.")
      : el("table", {dataset: {testid: "review-table"}},
        el("thead", {}, el("tr", {}, ["Permit", "Code (SHA-256)", "Researchers",
          "Waiting jobs", "Approved before"].map((h) => el("th", {scope: "col"}, h)))),
        el("tbody", {}, reviews.map((r) => el("tr", {dataset: {testid: "review-row"}},
          el("td", {}, r.pid),
          el("td", {}, el("a", {href: codeUrl(r), dataset: {testid: "review-link"}},
            short(r.code_sha256))),
          el("td", {}, r.researchers.join(", ")),
          el("td", {}, String(r.jobs.length)),
          el("td", {}, r.previous_sha256 ? short(r.previous_sha256) : "none"))))));
  }

  // ---- one code ----------------------------------------------------------------------------

  function diffLines(text) {
    if (!text) return [el("span", {className: "note"}, "No earlier approved version of this "
      + "permit's code (or no change): the whole code is below.")];
    return text.split("\n").map((line) => el("span", {className: line.startsWith("@@") ? "hunk"
      : line.startsWith("+") && !line.startsWith("+++") ? "add"
        : line.startsWith("-") && !line.startsWith("---") ? "del" : ""}, `${line}\n`));
  }

  function renderCode(d) {
    fill($("code-head"),
      el("dt", {}, "Institution"), el("dd", {dataset: {testid: "code-node"}}, d.node_id),
      el("dt", {}, "Permit"), el("dd", {dataset: {testid: "code-permit"}}, d.pid),
      el("dt", {}, "Code (SHA-256)"), el("dd", {dataset: {testid: "code-sha"}}, d.code_sha256),
      el("dt", {}, "Researchers"), el("dd", {dataset: {testid: "code-researchers"}},
        d.researchers.join(", ") || "none waiting"),
      el("dt", {}, "Waiting jobs"), el("dd", {dataset: {testid: "code-jobs"}},
        d.jobs.map((j) => `${j.job_id} (${when(j.created_at)})`).join(", ") || "none"),
      el("dt", {}, "Diff against"), el("dd", {dataset: {testid: "code-previous"}},
        d.previous_sha256 || "nothing approved before"),
      el("dt", {}, "Decided"), el("dd", {dataset: {testid: "code-decided"}},
        d.decided || "not yet"));
    fill($("diff"), diffLines(d.diff));
    fill($("files"), d.files.map((f) => el("details", {className: "code-file", open: true,
      dataset: {testid: "code-file"}},
    el("summary", {}, `${f.path} (${f.size} bytes)`),
    f.text === null ? el("p", {className: "note"}, f.note || "not shown")
      : el("pre", {tabindex: "0"}, f.text))));
    fill($("decisions"), d.decisions.length === 0
      ? el("p", {className: "note"}, "None yet.")
      : el("ul", {}, d.decisions.map((x) => el("li", {dataset: {testid: "decision"}},
        `${when(x.decided_at)}: ${x.approver} ${x.decision === "approve" ? "approved"
          : "rejected"} ${short(x.code_sha256)}: ${x.reason}`))));
    $("decide-form").hidden = d.jobs.length === 0;
  }

  let current = null;

  async function showCode(node, permit, code) {
    $("view-code").hidden = false;
    $("page-title").textContent = `Code review: ${short(code)}`;
    if (!me) {
      fill($("code-head"), el("p", {className: "note"}, "Sign in to review this code."));
      return;
    }
    current = {node, permit, code};
    renderCode(await api(`/code-reviews/${encodeURIComponent(node)}/`
      + `${encodeURIComponent(permit)}/${encodeURIComponent(code)}`));
  }

  async function decide(decision) {
    hide($("decide-error"));
    fill($("decide-result"));
    const reason = $("f-reason").value.trim();
    if (!reason) {
      showError($("decide-error"), "Not sent:", ["Give a reason: the researcher reads it."]);
      return;
    }
    for (const id of ["approve", "reject"]) $(id).disabled = true;
    try {
      const {node, permit, code} = current;
      const out = await api(`/code-reviews/${encodeURIComponent(node)}/`
        + `${encodeURIComponent(permit)}/${encodeURIComponent(code)}`,
      {method: "POST", body: {decision, reason}});
      fill($("decide-result"), el("p", {dataset: {testid: "decided"}}, decision === "approve"
        ? `Approved: ${out.released.length} waiting job(s) sent to the workers.`
        : `Rejected: ${out.failed.length} waiting job(s) failed with your reason.`));
      await showCode(node, permit, code);
    } catch (exc) {
      showError($("decide-error"), errorHeading(exc, "Not decided"), exc.messages);
    } finally {
      for (const id of ["approve", "reject"]) $(id).disabled = false;
    }
  }

  // ---- start -------------------------------------------------------------------------------

  async function render() {
    for (const id of ["view-list", "view-code"]) $(id).hidden = true;
    hide($("page-error"));
    const params = new URLSearchParams(window.location.search);
    const code = params.get("code");
    await SPEWeb.loadView(() => (code
      ? showCode(params.get("node") || "", params.get("permit") || "", code) : showList()));
  }

  async function start() {
    SPEWeb.wireSignIn(session, changed);
    $("approve").addEventListener("click", () => decide("approve"));
    $("reject").addEventListener("click", () => decide("reject"));
    const candidate = session.token();
    await changed(candidate ? await session.signIn(candidate) : null);
  }

  start();
})();
