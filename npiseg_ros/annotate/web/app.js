// npiseg-annotate page: a software point renderer on a 2-D canvas (orthographic, rotatable,
// z-buffered), picking through a per-pixel point-index buffer, and a thin client of the
// server's JSON API. No third-party code.
"use strict";

const canvas = document.getElementById("cloud");
const ctx = canvas.getContext("2d");
const $ = (id) => document.getElementById(id);

const view = { cx: 0, cy: 0, cz: 0, yaw: 0, pitch: Math.PI / 2, scale: 10 };
let xyz = null;            // Float32Array 3N
let labels = null;         // Int32Array N
let unc = null;            // Float32Array N
let uncMax = 1;
let state = null;
let colourMode = "labels";
let frameToken = -1;
let labelVersion = -1;
let idxBuf = null;         // Int32Array W*H: index of the point drawn at each pixel, -1 none
let busy = 0;
let needFit = false;

// ----------------------------------------------------------------------------- colours
function objectColour(id) {
  if (id <= 0) return null;
  const hue = (id * 137.508) % 360;
  return hsl(hue, 0.85, 0.55);
}
function hsl(h, s, l) {
  const c = (1 - Math.abs(2 * l - 1)) * s, x = c * (1 - Math.abs(((h / 60) % 2) - 1)), m = l - c / 2;
  let r = 0, g = 0, b = 0;
  if (h < 60) [r, g, b] = [c, x, 0]; else if (h < 120) [r, g, b] = [x, c, 0];
  else if (h < 180) [r, g, b] = [0, c, x]; else if (h < 240) [r, g, b] = [0, x, c];
  else if (h < 300) [r, g, b] = [x, 0, c]; else [r, g, b] = [c, 0, x];
  return [Math.round((r + m) * 255), Math.round((g + m) * 255), Math.round((b + m) * 255)];
}
function ramp(t) {  // uncertainty: dark blue -> cyan -> yellow -> red
  t = Math.min(Math.max(t, 0), 1);
  const stops = [[20, 30, 110], [0, 170, 200], [240, 220, 40], [230, 40, 30]];
  const f = t * (stops.length - 1), i = Math.min(Math.floor(f), stops.length - 2), u = f - i;
  return stops[i].map((v, k) => Math.round(v + (stops[i + 1][k] - v) * u));
}
const cssColour = (c) => `rgb(${c[0]},${c[1]},${c[2]})`;

// ----------------------------------------------------------------------------- projection
function project(x, y, z, W, H) {
  const dx = x - view.cx, dy = y - view.cy, dz = z - view.cz;
  const cy = Math.cos(view.yaw), sy = Math.sin(view.yaw);
  const x1 = cy * dx - sy * dy, y1 = sy * dx + cy * dy;
  const sp = Math.sin(view.pitch), cp = Math.cos(view.pitch);
  const v = y1 * sp + dz * cp, depth = -y1 * cp + dz * sp;
  return [W / 2 + x1 * view.scale, H / 2 - v * view.scale, depth];
}

function fitView() {
  if (!xyz) return;
  resize();
  const n = xyz.length / 3, step = Math.max(1, Math.floor(n / 20000));
  const xs = [], ys = [], zs = [];
  for (let i = 0; i < n; i += step) {
    const x = xyz[3 * i], y = xyz[3 * i + 1], z = xyz[3 * i + 2];
    if (labels && labels[i] < 0) continue;  // outside --max-range: context only
    if (Number.isFinite(x) && Number.isFinite(y) && Number.isFinite(z)) { xs.push(x); ys.push(y); zs.push(z); }
  }
  if (!xs.length) return;
  const q = (a, p) => { a.sort((u, v) => u - v); return a[Math.min(a.length - 1, Math.floor(p * a.length))]; };
  const x0 = q(xs, 0.01), x1 = q(xs, 0.99), y0 = q(ys, 0.01), y1 = q(ys, 0.99);
  view.cx = (x0 + x1) / 2; view.cy = (y0 + y1) / 2; view.cz = q(zs, 0.5);
  const W = canvas.width, H = canvas.height;
  view.scale = 0.9 * Math.min(W / Math.max(x1 - x0, 1e-3), H / Math.max(y1 - y0, 1e-3));
}

// ----------------------------------------------------------------------------- drawing
function resize() {
  const r = canvas.getBoundingClientRect();
  const W = Math.max(1, Math.round(r.width)), H = Math.max(1, Math.round(r.height));
  if (canvas.width !== W || canvas.height !== H) { canvas.width = W; canvas.height = H; }
}

