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
      (noDecider.length ? ": " + noDecider.slice(0, 12).map(link).join(", ") + (noDecider.length > 12 ? ", …" : "") : "");
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
      return "<tr><td>" + esc(a.kind) + "</td><td>" + (a.account >= 0 ? link(a.account_id) : esc(a.account_id)) + "</td><td>" + esc(seg) + "</td><td>" + text(a.raised_at) +
        '</td><td class="num">' + (a.cart_value != null ? a.cart_value.toLocaleString("en", { maximumFractionDigits: 0 }) : "") +
        '</td><td class="num">' + (a.deal_age_days != null ? a.deal_age_days.toFixed(1) : "") + "</td></tr>";
    });
    el("alerts").innerHTML = shown.length
      ? "<table><thead><tr><th>kind</th><th>account</th><th>segment</th><th>raised (UTC)</th><th class=num>cart value</th><th class=num>deal age (days)</th></tr></thead><tbody>" + rows.join("") + "</tbody></table>"
      : '<div class="empty">no open alerts in this selection</div>';
    return shown.length;
  }

  /* ---- What moves accounts: attribution, engagement, the customer pyramid ---- */
  var C = DATA.credited, E = DATA.engagement, TI = DATA.tiers, EV = DATA.events, AA = DATA.account_alerts;
  var MODELS = C.models;
  var CUSTOMERS = ["top", "big", "medium", "small"];
  var INDEX = {};
  A.id.forEach(function (id, i) { INDEX[id] = i; });

  function num(x, digits) { return Number(x).toLocaleString("en", { maximumFractionDigits: digits == null ? 0 : digits }); }
  function model() { return Math.max(0, MODELS.indexOf(el("model").value)); }
  function campaignName(c) { return C.campaigns[c] || "(no campaign)"; }

  /* A link to an account's page that keeps the filters, so "back" lands on the same view. */
  function accountHref(id) {
    var params = new URLSearchParams(location.hash.slice(1));
    params.set("account", id);
    return "#" + params.toString();
  }
  function link(id) { return '<a class="acct" title="' + esc(id) + '" href="' + esc(accountHref(id)) + '">' + esc(id) + "</a>"; }

  /* Sums of credit or revenue per (phase, key) for the conversions in the selection. */
  function attributionSums(f, keyOf, measure) {
    var m = model(), sums = {}, totals = {}, revenue = {};
    for (var i = 0; i < C.at.length; i++) {
      if (f.segment >= 0 && !inSegment(f, C.account[i])) continue;
      if (!inPeriod(f, C.at[i])) continue;
      var key = keyOf(i), p = C.phase[i];
      var value = measure === "revenue" ? C.revenue[m][i] : C.credit[m][i];
      sums[key] = sums[key] || {};
      sums[key][p] = (sums[key][p] || 0) + value;
      totals[key] = (totals[key] || 0) + value;
      revenue[key] = (revenue[key] || 0) + C.revenue[m][i];
    }
    var keys = Object.keys(sums).sort(function (a, b) { return totals[b] - totals[a] || (a < b ? -1 : 1); });
    return { sums: sums, totals: totals, revenue: revenue, keys: keys };
  }

  function attributionChart(id, s, label, measure, limit) {
    var keys = s.keys.slice(0, limit), rest = s.keys.slice(limit);
    var phases = PHASES.map(function (_, p) { return p; }).filter(function (p) {
      return s.keys.some(function (k) { return s.sums[k][p]; });
    });
    var traces = keys.map(function (k, n) {
      return { type: "bar", name: label(k), x: phases.map(function (p) { return PHASES[p]; }),
        y: phases.map(function (p) { return s.sums[k][p] || 0; }), marker: { color: COLORS[n % COLORS.length] },
        hovertemplate: label(k) + " → %{x}: %{y:,.2f}<extra></extra>" };
    });
    if (rest.length) {
      traces.push({ type: "bar", name: "other (" + rest.length + ")", x: phases.map(function (p) { return PHASES[p]; }),
        y: phases.map(function (p) { return rest.reduce(function (t, k) { return t + (s.sums[k][p] || 0); }, 0); }),
        marker: { color: "#bcccdc" }, hovertemplate: "other → %{x}: %{y:,.2f}<extra></extra>" });
    }
    var title = measure === "revenue" ? "revenue credited" : "conversions credited";
    chart(id, traces, { barmode: "stack", showlegend: true, yaxis: { title: { text: title } }, legend: { orientation: "h", y: -0.18 }, margin: { l: 60, r: 20, t: 10, b: 40 } }, s.keys.length);
  }

  function attributionTable(id, s, head, label, linkable) {
    var phases = PHASES.map(function (_, p) { return p; }).filter(function (p) {
      return s.keys.some(function (k) { return s.sums[k][p]; });
    });
    var node = el(id);
    var summary = {};
    s.keys.forEach(function (k) { summary[label(k)] = Math.round(s.totals[k] * 10000) / 10000; });
    node.setAttribute("data-summary", JSON.stringify(summary));
    if (!s.keys.length) { node.innerHTML = '<div class="empty">no conversions in this selection</div>'; return; }
    var rows = s.keys.map(function (k) {
      return "<tr><td>" + esc(label(k)) + "</td>" + phases.map(function (p) {
        return '<td class="num">' + (s.sums[k][p] ? num(s.sums[k][p], 2) : "") + "</td>";
      }).join("") + '<td class="num">' + num(s.revenue[k] || 0) + "</td></tr>";
    });
    node.innerHTML = "<table><thead><tr><th>" + esc(head) + "</th>" + phases.map(function (p) { return '<th class="num">' + esc(PHASES[p]) + "</th>"; }).join("") +
      '<th class="num">revenue</th></tr></thead><tbody>' + rows.join("") + "</tbody></table>";
  }

  function drawAttribution(f) {
    if (!C.available) {
      ["attrchannel", "attrcampaign"].forEach(function (id) { chart(id, [], {}, 0); el(id).innerHTML = '<div class="empty">no attribution data in this database</div>'; });
      return 0;
    }
    var measure = el("measure").value;
    var byChannel = attributionSums(f, function (i) { return C.channel[i]; }, measure);
    var byCampaign = attributionSums(f, function (i) { return C.campaign[i]; }, measure);
    var channelName = function (k) { return DATA.channels[k]; };
    attributionChart("attrchannel", byChannel, channelName, measure, 8);
    attributionChart("attrcampaign", byCampaign, campaignName, measure, 8);
    attributionTable("attrchanneltable", byChannel, "channel", channelName);
    attributionTable("attrcampaigntable", byCampaign, "campaign", campaignName);
    if (byCampaign.keys.length === 1 && !C.campaigns[byCampaign.keys[0]]) {
      el("attrcampaigntable").insertAdjacentHTML("beforeend", '<p class="hint">No touch in this selection carries a campaign (<code>properties.utm_campaign</code> or <code>context.campaign.name</code>).</p>');
    }
    var conversions = 0;
    byChannel.keys.forEach(function (k) { conversions += measure === "revenue" ? 0 : byChannel.totals[k]; });
    return Math.round(conversions);
  }

  function openAlertsPerAccount() {
    var n = {};
    DATA.alerts.forEach(function (a) { n[a.account_id] = (n[a.account_id] || 0) + 1; });
    return n;
  }

  function heatName(i) { return E.heat[i] >= 0 ? E.names[E.heat[i]] : ""; }

  function drawEngagement(f) {
    if (!E.available) {
      chart("heat", [], {}, 0);
      el("heat").innerHTML = '<div class="empty">no engagement data in this database</div>';
      el("tocall").innerHTML = "";
      return 0;
    }
    var counts = [0, 0, 0], call = [];
    for (var i = 0; i < A.id.length; i++) {
      if (!inSegment(f, i) || E.heat[i] < 0) continue;
      counts[E.heat[i]] += 1;
      if (E.heat[i] <= 1) call.push(i);
    }
    chart("heat", [{ type: "bar", orientation: "h", y: E.names, x: counts, marker: { color: ["#e12d39", "#f0b429", "#9fb3c8"] },
      text: counts.map(String), textposition: "auto", hovertemplate: "%{y}: %{x} accounts<extra></extra>" }],
      { yaxis: { autorange: "reversed" }, margin: { l: 60, r: 20, t: 10, b: 30 } }, counts[0] + counts[1] + counts[2]);
    call.sort(function (a, b) { return E.score[b] - E.score[a] || (A.id[a] < A.id[b] ? -1 : 1); });
    var alerts = openAlertsPerAccount(), shown = call.slice(0, 200);
    var rows = shown.map(function (i) {
      var h = heatName(i);
      return "<tr><td>" + link(A.id[i]) + "</td><td>" + esc(DATA.segments[A.segment[i]]) + '</td><td class="num">' + num(E.score[i], 1) +
        '</td><td class="heat-' + h + '">' + h + "</td><td>" + esc(PHASES[A.phase[i]]) + '</td><td class="t">' + (A.active[i] ? text(A.active[i]) : "") +
        '</td><td class="num">' + (alerts[A.id[i]] || "") + "</td></tr>";
    });
    el("tocall").setAttribute("data-rows", String(call.length));
    el("tocall").innerHTML = call.length
      ? "<table><thead><tr><th>account</th><th>segment</th><th class=num>score</th><th>heat</th><th>phase</th><th title=UTC>last active</th><th class=num title='open alerts'>alerts</th></tr></thead><tbody>" +
        rows.join("") + "</tbody></table>" + (call.length > shown.length ? '<p class="hint">the first ' + shown.length + " of " + call.length + "</p>" : "")
      : '<div class="empty">no hot or warm accounts in this selection</div>';
    return counts[0];
  }

  function drawPyramid(f) {
    if (!TI.available) {
      chart("pyramid", [], {}, 0);
      el("pyramid").innerHTML = '<div class="empty">no customer pyramid in this database</div>';
      el("customers").innerHTML = "";
      return;
    }
    var accounts = TI.names.map(function () { return 0; }), revenue = TI.names.map(function () { return 0; });
    for (var i = 0; i < A.id.length; i++) {
      if (!inSegment(f, i) || TI.tier[i] < 0) continue;
      accounts[TI.tier[i]] += 1;
      revenue[TI.tier[i]] += TI.revenue[i];
    }
    var total = accounts.reduce(function (a, b) { return a + b; }, 0);
    chart("pyramid", [{ type: "funnel", y: TI.names, x: accounts, customdata: revenue,
      text: accounts.map(function (n, t) { return n + (revenue[t] ? " · " + num(revenue[t]) : ""); }), textinfo: "text",
      marker: { color: ["#1c4fa1", "#2f6fdf", "#4098d7", "#62b0e8", "#9aa5b1", "#f0b429", "#d9e2ec"] },
      hovertemplate: "%{y}: %{x} accounts, revenue %{customdata:,.0f}<extra></extra>" }],
      { margin: { l: 80, r: 20, t: 10, b: 20 } }, total);
    el("pyramid").setAttribute("data-tiers", JSON.stringify(TI.names.reduce(function (o, t, k) { o[t] = [accounts[k], Math.round(revenue[k] * 100) / 100]; return o; }, {})));
    drawTierAccounts(f);
  }

  function drawTierAccounts(f) {
    var pick = el("tierpick").value, list = [];
    var wanted = pick === "customers" ? CUSTOMERS : [pick];
    for (var i = 0; i < A.id.length; i++) if (inSegment(f, i) && TI.tier[i] >= 0 && wanted.indexOf(TI.names[TI.tier[i]]) >= 0) list.push(i);
    list.sort(function (a, b) { return TI.revenue[b] - TI.revenue[a] || (A.id[a] < A.id[b] ? -1 : 1); });
    var shown = list.slice(0, 200);
    var rows = shown.map(function (i) {
      return "<tr><td>" + link(A.id[i]) + "</td><td>" + esc(DATA.segments[A.segment[i]]) + '</td><td class="num">' + num(TI.revenue[i]) +
        "</td><td>" + esc(PHASES[A.phase[i]]) + '</td><td class="heat-' + heatName(i) + '">' + heatName(i) + "</td></tr>";
    });
    el("customers").innerHTML = list.length
      ? "<table><thead><tr><th>account</th><th>segment</th><th class=num>revenue (12 months)</th><th>phase</th><th>engagement</th></tr></thead><tbody>" + rows.join("") +
        "</tbody></table>" + (list.length > shown.length ? '<p class="hint">the first ' + shown.length + " of " + list.length + "</p>" : "")
      : '<div class="empty">no accounts in this tier and segment</div>';
  }

  /* ---- One account's page (#account=ID): its timeline, transitions with credited touches, alerts ---- */
  function fact(label, value) { return "<div class=kpi><b>" + value + "</b><span>" + esc(label) + "</span></div>"; }

  function accountTimeline(i) {
    var byRole = {}, shapes = [], notes = [], n = 0;
    for (var k = 0; k < EV.at.length; k++) {
      if (EV.account[k] !== i) continue;
      var role = EV.role[k] >= 0 ? ROLES[EV.role[k]] : "(no role)";
      var t = byRole[role] || (byRole[role] = { x: [], y: [], text: [] });
      t.x.push(new Date(EV.at[k]).toISOString()); t.y.push(DATA.channels[EV.channel[k]]);
      t.text.push(EV.types[EV.type[k]] + (EV.contact[k] >= 0 ? " · " + EV.contacts[EV.contact[k]] : ""));
      n += 1;
    }
    var traces = ROLES.concat(["(no role)"]).filter(function (r) { return byRole[r]; }).map(function (r) {
      var c = ROLES.indexOf(r);
      return { type: "scatter", mode: "markers", name: r, x: byRole[r].x, y: byRole[r].y, text: byRole[r].text,
        marker: { size: 9, opacity: 0.8, color: c >= 0 ? COLORS[c % COLORS.length] : "#9aa5b1" },
        hovertemplate: "%{x|%Y-%m-%d %H:%M} · %{y}<br>%{text}<extra>" + r + "</extra>" };
    });
    for (var j = 0; j < T.at.length; j++) {
      if (T.account[j] !== i) continue;
      var x = new Date(T.at[j]).toISOString();
      shapes.push({ type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1, line: { color: "rgba(225,45,57,0.5)", dash: "dot", width: 1 } });
      notes.push({ x: x, y: 1, xref: "x", yref: "paper", text: PHASES[T.to[j]], showarrow: false, yanchor: "bottom", textangle: -30, font: { size: 11, color: "#c81d25" } });
    }
    var lanes = {};
    traces.forEach(function (t) { t.y.forEach(function (c) { lanes[c] = true; }); });
    el("acctimeline").style.height = Math.max(240, 150 + 60 * Object.keys(lanes).length) + "px";
    chart("acctimeline", traces, { shapes: shapes, annotations: notes, margin: { l: 70, r: 50, t: 50, b: 40 }, legend: { orientation: "h", y: -0.15 },
      yaxis: { type: "category", categoryorder: "category ascending" } }, n);
    return n;
  }

  function creditedTouches(i, phase, at) {
    var m = model(), byChannel = {}, touches = 0, revenue = 0;
    for (var k = 0; k < C.at.length; k++) {
      if (C.account[k] !== i || C.phase[k] !== phase || C.at[k] !== at) continue;
      var key = DATA.channels[C.channel[k]] + (C.campaign[k] >= 0 && C.campaigns[C.campaign[k]] ? " / " + C.campaigns[C.campaign[k]] : "");
      byChannel[key] = (byChannel[key] || 0) + C.credit[m][k];
      touches += C.touches[k];
      revenue += C.revenue[m][k];
    }
    var keys = Object.keys(byChannel).sort(function (a, b) { return byChannel[b] - byChannel[a]; });
    if (!keys.length) return '<span class="touches">no touchpoints in the lookback window</span>';
    return keys.map(function (k) { return esc(k) + " " + num(byChannel[k], 2); }).join(" · ") +
      ' <span class="touches">(' + touches + (touches === 1 ? " touch" : " touches") + (revenue ? ", revenue " + num(revenue) : "") + ")</span>";
  }

  function accountTransitions(i) {
    var rows = [];
    for (var j = 0; j < T.at.length; j++) {
      if (T.account[j] !== i) continue;
      rows.push("<tr><td>" + (T.from[j] >= 0 ? esc(PHASES[T.from[j]]) : "(first activity)") + " → " + esc(PHASES[T.to[j]]) + "</td><td>" + text(T.at[j]) +
        "</td><td>" + (C.available ? creditedTouches(i, T.to[j], T.at[j]) : "") + "</td></tr>");
    }
    return rows.length ? "<table><thead><tr><th>transition</th><th>at (UTC)</th><th>touches credited (" + esc(MODELS[model()]) + ")</th></tr></thead><tbody>" + rows.join("") + "</tbody></table>"
      : '<div class="empty">no transitions</div>';
  }

  function accountAlerts(i) {
    var rows = [];
    for (var k = 0; k < AA.raised_at.length; k++) {
      if (AA.account[k] !== i) continue;
      rows.push("<tr><td>" + esc(AA.kinds[AA.kind[k]]) + "</td><td>" + text(AA.raised_at[k]) + "</td><td>" + (AA.resolved_at[k] ? text(AA.resolved_at[k]) : "") +
        "</td><td>" + esc(AA.statuses[AA.status[k]]) + "</td></tr>");
    }
    return rows.length ? "<table><thead><tr><th>alert</th><th>raised (UTC)</th><th>resolved (UTC)</th><th>status</th></tr></thead><tbody>" + rows.join("") + "</tbody></table>"
      : '<div class="empty">no alerts</div>';
  }

  function accountEvents(i) {
    var rows = [];
    for (var k = EV.at.length - 1; k >= 0; k--) {
      if (EV.account[k] !== i) continue;
      rows.push("<tr><td>" + text(EV.at[k]) + "</td><td>" + esc(DATA.channels[EV.channel[k]]) + "</td><td>" + esc(EV.types[EV.type[k]]) + "</td><td>" +
        (EV.role[k] >= 0 ? esc(ROLES[EV.role[k]]) : "") + "</td><td>" + (EV.contact[k] >= 0 ? esc(EV.contacts[EV.contact[k]]) : "") + "</td></tr>");
    }
    return rows.length ? "<table><thead><tr><th>at (UTC)</th><th>channel</th><th>type</th><th>DMU role</th><th>contact</th></tr></thead><tbody>" + rows.join("") + "</tbody></table>"
      : '<div class="empty">no events</div>';
  }

  function drawAccount(id) {
    var i = INDEX[id], node = el("account");
    var back = new URLSearchParams(location.hash.slice(1));
    back.delete("account");
    var head = '<p><a class="acct" id="back" href="#' + esc(back.toString()) + '">← back to the journey map</a></p><h2>Account ' + esc(id) + "</h2>";
    if (i === undefined) {
      node.innerHTML = head + '<div class="empty">no account ' + esc(id) + " in this map</div>";
      node.setAttribute("data-account", "");
      return;
    }
    var roles = ROLES.filter(function (_, r) { return A.roles[i] & (1 << r); });
    var h = heatName(i);
    var shown = EV.account.filter(function (a) { return a === i; }).length;
    node.innerHTML = head +
      '<div class="facts">' + fact("segment", esc(DATA.segments[A.segment[i]])) + fact("phase", esc(PHASES[A.phase[i]])) + fact("in phase since", text(A.since[i])) +
      fact("first seen", text(A.first_seen[i])) + fact("last activity", A.active[i] ? text(A.active[i]) : "–") +
      fact("engagement", E.available && E.score[i] !== null ? num(E.score[i], 1) + ' <span class="heat-' + h + '">' + h + "</span>" : "no data") +
      fact("customer tier", TI.available && TI.tier[i] >= 0 ? esc(TI.names[TI.tier[i]]) + (TI.revenue[i] ? " · " + num(TI.revenue[i]) : "") : "no data") +
      fact("DMU roles engaged", roles.length ? esc(roles.join(", ")) : "none") + "</div>" +
      '<div class="grid"><section class="card wide"><h2>Touchpoints by channel and DMU role</h2><p class="hint">' +
      (shown < A.events[i] ? "The latest " + shown + " of its " + A.events[i] + " events (the map embeds at most " + EV.cap + " per account; <code>journeys account " + esc(id) + "</code> shows the rest)." : "All its " + shown + " events.") +
      ' Dotted lines: phase transitions.</p><div class="chart" id="acctimeline"></div></section>' +
      '<section class="card"><h2>Transitions and the touches credited</h2><form class="controls" onsubmit="return false"><label>Model <select id="accmodel"></select></label></form><div class="table" id="acctransitions">' +
      accountTransitions(i) + "</div></section>" +
      '<section class="card"><h2>Alerts</h2><div class="table" id="accalerts">' + accountAlerts(i) + "</div></section>" +
      '<section class="card wide"><h2>Events, latest first</h2><div class="table" id="accevents">' + accountEvents(i) + "</div></section></div>";
    fillModels(el("accmodel"));
    el("accmodel").addEventListener("change", function () {
      el("model").value = el("accmodel").value;
      var params = new URLSearchParams(location.hash.slice(1));
      params.set("model", el("model").value);
      history.replaceState(null, "", "#" + params.toString());
      el("acctransitions").innerHTML = accountTransitions(i);
    });
    accountTimeline(i);
    node.setAttribute("data-account", id);
  }

  function fillModels(select) {
    MODELS.forEach(function (m) { var o = document.createElement("option"); o.value = m; o.textContent = m.replace("_", " "); select.appendChild(o); });
    select.value = el("model").value || "linear";
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
    drawAttribution(f);
    var hot = drawEngagement(f);
    drawPyramid(f);
    var values = [["accounts started", accounts.length], ["reached " + PHASES[PHASES.length - 1], reached[reached.length - 1] || 0],
      ["transitions", moves], ["touchpoints", touches], ["open alerts", open], ["in decision without decider", noDecider]];
    if (E.available) values.push(["hot accounts", hot]);
    kpis(values);
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
    if (params.get("model") && MODELS.indexOf(params.get("model")) >= 0) el("model").value = params.get("model");
    return params.get("account");
  }
  function toHash() {
    var params = new URLSearchParams();
    if (el("segment").value !== "") params.set("segment", DATA.segments[Number(el("segment").value)]);
    params.set("from", el("from").value);
    params.set("to", el("to").value);
    params.set("model", el("model").value);
    history.replaceState(null, "", "#" + params.toString());
  }

  function setup() {
    DATA.segments.forEach(function (s, i) {
      var o = document.createElement("option"); o.value = String(i); o.textContent = s; el("segment").appendChild(o);
    });
    var range = span();
    function reset() { el("from").value = iso(range[0]); el("to").value = iso(range[1]); }
    reset();
    fillModels(el("model"));
    el("model").value = "linear";
    ["customers"].concat(TI.names).forEach(function (t) {
      var o = document.createElement("option"); o.value = t; o.textContent = t === "customers" ? "all customers (top to small)" : t; el("tierpick").appendChild(o);
    });
    ["segment", "from", "to", "model", "measure"].forEach(function (id) { el(id).addEventListener("change", function () { toHash(); draw(); }); });
    el("tierpick").addEventListener("change", function () { drawTierAccounts(filters()); });
    var ids = el("account-ids");
    A.id.forEach(function (id) { var o = document.createElement("option"); o.value = id; ids.appendChild(o); });
    el("find").addEventListener("change", function () {
      if (INDEX[el("find").value] !== undefined) location.hash = accountHref(el("find").value);
    });
    window.addEventListener("hashchange", route);
    el("reset").addEventListener("click", function () { reset(); toHash(); draw(); });
    el("subtitle").textContent = "Database " + DATA.database + " · phases from " + DATA.rules +
      (DATA.generated_at ? " · events up to " + text(DATA.now) + " UTC" : " · no events yet");
    el("footer").textContent = "Made by journeys report with Plotly " + Plotly.version + ", embedded: this file needs no network.";
    route();
  }

  /* The address decides the view: the map, or one account's page (#account=ID, filters kept). */
  function route() {
    var account = fromHash();
    document.body.setAttribute("data-ready", "0");
    if (account) {
      document.body.classList.add("on-account");
      drawAccount(account);
      window.scrollTo(0, 0);
      document.body.setAttribute("data-ready", "1");
      document.body.setAttribute("data-errors", String(window.journeysErrors.length));
    } else {
      document.body.classList.remove("on-account");
      draw();
    }
  }

  try { setup(); } catch (e) { window.journeysErrors.push(String(e && e.stack || e)); document.body.setAttribute("data-errors", String(window.journeysErrors.length)); throw e; }
})();
