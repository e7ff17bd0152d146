// The comparison page: fetches the next query, plays its clips in sync, sends answers.
// Plain browser JavaScript, no build step. Timings for bench/ui.py land in window.labelTimings.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token") || "";
const $ = (id) => document.getElementById(id);
const NAMES = ["A", "B", "C"];
const OUTCOME_TEXT = {
  left: "Left is better", right: "Right is better", equal: "About equal",
  cannot_tell: "Can't tell", skip: "Skipped", ranking: "Ranking saved",
};

const state = {
  mode: "pair", query: null, videos: [], playing: false, rate: 1, busy: false,
  shownAt: 0, ranking: [], ties: [], tieNext: false, csrf: "", lastLabel: null,
};
window.labelTimings = { ready: [], ack: [] };

async function api(path, options = {}, renewed = false) {
  const headers = { "Content-Type": "application/json", "X-CSRF-Token": state.csrf };
  if (token) headers["X-Annotator-Token"] = token;
  const response = await fetch(path, { ...options, headers });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : response.statusText;
    if (response.status === 403 && detail.startsWith("header 'X-CSRF-Token'") && !renewed) {
      await startSession();  // the session cookie was cleared or replaced: take a fresh one
      return api(path, options, true);
    }
    const error = new Error(detail);
    error.status = response.status;
    throw error;
  }
  return body;
}

async function startSession() {
  const session = await api("/api/session", {}, true);
  state.csrf = session.csrf_token;
  state.lastLabel = session.last_label;
  return session;
}

function setBusy(busy) {  // keys pressed meanwhile are refused visibly, not dropped silently
  state.busy = busy;
  document.body.classList.toggle("busy", busy);
  $("busy").hidden = !busy;
}

function refuseWhileBusy() {
  toast("Still saving the last answer — one moment", "wait");
}

function toast(text, kind = "ok") {
  const el = $("toast");
  el.textContent = text;
  el.className = `toast show ${kind}`;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.className = "toast"; }, kind === "error" ? 4000 : 900);
}

function setProgress(progress) {
  if (!progress) return;
  state.progress = progress;
  const waiting = progress.waiting ? ` · ${progress.waiting} waiting` : "";
  $("progress").textContent = `${progress.labelled} labelled${waiting}`;
  $("coverage").textContent = `${progress.pairs} distinct ${state.mode === "pair" ? "pairs" : "triplets"} · ${progress.clips_seen}/${progress.previews} clips seen`;
}

// --- synchronized playback ---------------------------------------------------------------

function master() {  // the longest clip drives the clock; shorter ones hold their last frame
  return state.videos.reduce((a, b) => ((b.duration || 0) > (a.duration || 0) ? b : a));
}

function frames() { return Math.max(...state.query.clips.map((c) => c.frames)); }

function timeOfFrame(frame) {
  const m = master();
  const fps = frames() / (m.duration || 1);
  return (frame + 0.5) / fps;
}

function seekAll(time) {
  for (const v of state.videos) v.currentTime = Math.min(time, Math.max((v.duration || 0) - 0.001, 0));
}

function playAll() {
  if (!state.videos.length) return;
  const t = master().currentTime;
  for (const v of state.videos) {
    v.playbackRate = state.rate;
    if (t < (v.duration || 0) && Math.abs(v.currentTime - t) > 0.04) v.currentTime = t;
    if (t < (v.duration || Infinity)) v.play().catch(() => {});
  }
  state.playing = true;
  $("play").textContent = "❚❚";
}

function pauseAll() {
  for (const v of state.videos) v.pause();
  state.playing = false;
  $("play").textContent = "▶";
  if (state.videos.length) seekAll(master().currentTime);
}

function togglePlay() { if (state.playing) pauseAll(); else playAll(); }

function setRate(rate) {
  state.rate = rate;
  for (const v of state.videos) v.playbackRate = rate;
  for (const b of document.querySelectorAll(".speeds button")) {
    b.classList.toggle("on", Number(b.dataset.speed) === rate);
  }
}

function tick() {
  if (state.videos.length && state.query) {
    const m = master();
    const t = m.currentTime;
    if (state.playing) {
      for (const v of state.videos) {
        if (v === m) continue;
        const inside = t < (v.duration || 0) - 0.02;
        if (inside && (v.paused || Math.abs(v.currentTime - t) > 0.08)) {
          v.currentTime = t;
          if (v.paused) v.play().catch(() => {});
        }
      }
    }
    const n = frames();
    const frame = Math.min(n - 1, Math.floor((t / (m.duration || 1)) * n));
    if (frame !== state.shownFrame || n !== state.shownFrames) {  // touch the DOM only on change
      state.shownFrame = frame;
      state.shownFrames = n;
      if (!state.scrubbing) $("scrubber").value = String(frame);
      $("frame").textContent = `${frame + 1} / ${n}`;
    }
  }
  requestAnimationFrame(tick);
}

