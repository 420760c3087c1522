// The dataset page: everything the catalogue says about one dataset, and its curation.
"use strict";

(() => {
  const {root, request, el, fill, when, fmt, ageRange, ACCESS_RIGHTS, qualityBadge, datasetApi} = SPE;
  const {$} = SPEWeb;
  const TOKEN_KEY = "spe.catalogue.token";

  // The identifier is the rest of the path after /catalogue/datasets/.
  const prefix = `${root}/catalogue/datasets/`;
  const identifier = decodeURIComponent(window.location.pathname.startsWith(prefix)
    ? window.location.pathname.slice(prefix.length) : "");
  let current = null;  // the dataset as last read from the API

  // Known names for the health-category IRIs (mirrors catalogue/vocabulary.py); any other
  // IRI is shown by its last path segment.
  const HEALTH_CATEGORIES = {
    EHR: "Electronic health records",
    MEDICAL_IMAGING: "Medical imaging",
    REGISTRY: "Registries",
    GENOMICS: "Genomic data",
    ADMINISTRATIVE: "Healthcare administrative data",
  };
  const CODING_SYSTEMS = {
    "http://snomed.info/sct": "SNOMED CT",
    "http://hl7.org/fhir/sid/icd-10": "ICD-10",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    "http://loinc.org": "LOINC",
  };
  const COMPLETENESS = {
    study_body_part: "Studies with a body part",
    study_date: "Studies with a date",
    patient_birth_date: "Patients with a birth date",
    patient_sex: "Patients with a sex",
  };
  const DIMENSIONS = {
    documentation: "Documentation",
    technical_quality: "Technical quality",
    coverage: "Coverage",
    access: "Access",
    enrichment: "Enrichment",
  };

  function tail(iri) {
    return iri.replace(/[/#]+$/, "").split(/[/#]/).pop() || iri;
  }
  const categoryLabel = (iri) => HEALTH_CATEGORIES[tail(iri)] || tail(iri).replace(/_/g, " ");

  // A count as published: a number, or why there is none. The nodes send a small count as
  // null and name it in `suppressed`; a null that is not named there was simply not known.
  // In a table of values a suppressed count may also be a larger one hidden beside a small
  // one (so that the small one cannot be worked out from the total): it says so.
  function countText(ds, value, suppressedName, inTable) {
    if (value !== null && value !== undefined) return fmt(value);
    if (ds.suppressed.includes(suppressedName)) {
      return inTable ? "suppressed"
        : `suppressed (fewer than ${ds.suppression_threshold})`;
    }
    return "not known";
  }

  function fact(label, value, testid) {
    const dd = el("dd", {dataset: testid ? {testid} : {}}, value);
    return el("div", {}, el("dt", {}, label), dd);
  }

  // The table of one breakdown, and under it what a suppressed count in it means.
  function valueTable(caption, field, rows, ds, unit) {
    if (!rows || !rows.length) {
      return el("p", {}, ds.suppressed.includes(`${field}:other`)
        ? `${caption}: not listed (too few series each).` : `${caption}: none recorded.`);
    }
    return [el("table", {dataset: {testid: `table-${field}`}},
      el("caption", {}, caption),
      el("thead", {}, el("tr", {}, el("th", {scope: "col"}, "Value"),
        el("th", {scope: "col"}, unit))),
      el("tbody", {}, rows.map((r) => el("tr", {},
        el("th", {scope: "row"}, (r.title || r.name) && (r.title || r.name) !== r.value
          ? `${r.value} · ${r.title || r.name}` : r.value),
        el("td", {}, countText(ds, r.count, `${field}:${r.value}`, true)))))),
    rows.some((r) => r.count === null)
      ? el("p", {className: "note", dataset: {testid: `note-${field}`}},
        `A suppressed count is below ${ds.suppression_threshold} or hidden beside one that `
        + "is, so that none can be worked out from the total.")
      : null];
  }

  function render(ds) {
    current = ds;
    document.title = `${ds.title} · Dataset catalogue · EHDS SPE`;
    $("title").textContent = ds.title;
    $("institution").textContent = ds.node_name;
    fill($("quality-badge"), qualityBadge(ds.quality));
    const query = `?dataset=${encodeURIComponent(ds.identifier)}`;
    $("apply").href = `${root}/permits/new${query}`;
    $("ask").href = `${root}/query${query}`;

    $("description").textContent = ds.description;
    fill($("keywords"), ...ds.keywords.map((k) => el("li", {}, k)));
    fill($("about"),
      fact("Identifier", ds.identifier),
      fact("Institution", ds.node_name),
      fact("Publisher", ds.publisher_name),
      fact("Contact", el("a", {href: `mailto:${ds.contact_email}`}, ds.contact_email)),
      fact("Access rights", ACCESS_RIGHTS[ds.access_rights] || ds.access_rights,
        "dataset-access"),
      fact("Health categories", ds.health_categories.map(categoryLabel).join(", ") || "—"),
      fact("Data access body", ds.hdab_name),
      fact("Last harvested", when(ds.harvested_at)),
      ds.curated_at ? fact("Last curated", when(ds.curated_at)) : null,
    );

    $("suppression-note").textContent = `Counts below ${ds.suppression_threshold} are `
      + "suppressed by the institution's node before they reach the catalogue. Age and "
      + `study dates are typical ranges: at least ${ds.suppression_threshold} patients lie `
      + "at or beyond each end (ages in whole 5 years, dates in whole months).";
    const temporal = ds.temporal_start && ds.temporal_end
      ? `${ds.temporal_start} to ${ds.temporal_end}`
      : countText(ds, null, "temporal_start");
    const ages = ds.min_typical_age !== null && ds.max_typical_age !== null
      ? ageRange(ds.min_typical_age, ds.max_typical_age) : countText(ds, null, "min_age");
    fill($("counts"),
      fact("Individuals", countText(ds, ds.number_of_unique_individuals, "patients"),
        "count-individuals"),
      fact("Imaging studies (records)", countText(ds, ds.number_of_records, "studies"),
        "count-records"),
      fact("Series", countText(ds, ds.number_of_series, "series"), "count-series"),
      fact("Instances", countText(ds, ds.number_of_instances, "instances"), "count-instances"),
      fact("Typical age at study", ages, "age-range"),
      fact("Temporal coverage", temporal, "temporal"),
    );

    fill($("imaging"),
      valueTable("Modalities", "modalities", ds.modalities, ds, "Series"),
      valueTable("Body parts", "body_parts", ds.body_parts, ds, "Series"),
      valueTable("Manufacturers", "manufacturers", ds.manufacturers, ds, "Series"),
    );

    const completeness = Object.entries(ds.completeness || {});
    fill($("clinical"),
      el("h3", {}, "Coding systems"),
      el("ul", {className: "chips", dataset: {testid: "coding-systems"}},
        ds.coding_systems.map((s) => el("li", {title: s}, CODING_SYSTEMS[s] || s))),
      ds.conditions && ds.conditions.length
        ? valueTable("Conditions (ICD-10 categories)", "conditions", ds.conditions, ds, "Patients")
        : null,
      ds.suppressed.includes("conditions:other")
        ? el("p", {className: "note"}, "Conditions held by fewer patients than the threshold "
          + "are not listed.") : null,
      ds.clinical_terms && ds.clinical_terms.length
        ? el("table", {dataset: {testid: "table-clinical_terms"}},
          el("caption", {}, "Clinical terms (SNOMED CT, LOINC)"),
          el("thead", {}, el("tr", {}, el("th", {scope: "col"}, "Term"),
            el("th", {scope: "col"}, "Code"), el("th", {scope: "col"}, "Patients"))),
          el("tbody", {}, ds.clinical_terms.map((t) => el("tr", {},
            el("th", {scope: "row"}, t.display || t.code),
            el("td", {title: t.system}, `${CODING_SYSTEMS[t.system] || t.system} ${t.code}`),
            el("td", {}, fmt(t.patients))))))
        : null,
      el("h3", {}, "Completeness"),
      completeness.length ? el("table", {dataset: {testid: "completeness"}},
        el("thead", {}, el("tr", {}, el("th", {scope: "col"}, "Field"),
          el("th", {scope: "col"}, "Share of records"))),
        el("tbody", {}, completeness.map(([key, share]) => el("tr", {},
          el("th", {scope: "row"}, COMPLETENESS[key] || key),
          el("td", {}, share === null ? countText(ds, null, `completeness.${key}`)
            : `${Math.round(share * 100)}%`)))))
        : el("p", {}, "Not reported."),
    );

    renderQuality(ds.quality);
    fillEditForm(ds);
  }

  function renderQuality(quality) {
    const box = $("quality");
    if (!quality) {
      fill(box, el("p", {}, "No quality label has been computed for this dataset."));
      return;
    }
    fill(box,
      el("p", {}, "Label: ", qualityBadge(quality),
        ` (score ${Math.round(quality.score * 100)} of 100)`),
      el("ul", {className: "dimensions", dataset: {testid: "quality-dimensions"}},
        (quality.dimensions || []).map((d) => el("li",
          {dataset: {testid: "quality-dimension", name: d.name}},
          el("div", {className: "dimension-head"},
            el("span", {className: "dimension-name"}, DIMENSIONS[d.name] || d.name),
            el("meter", {min: 0, max: 1, value: d.score, "aria-label": `${d.name} score`}),
            el("span", {}, `${Math.round(d.score * 100)}%`)),
          d.notes && d.notes.length ? el("ul", {className: "notes"},
            d.notes.map((n) => el("li", {}, n))) : null))),
    );
  }

  // RDF needs an Accept header, which a plain link cannot send: fetch it and save the
  // answer as a file. Without JS the link still gives the dataset's JSON.
  async function downloadRdf(event) {
    event.preventDefault();
    const link = event.currentTarget;
    try {
      const resp = await fetch(datasetApi(identifier), {headers: {Accept: link.dataset.format}});
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      SPEWeb.saveBlob(await resp.blob(), `${identifier.replace(/\//g, "-")}.${link.dataset.ext}`);
    } catch (exc) {
      curateMessage("error", `The RDF could not be downloaded: ${exc.message}`);
    }
  }

  // ---- Curation -------------------------------------------------------------------

  const token = () => sessionStorage.getItem(TOKEN_KEY);
  const auth = () => ({Authorization: `Bearer ${token()}`});

  function curateMessage(kind, text) {
    const box = $("curate-result");
    box.className = kind === "error" ? "error" : kind === "ok" ? "ok" : "";
    fill(box, text ? el("p", {dataset: {testid: `curate-${kind}`}}, text) : "");
  }

  function fillEditForm(ds) {
    $("edit-title").value = ds.title;
    $("edit-description").value = ds.description;
    $("edit-keywords").value = ds.keywords.join(", ");
    $("edit-contact").value = ds.contact_email;
    $("edit-access").value = ds.access_rights;
  }

  function showSignedIn(me) {
    const signedIn = Boolean(me);
    $("signin").hidden = signedIn;
    $("signed-in").hidden = !signedIn;
    $("edit").hidden = !signedIn;
    if (me) {
      const roles = me.roles.join(", ") || "no role";
      $("who").textContent = `${me.name || me.subject} (${roles}`
        + `${me.institution ? `, ${me.institution}` : ""})`;
    }
  }

  // A pasted token is checked against /api/v1/me before it is kept, so a wrong paste is
  // told at once rather than at the first save.
  async function signIn(candidate) {
    try {
      const me = await request(`${root}/api/v1/me`, {headers: {Authorization: `Bearer ${candidate}`}});
      sessionStorage.setItem(TOKEN_KEY, candidate);
      showSignedIn(me);
      curateMessage("", "");
    } catch (exc) {
      sessionStorage.removeItem(TOKEN_KEY);
      showSignedIn(null);
      curateMessage("error", `Sign-in refused: ${exc.message}`);
    }
  }

  function changedFields() {
    const keywords = $("edit-keywords").value.split(",").map((k) => k.trim()).filter(Boolean);
    const wanted = {
      title: $("edit-title").value.trim(),
      description: $("edit-description").value.trim(),
      keywords,
      contact_email: $("edit-contact").value.trim(),
      access_rights: $("edit-access").value,
    };
    const changes = {};
    for (const [key, value] of Object.entries(wanted)) {
      if (JSON.stringify(value) !== JSON.stringify(current[key])) changes[key] = value;
    }
    return changes;
  }

  async function save(event) {
    event.preventDefault();
    const changes = changedFields();
    if (!Object.keys(changes).length) {
      curateMessage("info", "Nothing changed.");
      return;
    }
    $("edit").setAttribute("aria-busy", "true");
    try {
      await request(datasetApi(identifier), {
        method: "PATCH",
        headers: {...auth(), "Content-Type": "application/json", Accept: "application/json"},
        body: JSON.stringify(changes),
      });
      // Read it back whole: the quality label may have moved with the new description.
      render(await request(datasetApi(identifier), {headers: {Accept: "application/json"}}));
      curateMessage("ok", `Saved: ${Object.keys(changes).join(", ")}.`);
    } catch (exc) {
      const why = exc.status === 401 ? `${exc.message}. Sign in again.` : exc.message;
      if (exc.status === 401) {
        sessionStorage.removeItem(TOKEN_KEY);
        showSignedIn(null);
      }
      curateMessage("error", `Not saved: ${why}`);
    } finally {
      $("edit").removeAttribute("aria-busy");
    }
  }

  async function start() {
    $("signin").addEventListener("submit", (event) => {
      event.preventDefault();
      const candidate = $("token").value.trim();
      if (candidate) signIn(candidate);
    });
    $("signout").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      $("token").value = "";
      showSignedIn(null);
      curateMessage("", "");
    });
    $("edit").addEventListener("submit", save);
    for (const id of ["rdf-turtle", "rdf-jsonld"]) {
      $(id).href = datasetApi(identifier);
      $(id).addEventListener("click", downloadRdf);
    }

    try {
      if (!identifier) throw new SPE.ApiError(404, "not_found", "no dataset named in the address");
      render(await request(datasetApi(identifier), {headers: {Accept: "application/json"}}));
      $("dataset").hidden = false;
      if (token()) signIn(token());
    } catch (exc) {
      $("error").replaceChildren(el("strong", {}, "This dataset could not be shown. "),
        el("span", {dataset: {testid: "error-detail"}}, exc.message));
      $("error").hidden = false;
    } finally {
      $("loading").hidden = true;
    }
  }

  start();
})();
