// Shared by every page of `trainctl ui`: the navigation, JSON requests, element building (data
// text always goes in as text, never as HTML), formatting, and the marking of where a model output
// differs from the golden answer.
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
  for (const [k, v] of Object.entries(params || {}))
    if (v !== null && v !== undefined && v !== "") q.set(k, v);
  const r = await fetch(path + (q.toString() ? "?" + q : ""), { credentials: "same-origin" });
  const body = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) {
    const err = new Error(body.error || r.statusText);
    // 404: nothing of that kind yet (a page shows its empty state, not an error)
    err.status = r.status;
    throw err;
  }
  return body;
};

let writeToken = null;
T.post = async function (path, body) {
  if (writeToken === null) writeToken = (await T.get("/api/session")).write_token;
  const r = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
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
  return a !== 0 && (a < 1e-2 || a >= 1e5)
    ? v.toExponential(1)
    : String(Math.round(v * 1e4) / 1e4);
};

T.pct = (v) => (v === null || v === undefined ? "—" : (100 * v).toFixed(1) + "%");

T.duration = function (s) {
  if (s === null || s === undefined) return "—";
  s = Math.round(s);
  const h = Math.floor(s / 3600),
    m = Math.floor((s % 3600) / 60),
    r = s % 60;
  return h ? `${h}h ${m}m` : m ? `${m}m ${r}s` : `${r}s`;
};

T.table = function (columns, rows, cells, rowClass) {
  const head = T.el(
    "tr",
    {},
    columns.map((c) => T.el("th", { text: c })),
  );
  const body = rows.map((r) =>
    T.el(
      "tr",
      { class: rowClass ? rowClass(r) : null },
      cells(r).map((c) => (c instanceof Node && c.tagName === "TD" ? c : T.el("td", {}, c))),
    ),
  );
  // Wide tables scroll inside their box, never the page (a phone is 390 px wide)
  return T.el(
    "div",
    { class: "scroll" },
    T.el("table", {}, T.el("thead", {}, head), T.el("tbody", {}, body)),
  );
};

T.textCell = (text) =>
  T.el("td", { class: "text", text: text === null || text === undefined ? "" : text });

// The golden answer and the output side by side, the part of the output that differs (between
// their common beginning and common end) marked.
T.diffCell = function (golden, output) {
  const a = String(golden || ""),
    b = String(output || "");
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
  const pages = [
    ["/", "Monitor"],
    ["/flags", "Flagged"],
    ["/compare", "Compare"],
    ["/evolution", "Evolution"],
    ["/rejected", "Rejections"],
  ];
  const badge = T.el("span", {
    class: "badge",
    id: "flag-badge",
    title: "open flags",
    style: "display:none",
  });
  const header = T.el(
    "header",
    {},
    T.el("b", { text: "trainctl" }),
    T.el(
      "nav",
      {},
      pages.map(([href, name]) =>
        T.el(
          "a",
          { href, class: href === here ? "here" : null, text: name },
          href === "/flags" ? badge : null,
        ),
      ),
    ),
    T.el("span", { id: "home", class: "muted" }),
  );
  document.body.prepend(header);
  T.get("/api/session")
    .then((s) => {
      writeToken = s.write_token;
      document.getElementById("home").textContent = s.home;
    })
    .catch((e) => T.showError(e.message));
  // The count of open flags, on every page, kept current
  const count = () =>
    T.get("/api/flags", { count: 1 })
      .then((doc) => {
        badge.textContent = String(doc.stats.open);
        badge.style.display = doc.stats.open ? "" : "none";
      })
      .catch(() => {});
  count();
  setInterval(count, 15000);
};

