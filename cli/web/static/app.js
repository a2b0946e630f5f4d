// Shared by every page of `trainctl ui`: the navigation, JSON requests, element building (data text always goes in
// as text, never as HTML), formatting, and the marking of where a model output differs from the golden answer.
"use strict";

const T = (window.trainctl = window.trainctl || {});

T.el = function (tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = String(v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
};

T.clear = function (node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
};

T.showError = function (message) {
  const box = document.getElementById("error");
  if (!box) return;
  box.textContent = message || "";
  box.style.display = message ? "block" : "none";
};

T.get = async function (path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  const r = await fetch(path + (q.toString() ? "?" + q : ""), { credentials: "same-origin" });
  const body = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
};

let writeToken = null;
T.post = async function (path, body) {
  if (writeToken === null) writeToken = (await T.get("/api/session")).write_token;
  const r = await fetch(path, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-Trainctl-Write": writeToken },
    body: JSON.stringify(body || {}),
  });
  const out = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error(out.error || r.statusText);
  return out;
};

T.fmt = function (v, digits) {
  if (v === null || v === undefined || (typeof v === "number" && !isFinite(v))) return "—";
  if (typeof v !== "number") return String(v);
  if (digits !== undefined) return v.toFixed(digits);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-2 || a >= 1e5) ? v.toExponential(1) : String(Math.round(v * 1e4) / 1e4);
};

T.pct = (v) => (v === null || v === undefined ? "—" : (100 * v).toFixed(1) + "%");

T.duration = function (s) {
  if (s === null || s === undefined) return "—";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}h ${m}m` : m ? `${m}m ${r}s` : `${r}s`;
};

T.table = function (columns, rows, cells, rowClass) {
  const head = T.el("tr", {}, columns.map((c) => T.el("th", { text: c })));
  const body = rows.map((r) => T.el("tr", { class: rowClass ? rowClass(r) : null },
    cells(r).map((c) => (c instanceof Node && c.tagName === "TD" ? c : T.el("td", {}, c)))));
  return T.el("table", {}, T.el("thead", {}, head), T.el("tbody", {}, body));
};

T.textCell = (text) => T.el("td", { class: "text", text: text === null || text === undefined ? "" : text });

// The golden answer and the output side by side, the part of the output that differs (between their common
// beginning and common end) marked.
T.diffCell = function (golden, output) {
  const a = String(golden || ""), b = String(output || "");
  let p = 0;
  while (p < a.length && p < b.length && a[p] === b[p]) p++;
  let s = 0;
  while (s < a.length - p && s < b.length - p && a[a.length - 1 - s] === b[b.length - 1 - s]) s++;
  const td = T.el("td", { class: "text" });
  td.appendChild(document.createTextNode(b.slice(0, p)));
  const mid = b.slice(p, b.length - s);
  if (mid || a !== b) td.appendChild(T.el("mark", { text: mid || "∅" }));
  td.appendChild(document.createTextNode(b.slice(b.length - s)));
  return td;
};

T.nav = function (here) {
  const pages = [["/", "Monitor"], ["/flags", "Flagged"], ["/compare", "Compare"], ["/evolution", "Evolution"],
    ["/rejected", "Rejections"]];
  const header = T.el("header", {}, T.el("b", { text: "trainctl" }),
    T.el("nav", {}, pages.map(([href, name]) => T.el("a", { href, class: href === here ? "here" : null, text: name }))),
    T.el("span", { id: "home", class: "muted" }));
  document.body.prepend(header);
  T.get("/api/session").then((s) => { writeToken = s.write_token; document.getElementById("home").textContent = s.home; })
    .catch((e) => T.showError(e.message));
};

// A uPlot line chart over steps (x is a plain number, not time).
T.lineChart = function (node, title, series, opts) {
  const width = Math.max(320, node.clientWidth || 460);
  return new uPlot({
    title, width, height: (opts && opts.height) || 220,
    scales: { x: { time: false }, y: { distr: opts && opts.log ? 3 : 1 } },
    legend: { live: true },
    axes: [{}, { size: 64, values: (u, splits) => splits.map((v) => T.fmt(v)) }],
    series: [{ label: "step" }, ...series.map(([label, stroke, extra]) => ({ label, stroke, width: 1.5, spanGaps: true,
      points: { show: false }, ...(extra || {}) }))],
  }, [[], ...series.map(() => [])], node);
};
