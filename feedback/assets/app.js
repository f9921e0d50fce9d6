// The voting page: loads a pair, plays and draws both clips, reports listening time, and
// votes. Talks only to this server's JSON API (docs/feedback.md). No framework, no build step.
"use strict";

(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const sides = ["a", "b"];
  const el = (id) => document.getElementById(id);
  let view = null;          // the current pair (GET /api/pair)
  let heard = { a: 0, b: 0 };    // seconds the server credited
  let pending = { a: 0, b: 0 };  // seconds played, not yet reported
  let last = { a: 0, b: 0 };     // playback position at the last timeupdate
  let busy = false;

  function status(text, isError) {
    const s = el("status");
    s.textContent = text;
    s.className = isError ? "error" : "";
  }

  async function api(method, path, body) {
    const init = { method, credentials: "same-origin", headers: {} };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.headers["x-csrf-token"] = (view && view.csrf) || csrf;
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    let data = null;
    try { data = await r.json(); } catch (_) { data = null; }
    if (!r.ok) {
      const message = (data && data.error) || (r.status + " " + r.statusText);
      const e = new Error(message);
      e.status = r.status;
      throw e;
    }
    return data;
  }

  function required(side) { return view ? view[side].required_seconds : Infinity; }

  function render() {
    for (const side of sides) {
      const need = required(side);
      const frac = need > 0 ? Math.min(1, heard[side] / need) : 1;
      const bar = el("bar-" + side);
      bar.style.width = (100 * frac).toFixed(0) + "%";
      bar.classList.toggle("done", frac >= 1);
      el("heard-" + side).textContent = heard[side] <= 0
        ? "not played yet (" + need.toFixed(1) + " s needed)"
        : "listened " + heard[side].toFixed(1) + " of " + need.toFixed(1) + " s" + (frac >= 1 ? " ✓" : "");
    }
    const ready = view && sides.every((s) => heard[s] + 0.25 >= required(s));
    document.querySelectorAll("button[data-outcome]").forEach((b) => { b.disabled = !ready || busy; });
  }

  async function flush() {
    if (!view) return;
    for (const side of sides) {
      const seconds = pending[side];
      if (seconds < 0.05) continue;
      pending[side] = 0;
      try {
        const got = await api("POST", "/api/listen", { pair: view.pair, side, seconds });
        heard = { a: got.a, b: got.b };
      } catch (e) {
        status(e.message, true);
      }
    }
    render();
  }

  function track(side) {
    const audio = el("audio-" + side);
    audio.addEventListener("play", () => {
      last[side] = audio.currentTime;
      for (const other of sides) if (other !== side) el("audio-" + other).pause();
      el("clip-" + side).classList.add("playing");
    });
    audio.addEventListener("pause", () => { el("clip-" + side).classList.remove("playing"); flush(); });
    audio.addEventListener("seeking", () => { last[side] = audio.currentTime; });
    audio.addEventListener("timeupdate", () => {
      if (audio.paused || audio.seeking) return;
      const delta = audio.currentTime - last[side];
      last[side] = audio.currentTime;
      if (delta > 0 && delta < 1.5) pending[side] += delta;
    });
    audio.addEventListener("ended", () => {
      // Played to its end: whatever the timer missed counts.
      const rest = Math.max(0, required(side) - heard[side] - pending[side]);
      if (audio.duration && isFinite(audio.duration)) pending[side] += Math.min(rest, 0.5);
      flush();
    });
  }

  function toggle(side) {
    const audio = el("audio-" + side);
    if (audio.paused) { audio.play().catch((e) => status("cannot play: " + e.message, true)); }
    else { audio.pause(); }
  }

  async function load() {
    view = null;
    heard = { a: 0, b: 0 };
    pending = { a: 0, b: 0 };
    render();
    el("caption").textContent = "Loading a pair…";
    try {
      view = await api("GET", "/api/pair");
    } catch (e) {
      el("caption").textContent = "No pair: " + e.message;
      status(e.message, true);
      return;
    }
    el("caption").textContent = view.caption;
    const minListen = Math.max(view.a.required_seconds, view.b.required_seconds);
    el("min-listen").textContent = minListen.toFixed(minListen < 1 ? 1 : 0);
    for (const side of sides) {
      const clip = view[side];
      const audio = el("audio-" + side);
      audio.src = clip.wav;
      audio.load();
      last[side] = 0;
      const score = el("score-" + side);
      score.textContent = "";
      // An audio-token clip (MusicGen's codes, decoded by its codec) has no notation: the
      // page offers its WAV instead of sheet music, MIDI and ABC.
      const audioOnly = !clip.abc;
      score.hidden = audioOnly;
      el("notation-" + side).hidden = audioOnly;
      el("wav-" + side).hidden = !audioOnly;
      el("wav-" + side).href = clip.wav;
      el("midi-" + side).href = clip.midi || "#";
      el("abc-" + side).href = clip.abc_file || "#";
      if (audioOnly) {
        // Nothing to draw.
      } else if (window.ABCJS) {
        // The caption is already the page's heading: the score is drawn without its title.
        const untitled = clip.abc.replace(/^T:.*\r?\n/m, "");
        window.ABCJS.renderAbc(score, untitled, { responsive: "resize", add_classes: true });
      } else {
        score.textContent = clip.abc;
      }
    }
    el("comment").value = "";
    render();
  }

  async function vote(outcome) {
    if (!view || busy) return;
    busy = true;
    render();
    await flush();
    try {
      const comment = el("comment").value.trim();
      const body = { pair: view.pair, outcome };
      if (comment) body.comment = comment;
      await api("POST", "/api/vote", body);
      status("Thank you! Vote recorded (" + outcome.replace("_", " ") + "). Next pair…", false);
      for (const side of sides) el("audio-" + side).pause();
      busy = false;
      await load();
    } catch (e) {
      busy = false;
      status(e.message, true);
      render();
    }
  }

  for (const side of sides) track(side);
  setInterval(flush, 1000);
  document.querySelectorAll("button[data-outcome]").forEach((b) => {
    b.addEventListener("click", () => vote(b.dataset.outcome));
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.target && (ev.target.tagName === "TEXTAREA" || ev.target.tagName === "INPUT")) return;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const keys = { "1": () => toggle("a"), "2": () => toggle("b") };
    const votes = { a: "a", b: "b", t: "tie", x: "both_bad" };
    if (keys[ev.key]) { keys[ev.key](); ev.preventDefault(); return; }
    const outcome = votes[ev.key.toLowerCase()];
    if (outcome) {
      const button = el("vote-" + outcome);
      if (button && !button.disabled) { vote(outcome); ev.preventDefault(); }
    }
  });
  load();
})();
