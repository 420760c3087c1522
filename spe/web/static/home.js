// The home page: a sign-in (kept for this tab, shown by the navigation with what waits for
// the person) and, once signed in, the cards of the person's roles marked as theirs.
"use strict";

(() => {
  const {$, session: makeSession, wireSignIn, showSignedIn, loadView} = SPEWeb;
  const session = makeSession("spe.home.token");
  let me = null;

  function mark() {
    const roles = new Set(me ? me.roles : []);
    for (const card of document.querySelectorAll(".card[data-role]")) {
      if (roles.has(card.dataset.role)) card.dataset.mine = "true";
      else delete card.dataset.mine;
    }
  }

  async function changed(person) {
    me = person;
    showSignedIn(me);
    mark();
  }

  wireSignIn(session, changed);
  loadView(async () => {
    if (session.token()) {
      try {
        me = await session.api("/me");
      } catch (exc) {
        session.forget();
        if (exc.status !== 401) throw exc;
      }
    }
    await changed(me);
  });
})();