let drawMs = 0;
function draw() {
  const started = performance.now();
  resize();
  const W = canvas.width, H = canvas.height;
  const image = ctx.createImageData(W, H);
  const px = image.data;
  for (let i = 0; i < px.length; i += 4) { px[i] = 17; px[i + 1] = 17; px[i + 2] = 17; px[i + 3] = 255; }
  idxBuf = new Int32Array(W * H).fill(-1);
  const zbuf = new Float32Array(W * H).fill(-Infinity);
  if (xyz) {
    const n = xyz.length / 3;
    const size = view.scale > 25 ? 3 : 2;
    const palette = new Map();
    let zmin = Infinity, zmax = -Infinity;
    for (let i = 0; i < n; i += 97) { const z = xyz[3 * i + 2]; if (Number.isFinite(z)) { zmin = Math.min(zmin, z); zmax = Math.max(zmax, z); } }
    const zr = Math.max(zmax - zmin, 1e-3);
    for (let i = 0; i < n; i++) {
      const x = xyz[3 * i], y = xyz[3 * i + 1], z = xyz[3 * i + 2];
      if (!(Number.isFinite(x) && Number.isFinite(y) && Number.isFinite(z))) continue;
      const p = project(x, y, z, W, H);
      const sx = Math.round(p[0]), sy = Math.round(p[1]);
      if (sx < -size || sy < -size || sx >= W || sy >= H) continue;
      let c;
      const label = labels ? labels[i] : 0;
      const depth = label < 0 ? p[2] - 1e6 : p[2];  // out-of-range points never hide others
      if (label < 0) c = [45, 45, 55];  // outside --max-range: drawn dim, not clickable
      else if (colourMode === "uncertainty" && unc) {
        c = ramp(Number.isFinite(unc[i]) ? unc[i] / uncMax : 0);
      } else if (label > 0) {
        c = palette.get(label);
        if (!c) { c = objectColour(label); palette.set(label, c); }
      } else {
        const g = 70 + Math.round(110 * Math.min(Math.max((z - zmin) / zr, 0), 1));
        c = [g, g, g];
      }
      for (let oy = 0; oy < size; oy++) {
        const yy = sy + oy; if (yy < 0 || yy >= H) continue;
        for (let ox = 0; ox < size; ox++) {
          const xx = sx + ox; if (xx < 0 || xx >= W) continue;
          const k = yy * W + xx;
          if (depth <= zbuf[k]) continue;
          zbuf[k] = depth; idxBuf[k] = label < 0 ? -1 : i;
          px[4 * k] = c[0]; px[4 * k + 1] = c[1]; px[4 * k + 2] = c[2];
        }
      }
    }
  }
  ctx.putImageData(image, 0, 0);
  drawMarkers(W, H);
  drawLegend();
  drawMs = performance.now() - started;
}

function drawMarkers(W, H) {
  if (!state || !state.ok) return;
  ctx.lineWidth = 2;
  for (const click of state.clicks) {
    const [x, y] = project(...click.position, W, H);
    ctx.strokeStyle = click.object_id === 0 ? "#ff4040" : "#ffffff";
    ctx.beginPath();
    if (click.object_id === 0) {
      ctx.moveTo(x - 5, y - 5); ctx.lineTo(x + 5, y + 5); ctx.moveTo(x + 5, y - 5); ctx.lineTo(x - 5, y + 5);
    } else {
      ctx.arc(x, y, 5, 0, 2 * Math.PI);
    }
    ctx.stroke();
  }
  if (state.suggested_click) {
    const [x, y] = project(...state.suggested_click, W, H);
    ctx.strokeStyle = "#ffd000";
    ctx.beginPath(); ctx.arc(x, y, 9, 0, 2 * Math.PI); ctx.stroke();
    ctx.beginPath(); ctx.arc(x, y, 3, 0, 2 * Math.PI); ctx.stroke();
  }
}

function drawLegend() {
  const el = $("legend");
  if (colourMode === "uncertainty") {
    el.textContent = `uncertainty 0 (blue) … ${uncMax.toFixed(3)} (red)`;
  } else {
    el.textContent = "labels: grey = background (shaded by height), colours = objects";
  }
}

