// Evolution viewer: accuracy and loss over the probe snapshots, the cartography scatter (confidence x variability,
// coloured by class) of every training example, a class filter, and one example's learning curve with its output
// at each snapshot.
"use strict";
(function () {
  const T = window.trainctl, el = T.el;
  T.nav("/evolution");
  const COLOURS = { easy: "#1a7f37", ambiguous: "#b26a00", hard: "#c62828" };
  const page = document.getElementById("page");
  const cls = el("select", { id: "class" }, el("option", { value: "", text: "every class" }),
    ["easy", "ambiguous", "hard"].map((c) => el("option", { value: c, text: c })));
  const sort = el("select", { id: "sort" }, el("option", { value: "", text: "default" }),
    ["aum", "confidence", "forgetting", "variability", "first_right"].map((s) => el("option", { value: s, text: s })));
  const head = el("p", { id: "evo-head", class: "muted" });
  const curveBox = el("div", { id: "curve-chart" });
  const scatter = el("canvas", { class: "scatter", id: "cartography", width: "520", height: "340" });
  const list = el("div", { id: "examples" }), one = el("div", { id: "example" });
  page.append(el("div", { class: "controls" }, el("label", {}, "class ", cls), el("label", {}, "sort ", sort)), head,
    el("div", { class: "grid" }, el("div", { class: "panel" }, el("h2", { text: "Probe snapshots" }), curveBox),
      el("div", { class: "panel" }, el("h2", { text: "Data map (every training example)" }), scatter)),
    el("div", { class: "panel" }, el("h2", { text: "One example" }), one),
    el("div", { class: "panel" }, el("h2", { text: "Examples" }), list));

  let curve = null;

  function drawScatter(examples) {
    const ctx = scatter.getContext("2d"), W = scatter.width, H = scatter.height, pad = 34;
    ctx.clearRect(0, 0, W, H);
    ctx.strokeStyle = "#e4e7ec"; ctx.fillStyle = "#667085"; ctx.font = "11px sans-serif";
    const maxVar = Math.max(0.5, ...examples.map((e) => e.variability));
    ctx.beginPath(); ctx.moveTo(pad, 4); ctx.lineTo(pad, H - pad); ctx.lineTo(W - 4, H - pad); ctx.stroke();
    ctx.fillText("variability →", W - 90, H - 10); ctx.save(); ctx.translate(12, 90); ctx.rotate(-Math.PI / 2);
    ctx.fillText("confidence →", 0, 0); ctx.restore();
    for (const e of examples) {
      const x = pad + (e.variability / maxVar) * (W - pad - 8), y = H - pad - e.confidence * (H - pad - 8);
      ctx.fillStyle = COLOURS[e.class] || "#2f5bd3";
      ctx.beginPath(); ctx.arc(x, y, e.suspect_label ? 4 : 2.5, 0, 2 * Math.PI); ctx.fill();
    }
    scatter.dataset.points = String(examples.length);
  }

  async function showExample(id) {
    try {
      const doc = await T.get("/api/evolution/example", { id });
      const parts = [];
      const d = doc.dynamics, p = doc.probe;
      if (d) {
        parts.push(el("p", {}, el("b", { text: d.example_id }), ` (line ${d.line ?? "—"}) `, (d.per_epoch || []).length < 2
          ? el("span", { class: "pill", text: `one epoch: first right ${d.first_right_step === null ? "never" : "at step " + d.first_right_step}` })
          : el("span", { class: "pill " + d.class, text: d.class }),
          ` confidence ${T.fmt(d.confidence, 3)}, variability ${T.fmt(d.variability, 3)}, correct in ${T.pct(d.correctness)} of epochs, ` +
          `${d.forgetting_events} forgetting events, AUM ${T.fmt(d.aum, 2)}` + (d.suspect_label ? " — suspected label error" : "")));
        parts.push(T.table(["epoch", "loss", "golden prob", "argmax share", "margin"], d.per_epoch,
          (r) => [String(r.epoch + 1), T.fmt(r.loss, 3), T.fmt(r.prob, 3), T.pct(r.correct), T.fmt(r.margin, 2)]));
      }
      if (p) {
        parts.push(el("p", {}, el("b", { text: p.example_id }), " in the probe set: first learned " +
          (p.first_learned_step === null ? "never" : `at step ${p.first_learned_step}`)));
        parts.push(el("p", {}, "input: ", el("span", { class: "text", text: p.input })), el("p", {}, "expected: ", el("span", { text: p.expected_output })));
        parts.push(T.table(["step", "correct", "loss", "golden prob", "model output"], p.curve,
          (r) => [String(r.step), el("span", { class: r.exact_match ? "ok" : "bad", text: r.exact_match ? "yes" : "no" }),
            T.fmt(r.loss, 3), T.fmt(r.golden_prob, 3), T.diffCell(p.expected_output, r.model_output)]));
      }
      T.clear(one, parts);
    } catch (e) { T.showError(e.message); }
  }

  async function load() {
    try {
      const doc = await T.get("/api/evolution", { class: cls.value, sort: sort.value });
      const classes = doc.classes || doc.probe_classes || {};
      const examples = doc.examples || [];
      const oneEpoch = doc.epochs ? doc.epochs.used.length < 2 : examples.every((e) => (e.per_epoch || []).length < 2);
      head.textContent = `dataset ${doc.dataset}: ` + (oneEpoch && doc.epochs ? "classes need two or more epochs"
        : Object.entries(classes).map(([k, v]) => `${k} ${v}`).join(", ")) +
        (doc.suspect_label !== undefined ? `; ${doc.suspect_label} suspected label errors` : "") +
        (doc.epochs ? ` — figures from ${doc.epochs.said}` : "") +
        // (after one epoch the note would repeat what the line already says)
        (doc.suspects_note && (!oneEpoch || doc.learning_until_step != null) ? `; no suspects reported: ${doc.suspects_note}` : "");
      if (doc.curve && doc.curve.length) {
        if (!curve) curve = T.lineChart(curveBox, "accuracy and loss over snapshots", [["accuracy", "#1a7f37"], ["avg loss", "#2f5bd3"]]);
        curve.setData([doc.curve.map((c) => c.step), doc.curve.map((c) => c.accuracy), doc.curve.map((c) => c.avg_loss)]);
      } else T.clear(curveBox, el("p", { class: "muted", text: "no probe snapshots (train.evolution_examples)" }));
      drawScatter(examples);
      const rows = examples.length ? examples : doc.probe_examples || [];
      const link = (e) => el("a", { href: "#", text: e.example_id, onclick: (ev) => { ev.preventDefault(); showExample(e.example_id); } });
      const step = (s) => (s === null || s === undefined ? "never" : `step ${s}`);
      // One epoch: the classes say nothing yet; when each example was first answered right does
      T.clear(list, oneEpoch && examples.length
        ? T.table(["example", "seen at", "first right", "confidence", "AUM"], rows.slice(0, 500),
          (e) => [link(e), step(e.first_seen_step), step(e.first_right_step), T.fmt(e.confidence, 3), T.fmt(e.aum, 2)])
        : T.table(["example", "class", "confidence", "variability", "forgetting", "AUM", "suspect"], rows.slice(0, 500),
          (e) => [link(e), el("span", { class: "pill " + e.class, text: e.class }), T.fmt(e.confidence, 3), T.fmt(e.variability, 3),
            T.fmt(e.forgetting_events), T.fmt(e.aum, 2), e.suspect_label ? "yes" : ""]));
      T.showError("");
    } catch (e) { T.showError(e.message); }
  }

  cls.addEventListener("change", load);
  sort.addEventListener("change", load);
  window.addEventListener("load", load);
})();
