// The operators' console: live hits (server-sent events), search and export, cameras on a
// Leaflet map drawn offline (or on the site's tiles), watchlists, audit trail; in the user's
// language (i18n.js); desktop notifications of P1-2 hits while the page is in the background.
// Plain JavaScript, no build step of its own (Leaflet is copied by `make console-map`).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const i18n = window.ConsoleI18n;
  const t = i18n.t;
  const NOTIFY_UP_TO = 2; // priorities raised as desktop notifications
  const state = {
    me: null,
    hits: new Map(), // hit_id -> hit (the live board)
    cards: new Map(), // hit_id -> {key, node}: its card as last drawn
    cameras: [],
    map: null, // the Leaflet map, made when the cameras tab is first shown
    markers: new Map(), // camera id -> its marker
    mapFitted: false,
    mapWhole: false,
    notified: 0, // desktop notifications raised
    favicon: null,
    muted: localStorage.getItem("anpr-muted") === "1",
    audio: null,
    alerts: 0, // audible cues given (shown on the body for tests and for the curious)
    list: null,
    lastEntry: 0,
    auditBefore: null,
  };

  // ------------------------------------------------------------------ helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  async function api(path, options) {
    const opts = Object.assign({ credentials: "same-origin" }, options || {});
    if (opts.json !== undefined) {
      opts.method = opts.method || "POST";
      opts.headers = { "Content-Type": "application/json" };
      opts.body = JSON.stringify(opts.json);
      delete opts.json;
    }
    const res = await fetch(path, opts);
    if (res.status === 401) {
      window.location.assign("/login");
      throw new Error("signed out");
    }
    let body = null;
    try {
      body = await res.json();
    } catch (e) { /* empty */ }
    if (!res.ok) {
      const err = new Error((body && body.error) || res.statusText);
      err.body = body;
      throw err;
    }
    return body;
  }

  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return isNaN(d) ? iso : i18n.dateTime(d);
  }

  function ago(iso) {
    if (!iso) return t("time.never");
    const d = new Date(iso);
    return isNaN(d) ? iso : i18n.ago(d);
  }

  function matchText(h) {
    // a hit on another reading of the plate (another format's) says which
    const on = h.reading ? " " + t("match.other_reading", { reading: h.reading }) : "";
    const kind = h.match_kind || "exact";
    if (kind === "fuzzy") return t("match.fuzzy", { distance: h.match_distance || 0 }) + on;
    if (kind === "wildcard") return t("match.wildcard", { pattern: h.entry_plate || "" }).trim() + on;
    if (kind === "exact") return t("match.exact") + on;
    return kind + on;
  }

  const HEALTH = { live: "health.live", late: "health.late", unhealthy: "health.unhealthy" };
  const health = (c) => (HEALTH[c.health] ? t(HEALTH[c.health]) : c.health);

  function vehicleText(h) {
    return [h.vehicle_colour, h.vehicle_type].filter(Boolean).join(" ");
  }

  function plateText(h) {
    return h.plate_formatted || h.plate_text || "?";
  }

  function level(p) {
    if (p <= 1) return "p-critical";
    if (p <= 3) return "p-high";
    return "p-normal";
  }

  // ------------------------------------------------------------------ agencies

  // Whose a camera, list or hit is: the user's own agency or a partner's (an agreement's).
  // `/api/me` gives the user's agency and the agencies' names (agencies.yaml), where known.
  const myAgency = () => (state.me && state.me.user.agency) || "";

  function agencyName(id) {
    const a = id && state.me && state.me.agencies && state.me.agencies[id];
    return a && a.name ? a.name : "";
  }

  // "Straż Graniczna (pl-sg)", or just "pl-sg" where no name is known; `inner`: for text
  // that is itself in brackets ("Straż Graniczna, pl-sg").
  function agencyText(id, inner) {
    if (!id) return "";
    const name = agencyName(id);
    if (!name) return id;
    return inner ? `${name}, ${id}` : `${name} (${id})`;
  }

  const isPartner = (agency) => !!agency && agency !== myAgency();

  // Which of a hit's camera and list are a partner's ("" where ours).
  function partnerOf(h) {
    return { camera: isPartner(h.camera_agency) ? h.camera_agency : "",
             list: isPartner(h.list_agency) ? h.list_agency : "" };
  }

  // The loud marks of a cross-border hit: "partner's camera: pl-sg", "partner's list: pl-sg".
  function partnerMarks(h) {
    const p = partnerOf(h);
    const marks = [];
    if (p.camera) marks.push(el("span", { class: "partner-mark", "data-mark": "camera", title: agencyText(p.camera),
                                          text: t("hit.partner_camera", { agency: p.camera }) }));
    if (p.list) marks.push(el("span", { class: "partner-mark", "data-mark": "list", title: agencyText(p.list),
                                        text: t("hit.partner_list", { agency: p.list }) }));
    return marks;
  }

  function partnerText(h) {
    const p = partnerOf(h);
    return [p.camera ? t("hit.partner_camera", { agency: p.camera }) : "",
            p.list ? t("hit.partner_list", { agency: p.list }) : ""].filter(Boolean).join(" \u00b7 ");
  }

  // "camera: pl-sg · list: pl-sg.stolen-pl (pl-sg)", each agency by its name where known.
  function whoseLine(h) {
    const p = partnerOf(h);
    return el("span", { class: "whose" },
      el("span", { class: `whose-camera${p.camera ? " partner" : ""}`, "data-agency": h.camera_agency || "",
                   text: t("hit.camera_of", { agency: agencyText(h.camera_agency) || "?" }) }),
      " \u00b7 ",
      el("span", { class: `whose-list${p.list ? " partner" : ""}`, "data-agency": h.list_agency || "",
                   text: t("hit.list_of", { list: h.watchlist, agency: agencyText(h.list_agency, true) || "?" }) }));
  }

  function hitAgencyData(h) {
    const p = partnerOf(h);
    return { "data-camera-agency": h.camera_agency || "", "data-list-agency": h.list_agency || "",
             "data-partner": [p.camera ? "camera" : "", p.list ? "list" : ""].filter(Boolean).join(" ") || null };
  }

  function status(id, text, bad) {
    const node = $(id);
    node.textContent = text;
    node.classList.toggle("error", !!bad);
  }

  // ------------------------------------------------------------------ tabs

  function showTab(name) {
    if (!document.getElementById(name) || !document.querySelector(`[data-tab="${name}"]`)) {
      name = "live";
    }
    for (const s of document.querySelectorAll("section.tab")) s.hidden = s.id !== name;
    for (const a of document.querySelectorAll("#tabs a")) {
      a.classList.toggle("active", a.dataset.tab === name);
    }
    if (name === "cameras") loadCameras();
    if (name === "watchlists") loadLists();
    if (name === "audit") loadAudit(true);
    if (name === "search") fillFilters();
    if (name === "trace") fillTraceForm();
  }

  function route() {
    const [name, query] = window.location.hash.slice(1).split("?");
    showTab(name || "live");
    if (name === "search" && query) {
      const q = new URLSearchParams(query);
      $("q-plate").value = q.get("plate") || "";
      setCameraFilter(q.get("camera") || "");
      runSearch();
    }
  }

  // ------------------------------------------------------------------ sound

  function beep() {
    state.alerts += 1;
    document.body.dataset.alerts = String(state.alerts);
    if (state.muted) return;
    try {
      if (!state.audio) state.audio = new (window.AudioContext || window.webkitAudioContext)();
      const ctx = state.audio;
      if (ctx.state === "suspended") {
        $("sound-hint").hidden = false;
        ctx.resume();
      }
      const t = ctx.currentTime;
      for (const [i, f] of [[0, 880], [1, 660], [2, 880]]) {
        const osc = ctx.createOscillator();
        const gain = ctx.createGain();
        osc.frequency.value = f;
        gain.gain.setValueAtTime(0.25, t + i * 0.18);
        gain.gain.exponentialRampToValueAtTime(0.001, t + i * 0.18 + 0.16);
        osc.connect(gain).connect(ctx.destination);
        osc.start(t + i * 0.18);
        osc.stop(t + i * 0.18 + 0.17);
      }
      document.body.dataset.sounded = String(Number(document.body.dataset.sounded || 0) + 1);
    } catch (e) { /* no audio device: the colours still say it */ }
  }

  function showMute() {
    const b = $("mute");
    b.textContent = state.muted ? t("sound.off") : t("sound.on");
    b.setAttribute("aria-pressed", state.muted ? "true" : "false");
    b.classList.toggle("muted", state.muted);
  }

  // ------------------------------------------------------------------ the live board

  function isOpen(h) {
    return !h.acks || h.acks.length === 0;
  }

  function hitCard(h) {
    const open = isOpen(h);
    const last = open ? null : h.acks[h.acks.length - 1];
    const where = [h.road, h.direction].filter(Boolean).join(", ");
    const partner = partnerOf(h);
    const card = el("article", Object.assign({
      class: `hit ${level(h.priority)}${open ? " open" : ""}${partner.camera || partner.list ? " partner" : ""}`,
      "data-hit": h.hit_id,
      "data-plate": h.plate_text,
    }, hitAgencyData(h)));
    const crop = el("img", { class: "crop", alt: t("pic.plate", { plate: plateText(h) }),
                             src: h.crop_bytes ? `/api/hits/${h.hit_id}/crop.jpg?r=${h.revision || 0}` : null });
    const scene = el("img", { class: "scene", alt: t("pic.scene"), title: t("pic.scene_larger"),
                              src: h.scene_bytes ? `/api/hits/${h.hit_id}/scene.jpg?r=${h.revision || 0}` : null,
                              onclick: () => { $("scene-big").src = scene.src; $("scene-dialog").showModal(); } });
    card.append(
      el("div", { class: "pictures" }, h.crop_bytes ? crop : el("div", { class: "nopic", text: t("pic.no_crop") }),
         h.scene_bytes ? scene : el("div", { class: "nopic", text: t("pic.no_scene") })),
      el("div", { class: "facts" },
        el("div", { class: "headline" },
          el("span", { class: "prio", text: `P${h.priority}` }),
          el("span", { class: "plate", text: plateText(h) }),
          el("span", { class: "country", text: h.country || "" }),
          ...partnerMarks(h)),
        el("div", { class: "why" },
          el("b", { text: h.watchlist }), " \u2014 ", h.reason || t("hit.no_reason"),
          h.agency ? el("span", { class: "agency", text: ` \u00b7 ${h.agency}` }) : null),
        el("div", { class: "agencies" }, whoseLine(h)),
        el("div", { class: "match", text: t("hit.match", { match: matchText(h) }) +
           (h.entry_plate && h.entry_plate !== h.plate_text && h.match_kind !== "wildcard" ? ` (${t("hit.listed", { plate: h.entry_plate })})` : "") }),
        vehicleText(h) ? el("div", { class: "vehicle", text: t("hit.vehicle", { vehicle: vehicleText(h) }) }) : null,
        el("div", { class: "where" },
          el("a", { href: `#search?camera=${encodeURIComponent(h.node + "/" + h.camera)}`,
                    text: `${h.node}/${h.camera}` }), where ? ` \u00b7 ${where}` : ""),
        el("div", { class: "time", title: h.seen_at, text: seenText(h) }),
      ),
    );
    const ackBox = el("div", { class: "ack" });
    if (last) {
      ackBox.append(el("div", { class: "acked" },
        t("hit.acked_by", { name: last.display_name, when: when(last.at) }),
        last.note ? el("span", { class: "note", text: `: ${last.note}` }) : null));
      if (h.acks.length > 1) {
        ackBox.append(el("div", { class: "fineprint", text:
          h.acks.slice(0, -1).map((a) => `${a.display_name} ${when(a.at)}${a.note ? ": " + a.note : ""}`).join("; ") }));
      }
    } else {
      const note = el("input", { class: "ack-note", placeholder: t("hit.note"), maxlength: 1000 });
      const button = el("button", { class: "ack-button", type: "button", text: t("hit.acknowledge") });
      button.addEventListener("click", async () => {
        button.disabled = true;
        try {
          const ack = await api(`/api/hits/${h.hit_id}/ack`, { json: { note: note.value } });
          addAck(ack);
        } catch (e) {
          button.disabled = false;
          alert(t("hit.not_acknowledged", { error: e.message }));
        }
      });
      ackBox.append(note, button);
    }
    card.append(ackBox);
    return card;
  }

  function seenText(h) {
    return t("hit.seen", { when: when(h.seen_at), ago: ago(h.seen_at) });
  }

  function order(a, b) {
    if (a.priority !== b.priority) return a.priority - b.priority;
    return a.seen_at < b.seen_at ? 1 : a.seen_at > b.seen_at ? -1 : 0;
  }

  // Cards are made once per hit and state of acknowledgement, so that a note being typed
  // survives new hits arriving; only their order and the "ago" texts change.
  function card(h) {
    const key = `${h.acks.length}/${h.revision || 0}`;
    const have = state.cards.get(h.hit_id);
    if (have && have.key === key) return have.node;
    const node = hitCard(h);
    state.cards.set(h.hit_id, { key, node });
    return node;
  }

  function place(container, nodes) {
    const now = [...container.children];
    if (now.length === nodes.length && now.every((n, i) => n === nodes[i])) return;
    const focused = document.activeElement;
    const sel = focused && focused.tagName === "INPUT" ? [focused.selectionStart, focused.selectionEnd] : null;
    container.replaceChildren(...nodes);
    if (focused && focused !== document.activeElement && document.contains(focused)) {
      focused.focus();
      if (sel) focused.setSelectionRange(sel[0], sel[1]);
    }
  }

  function renderBoard() {
    const all = [...state.hits.values()];
    const open = all.filter(isOpen).sort(order);
    const done = all.filter((h) => !isOpen(h))
      .sort((a, b) => (a.acks.at(-1).at < b.acks.at(-1).at ? 1 : -1)).slice(0, 50);
    const shown = new Set([...open, ...done].map((h) => h.hit_id));
    for (const id of [...state.cards.keys()]) if (!shown.has(id)) state.cards.delete(id);
    place($("open-hits"), open.map(card));
    place($("done-hits"), done.map(card));
    $("no-open").hidden = open.length > 0;
    $("open-count").textContent = String(open.length);
    $("open-count").classList.toggle("alarm", open.some((h) => h.priority <= 1));
    document.title = open.length ? `(${open.length}) ${t("app.title")}` : t("app.title");
    showWaiting(open.length, open.some((h) => h.priority <= NOTIFY_UP_TO));
  }

  // The tab's icon: a badge with how many wait (red when one is P1-2), drawn here.
  function showWaiting(count, urgent) {
    const key = `${count}/${urgent}`;
    if (state.favicon === key) return;
    state.favicon = key;
    const c = document.createElement("canvas");
    c.width = c.height = 64;
    const g = c.getContext("2d");
    g.fillStyle = count ? (urgent ? "#e5322d" : "#f08c1a") : "#2d3b4c";
    g.beginPath();
    g.arc(32, 32, 30, 0, 2 * Math.PI);
    g.fill();
    g.fillStyle = "#fff";
    g.font = `bold ${count > 99 ? 26 : 36}px sans-serif`;
    g.textAlign = "center";
    g.textBaseline = "middle";
    g.fillText(count > 999 ? "999+" : String(count), 32, 34);
    $("favicon").href = c.toDataURL("image/png");
    document.body.dataset.waiting = String(count);
  }

  // ------------------------------------------------------------------ desktop notifications

  function showNotify() {
    const b = $("notify");
    if (!("Notification" in window)) { b.hidden = true; return; }
    b.hidden = false;
    const p = Notification.permission;
    b.textContent = p === "granted" ? t("notify.on") : p === "denied" ? t("notify.blocked") : t("notify.enable");
    b.disabled = p !== "default";
  }

  function inBackground() {
    return document.visibilityState !== "visible" || !document.hasFocus();
  }

  function notify(h) {
    if (h.priority > NOTIFY_UP_TO || !("Notification" in window) || Notification.permission !== "granted") return;
    if (!inBackground()) return; // the banner and the sound say it on the page itself
    const n = new Notification(t("notify.title", { priority: h.priority, plate: plateText(h) }), {
      body: t("notify.body", { list: h.watchlist, reason: h.reason || t("hit.no_reason"), camera: `${h.node}/${h.camera}` }),
      tag: h.hit_id, requireInteraction: h.priority <= 1, lang: i18n.lang,
    });
    n.addEventListener("click", () => { window.focus(); window.location.hash = "#live"; n.close(); });
    n.addEventListener("show", () => { document.body.dataset.notifiedShown = String(Number(document.body.dataset.notifiedShown || 0) + 1); });
    state.notified += 1;
    document.body.dataset.notified = String(state.notified);
    document.body.dataset.notifiedTitle = n.title;
  }

  function refreshTimes() {
    for (const h of state.hits.values()) {
      const c = state.cards.get(h.hit_id);
      const t = c && c.node.querySelector(".time");
      if (t) t.textContent = seenText(h);
    }
  }

  function addHit(h, isNew) {
    if (!h.acks) h.acks = [];
    const old = state.hits.get(h.hit_id);
    if (old) {
      // the same alert, completed by the pass's final read: redrawn, not raised again
      isNew = false;
      if (old.acks.length > h.acks.length) h.acks = old.acks;
    }
    state.hits.set(h.hit_id, h);
    renderBoard();
    if (isNew) {
      beep();
      notify(h);
      const flash = $("flash");
      const cross = partnerText(h);
      flash.textContent = `P${h.priority} ${plateText(h)} ${h.country || ""} \u2014 ${h.watchlist}: ${h.reason || ""} (${h.node}/${h.camera})` +
        (cross ? ` \u00b7 ${cross}` : "");
      flash.className = `flash ${level(h.priority)}`;
      flash.hidden = false;
      state.flashHit = h.hit_id;
      clearTimeout(state.flashTimer);
      state.flashTimer = setTimeout(() => { flash.hidden = true; }, 15000);
    }
  }

  function addAck(ack) {
    const h = state.hits.get(ack.hit_id);
    if (!h) return;
    if (!h.acks.some((a) => a.id === ack.id)) h.acks.push(ack);
    if (state.flashHit === ack.hit_id) $("flash").hidden = true; // someone has it
    renderBoard();
  }

  async function loadBoard() {
    const live = await api("/api/live");
    for (const h of live.hits) { // merged: a hit the stream brought meanwhile stays
      const old = state.hits.get(h.hit_id);
      if (!old || h.acks.length >= old.acks.length) state.hits.set(h.hit_id, h);
    }
    renderBoard();
  }

  function listen() {
    const source = new EventSource("/api/events");
    source.addEventListener("open", () => {
      $("link-state").textContent = t("link.live");
      $("link-state").className = "link-state up";
      loadBoard().catch(() => {}); // whatever came while the stream was down
    });
    source.addEventListener("hit", (ev) => addHit(JSON.parse(ev.data), true));
    source.addEventListener("ack", (ev) => addAck(JSON.parse(ev.data)));
    source.addEventListener("signed-out", () => window.location.assign("/login"));
    source.addEventListener("error", () => {
      $("link-state").textContent = t("link.reconnecting");
      $("link-state").className = "link-state down";
      if (source.readyState === EventSource.CLOSED) setTimeout(listen, 2000);
    });
  }

  // ------------------------------------------------------------------ search

  function localToIso(value) {
    if (!value) return "";
    const d = new Date(value); // datetime-local: the operator's local time
    return isNaN(d) ? "" : d.toISOString();
  }

  function searchQuery() {
    const q = new URLSearchParams();
    const add = (k, v) => { if (v) q.set(k, v); };
    add("plate", $("q-plate").value.trim());
    add("since", localToIso($("q-since").value));
    add("until", localToIso($("q-until").value));
    add("camera", $("q-camera").value);
    add("watchlist", $("q-list").value);
    return q;
  }

  function setCameraFilter(id) {
    const select = $("q-camera");
    if (id && ![...select.options].some((o) => o.value === id)) {
      select.append(el("option", { value: id, text: id }));
    }
    select.value = id;
  }

  async function fillFilters() {
    try {
      const [cams, lists] = await Promise.all([api("/api/cameras"), api("/api/watchlists")]);
      const camSel = $("q-camera");
      const keep = camSel.value;
      camSel.replaceChildren(el("option", { value: "", text: t("search.any") }),
        ...cams.cameras.map((c) => el("option", { value: c.id, text: c.id })));
      setCameraFilter(keep);
      const listSel = $("q-list");
      const keepList = listSel.value;
      listSel.replaceChildren(el("option", { value: "", text: t("search.any") }),
        ...lists.lists.map((l) => el("option", { value: l.name, text: l.name })));
      listSel.value = keepList;
    } catch (e) { /* the search works without them */ }
  }

  async function runSearch() {
    const q = searchQuery();
    $("export-csv").href = `/api/hits.csv?${q}`;
    $("export-csv-semicolon").href = `/api/hits.csv?${q}${q ? "&" : ""}sep=%3B`;
    $("export-json").href = `/api/hits.json?${q}`;
    status("search-status", t("search.searching"));
    try {
      const res = await api(`/api/hits?${q}`);
      const rows = res.hits.map((h) => {
        const last = h.acks.length ? h.acks[h.acks.length - 1] : null;
        const p = partnerOf(h);
        return el("tr", Object.assign({ class: `${level(h.priority)}${p.camera || p.list ? " partner" : ""}`, "data-hit": h.hit_id }, hitAgencyData(h)),
          el("td", { text: h.priority }),
          el("td", { title: h.seen_at, text: when(h.seen_at) }),
          el("td", { class: "plate-cell" }, h.crop_bytes ? el("img", { class: "mini", alt: "", src: `/api/hits/${h.hit_id}/crop.jpg` }) : null,
             `${plateText(h)} ${h.country || ""}`),
          el("td", { text: h.watchlist }),
          el("td", { text: h.reason }),
          el("td", { text: h.agency }),
          el("td", { class: "agencies" }, whoseLine(h), ...partnerMarks(h)),
          el("td", { text: matchText(h) }),
          el("td", { text: `${h.node}/${h.camera}` }),
          el("td", { text: last ? `${last.display_name} ${when(last.at)}${last.note ? ": " + last.note : ""}` : t("search.not_acked") }));
      });
      $("results").querySelector("tbody").replaceChildren(...rows);
      status("search-status", t("search.count", { count: res.hits.length }) +
        (res.hits.length >= res.limit ? " " + t("search.limited", { limit: res.limit }) : ""));
    } catch (e) {
      status("search-status", e.message, true);
    }
  }

  // ------------------------------------------------------------------ the nodes' reads (investigators)

  // The reads stay on the nodes: an investigator's search goes to them (POST /api/search,
  // answered as NDJSON as the nodes answer), each node's state is shown as it changes, the
  // reads in time order, and the vehicle's journey on the map: one numbered stop per camera
  // passed, in time order, joined by a line.  A read's picture is fetched only when asked
  // for: the collector records every one opened, with the case.
  const NODE_STATES = {
    asked: "trace.state_asked", answering: "trace.state_answering", done: "trace.state_done",
    offline: "trace.state_offline", slow: "trace.state_slow", refused: "trace.state_refused",
  };
  const MAX_DISTANCE = 1.75; // edge.core.watchlist.distance.MAX_FUZZY_DISTANCE
  const FOLLOW_S = 3; // how often a search with slow nodes looks for their late answers

  const isInvestigator = () => state.me && state.me.user.role === "investigator";

  function localInput(d) { // a Date as a datetime-local value, in the browser's time
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }

  function traceMode() {
    const checked = document.querySelector('input[name="t-mode"]:checked');
    return checked ? checked.value : "exact";
  }

  function setTraceMode(mode) {
    for (const r of document.querySelectorAll('input[name="t-mode"]')) r.checked = r.value === mode;
    $("t-distance").disabled = mode !== "fuzzy";
  }

  async function fillTraceForm() {
    if (!$("t-since").value) $("t-since").value = localInput(new Date(Date.now() - 2 * 86400e3));
    makeJourneyMap();
    try {
      const [cams, lists] = await Promise.all([api("/api/cameras"), api("/api/watchlists")]);
      state.traceCameras = cams.cameras;
      const sel = $("t-cameras");
      const keep = new Set([...sel.selectedOptions].map((o) => o.value));
      sel.replaceChildren(...cams.cameras.map((c) => el("option", {
        value: c.id, selected: keep.has(c.id),
        text: [c.id, c.label || c.road].filter(Boolean).join(" \u2014 ") })));
      // The watchlists' own distance: the widest of the fuzzy lists, as the hits use.
      const fuzzy = lists.lists.filter((l) => l.match !== "exact" && l.max_distance > 0);
      if (fuzzy.length && !state.distanceTouched) {
        $("t-distance").value = String(Math.max(...fuzzy.map((l) => l.max_distance)));
      }
      drawCameraSpots();
    } catch (e) { /* the search works without them */ }
    if (state.trace) drawJourney(); // the console's places may place more of its reads

  }

  class FormProblem extends Error {
    constructor(field, message) { super(message); this.field = field; }
  }

  function areaValue() {
    const ids = ["t-min-lat", "t-min-lon", "t-max-lat", "t-max-lon"];
    const raw = ids.map((id) => $(id).value.trim());
    if (raw.every((v) => v === "")) return null;
    const bad = ids.find((id, i) => raw[i] === "" || !isFinite(Number(raw[i])));
    if (bad) throw new FormProblem(bad, t("trace.need_area"));
    const [a, b, c, d] = raw.map(Number);
    if (Math.abs(a) > 90 || Math.abs(c) > 90 || Math.abs(b) > 180 || Math.abs(d) > 180 || a > c || b > d) {
      throw new FormProblem(ids[0], t("trace.bad_area"));
    }
    return [a, b, c, d];
  }

  // What the form asks, as POST /api/search takes it; FormProblem says what is missing.
  function traceBody() {
    const plate = $("t-plate").value.trim();
    if (!plate) throw new FormProblem("t-plate", t("trace.need_plate"));
    const mode = traceMode();
    const wild = /[?*]/.test(plate);
    if (mode === "wildcard" && !wild) throw new FormProblem("t-plate", t("trace.need_wildcard"));
    if (mode !== "wildcard" && wild) throw new FormProblem("t-plate", t("trace.no_wildcard"));
    const since = localToIso($("t-since").value);
    if (!since) throw new FormProblem("t-since", t("trace.need_since"));
    const until = localToIso($("t-until").value);
    if (until && until < since) throw new FormProblem("t-until", t("trace.until_before"));
    const body = { plate, mode, since, case_ref: $("t-case").value.trim(),
                   legal_basis: $("t-basis").value.trim(), retry_offline: $("t-retry-auto").checked };
    if (until) body.until = until;
    if (mode === "fuzzy") {
      const d = Number($("t-distance").value);
      if (!(d > 0 && d <= MAX_DISTANCE)) throw new FormProblem("t-distance", t("trace.bad_distance", { max: MAX_DISTANCE }));
      body.max_distance = d;
    }
    // Cameras are named as each node names them; the nodes asked are those they are on.
    const chosen = [...$("t-cameras").selectedOptions].map((o) => o.value);
    if (chosen.length) {
      const split = chosen.map((id) => [id.slice(0, id.indexOf("/")), id.slice(id.indexOf("/") + 1)]);
      body.nodes = [...new Set(split.map((s) => s[0]))];
      body.cameras = [...new Set(split.map((s) => s[1]))];
    }
    const area = areaValue();
    if (area) body.area = area;
    if (!body.case_ref) throw new FormProblem("t-case", t("trace.need_case"));
    if (!body.legal_basis) throw new FormProblem("t-basis", t("trace.need_basis"));
    return body;
  }

  function markProblem(field) {
    for (const n of $("trace-form").querySelectorAll("[aria-invalid]")) n.removeAttribute("aria-invalid");
    if (field) {
      $(field).setAttribute("aria-invalid", "true");
      $(field).focus();
    }
  }

  async function runTrace() {
    let body;
    try {
      body = traceBody();
      markProblem(null);
    } catch (e) {
      if (!(e instanceof FormProblem)) throw e;
      markProblem(e.field);
      status("trace-status", e.message, true);
      return;
    }
    stopFollowing();
    if (state.traceAbort) state.traceAbort.abort(); // a search asked again: the last one's stream ends
    state.traceAbort = new AbortController();
    state.trace = null;
    state.traceRuns = (state.traceRuns || 0) + 1;
    const run = state.traceRuns;
    document.body.dataset.traceSettled = "0";
    $("t-go").disabled = true;
    status("trace-status", t("trace.asking"));
    try {
      const res = await fetch("/api/search", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
        signal: state.traceAbort.signal,
      });
      if (res.status === 401) { window.location.assign("/login"); return; }
      if (!res.ok) {
        let why = res.statusText;
        try { why = (await res.json()).error || why; } catch (e) { /* not JSON */ }
        status("trace-status", t("trace.refused", { error: why }), true);
        return;
      }
      await readLines(res, (event) => { if (run === state.traceRuns) traceEvent(event); });
    } catch (e) {
      if (run === state.traceRuns) status("trace-status", t("trace.refused", { error: e.message }), true);
    } finally {
      if (run === state.traceRuns) $("t-go").disabled = false;
    }
    if (run === state.traceRuns) followLater();
  }

  // NDJSON as it comes: each whole line handed on at once.
  async function readLines(res, take) {
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      buf += decoder.decode(value || new Uint8Array(), { stream: !done });
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line) take(JSON.parse(line));
      }
      if (done) break;
    }
    if (buf.trim()) take(JSON.parse(buf));
  }

  function traceEvent(ev) {
    if (ev.event === "search") {
      const s = ev.search;
      state.trace = { id: s.id, search: s, nodes: new Map(), reads: new Map(), events: 0,
                      settled: false, opened: new Set(), stops: [] };
      for (const n of s.nodes) state.trace.nodes.set(n.node, n);
      const base = `/api/search/${s.id}`;
      $("trace-csv").href = `${base}.csv`;
      $("trace-csv-semicolon").href = `${base}.csv?sep=%3B`;
      $("trace-json").href = `${base}.json`;
      $("trace-result").hidden = false;
      document.body.dataset.traceId = s.id;
    }
    const tr = state.trace;
    if (!tr) return;
    tr.events += 1;
    if (ev.event === "node") {
      tr.nodes.set(ev.node, ev);
      tr.settled = false;
    } else if (ev.event === "reads") {
      for (const r of ev.reads) tr.reads.set(r.n, r);
    } else if (ev.event === "done") {
      tr.settled = true;
      tr.counts = ev;
      document.body.dataset.traceSettled = "1";
    }
    renderTrace();
  }

  function nodeText(n) {
    const key = NODE_STATES[n.state];
    const text = key ? t(key, { reads: n.reads, total: n.total, why: n.refused || "" }) : n.state;
    return n.late ? `${text} ${t("trace.late")}` : text;
  }

  function sortedReads(tr) {
    return [...tr.reads.values()].sort((a, b) => (a.seen_at < b.seen_at ? -1 : a.seen_at > b.seen_at ? 1 : a.n - b.n));
  }

  function renderTrace() {
    const tr = state.trace;
    const nodes = [...tr.nodes.values()];
    $("trace-nodes").replaceChildren(...nodes.map((n) => el("li", { class: `node-state ${n.state}`, "data-node": n.node, "data-state": n.state },
      el("b", { text: n.node }), n.agency ? el("span", { class: "agency", text: ` (${n.agency})` }) : null, ": ", nodeText(n))));
    const again = nodes.filter((n) => n.state === "offline" || n.state === "slow");
    $("trace-retry").hidden = !(tr.settled && again.length);
    const reads = sortedReads(tr);
    const stops = drawJourney();
    const stopOf = new Map();
    for (const s of stops) for (const r of s.reads) stopOf.set(r.n, s.n);
    $("trace-reads").querySelector("tbody").replaceChildren(...reads.map((r) => readRow(r, stopOf.get(r.n))));
    $("trace-crops").hidden = !reads.some((r) => r.crop_url);
    $("trace-count").textContent = t("trace.count", { count: reads.length, nodes: nodes.filter((n) => n.state === "done").length });
    const pending = nodes.filter((n) => n.state === "asked" || n.state === "answering").length;
    status("trace-status", tr.settled
      ? [t("trace.settled", { count: reads.length }),
         again.length ? t("trace.missing", { count: again.length, nodes: again.map((n) => n.node).join(", ") }) : ""].filter(Boolean).join(" ")
      : t("trace.waiting", { count: pending }));
  }

  function readRow(r, stop) {
    const cell = el("td", { class: "picture" });
    const show = () => {
      const img = el("img", { class: "crop-open", src: r.crop_url, alt: t("pic.plate", { plate: r.formatted || r.text }) });
      cell.replaceChildren(el("button", { type: "button", class: "crop-button", title: t("trace.larger"),
        onclick: () => { $("scene-big").src = img.src; $("scene-big").alt = img.alt; $("scene-dialog").showModal(); } }, img));
    };
    if (state.trace.opened.has(r.n)) show();
    else if (r.crop_url) {
      cell.append(el("button", { type: "button", class: "open-crop", text: t("trace.show_crop"),
        "aria-label": t("trace.show_crop_of", { plate: r.formatted || r.text, when: when(r.seen_at) }),
        onclick: () => { state.trace.opened.add(r.n); show(); } }));
    } else cell.append(el("span", { class: "fineprint", text: t("pic.no_crop") }));
    return el("tr", { "data-n": r.n, "data-node": r.node, "data-camera": `${r.node}/${r.camera}` },
      el("td", { text: stop === undefined ? "\u2013" : stop }),
      el("td", { title: r.seen_at, text: when(r.seen_at) }),
      el("td", { class: "plate-cell", text: `${r.formatted || r.text} ${r.country || ""}` }),
      el("td", { text: `${r.node}/${r.camera}` }),
      el("td", { text: r.direction || "" }),
      el("td", { text: vehicleText(r) }),
      el("td", { text: `${Math.round(r.confidence * 100)} %` }),
      el("td", { text: r.agency || "" }),
      cell);
  }

  function showAllCrops() {
    if (!state.trace) return;
    for (const r of state.trace.reads.values()) if (r.crop_url) state.trace.opened.add(r.n);
    renderTrace();
  }

  // Late answers of slow nodes, and what a retry brings: the search's events from the last
  // seen on (server-sent events), looked at again every FOLLOW_S while a node is missing.
  function stopFollowing() {
    clearTimeout(state.followTimer);
    state.followTimer = null;
    if (state.followSource) state.followSource.close();
    state.followSource = null;
  }

  function waitingFor(tr) {
    return [...tr.nodes.values()].some((n) => ["asked", "answering", "slow"].includes(n.state));
  }

  function followLater() {
    const tr = state.trace;
    if (!tr || state.followTimer || state.followSource) return;
    const offline = [...tr.nodes.values()].some((n) => n.state === "offline");
    if (tr.settled && !waitingFor(tr) && !(tr.search.retry_offline && offline)) return;
    state.followTimer = setTimeout(() => { state.followTimer = null; follow(); }, tr.settled ? FOLLOW_S * 1000 : 0);
  }

  function follow() {
    const tr = state.trace;
    if (!tr || state.followSource) return;
    const source = new EventSource(`/api/search/${tr.id}/events?after=${tr.events}`);
    state.followSource = source;
    const take = (ev) => {
      if (state.trace !== tr || Number(ev.lastEventId) !== tr.events) return; // seen already
      traceEvent(JSON.parse(ev.data));
    };
    for (const kind of ["search", "node", "reads"]) source.addEventListener(kind, take);
    const end = () => {
      source.close();
      if (state.followSource === source) state.followSource = null;
      if (state.trace === tr) followLater();
    };
    source.addEventListener("done", (ev) => { take(ev); end(); });
    source.addEventListener("error", end); // ended (nothing new yet), or the link dropped
    source.addEventListener("signed-out", () => window.location.assign("/login"));
  }

  async function retryTrace() {
    const tr = state.trace;
    if (!tr) return;
    $("trace-retry").disabled = true;
    try {
      const res = await api(`/api/search/${tr.id}/retry`, { json: {} });
      status("trace-status", res.asked.length ? t("trace.asked_again", { nodes: res.asked.join(", ") }) : t("trace.none_back"));
      stopFollowing();
      tr.settled = false; // until the nodes asked again have answered
      follow();
    } catch (e) {
      status("trace-status", t("trace.refused", { error: e.message }), true);
    } finally {
      $("trace-retry").disabled = false;
    }
  }

  // ---- the journey on the map

  function makeJourneyMap() {
    if (state.journeyMap || !window.L || !(state.me.map && state.me.map.built)) {
      $("journey-map").hidden = !state.journeyMap;
      if (state.journeyMap) state.journeyMap.invalidateSize();
      else $("journey-note").textContent = t("map.not_built");
      return state.journeyMap;
    }
    const map = baseMap("journey-map");
    state.cameraSpots = L.layerGroup().addTo(map);
    state.journeyLayer = L.layerGroup().addTo(map);
    map.on("click", (e) => drawClick(e.latlng));
    map.on("mousemove", (e) => { if (state.drawing && state.drawing.first) showArea(L.latLngBounds(state.drawing.first, e.latlng)); });
    state.journeyMap = map;
    return map;
  }

  function drawCameraSpots() {
    if (!state.journeyMap) return;
    state.cameraSpots.clearLayers();
    const placed = (state.traceCameras || []).filter((c) => c.lat !== null && c.lon !== null);
    for (const c of placed) {
      L.circleMarker([c.lat, c.lon], { radius: 5, className: `cam-spot ${c.health}`, weight: 1 })
        .bindTooltip(c.id, { direction: "right" }).addTo(state.cameraSpots);
    }
    if (placed.length && !state.trace && !state.spotsFitted) { // before any journey: the cameras
      state.spotsFitted = true;
      state.journeyMap.fitBounds(L.latLngBounds(placed.map((c) => [c.lat, c.lon])).pad(0.3), { maxZoom: 10 });
    }
  }

  // Stops in time order: consecutive reads at one camera are one stop.  A read's place is
  // its node's word for the camera, else the console's (the cameras' config or hits).
  function journeyStops(reads) {
    const places = new Map((state.traceCameras || []).map((c) => [c.id, c]));
    const stops = [];
    let unplaced = 0;
    for (const r of reads) {
      const camera = `${r.node}/${r.camera}`;
      let [lat, lon] = [r.lat, r.lon];
      if (lat === null || lat === undefined || lon === null || lon === undefined) {
        const c = places.get(camera);
        [lat, lon] = c && c.lat !== null ? [c.lat, c.lon] : [null, null];
      }
      if (lat === null) { unplaced += 1; continue; }
      const last = stops[stops.length - 1];
      if (last && last.camera === camera && last.lat === lat && last.lon === lon) last.reads.push(r);
      else stops.push({ n: stops.length + 1, camera, lat, lon, reads: [r] });
    }
    return { stops, unplaced };
  }

  function stopTimes(s) {
    const first = when(s.reads[0].seen_at);
    return s.reads.length === 1 ? first : t("trace.times", { first, last: when(s.reads[s.reads.length - 1].seen_at), count: s.reads.length });
  }

  function drawJourney() {
    const tr = state.trace;
    const { stops, unplaced } = journeyStops(tr ? sortedReads(tr) : []);
    if (tr) tr.stops = stops;
    const key = `${tr ? tr.id : ""}/${unplaced}/` + stops.map((s) => `${s.camera}:${s.lat},${s.lon}:${s.reads.length}`).join("|");
    if (key === state.journeyKey) return stops; // drawn as it is
    $("journey-list").replaceChildren(...stops.map((s) => el("li", { "data-stop": s.n, "data-camera": s.camera },
      el("b", { text: s.camera }), ` \u00b7 ${stopTimes(s)}`)));
    const notes = [];
    if (!state.journeyMap) notes.push(t("map.not_built"));
    if (unplaced) notes.push(t("trace.unplaced", { count: unplaced }));
    $("journey-note").textContent = notes.join(" ");
    const map = state.journeyMap;
    if (!map || $("trace").hidden) return stops; // drawn and fitted when the tab is shown
    state.journeyKey = key;
    state.journeyLayer.clearLayers();
    state.journeyLine = null;
    if (!stops.length) return stops;
    const points = stops.map((s) => [s.lat, s.lon]);
    state.journeyLine = L.polyline(points, { className: "journey-line", weight: 4, interactive: false }).addTo(state.journeyLayer);
    for (const s of stops) {
      const icon = L.divIcon({ className: "journey-stop", iconSize: [26, 26], iconAnchor: [13, 13],
                               html: el("span", { class: "journey-n", "data-stop": s.n, "data-camera": s.camera, text: s.n }) });
      L.marker([s.lat, s.lon], { icon, title: `${s.n}. ${s.camera} \u2014 ${stopTimes(s)}`, zIndexOffset: 1000 + s.n })
        .bindTooltip(`${s.n}. ${stopTimes(s)}`, { permanent: true, direction: "top", offset: [0, -12], className: "journey-time" })
        .addTo(state.journeyLayer);
    }
    map.invalidateSize();
    map.fitBounds(L.latLngBounds(points).pad(0.25), { maxZoom: 13 });
    return stops;
  }

  // ---- the area, typed or drawn as a box (a click on one corner, then on the other)

  function showArea(bounds) {
    if (!state.journeyMap) return;
    if (state.areaBox) state.areaBox.remove();
    state.areaBox = bounds ? L.rectangle(bounds, { className: "area-box", weight: 2, fillOpacity: 0.08, interactive: false }).addTo(state.journeyMap) : null;
  }

  function areaFromInputs() {
    try {
      const a = areaValue();
      showArea(a ? L.latLngBounds([a[0], a[1]], [a[2], a[3]]) : null);
    } catch (e) { /* shown when asked */ }
  }

  function startDrawing() {
    if (!makeJourneyMap()) { status("trace-status", t("map.not_built"), true); return; }
    state.drawing = { first: null };
    $("t-draw").setAttribute("aria-pressed", "true");
    $("journey-map").classList.add("drawing");
    status("trace-status", t("trace.draw_hint"));
  }

  function drawClick(latlng) {
    if (!state.drawing) return;
    if (!state.drawing.first) {
      state.drawing.first = latlng;
      showArea(L.latLngBounds(latlng, latlng));
      return;
    }
    const b = L.latLngBounds(state.drawing.first, latlng);
    stopDrawing();
    const r = (x) => String(Math.round(x * 1e5) / 1e5);
    $("t-min-lat").value = r(b.getSouth());
    $("t-min-lon").value = r(b.getWest());
    $("t-max-lat").value = r(b.getNorth());
    $("t-max-lon").value = r(b.getEast());
    showArea(b);
    status("trace-status", "");
  }

  function stopDrawing() {
    state.drawing = null;
    $("t-draw").setAttribute("aria-pressed", "false");
    $("journey-map").classList.remove("drawing");
  }

  function clearArea() {
    for (const id of ["t-min-lat", "t-min-lon", "t-max-lat", "t-max-lon"]) $(id).value = "";
    stopDrawing();
    showArea(null);
  }

  function setUpTrace() {
    if (!isInvestigator()) {
      // Not theirs: the tab and its section leave the page (the server refuses them anyway).
      for (const n of document.querySelectorAll(".investigator-only")) n.remove();
      return;
    }
    for (const n of document.querySelectorAll(".investigator-only")) n.hidden = n.tagName === "SECTION";
    $("trace-form").addEventListener("submit", (ev) => { ev.preventDefault(); runTrace(); });
    for (const r of document.querySelectorAll('input[name="t-mode"]')) r.addEventListener("change", () => setTraceMode(traceMode()));
    $("t-plate").addEventListener("input", () => {
      const wild = /[?*]/.test($("t-plate").value);
      if (wild && traceMode() !== "wildcard") setTraceMode("wildcard");
      else if (!wild && traceMode() === "wildcard") setTraceMode("exact");
    });
    $("t-distance").addEventListener("input", () => { state.distanceTouched = true; });
    for (const id of ["t-min-lat", "t-min-lon", "t-max-lat", "t-max-lon"]) $(id).addEventListener("change", areaFromInputs);
    $("t-draw").addEventListener("click", () => (state.drawing ? stopDrawing() : startDrawing()));
    document.addEventListener("keydown", (ev) => { // Escape: no box after all
      if (ev.key === "Escape" && state.drawing) { stopDrawing(); areaFromInputs(); status("trace-status", ""); }
    });
    $("t-clear-area").addEventListener("click", clearArea);
    $("trace-retry").addEventListener("click", retryTrace);
    $("trace-crops").addEventListener("click", showAllCrops);
    // For the browser tests and the curious: the journey as drawn (the line's own points).
    window.ConsoleTrace = {
      journey: () => ({
        stops: ((state.trace && state.trace.stops) || []).map((s) => ({ n: s.n, camera: s.camera, lat: s.lat, lon: s.lon, seen: s.reads.map((r) => r.seen_at) })),
        line: state.journeyLine ? state.journeyLine.getLatLngs().map((p) => [p.lat, p.lng]) : null,
      }),
    };
  }

  // ------------------------------------------------------------------ cameras and the map

  // The map: Leaflet on the page's own origin, the layers built from Natural Earth (borders)
  // and GeoNames (towns) by `make console-map`, the site's tiles under them when configured.
  const REGION = [[41.0, 20.0], [59.7, 30.5]]; // the cameras' countries, when none is placed

  async function layer(name) {
    const res = await fetch(`/api/map/${name}.geojson`, { credentials: "same-origin" });
    if (!res.ok) throw new Error(`${name}: ${res.status}`);
    return res.json();
  }

  function makeMap() {
    if (state.map || !window.L || !(state.me.map && state.me.map.built)) return state.map;
    const map = baseMap("map");
    state.clusters = L.markerClusterGroup({ maxClusterRadius: 40, showCoverageOnHover: false });
    state.clusters.addTo(map);
    state.map = map;
    return map;
  }

  // A map in the element `id`: the site's tiles if any, the countries, borders and towns.
  function baseMap(id) {
    const map = L.map(id, { preferCanvas: false, worldCopyJump: false, minZoom: 4, maxZoom: 16, zoomSnap: 0.5 });
    map.attributionControl.setPrefix(false);
    const tiles = state.me.map.tile_url;
    if (tiles) {
      L.tileLayer(tiles, { attribution: state.me.map.attribution || "", maxZoom: 19 }).addTo(map);
    }
    map.fitBounds(REGION);
    map.attributionControl.addAttribution("Natural Earth · GeoNames (CC BY 4.0) · Leaflet");
    const towns = L.layerGroup();
    Promise.all([layer("countries"), layer("borders"), layer("towns").catch(() => null)]).then(([countries, borders, places]) => {
      L.geoJSON(countries, { className: tiles ? "land over-tiles" : "land", interactive: false,
                             style: { weight: 0.8, fillOpacity: tiles ? 0 : 1 } }).addTo(map).bringToBack();
      L.geoJSON(borders, { className: "border", interactive: false, style: { weight: 2.2 } }).addTo(map);
      if (places) {
        state.towns = places.features;
        showTowns(map, towns);
        map.on("zoomend moveend", () => showTowns(map, towns));
      }
      towns.addTo(map);
      document.body.dataset[id === "map" ? "mapLayers" : "journeyLayers"] = "1";
    }).catch((e) => { $(id === "map" ? "map-note" : "journey-note").textContent = `${t("map.not_built")} (${e.message})`; });
    return map;
  }

  // Towns by size as the map zooms in: the biggest first, a few hundred at most on screen.
  function showTowns(map, group) {
    const z = map.getZoom();
    const least = z >= 10 ? 0 : z >= 8 ? 50000 : z >= 7 ? 150000 : z >= 6 ? 400000 : 1000000;
    const view = map.getBounds().pad(0.2);
    group.clearLayers();
    let n = 0;
    for (const f of state.towns || []) {
      if (f.properties.population < least) break; // sorted biggest first
      const [lon, lat] = f.geometry.coordinates;
      if (!view.contains([lat, lon])) continue;
      const m = L.circleMarker([lat, lon], { radius: 2.5, className: "town", interactive: false });
      m.bindTooltip(f.properties.name, { permanent: true, direction: "right", className: "town-label", offset: [3, 0] });
      group.addLayer(m);
      if (++n >= 300) break;
    }
  }

  // A partner's camera is a diamond ringed in the partners' colour, its agency by its name;
  // a stale one (its owner's reports stopped) is faded and dashed.
  function camIcon(c) {
    const marks = `${isPartnerCamera(c) ? " partner" : ""}${c.stale ? " stale" : ""}`;
    const dot = el("span", { class: `cam-dot ${c.health}${marks}`, "data-camera": c.id,
                             "data-partner": isPartnerCamera(c) ? "1" : null, "data-stale": c.stale ? "1" : null });
    const wrap = el("div", {}, dot, el("span", { class: `cam-name${marks}`,
      text: isPartnerCamera(c) ? `${c.camera} \u00b7 ${c.agency}` : c.camera }));
    return L.divIcon({ className: `cam ${c.health}${marks}`, html: wrap, iconSize: [18, 18], iconAnchor: [9, 9] });
  }

  const isPartnerCamera = (c) => !!c.partner || isPartner(c.agency);

  // "shared by pl-sg" (and "stale") for a partner's camera; the agency for ours.
  function cameraAgency(c) {
    if (!isPartnerCamera(c)) return el("span", { class: "agency", "data-agency": c.agency || "", text: agencyText(c.agency) });
    return el("span", { class: "camera-agency", "data-agency": c.agency },
      el("span", { class: "partner-mark", title: agencyText(c.agency), text: t("cameras.shared_by", { agency: c.agency }) }),
      c.stale ? el("span", { class: "stale-mark", title: t("cameras.stale_hint"), text: t("cameras.stale") }) : null);
  }

  // One row per camera: a partner's camera known both from the exchange's reports and from
  // hits here is one, the report's, with what only the other knows (its latest hit).
  function mergeCameras(list) {
    const byId = new Map();
    for (const c of list) {
      const have = byId.get(c.id);
      if (!have) { byId.set(c.id, c); continue; }
      const [first, other] = c.partner && !have.partner ? [c, have] : [have, c];
      const merged = Object.assign({}, first);
      for (const [k, v] of Object.entries(other)) {
        if (merged[k] === null || merged[k] === undefined || merged[k] === "") merged[k] = v;
      }
      if (other.last_hit_at && (!merged.last_hit_at || other.last_hit_at > merged.last_hit_at)) merged.last_hit_at = other.last_hit_at;
      byId.set(c.id, merged);
    }
    return [...byId.values()];
  }

  async function camPopup(c, marker) {
    const box = el("div", { class: "cam-popup", "data-camera": c.id },
      el("b", { text: c.id }), el("div", { class: "fineprint", text: [c.label, c.road, c.direction].filter(Boolean).join(", ") }),
      cameraAgency(c),
      el("div", { text: `${t("col.health")}: ${health(c)}` }), el("h4", { text: t("map.recent") }),
      el("div", { class: "cam-hits", text: t("map.loading") }));
    marker.setPopupContent(box);
    try {
      const res = await api(`/api/hits?${new URLSearchParams({ camera: c.id, limit: 5 })}`);
      const list = box.querySelector(".cam-hits");
      list.replaceChildren(...(res.hits.length ? res.hits.map((h) => el("div", { class: `cam-hit ${level(h.priority)}`, "data-hit": h.hit_id },
        el("span", { class: "prio", text: `P${h.priority}` }), " ", el("b", { text: plateText(h) }), ` ${h.country || ""} \u00b7 ${h.watchlist} \u00b7 `,
        el("span", { title: h.seen_at, text: ago(h.seen_at) }), ...partnerMarks(h))) : [el("div", { class: "fineprint", text: t("map.no_hits") })]));
      list.append(el("a", { href: `#search?camera=${encodeURIComponent(c.id)}`, text: t("map.all_hits") }));
      document.body.dataset.popupHits = String(res.hits.length);
    } catch (e) {
      box.querySelector(".cam-hits").textContent = e.message;
    }
  }

  function drawMap() {
    const map = makeMap();
    const placed = state.cameras.filter((c) => c.lat !== null && c.lon !== null);
    const unplaced = state.cameras.length - placed.length;
    const note = [];
    if (!map) note.push(t("map.not_built"));
    if (unplaced) note.push(t("map.unplaced", { count: unplaced }));
    $("map-note").textContent = note.join(" ");
    $("map").hidden = !map;
    document.body.dataset.mapBuilt = map ? "1" : "0";
    if (!map) return;
    const seen = new Set();
    for (const c of placed) {
      seen.add(c.id);
      const key = `${c.health}/${c.lat}/${c.lon}/${c.agency}/${!!c.partner}/${!!c.stale}`;
      const have = state.markers.get(c.id);
      if (have && have.key === key) continue;
      if (have) state.clusters.removeLayer(have.marker);
      const marker = L.marker([c.lat, c.lon], { icon: camIcon(c), title: `${c.id} ${c.label || c.road || ""} \u2014 ${health(c)}` });
      marker.bindPopup("", { minWidth: 220 });
      marker.on("popupopen", () => camPopup(c, marker));
      state.clusters.addLayer(marker);
      state.markers.set(c.id, { key, marker });
    }
    for (const [id, m] of [...state.markers]) {
      if (!seen.has(id)) { state.clusters.removeLayer(m.marker); state.markers.delete(id); }
    }
    if (!state.mapFitted || state.fitAsked) {
      state.mapFitted = true;
      state.fitAsked = false;
      if (placed.length && !state.mapWhole) {
        map.fitBounds(L.latLngBounds(placed.map((c) => [c.lat, c.lon])).pad(0.3), { maxZoom: 10 });
      } else {
        map.fitBounds(REGION);
      }
    }
    map.invalidateSize();
  }

  async function loadCameras() {
    try {
      state.cameras = mergeCameras((await api("/api/cameras")).cameras);
    } catch (e) {
      return;
    }
    drawMap();
    const rows = state.cameras.map((c) => el("tr", {
      "data-camera": c.id, "data-agency": c.agency || "", "data-partner": isPartnerCamera(c) ? "1" : null,
      "data-stale": c.stale ? "1" : null, class: `${isPartnerCamera(c) ? "partner" : ""}${c.stale ? " stale" : ""}`.trim() || null },
      el("td", { text: c.id }),
      el("td", {}, cameraAgency(c)),
      el("td", { text: [c.label, c.road, c.direction].filter(Boolean).join(", ") + (c.lat !== null ? ` (${c.lat.toFixed(4)}, ${c.lon.toFixed(4)})` : "") }),
      el("td", {}, el("span", { class: `dot ${c.health}` }), ` ${health(c)}`,
         c.problems.length ? el("div", { class: "fineprint", text: c.problems.join("; ") }) : null),
      el("td", { text: c.state ? `${c.state}${c.fps !== null && c.fps !== undefined ? " " + t("cameras.fps", { fps: Math.round(Number(c.fps) * 10) / 10 }) : ""}` : "" }),
      el("td", { title: c.last_seen || "", text: ago(c.last_seen) }),
      el("td", { title: c.last_hit_at || "", text: c.last_hit_at ? ago(c.last_hit_at) : t("cameras.no_hit") }),
      el("td", {}, el("a", { href: `#search?camera=${encodeURIComponent(c.id)}`, text: t("cameras.recent_hits") }))));
    $("camera-list").querySelector("tbody").replaceChildren(...rows);
  }

  // ------------------------------------------------------------------ watchlists

  async function loadLists() {
    try {
      const res = await api("/api/watchlists");
      state.lists = res.lists;
      checkListForms();
      $("lists").querySelector("tbody").replaceChildren(...res.lists.map((l) => el("tr", {
        "data-list": l.name, "data-agency": l.agency || "", "data-read-only": isPartner(l.agency) ? "1" : null,
        class: isPartner(l.agency) ? "partner" : null },
        el("td", {}, el("a", { href: "#watchlists", text: l.name, onclick: (ev) => { ev.preventDefault(); openList(l.name); } })),
        el("td", {}, el("span", { title: agencyText(l.agency), text: l.agency || "" }),
           isPartner(l.agency) ? el("span", { class: "read-only-mark", title: t("lists.partner_list", { agency: l.agency }), text: t("lists.read_only") }) : null),
        el("td", { text: l.match === "exact" ? t("lists.exact") : t("lists.fuzzy", { distance: l.max_distance }) }),
        el("td", { text: l.entries }),
        el("td", { text: l.seq }),
        el("td", { text: l.description }))));
    } catch (e) {
      status("list-status", e.message, true);
    }
  }

  async function openList(name) {
    state.list = name;
    state.lastEntry = 0;
    $("list-name").textContent = name;
    const owner = listOwner(name);
    $("list-owner").hidden = !isPartner(owner);
    $("list-owner").textContent = isPartner(owner) ? t("lists.partner_list", { agency: agencyText(owner) }) : "";
    $("list-view").hidden = false;
    $("entries").querySelector("tbody").replaceChildren();
    await moreEntries();
  }

  async function moreEntries() {
    const q = new URLSearchParams({ after: state.lastEntry });
    if ($("entry-plate").value.trim()) q.set("plate", $("entry-plate").value.trim());
    try {
      const res = await api(`/api/watchlists/${encodeURIComponent(state.list)}/entries?${q}`);
      // a partner's list is theirs to change (the server refuses us with 403 besides)
      const admin = state.me.user.role === "admin" && !isPartner(listOwner(state.list));
      const rows = res.entries.map((e) => el("tr", { class: e.active ? "" : "expired", "data-entry": e.id },
        el("td", { text: e.id }), el("td", { text: e.plate }), el("td", { text: e.country }),
        el("td", { text: e.category }), el("td", { text: e.priority }), el("td", { text: e.reason }),
        el("td", { text: e.agency }), el("td", { text: e.valid_until || "" }), el("td", { text: e.added_by }),
        el("td", {}, admin && e.active ? el("button", { type: "button", class: "expire", text: t("lists.expire"), onclick: () => expire(e) }) : (e.active ? "" : t("lists.expired")))));
      $("entries").querySelector("tbody").append(...rows);
      if (res.entries.length) state.lastEntry = res.entries[res.entries.length - 1].id;
      $("entries-more").hidden = res.entries.length < 200;
    } catch (e) {
      status("list-status", e.message, true);
    }
  }

  // The agency owning list `name`: as the lists say, or a partner's by its name
  // ("pl-sg.stolen-pl"); "" for a list not there yet (ours when made).
  function listOwner(name) {
    const l = (state.lists || []).find((x) => x.name === name);
    if (l) return l.agency || "";
    const prefix = name.includes(".") ? name.slice(0, name.indexOf(".")) : "";
    return prefix && state.me && state.me.agencies && state.me.agencies[prefix] ? prefix : "";
  }

  // The add and import forms refuse a partner's list before the server does.
  function checkListForms() {
    const refused = [];
    for (const [input, form] of [["add-list", "add-form"], ["import-list", "import-form"]]) {
      const name = $(input).value.trim();
      const owner = listOwner(name);
      const why = isPartner(owner) ? t("lists.not_yours", { list: name, agency: agencyText(owner) }) : "";
      $(form).querySelector('button[type="submit"]').disabled = !!why;
      $(input).setAttribute("aria-invalid", why ? "true" : "false");
      $(input).title = why;
      if (why && !refused.includes(why)) refused.push(why);
    }
    if (refused.length) status("list-status", refused.join("\n"), true);
    else if (state.formsRefused) status("list-status", "");
    state.formsRefused = refused.length > 0;
  }

  async function expire(e) {
    if (!confirm(t("lists.confirm_expire", { id: e.id, plate: e.plate, list: e.list }))) return;
    try {
      await api(`/api/entries/${e.id}/expire`, { json: {} });
      status("list-status", t("lists.expired_status", { id: e.id, plate: e.plate }));
      await openList(state.list);
    } catch (err) {
      status("list-status", err.message, true);
    }
  }

  async function addEntry(ev) {
    ev.preventDefault();
    const list = $("add-list").value.trim();
    const until = $("add-until").value;
    const body = {
      plate: $("add-plate").value, country: $("add-country").value, category: $("add-category").value,
      priority: $("add-priority").value, agency: $("add-agency").value, reason: $("add-reason").value,
      valid_until: until || "",
    };
    try {
      const res = await api(`/api/watchlists/${encodeURIComponent(list)}/entries`, { json: body });
      status("list-status", t("lists.added", { id: res.id, plate: res.plate, list: res.list }));
      $("add-plate").value = "";
      await loadLists();
      await openList(list);
    } catch (e) {
      status("list-status", e.message, true);
    }
  }

  function toBase64(buffer) {
    const bytes = new Uint8Array(buffer);
    const parts = [];
    for (let i = 0; i < bytes.length; i += 0x8000) {
      parts.push(String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000)));
    }
    return btoa(parts.join(""));
  }

  async function importList(ev) {
    ev.preventDefault();
    const file = $("import-file").files[0];
    const list = $("import-list").value.trim();
    if (!file || !list) return;
    const format = /\.(jsonl|ndjson|json)$/i.test(file.name) ? "jsonl" : "csv";
    const limit = state.me && state.me.max_import_bytes;
    if (limit && Math.ceil(file.size / 3) * 4 + 4096 > limit) { // sent as base64 in JSON
      status("list-status", t("lists.too_big", { file: file.name, mib: Math.floor((limit - 4096) * 3 / 4 / 1048576) }), true);
      return;
    }
    try {
      // The file's own bytes: the collector decodes them as the chosen encoding, or says
      // they are not in it (file.text() would turn what is not UTF-8 into U+FFFD unseen).
      const data = toBase64(await file.arrayBuffer());
      const r = await api(`/api/watchlists/${encodeURIComponent(list)}/import`, {
        json: { data, encoding: $("import-encoding").value, format, filename: file.name,
                agency: $("import-agency").value, replace: $("import-replace").checked },
      });
      status("list-status", t("lists.imported", { file: file.name, list: r.list, added: r.added, changed: r.changed, unchanged: r.unchanged, removed: r.removed }));
      await loadLists();
      await openList(list);
    } catch (e) {
      const problems = (e.body && e.body.problems) || [];
      status("list-status", [e.message, ...problems.map((p) => t("lists.problem", { line: p.line, message: (p.field ? p.field + ": " : "") + p.message }))].join("\n"), true);
    }
  }

  // ------------------------------------------------------------------ audit

  async function loadAudit(fresh) {
    if (fresh) {
      state.auditBefore = null;
      $("audit-list").querySelector("tbody").replaceChildren();
    }
    const q = state.auditBefore ? `?before=${state.auditBefore}` : "";
    try {
      const res = await api(`/api/audit${q}`);
      $("audit-list").querySelector("tbody").append(...res.audit.map((a) => el("tr", {},
        el("td", { title: a.at, text: when(a.at) }), el("td", { text: a.user }),
        el("td", { title: agencyName(a.agency), "data-agency": a.agency || "", text: a.agency || "" }), el("td", { text: a.action }),
        el("td", { text: a.detail }), el("td", { text: a.address || "" }))));
      if (res.audit.length) state.auditBefore = res.audit[res.audit.length - 1].id;
      $("audit-more").hidden = res.audit.length < 200;
    } catch (e) { /* shown as empty */ }
  }

  // ------------------------------------------------------------------ start

  function languages() {
    const sel = $("language");
    sel.replaceChildren(...state.me.languages.map((l) => el("option", { value: l, text: i18n.NAMES[l] || l })));
    sel.value = i18n.lang;
    sel.addEventListener("change", async () => {
      try {
        await api("/api/me/language", { json: { language: sel.value } });
      } finally {
        window.location.reload(); // every text drawn again in the new language
      }
    });
  }

  async function main() {
    state.me = await api("/api/me");
    await i18n.load(state.me.user.language);
    i18n.apply();
    $("link-state").textContent = t("link.connecting");
    languages();
    $("whoami").textContent = t("session.whoami", { name: state.me.user.display_name, role: state.me.user.role });
    $("my-agency").textContent = t("session.agency", { agency: agencyText(myAgency()) });
    $("my-agency").dataset.agency = myAgency();
    $("my-agency").title = agencyName(myAgency()) || myAgency();
    if (state.me.user.role === "admin") {
      for (const n of document.querySelectorAll(".admin-only")) n.hidden = false;
    }
    setUpTrace();
    showMute();
    showNotify();
    $("notify").addEventListener("click", () => {
      if ("Notification" in window) Notification.requestPermission().then(showNotify, showNotify);
    });
    $("mute").addEventListener("click", () => {
      state.muted = !state.muted;
      localStorage.setItem("anpr-muted", state.muted ? "1" : "0");
      showMute();
    });
    document.addEventListener("click", () => {
      if (state.audio && state.audio.state === "suspended") state.audio.resume();
      $("sound-hint").hidden = true;
    });
    $("logout").addEventListener("click", async () => {
      try { await api("/api/logout", { json: {} }); } finally { window.location.assign("/login"); }
    });
    $("search-form").addEventListener("submit", (ev) => { ev.preventDefault(); runSearch(); });
    $("map-fit").addEventListener("click", () => {
      state.mapWhole = !state.mapWhole;
      $("map-fit").textContent = state.mapWhole ? t("map.around") : t("map.whole");
      state.fitAsked = true;
      drawMap();
    });
    $("entry-filter").addEventListener("submit", (ev) => { ev.preventDefault(); if (state.list) openList(state.list); });
    $("entries-more").addEventListener("click", moreEntries);
    $("add-form").addEventListener("submit", addEntry);
    $("add-list").addEventListener("input", checkListForms);
    $("import-list").addEventListener("input", checkListForms);
    $("import-form").addEventListener("submit", importList);
    $("audit-more").addEventListener("click", () => loadAudit(false));
    window.addEventListener("hashchange", route);
    await loadBoard();
    listen();
    route();
    setInterval(() => { if (!$("cameras").hidden) loadCameras(); }, 10000);
    setInterval(refreshTimes, 30000); // "seen 2 min ago" moves on
    document.body.dataset.ready = "1";
  }

  main().catch((e) => { if (e.message !== "signed out") console.error(e); });
})();
