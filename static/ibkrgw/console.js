// Every console page: keeps the status header current and listens to /ws/orders/ (session auth) for
// order and fill events. Each event is announced as an "ibkrgw:ledger" DOM event; the order, fill
// and order event lists refresh their table when one arrives, the dashboard its live part
// (dashboard.js). Nothing reloads the whole page. The gateway state has no push channel, so the
// header asks for it (a small JSON) every few seconds and announces "ibkrgw:status" on a change.
(function () {
  "use strict";
  const bar = document.getElementById("ibkrgw-statusbar");
  if (!bar) { return; }
  const seconds = Number(bar.dataset.refreshSeconds) || 5;
  const streamState = document.getElementById("ibkrgw-stream-state");
  window.ibkrgwConsole = { events: 0, lastSeq: 0, connected: false };

  // -- the header
  const pill = (el, cls) => {
    el.classList.remove("ibkrgw-pill-ok", "ibkrgw-pill-bad", "ibkrgw-pill-warn");
    el.classList.add(cls);
  };
  let lastStatus = null;
  function showStatus(s) {
    const f = (name) => bar.querySelector(`[data-field="${name}"]`);
    f("mode").textContent = s.mode.toUpperCase();
    f("armed").textContent = s.armed ? "ARMED" : "SIMULATED";
    f("armed").title = s.armed_note;
    pill(f("armed"), s.armed ? "ibkrgw-pill-warn" : "ibkrgw-pill-ok");
    f("halted").textContent = s.halted === null ? "UNKNOWN" : (s.halted ? "HALTED" : "trading allowed");
    pill(f("halted"), s.halted === false ? "ibkrgw-pill-ok" : "ibkrgw-pill-bad");
    f("gateway").textContent = s.gateway;
    pill(f("gateway"), s.connected ? "ibkrgw-pill-ok" : "ibkrgw-pill-bad");
    f("reconciliation").textContent = s.reconciliation;
    pill(f("reconciliation"), s.reconciliation === "done" ? "ibkrgw-pill-ok" : "ibkrgw-pill-bad");
    const text = JSON.stringify(s);
    if (lastStatus !== null && text !== lastStatus) {
      document.dispatchEvent(new CustomEvent("ibkrgw:status", { detail: s }));
    }
    lastStatus = text;
  }
  // The console's own server did not answer: what the header showed is no longer known. Mode and arming are
  // its configuration and stay; the kill switch, the gateway and reconciliation say so instead of staying green.
  function showUnreachable(why) {
    const f = (name) => bar.querySelector(`[data-field="${name}"]`);
    f("halted").textContent = "UNKNOWN";
    pill(f("halted"), "ibkrgw-pill-bad");
    f("gateway").textContent = `console server unreachable (${why})`;
    pill(f("gateway"), "ibkrgw-pill-bad");
    f("reconciliation").textContent = "unknown";
    pill(f("reconciliation"), "ibkrgw-pill-bad");
    // The next answer differs from this, so the page's live parts refresh once the server is back.
    lastStatus = "unreachable";
  }
  async function pollStatus() {
    if (document.hidden) { return; }
    let response;
    try {
      response = await fetch(bar.dataset.statusUrl, { credentials: "same-origin" });
    } catch (err) {
      showUnreachable("no answer");  // the next tick retries
      return;
    }
    if (response.redirected) { window.location.reload(); return; }
    if (!response.ok) { showUnreachable(`HTTP ${response.status}`); return; }
    try {
      showStatus(await response.json());
    } catch (err) {
      showUnreachable("unreadable answer");
    }
  }
  window.setInterval(pollStatus, seconds * 1000);
  pollStatus();

  // -- the order and fill stream
  let socket = null;
  let backoff = 500;
  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    // After a reconnect, ask in the URL for what was missed (before any live event can arrive, so
    // everything comes in order); the first connection starts from now.
    const lastSeq = window.ibkrgwConsole.lastSeq;
    const resume = lastSeq > 0 ? `?after_seq=${lastSeq}` : "";
    socket = new WebSocket(`${scheme}://${window.location.host}/ws/orders/${resume}`);
    socket.addEventListener("open", () => {
      backoff = 500;
      window.ibkrgwConsole.connected = true;
      streamState.textContent = "live";
      streamState.classList.add("ibkrgw-stream-on");
    });
    socket.addEventListener("message", (message) => {
      let frame;
      try { frame = JSON.parse(message.data); } catch (err) { return; }
      if (frame.type !== "order" && frame.type !== "fill") { return; }
      window.ibkrgwConsole.lastSeq = Math.max(window.ibkrgwConsole.lastSeq, frame.seq || 0);
      window.ibkrgwConsole.events += 1;
      document.dispatchEvent(new CustomEvent("ibkrgw:ledger", { detail: frame }));
    });
    socket.addEventListener("close", (event) => {
      window.ibkrgwConsole.connected = false;
      streamState.classList.remove("ibkrgw-stream-on");
      if (event.code === 4401 || event.code === 4403) { streamState.textContent = "live: not allowed"; return; }
      // A seq this ledger never reached (another database): start again from now.
      if (event.code === 4400) { window.ibkrgwConsole.lastSeq = 0; }
      streamState.textContent = "live: reconnecting";
      window.setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 10000);
    });
  }
  if ("WebSocket" in window) { connect(); }

  // -- lists that refresh their table on a pushed event
  function busy(box) {
    const active = document.activeElement;
    // Typing or choosing in it; a box merely clicked (ticked or unticked) holds nothing a refresh would lose.
    const entry = active && (active.tagName === "SELECT"
      || (active.tagName === "INPUT" && !["checkbox", "radio", "submit", "button"].includes(active.type)));
    if (entry && box.contains(active)) { return true; }
    return Array.from(box.querySelectorAll("input[type=checkbox]")).some((el) => el.checked)
      || Array.from(box.querySelectorAll("input[type=text]")).some((el) => el.value !== "");
  }
  window.ibkrgwRefresh = function (url, selectors) {
    let timer = null;
    let heldBack = false;
    const refresh = function () {
      if (timer) { return; }
      timer = window.setTimeout(async () => {
        timer = null;
        const boxes = selectors.map((s) => document.querySelector(s)).filter(Boolean);
        if (!boxes.length) { return; }
        if (boxes.some(busy)) { heldBack = true; return; }
        heldBack = false;
        try {
          const response = await fetch(url(), { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } });
          if (response.redirected) { window.location.reload(); return; }
          if (!response.ok) { return; }
          const page = new DOMParser().parseFromString(await response.text(), "text/html");
          for (const selector of selectors) {
            const fresh = page.querySelector(selector);
            const old = document.querySelector(selector);
            if (fresh && old) { old.replaceWith(document.importNode(fresh, true)); }
          }
          document.dispatchEvent(new CustomEvent("ibkrgw:refreshed"));
        } catch (err) { /* the next event retries */ }
      }, 200);
    };
    // A refresh held back while the operator was busy runs once they are done (a row unticked, a reason
    // cleared, focus gone), instead of leaving the page stale until the next event.
    for (const type of ["change", "input", "focusout"]) {
      document.addEventListener(type, () => { if (heldBack) { refresh(); } });
    }
    return refresh;
  };
  const body = document.body.classList;
  if (body.contains("change-list") && ["model-order", "model-fill", "model-orderevent"].some((c) => body.contains(c))) {
    // The whole list form: an empty list has no table yet, and the counts and pages change too.
    const refresh = window.ibkrgwRefresh(() => window.location.href, ["#changelist-form"]);
    document.addEventListener("ibkrgw:ledger", refresh);
    document.addEventListener("ibkrgw:status", refresh);
  }

  // -- countdowns (approval windows)
  function tick() {
    for (const el of document.querySelectorAll(".ibkrgw-countdown[data-expires]")) {
      const left = Math.max(0, Math.round((Date.parse(el.dataset.expires) - Date.now()) / 1000));
      el.textContent = left > 0 ? `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}` : "expired";
      el.classList.toggle("ibkrgw-bad", left < 30);
    }
  }
  window.setInterval(tick, 1000);
  tick();

  // -- confirmation for revoking an API key from its page
  const revoke = document.querySelector("body.model-scopedapikey.change-form input#id_revoked");
  if (revoke && !revoke.checked) {
    revoke.form.addEventListener("submit", (event) => {
      if (revoke.checked && !window.confirm("Revoke this API key? Programs using it stop working at once; this cannot be undone.")) {
        event.preventDefault();
      }
    });
  }
})();
