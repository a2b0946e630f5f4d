// Comparison viewer (`bench compare` in a page): pick runs; rows side by side with the reference, disagreeing rows
// marked; diff-only; label regex, name field / regex; agreement and kappa per pair. Rows come a page at a time.
"use strict";
(function () {
  const T = window.trainctl, el = T.el;
  T.nav("/compare");
  const PAGE = 200;
  const page = document.getElementById("page");
  const picks = el("div", { id: "runs", class: "controls" });
  const label = el("input", { type: "text", id: "label-regex", placeholder: "label regex, e.g. (Yes|No)" });
  const nameField = el("input", { type: "text", id: "name-field", placeholder: "name field, e.g. metadata.name" });
  const nameRegex = el("input", { type: "text", id: "name-regex", placeholder: "name regex on the prompt" });
  const diffOnly = el("input", { type: "checkbox", id: "diff-only" });
  const go = el("button", { class: "primary", id: "compare", text: "compare" });
  const summary = el("div", { id: "summary" }), rowsBox = el("div", { id: "rows" });
  const prev = el("button", { id: "prev", text: "◀ previous" }), next = el("button", { id: "next", text: "next ▶" });
  const where = el("span", { id: "where", class: "muted" });
  page.append(el("div", { class: "panel" }, el("h2", { text: "Runs" }), picks,
    el("div", { class: "controls" }, label, nameField, nameRegex, el("label", {}, diffOnly, " disagreements only"), go)),
  summary, el("div", { class: "panel" }, rowsBox, el("div", { class: "pager" }, prev, where, next)));

  let offset = 0, chosen = [];

  async function loadRuns() {
    const runs = await T.get("/api/bench/runs");
    T.clear(picks, runs.length ? runs.map((r, i) => el("label", {}, el("input", { type: "checkbox", class: "run",
      value: r.name, checked: i < 2 }), ` ${r.name} `, el("span", { class: "muted", text: `(${r.state}, ${r.done}/${r.total})` })))
      : el("p", { class: "muted", text: "no bench runs yet — `trainctl bench run` makes one" }));
  }

  async function load() {
    chosen = [...document.querySelectorAll("input.run:checked")].map((c) => c.value);
    if (chosen.length < 2) { T.showError("pick two or more runs"); return; }
    try {
      const doc = await T.get("/api/bench/compare", { runs: chosen.join(","), label_regex: label.value,
        name_field: nameField.value, name_regex: nameRegex.value, diff_only: diffOnly.checked ? "1" : "", offset, limit: PAGE });
      T.clear(summary, el("div", { class: "panel" },
        el("p", {}, `${doc.disagreements} prompts with disagreement` + (doc.label_regex ? `; comparing label /${doc.label_regex}/` : "; comparing whole answers")),
        T.table(["run A", "run B", "answered by both", "agree", "agreement", "Cohen's kappa"], doc.pairs,
          (p) => [p.a, p.b, String(p.both), String(p.agree), T.pct(p.agreement), T.fmt(p.kappa, 3)]),
        T.table(["run", "results", "errors", "no label"], doc.per_run, (r) => [r.run, String(r.results), String(r.errors), String(r.no_label || 0)])));
      const hasRef = doc.rows.some((r) => r.reference !== undefined);
      const cols = ["", "name", ...(hasRef ? ["reference"] : []), ...doc.runs];
      T.clear(rowsBox, T.table(cols, doc.rows, (r) => [r.disagree ? el("span", { class: "bad", text: "≠" }) : "",
        T.textCell(r.name || r.custom_id), ...(hasRef ? [T.textCell(r.reference)] : []),
        ...doc.runs.map((run) => (r[run] ? T.textCell(r[run].answer + (r[run].value !== null && r[run].value !== undefined && r[run].value !== r[run].answer ? `  → ${r[run].value}` : "")) : T.textCell("—")))],
      (r) => (r.disagree ? "disagree" : "agree")));
      where.textContent = doc.total_rows ? `rows ${offset + 1}–${offset + doc.rows.length} of ${doc.total_rows}` : "no rows";
      prev.disabled = offset === 0; next.disabled = offset + PAGE >= doc.total_rows;
      T.showError("");
    } catch (e) { T.showError(e.message); }
  }

  go.addEventListener("click", () => { offset = 0; load(); });
  diffOnly.addEventListener("change", () => { offset = 0; load(); });
  prev.addEventListener("click", () => { offset = Math.max(0, offset - PAGE); load(); });
  next.addEventListener("click", () => { offset += PAGE; load(); });
  window.addEventListener("load", async () => {
    try { await loadRuns(); if (document.querySelectorAll("input.run:checked").length >= 2) await load(); }
    catch (e) { T.showError(e.message); }
  });
})();
