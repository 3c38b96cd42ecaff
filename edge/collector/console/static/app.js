// The operators' console: live hits (server-sent events), search and export, cameras on a
// map drawn offline, watchlists, audit trail.  Plain JavaScript, no build step.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const state = {
    me: null,
    hits: new Map(), // hit_id -> hit (the live board)
    cards: new Map(), // hit_id -> {key, node}: its card as last drawn
    cameras: [],
    region: null,
    mapWhole: false,
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

  function svg(tag, attrs) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
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
    return isNaN(d) ? iso : d.toLocaleString();
  }

  function ago(iso) {
    if (!iso) return "never";
    const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
    if (s < 90) return `${Math.max(s, 0)} s ago`;
    if (s < 5400) return `${Math.round(s / 60)} min ago`;
    if (s < 172800) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  }

  function matchText(h) {
    // a hit on another reading of the plate (another format's) says which
    const on = h.reading ? ` on the other reading ${h.reading}` : "";
    const kind = h.match_kind || "exact";
    if (kind === "fuzzy") return `fuzzy at distance ${h.match_distance || 0}${on}`;
    if (kind === "wildcard") return `wildcard ${h.entry_plate || ""}`.trim() + on;
    if (kind === "exact") return `exact${on}`;
    return kind + on;
  }

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
    b.textContent = state.muted ? "Sound off" : "Sound on";
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
    const card = el("article", {
      class: `hit ${level(h.priority)}${open ? " open" : ""}`,
      "data-hit": h.hit_id,
      "data-plate": h.plate_text,
    });
    const crop = el("img", { class: "crop", alt: `plate ${plateText(h)}`,
                             src: h.crop_bytes ? `/api/hits/${h.hit_id}/crop.jpg?r=${h.revision || 0}` : null });
    const scene = el("img", { class: "scene", alt: "scene", title: "show the scene larger",
                              src: h.scene_bytes ? `/api/hits/${h.hit_id}/scene.jpg?r=${h.revision || 0}` : null,
                              onclick: () => { $("scene-big").src = scene.src; $("scene-dialog").showModal(); } });
    card.append(
      el("div", { class: "pictures" }, h.crop_bytes ? crop : el("div", { class: "nopic", text: "no crop" }),
         h.scene_bytes ? scene : el("div", { class: "nopic", text: "no scene" })),
      el("div", { class: "facts" },
        el("div", { class: "headline" },
          el("span", { class: "prio", text: `P${h.priority}` }),
          el("span", { class: "plate", text: plateText(h) }),
          el("span", { class: "country", text: h.country || "" })),
        el("div", { class: "why" },
          el("b", { text: h.watchlist }), " \u2014 ", h.reason || "(no reason given)",
          h.agency ? el("span", { class: "agency", text: ` \u00b7 ${h.agency}` }) : null),
        el("div", { class: "match", text: `match: ${matchText(h)}` +
           (h.entry_plate && h.entry_plate !== h.plate_text && h.match_kind !== "wildcard" ? ` (listed ${h.entry_plate})` : "") }),
        vehicleText(h) ? el("div", { class: "vehicle", text: `vehicle: ${vehicleText(h)}` }) : null,
        el("div", { class: "where" },
          el("a", { href: `#search?camera=${encodeURIComponent(h.node + "/" + h.camera)}`,
                    text: `${h.node}/${h.camera}` }), where ? ` \u00b7 ${where}` : ""),
        el("div", { class: "time", title: h.seen_at, text: `seen ${when(h.seen_at)} (${ago(h.seen_at)})` }),
      ),
    );
    const ackBox = el("div", { class: "ack" });
    if (last) {
      ackBox.append(el("div", { class: "acked" },
        `Acknowledged by ${last.display_name} at ${when(last.at)}`,
        last.note ? el("span", { class: "note", text: `: ${last.note}` }) : null));
      if (h.acks.length > 1) {
        ackBox.append(el("div", { class: "fineprint", text:
          h.acks.slice(0, -1).map((a) => `${a.display_name} ${when(a.at)}${a.note ? ": " + a.note : ""}`).join("; ") }));
      }
    } else {
      const note = el("input", { class: "ack-note", placeholder: "note (optional)", maxlength: 1000 });
      const button = el("button", { class: "ack-button", type: "button", text: "Acknowledge" });
      button.addEventListener("click", async () => {
        button.disabled = true;
        try {
          const ack = await api(`/api/hits/${h.hit_id}/ack`, { json: { note: note.value } });
          addAck(ack);
        } catch (e) {
          button.disabled = false;
          alert(`Not acknowledged: ${e.message}`);
        }
      });
      ackBox.append(note, button);
    }
    card.append(ackBox);
    return card;
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
    document.title = open.length ? `(${open.length}) ANPR console` : "ANPR console";
  }

  function refreshTimes() {
    for (const h of state.hits.values()) {
      const c = state.cards.get(h.hit_id);
      const t = c && c.node.querySelector(".time");
      if (t) t.textContent = `seen ${when(h.seen_at)} (${ago(h.seen_at)})`;
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
      const flash = $("flash");
      flash.textContent = `P${h.priority} ${plateText(h)} ${h.country || ""} \u2014 ${h.watchlist}: ${h.reason || ""} (${h.node}/${h.camera})`;
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
      $("link-state").textContent = "live";
      $("link-state").className = "link-state up";
      loadBoard().catch(() => {}); // whatever came while the stream was down
    });
    source.addEventListener("hit", (ev) => addHit(JSON.parse(ev.data), true));
    source.addEventListener("ack", (ev) => addAck(JSON.parse(ev.data)));
    source.addEventListener("signed-out", () => window.location.assign("/login"));
    source.addEventListener("error", () => {
      $("link-state").textContent = "reconnecting";
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
      camSel.replaceChildren(el("option", { value: "", text: "any" }),
        ...cams.cameras.map((c) => el("option", { value: c.id, text: c.id })));
      setCameraFilter(keep);
      const listSel = $("q-list");
      const keepList = listSel.value;
      listSel.replaceChildren(el("option", { value: "", text: "any" }),
        ...lists.lists.map((l) => el("option", { value: l.name, text: l.name })));
      listSel.value = keepList;
    } catch (e) { /* the search works without them */ }
  }

  async function runSearch() {
    const q = searchQuery();
    $("export-csv").href = `/api/hits.csv?${q}`;
    $("export-csv-semicolon").href = `/api/hits.csv?${q}${q ? "&" : ""}sep=%3B`;
    $("export-json").href = `/api/hits.json?${q}`;
    status("search-status", "searching...");
    try {
      const res = await api(`/api/hits?${q}`);
      const rows = res.hits.map((h) => {
        const last = h.acks.length ? h.acks[h.acks.length - 1] : null;
        return el("tr", { class: level(h.priority), "data-hit": h.hit_id },
          el("td", { text: h.priority }),
          el("td", { title: h.seen_at, text: when(h.seen_at) }),
          el("td", { class: "plate-cell" }, h.crop_bytes ? el("img", { class: "mini", alt: "", src: `/api/hits/${h.hit_id}/crop.jpg` }) : null,
             `${plateText(h)} ${h.country || ""}`),
          el("td", { text: h.watchlist }),
          el("td", { text: h.reason }),
          el("td", { text: h.agency }),
          el("td", { text: matchText(h) }),
          el("td", { text: `${h.node}/${h.camera}` }),
          el("td", { text: last ? `${last.display_name} ${when(last.at)}${last.note ? ": " + last.note : ""}` : "no" }));
      });
      $("results").querySelector("tbody").replaceChildren(...rows);
      status("search-status", `${res.hits.length} hits${res.hits.length >= res.limit ? " (the first " + res.limit + "; narrow the search or export)" : ""}`);
    } catch (e) {
      status("search-status", e.message, true);
    }
  }

  // ------------------------------------------------------------------ cameras and the map

  // Web Mercator, in units of the whole world (0..1), as tile servers cut it.
  function project(lon, lat) {
    const s = Math.sin((Math.max(-85, Math.min(85, lat)) * Math.PI) / 180);
    return [(lon + 180) / 360, 0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI)];
  }

  function regionBounds() {
    let b = null;
    for (const f of (state.region && state.region.features) || []) {
      const g = f.geometry;
      const polys = g.type === "Polygon" ? [g.coordinates] : g.type === "MultiPolygon" ? g.coordinates : [];
      for (const poly of polys) for (const ring of poly) for (const [lon, lat] of ring) b = grow(b, lon, lat);
    }
    return b;
  }

  function grow(b, lon, lat) {
    if (!b) return [lon, lat, lon, lat];
    return [Math.min(b[0], lon), Math.min(b[1], lat), Math.max(b[2], lon), Math.max(b[3], lat)];
  }

  function drawMap() {
    const map = $("map");
    const W = 900, H = 560;
    const placed = state.cameras.filter((c) => c.lat !== null && c.lon !== null);
    let b = null;
    for (const c of placed) b = grow(b, c.lon, c.lat);
    const whole = regionBounds();
    if (!b || state.mapWhole) {
      b = whole && b ? [Math.min(b[0], whole[0]), Math.min(b[1], whole[1]), Math.max(b[2], whole[2]), Math.max(b[3], whole[3])] : (b || whole || [14, 36, 45, 60]);
    } else {
      // around the cameras, at least ~3 degrees across, so the borders near them show
      const cx = (b[0] + b[2]) / 2, cy = (b[1] + b[3]) / 2;
      const dx = Math.max(b[2] - b[0], 3) * 0.65, dy = Math.max(b[3] - b[1], 2) * 0.65;
      b = [cx - dx, cy - dy, cx + dx, cy + dy];
    }
    const [x0, y1] = project(b[0], b[1]);
    const [x1, y0] = project(b[2], b[3]);
    const scale = Math.min(W / (x1 - x0), H / (y1 - y0));
    const ox = (W - (x1 - x0) * scale) / 2 - x0 * scale;
    const oy = (H - (y1 - y0) * scale) / 2 - y0 * scale;
    const px = (lon, lat) => { const [x, y] = project(lon, lat); return [x * scale + ox, y * scale + oy]; };
    const layers = [svg("rect", { x: 0, y: 0, width: W, height: H, class: "sea" })];
    const tiles = state.me && state.me.map && state.me.map.tile_url;
    if (tiles) {
      const z = Math.max(0, Math.min(18, Math.round(Math.log2(scale / 256))));
      const n = 2 ** z;
      const size = scale / n;
      const tx0 = Math.floor(-ox / scale * n), tx1 = Math.floor((W - ox) / scale * n);
      const ty0 = Math.max(0, Math.floor(-oy / scale * n)), ty1 = Math.min(n - 1, Math.floor((H - oy) / scale * n));
      if ((tx1 - tx0 + 1) * (ty1 - ty0 + 1) <= 100) {
        for (let tx = tx0; tx <= tx1; tx++) {
          for (let ty = ty0; ty <= ty1; ty++) {
            const url = tiles.replace("{z}", z).replace("{x}", ((tx % n) + n) % n).replace("{y}", ty);
            layers.push(svg("image", { href: url, x: tx * size + ox, y: ty * size + oy, width: size + 0.5, height: size + 0.5 }));
          }
        }
      }
    }
    for (const f of (state.region && state.region.features) || []) {
      const g = f.geometry;
      const polys = g.type === "Polygon" ? [g.coordinates] : g.type === "MultiPolygon" ? g.coordinates : [];
      for (const poly of polys) {
        const d = poly.map((ring) => "M" + ring.map(([lon, lat]) => px(lon, lat).map((v) => v.toFixed(1)).join(",")).join("L") + "Z").join(" ");
        const path = svg("path", { d, class: tiles ? "land over-tiles" : "land" });
        const title = svg("title", {});
        title.textContent = (f.properties && f.properties.name) || "";
        path.append(title);
        layers.push(path);
      }
    }
    for (const c of placed) {
      const [x, y] = px(c.lon, c.lat);
      const a = svg("a", { href: `#search?camera=${encodeURIComponent(c.id)}`, class: "cam-link" });
      const dot = svg("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: 8, class: `cam ${c.health}`, "data-camera": c.id });
      const title = svg("title", {});
      title.textContent = `${c.id} ${c.label || c.road || ""} \u2014 ${c.health}${c.problems.length ? ": " + c.problems.join("; ") : ""}`;
      dot.append(title);
      const label = svg("text", { x: (x + 11).toFixed(1), y: (y + 4).toFixed(1), class: "cam-label" });
      label.textContent = c.camera;
      a.append(dot, label);
      layers.push(a);
    }
    map.replaceChildren(...layers);
    const unplaced = state.cameras.length - placed.length;
    $("map-note").textContent = (tiles ? (state.me.map.attribution || "") + " " : "") +
      "Outlines are approximate, for orientation only." +
      (unplaced ? ` ${unplaced} camera(s) have no position yet (none in their hits or the config).` : "");
  }

  async function loadCameras() {
    try {
      const [cams, region] = await Promise.all([
        api("/api/cameras"),
        state.region ? Promise.resolve(state.region) : api("/api/region"),
      ]);
      state.cameras = cams.cameras;
      state.region = region;
    } catch (e) {
      return;
    }
    drawMap();
    const rows = state.cameras.map((c) => el("tr", { "data-camera": c.id },
      el("td", { text: c.id }),
      el("td", { text: [c.label, c.road, c.direction].filter(Boolean).join(", ") + (c.lat !== null ? ` (${c.lat.toFixed(4)}, ${c.lon.toFixed(4)})` : "") }),
      el("td", {}, el("span", { class: `dot ${c.health}` }), ` ${c.health}`,
         c.problems.length ? el("div", { class: "fineprint", text: c.problems.join("; ") }) : null),
      el("td", { text: c.state ? `${c.state}${c.fps !== null && c.fps !== undefined ? " " + Number(c.fps).toFixed(1) + " fps" : ""}` : "" }),
      el("td", { title: c.last_seen || "", text: ago(c.last_seen) }),
      el("td", { title: c.last_hit_at || "", text: c.last_hit_at ? ago(c.last_hit_at) : "none" }),
      el("td", {}, el("a", { href: `#search?camera=${encodeURIComponent(c.id)}`, text: "recent hits" }))));
    $("camera-list").querySelector("tbody").replaceChildren(...rows);
  }

  // ------------------------------------------------------------------ watchlists

  async function loadLists() {
    try {
      const res = await api("/api/watchlists");
      $("lists").querySelector("tbody").replaceChildren(...res.lists.map((l) => el("tr", { "data-list": l.name },
        el("td", {}, el("a", { href: "#watchlists", text: l.name, onclick: (ev) => { ev.preventDefault(); openList(l.name); } })),
        el("td", { text: l.match === "exact" ? "exact" : `fuzzy \u2264 ${l.max_distance}` }),
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
    $("list-view").hidden = false;
    $("entries").querySelector("tbody").replaceChildren();
    await moreEntries();
  }

  async function moreEntries() {
    const q = new URLSearchParams({ after: state.lastEntry });
    if ($("entry-plate").value.trim()) q.set("plate", $("entry-plate").value.trim());
    try {
      const res = await api(`/api/watchlists/${encodeURIComponent(state.list)}/entries?${q}`);
      const admin = state.me.user.role === "admin";
      const rows = res.entries.map((e) => el("tr", { class: e.active ? "" : "expired", "data-entry": e.id },
        el("td", { text: e.id }), el("td", { text: e.plate }), el("td", { text: e.country }),
        el("td", { text: e.category }), el("td", { text: e.priority }), el("td", { text: e.reason }),
        el("td", { text: e.agency }), el("td", { text: e.valid_until || "" }), el("td", { text: e.added_by }),
        el("td", {}, admin && e.active ? el("button", { type: "button", class: "expire", text: "Expire", onclick: () => expire(e) }) : (e.active ? "" : "expired"))));
      $("entries").querySelector("tbody").append(...rows);
      if (res.entries.length) state.lastEntry = res.entries[res.entries.length - 1].id;
      $("entries-more").hidden = res.entries.length < 200;
    } catch (e) {
      status("list-status", e.message, true);
    }
  }

  async function expire(e) {
    if (!confirm(`End entry ${e.id} (${e.plate}) on ${e.list} now? The edges stop matching it.`)) return;
    try {
      await api(`/api/entries/${e.id}/expire`, { json: {} });
      status("list-status", `entry ${e.id} (${e.plate}) expired`);
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
      status("list-status", `entry ${res.id}: ${res.plate} added to ${res.list}`);
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
      status("list-status", `${file.name}: too big for the console (it takes files up to ` +
        `${Math.floor((limit - 4096) * 3 / 4 / 1048576)} MiB); import it with ` +
        "`anpr-collector watchlist import` on the collector", true);
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
      status("list-status", `${file.name}: list ${r.list}: ${r.added} added, ${r.changed} changed, ${r.unchanged} unchanged, ${r.removed} removed`);
      await loadLists();
      await openList(list);
    } catch (e) {
      const problems = (e.body && e.body.problems) || [];
      status("list-status", [e.message, ...problems.map((p) => `line ${p.line}${p.field ? " " + p.field : ""}: ${p.message}`)].join("\n"), true);
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
        el("td", { title: a.at, text: when(a.at) }), el("td", { text: a.user }), el("td", { text: a.action }),
        el("td", { text: a.detail }), el("td", { text: a.address || "" }))));
      if (res.audit.length) state.auditBefore = res.audit[res.audit.length - 1].id;
      $("audit-more").hidden = res.audit.length < 200;
    } catch (e) { /* shown as empty */ }
  }

  // ------------------------------------------------------------------ start

  async function main() {
    state.me = await api("/api/me");
    $("whoami").textContent = `${state.me.user.display_name} (${state.me.user.role})`;
    if (state.me.user.role === "admin") {
      for (const n of document.querySelectorAll(".admin-only")) n.hidden = false;
    }
    showMute();
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
      $("map-fit").textContent = state.mapWhole ? "Around the cameras" : "Whole region";
      drawMap();
    });
    $("entry-filter").addEventListener("submit", (ev) => { ev.preventDefault(); if (state.list) openList(state.list); });
    $("entries-more").addEventListener("click", moreEntries);
    $("add-form").addEventListener("submit", addEntry);
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
