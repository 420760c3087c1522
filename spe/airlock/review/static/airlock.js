// The airlock review page: an output checker's queue of pending requests, one request's
// files with the automatic verdicts, each stored file's content to read, the reviews so
// far, and approve or reject, over /api/v1/airlock. The view comes from the address:
// /airlock (the queue) or /airlock?request=<id> (one request). The page decides nothing:
// every step goes to the API (policies/airlock), and a refusal is shown with its reason.
// Everything from the API, a file's content included, is written as text (textContent via
// el()), never as HTML.
"use strict";

(() => {
  const meta = document.querySelector('meta[name="spe-root"]');
  const root = meta ? meta.content : "";
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "spe.airlock.token";

  // ---- small helpers (the same as the permit pages'; each page loads only its own JS) ----

  // el("a", {href: x, className: "y", dataset: {testid: "z"}}, "text", childNode, ...)
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "className") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (value === true) node.setAttribute(key, "");
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fill(node, ...children) {
    node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined
      && c !== false));
    return node;
  }

  // The API's refusals are {"error": "...", "detail": "..." | [{loc, msg}, ...]}.
  function detailMessages(detail) {
    if (Array.isArray(detail)) {
      return detail.map((d) => {
        const loc = (d.loc || []).filter((p) => p !== "body");
        const msg = String(d.msg || "").replace(/^Value error, /, "");
        return loc.length ? `${loc.join(".")}: ${msg}` : msg;
      });
    }
    if (detail && typeof detail === "object") return [JSON.stringify(detail)];
    return detail ? [String(detail)] : [];
  }

  class ApiError extends Error {
    constructor(status, error, detail) {
      const messages = detailMessages(detail);
      super(messages.join("; ") || error || `HTTP ${status}`);
      this.status = status;
      this.error = error;
      this.detail = detail;
      this.messages = messages.length ? messages : [this.message];
    }
  }

  // A fetch whose failure (no answer, or an HTTP error with its JSON detail) is an ApiError.
  async function send(url, options = {}) {
    let resp;
    try {
      resp = await fetch(url, options);
    } catch (exc) {
      throw new ApiError(0, "network", "the service could not be reached");
    }
    if (!resp.ok) {
      let body = null;
      try {
        body = await resp.json();
      } catch (_) {
        body = null;
      }
      throw new ApiError(resp.status, body && body.error,
        (body && body.detail) || `HTTP ${resp.status} ${resp.statusText}`);
    }
    return resp;
  }

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  function headers(extra = {}, bearer = null) {
    const h = {...extra};
    const t = bearer || token();
    if (t) h.Authorization = `Bearer ${t}`;
    return h;
  }

  // The API with the signed-in person's token: api("/me"), api(path, {method, body}).
  async function api(path, {method = "GET", body, bearer} = {}) {
    const options = {method, headers: headers({Accept: "application/json"}, bearer)};
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const resp = await send(`${root}/api/v1${path}`, options);
    try {
      return await resp.json();
    } catch (_) {
      throw new ApiError(resp.status, "bad_answer", "the answer is not JSON");
    }
  }

  function errorHeading(exc, what = "Refused") {
    if (exc.status === 422) return `${what}: the service did not accept it (422):`;
    if (exc.status === 401) return "Not signed in, or the token is no longer valid (401):";
    if (exc.status === 403) return `${what} (403):`;
    if (exc.status === 409) return `${what}: not possible in this state (409):`;
    if (exc.status === 404) return "Not found (404):";
    if (exc.status === 0) return "No answer:";
    return `${what} (HTTP ${exc.status}):`;
  }

  function showError(box, heading, messages) {
    fill(box,
      el("p", {dataset: {testid: "error-heading"}}, el("strong", {}, heading)),
      el("ul", {dataset: {testid: "error-messages"}},
        messages.map((m) => el("li", {dataset: {testid: "error-message"}}, m))));
    box.hidden = false;
  }

  function hide(...boxes) {
    for (const box of boxes) {
      box.hidden = true;
      fill(box);
    }
  }

  // "2026-03-01T10:20:30.123+00:00" -> "2026-03-01 10:20 UTC" (no offset: it is UTC).
  function when(text) {
    if (!text) return "—";
    const iso = /[zZ]|[+-]\d\d:?\d\d$/.test(text) ? text : `${text}Z`;
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? text
      : `${d.toISOString().slice(0, 16).replace("T", " ")} UTC`;
  }

  const numberFormat = new Intl.NumberFormat("en");
  function bytes(n) {
    if (n === null || n === undefined) return "—";
    if (n < 1024) return `${numberFormat.format(n)} B`;
    if (n < 1024 * 1024) return `${numberFormat.format(Math.round(n / 102.4) / 10)} KiB`;
    return `${numberFormat.format(Math.round(n / 104857.6) / 10)} MiB`;
  }

  // A file path inside a request, as URL path segments.
  const pathUrl = (path) => path.split("/").map(encodeURIComponent).join("/");
  const requestUrl = (rid) => `${root}/airlock?request=${encodeURIComponent(rid)}`;

  // ---- words -------------------------------------------------------------------------------

  const STATE = {pending: "pending review", released: "released", rejected: "rejected",
    withheld: "withheld"};
  const STATE_NOTE = {
    pending: "Under review: two different output checkers must approve; any reject rejects.",
    released: "Released: the requester may download the stored files. No more reviews.",
    rejected: "Rejected: nothing leaves. No more reviews.",
    withheld: "Withheld: the permit was suspended or revoked while the request waited. "
      + "Nothing leaves.",
  };
  const APPROVALS_NEEDED = 2;  // policies/airlock's approvals_needed (shown, not enforced)

  function stateBadge(state, testid = "request-state") {
    return el("span", {className: `status state-${state}`, dataset: {testid}},
      STATE[state] || state);
  }

  function verdictBadge(verdict, testid = "file-verdict") {
    return verdict ? el("span", {className: `verdict verdict-${verdict}`, dataset: {testid}},
      verdict) : "—";
  }

  function list(items, testid) {
    return items && items.length
      ? el("ul", {className: "reasons", dataset: {testid}}, items.map((r) => el("li", {}, r)))
      : "—";
  }

  // ---- sign-in -----------------------------------------------------------------------------

  let me = null;

  function signinMessage(kind, text) {
    const box = $("signin-result");
    box.className = kind === "error" ? "error" : kind === "warning" ? "warning" : "";
    fill(box, text ? el("p", {dataset: {testid: `signin-${kind}`}}, text) : "");
  }

  function showSignedIn() {
    $("signin").hidden = Boolean(me);
    $("signed-in").hidden = !me;
    if (me) {
      const roles = me.roles.join(", ") || "no role";
      $("who").textContent = `${me.name || me.subject} (${roles})`;
    }
  }

  async function signIn(candidate) {
    try {
      me = await api("/me", {bearer: candidate});
      sessionStorage.setItem(TOKEN_KEY, candidate);
      signinMessage("", "");
    } catch (exc) {
      me = null;
      sessionStorage.removeItem(TOKEN_KEY);
      signinMessage("error", `Sign-in refused: ${exc.message}`);
    }
    showSignedIn();
  }

  const isChecker = () => Boolean(me && me.roles.includes("output_checker"));

  // ---- /airlock: the queue -----------------------------------------------------------------

  function queueTable(requests) {
    if (!requests.length) {
      return el("p", {className: "note", dataset: {testid: "queue-empty"}},
        isChecker() ? "Nothing waiting for review." : "No requests.");
    }
    return el("table", {className: "requests", dataset: {testid: "queue-table"}},
      el("thead", {}, el("tr", {}, ["Request", "Institution", "Job", "Permit", "Requester",
        "Created", "Files", "Approvals", "State"].map((h) => el("th", {scope: "col"}, h)))),
      el("tbody", {}, requests.map((r) => {
        const stored = r.files.filter((f) => f.stored).length;
        const approvals = new Set(r.reviews.filter((v) => v.decision === "approve")
          .map((v) => v.reviewer)).size;
        return el("tr", {dataset: {testid: "request-row", rid: r.id, node: r.node_id,
          job: r.job_id, state: r.state}},
        el("th", {scope: "row"}, el("a", {href: requestUrl(r.id),
          dataset: {testid: "request-link"}}, r.id.slice(0, 12))),
        el("td", {}, r.node_id),
        el("td", {}, el("a", {href: `${root}/jobs?job=${encodeURIComponent(r.job_id)}`,
          title: r.job_id}, el("code", {}, r.job_id.slice(0, 12)))),
        el("td", {}, r.pid),
        el("td", {}, r.requester),
        el("td", {className: "nowrap"}, when(r.created_at)),
        el("td", {}, `${stored} stored, ${r.files.length - stored} blocked`),
        el("td", {className: "num"}, `${approvals} of ${APPROVALS_NEEDED}`),
        el("td", {}, stateBadge(r.state)));
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

  async function viewContent(path, button) {
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
        $("content").textContent = await resp.text();
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
    if (!r.files.length) return el("p", {className: "note"}, "The job wrote no files.");
    return el("table", {className: "files", dataset: {testid: "files"}},
      el("caption", {}, "Files"),
      el("thead", {}, el("tr", {}, ["File", "Kind", "Size", "SHA-256", "Verdict", "Reasons",
        "Notes", "Content"].map((h) => el("th", {scope: "col"}, h)))),
      el("tbody", {}, r.files.map((f) => el("tr", {dataset: {testid: "file-row",
        path: f.path, verdict: f.verdict, stored: String(f.stored)}},
      el("th", {scope: "row"}, el("code", {}, f.path)),
      el("td", {}, f.kind || "—"),
      el("td", {className: "num", dataset: {testid: "file-size"}}, bytes(f.size)),
      el("td", {dataset: {testid: "file-sha256"}}, f.sha256
        ? el("code", {className: "sha", title: f.sha256}, f.sha256) : "—"),
      el("td", {}, verdictBadge(f.verdict)),
      el("td", {}, list(f.reasons, "file-reasons")),
      el("td", {}, list(f.notes, "file-notes")),
      el("td", {}, f.stored
        ? el("button", {type: "button", dataset: {testid: "view-content", path: f.path},
          onclick: (e) => viewContent(f.path, e.currentTarget)}, "View content")
        : el("span", {className: "note", dataset: {testid: "not-stored"}},
          "not stored: never leaves"))))));
  }

  function reviewsOf(r) {
    if (!r.reviews.length) {
      return el("p", {className: "note", dataset: {testid: "no-reviews"}}, "No review yet.");
    }
    return el("ul", {className: "reviews", dataset: {testid: "reviews"}}, r.reviews.map((v) =>
      el("li", {dataset: {testid: "review", decision: v.decision}},
        el("p", {}, el("span", {className: `review review-${v.decision}`},
          v.decision === "approve" ? "approved" : "rejected"), ` by ${v.reviewer}, ${when(v.at)}`),
        v.reason ? el("p", {dataset: {testid: "review-reason-text"}}, `Reason: ${v.reason}`)
          : null)));
  }

  function renderRequest(r) {
    current = r;
    const approvals = new Set(r.reviews.filter((v) => v.decision === "approve")
      .map((v) => v.reviewer)).size;
    $("page-title").textContent = `Airlock request ${r.id.slice(0, 12)}`;
    fill($("request"),
      el("header", {className: "request-head"},
        el("h2", {}, "Outputs of job ", el("code", {dataset: {testid: "request-job"}}, r.job_id),
          ` at ${r.node_id}`),
        el("p", {}, stateBadge(r.state), " ",
          el("span", {dataset: {testid: "approvals"}},
            `${approvals} of ${APPROVALS_NEEDED} approvals`)),
        el("p", {className: "note", dataset: {testid: "state-note"}},
          STATE_NOTE[r.state] || r.state)),
      el("section", {className: "panel", "aria-label": "The request"},
        el("dl", {className: "facts", dataset: {testid: "facts"}},
          fact("Request", el("code", {dataset: {testid: "request-id"}}, r.id), "request-id-fact"),
          fact("Institution", r.node_id, "request-node"),
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
    $("review-panel").hidden = !me;
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
    $("loading").hidden = false;
    try {
      if (rid) await showRequest(rid);
      else await showQueue();
    } catch (exc) {
      const messages = [...exc.messages];
      if (exc.status === 401) messages.push("Sign in again with a valid token.");
      showError($("page-error"), errorHeading(exc, "Could not load"), messages);
    } finally {
      $("loading").hidden = true;
      document.body.dataset.ready = "true";
    }
  }

  async function start() {
    $("signin").addEventListener("submit", async (event) => {
      event.preventDefault();
      const candidate = $("token").value.trim();
      if (!candidate) return;
      await signIn(candidate);
      if (me) await render();
    });
    $("signout").addEventListener("click", async () => {
      sessionStorage.removeItem(TOKEN_KEY);
      me = null;
      $("token").value = "";
      showSignedIn();
      signinMessage("", "");
      await render();
    });
    $("reload").addEventListener("click", render);
    $("review-form").addEventListener("submit", onReview);
    if (token()) await signIn(token());
    else showSignedIn();
    await render();
  }

  start();
})();
