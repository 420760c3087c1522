// Shared helpers for the catalogue pages: API calls, error text, DOM building.
// Everything from the API is written with textContent (via el()), never innerHTML, so
// curated or harvested text cannot inject markup into the page.
"use strict";

const SPE = (() => {
  const meta = document.querySelector('meta[name="spe-root"]');
  const root = meta ? meta.content : "";
  const api = `${root}/api/v1/catalogue`;

  // The API's refusals are {"error": "...", "detail": "..." | [{loc, msg}, ...]}.
  function describeDetail(detail) {
    if (Array.isArray(detail)) {
      return detail.map((d) => {
        const loc = (d.loc || []).filter((p) => p !== "query" && p !== "body" && p !== "path");
        // pydantic prefixes a validator's own message with "Value error, ": noise to a reader.
        const msg = String(d.msg || "").replace(/^Value error, /, "");
        return loc.length ? `${loc.join(".")}: ${msg}` : msg;
      }).join("; ");
    }
    if (detail && typeof detail === "object") return JSON.stringify(detail);
    return detail ? String(detail) : "";
  }

  class ApiError extends Error {
    constructor(status, error, detail) {
      super(describeDetail(detail) || error || `HTTP ${status}`);
      this.status = status;
      this.error = error;
    }
  }

  // fetch + JSON, turning a non-2xx answer into an ApiError that carries the API's reason.
  async function request(url, options = {}) {
    let resp;
    try {
      resp = await fetch(url, options);
    } catch (exc) {
      if (exc.name === "AbortError") throw exc;
      throw new ApiError(0, "network", "the catalogue service could not be reached");
    }
    let body = null;
    try {
      body = await resp.json();
    } catch (_) {
      body = null;
    }
    if (!resp.ok) {
      throw new ApiError(resp.status, body && body.error,
        (body && body.detail) || `HTTP ${resp.status} ${resp.statusText}`);
    }
    return body;
  }

  // Identifiers hold a slash ("site-a/imaging-and-clinical-records"): encode each segment
  // and keep the slashes, as the {identifier:path} routes expect.
  function idPath(identifier) {
    return identifier.split("/").map(encodeURIComponent).join("/");
  }

  const datasetApi = (identifier) => `${api}/datasets/${idPath(identifier)}`;
  const datasetPage = (identifier) => `${root}/catalogue/datasets/${idPath(identifier)}`;

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

  // Timestamps in one unambiguous form, whatever the reader's locale: "2026-01-31 14:05 UTC".
  function when(iso) {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? String(iso)
      : `${d.toISOString().slice(0, 16).replace("T", " ")} UTC`;
  }

  const numberFormat = new Intl.NumberFormat("en");
  const fmt = (n) => (n === null || n === undefined ? "—" : numberFormat.format(n));

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

  return {root, api, ApiError, request, describeDetail, idPath, datasetApi, datasetPage, el,
    fill, when, fmt, ageRange, ACCESS_RIGHTS, qualityBadge};
})();
