// The dashboard's live part is fetched again when something happens: an order or fill pushed over
// /ws/orders/ (console.js announces "ibkrgw:ledger"), or a change of the gateway or kill switch
// ("ibkrgw:status"). Skipped while the operator is typing in it, so a reject reason is never lost.
(function () {
  "use strict";
  const box = document.getElementById("ibkrgw-live");
  if (!box || !window.ibkrgwRefresh) { return; }
  const refresh = window.ibkrgwRefresh(() => box.dataset.url, ["#ibkrgw-live-inner"]);
  document.addEventListener("ibkrgw:ledger", refresh);
  document.addEventListener("ibkrgw:status", refresh);
})();
