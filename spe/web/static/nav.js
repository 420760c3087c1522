// The navigation every page shares (spe/web/pages.py writes its links): marks the page you
// are on, shows who is signed in in this tab, and per role what is waiting for them, each
// a link to where it is done. Standalone (the API docs pages load it without common.js).
//
// Each page keeps its own sign-in (spe/web/static/common.js: one session-storage key per
// page, which it names in window.SPEPageKey); the home page's signs in on every page. The
// navigation shows the person signed in on this page, else the one signed in at home, else
// on another page of the tab. Counts come from the same API the pages read, with that
// person's token; everything from it is written as text.
"use strict";

(() => {
  const nav = document.querySelector(".spe-nav");
  if (!nav) return;
  const meta = document.querySelector('meta[name="spe-root"]');
  const root = meta ? meta.content : "";
  // The pages' session keys (common.js session(KEY) and catalogue/static/dataset.js).
  const KEYS = ["spe.home.token", "spe.permits.token", "spe.jobs.token", "spe.fed.token",
    "spe.airlock.token", "spe.query.token", "spe.catalogue.token"];
  const FINAL = new Set(["succeeded", "failed", "timed_out", "cancelled", "refused",
    "not submitted", "unreachable"]);

  // The page you are on: the longest nav path that is a prefix of the address.
  function markCurrent() {
    const here = window.location.pathname.replace(/\/+$/, "") || "/";
    let best = null;
    let bestLen = -1;
    for (const a of nav.querySelectorAll("a[data-nav]")) {
      const path = new URL(a.href).pathname.replace(/\/+$/, "") || "/";
      const match = path === here || (path !== root + "/" && path !== "/" && path !== root
        && here.startsWith(`${path}/`));
      if (match && path.length > bestLen) {
        best = a;
        bestLen = path.length;
      }
    }
    for (const a of nav.querySelectorAll("a[data-nav]")) a.removeAttribute("aria-current");
    if (best) best.setAttribute("aria-current", "page");
  }

  function token() {
    try {
      for (const key of [window.SPEPageKey, ...KEYS]) {
        if (!key) continue;
        const t = sessionStorage.getItem(key);
        if (t) return t;
      }
    } catch (_) {
      return null;  // storage refused (a private mode): no one is signed in
    }
    return null;
  }

  async function api(path, bearer) {
    const resp = await fetch(`${root}/api/v1${path}`,
      {headers: {Accept: "application/json", Authorization: `Bearer ${bearer}`}});
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    return resp.json();
  }

  function link(kind, href, count, one, many) {
    const a = document.createElement("a");
    a.href = `${root}${href}`;
    a.dataset.waiting = kind;
    a.dataset.count = String(count);
    a.textContent = `${count} ${count === 1 ? one : many}`;
    return a;
  }

  // What waits for `me`, per role: [kind, href, count, singular, plural].
  async function waiting(me, bearer) {
    const roles = new Set(me.roles || []);
    const out = [];
    if (roles.has("approver") && me.institution) {
      const submitted = await api("/permits?status=submitted", bearer);
      const mine = submitted.filter((p) => (p.waiting_for || []).includes(me.institution));
      out.push(["approvals", "/permits", mine.length, "application to review",
        "applications to review"]);
    }
    if (roles.has("hdab")) {
      const approved = await api("/permits?status=approved", bearer);
      out.push(["decisions", "/permits", approved.length, "application to decide",
        "applications to decide"]);
    }
    if (roles.has("output_checker")) {
      const pending = await api("/airlock/requests", bearer);
      const todo = pending.filter((r) => r.state === "pending"
        && !(r.reviews || []).some((v) => v.reviewer === me.id));
      out.push(["reviews", "/airlock", todo.length, "output to review", "outputs to review"]);
    }
    if (roles.has("researcher")) {
      const jobs = await api("/jobs", bearer);
      const running = jobs.filter((j) => (j.nodes || []).some((n) => !FINAL.has(n.state)));
      out.push(["jobs", "/jobs", running.length, "job running", "jobs running"]);
      const requests = await api("/airlock/requests", bearer);
      const released = requests.filter((r) => r.state === "released");
      out.push(["outputs", "/jobs", released.length, "output released",
        "outputs released"]);
    }
    return out;
  }

  // Who is signed in and what waits for them; `data-ready` on the nav once drawn (the
  // browser tests wait for it). A newer refresh makes an older one's answer moot.
  let generation = 0;
  async function refresh() {
    const mine = ++generation;
    const who = nav.querySelector(".spe-nav-who");
    const box = nav.querySelector(".spe-nav-waiting");
    nav.dataset.ready = "false";
    const bearer = token();
    let text = "Not signed in";
    let items = [];
    let problem = null;
    let me = null;
    if (bearer) {
      try {
        me = await api("/me", bearer);
      } catch (_) {
        text = "Not signed in (the token was refused)";
      }
    }
    if (me) {
      const roles = (me.roles || []).join(", ") || "no role";
      const inst = me.institution ? `, ${me.institution}` : "";
      text = `Signed in as ${me.name || me.subject} (${roles}${inst})`;
      try {
        items = await waiting(me, bearer);
      } catch (exc) {
        problem = `what is waiting could not be read (${exc.message})`;
      }
    }
    if (mine !== generation) return;
    who.textContent = text;
    nav.dataset.signedIn = me ? "true" : "false";
    if (problem) box.textContent = problem;
    else box.replaceChildren(...items.map((item) => link(...item)));
    nav.dataset.ready = "true";
  }

  // For the home page, whose sign-in and sign-out are every page's of the tab.
  window.SPENav = {KEYS, refresh};
  markCurrent();
  // A page's sign-in or sign-out, or an action that changed a queue (common.js).
  window.addEventListener("spe:session", () => { refresh(); });
  refresh();
})();
