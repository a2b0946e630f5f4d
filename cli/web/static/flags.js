// Flagged examples: filter by reason, job, file, state and text, sort; the golden answer beside
// the model output with the differing words marked; resolve a flag, reopen one, add notes (the
// UI's only writes). The list refreshes itself every 10 s, except while notes are being typed.
"use strict";
(function () {
  const T = window.trainctl,
    el = T.el;
  T.nav("/flags");
  const page = document.getElementById("page");
  const given = new URLSearchParams(location.search);
  const reason = el("select", { id: "reason" }, el("option", { value: "", text: "every reason" }));
  const job = el("select", { id: "job" }, el("option", { value: "", text: "every job" }));
  const file = el("select", { id: "file" }, el("option", { value: "", text: "every file" }));
  const state = el(
    "select",
    { id: "state" },
    ["open", "resolved", "all"].map((s) => el("option", { value: s, text: s })),
  );
  const sort = el(
    "select",
    { id: "sort" },
    [
      ["recent", "most recent"],
      ["oldest", "oldest"],
      ["highest_loss", "highest loss"],
      ["lowest_loss", "lowest loss"],
    ].map(([v, t]) => el("option", { value: v, text: t })),
  );
  const search = el("input", {
    type: "text",
    id: "search",
    placeholder: "prompt, answer or output contains…",
  });
  const stats = el("p", { id: "flag-stats", class: "muted" });
  const list = el("div", { id: "flag-list" });
  page.append(
    el(
      "div",
      { class: "controls" },
      el("label", {}, "reason ", reason),
      el("label", {}, "job ", job),
      el("label", {}, "file ", file),
      el("label", {}, "state ", state),
      el("label", {}, "sort ", sort),
      el("label", {}, "search ", search),
    ),
    stats,
    el("div", { class: "panel" }, list),
  );
  if (given.get("state")) state.value = given.get("state");
  if (given.get("job"))
    job.appendChild(
      el("option", { value: given.get("job"), text: `job ${given.get("job")}`, selected: true }),
    );

  function fillOptions(select, values, label) {
    const have = new Set([...select.options].map((o) => o.value));
    for (const v of values)
      if (!have.has(String(v)))
        select.appendChild(el("option", { value: String(v), text: label ? label(v) : String(v) }));
  }

  async function act(f, action) {
    const box = document.getElementById(`notes-${f.id}`);
    try {
      await T.post(`/api/flags/${f.id}/${action}`, { notes: box ? box.value : "" });
      await load();
    } catch (e) {
      T.showError(e.message);
    }
  }

  const when = (iso) =>
    iso ? new Date(iso).toLocaleString([], { dateStyle: "short", timeStyle: "short" }) : "—";

  function actions(f) {
    return el(
      "td",
      {},
      el("input", {
        type: "text",
        id: `notes-${f.id}`,
        placeholder: "notes",
        "aria-label": `notes on flag ${f.id}`,
      }),
      f.resolved
        ? el(
            "span",
            {},
            el("span", {
              class: "ok",
              text: ` resolved${f.resolved_by === "auto" ? " (right again)" : ""} `,
            }),
            el("button", {
              class: "reopen",
              "data-id": f.id,
              text: "reopen",
              onclick: () => act(f, "reopen"),
            }),
          )
        : el("button", {
            class: "primary resolve",
            "data-id": f.id,
            text: "resolve",
            onclick: () => act(f, "resolve"),
          }),
      el("button", { class: "add-notes", text: "add notes", onclick: () => act(f, "notes") }),
    );
  }

  async function load() {
    try {
      const doc = await T.get("/api/flags", {
        reason: reason.value,
        file: file.value,
        state: state.value,
        sort: sort.value,
        job: job.value,
        q: search.value,
      });
      fillOptions(reason, doc.reasons);
      fillOptions(file, doc.files);
      fillOptions(
        job,
        [
          ...new Set(doc.flags.map((f) => f.job).filter((j) => j !== undefined && j !== null)),
        ].sort((a, b) => a - b),
        (j) => `job ${j}`,
      );
      const s = doc.stats;
      stats.textContent =
        `${s.open} open, ${s.resolved} resolved; showing ${doc.flags.length}` +
        (s.avg_loss !== null ? `; average loss of open flags ${T.fmt(s.avg_loss, 3)}` : "") +
        " — refreshed every 10 s";
      // Training examples have an evolution (suspected labels); the fixed evaluation's are
      // held-out val examples
      const evolution = (f) =>
        f.reason === "suspect_label" && String(f.example || "").startsWith("id:")
          ? el("a", {
              href: `/evolution?example=${encodeURIComponent(f.example.slice(3))}`,
              text: "evolution",
              title: "how the model learned this example",
            })
          : el("span", {
              class: "muted",
              text: f.reason === "manual" ? "—" : "val example",
              title:
                "a held-out example of the fixed evaluation: never trained on, so it has no " +
                "learning evolution",
            });
      T.clear(
        list,
        doc.flags.length
          ? T.table(
              [
                "id",
                "reason",
                "when",
                "job / step",
                "loss",
                "prompt",
                "golden",
                "model output",
                "notes",
                "example",
                "",
              ],
              doc.flags,
              (f) => [
                String(f.id),
                el("span", { class: "pill " + f.reason, text: f.reason }),
                when(f.timestamp),
                `${f.job ? "job " + f.job : "—"} · ${T.fmt(f.step)}`,
                T.fmt(f.loss, 3),
                T.textCell(f.prompt),
                T.textCell(f.golden),
                T.wordDiff(f.golden, f.output),
                T.textCell([f.notes, f.change].filter(Boolean).join(" — ")),
                evolution(f),
                actions(f),
              ],
              (f) => (f.resolved ? "muted" : null),
            )
          : T.empty(
              "no flag matches",
              s.total
                ? "Change the filters above (state: all shows resolved flags too)."
                : "Flags appear when a job's fixed evaluation gets an example wrong: drop a " +
                    "JSONL file into inbox/ or run `trainctl train FILE`.",
            ),
      );
      T.showError("");
    } catch (e) {
      T.showError(e.message);
    }
  }

  function typing() {
    const a = document.activeElement;
    return (
      (a && a.id && a.id.startsWith("notes-")) ||
      [...document.querySelectorAll("input[id^=notes-]")].some((i) => i.value)
    );
  }

  for (const s of [reason, job, file, state, sort]) s.addEventListener("change", load);
  let pending = null;
  search.addEventListener("input", () => {
    clearTimeout(pending);
    pending = setTimeout(load, 250);
  });
  window.addEventListener("load", () => {
    load();
    setInterval(() => {
      if (!typing()) load();
    }, 10000);
  });
})();
