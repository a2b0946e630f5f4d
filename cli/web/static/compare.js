// Comparison viewer (`bench compare` in a page): pick runs (each with its model, adapter and
// backend); rows side by side with the prompt and the reference, each run's accuracy against the
// reference and the cells that match it marked, answers cut at max_tokens marked, disagreeing rows
// marked; a word-level diff against one chosen run; text search; diff-only; label regex (labels as
// coloured badges), name field / regex; agreement and kappa per pair.
"use strict";
(function () {
  const T = window.trainctl,
    el = T.el;
  T.nav("/compare");
  const PAGE = 200;
  const page = document.getElementById("page");
  const picks = el("div", { id: "runs", class: "picks" });
  const field = (id, label, hint) =>
    el(
      "label",
      { class: "field" },
      el("span", { text: label }),
      el("input", { type: "text", id, placeholder: hint, "aria-label": label }),
    );
  const labelF = field("label-regex", "label regex", "(Yes|No)"),
    nameF = field("name-field", "name field", "metadata.name"),
    regexF = field("name-regex", "name regex on the prompt", "Name: (\\w+)"),
    searchF = field("search", "search text", "words in any answer");
  const input = (f) => f.querySelector("input");
  const diffOnly = el("input", { type: "checkbox", id: "diff-only" });
  const against = el(
    "select",
    { id: "diff-against", "aria-label": "mark words that differ from" },
    el("option", { value: "", text: "no word diff" }),
  );
  const go = el("button", { class: "primary", id: "compare", text: "compare" });
  const summary = el("div", { id: "summary" }),
    rowsBox = el("div", { id: "rows" });
  const prev = el("button", { id: "prev", text: "◀ previous" }),
    next = el("button", { id: "next", text: "next ▶" });
  const where = el("span", { id: "where", class: "muted" });
  page.append(
    el(
      "div",
      { class: "panel" },
      el("h2", { text: "Runs" }),
      picks,
      el("div", { class: "controls" }, labelF, nameF, regexF, searchF),
      el(
        "div",
        { class: "controls" },
        el("label", {}, diffOnly, " disagreements only"),
        el("label", {}, "word diff against ", against),
        go,
      ),
    ),
    summary,
    el("div", { class: "panel" }, rowsBox, el("div", { class: "pager" }, prev, where, next)),
  );

  let offset = 0,
    chosen = [];

  async function loadRuns() {
    const runs = await T.get("/api/bench/runs");
    const short = (p) => (p ? String(p).split("/").slice(-2).join("/") : "none");
    T.clear(
      picks,
      runs.length
        ? runs.map((r, i) =>
            el(
              "label",
              { class: "pick" },
              el("input", { type: "checkbox", class: "run", value: r.name, checked: i < 2 }),
              " ",
              el("b", { text: r.name }),
              el("span", {
                class: "muted",
                text:
                  ` ${r.model} · adapter ${short(r.adapter)} · ${r.backend}` +
                  ` · ${r.state}, ${r.done}/${r.total}`,
              }),
            ),
          )
        : T.empty(
            "No bench runs yet.",
            "`trainctl bench run --job N` answers a job's test split; `--base` the base model's.",
          ),
    );
  }

  // A label's badge colour: the same label has the same colour in every row
  function badge(value) {
    let h = 0;
    for (const ch of String(value)) h = (h * 31 + ch.charCodeAt(0)) % 360;
    return el("span", {
      class: "pill label",
      style: `background:hsl(${h},70%,90%);color:hsl(${h},60%,28%)`,
      text: value,
    });
  }

  function answerCell(cell, doc, base) {
    if (!cell) return T.textCell("—");
    const td =
      base !== undefined && base !== null
        ? T.wordDiff(base, cell.answer)
        : T.textCell(cell.answer);
    if (doc.label_regex) td.prepend(badge(cell.value), " ");
    if (cell.matches) {
      td.classList.add("match");
      td.prepend(el("span", { class: "ok", text: "✓ ", title: "matches the reference" }));
    }
    if (cell.cut)
      td.append(
        el("span", {
          class: "pill warning",
          text: "cut at max_tokens",
          title: "finish_reason: length",
        }),
      );
    return td;
  }

  function promptCell(text) {
    if (!text) return T.textCell("—");
    const first = text.split("\n").pop();
    return el(
      "td",
      { class: "text" },
      el(
        "details",
        {},
        el("summary", { text: first.length > 80 ? first.slice(0, 80) + "…" : first }),
        el("pre", { class: "prompt", text }),
      ),
    );
  }

  async function load() {
    chosen = [...document.querySelectorAll("input.run:checked")].map((c) => c.value);
    if (chosen.length < 2) {
      T.showError("pick two or more runs");
      return;
    }
    const keep = against.value;
    T.clear(
      against,
      el("option", { value: "", text: "no word diff" }),
      chosen.map((r) => el("option", { value: r, text: r })),
    );
    if (chosen.includes(keep)) against.value = keep;
    try {
      const doc = await T.get("/api/bench/compare", {
        runs: chosen.join(","),
        label_regex: input(labelF).value,
        name_field: input(nameF).value,
        name_regex: input(regexF).value,
        q: input(searchF).value,
        diff_only: diffOnly.checked ? "1" : "",
        offset,
        limit: PAGE,
      });
      const withRef = doc.per_run.some((r) => r.with_reference);
      T.clear(
        summary,
        el(
          "div",
          { class: "panel" },
          el(
            "p",
            {},
            `${doc.disagreements} prompts with disagreement` +
              (doc.label_regex
                ? `; comparing label /${doc.label_regex}/`
                : "; comparing whole answers (tool calls by name and arguments)"),
          ),
          T.table(
            [
              "run",
              "results",
              ...(withRef ? ["matches the reference"] : []),
              "cut at max_tokens",
              "errors",
              "no label",
            ],
            doc.per_run,
            (r) => [
              r.run,
              String(r.results),
              ...(withRef
                ? [
                    r.with_reference
                      ? `${r.match_reference} of ${r.with_reference} ` +
                        `(${T.pct(r.match_reference / r.with_reference)})`
                      : "—",
                  ]
                : []),
              String(r.cut || 0),
              String(r.errors),
              String(r.no_label || 0),
            ],
          ),
          T.table(
            ["run A", "run B", "answered by both", "agree", "agreement", "Cohen's kappa"],
            doc.pairs,
            (p) => [
              p.a,
              p.b,
              String(p.both),
              String(p.agree),
              T.pct(p.agreement),
              T.fmt(p.kappa, 3),
            ],
          ),
          withRef && !doc.label_regex
            ? el("p", {
                class: "muted",
                text:
                  "Free-text answers rarely agree word for word: " +
                  "read each run's match with the reference first, agreement and kappa second.",
              })
            : null,
        ),
      );
      const hasRef = doc.rows.some((r) => r.reference !== undefined);
      const base = against.value;
      const cols = ["", "name", "prompt", ...(hasRef ? ["reference"] : []), ...doc.runs];
      T.clear(
        rowsBox,
        doc.rows.length
          ? T.table(
              cols,
              doc.rows,
              (r) => [
                r.disagree ? el("span", { class: "bad", text: "≠" }) : "",
                T.textCell(r.name || r.custom_id),
                promptCell(r.prompt),
                ...(hasRef ? [T.textCell(r.reference)] : []),
                ...doc.runs.map((run) =>
                  answerCell(r[run], doc, base && run !== base && r[base] ? r[base].answer : null),
                ),
              ],
              (r) => (r.disagree ? "disagree" : "agree"),
            )
          : T.empty("No row matches.", "Clear the search or the disagreements-only box."),
      );
      where.textContent = doc.total_rows
        ? `rows ${offset + 1}–${offset + doc.rows.length} of ${doc.total_rows}`
        : "no rows";
      prev.disabled = offset === 0;
      next.disabled = offset + PAGE >= doc.total_rows;
      T.showError("");
    } catch (e) {
      T.showError(e.message);
    }
  }

  go.addEventListener("click", () => {
    offset = 0;
    load();
  });
  diffOnly.addEventListener("change", () => {
    offset = 0;
    load();
  });
  against.addEventListener("change", load);
  input(searchF).addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      offset = 0;
      load();
    }
  });
  prev.addEventListener("click", () => {
    offset = Math.max(0, offset - PAGE);
    load();
  });
  next.addEventListener("click", () => {
    offset += PAGE;
    load();
  });
  window.addEventListener("load", async () => {
    try {
      await loadRuns();
      if (document.querySelectorAll("input.run:checked").length >= 2) await load();
    } catch (e) {
      T.showError(e.message);
    }
  });
})();