function onMasterEnded() {
  if ($("loop").checked && state.playing) {
    seekAll(0);
    playAll();
  } else {
    pauseAll();
  }
}

// --- showing a query -----------------------------------------------------------------------

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

const preloaded = new Map();  // clip URL -> a <video> already buffering it

function preload(query) {
  const box = $("preload");
  const keep = new Set(query ? query.clips.map((c) => c.url) : []);
  for (const [url, video] of preloaded) {
    if (!keep.has(url)) { video.removeAttribute("src"); video.load(); video.remove(); preloaded.delete(url); }
  }
  for (const url of keep) {
    if (preloaded.has(url)) continue;
    const v = document.createElement("video");
    v.preload = "auto";
    v.muted = true;
    v.playsInline = true;
    v.src = url;
    box.appendChild(v);
    preloaded.set(url, v);
  }
}

function videoFor(clip) {  // the preloaded element if there is one: no second download or decode
  let video = preloaded.get(clip.url);
  preloaded.delete(clip.url);
  if (!video) {
    video = document.createElement("video");
    video.preload = "auto";
    video.muted = true;
    video.playsInline = true;
    video.src = clip.url;
  }
  video.currentTime = 0;
  return video;
}

function show(query, requestedAt) {
  pauseAll();
  state.query = query;
  state.ranking = [];
  state.ties = [];
  state.tieNext = false;
  const clips = $("clips");
  clear(clips);
  state.videos = [];
  $("empty").hidden = Boolean(query);
  if (!query) showEmpty();
  $("transport").hidden = !query;
  $("pair-choices").hidden = !query || state.mode !== "pair";
  $("triplet-choices").hidden = !query || state.mode !== "triplet";
  if (!query) return;
  clips.style.setProperty("--n", String(query.clips.length));
  clips.dataset.n = String(query.clips.length);
  clips.dataset.queryId = query.id;
  query.clips.forEach((clip, i) => {
    const card = document.createElement("div");
    card.className = "card" + (query.clips.length === 2 ? (i === 0 ? " left-card" : " right-card") : " clickable");
    card.dataset.index = String(i);
    const tag = document.createElement("span");
    tag.className = "tag";
    tag.textContent = query.clips.length === 2 ? (i === 0 ? "A · left" : "B · right") : `${i + 1} · ${NAMES[i]}`;
    const video = videoFor(clip);
    video.dataset.clipId = clip.id;
    card.append(tag, video);
    if (query.clips.length === 3) card.addEventListener("click", () => rankClip(i));
    clips.appendChild(card);
    state.videos.push(video);
  });
  $("scrubber").max = String(frames() - 1);
  $("scrubber").value = "0";
  renderRanking();
  const ready = state.videos.map((v) => new Promise((resolve) => {
    if (v.readyState >= 3) resolve();
    else v.addEventListener("canplay", resolve, { once: true });
  }));
  Promise.all(ready).then(() => {
    if (state.query !== query) return;
    window.labelTimings.ready.push(performance.now() - requestedAt);
    document.body.dataset.ready = query.id;
    for (const v of state.videos) v.onended = null;
    master().onended = onMasterEnded;
    state.shownAt = performance.now();
    playAll();
  });
}

function showEmpty() {
  const progress = state.progress || {};
  const noPreviews = progress.clips > 0 && progress.previews === 0;
  const [title, text] = noPreviews
    ? ["These clips have no videos yet",
       `The dataset has ${progress.clips} clips but no previews to show. Whoever runs the server: ` +
       "record with `embodied-pref collect --frames`, or write previews with `embodied-pref make-previews DATASET`."]
    : progress.clips === 0
      ? ["No clips to compare yet", "The dataset has no clips: `embodied-pref collect` records some."]
      : [progress.labelled ? "All done — thank you!" : "Nothing to label right now",
         "Every pair of clips with a video has been asked. Leave this page open or come back later; new clips appear here on reload."];
  $("empty").querySelector("h2").textContent = title;
  $("empty").querySelector("p").textContent = text;
}

async function loadNext() {
  const requestedAt = performance.now();
  delete document.body.dataset.ready;
  try {
    const next = await api("/api/next");
    setProgress(next.progress);
    show(next.query, requestedAt);
    preload(next.upcoming);
  } catch (err) {
    toast(err.message, "error");
  }
}

