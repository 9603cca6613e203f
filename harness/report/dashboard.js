/* harness dashboard: a small hand-written canvas plotter (no libraries, no network).
 * Reads the JSON in #harness-data, draws Grafana-like panels with a shared time axis:
 * drag or wheel to zoom, double-click / "reset zoom" to reset, crosshair + tooltip,
 * click a strategy in the legend to hide it. In live mode it polls DATA.live.url.
 * After each draw: panel[data-points] = points drawn, body[data-render-state] = done.
 */
(function () {
  "use strict";
  var body = document.body;
  var errors = [];
  function noteError(msg) {
    errors.push(String(msg));
    body.setAttribute("data-js-errors", String(errors.length));
    body.setAttribute("data-js-error-text", errors.join(" | ").slice(0, 500));
  }
  window.addEventListener("error", function (e) { noteError(e.message || e); });
  window.addEventListener("unhandledrejection", function (e) { noteError(e.reason); });

  var DATA = JSON.parse(document.getElementById("harness-data").textContent);
  var state = { x0: null, x1: null, hidden: {}, trial: null, hoverT: null,
                drag: null, refreshes: 0, timer: null };

  var PANELS = [
    { id: "rate", title: "Offered vs served rate", unit: "req/s", wide: true,
      series: [{ key: "offered", label: "offered", dash: [6, 4], width: 1.2, alpha: 0.75 },
               { key: "ok", label: "served (ok)" }] },
    { id: "latency", title: "Latency p95 / p99", unit: "ms",
      series: [{ key: "p95", label: "p95" }, { key: "p99", label: "p99", dash: [2, 3] }],
      hline: function () { return { v: DATA.slo.p95_ms, label: "SLO p95" }; } },
    { id: "errors", title: "Error rate", unit: "%",
      series: [{ key: "err_pct", label: "errors" }],
      hline: function () { return { v: DATA.slo.error_rate * 100, label: "SLO" }; } },
    { id: "replicas", title: "Replicas: desired vs ready vs demand", unit: "replicas",
      series: [{ key: "ready", label: "ready", step: true },
               { key: "desired", label: "desired", step: true, dash: [6, 4], width: 1.2 },
               { key: "demand", label: "demand", step: true, dash: [1, 3], once: true,
                 color: "#c7d0d9" },
               // policy kubernetes-hpa only: the harness's HPA port on the real one's inputs
               { key: "port", label: "harness hpa (same inputs)", step: true,
                 dash: [2, 2], width: 1.2 }] },
    { id: "autoscaler", title: "Autoscaler metric vs target", unit: "",
      series: [{ key: "metric", label: "metric" },
               { key: "target", label: "target", dash: [6, 4], width: 1.2 },
               // predictive policy only: its forecast total ÷ ready replicas
               { key: "forecast", label: "forecast", dash: [2, 3] }] },
    // the machine itself (record/host.py): is the host, not the strategy, the limit?
    { id: "host", title: "Host: CPU busy and CPU pressure", unit: "%",
      series: [{ key: "host_cpu", label: "CPU busy" },
               { key: "host_pressure", label: "CPU pressure", dash: [2, 3] }],
      hline: function () { return { v: 90, label: "saturated ≥ 90 %" }; } }
  ];
  var M = { l: 56, r: 12, t: 14, b: 22 };
  var charts = [];

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) { for (var k in attrs) { if (attrs[k] !== undefined) e.setAttribute(k, attrs[k]); } }
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function fmt(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    var a = Math.abs(v);
    if (a >= 1000) return Math.round(v).toLocaleString("en-US");
    if (a >= 100) return v.toFixed(0);
    if (a >= 10) return v.toFixed(1);
    if (a >= 1) return v.toFixed(2);
    return v.toPrecision(2);
  }

  function tickFmt(v, step) {
    var dec = Math.max(0, Math.min(6, -Math.floor(Math.log10(step) + 1e-9)));
    var a = Math.abs(v);
    if (a >= 1000 && dec === 0) return Math.round(v).toLocaleString("en-US");
    return v.toFixed(dec);
  }

  function niceStep(range, target) {
    var raw = range / Math.max(1, target);
    var p = Math.pow(10, Math.floor(Math.log10(raw)));
    var m = raw / p;
    return (m < 1.5 ? 1 : m < 3 ? 2 : m < 7 ? 5 : 10) * p;
  }

  function trialsToShow(s) {
    if (state.trial === "all") return s.trials.map(String);
    var want = state.trial || String(s.trials[0]);
    return s.trials.map(String).indexOf(want) >= 0 ? [want] : [];
  }

  function fullRange() {
    var lo = Infinity, hi = -Infinity;
    DATA.strategies.forEach(function (s) {
      var per = DATA.series[s.name] || {};
      Object.keys(per).forEach(function (tr) {
        var t = per[tr].t;
        if (t.length) { lo = Math.min(lo, t[0]); hi = Math.max(hi, t[t.length - 1] + 1); }
      });
    });
    if (!isFinite(lo)) { lo = 0; hi = 1; }
    return [lo, hi];
  }

  function xRange() {
    var f = fullRange();
    return [state.x0 === null ? f[0] : state.x0, state.x1 === null ? f[1] : state.x1];
  }

  /* ---------- header, tables, toolbar ---------- */
  function buildStatic(app) {
    app.innerHTML = "";
    var run = DATA.run;
    var head = el("header", { "class": "top" });
    head.appendChild(el("h1", null, "harness · " + run.id));
    var badge = el("span", { "class": "badge " + run.status, id: "status" },
                   run.status === "running" ? "● live — running" : run.status);
    if (DATA.compare) badge.textContent = DATA.compare.view === "ab" ? "A/B" : "within";
    head.appendChild(badge);
    var meta = [];
    if (run.scenario) meta.push("scenario " + run.scenario);
    if (run.platform) meta.push("platform " + run.platform);
    if (run.started) meta.push("started " + run.started);
    if (run.ended) meta.push("ended " + run.ended);
    meta.push("SLO p95 ≤ " + DATA.slo.p95_ms + " ms, errors ≤ " +
              (DATA.slo.error_rate * 100) + "%, stable " + DATA.slo.stable_s + " s");
    if (DATA.capacity.rps_per_replica) {
      meta.push("capacity " + fmt(DATA.capacity.rps_per_replica) + " req/s per replica (" +
                DATA.capacity.source + ")");
    }
    head.appendChild(el("span", { "class": "meta" }, meta.join(" · ")));
    app.appendChild(head);
    if (run.description) app.appendChild(el("div", { "class": "meta" }, run.description));

    if (DATA.warnings && DATA.warnings.length) {
      var w = el("div", { "class": "box warn", id: "warnings" });
      DATA.warnings.forEach(function (t) { w.appendChild(el("div", null, "⚠ " + t)); });
      app.appendChild(w);
    }
    if (DATA.gates && DATA.gates.length) {
      var g = el("div", { "class": "box", id: "gates" });
      g.appendChild(el("h2", null, "Thresholds"));
      var ul = el("ul", { "class": "gates" });
      DATA.gates.forEach(function (x) {
        ul.appendChild(el("li", { "class": x.ok ? "pass" : "fail" }, x.text));
      });
      g.appendChild(ul);
      app.appendChild(g);
    }
    if (DATA.controllers && DATA.controllers.length) {
      var c = el("div", { "class": "box", id: "controllers" });
      c.appendChild(el("h2", null, "The real HPA controller vs the harness's port"));
      DATA.controllers.forEach(function (t) { c.appendChild(el("div", null, t)); });
      app.appendChild(c);
    }
    if (DATA.compare) {
      app.appendChild(compareTables());
    } else {
      app.appendChild(summaryTable());
    }
    if (DATA.disturbances && DATA.disturbances.length) app.appendChild(disturbanceTable());
    app.appendChild(toolbar());
    var grid = el("div", { "class": "grid", id: "panels" });
    app.appendChild(grid);
    charts = PANELS.map(function (p) { return makeChart(grid, p); });
  }

  function summaryTable() {
    var S = DATA.summary;
    var box = el("div", { "class": "box", id: "summary" });
    box.appendChild(el("h2", null, "Summary"));
    var t = el("table", { "class": "sum" });
    var tr = el("tr");
    tr.appendChild(el("th", null, "strategy"));
    tr.appendChild(el("th", null, "trials"));
    S.columns.forEach(function (c) { tr.appendChild(el("th", null, c)); });
    var thead = el("thead"); thead.appendChild(tr); t.appendChild(thead);
    var tb = el("tbody");
    S.rows.forEach(function (r) {
      var row = el("tr");
      var td = el("td");
      var sw = el("span", { "class": "swatch", style: "background:" + r.color });
      td.appendChild(sw); td.appendChild(document.createTextNode(" " + r.strategy));
      row.appendChild(td);
      row.appendChild(el("td", null, r.trials));
      r.cells.forEach(function (c) {
        row.appendChild(el("td", c.indexOf("not recovered") >= 0 ? { "class": "nr" } : null, c));
      });
      tb.appendChild(row);
    });
    t.appendChild(tb);
    box.appendChild(t);
    box.appendChild(el("div", { "class": "note" }, S.note));
    return box;
  }

  /* `harness compare` pages: DATA.compare holds tables already worded in Python
   * (harness.report.compare_view), so the page says exactly what the terminal says. */
  function compareTables() {
    var C = DATA.compare;
    var box = el("div", { "class": "box", id: "compare" });
    box.appendChild(el("h2", { id: "compare-question" }, C.question));
    var grid = el("div", { "class": "cgrid" });
    C.tables.forEach(function (T) {
      var part = el("div", { "class": "cpart" });
      part.appendChild(el("div", { "class": "ctitle" }, T.title));
      var t = el("table", { "class": "sum compare" });
      var tr = el("tr");
      tr.appendChild(el("th", null, "metric"));
      T.columns.forEach(function (c) {
        var th = el("th");
        th.appendChild(el("span", { "class": "swatch", style: "background:" + c.color }));
        th.appendChild(document.createTextNode(" " + c.title));
        tr.appendChild(th);
      });
      var thead = el("thead"); thead.appendChild(tr); t.appendChild(thead);
      var tb = el("tbody");
      T.rows.forEach(function (r) {
        var row = el("tr", { "data-metric": r.metric, "class": r.key ? "key" : "more" });
        row.appendChild(el("td", null, r.label));
        r.cells.forEach(function (c) {
          var td = el("td", c.text.indexOf("not recovered") >= 0 ? { "class": "nr" } : null);
          var i = c.text.indexOf(" [");
          td.appendChild(document.createTextNode(i > 0 ? c.text.slice(0, i) : c.text));
          if (i > 0) td.appendChild(el("span", { "class": "iv" }, c.text.slice(i + 1)));
          if (c.delta) td.appendChild(el("span", { "class": "d " + c.cls }, "Δ " + c.delta));
          row.appendChild(td);
        });
        tb.appendChild(row);
      });
      t.appendChild(tb);
      part.appendChild(t);
      grid.appendChild(part);
    });
    box.appendChild(grid);
    var more = el("button", { id: "all-metrics" }, "all metrics");
    more.addEventListener("click", function () {
      var on = box.classList.toggle("all");
      more.textContent = on ? "key metrics" : "all metrics";
    });
    box.appendChild(more);
    box.appendChild(el("div", { "class": "note", id: "compare-legend" }, C.legend));
    return box;
  }

  function disturbanceTable() {
    var box = el("div", { "class": "box", id: "disturbance-table" });
    box.appendChild(el("h2", null, "Disturbances"));
    var t = el("table", { "class": "sum" });
    var cols = ["strategy", "trial", "disturbance", "at (s)", "recovery", "SLO-violation s",
                "failed requests", "first new replica ready after"];
    var tr = el("tr");
    cols.forEach(function (c) { tr.appendChild(el("th", null, c)); });
    var thead = el("thead"); thead.appendChild(tr); t.appendChild(thead);
    var tb = el("tbody");
    DATA.disturbances.forEach(function (d) {
      var row = el("tr");
      var td = el("td");
      td.appendChild(el("span", { "class": "swatch", style: "background:" + d.color }));
      td.appendChild(document.createTextNode(" " + d.strategy));
      row.appendChild(td);
      row.appendChild(el("td", null, d.trial));
      row.appendChild(el("td", null, d.disturbance));
      row.appendChild(el("td", null, d.t0));
      row.appendChild(el("td", d.recovered ? null : { "class": "nr" }, d.recovery));
      row.appendChild(el("td", null, d.violation_s));
      row.appendChild(el("td", null, d.failed.toLocaleString("en-US")));
      row.appendChild(el("td", null, d.reaction));
      tb.appendChild(row);
    });
    t.appendChild(tb);
    box.appendChild(t);
    return box;
  }

  function toolbar() {
    var bar = el("div", { "class": "toolbar", id: "toolbar" });
    DATA.strategies.forEach(function (s) {
      var chip = el("span", { "class": "chip" + (state.hidden[s.name] ? " off" : ""),
                              "data-strategy": s.name, title: "click to hide/show" });
      chip.appendChild(el("span", { "class": "swatch", style: "background:" + s.color }));
      chip.appendChild(document.createTextNode(s.name + (s.kind ? " (" + s.kind + ")" : "")));
      chip.addEventListener("click", function () {
        state.hidden[s.name] = !state.hidden[s.name];
        chip.className = "chip" + (state.hidden[s.name] ? " off" : "");
        drawAll();
      });
      bar.appendChild(chip);
    });
    var maxTrials = 0;
    DATA.strategies.forEach(function (s) { maxTrials = Math.max(maxTrials, s.trials.length); });
    if (maxTrials > 1) {
      var sel = el("select", { id: "trial" });
      var all = [];
      DATA.strategies.forEach(function (s) {
        s.trials.forEach(function (t) { if (all.indexOf(t) < 0) all.push(t); });
      });
      all.sort(function (a, b) { return a - b; }).forEach(function (t) {
        sel.appendChild(el("option", { value: String(t) }, "trial " + t));
      });
      sel.appendChild(el("option", { value: "all" }, "all trials"));
      sel.value = state.trial || String(all[0]);
      sel.addEventListener("change", function () { state.trial = sel.value; drawAll(); });
      bar.appendChild(sel);
    }
    var reset = el("button", { id: "reset-zoom", title: "or double-click a panel" }, "reset zoom");
    reset.addEventListener("click", function () { state.x0 = state.x1 = null; drawAll(); });
    bar.appendChild(reset);
    bar.appendChild(el("span", { "class": "styles" },
      "solid: served · p95 · errors · ready · metric — dashed: offered · p99 · desired · " +
      "target — dotted: demand · red: SLO, faults · shaded: load spikes/steps/surges · " +
      "drag or wheel to zoom"));
    return bar;
  }

  /* ---------- charts ---------- */
  function makeChart(grid, def) {
    var panel = el("div", { "class": "panel" + (def.wide ? " wide" : ""), "data-panel": def.id,
                            "data-points": "0", "data-rendered": "0" });
    var title = el("div", { "class": "ptitle" });
    title.appendChild(el("span", null, def.title));
    title.appendChild(el("span", { "class": "unit" }, def.unit));
    panel.appendChild(title);
    var wrap = el("div", { "class": "cwrap" });
    var canvas = el("canvas");
    var tip = el("div", { "class": "tip" });
    wrap.appendChild(canvas); wrap.appendChild(tip);
    panel.appendChild(wrap);
    grid.appendChild(panel);
    var chart = { def: def, panel: panel, wrap: wrap, canvas: canvas, tip: tip,
                  w: 0, h: 0, x0: 0, x1: 1, y0: 0, y1: 1, lines: [] };
    bindEvents(chart);
    return chart;
  }

  function xOf(c, t) { return M.l + (t - c.x0) / (c.x1 - c.x0) * (c.w - M.l - M.r); }
  function tOf(c, x) { return c.x0 + (x - M.l) / (c.w - M.l - M.r) * (c.x1 - c.x0); }
  function yOf(c, v) { return c.h - M.b - (v - c.y0) / (c.y1 - c.y0) * (c.h - M.t - M.b); }

  function collect(c) {
    var lines = [];
    var onceDone = {};
    DATA.strategies.forEach(function (s) {
      if (state.hidden[s.name]) return;
      var per = DATA.series[s.name] || {};
      trialsToShow(s).forEach(function (tr) {
        var d = per[tr];
        if (!d) return;
        c.def.series.forEach(function (sd) {
          if (sd.once && onceDone[sd.key]) return;
          var ys = d[sd.key];
          if (!ys || !ys.some(function (v) { return v !== null; })) return;
          if (sd.once) onceDone[sd.key] = true;
          lines.push({ t: d.t, y: ys, def: sd, color: sd.color || s.color, owner: s.name,
                       name: sd.once ? sd.label : s.name + (state.trial === "all" ? " #" + tr : "") +
                       " " + sd.label });
        });
      });
    });
    return lines;
  }

  function draw(c) {
    var dpr = window.devicePixelRatio || 1;
    var w = c.wrap.clientWidth, h = c.wrap.clientHeight;
    if (w <= 0 || h <= 0) return;
    c.w = w; c.h = h;
    if (c.canvas.width !== Math.round(w * dpr) || c.canvas.height !== Math.round(h * dpr)) {
      c.canvas.width = Math.round(w * dpr); c.canvas.height = Math.round(h * dpr);
    }
    var g = c.canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    var xr = xRange();
    c.x0 = xr[0]; c.x1 = xr[1] > xr[0] ? xr[1] : xr[0] + 1;
    c.lines = collect(c);

    // y range over the visible x window
    var ymax = -Infinity, ymin = Infinity, points = 0;
    c.lines.forEach(function (L) {
      for (var i = 0; i < L.t.length; i++) {
        var v = L.y[i];
        if (v === null || L.t[i] < c.x0 - 1 || L.t[i] > c.x1) continue;
        if (v > ymax) ymax = v;
        if (v < ymin) ymin = v;
      }
    });
    var hl = c.def.hline ? c.def.hline() : null;
    if (hl && isFinite(hl.v)) ymax = Math.max(ymax, hl.v);
    if (!isFinite(ymax)) { ymax = 1; ymin = 0; }
    c.y0 = Math.min(0, ymin);
    c.y1 = ymax <= c.y0 ? c.y0 + 1 : ymax * 1.08;

    // grid and axes
    g.font = "11px -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif";
    g.strokeStyle = "#2c3235"; g.fillStyle = "#8e8e8e"; g.lineWidth = 1;
    var ys = niceStep(c.y1 - c.y0, 5);
    g.textAlign = "right"; g.textBaseline = "middle";
    for (var yv = Math.ceil(c.y0 / ys) * ys; yv <= c.y1 + 1e-9; yv += ys) {
      var yy = Math.round(yOf(c, yv)) + 0.5;
      g.beginPath(); g.moveTo(M.l, yy); g.lineTo(w - M.r, yy); g.stroke();
      g.fillText(tickFmt(yv, ys), M.l - 6, yy);
    }
    var xs = niceStep(c.x1 - c.x0, Math.max(3, Math.floor((w - M.l - M.r) / 80)));
    g.textAlign = "center"; g.textBaseline = "top";
    for (var xv = Math.ceil(c.x0 / xs) * xs; xv <= c.x1 + 1e-9; xv += xs) {
      var xx = Math.round(xOf(c, xv)) + 0.5;
      g.beginPath(); g.moveTo(xx, M.t); g.lineTo(xx, h - M.b); g.stroke();
      g.fillText(tickFmt(xv, xs) + "s", xx, h - M.b + 5);
    }

    g.save();
    g.beginPath(); g.rect(M.l, M.t - 2, w - M.l - M.r, h - M.t - M.b + 2); g.clip();
    drawAnnotations(c, g);
    if (hl && isFinite(hl.v)) {
      var hy = yOf(c, hl.v);
      g.strokeStyle = "#f2495c"; g.setLineDash([4, 4]); g.lineWidth = 1;
      g.beginPath(); g.moveTo(M.l, hy); g.lineTo(w - M.r, hy); g.stroke(); g.setLineDash([]);
      g.fillStyle = "#f2495c"; g.textAlign = "left"; g.textBaseline = "bottom";
      g.fillText(hl.label, M.l + 4, hy - 2);
    }
    c.lines.forEach(function (L) { points += drawLine(c, g, L); });
    if (state.hoverT !== null && state.hoverT >= c.x0 && state.hoverT <= c.x1) {
      var cx = Math.round(xOf(c, state.hoverT)) + 0.5;
      g.strokeStyle = "rgba(220,220,220,0.5)"; g.lineWidth = 1;
      g.beginPath(); g.moveTo(cx, M.t); g.lineTo(cx, h - M.b); g.stroke();
    }
    if (state.drag && state.drag.chart === c) {
      var a = Math.min(state.drag.a, state.drag.b), b = Math.max(state.drag.a, state.drag.b);
      g.fillStyle = "rgba(87,148,242,0.18)";
      g.fillRect(a, M.t, b - a, h - M.t - M.b);
    }
    g.restore();
    if (!c.lines.length || points === 0) {
      g.fillStyle = "#8e8e8e"; g.textAlign = "center"; g.textBaseline = "middle";
      g.font = "13px -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif";
      g.fillText("No data", (M.l + w - M.r) / 2, (M.t + h - M.b) / 2);
    }
    c.panel.setAttribute("data-points", String(points));
    c.panel.setAttribute("data-series", String(c.lines.length));
    var owners = {};
    c.lines.forEach(function (L) { if (!L.def.once) owners[L.owner] = true; });
    c.panel.setAttribute("data-strategies", String(Object.keys(owners).length));
    c.panel.setAttribute("data-rendered", "1");
  }

  function drawAnnotations(c, g) {
    var h = c.h;
    var f = fullRange();
    if (f[0] < 0) {  // warm-up
      var wx0 = xOf(c, f[0]), wx1 = xOf(c, 0);
      g.fillStyle = "rgba(142,142,142,0.10)";
      g.fillRect(wx0, M.t, wx1 - wx0, h - M.t - M.b);
      g.fillStyle = "#8e8e8e"; g.textAlign = "left"; g.textBaseline = "top";
      g.fillText("warm-up", wx0 + 3, M.t);
    }
    (DATA.annotations || []).forEach(function (a) {
      var x = xOf(c, a.t0);
      var load = a.kind === "spike" || a.kind === "step" || a.kind === "surge";
      if (load && a.end !== null && a.end !== undefined) {
        var x2 = xOf(c, a.end);
        g.fillStyle = "rgba(255,152,48,0.09)";
        g.fillRect(x, M.t, x2 - x, h - M.t - M.b);
      }
      g.strokeStyle = load ? "rgba(255,152,48,0.8)" : "rgba(242,73,92,0.9)";
      g.lineWidth = 1.5; g.setLineDash(load ? [3, 3] : []);
      g.beginPath(); g.moveTo(x, M.t); g.lineTo(x, h - M.b); g.stroke(); g.setLineDash([]);
      g.fillStyle = load ? "#ff9830" : "#f2495c";
      g.textAlign = "left"; g.textBaseline = "top";
      g.fillText(a.name, x + 3, M.t + (load ? 0 : 12));
    });
  }

  function drawLine(c, g, L) {
    var sd = L.def, n = 0, pen = false, lastY = null;
    g.strokeStyle = L.color; g.globalAlpha = sd.alpha || 1;
    g.lineWidth = sd.width || 1.8; g.setLineDash(sd.dash || []);
    g.lineJoin = "round";
    g.beginPath();
    for (var i = 0; i < L.t.length; i++) {
      var t = L.t[i], v = L.y[i];
      if (t < c.x0 - 2 || t > c.x1 + 1) { pen = false; continue; }
      if (v === null) { pen = false; lastY = null; continue; }
      var x = xOf(c, t), y = yOf(c, v);
      if (!pen) { g.moveTo(x, y); pen = true; }
      else if (sd.step && lastY !== null) { g.lineTo(x, lastY); g.lineTo(x, y); }
      else { g.lineTo(x, y); }
      lastY = y;
      if (t >= c.x0 && t <= c.x1) n++;
    }
    g.stroke(); g.setLineDash([]); g.globalAlpha = 1;
    return n;
  }

  function valueAt(L, t) {
    var lo = 0, hi = L.t.length - 1;
    if (hi < 0) return null;
    while (lo < hi) {  // last index with L.t[i] <= t
      var mid = (lo + hi + 1) >> 1;
      if (L.t[mid] <= t) lo = mid; else hi = mid - 1;
    }
    if (L.t[lo] > t || t - L.t[lo] > 1.5) return null;
    return L.y[lo];
  }

  function showTip(c, px, py) {
    if (state.hoverT === null) { c.tip.style.display = "none"; return; }
    var t = Math.floor(state.hoverT);
    c.tip.innerHTML = "";
    c.tip.appendChild(el("div", { "class": "tt" }, "t = " + t + " s"));
    (DATA.annotations || []).forEach(function (a) {
      if (Math.abs(a.t0 - state.hoverT) < (c.x1 - c.x0) / 100 + 0.5) {
        c.tip.appendChild(el("div", { "class": "tt" }, "▲ " + a.name));
      }
    });
    c.lines.forEach(function (L) {
      var v = valueAt(L, t);
      var row = el("div");
      row.appendChild(el("i", { style: "background:" + L.color }));
      row.appendChild(document.createTextNode(L.name + ": " + fmt(v)));
      c.tip.appendChild(row);
    });
    c.tip.style.display = "block";
    var tw = c.tip.offsetWidth, th = c.tip.offsetHeight;
    var left = px + 14 + tw > c.w ? px - 14 - tw : px + 14;
    c.tip.style.left = Math.max(0, left) + "px";
    c.tip.style.top = Math.max(0, Math.min(py - th / 2, c.h - th)) + "px";
  }

  var pending = false;
  function drawAll() {
    if (pending) return;
    pending = true;
    window.requestAnimationFrame(function () {
      pending = false;
      try { charts.forEach(draw); } catch (e) { noteError(e && e.stack || e); }
    });
  }

  function clampRange(a, b) {
    var f = fullRange();
    var span = Math.max(2, b - a);
    if (span >= f[1] - f[0]) return [null, null];
    if (a < f[0]) { a = f[0]; b = a + span; }
    if (b > f[1]) { b = f[1]; a = b - span; }
    return [a, b];
  }

  function bindEvents(c) {
    var cv = c.canvas;
    function pos(e) { var r = cv.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; }
    cv.addEventListener("mousemove", function (e) {
      var p = pos(e);
      if (state.drag && state.drag.chart === c) state.drag.b = p[0];
      state.hoverT = p[0] >= M.l && p[0] <= c.w - M.r ? tOf(c, p[0]) : null;
      drawAll();
      showTip(c, p[0], p[1]);
    });
    cv.addEventListener("mouseleave", function () {
      state.hoverT = null; c.tip.style.display = "none";
      if (state.drag && state.drag.chart === c) state.drag = null;
      drawAll();
    });
    cv.addEventListener("mousedown", function (e) {
      if (e.button !== 0) return;
      var p = pos(e);
      state.drag = { chart: c, a: p[0], b: p[0] };
      e.preventDefault();
    });
    cv.addEventListener("mouseup", function () {
      var d = state.drag;
      state.drag = null;
      if (d && d.chart === c && Math.abs(d.b - d.a) > 5) {
        var t0 = tOf(c, Math.min(d.a, d.b)), t1 = tOf(c, Math.max(d.a, d.b));
        var r = clampRange(t0, t1);
        state.x0 = r[0]; state.x1 = r[1];
      }
      drawAll();
    });
    cv.addEventListener("dblclick", function () { state.x0 = state.x1 = null; drawAll(); });
    cv.addEventListener("wheel", function (e) {
      e.preventDefault();
      var p = pos(e);
      var t = tOf(c, p[0]);
      var k = e.deltaY > 0 ? 1.25 : 0.8;
      var r = clampRange(t - (t - c.x0) * k, t + (c.x1 - t) * k);
      state.x0 = r[0]; state.x1 = r[1];
      drawAll();
    }, { passive: false });
  }

  /* ---------- live mode ---------- */
  function poll() {
    if (!DATA.live || !DATA.live.url) return;
    fetch(DATA.live.url, { cache: "no-store" }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    }).then(function (fresh) {
      fresh.live = DATA.live;
      DATA = fresh;
      state.refreshes += 1;
      body.setAttribute("data-refreshes", String(state.refreshes));
      render();
      if (DATA.run.status !== "running") {
        window.clearInterval(state.timer);
        state.timer = null;
      }
    }).catch(function (e) {
      // A run folder mid-write can fail a poll; say so without counting it as a page error.
      var b = document.getElementById("status");
      if (b) b.textContent = "● live — refresh failed (" + e.message + "), retrying";
    });
  }

  function render() {
    var scrollY = window.scrollY;
    buildStatic(document.getElementById("app"));
    charts.forEach(draw);
    window.scrollTo(0, scrollY);
    body.setAttribute("data-render-state", "done");
  }

  try {
    render();
  } catch (e) {
    noteError(e && e.stack || e);
    body.setAttribute("data-render-state", "failed");
  }
  window.addEventListener("resize", drawAll);
  // for tests and the curious: the data and view state behind the page
  window.__harness = { data: function () { return DATA; }, fullRange: fullRange, state: state };
  if (DATA.live && DATA.live.url && DATA.run.status === "running") {
    body.setAttribute("data-refreshes", "0");
    state.timer = window.setInterval(poll, DATA.live.interval_ms || 3000);
  }
})();
