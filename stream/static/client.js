// The page's side of the stream: WebRTC offer/answer, the `control` data channel (protocol v1,
// see the README), the HUD, the source switch and the mask overlay. Plain JS, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const ICE_GATHER_TIMEOUT_MS = 2000;
const RETRY_MAX_MS = 10000;
const MAX_FILE_BYTES = 200 * 1024 * 1024;
// The token rides in the URL fragment (http://host:8080/#token=...), which browsers never send to a
// server, so it stays out of access logs and Referer headers; it is only ever sent as a header.
const TOKEN = new URLSearchParams(location.hash.slice(1)).get("token");

let pc = null;
let channel = null;
let sender = null; // the video sender: our camera or file goes out through it (v2v)
let source = null; // MediaStream of the current camera or file, or null in text-to-video
let activeMode = "t2v"; // the source actually in use: "t2v" | "camera" | "file"
let retryTimer = null;
let retryDelay = 1000;
let lastMask = null;
let lastMoved = false; // whether the last frame's pruned tokens moved with the camera
const history = [];
let historyPos = 0;

// ---------------------------------------------------------------- connection state and messages

function setState(state, text) {
  $("state").dataset.state = state;
  $("state").textContent = text;
}

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = "message" + (kind === "info" ? " info" : "");
  box.hidden = false;
}

function clearMessage() {
  $("message").hidden = true;
}

function scheduleRetry(reason) {
  teardown();
  const seconds = Math.round(retryDelay / 1000);
  setState("disconnected", "disconnected");
  showMessage(`${reason} Retrying in ${seconds} s…`);
  $("retry").hidden = false;
  clearTimeout(retryTimer);
  retryTimer = setTimeout(connect, retryDelay);
  retryDelay = Math.min(retryDelay * 2, RETRY_MAX_MS);
}

function teardown() {
  if (pc) {
    pc.onconnectionstatechange = null;
    pc.close();
  }
  pc = channel = sender = null;
}

// ---------------------------------------------------------------- WebRTC

