// framecast dashboard: polls GET v1/sessions every second, shows counters, rates, events, previews
// and audio levels. Vanilla JS, no dependencies; every request goes to this server only.
"use strict";

(() => {
  const POLL_MS = 1000; // session list
  const PREVIEW_MS = 500; // preview images (the server makes a new one at most twice a second)
  const REQUEST_TIMEOUT_MS = 5000;
  const RATE_WINDOW_MS = 5000; // rates are averaged over the polls of the last few seconds
  const SHOWN_EVENTS = 5;
  const FLOOR_DB = -90; // the server's level for silence
  const KEY_STORAGE = "framecast.apiKey";
  const HIDE_STORAGE = "framecast.hideFinished";
  const DONE = new Set(["closed", "failed"]);
  const COUNTERS = ["chunks", "frames", "packets", "bytes", "errors", "dropped"];

  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $("status"), summary: $("summary"), banner: $("banner"), sessions: $("sessions"), empty: $("empty"),
    keyForm: $("key-form"), keyInput: $("api-key"), keyError: $("key-error"), forgetKey: $("forget-key"),
    hideFinished: $("hide-finished"), template: $("session-template"),
  };

  // Web storage may be missing or refuse access (privacy settings): then nothing is remembered.
  const store = {
    get(area, name) {
      try { return window[area].getItem(name) || ""; } catch { return ""; }
    },
    set(area, name, value) {
      try { if (value) window[area].setItem(name, value); else window[area].removeItem(name); } catch { /* ignore */ }
    },
  };

  const state = {
    key: store.get("sessionStorage", KEY_STORAGE),
    waitingForKey: false,
    lastContact: 0,
    pollTimer: 0,
    views: new Map(), // session id -> view (DOM references, rate history, previews)
  };

  class Unauthorized extends Error {}

  // -- requests ------------------------------------------------------------------------------

  async function request(path) {
    const headers = new Headers({ Accept: "application/json" });
    if (state.key) headers.set("Authorization", `Bearer ${state.key}`);
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
    try {
      const response = await fetch(path, { headers, cache: "no-store", signal: abort.signal });
      if (response.status === 401) throw new Unauthorized();
      return response;
    } finally {
      clearTimeout(timer);
    }
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      return (body && body.error && body.error.message) || response.statusText;
    } catch {
      return response.statusText || "unexpected answer";
    }
  }

  // -- status, banner, API key -----------------------------------------------------------------

  function setStatus(kind, text) {
    ui.status.dataset.status = kind;
    ui.status.textContent = text;
  }

  function showBanner(text) {
    ui.banner.textContent = text;
    ui.banner.hidden = false;
  }

  function hideBanner() {
    ui.banner.hidden = true;
    ui.banner.textContent = "";
  }

  function askForKey() {
    if (state.waitingForKey) return;
    state.waitingForKey = true;
    clearTimeout(state.pollTimer);
    const rejected = Boolean(state.key);
    state.key = "";
    store.set("sessionStorage", KEY_STORAGE, "");
    ui.forgetKey.hidden = true;
    setStatus("locked", "API key needed");
    hideBanner();
    ui.keyError.hidden = !rejected;
    ui.keyError.textContent = rejected ? "The server did not accept that key." : "";
    ui.keyForm.hidden = false;
    ui.sessions.hidden = true;
    ui.empty.hidden = true;
    ui.keyInput.focus();
  }

  function useKey(key) {
    state.key = key;
    store.set("sessionStorage", KEY_STORAGE, key);
    ui.forgetKey.hidden = !key;
    state.waitingForKey = false;
    ui.keyForm.hidden = true;
    ui.sessions.hidden = false;
    poll();
  }

  ui.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = ui.keyInput.value.trim();
    if (!key) return;
    ui.keyInput.value = "";
    useKey(key);
  });

  ui.forgetKey.addEventListener("click", () => {
    useKey("");
  });

  ui.hideFinished.checked = store.get("localStorage", HIDE_STORAGE) === "1";
  ui.hideFinished.addEventListener("change", () => {
    store.set("localStorage", HIDE_STORAGE, ui.hideFinished.checked ? "1" : "");
    for (const view of state.views.values()) applyVisibility(view);
    updateEmpty();
  });

  // -- polling -------------------------------------------------------------------------------

  async function poll() {
    clearTimeout(state.pollTimer);
    if (state.waitingForKey) return;
    let sessions = null;
    try {
      const response = await request("v1/sessions");
      if (!response.ok) {
        setStatus("error", `error ${response.status}`);
        showBanner(`The server answered ${response.status}: ${await errorText(response)}. Retrying every second.`);
      } else {
        try {
          sessions = await response.json();
        } catch {
          setStatus("error", "bad answer");
          showBanner("The server's answer to v1/sessions was not JSON (a proxy in between?). Retrying every second.");
        }
      }
    } catch (err) {
      if (err instanceof Unauthorized) {
        askForKey();
        return;
      }
      setStatus("down", "unreachable");
      ui.sessions.classList.add("stale"); // what is shown is as of the last contact
      const last = state.lastContact ? ` Last contact at ${clock(state.lastContact / 1000)}.` : "";
      showBanner(`Cannot reach the framecast server at ${location.host}; retrying every second.${last}`);
    }
    if (sessions) {
      state.lastContact = Date.now();
      hideBanner();
      ui.sessions.classList.remove("stale");
      setStatus("ok", "live");
      try {
        render(sessions);
      } catch (err) {
        showBanner(`The dashboard could not show the sessions: ${err}`);
        console.error(err);
      }
    }
    if (!state.waitingForKey) state.pollTimer = setTimeout(poll, POLL_MS);
  }

  // -- rendering -----------------------------------------------------------------------------

  function render(sessions) {
    const now = performance.now();
    const order = [...sessions].sort(
      (a, b) => Number(DONE.has(a.state)) - Number(DONE.has(b.state)) || b.created_at - a.created_at,
    );
    const seen = new Set();
    for (const info of order) {
      seen.add(info.id);
      let view = state.views.get(info.id);
      if (!view) {
        view = createView(info);
        state.views.set(info.id, view);
      }
      updateView(view, info, now);
    }
    for (const [id, view] of state.views) {
      if (!seen.has(id)) {
        dropView(view);
        state.views.delete(id);
      }
    }
    // Put the cards in order, moving only those out of place (a moved <img> keeps its picture).
    let cursor = ui.sessions.firstElementChild;
    for (const info of order) {
      const el = state.views.get(info.id).el;
      if (el === cursor) cursor = cursor.nextElementSibling;
      else ui.sessions.insertBefore(el, cursor);
    }
    const active = sessions.filter((s) => !DONE.has(s.state)).length;
    ui.summary.textContent = `${active} active · ${sessions.length} total`;
    updateEmpty();
  }

  function updateEmpty() {
    const visible = [...state.views.values()].some((v) => !v.el.hidden);
    ui.empty.hidden = state.waitingForKey || visible;
    if (!visible && state.views.size) ui.empty.textContent = "Every session has finished (hidden).";
    else ui.empty.textContent = "No sessions yet. Open one with the SDK or POST /v1/sessions.";
  }

  function createView(info) {
    const el = ui.template.content.firstElementChild.cloneNode(true);
    el.dataset.sessionId = info.id;
    const fields = {};
    for (const node of el.querySelectorAll("[data-field]")) fields[node.dataset.field] = node;
    fields.id.textContent = info.id;
    fields.id.title = "session id";
    return { id: info.id, el, fields, rows: new Map(), tiles: new Map(), history: new Map(), done: false, player: null };
  }

  function dropView(view) {
    stopPlayer(view);
    for (const tile of view.tiles.values()) {
      if (tile.url) URL.revokeObjectURL(tile.url);
    }
    view.el.remove();
  }

  function applyVisibility(view) {
    view.el.hidden = view.done && ui.hideFinished.checked;
  }

  function updateView(view, info, now) {
    const f = view.fields;
    view.done = DONE.has(info.state);
    view.info = info;
    view.el.dataset.state = info.state;
    view.el.classList.toggle("done", view.done);
    applyVisibility(view);

    f.state.textContent = info.state;
    f.state.dataset.state = info.state;
    setText(f.destination, describeDestination(info.destination));
    f.destination.title = "destination";
    setText(f.format, info.format);
    f.format.title = "muxer";
    if (info.destination_connected === null || info.destination_connected === undefined) {
      f.connected.hidden = true;
    } else {
      f.connected.hidden = false;
      setText(f.connected, info.destination_connected ? "connected" : "disconnected");
      f.connected.dataset.connected = String(info.destination_connected);
    }
    setText(f.reconnects, String(info.reconnects || 0));
    // The output's size once known (a server file's is read at close); meanwhile what the encoders
    // have written, as the stream table counts it, so the header never says less than the table.
    const written = info.streams.reduce((sum, s) => sum + ((s.counters || {}).bytes || 0), 0);
    const out = Math.max(info.output_bytes || 0, written);
    setText(f.output_bytes, bytes(out));
    f.output_bytes.dataset.value = String(out);
    setText(f.age, view.done ? `started ${clock(info.created_at)}` : `up ${duration(Date.now() / 1000 - info.created_at)}`);
    f.age.title = new Date(info.created_at * 1000).toLocaleString();

    f.error.hidden = !info.error;
    setText(f.error, info.error || "");
    updateList(f.warnings, info.warnings || [], (w) => w);
    f.warnings.hidden = !(info.warnings || []).length;

    // Several destinations: one line each (a single one is the header's).
    const outputs = info.outputs || [];
    updateList(f.outputs, outputs.length > 1 ? outputs : [], describeOutput);
    f.outputs.hidden = outputs.length < 2;

    for (const stream of info.streams) updateStreamRow(view, stream, now);
    updateLive(view, info);
    const events = (info.events || []).slice(-SHOWN_EVENTS).reverse();
    updateList(f.events, events, describeEvent);
    f.events.hidden = !events.length;
  }

  function updateStreamRow(view, stream, now) {
    let row = view.rows.get(stream.index);
    if (!row) {
      const tr = document.createElement("tr");
      tr.dataset.stream = String(stream.index);
      tr.dataset.type = stream.type;
      const cells = {};
      for (const name of ["index", "type", "encoder", "rate", ...COUNTERS]) {
        const td = document.createElement("td");
        if (COUNTERS.includes(name)) td.dataset.counter = name;
        if (name === "rate") td.dataset.rate = "";
        if (name === "rate" || COUNTERS.includes(name)) td.className = "num";
        cells[name] = td;
        tr.append(td);
      }
      cells.index.textContent = String(stream.index);
      cells.type.textContent = stream.type;
      cells.frames.title = stream.type === "audio" ? "samples in" : "frames in";
      view.el.querySelector("tbody").append(tr);
      row = { tr, cells };
      view.rows.set(stream.index, row);
    }
    const c = stream.counters;
    row.cells.encoder.textContent = `${stream.encoder} (${stream.encoder_format})`;
    for (const name of COUNTERS) {
      const value = c[name] || 0;
      const cell = row.cells[name];
      cell.dataset.value = String(value);
      setText(cell, name === "bytes" ? bytes(value) : count(value));
      if (name === "errors" || name === "dropped") cell.classList.toggle("bad", value > 0);
    }
    // Rate: the frames (samples) counter's growth over the polls of the last few seconds.
    const history = view.history.get(stream.index) || [];
    history.push({ t: now, v: c.frames || 0 });
    while (history.length > 2 && now - history[1].t >= RATE_WINDOW_MS) history.shift();
    view.history.set(stream.index, history);
    const rateCell = row.cells.rate;
    if (view.done) {
      rateCell.dataset.rate = "0";
      setText(rateCell, "–");
    } else if (history.length < 2) {
      setText(rateCell, "…");
    } else {
      const first = history[0];
      const last = history[history.length - 1];
      const rate = ((last.v - first.v) * 1000) / Math.max(1, last.t - first.t);
      rateCell.dataset.rate = rate.toFixed(2);
      setText(rateCell, stream.type === "audio" ? `${si(rate)} samples/s` : `${rate.toFixed(1)} fps`);
    }
  }

  // -- live: previews and meters ---------------------------------------------------------------

  function updateLive(view, info) {
    updatePlayer(view, info);
    const previews = new Set(info.preview_streams || []);
    const levels = info.audio_levels || {};
    for (const stream of info.streams) {
      let tile = view.tiles.get(stream.index);
      if (!tile) {
        tile = stream.type === "video" ? videoTile(stream) : audioTile(stream);
        view.tiles.set(stream.index, tile);
        view.fields.live.append(tile.el);
      }
      if (stream.type === "video") {
        tile.available = previews.has(stream.index);
        // A finished session that never showed a frame has none to show: say so, no empty box.
        const none = view.done && !tile.loaded && (!tile.available || tile.failures >= 3);
        tile.el.classList.toggle("waiting", !tile.loaded && !none);
        tile.el.classList.toggle("none", none);
      } else {
        const dbs = view.done ? [] : levels[String(stream.index)] || [];
        updateMeter(tile, dbs);
      }
    }
    view.fields.live.hidden = !info.streams.length;
  }

  // -- the player: a session with an HLS output plays in the page (hls.js, vendored) ----------------

  /** The playlist's path on this server, relative to the page (the dashboard may sit under a prefix). */
  function playlistPath(info) {
    const url = info.playback_url || "";
    const at = url.indexOf("/v1/sessions/");
    return at >= 0 && url.endsWith(".m3u8") ? url.slice(at + 1) : "";
  }

  function updatePlayer(view, info) {
    const path = playlistPath(info);
    if (view.player && (view.done || !path)) {
      stopPlayer(view);
      return;
    }
    if (view.player || view.done || !path || !window.Hls || !window.Hls.isSupported()) return;
    const el = document.createElement("figure");
    el.className = "tile player waiting";
    el.dataset.player = "hls";
    const video = document.createElement("video");
    video.muted = true; // autoplay is allowed muted; the viewer unmutes with the controls
    video.autoplay = true;
    video.playsInline = true;
    video.controls = true;
    video.dataset.playbackUrl = path;
    const caption = document.createElement("figcaption");
    caption.textContent = `live · HLS · ${path.split("/").pop()}`;
    el.append(video, caption);
    view.fields.live.prepend(el);
    const hls = new window.Hls({
      enableWorker: false, // the page's policy allows no workers
      liveSyncDurationCount: 2,
      xhrSetup: (xhr) => {
        if (state.key) xhr.setRequestHeader("Authorization", `Bearer ${state.key}`);
      },
    });
    hls.on(window.Hls.Events.MANIFEST_PARSED, () => {
      video.play().catch(() => { /* the controls start it */ });
    });
    hls.on(window.Hls.Events.ERROR, (_event, data) => {
      if (!data.fatal) return;
      // A playlist that is not there yet (the first segment is being written), or a stall: retry.
      if (data.type === window.Hls.ErrorTypes.NETWORK_ERROR) {
        setTimeout(() => { if (view.player && view.player.hls === hls) hls.loadSource(path); }, 1000);
      }
      else if (data.type === window.Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
    });
    video.addEventListener("playing", () => el.classList.remove("waiting"));
    hls.loadSource(path);
    hls.attachMedia(video);
    view.player = { el, video, hls };
  }

  function stopPlayer(view) {
    const player = view.player;
    if (!player) return;
    view.player = null;
    player.hls.destroy();
    player.el.remove();
  }

  function videoTile(stream) {
    const el = document.createElement("figure");
    el.className = "tile video waiting";
    el.dataset.videoStream = String(stream.index);
    const img = document.createElement("img");
    img.dataset.previewStream = String(stream.index);
    // No alt text until a frame is there: an <img> without a picture would draw its alt text over
    // the caption. The figure carries the label instead.
    img.alt = "";
    el.setAttribute("aria-label", `preview of stream ${stream.index}`);
    const cfg = stream.config || {};
    const w = cfg.encoder_width || cfg.width;
    const h = cfg.encoder_height || cfg.height;
    if (w && h) {
      img.width = Math.min(320, w);
      img.height = Math.round((img.width * h) / w);
    }
    const caption = document.createElement("figcaption");
    const rate = cfg.frame_rate ? ` · ${fraction(cfg.frame_rate)} fps` : "";
    caption.textContent = `#${stream.index} video · ${w}×${h}${rate}`;
    el.append(img, caption);
    return { el, img, index: stream.index, url: "", loaded: 0, failures: 0, inflight: false, available: false };
  }

  function audioTile(stream) {
    const el = document.createElement("div");
    el.className = "tile audio";
    el.dataset.audioStream = String(stream.index);
    const cfg = stream.config || {};
    const label = document.createElement("div");
    label.className = "tile-label";
    const rate = cfg.sample_rate ? ` · ${cfg.sample_rate / 1000} kHz` : "";
    label.textContent = `#${stream.index} audio${rate} · ${cfg.num_channels || "?"} ch`;
    const meters = document.createElement("div");
    meters.className = "meters";
    el.append(meters, label);
    const tile = { el, meters, channels: [] };
    updateMeter(tile, new Array(cfg.num_channels || 1).fill(FLOOR_DB));
    return tile;
  }

  function updateMeter(tile, dbs) {
    const n = Math.max(dbs.length, tile.channels.length, 1);
    while (tile.channels.length < n) {
      const i = tile.channels.length;
      const el = document.createElement("div");
      el.className = "meter";
      el.dataset.channel = String(i);
      el.setAttribute("role", "meter");
      el.setAttribute("aria-valuemin", String(FLOOR_DB));
      el.setAttribute("aria-valuemax", "0");
      const cover = document.createElement("div");
      cover.className = "meter-cover";
      const text = document.createElement("span");
      text.className = "meter-db";
      el.append(cover, text);
      tile.meters.append(el);
      tile.channels.push({ el, cover, text });
    }
    tile.channels.forEach((ch, i) => {
      const db = Number.isFinite(dbs[i]) ? Math.max(FLOOR_DB, Math.min(0, dbs[i])) : FLOOR_DB;
      const fill = (db - FLOOR_DB) / -FLOOR_DB; // 0..1
      ch.el.dataset.db = db.toFixed(1);
      ch.el.setAttribute("aria-valuenow", db.toFixed(1));
      ch.el.setAttribute("aria-label", `channel ${i + 1}`);
      ch.el.title = `channel ${i + 1}: ${db <= FLOOR_DB ? "silent" : `${db.toFixed(1)} dBFS`}`;
      ch.cover.style.width = `${((1 - fill) * 100).toFixed(2)}%`;
      setText(ch.text, db <= FLOOR_DB ? "−∞" : db.toFixed(0));
    });
  }

  async function refreshPreview(view, tile) {
    tile.inflight = true;
    try {
      const path = `v1/sessions/${encodeURIComponent(view.id)}/preview?stream=${tile.index}`;
      const response = await request(path);
      if (!response.ok) {
        tile.failures += 1; // no frame yet, or the session went away: try again later
        return;
      }
      const blob = await response.blob();
      if (!state.views.has(view.id)) return;
      const url = URL.createObjectURL(blob);
      const old = tile.url;
      tile.url = url;
      tile.img.src = url;
      try { await tile.img.decode(); } catch { /* a broken frame: the next one replaces it */ }
      if (old) URL.revokeObjectURL(old);
      tile.img.alt = `preview of stream ${tile.index}`;
      tile.loaded += 1;
      tile.failures = 0;
      tile.img.dataset.loads = String(tile.loaded);
      tile.el.classList.remove("waiting");
    } catch (err) {
      if (err instanceof Unauthorized) askForKey();
    } finally {
      tile.inflight = false;
    }
  }

  function refreshPreviews() {
    if (!document.hidden && !state.waitingForKey) {
      for (const view of state.views.values()) {
        if (view.el.hidden) continue;
        for (const tile of view.tiles.values()) {
          // Finished sessions: fetch their last frame once (giving up after a few failures).
          const wanted = view.done ? !tile.loaded && tile.failures < 3 : true;
          if (tile.img && tile.available && !tile.inflight && wanted) {
            refreshPreview(view, tile);
          }
        }
      }
    }
    setTimeout(refreshPreviews, PREVIEW_MS);
  }

  // -- formatting ----------------------------------------------------------------------------

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function updateList(list, items, describe) {
    const texts = items.map(describe);
    if (list.dataset.rendered === JSON.stringify(texts)) return;
    list.dataset.rendered = JSON.stringify(texts);
    list.replaceChildren(
      ...texts.map((t) => {
        const li = document.createElement("li");
        li.textContent = t;
        return li;
      }),
    );
  }

  function describeDestination(d) {
    if (!d) return "";
    const extras = Object.entries(d)
      .filter(([k]) => k !== "type")
      .map(([k, v]) => (typeof v === "boolean" ? (v ? k : `no ${k}`) : String(v)));
    return extras.length ? `${d.type}: ${extras.join(", ")}` : String(d.type);
  }

  function describeOutput(o) {
    const c = o.counters || {};
    const parts = [
      `#${o.index} ${o.state}`,
      describeDestination(o.destination),
      o.format,
      `${bytes(c.bytes || 0)} in ${count(c.packets || 0)} packets`,
    ];
    if (c.dropped) parts.push(`${count(c.dropped)} dropped`);
    if (c.reconnects) parts.push(`${count(c.reconnects)} reconnects`);
    if (o.required) parts.push("required");
    if (o.error) parts.push(o.error);
    return parts.join(" · ");
  }

  function describeEvent(e) {
    const fields = Object.entries(e)
      .filter(([k]) => k !== "time" && k !== "event")
      .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`);
    const when = e.time ? `${clock(e.time)} ` : "";
    return `${when}${e.event}${fields.length ? ` ${fields.join(" ")}` : ""}`;
  }

  function clock(seconds) {
    return new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });
  }

  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const pad = (x) => String(x).padStart(2, "0");
    return h ? `${h}h ${pad(m)}m` : m ? `${m}m ${pad(s % 60)}s` : `${s}s`;
  }

  function count(n) {
    return n.toLocaleString("en-US");
  }

  function si(n) {
    if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
    if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
    return n.toFixed(n >= 100 ? 0 : 1);
  }

  function bytes(n) {
    const units = ["B", "kB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) {
      n /= 1000;
      i += 1;
    }
    return i ? `${n.toFixed(n >= 100 ? 0 : 1)} ${units[i]}` : `${n} B`;
  }

  function fraction(value) {
    const [num, den] = String(value).split("/").map(Number);
    const r = den ? num / den : num;
    return Number.isInteger(r) ? String(r) : r.toFixed(2);
  }

  // -- start ---------------------------------------------------------------------------------

  ui.forgetKey.hidden = !state.key;
  poll();
  refreshPreviews();
})();
