// One job (/jobs/N): what it reached and on which set, its curves (other jobs laid over them on
// request), its checkpoints with their evaluations and the command that uses each, its alerts,
// flags and evolution.
"use strict";
(function () {
  const T = window.trainctl,
    el = T.el;
  T.nav("/jobs/");
  const page = document.getElementById("page");
  const m = location.pathname.match(/^\/jobs\/(\d+)$/);
  if (!m) {
    page.append(
      T.empty("Pick a job from the list on the Monitor page.", "Each job row links to its page."),
    );
    return;
  }
  const id = parseInt(m[1], 10);
  const head = el("div", { id: "job-head" }),
    cards = el("div", { class: "cards", id: "figures" });
  const overlayPick = el("div", { class: "controls", id: "overlay-pick" });
  const lossBox = el("div", { id: "job-loss-chart" }),
    emBox = el("div", { id: "job-em-chart" });
  const ckBox = el("div", { id: "checkpoints" }),
    alertsBox = el("div", { id: "job-alerts" });
  const linksBox = el("div", { id: "job-links" });
  page.append(
    head,
    cards,
    el(
      "div",
      { class: "panel" },
      el("h2", { text: "Curves" }),
      overlayPick,
      el("div", { class: "grid" }, lossBox, emBox),
    ),
    el("div", { class: "panel" }, el("h2", { text: "Checkpoints" }), ckBox),
    el(
      "div",
      { class: "grid" },
      el("div", { class: "panel" }, el("h2", { text: "Alerts" }), alertsBox),
      el("div", { class: "panel" }, el("h2", { text: "Flags and evolution" }), linksBox),
    ),
  );

  const COLOURS = [
    "#2f5bd3",
    "#e07b00",
    "#1a7f37",
    "#8e44ad",
    "#c62828",
    "#00838f",
    "#6d4c41",
    "#546e7a",
  ];
  let charts = [];

  function curves(doc, ids) {
    for (const c of charts) c.destroy();
    T.clear(lossBox);
    T.clear(emBox);
    // uPlot wants one x array: each job's (step, value) pairs are joined on step, gaps where a job
    // has none.
    const join = (key) =>
      uPlot.join(
        ids.map((j) => {
          const pts = (doc[String(j)] || {})[key] || [];
          return [
            pts.map((p) => p[0]),
            pts.map((p) => (key === "exact_match" && p[1] !== null ? 100 * p[1] : p[1])),
          ];
        }),
      );
    const series = (what) =>
      ids.map((j, i) => [
        `job ${j} ${what}`,
        COLOURS[i % COLOURS.length],
        what === "EM %" ? { points: true } : {},
      ]);
    const loss = T.chart(lossBox, {
      title: "smoothed training loss",
      y: { label: "CE (nats/token)" },
      series: series("loss"),
    });
    const em = T.chart(emBox, {
      title: "fixed-eval exact match",
      y: { label: "exact match (%)", range: [0, 100] },
      series: series("EM %"),
    });
    const lossData = join("loss"),
      emData = join("exact_match");
    loss.setData(lossData.length ? lossData : [[], ...ids.map(() => [])]);
    em.setData(emData.length ? emData : [[], ...ids.map(() => [])]);
    charts = [loss, em];
    lossBox.dataset.jobs = ids.join(",");
  }

  async function showCurves(ids) {
    curves(await T.get("/api/overlay", { jobs: ids.join(",") }), ids);
  }

  function figureCard(f) {
    return el(
      "div",
      { class: "card" },
      el("div", { class: "k", text: f.name }),
      el("div", { class: "v", text: T.pct(f.value) }),
      el("div", { class: "k", text: f.set + (f.step !== undefined ? ` · step ${f.step}` : "") }),
    );
  }

  function checkpointTable(rows) {
    if (!rows.length)
      return T.empty(
        "No checkpoint is kept for this job.",
        "Checkpoints are written every train.save_steps steps; the last train.save_total_limit " +
          "are kept.",
      );
    return T.table(
      ["checkpoint", "step", "fixed-eval EM", "fixed-eval CE", "bench EM (test split)", "use it"],
      rows,
      (r) => [
        el("span", {}, r.label, r.best ? el("span", { class: "pill best", text: "best" }) : null),
        r.step === null || r.step === undefined ? "—" : String(r.step),
        r.fixed_eval
          ? `${T.pct(r.fixed_eval.exact_match)}` +
            (r.fixed_eval.step !== r.step ? ` (step ${r.fixed_eval.step})` : "")
          : "—",
        r.fixed_eval ? T.fmt(r.fixed_eval.ce, 4) : "—",
        r.bench_exact_match === null || r.bench_exact_match === undefined
          ? "—"
          : T.pct(r.bench_exact_match),
        el("code", { class: "command", text: r.command }),
      ],
      (r) => (r.best ? "best-row" : null),
    );
  }

  async function load() {
    let doc;
    try {
      doc = await T.get("/api/job", { id });
    } catch (e) {
      T.showError(e.message);
      return;
    }
    const j = doc.job;
    document.title = `trainctl — job ${id}`;
    T.clear(
      head,
      el("h1", { text: `Job ${id}: ${j.file_name}` }),
      el(
        "p",
        { class: "muted" },
        `${j.state} · model ${doc.model || "?"} · dataset ${doc.dataset || "—"} · ` +
          `max_length ${doc.max_length || "?"}` +
          (doc.steps ? ` · ${doc.steps} steps` : "") +
          (doc.stopped_early ? " · stopped early" : ""),
      ),
      j.error ? el("p", { class: "bad", text: j.error }) : null,
    );
    T.clear(
      cards,
      doc.figures.length
        ? doc.figures.map(figureCard)
        : [
            T.empty(
              "No figures yet.",
              "They appear as the job evaluates (fixed eval) and when it finishes (test split).",
            ),
          ],
    );
    T.clear(
      ckBox,
      checkpointTable(doc.checkpoints),
      el("p", {
        class: "muted",
        text:
          "fixed-eval figures are from the evaluation at the checkpoint's step (or the " +
          "last one before it); bench EM is from `trainctl bench sweep --job " +
          id +
          "`, which answers the test " +
          "split with every checkpoint.",
      }),
    );
    const fired = doc.alerts.filter((a) => a.event === "fired" && a.severity !== "info");
    T.clear(
      alertsBox,
      fired.length
        ? T.table(["step", "severity", "alert"], fired, (a) => [
            String(a.step),
            el("span", { class: "pill " + a.severity, text: a.severity }),
            T.textCell(a.message),
          ])
        : el("p", { class: "muted", text: "no warning or critical alert in this job" }),
    );
    T.clear(
      linksBox,
      el(
        "p",
        {},
        el("a", { href: `/flags?job=${id}&state=all`, text: `${doc.flags.open} open flags` }),
        ` (${doc.flags.resolved} resolved) from this job's evaluations`,
      ),
      el(
        "p",
        {},
        el("a", {
          href: "/evolution" + (doc.dataset ? `?dataset=${encodeURIComponent(doc.dataset)}` : ""),
          text: "learning evolution of its examples",
        }),
      ),
      doc.suspects_note ? el("p", { class: "muted", text: doc.suspects_note }) : null,
    );
    // Overlay: this job, and any others ticked
    const others = (await T.get("/api/queue", { limit: 20 })).filter(
      (o) => o.id !== id && o.state === "done",
    );
    const boxes = others.map((o) =>
      el(
        "label",
        {},
        el("input", {
          type: "checkbox",
          value: String(o.id),
          onchange: () =>
            showCurves([
              id,
              ...boxes.filter((b) => b.firstChild.checked).map((b) => +b.firstChild.value),
            ]),
        }),
        ` job ${o.id}`,
      ),
    );
    T.clear(
      overlayPick,
      others.length ? [el("span", { class: "muted", text: "lay over: " }), ...boxes] : [],
    );
    await showCurves([id]);
  }

  window.addEventListener("load", load);
})();