// --- answering -------------------------------------------------------------------------------

function newId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function flash(outcome) {
  for (const b of document.querySelectorAll(`[data-outcome="${outcome}"]`)) {
    b.classList.add("pressed");
    setTimeout(() => b.classList.remove("pressed"), 250);
  }
  const cards = document.querySelectorAll(".card");
  if (outcome === "left" && cards[0]) cards[0].classList.add("chosen");
  if (outcome === "right" && cards[1]) cards[1].classList.add("chosen");
  if (outcome === "ranking" && state.ranking.length) cards[state.ranking[0]].classList.add("chosen");
}

async function answer(outcome, extra = {}) {
  if (!state.query) return;
  if (state.busy) { refuseWhileBusy(); return; }
  if (state.mode === "triplet" && ["left", "right", "equal"].includes(outcome)) return;
  setBusy(true);
  flash(outcome);
  const body = {
    query_id: state.query.id, outcome, label_id: newId(),
    elapsed_ms: Math.round(performance.now() - state.shownAt), ...extra,
  };
  const sentAt = performance.now();
  try {
    let ack = null;
    for (let attempt = 0; ; attempt++) {  // the same label_id makes a retry safe
      try {
        ack = await api("/api/label", { method: "POST", body: JSON.stringify(body) });
        break;
      } catch (err) {
        if (err.status || attempt >= 2) throw err;
        await new Promise((r) => setTimeout(r, 300 * (attempt + 1)));
      }
    }
    window.labelTimings.ack.push(performance.now() - sentAt);
    state.lastLabel = { label_id: ack.label_id, outcome };
    setProgress(ack.progress);
    toast(`✓ ${OUTCOME_TEXT[outcome]} — saved`);
    await loadNext();
  } catch (err) {
    toast(`Not saved: ${err.message}`, "error");
  } finally {
    setBusy(false);
  }
}

async function undo() {
  if (state.busy) { refuseWhileBusy(); return; }
  if (!state.lastLabel) { toast("Nothing to undo", "error"); return; }
  setBusy(true);
  try {
    const result = await api("/api/undo", {
      method: "POST", body: JSON.stringify({ label_id: state.lastLabel.label_id }),
    });
    state.lastLabel = result.last_label;
    setProgress(result.progress);
    toast(`↶ Undone: ${OUTCOME_TEXT[result.outcome] || result.outcome}`);
    const requestedAt = performance.now();
    show(result.query, requestedAt);
  } catch (err) {
    toast(err.message, "error");
  } finally {
    setBusy(false);
  }
}

// --- triplet ranking -------------------------------------------------------------------------

function rankClip(index) {
  if (!state.query || state.query.clips.length !== 3 || state.ranking.includes(index)) return;
  if (state.ranking.length && state.tieNext) state.ties.push(state.ranking.length - 1);
  state.tieNext = false;
  state.ranking.push(index);
  renderRanking();
}

function clearRanking() {
  state.ranking = [];
  state.ties = [];
  state.tieNext = false;
  renderRanking();
}

function toggleTieAt(position) {
  const at = state.ties.indexOf(position);
  if (at >= 0) state.ties.splice(at, 1); else state.ties.push(position);
  state.ties.sort();
  renderRanking();
}

function moveInRanking(from, to) {
  const [item] = state.ranking.splice(from, 1);
  state.ranking.splice(to, 0, item);
  renderRanking();
}

