// Console charts, drawn with the vendored TradingView Lightweight Charts (static/vendor/, no CDN).
//  [data-chart="price"]  candles of one contract (1-minute bars, last two hours) with the fills marked:
//                        green arrow up under the bar = bought, red arrow down over it = sold.
//  [data-chart="equity"] P&L over time from the account snapshots: total P&L (the day's realised +
//                        open unrealised, blue line) and unrealised P&L (orange line), right scale;
//                        net liquidation (grey line, left scale) where a snapshot has it.
// Each chart re-reads its data when an order or fill is pushed (console.js "ibkrgw:ledger").
// window.ibkrgwCharts[name] tells what is drawn (counts of points), for people and tests alike.
(function () {
  "use strict";
  const LWC = window.LightweightCharts;
  if (!LWC) { return; }
  window.ibkrgwCharts = {};
  const dark = () => window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches
    && document.documentElement.dataset.theme !== "light" || document.documentElement.dataset.theme === "dark";

  function make(el) {
    const isDark = dark();
    return LWC.createChart(el, {
      height: Number(el.dataset.height) || 320,
      autoSize: true,
      layout: { background: { color: "transparent" }, textColor: isDark ? "#e6e6e6" : "#222" },
      grid: { vertLines: { color: isDark ? "#333" : "#eee" }, horzLines: { color: isDark ? "#333" : "#eee" } },
      timeScale: { timeVisible: true, secondsVisible: false },
      rightPriceScale: { visible: true },
    });
  }

  async function load(url) {
    const response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) { throw new Error(`HTTP ${response.status}`); }
    return response.json();
  }

  function note(el, text) {
    let p = el.parentElement.querySelector(".ibkrgw-chart-note");
    if (!p) { p = document.createElement("p"); p.className = "ibkrgw-chart-note ibkrgw-muted"; el.after(p); }
    p.textContent = text;
  }

  function priceChart(el) {
    const chart = make(el);
    const candles = chart.addCandlestickSeries({ upColor: "#1b7f3b", downColor: "#b00020", wickUpColor: "#1b7f3b", wickDownColor: "#b00020", borderVisible: false });
    const state = { chart, series: candles, bars: 0, markers: 0, symbol: "" };
    window.ibkrgwCharts.price = state;
    async function draw() {
      try {
        const data = await load(el.dataset.url);
        candles.setData(data.bars);
        candles.setMarkers(data.markers);
        Object.assign(state, { bars: data.bars.length, markers: data.markers.length, symbol: data.symbol });
        el.dataset.points = String(data.bars.length);
        el.dataset.markers = String(data.markers.length);
        const unreadable = (data.unreadable || []).map((row) => ` Ledger row ${row}.`).join("");
        note(el, (data.error ? data.error : `${data.symbol}: ${data.bars.length} one-minute bars, ${data.markers.length} fill(s) marked.`) + unreadable);
      } catch (err) { note(el, `Price chart unavailable: ${err.message}`); }
    }
    draw();
    document.addEventListener("ibkrgw:ledger", (e) => { if (e.detail.type === "fill") { draw(); } });
  }

  function equityChart(el) {
    const chart = make(el);
    const total = chart.addLineSeries({ color: "#1565c0", lineWidth: 2, title: "total P&L" });
    const open = chart.addLineSeries({ color: "#e65100", lineWidth: 1, title: "unrealised P&L" });
    const equity = chart.addLineSeries({ color: "#757575", lineWidth: 1, priceScaleId: "left", title: "net liquidation" });
    const state = { chart, series: total, netLiquidation: equity, points: 0, unrealized: 0, equity: 0 };
    window.ibkrgwCharts.equity = state;
    async function draw() {
      try {
        const data = await load(el.dataset.url);
        const s = data.series;
        total.setData(s.total_pnl);
        open.setData(s.unrealized_pnl);
        equity.setData(s.net_liquidation);
        chart.applyOptions({ leftPriceScale: { visible: s.net_liquidation.length > 0 } });
        Object.assign(state, { points: s.total_pnl.length, unrealized: s.unrealized_pnl.length, equity: s.net_liquidation.length });
        el.dataset.points = String(s.total_pnl.length);
        const unreadable = (data.unreadable || []).map((row) => ` ${row}`).join("");
        note(el, (s.total_pnl.length
          ? `Account ${data.account}: ${s.total_pnl.length} snapshot(s).`
          : "No account snapshot yet: one is recorded every minute while the broker is connected.") + unreadable);
      } catch (err) { note(el, `P&L chart unavailable: ${err.message}`); }
    }
    draw();
    document.addEventListener("ibkrgw:ledger", (e) => { if (e.detail.type === "fill") { draw(); } });
  }

  for (const el of document.querySelectorAll("[data-chart=price]")) { priceChart(el); }
  for (const el of document.querySelectorAll("[data-chart=equity]")) { equityChart(el); }
})();
