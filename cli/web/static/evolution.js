// Evolution viewer: accuracy and loss over the probe snapshots, the cartography scatter
// (confidence x variability, coloured by class) of every training example, a class filter, and one
// example's learning curve with its output at each snapshot.
"use strict";
(function () {
  const T = window.trainctl,
    el = T.el;
  T.nav("/evolution");
  const COLOURS = { easy: "#1a7f37", ambiguous: "#b26a00", hard: "#c62828" };
  const page = document.getElementById("page");
  const cls = el(
    "select",
    { id: "class" },
    el("option", { value: "", text: "every class" }),
    ["easy", "ambiguous", "hard"].map((c) => el("option", { value: c, text: c })),
  );
  const sort = el(
    "select",
    { id: "sort" },
    el("option", { value: "", text: "default" }),
    ["aum", "confidence", "forgetting", "variability", "first_right"].map((s) =>
      el("option", { value: s, text: s }),
    ),
  );
  const head = el("p", { id: "evo-head", class: "muted" });
  const curveBox = el("div", { id: "curve-chart" });
  const scatter = el("canvas", {
    class: "scatter",
    id: "cartography",
    width: "520",
    height: "340",
  });
  const list = el("div", { id: "examples" }),
    one = el("div", { id: "example" });
  page.append(
    el(
      "div",
      { class: "controls" },
      el("label", {}, "class ", cls),
      el("label", {}, "sort ", sort),
    ),
    head,
    el(
      "div",
      { class: "grid" },
      el("div", { class: "panel" }, el("h2", { text: "Probe snapshots" }), curveBox),
      el(
        "div",
        { class: "panel" },
        el("h2", { text: "Data map (every training example)" }),
        scatter,
      ),
    ),
    el("div", { class: "panel" }, el("h2", { text: "One example" }), one),
    el("div", { class: "panel" }, el("h2", { text: "Examples" }), list),
  );

  let curve = null,
    shown = [],
    pageAt = 0;
  const PAGE = 50;
  const tip = el("div", { id: "map-tip", class: "tip", style: "display:none" });
  scatter.parentNode.style.position = "relative";
  scatter.parentNode.appendChild(tip);
  const legend = el(
    "div",
    { class: "legend", id: "map-legend" },
    ...Object.entries(COLOURS).map(([k, c]) =>
      el("span", {}, el("i", { style: `background:${c}` }), ` ${k}`),
    ),
    el("span", {}, el("i", { class: "ring" }), " suspected label"),
  );
  scatter.parentNode.appendChild(legend);
  const rule = el("p", {
    id: "epoch-rule",
    class: "muted",
    text:
      "The rule: an example's figures are averaged " +
      "over the whole epochs after the first (in the first epoch they say mostly how early in " +
      "the epoch it came, not " +
      "how hard it is), and classes need two such epochs; after one, the table says when each " +
      "example was first " +
      "answered right instead.",
  });
  head.after(rule);

  // Data map geometry: x = variability (0 .. the largest seen, at least 0.5), y = confidence (0 ..
  // 1)
  const PAD = { left: 46, bottom: 38, top: 8, right: 10 };
  let geo = null;
  function drawScatter(examples, oneEpoch) {
    const ctx = scatter.getContext("2d"),
      W = scatter.width,
      H = scatter.height;
    ctx.clearRect(0, 0, W, H);
    const maxVar = Math.max(0.5, ...examples.map((e) => e.variability));
    const X = (v) => PAD.left + (v / maxVar) * (W - PAD.left - PAD.right);
    const Y = (c) => H - PAD.bottom - c * (H - PAD.bottom - PAD.top);
    geo = { X, Y, maxVar };
    ctx.strokeStyle = "#e4e7ec";
    ctx.fillStyle = "#667085";
    ctx.font = "11px sans-serif";
    for (let k = 0; k <= 4; k++) {
      // ticks and grid: confidence 0 .. 1, variability 0 .. maxVar
      const c = k / 4,
        v = (k / 4) * maxVar;
      ctx.beginPath();
      ctx.moveTo(PAD.left, Y(c));
      ctx.lineTo(W - PAD.right, Y(c));
      ctx.stroke();
      ctx.beginPath();
      ctx.moveTo(X(v), PAD.top);
      ctx.lineTo(X(v), H - PAD.bottom);
      ctx.stroke();
      ctx.textAlign = "right";
      ctx.fillText(c.toFixed(2), PAD.left - 4, Y(c) + 4);
      ctx.textAlign = "center";
      ctx.fillText(v.toFixed(2), X(v), H - PAD.bottom + 14);
    }
    ctx.textAlign = "center";
    ctx.fillText("variability (std of the golden-token probability across epochs)", W / 2, H - 6);
    ctx.save();
    ctx.translate(12, H / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.fillText("confidence (mean probability)", 0, 0);
    ctx.restore();
    for (const e of examples) {
      // one epoch: no class to colour by
      ctx.fillStyle = oneEpoch ? "#2f5bd3" : COLOURS[e.class] || "#2f5bd3";
      ctx.beginPath();
      ctx.arc(X(e.variability), Y(e.confidence), 2.5, 0, 2 * Math.PI);
      ctx.fill();
      if (e.suspect_label) {
        ctx.strokeStyle = "#7b2cbf";
        ctx.beginPath();
        ctx.arc(X(e.variability), Y(e.confidence), 5, 0, 2 * Math.PI);
        ctx.stroke();
        ctx.strokeStyle = "#e4e7ec";
      }
    }
    scatter.dataset.points = String(examples.length);
  }

  function nearest(ev) {
    if (!geo || !shown.length) return null;
    const r = scatter.getBoundingClientRect(),
      sx = scatter.width / r.width,
      sy = scatter.height / r.height;
    const x = (ev.clientX - r.left) * sx,
      y = (ev.clientY - r.top) * sy;
    let best = null,
      bestD = 64;
    for (const e of shown) {
      const d = (geo.X(e.variability) - x) ** 2 + (geo.Y(e.confidence) - y) ** 2;
      if (d < bestD) {
        best = e;
        bestD = d;
      }
    }
    return best;
  }
  scatter.addEventListener("mousemove", (ev) => {
    const e = nearest(ev);
    if (!e) {
      tip.style.display = "none";
      return;
    }
    tip.textContent =
      `${e.example_id} · ${e.class || ""} · confidence ${T.fmt(e.confidence, 3)}` +
      ` · variability ` +
      `${T.fmt(e.variability, 3)}` +
      (e.suspect_label ? " · suspected label" : "");
    tip.style.left = `${ev.offsetX + 12}px`;
    tip.style.top = `${ev.offsetY + 12}px`;
    tip.style.display = "block";
  });
  scatter.addEventListener("mouseleave", () => {
    tip.style.display = "none";
  });
  scatter.addEventListener("click", (ev) => {
    const e = nearest(ev);
    if (e) showExample(e.example_id);
  });

  async function showExample(id) {
    try {
      const doc = await T.get("/api/evolution/example", { id });
      const parts = [];
      const d = doc.dynamics,
        p = doc.probe;
      if (d) {
        parts.push(
          el(
            "p",
            {},
            el("b", { text: d.example_id }),
            ` (line ${d.line ?? "—"}) `,
            (d.per_epoch || []).length < 2
              ? el("span", {
                  class: "pill",
                  text:
                    "one epoch: first right " +
                    (d.first_right_step === null ? "never" : `at step ${d.first_right_step}`),
                })
              : el("span", { class: "pill " + d.class, text: d.class }),
            ` confidence ${T.fmt(d.confidence, 3)}, variability ${T.fmt(d.variability, 3)}, ` +
              `correct in ${T.pct(d.correctness)} of epochs, ` +
              `${d.forgetting_events} forgetting events, AUM ${T.fmt(d.aum, 2)}` +
              (d.suspect_label ? " — suspected label error" : ""),
          ),
        );
        parts.push(
          T.table(["epoch", "loss", "golden prob", "argmax share", "margin"], d.per_epoch, (r) => [
            String(r.epoch + 1),
            T.fmt(r.loss, 3),
            T.fmt(r.prob, 3),
            T.pct(r.correct),
            T.fmt(r.margin, 2),
          ]),
        );
      }
      if (p) {
        parts.push(
          el(
            "p",
            {},
            el("b", { text: p.example_id }),
            " in the probe set: first learned " +
              (p.first_learned_step === null ? "never" : `at step ${p.first_learned_step}`),
          ),
        );
        parts.push(
          el("p", {}, "input: ", el("span", { class: "text", text: p.input })),
          el("p", {}, "expected: ", el("span", { text: p.expected_output })),
        );
        parts.push(
          T.table(["step", "correct", "loss", "golden prob", "model output"], p.curve, (r) => [
            String(r.step),
            el("span", {
              class: r.exact_match ? "ok" : "bad",
              text: r.exact_match ? "yes" : "no",
            }),
            T.fmt(r.loss, 3),
            T.fmt(r.golden_prob, 3),
            T.diffCell(p.expected_output, r.model_output),
          ]),
        );
      }
      T.clear(one, parts);
    } catch (e) {
      T.showError(e.message);
    }
  }

  async function load() {
    try {
      const doc = await T.get("/api/evolution", { class: cls.value, sort: sort.value });
      const classes = doc.classes || doc.probe_classes || {};
      const examples = doc.examples || [];
      const oneEpoch = doc.epochs
        ? doc.epochs.used.length < 2
        : examples.every((e) => (e.per_epoch || []).length < 2);
      head.textContent =
        `dataset ${doc.dataset}: ` +
        (oneEpoch && doc.epochs
          ? "classes need two or more epochs"
          : Object.entries(classes)
              .map(([k, v]) => `${k} ${v}`)
              .join(", ")) +
        (doc.suspect_label !== undefined ? `; ${doc.suspect_label} suspected label errors` : "") +
        (doc.epochs ? ` — figures from ${doc.epochs.said}` : "") +
        // (after one epoch the note would repeat what the line already says)
        (doc.suspects_note && (!oneEpoch || doc.learning_until_step != null)
          ? `; no suspects reported: ${doc.suspects_note}`
          : "");
      if (doc.curve && doc.curve.length) {
        if (!curve)
          curve = T.chart(curveBox, {
            title: "probe set over snapshots",
            y: { label: "exact match (%)", range: [0, 100] },
            y2: { label: "mean loss (nats/token)" },
            series: [
              ["EM %", "#1a7f37", { points: true }],
              ["mean loss", "#2f5bd3", { points: true, scale: "y2" }],
            ],
          });
        curve.setData([
          doc.curve.map((c) => c.step),
          doc.curve.map((c) => (c.accuracy === null ? null : 100 * c.accuracy)),
          doc.curve.map((c) => c.avg_loss),
        ]);
      } else
        T.clear(
          curveBox,
          el("p", { class: "muted", text: "no probe snapshots (train.evolution_examples)" }),
        );
      drawScatter(examples, oneEpoch);
      legend.style.display = oneEpoch ? "none" : "";
      const rows = examples.length ? examples : doc.probe_examples || [];
      const link = (e) =>
        el("a", {
          href: "#",
          text: e.example_id,
          onclick: (ev) => {
            ev.preventDefault();
            showExample(e.example_id);
          },
        });
      const step = (s) => (s === null || s === undefined ? "never" : `step ${s}`);
      // One epoch: the classes say nothing yet; when each example was first answered right does
      shown = examples;
      const render = () => {
        const pages = Math.max(1, Math.ceil(rows.length / PAGE));
        pageAt = Math.min(pageAt, pages - 1);
        const slice = rows.slice(pageAt * PAGE, (pageAt + 1) * PAGE);
        const table =
          oneEpoch && examples.length
            ? T.table(["example", "seen at", "first right", "confidence", "AUM"], slice, (e) => [
                link(e),
                step(e.first_seen_step),
                step(e.first_right_step),
                T.fmt(e.confidence, 3),
                T.fmt(e.aum, 2),
              ])
            : T.table(
                ["example", "class", "confidence", "variability", "forgetting", "AUM", "suspect"],
                slice,
                (e) => [
                  link(e),
                  el("span", { class: "pill " + e.class, text: e.class }),
                  T.fmt(e.confidence, 3),
                  T.fmt(e.variability, 3),
                  T.fmt(e.forgetting_events),
                  T.fmt(e.aum, 2),
                  e.suspect_label ? "yes" : "",
                ],
              );
        const pager = el(
          "div",
          { class: "pager", id: "pager" },
          el("button", {
            text: "← previous",
            disabled: pageAt === 0,
            onclick: () => {
              pageAt--;
              render();
            },
          }),
          el("span", {
            text:
              `${pageAt * PAGE + 1}–${Math.min(rows.length, (pageAt + 1) * PAGE)}` +
              ` of ${rows.length}`,
          }),
          el("button", {
            text: "next →",
            disabled: pageAt >= pages - 1,
            onclick: () => {
              pageAt++;
              render();
            },
          }),
        );
        T.clear(list, table, rows.length > PAGE ? pager : null);
      };
      render();
      T.showError("");
    } catch (e) {
      if (e.status === 404) {
        // nothing trained yet: say how to get there, not an error
        T.clear(
          page,
          T.empty(
            "No learning evolution yet: it is recorded while a job trains.",
            "Drop a JSONL file into inbox/ or run `trainctl train FILE`; this page then shows " +
              "how each training " +
              "example was learned (" +
              e.message +
              ").",
          ),
        );
        return;
      }
      T.showError(e.message);
    }
  }

  cls.addEventListener("change", () => {
    pageAt = 0;
    load();
  });
  sort.addEventListener("change", () => {
    pageAt = 0;
    load();
  });
  const wanted = new URLSearchParams(location.search).get("example");
  window.addEventListener("load", async () => {
    await load();
    if (wanted) showExample(wanted);
  });
})();