// ----------------------------------------------------------------------------- server
async function api(action, body) {
  busy++; $("busy").hidden = false;
  try {
    const response = await fetch(`api/${action}`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}),
    });
    const payload = await response.json();
    if (!response.ok) { showError(payload.error || `HTTP ${response.status}`); return; }
    await apply(payload);
  } catch (error) {
    showError(`server not reachable: ${error}`);
  } finally {
    busy--; $("busy").hidden = busy > 0 ? false : true;
  }
}

async function fetchBinary(path) {
  const response = await fetch(path);
  return response.arrayBuffer();
}

async function apply(next) {
  state = next;
  if (state.frame_token !== frameToken) {
    frameToken = state.frame_token;
    const buffer = await fetchBinary("api/cloud");
    xyz = buffer.byteLength ? new Float32Array(buffer) : null;
    labels = null; unc = null; labelVersion = -1;
    needFit = true;
  }
  if (state.version !== labelVersion) {
    const buffer = await fetchBinary("api/labels");
    if (buffer.byteLength && xyz) {
      const n = xyz.length / 3;
      labels = new Int32Array(buffer, 0, n);
      unc = new Float32Array(buffer, 4 * n, n);
      uncMax = 0;
      for (let i = 0; i < n; i++) if (Number.isFinite(unc[i]) && unc[i] > uncMax) uncMax = unc[i];
      if (!(uncMax > 0)) uncMax = 1;
    } else { labels = null; unc = null; }
    labelVersion = state.version;
  }
  if (needFit) { fitView(); needFit = false; }
  renderPanel();
  draw();
  document.body.dataset.version = String(state.version);
  document.body.dataset.frame = state.frame_name;
  document.body.dataset.ready = "1";
}

function showError(message) {
  $("error").textContent = message;
}

function renderPanel() {
  const s = state;
  const src = s.source ? `${s.source.kind}: ${s.source.description}` : "no input open";
  const rank = s.order === "triage" ? `, triage rank ${s.position + 1}` : "";
  $("frame").textContent = `${src}\nframe ${s.frame_index + 1} / ${s.frames}: ${s.frame_name}` +
    ` (${s.num_points} points${rank})`;
  $("active").textContent = String(s.active_object);
  showError(s.error || "");
  $("notice").textContent = s.notice || "";
  const body = $("objects").querySelector("tbody");
  body.textContent = "";
  const ids = new Set(s.objects.map((o) => o.id));
  const rows = s.objects.slice();
  if (!ids.has(s.active_object)) rows.push({ id: s.active_object, points: 0, mean_uncertainty: 0, clicks: 0 });
  for (const o of rows) {
    const tr = document.createElement("tr");
    tr.dataset.object = String(o.id);
    if (o.id === s.active_object) tr.className = "active";
    if (o.id > 0) { tr.classList.add("clickable"); tr.addEventListener("click", () => api("active", { object_id: o.id })); }
    const name = document.createElement("td");
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = o.id > 0 ? cssColour(objectColour(o.id)) : "#888";
    name.append(sw, o.id === 0 ? "background" : `object ${o.id}`);
    tr.append(name);
    for (const v of [o.points, o.mean_uncertainty.toFixed(4), o.clicks]) {
      const td = document.createElement("td"); td.textContent = String(v); tr.append(td);
    }
    body.append(tr);
  }
  let carry = "";
  if (s.carry) {
    carry = `carried ${s.carry.carried} clicks from ${s.carry.from_frame}` + (s.carry.through_poses ? " (through /tf poses)" : "");
    for (const m of s.carry.missed) carry += `\nclick ${m.click} (object ${m.object_id}) at ${m.position.join(", ")} landed on no point`;
  }
  $("carry").textContent = carry;
  $("colour").textContent = `colour: ${colourMode}`;
  $("folder").textContent = `session folder: ${s.session_folder}` + (s.decode_ms != null ? ` · decode ${s.decode_ms} ms` : "");
}

// ----------------------------------------------------------------------------- picking
function pick(sx, sy, radius = 6) {
  if (!idxBuf) return -1;
  const W = canvas.width, H = canvas.height;
  let best = -1, bestD = Infinity;
  for (let dy = -radius; dy <= radius; dy++) {
    for (let dx = -radius; dx <= radius; dx++) {
      const x = sx + dx, y = sy + dy;
      if (x < 0 || y < 0 || x >= W || y >= H) continue;
      const i = idxBuf[y * W + x];
      const d = dx * dx + dy * dy;
      if (i >= 0 && d < bestD) { best = i; bestD = d; }
    }
  }
  return best;
}

