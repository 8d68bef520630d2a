// IGLR annotation page: talks to isegm/demo/server.py. Coordinates sent are image pixels (x = column,
// y = row). `window.demo` exposes the last latencies for tests and measurements.
"use strict";
const $ = (id) => document.getElementById(id);
const imageCanvas = $("image-canvas"), overlayCanvas = $("overlay-canvas"), clicksCanvas = $("clicks-canvas");
const demo = window.demo = { session: null, width: 0, height: 0, version: 0, lastLatencyMs: null,
  lastPredictMs: null, lastServerMs: null, clicks: [], objects: 0, images: [], index: -1, dirty: false, busy: 0 };
let queue = Promise.resolve();  // requests run one after another, in click order

function status(text, isError) {
  const el = $("status");
  el.textContent = text;
  el.className = isError ? "error" : "";
}

async function check(response) {
  if (response.ok) return response;
  let detail = response.statusText;
  try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
  throw new Error(`${response.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
}

function enqueue(task) {
  demo.busy += 1;
  queue = queue.then(task).catch((e) => status(e.message, true)).finally(() => { demo.busy -= 1; });
  return queue;
}

function drawClicks() {
  const ctx = clicksCanvas.getContext("2d");
  ctx.clearRect(0, 0, clicksCanvas.width, clicksCanvas.height);
  const r = Math.max(4, Math.round(0.009 * Math.max(demo.width, demo.height)));
  for (const c of demo.clicks) {
    ctx.beginPath();
    ctx.arc(c.x + 0.5, c.y + 0.5, r, 0, 2 * Math.PI);
    ctx.fillStyle = c.positive ? "#22dd22" : "#ee2222";
    ctx.fill();
    ctx.lineWidth = Math.max(1, r / 4);
    ctx.strokeStyle = "#ffffff";
    ctx.stroke();
  }
}

// Draw an overlay PNG response and take the state from its X-State header.
async function showOverlay(response, started) {
  const state = JSON.parse(response.headers.get("X-State"));
  const bitmap = await createImageBitmap(await response.blob());
  const ctx = overlayCanvas.getContext("2d");
  ctx.clearRect(0, 0, overlayCanvas.width, overlayCanvas.height);
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  demo.clicks = state.clicks;
  demo.objects = state.objects;
  drawClicks();
  demo.version += 1;
  $("stage").dataset.version = String(demo.version);
  $("objects").textContent = String(state.objects);
  $("nclicks").textContent = String(state.clicks.length);
  if (started !== undefined) {
    demo.lastLatencyMs = performance.now() - started;
    demo.lastPredictMs = state.predict_ms;
    demo.lastServerMs = state.server_ms;
    $("latency").textContent = `${demo.lastLatencyMs.toFixed(0)} ms (model ${state.predict_ms.toFixed(0)} ms)`;
  }
  return state;
}

async function openSession(info) {
  demo.session = info.session;
  demo.width = info.width;
  demo.height = info.height;
  demo.dirty = false;
  const blob = await (await check(await fetch(`/api/sessions/${info.session}/image`))).blob();
  const bitmap = await createImageBitmap(blob);
  for (const c of [imageCanvas, overlayCanvas, clicksCanvas]) { c.width = info.width; c.height = info.height; }
  imageCanvas.getContext("2d").drawImage(bitmap, 0, 0);
  bitmap.close();
  await showOverlay(await check(await fetch(`/api/sessions/${info.session}/overlay`)));
  $("image-name").textContent = `${info.name} (${info.width}x${info.height})`;
  $("latency").textContent = "–";
  status(`Opened ${info.name}. Click the object.`);
}

function post(path, body) {
  const init = { method: "POST" };
  if (body !== undefined) {
    init.headers = { "Content-Type": "application/json" };
    init.body = JSON.stringify(body);
  }
  return fetch(path, init).then(check);
}

function action(name) {
  if (!demo.session) { status("No image open.", true); return; }
  enqueue(async () => {
    const state = await showOverlay(await post(`/api/sessions/${demo.session}/${name}`));
    demo.dirty = true;
    status(`${name}: ${state.objects} objects, ${state.clicks.length} clicks on the current one.`);
  });
}

function save() {
  if (!demo.session) { status("No image open.", true); return Promise.resolve(); }
  return enqueue(async () => {
    const result = await (await post(`/api/sessions/${demo.session}/save`)).json();
    demo.dirty = false;
    status(`Saved ${result.objects} objects: ${result.files.join(", ")}`);
    if (demo.index >= 0) { demo.images[demo.index].done = true; renderList(); }
  });
}

clicksCanvas.addEventListener("contextmenu", (e) => e.preventDefault());
clicksCanvas.addEventListener("mousedown", (e) => {
  if (!demo.session || (e.button !== 0 && e.button !== 2)) return;
  e.preventDefault();
  const started = performance.now();
  const rect = clicksCanvas.getBoundingClientRect();
  const x = Math.floor((e.clientX - rect.left) * demo.width / rect.width);
  const y = Math.floor((e.clientY - rect.top) * demo.height / rect.height);
  const positive = e.button === 0 && !e.shiftKey;
  enqueue(async () => {
    await showOverlay(await post(`/api/sessions/${demo.session}/click`, { x, y, positive }), started);
    demo.dirty = true;
  });
});

$("file").addEventListener("change", () => {
  const file = $("file").files[0];
  if (!file) return;
  enqueue(async () => {
    const form = new FormData();
    form.append("file", file);
    const info = await (await fetch("/api/sessions", { method: "POST", body: form }).then(check)).json();
    demo.index = -1;
    renderList();
    await openSession(info);
  });
});

function renderList() {
  const list = $("images");
  list.replaceChildren();
  demo.images.forEach((item, i) => {
    const li = document.createElement("li");
    li.textContent = item.name;
    li.dataset.name = item.name;
    if (item.done) li.classList.add("done");
    if (i === demo.index) li.classList.add("current");
    li.addEventListener("click", () => openIndex(i));
    list.appendChild(li);
  });
  $("done-count").textContent = String(demo.images.filter((i) => i.done).length);
}

function openIndex(i) {
  if (i < 0 || i >= demo.images.length) { status("No more images in this direction."); return; }
  if (demo.dirty && demo.session && demo.index >= 0) save();
  enqueue(async () => {
    const info = await (await post("/api/folder/open", { name: demo.images[i].name })).json();
    demo.index = i;
    renderList();
    await openSession(info);
  });
}

$("undo").addEventListener("click", () => action("undo"));
$("reset").addEventListener("click", () => action("reset"));
$("finish").addEventListener("click", () => action("finish"));
$("save").addEventListener("click", () => save());
$("prev").addEventListener("click", () => openIndex(demo.index - 1));
$("next").addEventListener("click", () => openIndex(demo.index + 1));
function setOpacity(value) {
  $("opacity").value = String(Math.max(0, Math.min(100, value)));
  overlayCanvas.style.opacity = String($("opacity").value / 100);
}
$("opacity").addEventListener("input", () => setOpacity(Number($("opacity").value)));
setOpacity(60);

document.addEventListener("keydown", (e) => {
  if (e.target instanceof HTMLInputElement && e.target.type !== "range") return;
  const key = e.key;
  if (key === "z" || (key === "Z" && e.ctrlKey)) action("undo");
  else if (key === "r") action("reset");
  else if (key === "f") action("finish");
  else if (key === "s") { e.preventDefault(); save(); }
  else if (key === "ArrowLeft" || key === "a") openIndex(demo.index - 1);
  else if (key === "ArrowRight" || key === "d") openIndex(demo.index + 1);
  else if (key === "[") setOpacity(Number($("opacity").value) - 10);
  else if (key === "]") setOpacity(Number($("opacity").value) + 10);
  else return;
  e.preventDefault();
});

enqueue(async () => {
  const info = await (await fetch("/api/info").then(check)).json();
  $("model").textContent = info.model;
  $("model-note").textContent = info.note;
  if (info.folder) {
    demo.images = await (await fetch("/api/images").then(check)).json();
    $("folder").hidden = false;
    renderList();
  }
});
