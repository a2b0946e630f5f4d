// Rejections: the `trainctl rejected` sections for any curated dataset.
"use strict";
(function () {
  const T = window.trainctl,
    el = T.el;
  T.nav("/rejected");
  const page = document.getElementById("page");
  const pick = el("select", { id: "dataset" });
  const body = el("div", { id: "report" });
  page.append(el("div", { class: "controls" }, el("label", {}, "dataset ", pick)), body);

  function bars(entries) {
    const max = Math.max(1, ...entries.map(([, v]) => v));
    return T.table(["", "count", ""], entries, ([k, v]) => [
      k,
      String(v),
      el("span", { class: "bar", style: `width:${Math.round((160 * v) / max)}px` }),
    ]);
  }

  async function load() {
    try {
      const r = await T.get("/api/rejected", { dataset: pick.value });
      const share = r.lines_read ? r.total_rejected / r.lines_read : 0;
      const domains = Object.entries(r.by_domain || {});
      T.clear(
        body,
        el(
          "div",
          { class: "cards" },
          ...[
            ["records read", r.lines_read],
            ["rejected", `${r.total_rejected} (${T.pct(share)})`],
          ].map(([k, v]) =>
            el(
              "div",
              { class: "card" },
              el("div", { class: "k", text: k }),
              el("div", { class: "v", text: String(v) }),
            ),
          ),
        ),
        el(
          "div",
          { class: "grid" },
          el(
            "div",
            { class: "panel" },
            el("h2", { text: "Reasons" }),
            bars(Object.entries(r.by_reason || {})),
          ),
          el(
            "div",
            { class: "panel" },
            el("h2", { text: "Details" }),
            bars(Object.entries(r.by_detail || {})),
          ),
        ),
        el(
          "div",
          { class: "panel" },
          el("h2", { text: "By domain" }),
          domains.length
            ? T.table(["domain", "rejected by reason"], domains, ([d, c]) => [
                d,
                Object.entries(c)
                  .map(([k, v]) => `${k} ${v}`)
                  .join(", "),
              ])
            : el("p", { class: "muted", text: "no domains in this dataset" }),
        ),
        el(
          "div",
          { class: "panel" },
          el("h2", { text: "Closest to passing" }),
          (r.closest || []).length
            ? T.table(["line", "reason", "score", "threshold", "record"], r.closest, (c) => [
                String(c.line),
                c.reason,
                T.fmt(c.score, 3),
                T.fmt(c.threshold, 3),
                T.textCell(c.preview),
              ])
            : el("p", { class: "muted", text: "no quality rejects" }),
        ),
        el(
          "div",
          { class: "panel" },
          el("h2", { text: "Quality scores of rejected records" }),
          (r.histogram || []).some((n) => n > 0)
            ? bars(
                r.histogram.map((n, i, all) => [
                  `${(i / all.length).toFixed(2)}–${((i + 1) / all.length).toFixed(2)}`,
                  n,
                ]),
              )
            : el("p", {
                class: "muted",
                text: "no rejected record was scored (they failed earlier checks)",
              }),
        ),
        el(
          "div",
          { class: "panel" },
          el("h2", { text: "What to change" }),
          el(
            "ul",
            {},
            (r.recommendations || []).map((x) => el("li", { text: x })),
          ),
        ),
      );
      T.showError("");
    } catch (e) {
      T.showError(e.message);
    }
  }

  window.addEventListener("load", async () => {
    try {
      const names = await T.get("/api/datasets");
      T.clear(
        pick,
        names.map((n) => el("option", { value: n, text: n })),
      );
      if (names.length) await load();
      else
        T.clear(
          body,
          T.empty(
            "No curated dataset yet: every rejected record and its reason appear here.",
            "Drop a JSONL file into inbox/ or run `trainctl curate FILE` (or `trainctl train " +
              "FILE`).",
          ),
        );
    } catch (e) {
      T.showError(e.message);
    }
  });
  pick.addEventListener("change", load);
})();