// For scripted tests: the canvas pixel (CSS px, relative to the canvas) where the most points of
// the given set are visible around, or null.
function findPixel(indices) {
  if (!idxBuf) return null;
  const set = new Set(indices), W = canvas.width, H = canvas.height;
  let best = null, bestCount = 0;
  for (let y = 3; y < H - 3; y++) {
    for (let x = 3; x < W - 3; x++) {
      if (!set.has(idxBuf[y * W + x])) continue;
      let count = 0;
      for (let dy = -3; dy <= 3; dy++) for (let dx = -3; dx <= 3; dx++) if (set.has(idxBuf[(y + dy) * W + x + dx])) count++;
      if (count > bestCount) { bestCount = count; best = [x, y]; }
    }
  }
  return best;
}
window.npiseg = {
  findPixel, pick: (x, y) => pick(x, y, 0), get state() { return state; }, get view() { return view; },
  get drawMs() { return drawMs; },
};

// ----------------------------------------------------------------------------- input
let drag = null;
canvas.addEventListener("contextmenu", (e) => e.preventDefault());
canvas.addEventListener("mousedown", (e) => {
  drag = { x: e.offsetX, y: e.offsetY, button: e.button, moved: false, view: { ...view } };
  canvas.focus();
});
window.addEventListener("mousemove", (e) => {
  if (!drag) return;
  const r = canvas.getBoundingClientRect();
  const x = e.clientX - r.left, y = e.clientY - r.top;
  const dx = x - drag.x, dy = y - drag.y;
  if (Math.abs(dx) + Math.abs(dy) > 4) drag.moved = true;
  if (!drag.moved) return;
  if (drag.button === 2) {
    view.yaw = drag.view.yaw + dx * 0.01;
    view.pitch = Math.min(Math.PI / 2, Math.max(0, drag.view.pitch + dy * 0.01));
  } else {
    const c = Math.cos(view.yaw), s = Math.sin(view.yaw), sp = Math.max(Math.sin(view.pitch), 0.2);
    const ux = -dx / view.scale, uy = dy / view.scale / sp;
    view.cx = drag.view.cx + c * ux + s * uy;
    view.cy = drag.view.cy - s * ux + c * uy;
  }
  draw();
});
window.addEventListener("mouseup", (e) => {
  if (!drag) return;
  const wasClick = !drag.moved && drag.button === 0;
  const start = drag;
  drag = null;
  if (!wasClick || !state || !state.ok) return;
  const index = pick(Math.round(start.x), Math.round(start.y));
  if (index < 0) { showError("no point under the cursor: click on a point"); return; }
  api("click", { point_index: index, background: e.shiftKey || e.ctrlKey || e.altKey || e.metaKey });
});
canvas.addEventListener("wheel", (e) => {
  e.preventDefault();
  view.scale *= Math.exp(-e.deltaY * 0.001);
  draw();
}, { passive: false });

function toggleColour() { colourMode = colourMode === "labels" ? "uncertainty" : "labels"; renderPanel(); draw(); }
$("prev").onclick = () => api("step", { delta: -1 });
$("next").onclick = () => api("step", { delta: 1 });
$("newobj").onclick = () => api("new_object");
$("undo").onclick = () => api("undo");
$("reset").onclick = () => api("reset");
$("colour").onclick = toggleColour;
$("top").onclick = () => { view.pitch = Math.PI / 2; view.yaw = 0; draw(); };
$("tilt").onclick = () => { view.pitch = 0.6; draw(); };
$("goto").onclick = () => {
  const n = Number($("gotoframe").value);
  if (!Number.isInteger(n) || n < 1) { showError("frame number: an integer from 1"); return; }
  api("goto", { index: n - 1 });
};
$("open").onclick = () => api("open", { path: $("openpath").value, topic: $("opentopic").value });
window.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT") return;
  const k = e.key;
  if ((k === "z" && (e.ctrlKey || e.metaKey)) || k === "u") api("undo");
  else if (k === "n") api("new_object");
  else if (k === "r") api("reset");
  else if (k === "ArrowRight" || k === "d") api("step", { delta: 1 });
  else if (k === "ArrowLeft" || k === "a") api("step", { delta: -1 });
  else if (k === "c") toggleColour();
  else if (k === "t") $("top").onclick();
  else if (k === "v") $("tilt").onclick();
  else return;
  e.preventDefault();
});
window.addEventListener("resize", () => draw());

fetch("api/state").then((r) => r.json()).then(apply).catch((error) => showError(`server not reachable: ${error}`));
