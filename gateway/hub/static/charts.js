// The query page's charts: what the hub answers, drawn as inline SVG (no library, no outside
// asset). Every text from an answer goes in with createTextNode / textContent (via svg() and
// SPEWeb.el()), never as markup, so a node's or a variable's name cannot inject anything.
// Colours are SVG attributes or CSS classes (query.css): the page's CSP forbids inline styles.
//
// Each renderer takes the FederatedAnswer (and its `result` where there is one) and returns
// one <figure> with the chart, a table of the figures for screen readers and copying, and
// the reasons for every value that is suppressed, approximate or missing, as visible text.
"use strict";

const SPECharts = (() => {
  const {el, numberFormat} = SPEWeb;
  const NS = "http://www.w3.org/2000/svg";
  const W = 760;  // viewBox width; the SVG scales to the page (CSS max-width)
  let seq = 0;  // unique ids for each chart's hatch pattern and title

  // svg("rect", {x: 1, class: "bar"}, "text or child", ...): attributes as given (null and
  // undefined left out), strings as text nodes.
  function svg(tag, attrs = {}, ...children) {
    const node = document.createElementNS(NS, tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      node.setAttribute(key, String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // ---- numbers -------------------------------------------------------------------------

  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const dec = (digits) => new Intl.NumberFormat("en", {maximumFractionDigits: digits});
  const formats = [0, 1, 2, 3, 4].map(dec);

  // A float for people: about 3 significant figures, never "1e-7".
  function num(v) {
    if (!isNum(v)) return "—";
    const a = Math.abs(v);
    if (a === 0 || a >= 1000) return formats[0].format(v);
    if (a >= 100) return formats[1].format(v);
    if (a >= 1) return formats[2].format(v);
    if (a >= 0.01) return formats[3].format(v);
    if (a >= 0.0001) return new Intl.NumberFormat("en", {maximumSignificantDigits: 2}).format(v);
    return v.toExponential(1);
  }
  const count = (v) => (isNum(v) ? numberFormat.format(v) : "—");
  const pValue = (p) => (!isNum(p) ? "—" : p < 0.001 ? "< 0.001" : formats[3].format(p));

  // "Nice" tick values covering [lo, hi] (the first at or below lo, the last at or above
  // hi): about `n` of them, on 1, 2 or 5 times a power of ten.
  function ticks(lo, hi, n = 5) {
    if (!(hi > lo)) return [lo];
    const raw = (hi - lo) / n;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
    const out = [];
    const last = Math.ceil(hi / step - 1e-9) * step;
    for (let t = Math.floor(lo / step + 1e-9) * step; t <= last + step * 1e-9; t += step) {
      out.push(Math.abs(t) < step * 1e-9 ? 0 : Number(t.toPrecision(12)));
    }
    return out;
  }

  // A label that fits: cut to `max` characters with "…", the whole text in its <title>
  // (what a pointer or a screen reader gets).
  function fitted(text, max, attrs) {
    const full = String(text);
    const cut = full.length > max ? `${full.slice(0, max - 1)}…` : full;
    return svg("text", {...attrs, "data-full": full}, svg("title", {}, full), cut);
  }

  const scale = (d0, d1, r0, r1) => (v) => (d1 === d0 ? r0
    : r0 + ((v - d0) / (d1 - d0)) * (r1 - r0));

  // ---- cells: perturbed, suppressed, and why ---------------------------------------------

  // How far the shown value may be from the true one: the perturbation table's largest noise
  // where the answer gives it, else two standard deviations of the noise.
  function spread(cell) {
    if (!cell || cell.suppressed) return null;
    if (isNum(cell.max_noise) && cell.max_noise > 0) {
      return {half: cell.max_noise, what: `±${count(cell.max_noise)}: the largest noise added`};
    }
    if (isNum(cell.sd) && cell.sd > 0) {
      return {half: 2 * cell.sd,
        what: `±${num(2 * cell.sd)}: two standard deviations of the noise`};
    }
    return null;
  }

  // A count as shown: "≈1,234" when perturbed, "suppressed" when not shown.
  function shown(cell) {
    if (!cell) return "—";
    if (cell.suppressed || cell.value === null || cell.value === undefined) return "suppressed";
    return `${cell.perturbed ? "≈" : ""}${count(cell.value)}`;
  }

  // Numbered reasons under a chart: each distinct text once, "[1]" where it applies.
  class Reasons {
    constructor() { this.list = []; }

    mark(text) {
      if (!text) return "";
      let i = this.list.indexOf(text);
      if (i < 0) i = this.list.push(text) - 1;
      return `[${i + 1}]`;
    }

    node(testid = "reasons") {
      if (!this.list.length) return null;
      return el("ol", {className: "chart-reasons", dataset: {testid}},
        this.list.map((t, i) => el("li", {value: i + 1, dataset: {testid: "reason"}}, t)));
    }
  }

  // Why a cell is shown as it is: its own reason, else what the answer's threshold says.
  function cellReason(cell, threshold) {
    if (!cell) return null;
    if (cell.reason) return cell.reason;
    if (cell.suppressed) {
      return isNum(threshold) ? `Suppressed: fewer than ${threshold} patients (or withheld).`
        : "Suppressed.";
    }
    if (cell.perturbed) return "Perturbed: a small, consistent noise is added to the count.";
    return null;
  }

  function hatch(defs) {
    seq += 1;
    const id = `hatch-${seq}`;
    defs.append(svg("pattern", {id, width: 6, height: 6, patternUnits: "userSpaceOnUse",
      patternTransform: "rotate(45)"},
    svg("rect", {width: 6, height: 6, class: "hatch-bg"}),
    svg("line", {x1: 0, y1: 0, x2: 0, y2: 6, class: "hatch-line"})));
    return `url(#${id})`;
  }

  // An <svg> with an accessible name, its hatch pattern, and a <title>.
  function frame(height, label, kind) {
    seq += 1;
    const titleId = `chart-title-${seq}`;
    const defs = svg("defs");
    const root = svg("svg", {viewBox: `0 0 ${W} ${height}`, width: W, height, role: "img",
      "aria-labelledby": titleId, class: `chart chart-${kind}`, "data-testid": "chart",
      "data-kind": kind, preserveAspectRatio: "xMinYMin meet"},
    svg("title", {id: titleId}, label), defs);
    return {root, fill: hatch(defs)};
  }

  function figure(kind, caption, chart, ...rest) {
    return el("figure", {className: `chart-figure chart-figure-${kind}`,
      dataset: {testid: `chart-${kind}`}},
    el("figcaption", {}, caption), chart, ...rest);
  }

  function notesList(notes, testid = "result-notes") {
    return notes && notes.length
      ? el("ul", {className: "notes result-notes", dataset: {testid}},
        notes.map((t) => el("li", {}, String(t))))
      : null;
  }

  function axisX(g, x, y, values, label, fmt = num) {
    for (const v of values) {
      g.append(svg("line", {x1: x(v), x2: x(v), y1: y, y2: y + 4, class: "axis"}),
        svg("text", {x: x(v), y: y + 16, class: "tick", "text-anchor": "middle"}, fmt(v)));
    }
    if (label) {
      const [a, b] = [x(values[0]), x(values[values.length - 1])];
      g.append(svg("text", {x: (a + b) / 2, y: y + 32, class: "axis-label",
        "text-anchor": "middle"}, label));
    }
  }

  function gridX(g, x, y0, y1, values) {
    for (const v of values) {
      g.append(svg("line", {x1: x(v), x2: x(v), y1: y0, y2: y1, class: "grid"}));
    }
  }

  function axisY(g, y, x, values, label, fmt = num, top = 0) {
    for (const v of values) {
      g.append(svg("line", {x1: x - 4, x2: x, y1: y(v), y2: y(v), class: "axis"}),
        svg("text", {x: x - 6, y: y(v) + 4, class: "tick", "text-anchor": "end"}, fmt(v)));
    }
    if (label) {
      g.append(svg("text", {x: 12, y: top + 10, class: "axis-label"}, label));
    }
  }

  // ---- bars: counts per institution, strata per cell --------------------------------------

  // rows: [{group, label, cell, threshold, total, status}], drawn as horizontal bars grouped
  // by `group`; a suppressed cell is a hatched box up to its threshold ("somewhere below"),
  // a perturbed one has a whisker of its uncertainty; a row without a cell (an institution
  // that did not answer) says so in words.
  function bars(rows, {caption, kind, reasons}) {
    const groups = [];
    for (const r of rows) {
      let g = groups.find((x) => x.name === r.group);
      if (!g) groups.push(g = {name: r.group, rows: []});
      g.rows.push(r);
    }
    const grouped = groups.some((g) => g.name);
    const rowH = 20;
    const gap = grouped ? 14 : 4;
    const left = grouped ? 250 : 170;
    const right = 200;
    const top = 8;
    let height = top;
    for (const g of groups) height += (grouped ? 18 : 0) + g.rows.length * rowH + gap;
    const axisY0 = height;
    height += 40;
    const max = Math.max(1, ...rows.map((r) => {
      if (!r.cell) return 0;
      if (r.cell.suppressed) return isNum(r.threshold) ? r.threshold : 0;
      const s = spread(r.cell);
      return (r.cell.value || 0) + (s ? s.half : 0);
    }));
    const tv = ticks(0, max, 6);
    const hi = tv[tv.length - 1];
    const x = scale(0, hi, left, W - right);
    const {root, fill} = frame(height, caption, kind);
    const plot = svg("g", {class: "plot"});
    root.append(plot);
    gridX(plot, x, top, axisY0, tv);
    let y = top;
    for (const g of groups) {
      if (grouped) {
        plot.append(fitted(g.name, 60, {x: 4, y: y + 13, class: "group-label",
          "data-testid": "bar-group"}));
        y += 18;
      }
      for (const r of g.rows) {
        const cy = y + rowH / 2;
        const row = svg("g", {class: `bar-row${r.total ? " bar-total" : ""}`,
          "data-testid": "bar-row", "data-label": r.label});
        row.append(fitted(r.label, grouped ? 34 : 26, {x: grouped ? 18 : 4, y: cy + 4,
          class: r.total ? "bar-label strong" : "bar-label"}));
        const c = r.cell;
        if (!c) {
          row.append(svg("text", {x: x(0) + 4, y: cy + 4, class: "bar-missing",
            "data-testid": "bar-missing"}, `${r.status || "no answer"} ${reasons.mark(r.reason)}`));
        } else if (c.suppressed || c.value === null || c.value === undefined) {
          const w = isNum(r.threshold) ? x(r.threshold) - x(0) : 24;
          const why = cellReason(c, r.threshold);
          row.append(svg("rect", {x: x(0), y: y + 3, width: Math.max(w, 6), height: rowH - 6,
            fill, class: "bar-suppressed", "data-testid": "bar-suppressed"},
          svg("title", {}, why)),
          svg("text", {x: x(0) + Math.max(w, 6) + 6, y: cy + 4, class: "bar-value muted",
            "data-testid": "bar-value"},
          `suppressed${isNum(r.threshold) ? ` (< ${r.threshold})` : ""} ${reasons.mark(why)}`));
        } else {
          const s = spread(c);
          const why = c.perturbed ? cellReason(c, r.threshold) : c.reason;
          row.append(svg("rect", {x: x(0), y: y + 3, width: Math.max(x(c.value) - x(0), 1),
            height: rowH - 6, class: `bar${r.total ? " bar-combined" : ""}${c.perturbed
              ? " bar-perturbed" : ""}`, "data-testid": "bar"},
          svg("title", {}, `${r.label}: ${shown(c)}${s ? ` (${s.what})` : ""}`)));
          let end = x(c.value);
          if (s) {
            const [a, b] = [x(Math.max(0, c.value - s.half)), x(c.value + s.half)];
            row.append(svg("g", {class: "whisker", "data-testid": "whisker"},
              svg("line", {x1: a, x2: b, y1: cy, y2: cy}),
              svg("line", {x1: a, x2: a, y1: cy - 5, y2: cy + 5}),
              svg("line", {x1: b, x2: b, y1: cy - 5, y2: cy + 5})));
            end = Math.max(end, b);
          }
          row.append(svg("text", {x: end + 6, y: cy + 4, class: "bar-value",
            "data-testid": "bar-value"},
          `${shown(c)}${s ? ` ±${num(s.half)}` : ""} ${reasons.mark(why)}`.trim()));
        }
        plot.append(row);
        y += rowH;
      }
      y += gap;
    }
    plot.append(svg("line", {x1: x(0), x2: x(0), y1: top, y2: axisY0, class: "axis"}),
      svg("line", {x1: x(0), x2: x(hi), y1: axisY0, y2: axisY0, class: "axis"}));
    axisX(plot, x, axisY0, tv, "patients", count);
    return root;
  }

  function legend(items) {
    return el("p", {className: "chart-legend hint", dataset: {testid: "chart-legend"}},
      items.filter(Boolean).join(" "));
  }

  const STRATA = {sex: "Sex", age_band: "Age band", modality: "Modality", site: "Institution"};
  const keyText = (key) => Object.entries(key || {})
    .map(([k, v]) => `${STRATA[k] || k}: ${v}`).join(", ") || "all";
  const keyOf = (key) => Object.entries(key || {}).sort(([x], [y]) => (x < y ? -1 : 1))
    .map(([k, v]) => `${k}=${v}`).join("|");

  // The combined cell's uncertainty where the hub gives none: the sum of the largest noises
  // of the institutions' cells it adds up (noises are independent; this is their bound).
  function combined(cell, parts) {
    if (!cell || cell.suppressed || isNum(cell.max_noise) || isNum(cell.sd)) return cell;
    const shownParts = parts.filter((p) => p && !p.suppressed);
    if (!shownParts.some((p) => p.perturbed)) return cell;
    const out = {...cell, perturbed: true};
    if (shownParts.every((p) => !p.perturbed || isNum(p.max_noise))) {
      out.max_noise = shownParts.reduce((s, p) => s + (p.perturbed ? p.max_noise : 0), 0);
    } else if (shownParts.every((p) => !p.perturbed || isNum(p.sd))) {
      out.sd = Math.sqrt(shownParts.reduce((s, p) => s + (p.perturbed ? p.sd ** 2 : 0), 0));
    }
    return out;
  }

  function hasNoise(rows) {
    return rows.some((r) => r.cell && r.cell.perturbed);
  }

  function countLegend(rows) {
    return legend([
      hasNoise(rows) ? "≈ marks a perturbed count; the whisker shows how far it may be from "
        + "the true count." : null,
      rows.some((r) => r.cell && r.cell.suppressed)
        ? "A hatched box is a suppressed count: somewhere below the threshold, not shown." : null,
    ]);
  }

  // kind "count": one bar per institution and the combined total.
  function counts(a) {
    const reasons = new Reasons();
    const rows = a.nodes.map((n) => {
      const ans = n.answer;
      return {group: "", label: n.node_id, cell: ans ? ans.total : null,
        threshold: ans ? ans.threshold : null, status: n.status.replace("_", " "),
        reason: n.reason || (ans ? null : n.status)};
    });
    if (a.total) {
      rows.push({group: "", label: "All institutions", total: true,
        cell: combined(a.total, a.nodes.map((n) => n.answer && n.answer.total)),
        threshold: Math.max(0, ...a.nodes.filter((n) => n.answer).map((n) => n.answer.threshold))});
    }
    const chart = bars(rows, {caption: "Count per institution", kind: "counts", reasons});
    return figure("counts", "Count per institution", chart, countLegend(rows), reasons.node());
  }

  // kind "stratified": per cell, a bar per answering institution and the combined one.
  function strata(a) {
    const reasons = new Reasons();
    const answering = a.nodes.filter((n) => n.answer);
    const rows = [];
    for (const c of a.cells) {
      const key = keyOf(c.key);
      const group = keyText(c.key);
      const parts = [];
      for (const n of answering) {
        const nc = (n.answer.cells || []).find((x) => keyOf(x.key) === key) || null;
        parts.push(nc);
        // A level the institution does not list is structural there (it has no such
        // patients, or too few overall to list the level), not a suppressed count.
        rows.push({group, label: n.node_id, threshold: n.answer.threshold, cell: nc,
          status: "not listed", reason: nc ? null : "Not listed by this institution: a level "
            + "it does not have (structural), not a suppressed count."});
      }
      rows.push({group, label: "All institutions", total: true, cell: combined(c, parts),
        threshold: Math.max(0, ...answering.map((n) => n.answer.threshold))});
    }
    if (!rows.length) return null;
    const chart = bars(rows, {caption: "Count per cell and institution", kind: "strata",
      reasons});
    return figure("strata", "Count per cell and institution", chart, countLegend(rows),
      reasons.node());
  }

  // ---- histogram ----------------------------------------------------------------------

  function minThreshold(a) {
    const ts = a.nodes.filter((n) => n.answer && isNum(n.answer.threshold))
      .map((n) => n.answer.threshold);
    return ts.length ? Math.max(...ts) : null;
  }

  function histogram(r, a) {
    const reasons = new Reasons();
    const edges = (r.edges || []).filter(isNum);
    const cells = r.counts || [];
    const k = Math.min(cells.length, edges.length - 1);
    if (k < 1) return figure("histogram", `Histogram of ${r.variable}`, el("p", {}, "No bins."));
    const threshold = minThreshold(a);
    const left = 70;
    const top = 14;
    const plotH = 260;
    const height = top + plotH + 48;
    const max = Math.max(1, ...cells.slice(0, k).map((c) => {
      if (!c || c.suppressed) return threshold || 0;
      const s = spread(c);
      return (c.value || 0) + (s ? s.half : 0);
    }));
    const yv = ticks(0, max, 5);
    const hi = yv[yv.length - 1];
    const x = scale(edges[0], edges[k], left, W - 20);
    const y = scale(0, hi, top + plotH, top);
    const label = `Histogram of ${r.variable}`;
    const {root, fill} = frame(height, label, "histogram");
    const plot = svg("g", {class: "plot"});
    root.append(plot);
    for (const v of yv) {
      plot.append(svg("line", {x1: left, x2: W - 20, y1: y(v), y2: y(v), class: "grid"}));
    }
    const table = [];
    for (let i = 0; i < k; i += 1) {
      const c = cells[i] || {value: null, suppressed: true};
      const [x0, x1] = [x(edges[i]), x(edges[i + 1])];
      const range = `${num(edges[i])} to ${num(edges[i + 1])}`;
      const why = cellReason(c, threshold);
      table.push([range, shown(c), reasons.mark(c.suppressed || c.perturbed ? why : c.reason)]);
      if (c.suppressed || c.value === null || c.value === undefined) {
        const h = threshold ? y(0) - y(threshold) : 18;
        plot.append(svg("rect", {x: x0 + 1, y: y(0) - h, width: Math.max(x1 - x0 - 2, 1),
          height: h, fill, class: "bar-suppressed", "data-testid": "bar-suppressed"},
        svg("title", {}, `${range}: ${why}`)));
        plot.append(svg("text", {x: (x0 + x1) / 2, y: y(0) - h - 4, class: "tick muted",
          "text-anchor": "middle"}, reasons.mark(why)));
        continue;
      }
      const s = spread(c);
      plot.append(svg("rect", {x: x0 + 1, y: y(c.value), width: Math.max(x1 - x0 - 2, 1),
        height: Math.max(y(0) - y(c.value), 0), class: `bar${c.perturbed ? " bar-perturbed" : ""}`,
        "data-testid": "bar"},
      svg("title", {}, `${range}: ${shown(c)}${s ? ` (${s.what})` : ""}`)));
      if (s) {
        const cx = (x0 + x1) / 2;
        const [ya, yb] = [y(Math.max(0, c.value - s.half)), y(c.value + s.half)];
        plot.append(svg("g", {class: "whisker", "data-testid": "whisker"},
          svg("line", {x1: cx, x2: cx, y1: ya, y2: yb}),
          svg("line", {x1: cx - 4, x2: cx + 4, y1: ya, y2: ya}),
          svg("line", {x1: cx - 4, x2: cx + 4, y1: yb, y2: yb})));
      }
    }
    plot.append(svg("line", {x1: left, x2: W - 20, y1: y(0), y2: y(0), class: "axis"}),
      svg("line", {x1: left, x2: left, y1: top, y2: y(0), class: "axis"}));
    // Edge ticks, thinned so their labels do not overlap.
    const every = Math.max(1, Math.ceil((k + 1) / 12));
    axisX(plot, x, y(0), edges.slice(0, k + 1).filter((_, i) => i % every === 0 || i === k),
      r.variable);
    axisY(plot, y, left, yv, null, count);
    return figure("histogram", label, root,
      countLegend(cells.map((c) => ({cell: c}))),
      dataTable(["Bin", "Patients", "Note"], table, "histogram-table"),
      reasons.node(), notesList(r.notes));
  }

  function dataTable(head, rows, testid, caption = null) {
    return el("table", {className: "chart-table", dataset: {testid}},
      caption ? el("caption", {}, caption) : null,
      el("thead", {}, el("tr", {}, head.map((h) => el("th", {scope: "col"}, h)))),
      el("tbody", {}, rows.map((cells) => el("tr", {},
        cells.map((c, i) => (i === 0 ? el("th", {scope: "row"}, c)
          : el("td", {className: "num"}, c)))))));
  }

  // ---- contingency table: a heat-map table ------------------------------------------------

  function contingency(r, a) {
    const reasons = new Reasons();
    const threshold = minThreshold(a);
    const rows = r.row_levels || [];
    const cols = r.col_levels || [];
    const find = (rv, cv) => (r.cells || []).find((c) => c.key && String(c.key.row) === String(rv)
      && String(c.key.col) === String(cv));
    const values = (r.cells || []).filter((c) => !c.suppressed && isNum(c.value))
      .map((c) => c.value);
    const max = Math.max(1, ...values);
    const table = el("table", {className: "heat", dataset: {testid: "heat-table"},
      "aria-label": `${r.rows} by ${r.cols}`},
      el("thead", {}, el("tr", {},
        el("th", {scope: "col"}, `${r.rows} \\ ${r.cols}`),
        cols.map((cv) => el("th", {scope: "col"}, String(cv))))),
      el("tbody", {}, rows.map((rv) => el("tr", {dataset: {testid: "heat-row"}},
        el("th", {scope: "row"}, String(rv)),
        cols.map((cv) => {
          const c = find(rv, cv);
          if (!c) return el("td", {className: "heat-none", title: "not in the answer"}, "—");
          if (c.suppressed || !isNum(c.value)) {
            return el("td", {className: "heat-suppressed", dataset: {testid: "heat-suppressed"}},
              "suppressed ",
              el("span", {className: "mark"}, reasons.mark(cellReason(c, threshold))));
          }
          const level = Math.min(5, Math.floor((c.value / max) * 5.999));
          const s = spread(c);
          return el("td", {className: `num heat-${level}`, dataset: {testid: "heat-cell"}},
            shown(c), s ? el("span", {className: "pm"}, ` ±${num(s.half)}`) : null,
            c.perturbed || c.reason ? el("span", {className: "mark"},
              ` ${reasons.mark(cellReason(c, threshold))}`) : null);
        })))));
    return figure("table", `${r.rows} by ${r.cols}`, table,
      countLegend((r.cells || []).map((c) => ({cell: c}))), reasons.node(), notesList(r.notes));
  }

  // ---- correlation matrix -------------------------------------------------------------

  // Blue for positive, red for negative, stronger for larger |r|.
  function corrColour(v) {
    const t = Math.min(1, Math.abs(v));
    const mix = (c) => Math.round(255 + (c - 255) * t);
    return v >= 0 ? `rgb(${mix(31)},${mix(95)},${mix(168)})`
      : `rgb(${mix(178)},${mix(34)},${mix(34)})`;
  }

  function correlation(r) {
    const names = (r.variables || []).map(String);
    const m = r.matrix || [];
    const k = names.length;
    const left = 220;
    const top = 20;
    const size = Math.min(90, Math.floor((W - left - 20) / Math.max(k, 1)));
    const height = top + k * size + 30 + 24;
    const label = `Correlation of ${names.join(", ")}`;
    const {root} = frame(height, label, "correlation");
    const plot = svg("g", {class: "plot"});
    root.append(plot);
    for (let i = 0; i < k; i += 1) {
      plot.append(fitted(`${i + 1}. ${names[i]}`, 34, {x: left - 8,
        y: top + i * size + size / 2 + 4, class: "bar-label", "text-anchor": "end"}));
      plot.append(svg("text", {x: left + i * size + size / 2, y: top + k * size + 18,
        class: "tick", "text-anchor": "middle"}, String(i + 1)));
      for (let j = 0; j < k; j += 1) {
        const v = m[i] ? m[i][j] : null;
        const cellG = svg("g", {"data-testid": "corr-cell"});
        cellG.append(svg("rect", {x: left + j * size, y: top + i * size, width: size - 2,
          height: size - 2, fill: isNum(v) ? corrColour(v) : "#eceff3",
          class: "corr"},
        svg("title", {}, `${names[i]} and ${names[j]}: ${isNum(v) ? num(v) : "not shown"}`)));
        cellG.append(svg("text", {x: left + j * size + size / 2 - 1,
          y: top + i * size + size / 2 + 4, "text-anchor": "middle",
          class: isNum(v) && Math.abs(v) > 0.55 ? "corr-text light" : "corr-text"},
        isNum(v) ? formats[2].format(v) : "—"));
        plot.append(cellG);
      }
    }
    plot.append(svg("text", {x: left, y: top - 6, class: "axis-label"},
      "columns: the same variables, by number"));
    return figure("correlation", `${label}${isNum(r.n) ? ` (n = ${count(r.n)})` : ""}`, root,
      legend(["Pearson correlation: blue positive, red negative; the stronger the colour, the "
        + "closer to ±1.", r.perturbed ? "The correlations are perturbed (approximate)." : null]),
      notesList(r.notes));
  }

  // ---- regression: a forest plot --------------------------------------------------------

  const INTERCEPT = /^(const|intercept|\(intercept\)|_intercept)$/i;

  function forest(r) {
    const logistic = r.kind === "logistic";
    const tr = logistic ? Math.exp : (v) => v;
    const all = r.coefficients || [];
    const plotted = all.filter((c) => !INTERCEPT.test(String(c.name)));
    const rowsToPlot = plotted.length ? plotted : all;
    const left = 230;
    const right = 180;
    const top = 26;
    const rowH = 26;
    const height = top + Math.max(rowsToPlot.length, 1) * rowH + 50;
    const finite = rowsToPlot.flatMap((c) => [c.ci_low, c.ci_high, c.estimate]).filter(isNum)
      .map(tr).filter((v) => Number.isFinite(v) && (!logistic || v > 0));
    const ref = logistic ? 1 : 0;
    let lo = Math.min(ref, ...finite);
    let hi = Math.max(ref, ...finite);
    let tv;
    let x;
    if (logistic) {
      lo = Math.max(lo, 1e-3);
      hi = Math.min(hi, 1e3);
      const l0 = Math.log(lo) - 0.1;
      const l1 = Math.log(hi) + 0.1;
      const toX = scale(l0, l1, left, W - right);
      x = (v) => toX(Math.log(Math.min(Math.max(v, Math.exp(l0)), Math.exp(l1))));
      const cand = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 4, 5, 10,
        20, 50, 100, 200, 500, 1000];
      const within = (v) => Math.log(v) >= l0 && Math.log(v) <= l1;
      tv = cand.filter(within);
      if (tv.length > 7) tv = tv.filter((v) => [0.01, 0.1, 0.5, 1, 2, 10, 100].includes(v));
      if (tv.length < 4) {
        tv = [...new Set([...tv, ...[0.6, 0.7, 0.8, 0.9, 1.25, 1.5, 1.75, 2.5, 3].filter(within)])]
          .sort((p, q) => p - q);
      }
    } else {
      const pad = (hi - lo) * 0.05 || 1;
      tv = ticks(lo - pad, hi + pad, 6);
      lo = Math.min(lo - pad, tv[0]);
      hi = Math.max(hi + pad, tv[tv.length - 1]);
      x = scale(lo, hi, left, W - right);
    }
    const what = logistic ? "odds ratio" : "coefficient";
    const label = `${logistic ? "Logistic" : "Linear"} regression of ${r.outcome}: ${what}s `
      + "with 95% confidence intervals";
    const {root} = frame(height, label, "forest");
    const plot = svg("g", {class: "plot"});
    root.append(plot);
    const y0 = top;
    const y1 = top + rowsToPlot.length * rowH;
    gridX(plot, x, y0, y1, tv);
    plot.append(svg("line", {x1: x(ref), x2: x(ref), y1: y0 - 6, y2: y1, class: "ref-line",
      "data-testid": "ref-line"}));
    plot.append(svg("text", {x: left, y: 14, class: "axis-label"}, what),
      svg("text", {x: W - right + 10, y: 14, class: "axis-label"},
        `${logistic ? "OR" : "estimate"} [95% CI]`));
    rowsToPlot.forEach((c, i) => {
      const cy = top + i * rowH + rowH / 2;
      const g = svg("g", {class: "forest-row", "data-testid": "forest-row",
        "data-name": String(c.name)});
      g.append(fitted(c.name, 30, {x: left - 10, y: cy + 4, class: "bar-label",
        "text-anchor": "end", "data-testid": "forest-label"}));
      if (isNum(c.estimate)) {
        const e = tr(c.estimate);
        if (isNum(c.ci_low) && isNum(c.ci_high)) {
          g.append(svg("line", {x1: x(tr(c.ci_low)), x2: x(tr(c.ci_high)), y1: cy, y2: cy,
            class: "ci", "data-testid": "forest-ci"}));
        }
        g.append(svg("rect", {x: x(e) - 5, y: cy - 5, width: 10, height: 10, class: "point",
          "data-testid": "forest-point"},
        svg("title", {}, `${c.name}: ${num(e)} [${num(tr(c.ci_low))}, ${num(tr(c.ci_high))}]`)));
        g.append(svg("text", {x: W - right + 10, y: cy + 4, class: "bar-value"},
          `${r.perturbed ? "≈" : ""}${num(e)} [${num(tr(c.ci_low))}, ${num(tr(c.ci_high))}]`));
      } else {
        g.append(svg("text", {x: left, y: cy + 4, class: "bar-missing"},
          `not shown${c.reason ? `: ${c.reason}` : ""}`));
      }
      plot.append(g);
    });
    plot.append(svg("line", {x1: left, x2: W - right, y1: y1, y2: y1, class: "axis"}));
    axisX(plot, x, y1, tv, logistic ? "odds ratio (log scale); 1 = no association"
      : "change in the outcome per unit; 0 = no association");
    const head = logistic
      ? ["Term", "Log-odds", "SE", "Odds ratio", "95% CI (OR)", "p"]
      : ["Term", "Estimate", "SE", "95% CI", "p"];
    const rows = all.map((c) => {
      const ci = `${num(tr(c.ci_low))} to ${num(tr(c.ci_high))}`;
      return logistic
        ? [String(c.name), num(c.estimate), num(c.se), num(tr(c.estimate)), ci, pValue(c.p)]
        : [String(c.name), num(c.estimate), num(c.se), ci, pValue(c.p)];
    });
    const omitted = plotted.length && plotted.length < all.length
      ? "The intercept is in the table, not the plot." : null;
    return figure("forest", `${label}${isNum(r.n) ? ` (n = ${count(r.n)})` : ""}`, root,
      legend([`Each square is the ${what}, its line the 95% confidence interval; a line `
        + `crossing ${ref} means no clear association.`, omitted,
      r.perturbed ? "The fit is perturbed (approximate)." : null]),
      dataTable(head, rows, "coefficients-table"), notesList(r.notes));
  }

  // ---- survival: Kaplan-Meier step curve with its band ------------------------------------

  function survival(r) {
    const steps = (r.steps || []).filter((s) => isNum(s.t) && isNum(s.survival))
      .sort((p, q) => p.t - q.t);
    const unit = r.unit || "day";
    const left = 70;
    const top = 14;
    const plotH = 260;
    const height = top + plotH + 90;
    const tMax = Math.max(1, ...steps.map((s) => s.t));
    const tv = ticks(0, tMax, 6);
    const hi = tv[tv.length - 1];
    const x = scale(0, hi, left, W - 30);
    const y = scale(0, 1, top + plotH, top);
    const label = `Survival (Kaplan-Meier) over ${unit}s`;
    const {root} = frame(height, label, "survival");
    const plot = svg("g", {class: "plot"});
    root.append(plot);
    for (const v of [0, 0.25, 0.5, 0.75, 1]) {
      plot.append(svg("line", {x1: left, x2: W - 30, y1: y(v), y2: y(v), class: "grid"}));
    }
    // The band: the upper bound stepped forward, then the lower bound stepped back.
    let upper = `M${x(0)},${y(1)}`;
    let lower = "";
    let line = `M${x(0)},${y(1)}`;
    let prev = {s: 1, lo: 1, hi: 1};
    const lowerPts = [[x(0), y(1)]];
    for (const s of steps) {
      const lo = isNum(s.ci_low) ? s.ci_low : s.survival;
      const up = isNum(s.ci_high) ? s.ci_high : s.survival;
      line += ` H${x(s.t)} V${y(s.survival)}`;
      upper += ` H${x(s.t)} V${y(up)}`;
      lowerPts.push([x(s.t), y(prev.lo)], [x(s.t), y(lo)]);
      prev = {s: s.survival, lo, hi: up};
    }
    // Drawn up to the last step only: beyond it the answer says nothing.
    const end = x(steps.length ? steps[steps.length - 1].t : 0);
    lowerPts.push([end, y(prev.lo)]);
    lower = lowerPts.reverse().map(([px, py]) => `L${px},${py}`).join(" ");
    plot.append(svg("path", {d: `${upper} ${lower} Z`, class: "band",
      "data-testid": "survival-band"}));
    plot.append(svg("path", {d: line, class: "curve", "data-testid": "survival-curve"},
      svg("title", {}, label)));
    plot.append(svg("line", {x1: left, x2: W - 30, y1: y(0), y2: y(0), class: "axis"}),
      svg("line", {x1: left, x2: left, y1: top, y2: y(0), class: "axis"}));
    axisX(plot, x, y(0), tv, `time (${unit}s)`);
    axisY(plot, y, left, [0, 0.25, 0.5, 0.75, 1], null, (v) => `${Math.round(v * 100)}%`);
    // Number at risk under the axis, at each tick.
    const atRisk = (t) => {
      const later = steps.find((s) => s.t >= t);
      return later && isNum(later.at_risk) ? count(later.at_risk) : "—";
    };
    const riskY = y(0) + 56;
    plot.append(svg("text", {x: 4, y: riskY, class: "tick strong"}, "at risk"));
    for (const t of tv) {
      plot.append(svg("text", {x: x(t), y: riskY, class: "tick", "text-anchor": "middle",
        "data-testid": "at-risk"}, atRisk(t)));
    }
    const median = steps.find((s) => s.survival <= 0.5);
    const summaryText = [
      isNum(r.n) ? `n = ${count(r.n)}` : null,
      `${count(steps.reduce((acc, s) => acc + (isNum(s.events) ? s.events : 0), 0))} events`,
      median ? `median survival ${num(median.t)} ${unit}s` : "median survival not reached",
    ].filter(Boolean).join("; ");
    const table = el("details", {className: "steps"},
      el("summary", {}, `The ${steps.length} steps as a table`),
      dataTable([`Time (${unit}s)`, "At risk", "Events", "Survival", "95% CI"],
        steps.map((s) => [num(s.t), count(s.at_risk), count(s.events),
          `${formats[1].format(s.survival * 100)}%`,
          `${isNum(s.ci_low) ? formats[1].format(s.ci_low * 100) : "—"}% to ${
            isNum(s.ci_high) ? formats[1].format(s.ci_high * 100) : "—"}%`]), "survival-table"));
    return figure("survival", label, root,
      el("p", {className: "chart-summary", dataset: {testid: "survival-summary"}}, summaryText),
      legend(["The line is the share still without the end event; the shaded band its 95% "
        + "confidence interval.", r.perturbed ? "The counts behind it are perturbed." : null]),
      table, notesList(r.notes));
  }

  // ---- mean and quantiles: a small axis with a point, an interval, a box ------------------

  function mean(r) {
    const approx = r.perturbed ? "≈" : "";
    const ci = Array.isArray(r.ci) ? r.ci : [null, null];
    const pts = [r.mean, ci[0], ci[1]].filter(isNum);
    if (isNum(r.mean) && isNum(r.sd)) pts.push(r.mean - r.sd, r.mean + r.sd);
    const parts = [];
    if (pts.length) {
      const left = 40;
      const height = 100;
      const lo = Math.min(...pts);
      const hi = Math.max(...pts);
      const tv = ticks(lo, hi > lo ? hi : lo + 1, 6);
      const x = scale(tv[0], tv[tv.length - 1], left, W - 40);
      const label = `Mean of ${r.variable}`;
      const {root} = frame(height, label, "mean");
      const plot = svg("g", {class: "plot"});
      root.append(plot);
      const cy = 36;
      if (isNum(r.mean) && isNum(r.sd)) {
        plot.append(svg("rect", {x: x(r.mean - r.sd), y: cy - 12,
          width: x(r.mean + r.sd) - x(r.mean - r.sd), height: 24, class: "sd-box",
          "data-testid": "sd-box"},
        svg("title", {}, `mean ± sd: ${num(r.mean - r.sd)} to ${num(r.mean + r.sd)}`)));
      }
      if (isNum(ci[0]) && isNum(ci[1])) {
        plot.append(svg("g", {class: "whisker strong", "data-testid": "whisker"},
          svg("line", {x1: x(ci[0]), x2: x(ci[1]), y1: cy, y2: cy}),
          svg("line", {x1: x(ci[0]), x2: x(ci[0]), y1: cy - 7, y2: cy + 7}),
          svg("line", {x1: x(ci[1]), x2: x(ci[1]), y1: cy - 7, y2: cy + 7})));
      }
      if (isNum(r.mean)) {
        plot.append(svg("circle", {cx: x(r.mean), cy, r: 5, class: "point",
          "data-testid": "mean-point"}, svg("title", {}, `mean ${approx}${num(r.mean)}`)));
      }
      plot.append(svg("line", {x1: left, x2: W - 40, y1: 62, y2: 62, class: "axis"}));
      axisX(plot, x, 62, tv, null);
      parts.push(root, legend(["The dot is the mean, the whisker its 95% confidence interval, "
        + "the box one standard deviation either side."]));
    }
    const rows = [["Patients (n)", `${approx}${count(r.n)}`], ["Mean", `${approx}${num(r.mean)}`],
      ["Standard deviation", `${approx}${num(r.sd)}`],
      ["95% confidence interval", `${num(ci[0])} to ${num(ci[1])}`]];
    return figure("mean", `Mean of ${r.variable}${r.perturbed ? " (perturbed)" : ""}`,
      ...parts, dataTable(["", "Value"], rows, "mean-table"), notesList(r.notes));
  }

  function quantiles(r) {
    const approx = r.perturbed ? "≈" : "";
    const qs = (r.quantiles || []).filter((q) => isNum(q.p)).sort((a, b) => a.p - b.p);
    const vals = qs.map((q) => q.value).filter(isNum);
    const parts = [];
    if (vals.length) {
      const left = 40;
      const height = 110;
      const lo = Math.min(...vals);
      const hi = Math.max(...vals);
      const tv = ticks(lo, hi > lo ? hi : lo + 1, 6);
      const x = scale(tv[0], tv[tv.length - 1], left, W - 40);
      const label = `Quantiles of ${r.variable}`;
      const {root} = frame(height, label, "quantiles");
      const plot = svg("g", {class: "plot"});
      root.append(plot);
      const cy = 44;
      const at = (p) => (qs.find((q) => Math.abs(q.p - p) < 1e-9) || {}).value;
      const [q1, q2, q3] = [at(0.25), at(0.5), at(0.75)];
      plot.append(svg("line", {x1: x(vals[0]), x2: x(vals[vals.length - 1]), y1: cy, y2: cy,
        class: "whisker-line", "data-testid": "whisker"}));
      if (isNum(q1) && isNum(q3)) {
        plot.append(svg("rect", {x: x(q1), y: cy - 14, width: Math.max(x(q3) - x(q1), 1),
          height: 28, class: "box", "data-testid": "quantile-box"}));
      }
      if (isNum(q2)) {
        plot.append(svg("line", {x1: x(q2), x2: x(q2), y1: cy - 14, y2: cy + 14,
          class: "median"}));
      }
      for (const q of qs) {
        if (!isNum(q.value)) continue;
        plot.append(svg("g", {"data-testid": "quantile-mark"},
          svg("line", {x1: x(q.value), x2: x(q.value), y1: cy - 8, y2: cy + 8, class: "q-mark"}),
          svg("text", {x: x(q.value), y: cy - 18, "text-anchor": "middle", class: "tick"},
            `${formats[1].format(q.p * 100)}%`)));
      }
      plot.append(svg("line", {x1: left, x2: W - 40, y1: 72, y2: 72, class: "axis"}));
      axisX(plot, x, 72, tv, null);
      parts.push(root, legend(["Each mark is a quantile (its percentage above it); the box "
        + "spans the 25th to the 75th percentile, the line inside is the median."]));
    }
    const rows = qs.map((q) => [`${formats[1].format(q.p * 100)}%`,
      isNum(q.value) ? `${approx}${num(q.value)}` : `not shown${q.reason ? `: ${q.reason}` : ""}`]);
    const nText = isNum(r.n) ? ` (n = ${approx}${count(r.n)})` : "";
    return figure("quantiles", `Quantiles of ${r.variable}${nText}`,
      ...parts, dataTable(["Quantile", "Value"], rows, "quantiles-table"), notesList(r.notes));
  }

  // ---- dispatch -------------------------------------------------------------------------

  const RESULT = {histogram, table: contingency, correlation, linear: forest, logistic: forest,
    survival, mean, quantiles};

  // The drawing for an answer, or null when there is nothing to draw (a yes/no answer).
  function draw(a) {
    if (a.kind === "count") return a.nodes.length ? counts(a) : null;
    if (a.kind === "stratified") return a.cells && a.cells.length ? strata(a) : null;
    const r = a.result;
    if (!r || typeof r !== "object") return null;
    const render = RESULT[r.kind] || RESULT[a.kind];
    if (render) return render(r, a);
    // A kind this page does not draw yet: its figures as they came, as text.
    return figure("raw", "The combined result", el("pre", {className: "raw-result",
      dataset: {testid: "raw-result"}}, JSON.stringify(r, null, 2)), notesList(r.notes));
  }

  return {draw, svg, spread, shown, num, ticks};
})();
