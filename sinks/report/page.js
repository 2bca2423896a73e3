/* The journey map: draws the embedded data with Plotly and redraws it when a filter changes. */
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("journeys-data").textContent);
  var DAY = 86400000;
  var PHASES = DATA.phases;
  var ROLES = DATA.roles;
  var CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d"] };
  var COLORS = ["#2f6fdf", "#27ab83", "#f0b429", "#e12d39", "#8719e0", "#0fb5ba", "#9aa5b1", "#de911d"];
  var A = DATA.accounts, T = DATA.transitions, S = DATA.stays, P = DATA.touchpoints;

  function day(ms) { return Math.floor(ms / DAY); }
  function iso(days) { return new Date(days * DAY).toISOString().slice(0, 10); }
  function text(ms) { return new Date(ms).toISOString().slice(0, 16).replace("T", " "); }
  function el(id) { return document.getElementById(id); }
  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) { return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]; });
  }
  function median(xs) {
    if (!xs.length) return null;
    var s = xs.slice().sort(function (a, b) { return a - b; });
    var m = Math.floor(s.length / 2);
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
  }

  /* The period the data spans, in days, for the date inputs. */
  function span() {
    var lo = Infinity, hi = -Infinity, i;
    for (i = 0; i < A.first_seen.length; i++) { lo = Math.min(lo, day(A.first_seen[i])); hi = Math.max(hi, day(A.first_seen[i])); }
    for (i = 0; i < P.day.length; i++) { lo = Math.min(lo, P.day[i]); hi = Math.max(hi, P.day[i]); }
    if (DATA.now) hi = Math.max(hi, day(DATA.now));
    if (lo === Infinity) { lo = hi = day(Date.now()); }
    return [lo, hi];
  }

  function filters() {
    var seg = el("segment").value;
    var from = el("from").value ? day(Date.parse(el("from").value)) : -Infinity;
    var to = el("to").value ? day(Date.parse(el("to").value)) : Infinity;
    return { segment: seg === "" ? -1 : Number(seg), from: from, to: to };
  }
  function inSegment(f, account) { return f.segment < 0 || (account >= 0 && A.segment[account] === f.segment); }
  function inPeriod(f, ms) { var d = day(ms); return d >= f.from && d <= f.to; }

  function chart(id, traces, layout, points) {
    var node = el(id);
    node.setAttribute("data-points", String(points));
    if (!points) {
      Plotly.purge(node);
      node.innerHTML = '<div class="empty">nothing in this selection</div>';
      return;
    }
    if (node.querySelector(".empty")) node.innerHTML = "";
    var base = { margin: { l: 110, r: 20, t: 10, b: 40 }, font: { size: 12 }, paper_bgcolor: "#fff", plot_bgcolor: "#fff" };
    Plotly.react(node, traces, Object.assign(base, layout || {}), CONFIG);
  }

  function cohort(f) {
    var out = [];
    for (var i = 0; i < A.id.length; i++) {
      if (inSegment(f, i) && inPeriod(f, A.first_seen[i])) out.push(i);
    }
    return out;
  }

  function drawFunnel(f, accounts) {
    var reached = PHASES.map(function () { return 0; });
    accounts.forEach(function (i) { for (var p = 0; p <= A.phase[i]; p++) reached[p] += 1; });
    chart("funnel", [{
      type: "funnel", y: PHASES, x: reached, textinfo: "value+percent initial",
      marker: { color: PHASES.map(function (_, i) { return COLORS[i % COLORS.length]; }) }
    }], { margin: { l: 110, r: 20, t: 10, b: 20 } }, accounts.length);
    return reached;
  }

  function drawSankey(f) {
    var start = PHASES.length, counts = {}, total = 0;
    for (var i = 0; i < T.at.length; i++) {
      if (!inSegment(f, T.account[i]) || !inPeriod(f, T.at[i])) continue;
      var key = (T.from[i] < 0 ? start : T.from[i]) + ">" + T.to[i];
      counts[key] = (counts[key] || 0) + 1;
      total += 1;
    }
    var source = [], target = [], value = [];
    Object.keys(counts).forEach(function (k) {
      var parts = k.split(">");
      source.push(Number(parts[0])); target.push(Number(parts[1])); value.push(counts[k]);
    });
    var labels = PHASES.concat(["first activity"]);
    var colors = labels.map(function (_, i) { return i === start ? "#9aa5b1" : COLORS[i % COLORS.length]; });
    chart("sankey", [{
      type: "sankey", arrangement: "snap",
      node: { label: labels, color: colors, pad: 14, thickness: 16 },
      link: { source: source, target: target, value: value, color: "rgba(98,125,152,0.25)" }
    }], { margin: { l: 10, r: 10, t: 10, b: 10 } }, total);
    return total;
  }

  function drawTime(f) {
    var done = PHASES.map(function () { return []; }), open = PHASES.map(function () { return []; });
    var now = DATA.now || Date.now(), n = 0;
    for (var i = 0; i < S.entered.length; i++) {
      if (!inSegment(f, S.account[i]) || !inPeriod(f, S.entered[i])) continue;
      if (S.left[i] === null) open[S.phase[i]].push((now - S.entered[i]) / DAY);
      else done[S.phase[i]].push((S.left[i] - S.entered[i]) / DAY);
      n += 1;
    }
    var traces = [];
    PHASES.forEach(function (p, k) {
      if (done[k].length) traces.push({ type: "box", name: p, x: done[k], orientation: "h", boxpoints: false, marker: { color: COLORS[k % COLORS.length] }, showlegend: false, hovertemplate: p + ": %{x:.1f} days<extra></extra>" });
    });
    var ys = [], xs = [];
    PHASES.forEach(function (p, k) { open[k].forEach(function (d) { ys.push(p); xs.push(d); }); });
    if (xs.length) traces.push({ type: "scatter", mode: "markers", name: "still in phase", y: ys, x: xs, marker: { size: 4, color: "rgba(31,41,51,0.35)" }, hovertemplate: "still in %{y}: %{x:.1f} days<extra></extra>" });
    chart("time", traces, { xaxis: { title: { text: "days" }, rangemode: "tozero" }, yaxis: { categoryorder: "array", categoryarray: PHASES.slice().reverse() }, legend: { orientation: "h", y: -0.2 } }, n);
    return done.map(median);
  }

  function drawTouchpoints(f) {
    var rows = [DATA.before].concat(PHASES), z = rows.map(function () { return DATA.channels.map(function () { return 0; }); });
    var total = 0, used = {};
    for (var i = 0; i < P.n.length; i++) {
      if ((f.segment >= 0 && P.segment[i] !== f.segment) || P.day[i] < f.from || P.day[i] > f.to) continue;
      var r = P.phase[i] + 1;
      z[r][P.channel[i]] += P.n[i];
      total += P.n[i];
      used[r] = true;
    }
    var keep = rows.map(function (_, r) { return r > 0 || used[r]; });
    var y = rows.filter(function (_, r) { return keep[r]; }), zz = z.filter(function (_, r) { return keep[r]; });
    chart("touchpoints", [{
      type: "heatmap", x: DATA.channels, y: y, z: zz, colorscale: [[0, "#f0f4f8"], [1, "#1c4fa1"]], texttemplate: "%{z}",
      hovertemplate: "%{y} · %{x}: %{z} events<extra></extra>"
    }], { yaxis: { autorange: "reversed" }, margin: { l: 140, r: 20, t: 10, b: 30 } }, total);
    return total;
  }

  function drawDmu(f, accounts) {
    var inPhase = PHASES.map(function () { return 0; });
    var engaged = ROLES.map(function () { return PHASES.map(function () { return 0; }); });
    var noDecider = [], decider = ROLES.indexOf("decider"), decision = PHASES.indexOf("decision");
    accounts.forEach(function (i) {
      inPhase[A.phase[i]] += 1;
      ROLES.forEach(function (_, r) { if (A.roles[i] & (1 << r)) engaged[r][A.phase[i]] += 1; });
      if (A.phase[i] === decision && !(A.roles[i] & (1 << decider))) noDecider.push(A.id[i]);
    });
    var traces = ROLES.map(function (role, r) {
      return { type: "bar", name: role, x: PHASES, y: engaged[r].map(function (n, p) { return inPhase[p] ? n / inPhase[p] : 0; }),
        customdata: engaged[r], hovertemplate: role + " in %{x}: %{y:.0%} (%{customdata} accounts)<extra></extra>", marker: { color: COLORS[r % COLORS.length] } };
    });
    chart("dmu", traces, { barmode: "group", yaxis: { tickformat: ".0%", range: [0, 1] }, legend: { orientation: "h", y: -0.15 }, margin: { l: 50, r: 20, t: 10, b: 40 } }, accounts.length);
    el("nodecider").innerHTML = decision < 0 ? "" :
      "<b>" + noDecider.length + "</b> account(s) in decision with no decider engaged" +
      (noDecider.length ? ": " + noDecider.slice(0, 12).map(esc).join(", ") + (noDecider.length > 12 ? ", …" : "") : "");
    return noDecider.length;
  }

  function drawAlerts(f) {
    var shown = DATA.alerts.filter(function (a) { return inSegment(f, a.account) && inPeriod(f, a.raised_at); });
    var kinds = {};
    shown.forEach(function (a) { kinds[a.kind] = (kinds[a.kind] || 0) + 1; });
    var names = Object.keys(kinds).sort();
    chart("alertkinds", [{ type: "bar", orientation: "h", y: names, x: names.map(function (k) { return kinds[k]; }), marker: { color: "#e12d39" }, hovertemplate: "%{y}: %{x}<extra></extra>" }],
      { margin: { l: 120, r: 20, t: 10, b: 30 } }, shown.length);
    var rows = shown.slice().sort(function (a, b) { return b.raised_at - a.raised_at; }).map(function (a) {
      var seg = a.account >= 0 ? DATA.segments[A.segment[a.account]] : "";
      return "<tr><td>" + esc(a.kind) + "</td><td>" + esc(a.account_id) + "</td><td>" + esc(seg) + "</td><td>" + text(a.raised_at) +
        '</td><td class="num">' + (a.cart_value != null ? a.cart_value.toLocaleString("en", { maximumFractionDigits: 0 }) : "") +
        '</td><td class="num">' + (a.deal_age_days != null ? a.deal_age_days.toFixed(1) : "") + "</td></tr>";
    });
    el("alerts").innerHTML = shown.length
      ? "<table><thead><tr><th>kind</th><th>account</th><th>segment</th><th>raised (UTC)</th><th class=num>cart value</th><th class=num>deal age (days)</th></tr></thead><tbody>" + rows.join("") + "</tbody></table>"
      : '<div class="empty">no open alerts in this selection</div>';
    return shown.length;
  }

  function kpis(values) {
    el("kpis").innerHTML = values.map(function (v) { return "<div class=kpi><b>" + v[1].toLocaleString("en") + "</b><span>" + esc(v[0]) + "</span></div>"; }).join("");
  }

  function draw() {
    var f = filters();
    var accounts = cohort(f);
    var reached = drawFunnel(f, accounts);
    var moves = drawSankey(f);
    drawTime(f);
    var touches = drawTouchpoints(f);
    var noDecider = drawDmu(f, accounts);
    var open = drawAlerts(f);
    kpis([["accounts started", accounts.length], ["reached " + PHASES[PHASES.length - 1], reached[reached.length - 1] || 0],
      ["transitions", moves], ["touchpoints", touches], ["open alerts", open], ["in decision without decider", noDecider]]);
    document.body.setAttribute("data-ready", "1");
    document.body.setAttribute("data-errors", String(window.journeysErrors.length));
  }

  /* Filters travel in the address (#segment=...&from=YYYY-MM-DD&to=YYYY-MM-DD), so a view can be shared. */
  function fromHash() {
    var params = new URLSearchParams(location.hash.slice(1));
    var seg = params.get("segment");
    if (seg !== null && DATA.segments.indexOf(seg) >= 0) el("segment").value = String(DATA.segments.indexOf(seg));
    if (params.get("from")) el("from").value = params.get("from");
    if (params.get("to")) el("to").value = params.get("to");
  }
  function toHash() {
    var params = new URLSearchParams();
    if (el("segment").value !== "") params.set("segment", DATA.segments[Number(el("segment").value)]);
    params.set("from", el("from").value);
    params.set("to", el("to").value);
    history.replaceState(null, "", "#" + params.toString());
  }

  function setup() {
    DATA.segments.forEach(function (s, i) {
      var o = document.createElement("option"); o.value = String(i); o.textContent = s; el("segment").appendChild(o);
    });
    var range = span();
    function reset() { el("from").value = iso(range[0]); el("to").value = iso(range[1]); }
    reset();
    fromHash();
    ["segment", "from", "to"].forEach(function (id) { el(id).addEventListener("change", function () { toHash(); draw(); }); });
    el("reset").addEventListener("click", function () { reset(); toHash(); draw(); });
    el("subtitle").textContent = "Database " + DATA.database + " · phases from " + DATA.rules +
      (DATA.generated_at ? " · events up to " + text(DATA.now) + " UTC" : " · no events yet");
    el("footer").textContent = "Made by journeys report with Plotly " + Plotly.version + ", embedded: this file needs no network.";
    draw();
  }

  try { setup(); } catch (e) { window.journeysErrors.push(String(e && e.stack || e)); document.body.setAttribute("data-errors", String(window.journeysErrors.length)); throw e; }
})();
