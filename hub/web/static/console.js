// Anmin console: a little progressive enhancement over server-rendered pages.
// Everything works without it except the live board, the alarm sound and push.
"use strict";

(function () {
  const messagesNode = document.getElementById("messages");
  const M = messagesNode ? JSON.parse(messagesNode.textContent || "{}") : {};
  const lang = document.documentElement.lang || "zh-CN";

  function t(key, values) {
    let text = M[key] || key;
    if (values) {
      for (const [name, value] of Object.entries(values)) text = text.split("{" + name + "}").join(String(value));
    }
    return text;
  }
  function label(prefix, code) {
    const key = prefix + "." + code;
    return M[key] || code;
  }

  // Times are rendered in UTC by the server; show them in the reader's own time zone.
  function localise(root) {
    for (const node of root.querySelectorAll("time[datetime]")) {
      const when = new Date(node.getAttribute("datetime"));
      if (!isNaN(when)) node.textContent = when.toLocaleString(lang);
    }
  }
  localise(document);

  // ---- Live incident board ------------------------------------------------------------
  const board = document.getElementById("board");
  if (board) liveBoard(board);

  function place(i) {
    if (i.building && i.unit) return t("incident.place", { building: i.building, unit: i.unit });
    if (i.building) return t("incident.place.building", { building: i.building });
    return t("incident.place.site");
  }

  const LIFE_SAFETY = ["gas", "fire", "smoke", "co", "sos", "fall"];
  function lifeSafety(i) { return LIFE_SAFETY.includes(i.kind) || i.severity === "Extreme"; }

  function fill(card, i) {
    card.dataset.incident = i.id;
    card.className = "card sev-" + i.severity + " state-" + i.state + (lifeSafety(i) ? " life-safety" : "");
    const set = (field, text) => { const n = card.querySelector('[data-field="' + field + '"]'); if (n) n.textContent = text; };
    set("severity", label("sev", i.severity));
    set("kind", label("kind", i.kind));
    set("state", t("incident.state." + i.state) + (i.cleared_at ? " · " + t("incident.cleared") : ""));
    set("place", place(i) + " · " + i.gateway);
    set("message", i.message);
    set("events", i.event_count);
    set("by", i.acknowledged_by ? " · " + t("incident.by", { who: i.acknowledged_by }) : "");
    const opened = card.querySelector('[data-field="opened"]');
    if (opened) { opened.setAttribute("datetime", i.opened_at); localise(card); }
    for (const node of card.querySelectorAll("[action]")) node.setAttribute("action", node.getAttribute("action").replace("__ID__", i.id));
    for (const node of card.querySelectorAll("[href]")) node.setAttribute("href", node.getAttribute("href").replace("__ID__", i.id));
    for (const node of card.querySelectorAll("[id]")) node.id = node.id.replace("__ID__", i.id);
    for (const node of card.querySelectorAll("label[for]")) node.htmlFor = node.htmlFor.replace("__ID__", i.id);
    const ack = card.querySelector("form.ack");
    if (ack) ack.hidden = i.state !== "open";
    const resolve = card.querySelector("form.resolve");
    if (resolve) resolve.hidden = i.state === "resolved";
  }

  function liveBoard(list) {
    const resolvedList = document.getElementById("resolved");
    const template = document.getElementById("card-template");
    const status = document.getElementById("live-status");
    const announce = document.getElementById("announce");
    const none = document.getElementById("none-active");
    const sound = alarmSound(document.getElementById("sound"));
    const source = new EventSource(list.dataset.stream);
    source.onopen = () => { status.textContent = status.dataset.on; status.className = "live up"; document.body.dataset.live = "up"; };
    source.onerror = () => { status.textContent = status.dataset.off; status.className = "live down"; document.body.dataset.live = "down"; };
    source.addEventListener("incident", (message) => {
      const change = JSON.parse(message.data);
      const i = change.incident;
      let card = document.querySelector('li.card[data-incident="' + CSS.escape(i.id) + '"]');
      const isNew = !card;
      if (!card) {
        card = template.content.firstElementChild.cloneNode(true);
      }
      fill(card, i);
      const target = i.state === "resolved" ? resolvedList : list;
      if (card.parentNode !== target) target.prepend(card);
      if (isNew) {
        card.classList.add("fresh");
        announce.textContent = t("board.new", { what: label("kind", i.kind) + ", " + place(i) });
      }
      if (change.action === "incident.opened" && lifeSafety(i)) sound.play();
      if (change.action === "incident.on_the_way") {
        const by = card.querySelector('[data-field="by"]');
        if (by) by.textContent = " · " + t("action.incident.on_the_way") + ": " + change.actor;
        announce.textContent = t("action.incident.on_the_way") + ": " + change.actor + ", " + place(i);
      }
      none.hidden = list.children.length > 0;
    });
  }

  // A two-tone alarm made with Web Audio (no file to load). Browsers let a page make sound only
  // after a person has pressed something, hence the button.
  function alarmSound(button) {
    let context = null;
    const state = { play() {} };
    let played = 0;
    function beep() {
      if (!context) return;
      const now = context.currentTime;
      for (let k = 0; k < 6; k++) {
        const osc = context.createOscillator();
        const gain = context.createGain();
        osc.frequency.value = k % 2 ? 660 : 880;
        gain.gain.setValueAtTime(0.25, now + k * 0.3);
        gain.gain.setValueAtTime(0, now + k * 0.3 + 0.25);
        osc.connect(gain).connect(context.destination);
        osc.start(now + k * 0.3);
        osc.stop(now + k * 0.3 + 0.26);
      }
      played += 1;
      document.body.dataset.alarms = String(played);
    }
    state.play = beep;
    if (button) {
      button.addEventListener("click", () => {
        context = context || new AudioContext();
        context.resume();
        button.setAttribute("aria-pressed", "true");
        button.textContent = button.dataset.on;
      });
    }
    return state;
  }

  // ---- Live coverage of a broadcast (server-sent events) ---------------------------------
  const coverage = document.getElementById("coverage");
  if (coverage) {
    const bar = coverage.querySelector("progress");
    const text = coverage.querySelector("[data-field=coverage]");
    const missing = coverage.querySelector("[data-field=missing]");
    const state = document.getElementById("b-state");
    const source = new EventSource(coverage.dataset.url);
    source.addEventListener("coverage", (message) => {
      const c = JSON.parse(message.data);
      bar.max = Math.max(c.targeted, 1);
      bar.value = c.confirmed;
      text.textContent = t("broadcasts.coverage.value", { played: c.confirmed, expected: c.targeted, percent: c.percent });
      if (state) state.textContent = label("bstate", c.state);
      const items = c.missing.map((s) => s.speaker + " (" + s.gateway + (s.failed ? ": " + s.failed : "") + ")");
      missing.replaceChildren(...(items.length ? items : [t("timeline.none")]).map((text) => {
        const li = document.createElement("li");
        li.textContent = text;
        return li;
      }));
      coverage.dataset.percent = String(c.percent);
      coverage.dataset.state = c.state;
    });
  }

  // ---- Family page: reload when one of their relative's incidents changes ------------------
  const familyLive = document.querySelector("[data-family-stream]");
  if (familyLive) {
    const source = new EventSource(familyLive.dataset.familyStream);
    let pending = null;
    source.addEventListener("incident", () => {
      // Not while someone is pressing a button or typing: wait for a quiet moment.
      clearTimeout(pending);
      pending = setTimeout(() => { if (!document.activeElement || document.activeElement === document.body) location.reload(); }, 1500);
    });
  }

  // ---- Web Push (family) -----------------------------------------------------------------
  const push = document.getElementById("push");
  if (push) setUpPush(push);

  function setUpPush(section) {
    const stateNode = document.getElementById("push-state");
    const button = document.getElementById("push-enable");
    const key = section.dataset.key;
    if (!key || !("serviceWorker" in navigator) || !("PushManager" in window)) {
      stateNode.textContent = stateNode.dataset.unsupported;
      button.hidden = true;
      return;
    }
    button.addEventListener("click", async () => {
      try {
        const permission = await Notification.requestPermission();
        if (permission !== "granted") { stateNode.textContent = stateNode.dataset.denied; return; }
        const registration = await navigator.serviceWorker.register("/console/static/push-worker.js");
        await navigator.serviceWorker.ready;
        const raw = atob(key.replace(/-/g, "+").replace(/_/g, "/") + "==".slice(0, (4 - key.length % 4) % 4));
        const subscription = await registration.pushManager.subscribe({
          userVisibleOnly: true,
          applicationServerKey: Uint8Array.from(raw, (c) => c.charCodeAt(0)),
        });
        const response = await fetch("/console/push/subscriptions", {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRF-Token": button.dataset.csrf },
          body: JSON.stringify(subscription.toJSON()),
        });
        if (response.ok) { stateNode.textContent = stateNode.dataset.on; button.hidden = true; }
      } catch (e) {
        stateNode.textContent = stateNode.dataset.unsupported;
      }
    });
  }
})();