function renderRanking() {
  const box = $("ranking");
  clear(box);
  const names = ["best", "middle", "worst"];
  for (let pos = 0; pos < 3; pos++) {
    if (pos > 0) {
      const rel = document.createElement("button");
      const tie = state.ties.includes(pos - 1) || (state.tieNext && pos === state.ranking.length);
      rel.className = "relation" + (tie ? " tie" : "");
      rel.textContent = tie ? "=" : "≻";
      rel.title = "Click to switch between better (≻) and tie (=)";
      rel.addEventListener("click", () => {
        if (pos - 1 < state.ranking.length - 1) toggleTieAt(pos - 1);
        else { state.tieNext = !state.tieNext; renderRanking(); }
      });
      box.appendChild(rel);
    }
    const slot = document.createElement("div");
    const clip = state.ranking[pos];
    slot.className = "slot" + (clip === undefined ? "" : " filled");
    slot.textContent = clip === undefined ? names[pos] : `${clip + 1} · ${NAMES[clip]}`;
    slot.dataset.position = String(pos);
    if (clip !== undefined) {
      slot.draggable = true;
      slot.addEventListener("dragstart", (e) => e.dataTransfer.setData("text/plain", String(pos)));
    }
    slot.addEventListener("dragover", (e) => { e.preventDefault(); slot.classList.add("drag-over"); });
    slot.addEventListener("dragleave", () => slot.classList.remove("drag-over"));
    slot.addEventListener("drop", (e) => {
      e.preventDefault();
      const from = Number(e.dataTransfer.getData("text/plain"));
      if (Number.isInteger(from) && from < state.ranking.length) {
        moveInRanking(from, Math.min(pos, state.ranking.length - 1));
      }
    });
    box.appendChild(slot);
  }
  document.querySelectorAll(".card").forEach((card) => {
    const old = card.querySelector(".rank-badge");
    if (old) old.remove();
    const pos = state.ranking.indexOf(Number(card.dataset.index));
    if (pos >= 0) {
      const badge = document.createElement("span");
      badge.className = "rank-badge";
      let group = pos;  // tied clips share the rank of the first of their group
      while (group > 0 && state.ties.includes(group - 1)) group--;
      badge.textContent = ["1st", "2nd", "3rd"][group] + (state.ties.includes(pos) || state.ties.includes(pos - 1) ? " =" : "");
      card.appendChild(badge);
    }
  });
  $("submit-ranking").disabled = state.ranking.length !== 3;
  $("tie").classList.toggle("pressed", state.tieNext);
}

function submitRanking() {
  if (state.ranking.length !== 3) return;
  answer("ranking", { ranking: [...state.ranking], ties: [...state.ties] });
}

// --- input ---------------------------------------------------------------------------------

const KEYS = { ArrowLeft: "left", ArrowRight: "right", ArrowDown: "equal", c: "cannot_tell", s: "skip" };

function onKey(e) {
  if (e.ctrlKey || e.metaKey || e.altKey || e.target.tagName === "INPUT" && e.target.type !== "range") return;
  if (e.key === " ") { e.preventDefault(); togglePlay(); return; }
  if (e.key === "u") { e.preventDefault(); undo(); return; }
  if (state.mode === "triplet") {
    if (["1", "2", "3"].includes(e.key)) { rankClip(Number(e.key) - 1); return; }
    if (e.key === "=") { state.tieNext = !state.tieNext; renderRanking(); return; }
    if (e.key === "Backspace") { e.preventDefault(); clearRanking(); return; }
    if (e.key === "Enter") { e.preventDefault(); submitRanking(); return; }
  }
  const outcome = KEYS[e.key];
  if (outcome) { e.preventDefault(); answer(outcome); }
}

async function start() {
  document.addEventListener("keydown", onKey);
  for (const b of document.querySelectorAll("[data-outcome]")) {
    b.addEventListener("click", () => answer(b.dataset.outcome));
  }
  for (const b of document.querySelectorAll("[data-speed]")) {
    b.addEventListener("click", () => setRate(Number(b.dataset.speed)));
  }
  $("play").addEventListener("click", togglePlay);
  $("undo").addEventListener("click", undo);
  $("tie").addEventListener("click", () => { state.tieNext = !state.tieNext; renderRanking(); });
  $("clear-ranking").addEventListener("click", clearRanking);
  $("submit-ranking").addEventListener("click", submitRanking);
  const scrubber = $("scrubber");
  scrubber.addEventListener("input", () => {
    state.scrubbing = true;
    if (state.playing) pauseAll();
    seekAll(timeOfFrame(Number(scrubber.value)));
  });
  scrubber.addEventListener("change", () => { state.scrubbing = false; });
  if (token) $("agreement-link").href = `/agreement?token=${encodeURIComponent(token)}`;
  try {
    const session = await startSession();
    state.mode = session.mode;
    $("agreement-link").hidden = session.role !== "owner";
    $("annotator").textContent = session.annotator;
    $("dataset").textContent = session.description || session.dataset;
    $("instructions-body").innerHTML = session.instructions_html || "<p>Pick the clip that does the task better.</p>";
    $("help").textContent = session.mode === "pair"
      ? "← left better · → right better · ↓ equal · c can't tell · s skip · space play/pause · u undo"
      : "1/2/3 rank clips best→worst (or click / drag) · = tie with previous · ↵ submit · ⌫ clear · c can't tell · s skip · space play/pause · u undo";
    setProgress(session.progress);
  } catch (err) {
    toast(err.message, "error");
    $("empty").hidden = false;
    $("empty").querySelector("h2").textContent = err.status === 401 ? "This link needs a valid token" : "Cannot reach the server";
    $("empty").querySelector("p").textContent = err.message;
    $("transport").hidden = true;
    return;
  }
  requestAnimationFrame(tick);
  await loadNext();
}

start();
