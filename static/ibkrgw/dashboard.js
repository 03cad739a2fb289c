// Keeps the dashboard current: fetches the live part every few seconds and swaps it in.
// Skipped while the operator is typing in it, so a half-written reject reason is never lost.
(function () {
  "use strict";
  const box = document.getElementById("ibkrgw-live");
  if (!box) { return; }
  const url = box.dataset.url;
  const seconds = Number(box.dataset.refreshSeconds) || 5;

  function busy() {
    const active = document.activeElement;
    if (active && box.contains(active) && active.tagName === "INPUT") { return true; }
    return Array.from(box.querySelectorAll("input[type=text]")).some((el) => el.value !== "");
  }

  async function refresh() {
    if (document.hidden || busy()) { return; }
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } });
      // A redirect to the login page means the session ended: reload to show it.
      if (response.redirected) { window.location.reload(); return; }
      if (!response.ok) { return; }
      box.innerHTML = await response.text();
    } catch (err) {
      // The next tick retries; a server that is down shows up as a stale "Updated" time.
    }
  }

  window.setInterval(refresh, seconds * 1000);
})();
