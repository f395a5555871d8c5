/* telegen flame-graph page: wires the vendored d3-flame-graph to the data
 * embedded in the page (#fg-data, #fg-meta). No network access. */
(function () {
  "use strict";
  var D = window.d3flamegraph;
  var meta = JSON.parse(document.getElementById("fg-meta").textContent);
  var data = JSON.parse(document.getElementById("fg-data").textContent);
  var TIME = [["hrs", 3600e9], ["s", 1e9], ["ms", 1e6], ["us", 1e3], ["ns", 1]];
  var BYTES = [["GB", Math.pow(2, 30)], ["MB", Math.pow(2, 20)], ["kB", 1024], ["B", 1]];
  var TO_NS = {nanoseconds: 1, microseconds: 1e3, milliseconds: 1e6, seconds: 1e9};

  function fmt(v) {
    var a = Math.abs(v), table = null, scale = 1;
    if (meta.unit in TO_NS) { table = TIME; scale = TO_NS[meta.unit]; }
    else if (meta.unit === "bytes") { table = BYTES; }
    if (!table) return String(Math.round(v));
    a *= scale;
    for (var i = 0; i < table.length; i++) {
      if (a >= table[i][1] || i === table.length - 1) {
        return (v < 0 ? "-" : "") + (a / table[i][1]).toFixed(2).replace(/\.00$/, "") + table[i][0];
      }
    }
    return String(v);
  }
  function pct(v) { return meta.total ? (100 * v / meta.total).toFixed(2) + "%" : "-"; }
  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;"}[c];
    });
  }
  function describe(d) {
    var x = d.data, cum = x.v || 0, flat = x.s || 0;
    var lines = [x.n, "cum " + fmt(cum) + " (" + pct(cum) + ")  flat " + fmt(flat) + " (" + pct(flat) + ")"];
    if (meta.differential && x.d !== undefined) {
      lines.push("delta " + (x.d >= 0 ? "+" : "") + fmt(x.d) + " (" + (x.d >= 0 ? "+" : "") + pct(x.d) + " of total)");
    }
    if (x.f) lines.push(x.f);
    return lines;
  }

  var el = document.getElementById("chart");
  var chart = D.flamegraph()
    .width(Math.max(el.clientWidth, 400))
    .cellHeight(18)
    .minFrameSize(meta.minFrameSize)
    .transitionDuration(0)
    .inverted(!!meta.inverted)
    .sort(true)
    .selfValue(false)
    .setDetailsElement(document.getElementById("details"))
    .setLabelHandler(function (d) { return describe(d).join(" | "); })
    .setSearchMatch(function (d, term) {
      var name = d.data.n || "";
      return !!term && name.toLowerCase().indexOf(term.toLowerCase()) >= 0;
    });
  var tip = D.tooltip.defaultFlamegraphTooltip().html(function (d) {
    return describe(d).map(esc).join("<br>");
  });
  chart.tooltip(tip);
  if (meta.differential) chart.setColorMapper(D.colorMapper.differentialColorMapper);

  D.select(el).datum(data).call(chart);
  // The first draw grows rects through a d3 transition (250 ms by default):
  // jump to the final widths so the graph is complete as soon as it is drawn.
  var fullWidth = chart.width();
  D.select(el).selectAll("rect").interrupt().attr("width", function (d) {
    return (d.x1 - d.x0) * fullWidth;
  });
  var state = {chart: chart, ready: false, renderedMs: null, inverted: !!meta.inverted};
  window.telegenFlame = state;
  requestAnimationFrame(function () {
    requestAnimationFrame(function () {
      state.renderedMs = performance.now();   // since navigation start
      state.ready = true;
      document.body.setAttribute("data-rendered-ms", state.renderedMs.toFixed(1));
      chart.transitionDuration(300);
    });
  });

  var search = document.getElementById("search");
  search.addEventListener("input", function () {
    if (search.value) chart.search(search.value); else chart.clear();
  });
  document.getElementById("reset").addEventListener("click", function () {
    search.value = ""; chart.clear(); chart.resetZoom();
  });
  document.getElementById("toggle").addEventListener("click", function () {
    state.inverted = !state.inverted;
    chart.inverted(state.inverted);
    chart.height(null);
    chart.update();
    this.textContent = state.inverted ? "Flame (root at bottom)" : "Icicle (root at top)";
  });
  document.getElementById("toggle").textContent =
    state.inverted ? "Flame (root at bottom)" : "Icicle (root at top)";
})();
