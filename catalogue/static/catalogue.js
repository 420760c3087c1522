// What the catalogue's two pages share, on top of spe/web/static/common.js (SPEWeb).
// Everything from the API is written with textContent (via el()), never innerHTML, so
// curated or harvested text cannot inject markup into the page.
"use strict";

const SPE = (() => {
  const {root, el, fill, fmt, ApiError, pathUrl: idPath} = SPEWeb;
  const api = `${root}/api/v1/catalogue`;

  // The search's refusals name a query parameter: "page", not "query.page".
  const HOW = {unreachable: "the catalogue service could not be reached",
    drop: ["query", "body", "path"]};
  const request = (url, options = {}) => SPEWeb.request(url, options, HOW);

  const datasetApi = (identifier) => `${api}/datasets/${idPath(identifier)}`;
  const datasetPage = (identifier) => `${root}/catalogue/datasets/${idPath(identifier)}`;

  // Timestamps in one unambiguous form, whatever the reader's locale: "2026-01-31 14:05 UTC".
  function when(iso) {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? String(iso)
      : `${d.toISOString().slice(0, 16).replace("T", " ")} UTC`;
  }

  function ageRange(min, max) {
    if (min === null || min === undefined || max === null || max === undefined) return "not published";
    return `${min}–${max} years`;
  }

  const ACCESS_RIGHTS = {
    PUBLIC: "Public",
    RESTRICTED: "Restricted",
    NON_PUBLIC: "Non-public (data permit needed)",
  };

  function qualityBadge(quality) {
    if (!quality || !quality.label) return el("span", {className: "badge badge-none"}, "no label");
    const score = typeof quality.score === "number" ? ` (${Math.round(quality.score * 100)}%)` : "";
    return el("span", {
      className: `badge badge-${quality.label}`,
      dataset: {testid: "quality-label"},
      title: `Data quality and utility label: ${quality.label}${score}`,
    }, quality.label);
  }

  return {root, api, ApiError, request, idPath, datasetApi, datasetPage, el,
    fill, when, fmt, ageRange, ACCESS_RIGHTS, qualityBadge};
})();
