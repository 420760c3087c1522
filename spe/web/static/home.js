// The home page's sign-in is every page's: the token is kept under each page's own key of
// the tab's session storage (common.js session(KEY); the keys are nav.js's), so the
// catalogue, query, permit, jobs, federated runs and airlock pages open signed in, and signing out here
// signs out of them all. (Each page's own sign-out still concerns that page only.)
"use strict";

(() => {
  const {$, session: makeSession, showSignedIn, signinMessage, loadView} = SPEWeb;
  const KEY = "spe.home.token";
  const session = makeSession(KEY);
  let me = null;

  const keys = () => (window.SPENav ? window.SPENav.KEYS : [KEY]);
  const navChanged = () => window.dispatchEvent(new Event("spe:session"));

  function mark() {
    const roles = new Set(me ? me.roles : []);
    for (const card of document.querySelectorAll(".card[data-role]")) {
      if (roles.has(card.dataset.role)) card.dataset.mine = "true";
      else delete card.dataset.mine;
    }
  }

  function changed(person) {
    me = person;
    showSignedIn(me);
    mark();
  }

  $("signin").addEventListener("submit", async (event) => {
    event.preventDefault();
    const candidate = $("token").value.trim();
    if (!candidate) return;
    const person = await session.signIn(candidate);  // checked against /me first
    if (!person) return;
    for (const key of keys()) sessionStorage.setItem(key, candidate);
    navChanged();
    changed(person);
  });

  $("signout").addEventListener("click", () => {
    for (const key of keys()) sessionStorage.removeItem(key);
    $("token").value = "";
    signinMessage("", "");
    navChanged();
    changed(null);
  });

  loadView(async () => {
    let person = null;
    if (session.token()) {
      try {
        person = await session.api("/me");
      } catch (exc) {
        session.forget();
        if (exc.status !== 401) throw exc;
      }
    }
    changed(person);
  });
})();
