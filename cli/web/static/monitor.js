// Live monitor: polls every 2 s. metrics.jsonl comes incrementally (?offset=), so a long run is
// not resent.
"use strict";
(function () {
  const T = window.trainctl,
    el = T.el;
  T.nav("/");
  const page = document.getElementById("page");
  const cards = el("div", { class: "cards", id: "cards" });
  // Smoothing: a debiased exponential moving average (as TensorBoard's), so the curve starts where
  // the raw one does; 0.6 by default keeps it close to the raw curve. Its value is shown beside
  // the slider.
  const smooth = el("input", {
    type: "range",
    min: "0",
    max: "0.99",
    step: "0.01",
    value: "0.6",
    id: "smoothing",
  });
  const smoothValue = el("output", { id: "smoothing-value", text: "0.60" });
  const logScale = el("input", { type: "checkbox", id: "log-scale" });
  const xTime = el(
    "select",
    { id: "x-axis" },
    el("option", { value: "step", text: "x: step" }),
    el("option", { value: "time", text: "x: wall-clock time" }),
  );
  const jobLink = el("a", { id: "job-link", href: "#" });
  const lossBox = el("div", { id: "loss-chart" });
  const boxes = {
    tps: el("div", { id: "tps-chart" }),
    lr: el("div", { id: "lr-chart" }),
    gn: el("div", { id: "gn-chart" }),
    ev: el("div", { id: "eval-chart" }),
  };
  const alertsBox = el("div", { id: "alerts" }),
    loraBox = el("div", { id: "lora" }),
    devBox = el("div", { id: "devices" }),
    jobsBox = el("div", { id: "jobs" });
  const emptyBox = el(
    "div",
    { id: "no-job", class: "panel", style: "display:none" },
    T.empty(
      "No job has trained yet: the charts appear here as soon as one starts.",
      "Drop a JSONL file into inbox/ while `trainctl daemon` runs, or run `trainctl train " +
        "FILE` (try " +
        "examples/demo_reverse.jsonl).",
    ),
  );
  const charted = el(
    "div",
    { id: "charted" },
    el(
      "div",
      { class: "panel" },
      el(
        "div",
        { class: "controls" },
        el("label", {}, "smoothing ", smooth, " ", smoothValue),
        el("label", {}, logScale, " log scale"),
        xTime,
        jobLink,
      ),
      lossBox,
    ),
    el(
      "div",
      { class: "grid" },
      el("div", { class: "panel" }, boxes.ev),
      el("div", { class: "panel" }, boxes.tps),
      el("div", { class: "panel" }, boxes.lr),
      el("div", { class: "panel" }, boxes.gn),
    ),
  );
  page.append(
    cards,
    emptyBox,
    charted,
    el(
      "div",
      { class: "grid" },
      el("div", { class: "panel" }, el("h2", { text: "Alerts" }), alertsBox),
      el("div", { class: "panel" }, el("h2", { text: "LoRA layers" }), loraBox),
    ),
    el(
      "div",
      { class: "grid" },
      el("div", { class: "panel" }, el("h2", { text: "Device" }), devBox),
      el("div", { class: "panel" }, el("h2", { text: "Jobs" }), jobsBox),
    ),
  );

  let job = null,
    offset = 0,
    charts = null;
  let d = null;
  function reset() {
    d = {
      step: [],
      time: [],
      loss: [],
      lstep: [],
      ltime: [],
      ce: [],
      tps: [],
      lr: [],
      gn: [],
      estep: [],
      etime: [],
      em: [],
      ece: [],
      lastEval: null,
      t0: null,
    };
    offset = 0;
  }
  reset();

  function makeCharts() {
    if (charts) for (const c of Object.values(charts)) c.destroy();
    T.clear(lossBox);
    for (const b of Object.values(boxes)) T.clear(b);
    const x = xTime.value;
    charts = {
      loss: T.chart(lossBox, {
        title: "training loss and fixed-eval loss",
        x,
        height: 260,
        y: { label: "CE (nats/token)", log: logScale.checked },
        series: [
          ["loss", "#9aa7bd"],
          ["smoothed", "#2f5bd3", { width: 2 }],
          ["fixed-eval CE", "#e07b00", { points: true }],
        ],
      }),
      ev: T.chart(boxes.ev, {
        title: "fixed evaluation (held-out val examples)",
        x,
        y: { label: "exact match (%)", range: [0, 100] },
        y2: { label: "calibration error (ECE)", range: [0, 1] },
        series: [
          ["EM %", "#1a7f37", { points: true }],
          ["ECE", "#c62828", { points: true, scale: "y2" }],
        ],
      }),
      tps: T.chart(boxes.tps, {
        title: "throughput",
        x,
        y: { label: "tokens/s" },
        series: [["tokens/s", "#1a7f37"]],
      }),
      lr: T.chart(boxes.lr, {
        title: "learning rate",
        x,
        y: { label: "learning rate" },
        series: [["lr", "#8e44ad"]],
      }),
      gn: T.chart(boxes.gn, {
        title: "gradient norm",
        x,
        y: { label: "L2 norm, before clipping" },
        series: [["grad norm", "#b26a00"]],
      }),
    };
    window.trainctl.charts = charts;
  }

  function ema(values, s) {
    const out = [];
    let m = 0,
      k = 0;
    for (const v of values) {
      if (v === null || !isFinite(v)) {
        out.push(null);
        continue;
      }
      k++;
      m = s * m + (1 - s) * v;
      out.push(s > 0 ? m / (1 - Math.pow(s, k)) : v);
    }
    return out;
  }

  function draw() {
    if (!charts) makeCharts();
    const s = parseFloat(smooth.value);
    smoothValue.textContent = s.toFixed(2);
    const time = xTime.value === "time";
    charts.loss.setData([time ? d.ltime : d.lstep, d.loss, ema(d.loss, s), d.ce]);
    lossBox.dataset.points = String(d.loss.length);
    lossBox.dataset.job = job === null ? "" : String(job);
    const xs = time ? d.time : d.step;
    charts.tps.setData([xs, d.tps]);
    charts.lr.setData([xs, d.lr]);
    charts.gn.setData([xs, d.gn]);
    charts.ev.setData([
      time ? d.etime : d.estep,
      d.em.map((v) => (v === null ? null : 100 * v)),
      d.ece,
    ]);
  }

  function add(rows) {
    const num = (v) => (typeof v === "number" && isFinite(v) ? v : null);
    for (const r of rows) {
      const step = r.current_step;
      if (d.t0 === null && typeof r.time === "number") d.t0 = r.time;
      const minutes = typeof r.time === "number" ? (r.time - d.t0) / 60 : null;
      let ce = null;
      if (
        r.fixed_eval_step !== undefined &&
        r.fixed_eval_step !== d.lastEval &&
        r.fixed_eval_em !== undefined
      ) {
        d.lastEval = r.fixed_eval_step;
        d.estep.push(r.fixed_eval_step);
        d.etime.push(minutes);
        d.em.push(num(r.fixed_eval_em));
        d.ece.push(num(r.fixed_eval_ece));
        ce = num(r.fixed_eval_ce);
      }
      if (typeof r.loss === "number" || ce !== null) {
        d.lstep.push(step);
        d.ltime.push(minutes);
        d.loss.push(num(r.loss));
        d.ce.push(ce);
      }
      d.step.push(step);
      d.time.push(minutes);
      d.tps.push(num(r.tokens_per_sec));
      d.lr.push(num(r.learning_rate));
      d.gn.push(num(r.grad_norm));
    }
  }

  async function pullMetrics(wanted) {
    if (wanted !== job) {
      job = wanted;
      reset();
    }
    if (job === null) return;
    for (let i = 0; i < 50; i++) {
      const m = await T.get("/api/metrics", { job, offset });
      if (m.reset) reset();
      add(m.rows);
      offset = m.offset;
      if (!m.more) break;
    }
  }

  function card(k, v, cls) {
    return el(
      "div",
      { class: "card" },
      el("div", { class: "k", text: k }),
      el("div", { class: "v " + (cls || ""), text: v }),
    );
  }

  function showStatus(st) {
    const dm = st.daemon || {},
      q = st.queue || {},
      t = st.training || {};
    const counts =
      Object.entries(q.counts || {})
        .map(([k, v]) => `${k} ${v}`)
        .join(", ") || "empty";
    const total = t.total_steps,
      step = t.current_step;
    T.clear(
      cards,
      card(
        "daemon",
        dm.status + (dm.state && dm.state !== dm.status ? ` (${dm.state})` : ""),
        dm.status === "alive" ? "ok" : "warn",
      ),
      card("queue", counts),
      card("job", t.job_id ? `${t.job_id} · ${t.state || "?"}` : "—"),
      card("step", step !== undefined ? `${step} / ${total || "?"}` : "—"),
      card("ETA", t.state === "training" ? T.duration(t.eta_seconds) : "—"),
      card("loss", T.fmt(t.loss, 4)),
      card("tokens/s", T.fmt(t.tokens_per_sec, 0)),
      card(
        `fixed-eval EM (${t.fixed_eval_examples || "?"} val examples)`,
        t.fixed_eval_em === undefined ? "—" : T.pct(t.fixed_eval_em),
      ),
      t.test_exact_match !== undefined && t.test_exact_match !== null
        ? card(
            `held-out test EM (${t.test_examples || "?"} test examples)`,
            `${T.pct(t.test_exact_match)} tuned · ${T.pct(t.base_test_exact_match)} base`,
          )
        : null,
    );
    const active = t.active_alerts || [];
    T.clear(
      alertsBox,
      active.length
        ? T.table(["severity", "alert", "since step", "recommendation"], active, (a) => [
            el("span", { class: "pill " + a.severity, text: a.severity }),
            a.message,
            String(a.since_step),
            T.textCell(a.recommendation),
          ])
        : el("p", { class: "muted", text: "no active alert" }),
      el("div", { id: "past-alerts" }),
    );
    const ls = t.lora_summary;
    T.clear(
      loraBox,
      ls
        ? T.table(
            [
              "layers",
              "grad norm mean / min / max",
              "update ratio",
              "dead",
              "vanishing",
              "exploding",
            ],
            [ls],
            (s) => [
              String(s.layers),
              `${T.fmt(s.grad_norm_mean)} / ${T.fmt(s.grad_norm_min)} / ${T.fmt(s.grad_norm_max)}`,
              T.fmt(s.update_ratio),
              (s.dead || []).join(", ") || "none",
              (s.vanishing || []).join(", ") || "none",
              (s.exploding || []).join(", ") || "none",
            ],
          )
        : el("p", { class: "muted", text: "no LoRA statistics yet" }),
    );
    const dev = st.devices || {};
    T.clear(
      devBox,
      dev.kind === "gpu"
        ? T.table(["GPU", "name", "memory", "utilisation"], dev.gpus, (g) => [
            String(g.index),
            g.name,
            `${(g.memory_used_mib / 1024).toFixed(1)} / ` +
              `${(g.memory_total_mib / 1024).toFixed(1)} GiB`,
            `${g.utilization_pct}%`,
          ])
        : T.table(["CPUs", "load (1 min)", "memory in use"], [dev], (c) => [
            String(c.cpus),
            T.fmt(c.load_1m, 2),
            c.memory_total
              ? `${((c.memory_total - c.memory_available) / 2 ** 30).toFixed(1)} / ` +
                `${(c.memory_total / 2 ** 30).toFixed(1)} GiB`
              : "—",
          ]),
    );
  }

  async function showPast() {
    if (job === null) return;
    const a = await T.get("/api/alerts", { job });
    const fired = a.events.filter((e) => e.event === "fired" && e.severity !== "info");
    const box = document.getElementById("past-alerts");
    if (box && fired.length)
      T.clear(
        box,
        el("h2", { text: "Earlier in this job" }),
        T.table(
          ["step", "severity", "alert", "recommendation"],
          fired.slice(-20).reverse(),
          (e) => [
            String(e.step),
            el("span", { class: "pill " + e.severity, text: e.severity }),
            e.message,
            T.textCell(e.recommendation),
          ],
        ),
      );
  }

  async function showJobs() {
    const jobs = await T.get("/api/queue", { limit: 20 });
    T.clear(
      jobsBox,
      jobs.length
        ? T.table(["id", "state", "file", "result"], jobs, (j) => [
            el("a", { href: `/jobs/${j.id}`, text: `job ${j.id}` }),
            el("span", {
              class:
                j.state === "done"
                  ? "ok"
                  : j.state === "failed" || j.state === "cancelled"
                    ? "bad"
                    : "",
              text: j.state,
            }),
            j.file_name,
            T.textCell(j.error || j.message || ""),
          ])
        : T.empty("No jobs yet.", "Drop a JSONL file into inbox/ or run `trainctl train FILE`."),
    );
  }

  async function tick() {
    try {
      const st = await T.get("/api/status");
      showStatus(st);
      const current = (st.training || {}).job_id;
      await pullMetrics(current === undefined ? null : current);
      emptyBox.style.display = job === null ? "" : "none";
      charted.style.display = job === null ? "none" : "";
      if (job !== null) {
        jobLink.href = `/jobs/${job}`;
        jobLink.textContent = `job ${job}: checkpoints, results, other jobs →`;
      }
      draw();
      await showPast();
      await showJobs();
      T.showError("");
    } catch (e) {
      T.showError("cannot reach trainctl ui: " + e.message + " (retrying)");
    }
  }

  smooth.addEventListener("input", draw);
  logScale.addEventListener("change", () => {
    makeCharts();
    draw();
  });
  xTime.addEventListener("change", () => {
    makeCharts();
    draw();
  });
  window.addEventListener("load", () => {
    makeCharts();
    tick();
    setInterval(tick, 2000);
  });
})();
