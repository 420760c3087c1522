// The search page's harvest panel (GET /api/v1/catalogue/harvest, HDAB and admins): when
// each node was last harvested, the round running now with its progress (polled every
// two seconds while it runs), the last round's failures with their reasons. The token is
// the one the dataset page keeps (same key), so signing in there signs in here too.
"use strict";

(() => {
  const {api, request, el, when} = SPE;
  const {$, fill} = SPEWeb;
  const TOKEN_KEY = "spe.catalogue.token";
  const PHASES = {waiting: "waiting", fetching: "fetching", validated: "fetched and validated",
    stored: "stored", failed: "failed"};
  let timer = null;

  const token = () => sessionStorage.getItem(TOKEN_KEY);
  const auth = () => ({Authorization: `Bearer ${token()}`, Accept: "application/json"});

  function describe(status) {
    const round = status.current;
    if (round) {
      return `Harvesting now (${round.trigger}): ${round.nodes_done} of ${round.nodes_total} `
        + `nodes done, started ${when(round.started_at)}.`;
    }
    const last = status.last;
    if (!last) return "No harvest has run in this service since it started.";
    const failed = last.nodes.filter((n) => n.phase === "failed").length;
    const how = last.error ? `failed: ${last.error}`
      : failed ? `${failed} of ${last.nodes_total} nodes failed` : "every node harvested";
    return `Last harvest ${when(last.finished_at)} (${last.trigger}): ${how}.`;
  }

  function render(status) {
    $("harvest-view").hidden = false;
    $("harvest-error").hidden = true;
    $("harvest-state").textContent = describe(status);
    $("harvest-state").dataset.state = status.running ? "running"
      : status.last ? status.last.state : "none";
    $("harvest-start").hidden = !status.can_start || status.running;
    fill($("harvest-nodes"), status.nodes.map((n) => el("tr", {},
      el("td", {}, `${n.node_name} (${n.node_id})`),
      el("td", {}, String(n.datasets)),
      el("td", {}, n.last_harvested_at ? when(n.last_harvested_at) : "never"))));
    const round = status.current || status.last;
    $("harvest-round").closest("table").hidden = !round;
    $("harvest-round-caption").textContent = status.current ? "Harvest running now"
      : "Last harvest round";
    fill($("harvest-round"), (round ? round.nodes : []).map((n) => el("tr", {},
      el("td", {}, n.url),
      el("td", {className: `phase-${n.phase}`}, PHASES[n.phase] || n.phase),
      el("td", {}, String(n.datasets)),
      el("td", {}, n.error || ""))));
    clearTimeout(timer);
    if (status.running) timer = setTimeout(load, 2000);
  }

  function refused(exc) {
    $("harvest-view").hidden = true;
    const box = $("harvest-error");
    box.textContent = `Harvest status not shown: ${exc.message}`;
    box.hidden = false;
    if (exc.status === 401) sessionStorage.removeItem(TOKEN_KEY);
  }

  async function load() {
    if (!token()) return;
    try {
      render(await request(`${api}/harvest`, {headers: auth()}));
    } catch (exc) {
      refused(exc);
    }
  }

  async function start() {
    try {
      render(await request(`${api}/harvest`, {method: "POST", headers: auth()}));
    } catch (exc) {
      refused(exc);
    }
  }

  $("harvest-signin").addEventListener("submit", (event) => {
    event.preventDefault();
    const candidate = $("harvest-token").value.trim();
    if (!candidate) return;
    sessionStorage.setItem(TOKEN_KEY, candidate);
    $("harvest-token").value = "";
    load();
  });
  $("harvest-start").addEventListener("click", start);
  $("harvest").addEventListener("toggle", () => {
    if ($("harvest").open) load();
  });
})();
