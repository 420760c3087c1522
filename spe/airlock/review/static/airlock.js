// The airlock review page: an output checker's queue of pending requests, one request's
// files with the automatic verdicts, each stored file's content to read, the reviews so
// far, and approve or reject, over /api/v1/airlock. The view comes from the address:
// /airlock (the queue) or /airlock?request=<id> (one request). The page decides nothing:
// every step goes to the API (policies/airlock), and a refusal is shown with its reason.
// Everything from the API, a file's content included, is written as text (textContent via
// el()), never as HTML.
"use strict";

(() => {
  const {root, $, el, fill, ApiError, send, errorHeading, showError, hide, when, bytes,
    pathUrl, reasonList: list} = SPEWeb;
  const TOKEN_KEY = "spe.airlock.token";
  const session = SPEWeb.session(TOKEN_KEY);
  const {token, headers, api} = session;
  const requestUrl = (rid) => `${root}/airlock?request=${encodeURIComponent(rid)}`;

  // ---- words -------------------------------------------------------------------------------

  const STATE = {pending: "pending review", released: "released", rejected: "rejected",
    withheld: "withheld", closed: "closed"};
  const STATE_NOTE = {
    pending: "Under review: two different output checkers must approve; any reject rejects.",
    released: "Released: the requester may download the stored files. No more reviews.",
    rejected: "Rejected: nothing leaves. No more reviews.",
    withheld: "Withheld: the permit was suspended or revoked while the request waited. "
      + "Nothing leaves.",
    closed: "Closed: every file was blocked by the automatic checks, so there is nothing to "
      + "review. Nothing leaves; the requester reads why, per file.",
  };
  // One request per job, a section per site (RequestOut.sites, files' node_id).
  const siteIds = (r) => {
    const ids = r.sites.map((s) => s.node_id);
    for (const f of r.files) if (!ids.includes(f.node_id)) ids.push(f.node_id);
    return ids.sort();  // by institution, not by which one's outputs arrived first
  };
  const APPROVALS_NEEDED = 2;  // policies/airlock's approvals_needed (shown, not enforced)

  function stateBadge(state, testid = "request-state") {
    return el("span", {className: `status state-${state}`, dataset: {testid}},
      STATE[state] || state);
  }

  const verdictBadge = (verdict) => SPEWeb.verdictBadge(verdict, "file-verdict");

  // ---- sign-in -----------------------------------------------------------------------------

  let me = null;

  // Signed in (a token checked against /api/v1/me) or out: the page follows.
  async function changed(who) {
    me = who;
    SPEWeb.showSignedIn(me);
    await render();
  }

  const isChecker = () => Boolean(me && me.roles.includes("output_checker"));

  // ---- /airlock: the queue -----------------------------------------------------------------

  function queueTable(requests) {
    if (!requests.length) {
      return el("p", {className: "note", dataset: {testid: "queue-empty"}},
        isChecker() ? "Nothing waiting for review." : "No requests.");
    }
    return el("table", {className: "requests", dataset: {testid: "queue-table"}},
      el("thead", {}, el("tr", {}, ["Request", "Institutions", "Job", "Permit", "Requester",
        "Created", "Files", "Approvals", "State"].map((h) => el("th", {scope: "col"}, h)))),
      el("tbody", {}, requests.map((r) => {
        const stored = r.files.filter((f) => f.stored).length;
        const approvals = new Set(r.reviews.filter((v) => v.decision === "approve")
          .map((v) => v.reviewer)).size;
        return el("tr", {dataset: {testid: "request-row", rid: r.id,
          sites: siteIds(r).join(" "), job: r.job_id, state: r.state}},
        el("th", {scope: "row"}, el("a", {href: requestUrl(r.id),
          dataset: {testid: "request-link"}}, r.id.slice(0, 12))),
        el("td", {dataset: {testid: "request-sites"}}, siteIds(r).join(", ")
          + (r.awaiting.length ? ` (awaiting ${r.awaiting.join(", ")})` : "")),
        el("td", {}, el("a", {href: `${root}/jobs?job=${encodeURIComponent(r.job_id)}`,
          title: r.job_id}, el("code", {}, r.job_id.slice(0, 12)))),
        el("td", {}, r.pid),
        el("td", {}, r.requester),
        el("td", {className: "nowrap"}, when(r.created_at)),
        el("td", {}, isChecker() ? `${stored} stored, ${r.files.length - stored} blocked`
          : r.state === "released" ? `${stored} released` : "named once released"),
        el("td", {className: "num"}, `${approvals} of ${APPROVALS_NEEDED}`),
        el("td", {}, stateBadge(r.state), r.review_note && r.state === "pending"
          ? el("span", {className: "note", title: r.review_note,
            dataset: {testid: "review-again"}}, " review again: a later site voided the "
            + "earlier reviews") : null));
      })));
  }

  async function showQueue() {
    $("view-queue").hidden = false;
    $("page-title").textContent = "Airlock review";
    if (!me) {
      $("queue-heading").textContent = "Requests";
      fill($("queue"), el("p", {className: "note", dataset: {testid: "signin-needed"}},
        "Sign in to see the requests waiting for review."));
      return;
    }
    $("queue-heading").textContent = isChecker() ? "Pending requests" : "Your requests";
    $("queue-hint").textContent = isChecker()
      ? "Every request waiting for an output checker, newest first. You may not review "
        + "outputs you asked for or of a permit you are named on."
      : "The airlock requests of your jobs' outputs.";
    fill($("queue"), queueTable(await api("/airlock/requests")));
  }

  // ---- /airlock?request=<id>: one request ---------------------------------------------------

  let current = null;  // the request on the page (RequestOut)

  function fact(label, value, testid) {
    return [el("dt", {}, label), el("dd", {dataset: {testid}},
      value === "" || value === null || value === undefined ? "—" : value)];
  }

  function dataUrl(blob) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.addEventListener("load", () => resolve(String(reader.result)));
      reader.addEventListener("error", () => reject(new ApiError(0, "read",
        "the figure could not be read")));
      reader.readAsDataURL(blob);
    });
  }

  // ---- places: where the automatic checks point (never what they found) --------------------

  const PLACES_SHOWN = 20;

  function placeText(p) {
    const where = [p.line != null ? `line ${p.line}` : "", p.column != null ? `column ${p.column}`
      : ""].filter(Boolean).join(", ");
    return `${where || "the whole file"}: ${p.rule}`;
  }

  function placeList(places) {
    if (!places || !places.length) return "—";
    const shown = places.slice(0, PLACES_SHOWN).map((p) => el("li", {
      dataset: {testid: "place", rule: p.rule, line: p.line ?? "", column: p.column ?? ""}},
    placeText(p)));
    if (places.length > PLACES_SHOWN) {
      shown.push(el("li", {className: "note"}, `and ${places.length - PLACES_SHOWN} more`));
    }
    return el("ul", {className: "reasons", dataset: {testid: "file-places"}}, shown);
  }

  // A text file's lines, those the checks point at marked (and titled with their rules and
  // columns), so the checker finds them; every line is written as text, never as HTML.
  function markedLines(text, places) {
    const byLine = new Map();
    for (const p of places || []) {
      if (p.line == null) continue;
      if (!byLine.has(p.line)) byLine.set(p.line, []);
      byLine.get(p.line).push(placeText(p));
    }
    const lines = text.split("\n");
    return lines.map((line, i) => {
      const marks = byLine.get(i + 1);
      const shown = i < lines.length - 1 ? `${line}\n` : line;
      return el("span", marks ? {className: "flagged", title: marks.join("; "),
        dataset: {testid: "flagged-line", line: String(i + 1)}} : {}, shown);
    });
  }

  async function viewContent(file, button) {
    const path = file.name;  // <site>/<path>
    hide($("content-error"));
    button.disabled = true;
    try {
      const resp = await send(`${root}/api/v1/airlock/requests/${encodeURIComponent(
        current.id)}/inspect/${pathUrl(path)}`, {headers: headers({Accept: "text/plain"})});
      const type = resp.headers.get("Content-Type") || "";
      $("content-path").textContent = path;
      if (type.startsWith("image/")) {
        // A figure: shown as a data: URL (the page's CSP allows images from data: only).
        const url = await dataUrl(await resp.blob());
        fill($("content"), el("img", {src: url, alt: `The figure ${path}`,
          dataset: {testid: "file-image"}}));
      } else if (type.startsWith("application/pdf")) {
        const blob = await resp.blob();
        fill($("content"), `A PDF of ${bytes(blob.size)}: not shown here; its text was `
          + "scanned by the automatic checks.");
      } else {
        fill($("content"), markedLines(await resp.text(), file.places));
      }
      $("content-panel").hidden = false;
      $("content-panel").scrollIntoView({block: "nearest"});
    } catch (exc) {
      $("content-panel").hidden = true;
      showError($("content-error"), errorHeading(exc, `${path} cannot be shown`),
        exc.messages);
    } finally {
      button.disabled = false;
    }
  }

  function filesTable(r) {
    if (!r.files.length && !r.sites.length) {  // a requester sees no file before release
      return el("p", {className: "note"}, isChecker() || r.state === "released"
        ? "The job wrote no files." : "The files are named here once released.");
    }
    return siteIds(r).map((node) => siteSection(r, node));
  }

  // One site's section: its report-wide reasons and its files.
  function siteSection(r, node) {
    const site = r.sites.find((s) => s.node_id === node) || {reasons: []};
    const files = r.files.filter((f) => f.node_id === node);
    return el("section", {className: "site", dataset: {testid: "site-section", node}},
      el("h3", {}, `Outputs of ${node}`, site.at ? ` (arrived ${when(site.at)})` : ""),
      // A part that did not succeed sent its log alone: it has no outputs, and the log's
      // verdict is the log's, not the part's.
      site.outcome && site.outcome !== "collected" ? el("p", {className: "note",
        dataset: {testid: "site-outcome"}}, site.outcome) : null,
      site.reasons.length ? el("div", {}, el("p", {}, "Blocking this site's outputs:"),
        list(site.reasons, "site-reasons")) : null,
      files.length ? siteFiles(files, node) : el("p", {className: "note"},
        isChecker() || r.state === "released" || r.state === "closed"
          ? "No files from this site." : "The files are named here once released."));
  }

  function siteFiles(files, node) {
    return el("table", {className: "files", dataset: {testid: "files", node}},
      el("caption", {}, `Files of ${node}`),
      el("thead", {}, el("tr", {}, ["File", "Kind", "Size", "SHA-256", "Verdict", "Reasons",
        "Where", "Notes", "Content"].map((h) => el("th", {scope: "col"}, h)))),
      el("tbody", {}, files.map((f) => el("tr", {dataset: {testid: "file-row",
        path: f.path, node: f.node_id, name: f.name, verdict: f.verdict,
        stored: String(f.stored)}},
      el("th", {scope: "row"}, el("code", {}, f.path)),
      el("td", {}, f.kind || "—"),
      el("td", {className: "num", dataset: {testid: "file-size"}}, bytes(f.size)),
      el("td", {dataset: {testid: "file-sha256"}}, f.sha256
        ? el("code", {className: "sha", title: f.sha256}, f.sha256) : "—"),
      el("td", {}, verdictBadge(f.verdict)),
      el("td", {}, list(f.reasons, "file-reasons")),
      el("td", {}, placeList(f.places)),
      el("td", {}, list(f.notes, "file-notes")),
      el("td", {}, f.stored && isChecker()
        ? el("button", {type: "button", dataset: {testid: "view-content", path: f.path,
          name: f.name}, onclick: (e) => viewContent(f, e.currentTarget)}, "View content")
        : f.stored ? el("span", {className: "note"}, "kept")
          : el("span", {className: "note", dataset: {testid: "not-stored"}},
            "not stored: never leaves"))))));
  }

  function reviewItems(reviews, testid) {
    return reviews.map((v) => el("li", {dataset: {testid, decision: v.decision}},
      el("p", {}, el("span", {className: `review review-${v.decision}`},
        v.decision === "approve" ? "approved" : "rejected"), ` by ${v.reviewer}, ${when(v.at)}`),
      v.reason ? el("p", {dataset: {testid: "review-reason-text"}}, `Reason: ${v.reason}`)
        : null));
  }

  function reviewsOf(r) {
    const out = [];
    if (r.review_note) {  // a site's outputs came after reviews had started
      out.push(el("p", {className: "warning", role: "status",
        dataset: {testid: "review-note"}}, r.review_note));
    }
    out.push(r.reviews.length
      ? el("ul", {className: "reviews", dataset: {testid: "reviews"}},
        reviewItems(r.reviews, "review"))
      : el("p", {className: "note", dataset: {testid: "no-reviews"}}, "No review yet."));
    if (r.void_reviews.length) {
      out.push(el("details", {dataset: {testid: "void-reviews"}},
        el("summary", {}, `${r.void_reviews.length} earlier review(s), void`),
        el("ul", {className: "reviews void"}, reviewItems(r.void_reviews, "void-review"))));
    }
    return out;
  }

  // Why the caller cannot review (null: they can): the buttons are shown only when the
  // API would take a review; it decides anyway (policies/airlock).
  function whyNoReview(r) {
    if (!isChecker()) return "Only an output checker reviews.";
    if (r.state !== "pending") {
      return `The request is ${STATE[r.state] || r.state}: no more reviews.`;
    }
    const mine = r.reviews.find((v) => v.reviewer === me.id);
    if (mine) {
      return `You have ${mine.decision === "approve" ? "approved" : "rejected"} this request; `
        + "another output checker gives the second review.";
    }
    return null;
  }

  function renderRequest(r) {
    current = r;
    const approvals = new Set(r.reviews.filter((v) => v.decision === "approve")
      .map((v) => v.reviewer)).size;
    $("page-title").textContent = `Airlock request ${r.id.slice(0, 12)}`;
    fill($("request"),
      el("header", {className: "request-head"},
        el("h2", {}, "Outputs of job ", el("code", {dataset: {testid: "request-job"}}, r.job_id),
          ` at ${siteIds(r).join(", ") || "no site yet"}`),
        el("p", {}, stateBadge(r.state), " ",
          el("span", {dataset: {testid: "approvals"}},
            `${approvals} of ${APPROVALS_NEEDED} approvals`)),
        el("p", {className: "note", dataset: {testid: "state-note"}},
          STATE_NOTE[r.state] || r.state),
        r.awaiting.length ? el("p", {className: "note", dataset: {testid: "awaiting"}},
          `Still to come: the outputs of ${r.awaiting.join(", ")}. Nothing is released `
          + "before they arrive; their arrival voids the reviews given so far.") : null),
      el("section", {className: "panel", "aria-label": "The request"},
        el("dl", {className: "facts", dataset: {testid: "facts"}},
          fact("Request", el("code", {dataset: {testid: "request-id"}}, r.id), "request-id-fact"),
          fact("Institutions", siteIds(r).join(", "), "request-sites"),
          fact("Permit", el("a", {href: `${root}/permits/view/${encodeURIComponent(r.pid)}`},
            r.pid), "request-permit"),
          fact("Requester", r.requester, "requester"),
          fact("Created", when(r.created_at), "created"),
          fact("Decided", r.decided_at ? when(r.decided_at) : "", "decided"),
          r.reasons.length ? fact("Blocking the whole request", list(r.reasons,
            "request-reasons"), "request-reasons-fact") : null)),
      el("section", {className: "panel", "aria-label": "Files"}, filesTable(r)),
      el("section", {className: "panel", "aria-label": "Reviews"},
        el("h3", {}, "Reviews"), reviewsOf(r)));
    const why = whyNoReview(r);
    $("review-panel").hidden = !isChecker();
    $("review-form").hidden = why !== null;
    $("review-unavailable").hidden = why === null;
    $("review-unavailable").textContent = why || "";
  }

  async function onReview(event) {
    event.preventDefault();
    const decision = event.submitter ? event.submitter.value : "approve";
    hide($("review-error"), $("review-ok"));
    const buttons = [...$("review-form").querySelectorAll("button")];
    buttons.forEach((b) => { b.disabled = true; });
    $("review-panel").setAttribute("aria-busy", "true");
    try {
      const out = await api(`/airlock/requests/${encodeURIComponent(current.id)}/reviews`,
        {method: "POST", body: {decision, reason: $("review-reason").value.trim()}});
      renderRequest(out);
      $("review-reason").value = "";
      fill($("review-ok"), el("p", {dataset: {testid: "review-done"}},
        `Your ${decision === "approve" ? "approval" : "rejection"} is recorded. `
        + `The request is ${STATE[out.state] || out.state}.`));
      $("review-ok").hidden = false;
    } catch (exc) {
      showError($("review-error"), errorHeading(exc, "Your review was refused"), exc.messages);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
      $("review-panel").setAttribute("aria-busy", "false");
    }
  }

  async function showRequest(rid) {
    $("view-request").hidden = false;
    $("page-title").textContent = `Airlock request ${rid.slice(0, 12)}`;
    if (!me) {
      fill($("request"), el("p", {className: "note", dataset: {testid: "signin-needed"}},
        "Sign in to read this request."));
      return;
    }
    try {
      renderRequest(await api(`/airlock/requests/${encodeURIComponent(rid)}`));
    } catch (exc) {
      fill($("request"));
      showError($("page-error"), errorHeading(exc, "You may not read this request"),
        exc.messages);
    }
  }

  // ---- start ---------------------------------------------------------------------------------

  async function render() {
    for (const id of ["view-queue", "view-request", "review-panel", "content-panel"]) {
      $(id).hidden = true;
    }
    hide($("page-error"), $("review-error"), $("review-ok"), $("content-error"));
    const rid = new URLSearchParams(window.location.search).get("request");
    await SPEWeb.loadView(() => (rid ? showRequest(rid) : showQueue()));
  }

  async function start() {
    SPEWeb.wireSignIn(session, changed);
    $("reload").addEventListener("click", render);
    $("review-form").addEventListener("submit", onReview);
    await changed(token() ? await session.signIn(token()) : null);
  }

  start();
})();