function waitForIceGathering(peer) {
  // The server gets every candidate in the offer (no trickle), so wait for gathering to end.
  if (peer.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ICE_GATHER_TIMEOUT_MS);
    peer.addEventListener("icegatheringstatechange", () => {
      if (peer.iceGatheringState === "complete") {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

async function connect() {
  clearTimeout(retryTimer);
  $("retry").hidden = true;
  teardown();
  setState("connecting", "connecting…");

  const peer = new RTCPeerConnection({ iceServers: [] });
  pc = peer;
  channel = peer.createDataChannel("control");
  channel.onopen = onChannelOpen;
  channel.onmessage = (event) => onServerMessage(JSON.parse(event.data));
  channel.onclose = () => {
    if (pc === peer) scheduleRetry("The control channel closed.");
  };
  // sendrecv even in text-to-video: a camera can then be attached later without renegotiating
  sender = peer.addTransceiver("video", { direction: "sendrecv" }).sender;
  peer.ontrack = (event) => {
    $("video").srcObject = new MediaStream([event.track]);
  };
  peer.onconnectionstatechange = () => {
    const state = peer.connectionState;
    if (state === "connected") {
      setState("connected", "connected");
      retryDelay = 1000;
      clearMessage();
    } else if (state === "failed" || state === "disconnected") {
      scheduleRetry("Disconnected from the server.");
    } else {
      setState(state, state);
    }
  };

  try {
    await peer.setLocalDescription(await peer.createOffer());
    await waitForIceGathering(peer);
    const response = await fetch("/offer", {
      method: "POST",
      headers: TOKEN
        ? { "Content-Type": "application/json", Authorization: `Bearer ${TOKEN}` }
        : { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: peer.localDescription.sdp, type: peer.localDescription.type }),
    });
    const body = await response.json().catch(() => ({}));
    if (pc !== peer) return; // a newer attempt replaced this one
    if (response.status === 503) {
      const reason = body.error || "server busy";
      scheduleRetry(`${reason[0].toUpperCase()}${reason.slice(1)}.`);
      return;
    }
    if (response.status === 401) {
      teardown();
      setState("failed", "no access");
      showMessage("This stream needs a token: open the link you were given, which ends in #token=…");
      return;
    }
    if (!response.ok) {
      teardown();
      setState("failed", "failed");
      showMessage(`The server refused the connection: ${body.error || response.statusText}`);
      $("retry").hidden = false;
      return;
    }
    await peer.setRemoteDescription(body);
  } catch (err) {
    if (pc === peer) scheduleRetry(`Cannot reach the server (${err.message}).`);
  }
}

function send(message) {
  if (channel && channel.readyState === "open") channel.send(JSON.stringify(message));
}

async function onChannelOpen() {
  // a reconnect restores this page's source; shared settings (prompt, LIPAR) stay as the server has them
  if (source) {
    await sender.replaceTrack(source.getVideoTracks()[0]);
    send({ type: "mode", mode: "v2v" });
  }
}

// ---------------------------------------------------------------- server messages

function onServerMessage(msg) {
  if (msg.type === "stats") updateHud(msg);
  else if (msg.type === "error") showMessage(`Server: ${msg.message}`);
  else if (msg.type === "hello") {
    $("state").dataset.viewer = msg.viewer; // matches the server's log lines
    $("state").title = `viewer ${msg.viewer}`;
    $("prompt").maxLength = msg.max_prompt_chars;
    setWatchOnly(msg.role === "watch");
    document.querySelector(".screen").style.aspectRatio = `${msg.width} / ${msg.height}`;
    document.querySelector(".stage").style.maxWidth = `calc(72vh * ${msg.width} / ${msg.height})`;
  }
}

function setWatchOnly(watchOnly) {
  // a watch token sees the stream; the server refuses its commands, so the page does not offer them
  document.querySelectorAll(".controls input, .controls button").forEach((el) => {
    el.disabled = watchOnly;
  });
  if (watchOnly) showMessage("You are watching: this link cannot steer the stream.", "info");
}

function updateHud(stats) {
  $("fps").textContent = stats.fps.toFixed(1);
  $("latency").textContent = Math.round(stats.latency_ms);
  $("kept").textContent = `${Math.round(stats.kept_ratio * 100)}%`;
  $("motion").textContent = motionText(stats.motion);
  $("frame").textContent = stats.frame;
  $("viewers").textContent = stats.viewers;
  $("current-prompt").textContent = stats.prompt;
  $("pause").textContent = stats.paused ? "Resume" : "Pause";
  $("pause").dataset.paused = stats.paused ? "1" : "";
  $("lipar").checked = stats.lipar; // the stream is shared: show what it does now
  if (stats.error) showMessage(`The generator is failing: ${stats.error}`);
  lastMask = stats.mask;
  lastMoved = Boolean(stats.motion && stats.motion.used);
  drawMask();
}

// camera motion LIPAR compensated: shift in % of the frame per latent frame, zoom factor
function motionText(m) {
  if (!m) return "–";
  if (!m.used) return "still";
  const zoom = Math.abs(m.scale - 1) > 0.001 ? ` ×${m.scale.toFixed(3)}` : "";
  return `${(m.dx * 100).toFixed(1)}, ${(m.dy * 100).toFixed(1)}%${zoom}`;
}

// ---------------------------------------------------------------- mask overlay

function drawMask() {
  const canvas = $("overlay");
  if (canvas.hidden || !lastMask) return;
  const video = $("video");
  const box = canvas.getBoundingClientRect();
  canvas.width = box.width;
  canvas.height = box.height;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!video.videoWidth) return;
  // where object-fit: contain put the picture inside the element
  const scale = Math.min(box.width / video.videoWidth, box.height / video.videoHeight);
  const w = video.videoWidth * scale;
  const h = video.videoHeight * scale;
  const x0 = (box.width - w) / 2;
  const y0 = (box.height - h) / 2;
  const { rows, cols } = lastMask;
  const bits = Uint8Array.from(atob(lastMask.bits), (c) => c.charCodeAt(0));
  // pruned tokens: restored in place (pink), or moved with the camera (orange)
  ctx.fillStyle = lastMoved ? "rgba(255, 150, 20, 0.45)" : "rgba(240, 80, 110, 0.45)";
  for (let i = 0; i < rows * cols; i++) {
    const kept = (bits[i >> 3] >> (7 - (i & 7))) & 1;
    if (kept) continue;
    const r = Math.floor(i / cols);
    const c = i % cols;
    ctx.fillRect(x0 + (c * w) / cols, y0 + (r * h) / rows, w / cols, h / rows);
  }
}

// ---------------------------------------------------------------- source: text, camera, file

function stopSource() {
  if (source) source.getTracks().forEach((track) => track.stop());
  source = null;
  const file = $("source-file");
  if (file.src) {
    file.pause();
    URL.revokeObjectURL(file.src);
    file.removeAttribute("src");
  }
}

async function useTextOnly() {
  stopSource();
  activeMode = "t2v";
  if (sender) await sender.replaceTrack(null);
  send({ type: "mode", mode: "t2v" });
}

async function attachSource(stream, mode) {
  source = stream;
  activeMode = mode;
  if (sender) await sender.replaceTrack(stream.getVideoTracks()[0]);
  send({ type: "mode", mode: "v2v" });
}

function cameraError(err) {
  if (err.name === "NotAllowedError" || err.name === "SecurityError") {
    return "Camera access was denied. Allow the camera for this site in the browser, then pick camera again.";
  }
  if (err.name === "NotFoundError" || err.name === "OverconstrainedError") return "No camera was found.";
  if (err.name === "NotReadableError") return "The camera is in use by another program.";
  return `Could not start the camera: ${err.message}`;
}

async function onModeChange(mode) {
  clearMessage();
  if (mode === "t2v") return useTextOnly();
  if (mode === "file") {
    $("file").value = "";
    $("file").click();
    return;
  }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showMessage("This browser gives no camera access on this page (it needs https or localhost).");
    return showMode(activeMode);
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
    stopSource();
    await attachSource(stream, "camera");
  } catch (err) {
    showMessage(cameraError(err));
    showMode(activeMode);
  }
}

async function onFileChosen(file) {
  if (!file) return showMode(activeMode);
  if (file.size > MAX_FILE_BYTES) {
    showMessage(`That file is ${(file.size / 1e6).toFixed(0)} MB; pick a short clip under 200 MB.`);
    return showMode(activeMode);
  }
  stopSource();
  const video = $("source-file");
  video.src = URL.createObjectURL(file);
  try {
    await video.play();
    await attachSource(video.captureStream(), "file");
  } catch (err) {
    showMessage(`Could not play that file: ${err.message}`);
    await useTextOnly();
    showMode("t2v");
  }
}

function showMode(mode) {
  document.querySelector(`input[name="mode"][value="${mode}"]`).checked = true;
}

// ---------------------------------------------------------------- prompt box with history

function onPromptKey(event) {
  const input = $("prompt");
  // handled here, not by form submission: a form with two fields and no button never submits on Enter
  if (event.key === "Enter") {
    sendPrompt();
    event.preventDefault();
  } else if (event.key === "ArrowUp" && historyPos > 0) {
    historyPos -= 1;
    input.value = history[historyPos];
    event.preventDefault();
  } else if (event.key === "ArrowDown" && historyPos < history.length) {
    historyPos += 1;
    input.value = historyPos < history.length ? history[historyPos] : "";
    event.preventDefault();
  }
}

function sendPrompt() {
  const text = $("prompt").value.trim();
  if (!text) return;
  if (!channel || channel.readyState !== "open") {
    showMessage("Not connected: the prompt was not sent.");
    return;
  }
  const frames = Math.max(0, Math.min(1000, parseInt($("transition").value, 10) || 0));
  clearMessage(); // an earlier refusal no longer applies
  send({ type: "prompt", text, transition_frames: frames });
  if (history[history.length - 1] !== text) history.push(text);
  historyPos = history.length;
  $("prompt").value = "";
}

// ---------------------------------------------------------------- wiring

$("prompt-form").addEventListener("submit", (event) => event.preventDefault());
$("prompt").addEventListener("keydown", onPromptKey);
document.querySelectorAll('input[name="mode"]').forEach((radio) => {
  radio.addEventListener("change", () => onModeChange(radio.value));
});
$("file").addEventListener("change", (event) => onFileChosen(event.target.files[0]));
$("lipar").addEventListener("change", (event) => send({ type: "lipar", enabled: event.target.checked }));
$("mask").addEventListener("change", (event) => {
  $("overlay").hidden = !event.target.checked;
  drawMask();
});
$("pause").addEventListener("click", () => send({ type: $("pause").dataset.paused ? "resume" : "pause" }));
$("reset").addEventListener("click", () => send({ type: "reset" }));
$("retry").addEventListener("click", () => {
  retryDelay = 1000;
  connect();
});
window.addEventListener("resize", drawMask);
// closing the connection tells the server at once, so the viewer slot is free for someone else
window.addEventListener("pagehide", teardown);

connect();
