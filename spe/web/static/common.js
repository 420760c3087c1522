// What every page of the service shares: building the DOM, calling the API (with the
// signed-in person's token where there is one), and showing a refusal with its reason.
// Loaded before each page's own script, which takes what it needs from SPEWeb.
// Everything from the API is written with textContent (via el()), never innerHTML, so
// nothing an answer holds can inject markup into a page.
"use strict";

const SPEWeb = (() => {
  const meta = document.querySelector('meta[name="spe-root"]');
  const root = meta ? meta.content : "";
  const $ = (id) => document.getElementById(id);

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

  // node.replaceChildren(), minus the null/false children a conditional leaves (which the
  // DOM would otherwise write out as the text "null").
  function fill(node, ...children) {
    node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined
      && c !== false));
    return node;
  }

  // The API's refusals are {"error": "...", "detail": "..." | [{loc, msg}, ...]}: one
  // message per validation error, its place first, minus the parts of `loc` that only say
  // where FastAPI found the value ("body"; the catalogue's search also drops "query").
  function detailMessages(detail, drop = ["body"]) {
    if (Array.isArray(detail)) {
      return detail.map((d) => {
        const loc = (d.loc || []).filter((p) => !drop.includes(p));
        // pydantic prefixes a validator's own message with "Value error, ": noise to a reader.
        const msg = String(d.msg || "").replace(/^Value error, /, "");
        return loc.length ? `${loc.join(".")}: ${msg}` : msg;
      });
    }
    if (detail && typeof detail === "object") return [JSON.stringify(detail)];
    return detail ? [String(detail)] : [];
  }

  class ApiError extends Error {
    constructor(status, error, detail, drop) {
      const messages = detailMessages(detail, drop);
      super(messages.join("; ") || error || `HTTP ${status}`);
      this.status = status;
      this.error = error;
      this.detail = detail;
      this.messages = messages.length ? messages : [this.message];
    }
  }

  // A fetch whose failure (no answer, or an HTTP error with its JSON detail) is an ApiError.
  // An abort is the page's own doing (a newer search), so it passes through unchanged.
  async function send(url, options = {},
    {unreachable = "the service could not be reached", drop} = {}) {
    let resp;
    try {
      resp = await fetch(url, options);
    } catch (exc) {
      if (exc.name === "AbortError") throw exc;
      throw new ApiError(0, "network", unreachable);
    }
    if (!resp.ok) {
      let body = null;
      try {
        body = await resp.json();
      } catch (_) {
        body = null;
      }
      throw new ApiError(resp.status, body && body.error,
        (body && body.detail) || `HTTP ${resp.status} ${resp.statusText}`, drop);
    }
    return resp;
  }

  // A fetched file saved under `name`: for what a plain link cannot fetch, as it needs a
  // header (a token, an Accept).
  function saveBlob(blob, name) {
    const href = URL.createObjectURL(blob);
    const link = el("a", {href, download: name, hidden: true});
    document.body.append(link);
    link.click();
    link.remove();
    // Not revoked at once: the browser may still be reading it after the click.
    setTimeout(() => URL.revokeObjectURL(href), 60_000);
  }

  // send(), then the answer's JSON (null when it is not JSON).
  async function request(url, options = {}, how = {}) {
    const resp = await send(url, options, how);
    try {
      return await resp.json();
    } catch (_) {
      return null;
    }
  }

  // The sign-in form's answer: an error, a warning, or nothing ("").
  function signinMessage(kind, text) {
    const box = $("signin-result");
    box.className = kind === "error" ? "error" : kind === "warning" ? "warning" : "";
    fill(box, text ? el("p", {dataset: {testid: `signin-${kind}`}}, text) : "");
  }

  // The sign-in form, or who is signed in: "name (roles)", `more` added inside the brackets.
  function showSignedIn(me, more = "") {
    $("signin").hidden = Boolean(me);
    $("signed-in").hidden = !me;
    if (me) {
      const roles = me.roles.join(", ") || "no role";
      $("who").textContent = `${me.name || me.subject} (${roles}${more})`;
    }
  }

  // One page's sign-in. Each page keeps its token under its own key in the tab's session
  // storage (closing the tab forgets it), so signing out of one page leaves the others be.
  function session(key, how = {}) {
    const token = () => sessionStorage.getItem(key);
    // The shared navigation (nav.js) shows who is signed in on this page, and hears of it.
    window.SPEPageKey = key;
    const changed = () => window.dispatchEvent(new Event("spe:session"));
    const forget = () => {
      sessionStorage.removeItem(key);
      changed();
    };

    function headers(extra = {}, bearer = null) {
      const h = {...extra};
      const t = bearer || token();
      if (t) h.Authorization = `Bearer ${t}`;
      return h;
    }

    // The API with the signed-in person's token: api("/jobs", {method: "POST", body: {...}}).
    async function api(path, {method = "GET", body, bearer} = {}) {
      const options = {method, headers: headers({Accept: "application/json"}, bearer)};
      if (body !== undefined) {
        options.headers["Content-Type"] = "application/json";
        options.body = JSON.stringify(body);
      }
      const resp = await send(`${root}/api/v1${path}`, options, how);
      if (method !== "GET") changed();  // a queue may have moved: the navigation's counts
      try {
        return await resp.json();
      } catch (_) {
        throw new ApiError(resp.status, "bad_answer", "the answer is not JSON");
      }
    }

    // A pasted token is checked against /api/v1/me before it is kept, so a wrong paste is
    // refused at once rather than at the first action. The person, or null when refused.
    async function signIn(candidate) {
      try {
        const me = await api("/me", {bearer: candidate});
        sessionStorage.setItem(key, candidate);
        changed();
        signinMessage("", "");
        return me;
      } catch (exc) {
        forget();
        signinMessage("error", `Sign-in refused: ${exc.message}`);
        return null;
      }
    }

    return {token, forget, headers, api, signIn};
  }

  // The sign-in form and the sign-out button of a page with a session(). `changed(me)` is
  // the page's: it keeps the person (null once signed out), shows them and redraws. A
  // refused token leaves the page as it is, the refusal shown under the form: the form is
  // only there while no one is signed in, so there is nothing to take back.
  function wireSignIn(session, changed) {
    $("signin").addEventListener("submit", async (event) => {
      event.preventDefault();
      const candidate = $("token").value.trim();
      if (!candidate) return;
      const me = await session.signIn(candidate);
      if (me) await changed(me);
    });
    $("signout").addEventListener("click", async () => {
      session.forget();
      $("token").value = "";
      signinMessage("", "");
      await changed(null);
    });
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

  // Draw a page's view with `show()`: "loading" while it runs, what stopped it in the page's
  // error box, and the page marked ready whatever happened (the browser tests wait for it).
  async function loadView(show) {
    $("loading").hidden = false;
    try {
      await show();
    } catch (exc) {
      // Not only the API's refusals end here: a slip in the page's own code has no messages
      // nor status, and must still be shown rather than lost in the console.
      const refusal = exc instanceof ApiError;
      const messages = refusal ? [...exc.messages] : [String((exc && exc.message) || exc)];
      if (refusal && exc.status === 401) messages.push("Sign in again with a valid token.");
      showError($("page-error"), refusal ? errorHeading(exc, "Could not load")
        : "Could not load:", messages);
    } finally {
      $("loading").hidden = true;
      document.body.dataset.ready = "true";
    }
  }

  function hide(...boxes) {
    for (const box of boxes) {
      box.hidden = true;
      fill(box);
    }
  }

  // "2026-03-01T10:20:30.123+00:00" -> "2026-03-01 10:20 UTC", whatever the reader's
  // locale; the API's times without an offset are UTC too.
  function when(text, {seconds = false} = {}) {
    if (!text) return "—";
    const iso = /[zZ]|[+-]\d\d:?\d\d$/.test(text) ? text : `${text}Z`;
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? text
      : `${d.toISOString().slice(0, seconds ? 19 : 16).replace("T", " ")} UTC`;
  }

  const numberFormat = new Intl.NumberFormat("en");
  const fmt = (n) => (n === null || n === undefined ? "—" : numberFormat.format(n));

  function bytes(n) {
    if (n === null || n === undefined) return "—";
    if (n < 1024) return `${numberFormat.format(n)} B`;
    if (n < 1024 * 1024) return `${numberFormat.format(Math.round(n / 102.4) / 10)} KiB`;
    return `${numberFormat.format(Math.round(n / 104857.6) / 10)} MiB`;
  }

  // A path of several segments ("site-a/dataset", "out/figure.png") for a URL: each segment
  // encoded, the slashes kept, as the {...:path} routes expect.
  const pathUrl = (path) => path.split("/").map(encodeURIComponent).join("/");

  // An airlock verdict on an output file (gateway's jobs page and the airlock's own).
  function verdictBadge(verdict, testid = "verdict") {
    return verdict ? el("span", {className: `verdict verdict-${verdict}`, dataset: {testid}},
      verdict) : "—";
  }

  function reasonList(reasons, testid = "reasons") {
    return reasons && reasons.length
      ? el("ul", {className: "reasons", dataset: {testid}}, reasons.map((r) => el("li", {}, r)))
      : "—";
  }

  return {root, $, el, fill, detailMessages, ApiError, send, saveBlob, request, signinMessage,
    showSignedIn, session, wireSignIn, errorHeading, showError, loadView, hide, when,
    numberFormat, fmt, bytes, pathUrl, verdictBadge, reasonList};
})();
