// Flagged examples: filter by reason, file and state, sort; the golden answer beside the model output with the
// differing part marked; resolve a flag or add notes (the only writes the UI makes).
"use strict";
(function () {
  const T = window.trainctl, el = T.el;
  T.nav("/flags");
  const page = document.getElementById("page");
  const reason = el("select", { id: "reason" }, el("option", { value: "", text: "every reason" }));
  const file = el("select", { id: "file" }, el("option", { value: "", text: "every file" }));
  const state = el("select", { id: "state" }, ["open", "resolved", "all"].map((s) => el("option", { value: s, text: s })));
  const sort = el("select", { id: "sort" }, [["recent", "most recent"], ["oldest", "oldest"], ["highest_loss", "highest loss"],
    ["lowest_loss", "lowest loss"]].map(([v, t]) => el("option", { value: v, text: t })));
  const stats = el("p", { id: "flag-stats", class: "muted" });
  const list = el("div", { id: "flag-list" });
  page.append(el("div", { class: "controls" }, el("label", {}, "reason ", reason), el("label", {}, "file ", file),
    el("label", {}, "state ", state), el("label", {}, "sort ", sort)), stats, el("div", { class: "panel" }, list));

  function fillOptions(select, values) {
    const have = new Set([...select.options].map((o) => o.value));
    for (const v of values) if (!have.has(v)) select.appendChild(el("option", { value: v, text: v }));
  }

  async function act(f, resolve) {
    const notes = document.getElementById(`notes-${f.id}`).value;
    try {
      await T.post(`/api/flags/${f.id}/${resolve ? "resolve" : "notes"}`, { notes });
      await load();
    } catch (e) { T.showError(e.message); }
  }

  async function load() {
    try {
      const doc = await T.get("/api/flags", { reason: reason.value, file: file.value, state: state.value, sort: sort.value });
      fillOptions(reason, doc.reasons); fillOptions(file, doc.files);
      const s = doc.stats;
      stats.textContent = `${s.open} open, ${s.resolved} resolved; showing ${doc.flags.length}` +
        (s.avg_loss !== null ? `; average loss of open flags ${T.fmt(s.avg_loss, 3)}` : "");
      T.clear(list, doc.flags.length ? T.table(["id", "reason", "step", "loss", "file", "prompt", "golden", "model output", "notes", ""],
        doc.flags, (f) => [String(f.id), f.reason, T.fmt(f.step), T.fmt(f.loss, 3), f.file || "—", T.textCell(f.prompt),
          T.textCell(f.golden), T.diffCell(f.golden, f.output), T.textCell([f.notes, f.change].filter(Boolean).join(" — ")),
          el("td", {}, el("input", { type: "text", id: `notes-${f.id}`, placeholder: "notes" }),
            f.resolved ? el("span", { class: "ok", text: " resolved" })
              : el("button", { class: "primary resolve", "data-id": f.id, text: "resolve", onclick: () => act(f, true) }),
            el("button", { class: "add-notes", text: "add notes", onclick: () => act(f, false) }))],
        (f) => (f.resolved ? "muted" : null)) : el("p", { class: "muted", text: "no flag matches" }));
      T.showError("");
    } catch (e) { T.showError(e.message); }
  }

  for (const s of [reason, file, state, sort]) s.addEventListener("change", load);
  window.addEventListener("load", load);
})();
