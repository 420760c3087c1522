// The search page. The URL's query string is the whole state (same names as the API's
// parameters), so a search can be linked, reloaded, and walked with back/forward.
"use strict";

(() => {
  const {api, request, el, fmt, ageRange, ACCESS_RIGHTS, qualityBadge, datasetPage} = SPE;

  // Facets in the order shown, with their headings; unknown facets the API may add later
  // are shown after these under their own name.
  const FACETS = [
    ["modality", "Modality"],
    ["body_part", "Body part"],
    ["institution", "Institution"],
    ["access_rights", "Access rights"],
    ["health_category", "Health category"],
    ["clinical_area", "Clinical area"],
    ["age_band", "Age band"],
    ["condition", "Condition"],
  ];
  const SCALARS = ["q", "age_min", "age_max", "page", "size", "sort"];

  const {$} = SPEWeb;
  const form = $("search-form");
  const ageForm = $("age-form");
  let inFlight = null;

  function readState() {
    const params = new URLSearchParams(window.location.search);
    const state = {facets: {}};
    for (const key of SCALARS) state[key] = params.get(key) || "";
    for (const [name] of FACETS) state.facets[name] = params.getAll(name);
    // Facets not in FACETS but present in the URL are kept, so the API can judge them.
    for (const key of new Set(params.keys())) {
      if (!SCALARS.includes(key) && !(key in state.facets)) state.facets[key] = params.getAll(key);
    }
    return state;
  }

  function toQuery(state) {
    const params = new URLSearchParams();
    for (const key of SCALARS) {
      const value = String(state[key] ?? "").trim();
      if (!value || (key === "page" && value === "1") || (key === "sort" && value === "relevance")) {
        continue;
      }
      params.set(key, value);
    }
    for (const [name, values] of Object.entries(state.facets)) {
      for (const value of values) params.append(name, value);
    }
    return params.toString();
  }

  // A new search: record it in the history (so Back returns to the previous one), then load.
  function navigate(state) {
    const query = toQuery(state);
    history.pushState(null, "", query ? `?${query}` : window.location.pathname);
    load(state);
  }

  function syncForm(state) {
    $("q").value = state.q;
    $("age_min").value = state.age_min;
    $("age_max").value = state.age_max;
    $("sort").value = state.sort || "relevance";
    document.title = state.q ? `“${state.q}” · Dataset catalogue · EHDS SPE`
      : "Dataset catalogue · EHDS SPE";
  }

  async function load(state) {
    syncForm(state);
    if (inFlight) inFlight.abort();  // only the latest search may render
    const controller = new AbortController();
    inFlight = controller;
    $("result-count").textContent = "Searching…";
    document.body.setAttribute("aria-busy", "true");
    try {
      const page = await request(`${api}/search?${toQuery(state)}`, {
        signal: controller.signal, headers: {Accept: "application/json"},
      });
      if (controller !== inFlight) return;
      showError(null);
      renderFacets(page.facets || {}, state);
      renderResults(page);
    } catch (exc) {
      if (exc.name === "AbortError") return;
      showError(exc);
    } finally {
      if (controller === inFlight) document.body.removeAttribute("aria-busy");
    }
  }

  function showError(exc) {
    const box = $("error");
    if (!exc) {
      box.hidden = true;
      box.textContent = "";
      return;
    }
    box.replaceChildren(
      el("strong", {}, "The search could not be run. "),
      el("span", {dataset: {testid: "error-detail"}}, exc.message),
    );
    box.hidden = false;
    $("results").replaceChildren();
    $("no-results").hidden = true;
    document.querySelector(".pager").hidden = true;
    $("result-count").textContent = "Search failed";
    $("result-count").dataset.total = "";
  }

  function renderFacets(facets, state) {
    // Re-rendering replaces the checkboxes: remember which had focus and give it back, so
    // a keyboard user is not thrown to the top of the page after each tick.
    const focused = document.activeElement;
    const refocus = focused && focused.dataset && focused.dataset.facet
      ? [focused.dataset.facet, focused.dataset.value] : null;

    const known = FACETS.map(([name]) => name);
    const order = [...FACETS, ...Object.keys(facets).filter((n) => !known.includes(n))
      .map((n) => [n, n.replace(/_/g, " ")])];
    const groups = [];
    for (const [name, heading] of order) {
      const values = facets[name] || [];
      if (!values.length) continue;
      const chosen = state.facets[name] || [];
      const items = values.map((v, i) => {
        const id = `facet-${name}-${i}`;
        const input = el("input", {
          type: "checkbox", id, name, value: v.value,
          checked: v.selected || chosen.includes(v.value),
          dataset: {testid: "facet-option", facet: name, value: v.value},
          onchange: (event) => toggleFacet(name, v.value, event.target.checked),
        });
        return el("li", {},
          input,
          el("label", {for: id},
            el("span", {className: "facet-label"}, v.label || v.value),
            " ",
            el("span", {className: "count", dataset: {testid: "facet-count"}},
              v.count === null || v.count === undefined ? "" : `(${fmt(v.count)})`)));
      });
      groups.push(el("fieldset", {className: "facet", dataset: {testid: `facet-${name}`}},
        el("legend", {}, heading),
        el("ul", {}, items)));
    }
    $("facets").replaceChildren(...groups);
    if (refocus) {
      const again = [...document.querySelectorAll("input[data-facet]")]
        .find((i) => i.dataset.facet === refocus[0] && i.dataset.value === refocus[1]);
      if (again) again.focus();
    }
  }

  function toggleFacet(name, value, on) {
    const state = readState();
    const values = (state.facets[name] || []).filter((v) => v !== value);
    if (on) values.push(value);
    state.facets[name] = values;  // several values in one facet: any of them (OR)
    state.page = "";
    navigate(state);
  }

  function valuesOf(list) {
    return (list || []).map((m) => (typeof m === "string" ? m : m.value)).filter(Boolean);
  }

  function renderResult(ds) {
    const description = ds.description || "";
    const short = description.length > 260 ? `${description.slice(0, 257)}…` : description;
    const modalities = valuesOf(ds.modalities);
    return el("li", {className: "result", dataset: {testid: "result", identifier: ds.identifier}},
      el("h3", {},
        el("a", {href: datasetPage(ds.identifier), dataset: {testid: "result-title"}}, ds.title),
        " ", qualityBadge(ds.quality)),
      el("dl", {className: "facts"},
        el("div", {}, el("dt", {}, "Institution"),
          el("dd", {dataset: {testid: "result-institution"}}, ds.node_name || ds.node_id)),
        el("div", {}, el("dt", {}, "Individuals"),
          el("dd", {dataset: {testid: "result-individuals"}},
            ds.number_of_unique_individuals === null ? "suppressed"
              : fmt(ds.number_of_unique_individuals))),
        el("div", {}, el("dt", {}, "Age range"),
          el("dd", {}, ageRange(ds.min_typical_age, ds.max_typical_age))),
        el("div", {}, el("dt", {}, "Modalities"),
          el("dd", {dataset: {testid: "result-modalities"}},
            modalities.length ? modalities.join(", ") : "none")),
        el("div", {}, el("dt", {}, "Access"),
          el("dd", {}, ACCESS_RIGHTS[ds.access_rights] || ds.access_rights || "—"))),
      short ? el("p", {className: "description"}, short) : null);
  }

  function renderResults(page) {
    const total = page.total || 0;
    const count = $("result-count");
    count.dataset.total = String(total);
    count.textContent = total === 1 ? "1 dataset found" : `${fmt(total)} datasets found`;
    const results = page.results || [];
    $("results").replaceChildren(...results.map(renderResult));
    $("no-results").hidden = results.length > 0;

    const pager = document.querySelector(".pager");
    const pages = Math.max(page.pages || 1, 1);
    const current = page.page || 1;
    pager.hidden = total === 0;
    $("page-status").textContent = `Page ${current} of ${pages}`;
    $("prev").disabled = current <= 1;
    $("next").disabled = current >= pages;
  }

  function goToPage(delta) {
    const state = readState();
    state.page = String(Math.max((parseInt(state.page, 10) || 1) + delta, 1));
    navigate(state);
    $("results-heading").focus();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const state = readState();
    state.q = $("q").value.trim();
    state.page = "";
    navigate(state);
  });
  ageForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const state = readState();
    state.age_min = $("age_min").value.trim();
    state.age_max = $("age_max").value.trim();
    state.page = "";
    navigate(state);
  });
  $("sort").addEventListener("change", () => {
    const state = readState();
    state.sort = $("sort").value;
    state.page = "";
    navigate(state);
  });
  $("clear").addEventListener("click", () => {
    const state = readState();
    navigate({...state, facets: {}, age_min: "", age_max: "", page: ""});
  });
  $("prev").addEventListener("click", () => goToPage(-1));
  $("next").addEventListener("click", () => goToPage(1));
  window.addEventListener("popstate", () => load(readState()));

  load(readState());
})();