// Word-level difference of `output` from `golden`: a td with the output's words, those not in the
// golden answer marked, and the golden words it lacks shown struck through where they belong
// (longest common subsequence of words; past 600 words, only the differing middle is marked).
T.wordDiff = function (golden, output) {
  const a = String(golden || "").split(/(\s+)/),
    b = String(output || "").split(/(\s+)/);
  const td = T.el("td", { class: "text" });
  if (a.length > 1200 || b.length > 1200) return T.diffCell(golden, output);
  const n = a.length,
    m = b.length;
  const L = Array.from({ length: n + 1 }, () => new Uint16Array(m + 1));
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--)
      L[i][j] = a[i] === b[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
  let i = 0,
    j = 0,
    same = true;
  const put = (text, cls) =>
    td.appendChild(
      cls === null ? document.createTextNode(text) : T.el("mark", { class: cls || null, text }),
    );
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) {
      put(b[j], null);
      i++;
      j++;
    } else if (j < m && (i >= n || L[i][j + 1] >= L[i + 1][j])) {
      if (/\S/.test(b[j])) {
        put(b[j], "");
        same = false;
      } else put(b[j], null);
      j++;
    } else {
      if (/\S/.test(a[i])) {
        put(a[i], "del");
        put(" ", null);
        same = false;
      }
      i++;
    }
  }
  if (!same && !b.join("").trim()) td.appendChild(T.el("mark", { text: "∅" }));
  return td;
};

// Step ticks are whole numbers: uPlot picks its x tick spacing from these increments only.
const STEP_INCRS = [
  1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000, 20000, 50000, 1e5,
  2e5, 5e5, 1e6,
];

// A uPlot chart over training steps (or minutes since the run started, with x: "time"). spec:
//   title; x: "step" | "time"; y: {label, log, range};
//   y2: {label, range} (a second axis on the right);
//   series: [[label, colour, {scale: "y2", points: true (evaluations: markers, joined),
//             ...uPlot series options}]]
// Every axis carries its title and unit; step ticks are whole numbers.
T.chart = function (node, spec) {
  const width = Math.max(300, node.clientWidth || 460);
  const time = spec.x === "time";
  const scales = { x: { time: false }, y: { distr: spec.y && spec.y.log ? 3 : 1 } };
  if (spec.y && spec.y.range) scales.y.range = spec.y.range;
  const axes = [
    {
      label: time ? "minutes since the run started" : "step",
      labelSize: 18,
      incrs: time ? undefined : STEP_INCRS,
      values: (u, splits) => splits.map((v) => (time ? T.fmt(v) : String(Math.round(v)))),
    },
    {
      label: (spec.y && spec.y.label) || "",
      labelSize: 18,
      size: 60,
      values: (u, splits) => splits.map((v) => T.fmt(v)),
    },
  ];
  if (spec.y2) {
    scales.y2 = spec.y2.range ? { range: spec.y2.range } : {};
    axes.push({
      scale: "y2",
      side: 1,
      label: spec.y2.label,
      labelSize: 18,
      size: 60,
      grid: { show: false },
      values: (u, splits) => splits.map((v) => T.fmt(v)),
    });
  }
  const series = spec.series.map(([label, stroke, extra]) => {
    const o = {
      label,
      stroke,
      width: 1.5,
      spanGaps: true,
      points: { show: false },
      ...(extra || {}),
    };
    if (extra && extra.points === true) o.points = { show: true, size: 7, fill: stroke };
    return o;
  });
  return new uPlot(
    {
      title: spec.title,
      width,
      height: spec.height || 220,
      scales,
      axes,
      legend: { live: true },
      series: [
        {
          label: time ? "minutes" : "step",
          value: (u, v) => (v === null ? "—" : time ? T.fmt(v, 1) : String(v)),
        },
        ...series,
      ],
    },
    [[], ...series.map(() => [])],
    node,
  );
};

// A line chart over steps with one titled y axis (kept for the pages that need nothing more).
T.lineChart = function (node, title, series, opts) {
  return T.chart(node, {
    title,
    series,
    height: opts && opts.height,
    y: { label: (opts && opts.yLabel) || title, log: opts && opts.log },
  });
};

// What a page shows where there is nothing yet: what it will hold, and how to get there.
T.empty = function (what, how) {
  return T.el(
    "div",
    { class: "empty" },
    T.el("p", { text: what }),
    how ? T.el("p", { class: "muted" }, how) : null,
  );
};
