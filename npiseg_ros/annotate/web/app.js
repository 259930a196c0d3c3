// npiseg-annotate page: a thin client of the server's JSON API with two renderers behind one
// interface ("View interface" below): the 3-D view on three.js (view3d.js, WebGL; when
// scripts/setup.sh installed three.js) and, as the fallback, a software point renderer on a
// 2-D canvas (orthographic, rotatable, z-buffered, picking through a per-pixel index buffer).
// ?view=2d forces the fallback.
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("cloud");
const ctx = canvas.getContext("2d");

let xyz = null;            // Float32Array 3N
let labels = null;         // Int32Array N
let unc = null;            // Float32Array N
let intensity = null;      // Float32Array N or null
let state = null;
let ontology = null;
let colourMode = "labels";
let frameToken = -1;
let labelVersion = -1;
let busy = 0;
let needFit = false;
let view = null;           // the renderer in use
let boxes = {};            // object id -> {center, size, yaw} of the shown labels
let boxesVersion = -1;

// Colour scales fixed across frames, so that a colour means the same in every frame.
const UNCERTAINTY_MAX = 0.7;           // ~ln 2: object vs background fully unsure
const HEIGHT_RANGE = [-2.5, 3.5];      // metres in the sensor frame (road ~ -1.7 m)
let intensityMax = null;               // 1 or 255, fixed by the first frame with intensity
const COLOUR_MODES = ["labels", "uncertainty", "intensity", "height"];

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
function ramp(t) {  // dark blue -> cyan -> yellow -> red
  t = Math.min(Math.max(t, 0), 1);
  const stops = [[20, 30, 110], [0, 170, 200], [240, 220, 40], [230, 40, 30]];
  const f = t * (stops.length - 1), i = Math.min(Math.floor(f), stops.length - 2), u = f - i;
  return stops[i].map((v, k) => Math.round(v + (stops[i + 1][k] - v) * u));
}
const cssColour = (c) => `rgb(${c[0]},${c[1]},${c[2]})`;

// (rgb Uint8Array 3N, pickable Uint8Array N) of the current frame in the current colouring
function colours() {
  const n = xyz.length / 3, rgb = new Uint8Array(3 * n), pickable = new Uint8Array(n);
  const palette = new Map();
  for (let i = 0; i < n; i++) {
    const z = xyz[3 * i + 2];
    if (!Number.isFinite(z)) continue;
    const label = labels ? labels[i] : 0;
    let c;
    if (label < 0) c = [45, 45, 55];  // outside --max-range: dim, not clickable
    else if (colourMode === "uncertainty" && unc) c = ramp(Number.isFinite(unc[i]) ? unc[i] / UNCERTAINTY_MAX : 0);
    else if (colourMode === "intensity" && intensity) c = ramp(intensity[i] / intensityMax);
    else if (colourMode === "height") c = ramp((z - HEIGHT_RANGE[0]) / (HEIGHT_RANGE[1] - HEIGHT_RANGE[0]));
    else if (label > 0) {
      c = palette.get(label);
      if (!c) { c = objectColour(label); palette.set(label, c); }
    } else {
      const g = 70 + Math.round(110 * Math.min(Math.max((z - HEIGHT_RANGE[0]) / (HEIGHT_RANGE[1] - HEIGHT_RANGE[0]), 0), 1));
      c = [g, g, g];
    }
    rgb[3 * i] = c[0]; rgb[3 * i + 1] = c[1]; rgb[3 * i + 2] = c[2];
    pickable[i] = label < 0 ? 0 : 1;
  }
  return [rgb, pickable];
}

// For scripted tests: in an index buffer (Int32Array W*H, the point drawn at each pixel, -1
// none), the pixel around which the most of `indices` are visible, or null.
function densestPixel(ids, W, H, indices) {
  const set = new Set(indices);
  let best = null, bestCount = 0;
  for (let y = 3; y < H - 3; y++) for (let x = 3; x < W - 3; x++) {
    if (!set.has(ids[y * W + x])) continue;
    let count = 0;
    for (let dy = -3; dy <= 3; dy++) for (let dx = -3; dx <= 3; dx++) if (set.has(ids[(y + dy) * W + x + dx])) count++;
    if (count > bestCount) { bestCount = count; best = [x, y]; }
  }
  return best;
}

// ----------------------------------------------------------------------------- View interface
// draw(), pick(x, y) -> point index or -1, findPixel(indices) -> [x, y] or null,
// pan(dx, dy), rotate(dyaw, dpitch), zoomAt(x, y, factor), look(yaw, pitch),
// setProjection("perspective" | "orthographic"), fitTo(points [Vector-like], extent metres),
// setCloud(xyz), setColours(rgb, pickable), setMarkers(list), setBoxes(list), pointSize,
// drawMs, element, kind.
function createView2D() {
  const cam = { cx: 0, cy: 0, cz: 0, yaw: 0, pitch: Math.PI / 2, scale: 10, projection: "orthographic" };
  let rgb = null, pickable = null, markers = [], boxList = [], idxBuf = null, drawMs = 0, size = 2;
  const project = (x, y, z, W, H) => {
    const dx = x - cam.cx, dy = y - cam.cy, dz = z - cam.cz;
    const cy = Math.cos(cam.yaw), sy = Math.sin(cam.yaw);
    const x1 = cy * dx - sy * dy, y1 = sy * dx + cy * dy;
    const sp = Math.sin(cam.pitch), cp = Math.cos(cam.pitch);
    return [W / 2 + x1 * cam.scale, H / 2 - (y1 * sp + dz * cp) * cam.scale, -y1 * cp + dz * sp];
  };
  function resize() {
    const r = canvas.getBoundingClientRect();
    const W = Math.max(1, Math.round(r.width)), H = Math.max(1, Math.round(r.height));
    if (canvas.width !== W || canvas.height !== H) { canvas.width = W; canvas.height = H; }
    return [W, H];
  }
  function draw() {
    const started = performance.now();
    const [W, H] = resize();
    const image = ctx.createImageData(W, H), px = image.data;
    for (let i = 0; i < px.length; i += 4) { px[i] = 17; px[i + 1] = 17; px[i + 2] = 17; px[i + 3] = 255; }
    idxBuf = new Int32Array(W * H).fill(-1);
    const zbuf = new Float32Array(W * H).fill(-Infinity);
    if (xyz && rgb) {
      const n = xyz.length / 3, s = Math.round(size * (cam.scale > 25 ? 1.5 : 1));
      for (let i = 0; i < n; i++) {
        const x = xyz[3 * i], y = xyz[3 * i + 1], z = xyz[3 * i + 2];
        if (!(Number.isFinite(x) && Number.isFinite(y) && Number.isFinite(z))) continue;
        const p = project(x, y, z, W, H), sx = Math.round(p[0]), sy = Math.round(p[1]);
        if (sx < -s || sy < -s || sx >= W || sy >= H) continue;
        const depth = pickable[i] ? p[2] : p[2] - 1e6;  // unclickable points never hide others
        for (let oy = 0; oy < s; oy++) {
          const yy = sy + oy; if (yy < 0 || yy >= H) continue;
          for (let ox = 0; ox < s; ox++) {
            const xx = sx + ox; if (xx < 0 || xx >= W) continue;
            const k = yy * W + xx;
            if (depth <= zbuf[k]) continue;
            zbuf[k] = depth; idxBuf[k] = pickable[i] ? i : -1;
            px[4 * k] = rgb[3 * i]; px[4 * k + 1] = rgb[3 * i + 1]; px[4 * k + 2] = rgb[3 * i + 2];
          }
        }
      }
    }
    ctx.putImageData(image, 0, 0);
    ctx.lineWidth = 2;
    for (const m of markers) {
      const [x, y] = project(...m.position, W, H);
      ctx.strokeStyle = cssColour(m.colour);
      ctx.beginPath(); ctx.arc(x, y, m.big ? 9 : 5, 0, 2 * Math.PI); ctx.stroke();
    }
    for (const b of boxList) {
      const [l, w] = [b.size[0] / 2, b.size[1] / 2], c = Math.cos(b.yaw), s2 = Math.sin(b.yaw);
      ctx.strokeStyle = cssColour(b.colour);
      ctx.beginPath();
      [[l, w], [l, -w], [-l, -w], [-l, w], [l, w]].forEach(([u, v], k) => {
        const [x, y] = project(b.center[0] + c * u - s2 * v, b.center[1] + s2 * u + c * v, b.center[2], W, H);
        if (k) ctx.lineTo(x, y); else ctx.moveTo(x, y);
      });
      ctx.stroke();
    }
    drawMs = performance.now() - started;
  }
  function pick(sx, sy, radius = 6) {
    if (!idxBuf) return -1;
    const W = canvas.width, H = canvas.height;
    let best = -1, bestD = Infinity;
    for (let dy = -radius; dy <= radius; dy++) for (let dx = -radius; dx <= radius; dx++) {
      const x = sx + dx, y = sy + dy;
      if (x < 0 || y < 0 || x >= W || y >= H) continue;
      const i = idxBuf[y * W + x], d = dx * dx + dy * dy;
      if (i >= 0 && d < bestD) { best = i; bestD = d; }
    }
    return best;
  }
  function findPixel(indices) {
    return idxBuf ? densestPixel(idxBuf, canvas.width, canvas.height, indices) : null;
  }
  const axes = () => {  // screen right / up in world coordinates
    const c = Math.cos(cam.yaw), s = Math.sin(cam.yaw), sp = Math.sin(cam.pitch), cp = Math.cos(cam.pitch);
    return [[c, -s, 0], [sp * s, sp * c, cp]];
  };
  return {
    kind: "canvas", element: canvas, cam,
    get drawMs() { return drawMs; },
    get pointSize() { return size; }, set pointSize(v) { size = Math.min(Math.max(Math.round(v), 1), 8); },
    setCloud() { rgb = null; pickable = null; },
    setColours(c, p) { rgb = c; pickable = p; },
    setMarkers(list) { markers = list; },
    setBoxes(list) { boxList = list; },
    draw, pick, findPixel,
    pan(dx, dy) {
      const [right, up] = axes();
      cam.cx += (-dx * right[0] + dy * up[0]) / cam.scale;
      cam.cy += (-dx * right[1] + dy * up[1]) / cam.scale;
      cam.cz += (-dx * right[2] + dy * up[2]) / cam.scale;
    },
    rotate(dyaw, dpitch) { cam.yaw += dyaw; cam.pitch = Math.min(Math.PI / 2, Math.max(0, cam.pitch + dpitch)); },
    zoomAt(sx, sy, factor) {
      const [W, H] = [canvas.width, canvas.height], [right, up] = axes();
      const u = (sx - W / 2) / cam.scale, v = (H / 2 - sy) / cam.scale;
      for (let k = 0; k < 3; k++) {
        const shift = (u * right[k] + v * up[k]) * (1 - 1 / factor);
        if (k === 0) cam.cx += shift; else if (k === 1) cam.cy += shift; else cam.cz += shift;
      }
      cam.scale *= factor;
    },
    setProjection() { cam.projection = "orthographic"; },  // software view: orthographic only
    look(yaw, pitch) { cam.yaw = yaw; cam.pitch = pitch; },
    fitTo(points3, extent) {
      if (!points3.length) return;
      let x = 0, y = 0, z = 0;
      for (const p of points3) { x += p.x; y += p.y; z += p.z; }
      cam.cx = x / points3.length; cam.cy = y / points3.length; cam.cz = z / points3.length;
      const [W, H] = resize();
      cam.scale = 0.9 * Math.min(W, H) / Math.max(extent, 0.5);
    },
  };
}

// ----------------------------------------------------------------------------- view commands
const point = (i) => ({ x: xyz[3 * i], y: xyz[3 * i + 1], z: xyz[3 * i + 2] });

function fitView() {  // the whole labelled cloud, top-down
  if (!xyz) return;
  const n = xyz.length / 3, step = Math.max(1, Math.floor(n / 20000)), xs = [], ys = [], zs = [];
  for (let i = 0; i < n; i += step) {
    const x = xyz[3 * i], y = xyz[3 * i + 1], z = xyz[3 * i + 2];
    if (labels && labels[i] < 0) continue;  // outside --max-range: context only
    if (Number.isFinite(x) && Number.isFinite(y) && Number.isFinite(z)) { xs.push(x); ys.push(y); zs.push(z); }
  }
  if (!xs.length) return;
  const q = (a, p) => { a.sort((u, v) => u - v); return a[Math.min(a.length - 1, Math.floor(p * a.length))]; };
  const x0 = q(xs, 0.01), x1 = q(xs, 0.99), y0 = q(ys, 0.01), y1 = q(ys, 0.99);
  view.look(0, Math.PI / 2);
  view.fitTo([{ x: (x0 + x1) / 2, y: (y0 + y1) / 2, z: q(zs, 0.5) }], Math.max(x1 - x0, y1 - y0));
}

function activeBox() {
  const box = boxes[String(state && state.active_object)];
  if (!box) showError(`object ${state ? state.active_object : "?"} has no points in this frame`);
  return box || null;
}

function focusObject(side = null) {  // the active object; side: "side" | "front" | null
  const box = activeBox();
  if (!box) return;
  // pitch 0 looks horizontally along (-sin yaw, -cos yaw): side = along the box's width
  // axis, front = back along its heading (camera ahead of the object)
  if (side === "side") view.look(Math.PI - box.yaw, 0);
  else if (side === "front") view.look(Math.atan2(-Math.cos(box.yaw), -Math.sin(box.yaw)), 0);
  else view.look(view.cam.yaw, Math.min(view.cam.pitch, 1.0));
  view.fitTo([{ x: box.center[0], y: box.center[1], z: box.center[2] }],
    1.6 * Math.max(box.size[0], box.size[1], box.size[2]));
  redraw();
}

function redraw() {
  if (!view) return;
  if (xyz) {
    const [rgb, pickable] = colours();
    view.setColours(rgb, pickable);
  }
  const list = [];
  if (state && state.ok) {
    for (const c of state.clicks) list.push({ position: c.position, colour: c.object_id === 0 ? [255, 64, 64] : [255, 255, 255] });
    if (state.suggested_click) list.push({ position: state.suggested_click, colour: [255, 208, 0], big: true });
  }
  view.setMarkers(list);
  view.setBoxes(Object.entries(boxes).map(([id, b]) => ({ ...b,
    colour: Number(id) === (state && state.active_object) ? [255, 255, 255] : objectColour(Number(id)) })));
  view.draw();
  drawLegend();
}

function drawLegend() {
  const scale = { uncertainty: `uncertainty 0 (blue) … ${UNCERTAINTY_MAX} (red), fixed`,
    intensity: intensity ? `intensity 0 … ${intensityMax} (fixed)` : "no intensity in this frame",
    height: `height ${HEIGHT_RANGE[0]} … ${HEIGHT_RANGE[1]} m (fixed)`,
    labels: "labels: grey = background (shaded by height), colours = objects (by track id)" };
  $("legend").textContent = `${scale[colourMode]} · ${view.kind === "webgl" ? "WebGL" : "2-D canvas"}` +
    ` · ${view.cam.projection} · point size ${view.pointSize}`;
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
    busy--; $("busy").hidden = busy <= 0;
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
    const values = await fetchBinary("api/intensity");
    intensity = values.byteLength ? new Float32Array(values) : null;
    if (intensity && intensityMax === null) {
      let high = 0;
      for (let i = 0; i < intensity.length; i += 7) if (intensity[i] > high) high = intensity[i];
      intensityMax = high > 1.0 ? 255 : 1;
    }
    labels = null; unc = null; labelVersion = -1; boxes = {}; boxesVersion = -1;
    view.setCloud(xyz);
    needFit = true;
  }
  if (state.version !== labelVersion) {
    const buffer = await fetchBinary("api/labels");
    if (buffer.byteLength && xyz) {
      const n = xyz.length / 3;
      labels = new Int32Array(buffer, 0, n);
      unc = new Float32Array(buffer, 4 * n, n);
    } else { labels = null; unc = null; }
    labelVersion = state.version;
    if (state.ok && state.objects.length > 1) {
      const fetched = await (await fetch("api/boxes")).json();
      boxes = fetched.boxes; boxesVersion = fetched.version;
    } else { boxes = {}; }
  }
  // the camera panel (beside the view) before fitting the view to its width
  $("camera").hidden = !(state.source && state.source.cameras && state.source.cameras.length);
  if (needFit) { fitView(); needFit = false; }
  renderPanel();
  redraw();
  document.body.dataset.version = String(state.version);
  document.body.dataset.frame = state.frame_name;
  document.body.dataset.ready = "1";
  syncCamera();  // not awaited: the overlay follows on its own
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
  $("active").textContent = `${s.active_object} (${s.active_class || "no class"})`;
  $("status").textContent = `review: ${s.status.replace("_", " ")} · ` +
    `${s.status_counts.accepted} accepted, ${s.status_counts.needs_fix} to fix, ${s.status_counts.todo} to do`;
  $("status").className = `status-${s.status}`;
  showError(s.error || "");
  $("notice").textContent = s.notice || "";
  if ($("classpick").value !== s.current_class) $("classpick").value = s.current_class;
  const body = $("objects").querySelector("tbody");
  body.textContent = "";
  const ids = new Set(s.objects.map((o) => o.id));
  const rows = s.objects.slice();
  if (!ids.has(s.active_object)) rows.push({ id: s.active_object, points: 0, mean_uncertainty: 0, clicks: 0, class: s.active_class });
  for (const o of rows) {
    const tr = document.createElement("tr");
    tr.dataset.object = String(o.id);
    if (o.id === s.active_object) tr.className = "active";
    if (o.id > 0) { tr.classList.add("clickable"); tr.addEventListener("click", () => api("active", { object_id: o.id })); }
    const name = document.createElement("td");
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = o.id > 0 ? cssColour(objectColour(o.id)) : "#888";
    name.append(sw, o.id === 0 ? "background" : `${o.id} ${o.class || "(no class)"}`);
    tr.append(name);
    for (const v of [o.points, o.mean_uncertainty.toFixed(4), o.clicks]) {
      const td = document.createElement("td"); td.textContent = String(v); tr.append(td);
    }
    body.append(tr);
  }
  renderAttributes();
  let carry = "";
  if (s.carry) {
    carry = s.carry.mode === "masks"
      ? `tracked ${Object.keys(s.carry.objects).length} objects from ${s.carry.from_frame} (${s.carry.carried} clicks)`
      : `carried ${s.carry.carried} clicks from ${s.carry.from_frame}`;
    if (s.carry.through_poses) carry += " (through /tf poses)";
    for (const m of s.carry.missed) carry += `\nclick ${m.click} (object ${m.object_id}) at ${m.position.join(", ")} landed on no point`;
  }
  if (s.prior) carry += (carry ? "\n" : "") + `previous mask: ${s.prior}`;
  $("carry").textContent = carry;
  $("colour").textContent = `colour: ${colourMode}`;
  $("projection").textContent = view.cam.projection === "perspective" ? "perspective" : "orthographic";
  $("folder").textContent = `session folder: ${s.session_folder}` + (s.decode_ms != null ? ` · decode ${s.decode_ms} ms` : "") +
    (s.dirty ? " · exports pending" : s.exported.length ? ` · exported ${s.exported.length} files` : "");
}

function renderAttributes() {
  const box = $("attributes");
  box.textContent = "";
  const cls = state.active_class;
  if (!ontology || !cls) return;
  const record = state.objects.find((o) => o.id === state.active_object);
  const current = (record && record.attributes) || {};
  for (const attribute of ontology.attributes) {
    if (attribute.classes.length && !attribute.classes.includes(cls)) continue;
    const label = document.createElement("label");
    label.textContent = `${attribute.name} `;
    const select = document.createElement("select");
    select.dataset.attribute = attribute.name;
    for (const value of attribute.values) {
      const option = document.createElement("option");
      option.value = JSON.stringify(value); option.textContent = String(value);
      if (JSON.stringify(current[attribute.name] ?? attribute.default) === option.value) option.selected = true;
      select.append(option);
    }
    select.addEventListener("change", () => api("attribute", { name: attribute.name, value: JSON.parse(select.value) }));
    label.append(select);
    box.append(label);
  }
}

// ----------------------------------------------------------------------------- camera overlay
// Beside the 3-D view when the bag has cameras: the frame's image with its points drawn by the
// server (GET api/camera, a PNG) in the labels colouring, or uncertainty while the view shows
// uncertainty. One request at a time, always for the newest (camera, frame, labels version,
// colouring); answers are kept per such key, so undo, stepping back or colour toggles are free.
let cameras = [];                  // api/cameras of the open source
let camerasOf = null;              // the source they were listed for
const cameraCache = new Map();     // key -> {url, note, problem}, oldest first
const CAMERA_CACHE_SIZE = 16;
let cameraWanted = "";             // the overlay the page should show
let cameraShown = "";              // the overlay shown
let cameraFetching = false;

async function syncCamera() {
  await refreshCameras();
  await updateCamera();
}

async function refreshCameras() {  // the source's cameras, listed once per source
  const source = state.source, description = source ? source.description : null;
  if (description === camerasOf) return;
  camerasOf = description;
  cameras = [];
  if (source && source.cameras && source.cameras.length) {
    try { cameras = (await (await fetch("api/cameras")).json()).cameras || []; } catch (error) { cameras = []; }
  }
  const pick = $("camerapick");
  pick.textContent = "";
  for (const c of cameras) {
    const option = document.createElement("option");
    option.value = c.topic; option.disabled = !c.usable;
    option.textContent = c.usable ? `${c.topic} (${c.width}×${c.height})` : `${c.topic}: ${c.problem}`;
    pick.append(option);
  }
  const usable = cameras.find((c) => c.usable);
  if (usable) pick.value = usable.topic;
  pick.hidden = cameras.length < 2;
  if (!usable) showCameraNote(cameras.map((c) => `${c.topic}: ${c.problem}`).join("\n"), true);
}

const overlayColouring = () => (colourMode === "uncertainty" ? "uncertainty" : "labels");

function cameraKey() {
  const camera = cameras.find((c) => c.topic === $("camerapick").value);
  if (!camera || !camera.usable || !state || !state.ok) return "";
  return JSON.stringify([camera.topic, state.frame_index, state.version, overlayColouring()]);
}

async function updateCamera() {
  cameraWanted = cameraKey();
  if (!cameraWanted) {
    if (cameras.some((c) => c.usable)) { $("cameraimg").removeAttribute("src"); showCameraNote("no usable points in this frame", true); }
    return;
  }
  if (cameraFetching) return;  // the request in flight fetches the newest key when it ends
  cameraFetching = true;
  try {
    while (cameraWanted && !cameraCache.has(cameraWanted)) {
      const key = cameraWanted, result = await fetchOverlay(key);
      if (result) rememberOverlay(key, result);
      else if (key === cameraWanted) break;  // the frame moved on: the newer state asks again
    }
  } finally { cameraFetching = false; }
  showOverlay(cameraWanted);
}

async function fetchOverlay(key) {  // {url, note, problem}, or null when the frame moved on (409)
  const [topic, frame, , colouring] = JSON.parse(key);
  const query = new URLSearchParams({ camera: topic, frame: String(frame), colour: colouring });
  try {
    const response = await fetch(`api/camera?${query}`);
    if (response.status === 409) return null;
    if (!response.ok) return { url: null, note: (await response.json()).error, problem: true };
    const info = JSON.parse(response.headers.get("X-Npiseg-Camera") || "{}");
    const offset = `${info.offset_s >= 0 ? "+" : ""}${Number(info.offset_s).toFixed(3)}`;
    return { url: URL.createObjectURL(await response.blob()), problem: false,
      note: `${info.camera}: image ${offset} s from the sweep · ${info.points} points drawn (${colouring})` };
  } catch (error) {
    return { url: null, note: `camera image not available: ${error}`, problem: true };
  }
}

function rememberOverlay(key, result) {
  cameraCache.set(key, result);
  while (cameraCache.size > CAMERA_CACHE_SIZE) {
    const [oldest, entry] = cameraCache.entries().next().value;
    cameraCache.delete(oldest);
    if (entry.url && entry.url !== $("cameraimg").getAttribute("src")) URL.revokeObjectURL(entry.url);
  }
}

function showOverlay(key) {
  const entry = cameraCache.get(key);
  if (!entry) return;
  const img = $("cameraimg"), previous = img.getAttribute("src");
  if (entry.url) img.src = entry.url; else img.removeAttribute("src");
  if (previous && previous !== entry.url && ![...cameraCache.values()].some((e) => e.url === previous)) {
    URL.revokeObjectURL(previous);
  }
  showCameraNote(entry.note, entry.problem);
  cameraShown = key;
}

function showCameraNote(text, problem) {
  $("cameranote").textContent = text;
  $("cameranote").className = problem ? "problem" : "";
}

// ----------------------------------------------------------------------------- test hooks
window.npiseg = {
  findPixel: (indices) => view.findPixel(indices), pick: (x, y) => view.pick(x, y, 0),
  get state() { return state; }, get view() { return view.cam; }, get drawMs() { return view.drawMs; },
  get renderer() { return view.kind; }, get element() { return view.element; },
  get camera() {  // the overlay: keys wanted and shown ([topic, frame, version, colouring])
    return { wanted: cameraWanted, shown: cameraShown, visible: !$("camera").hidden,
      note: $("cameranote").textContent };
  },
  drawTimes(count) {  // ms per frame while orbiting, GPU work included (a measurement hook)
    const times = [];
    for (let k = 0; k < count; k++) { view.rotate(0.01, 0); view.draw(true); times.push(view.drawMs); }
    return times;
  },
};

// ----------------------------------------------------------------------------- input
let drag = null;
function bindInput(element) {
  element.addEventListener("contextmenu", (e) => e.preventDefault());
  element.addEventListener("mousedown", (e) => {
    drag = { x: e.offsetX, y: e.offsetY, lastX: e.offsetX, lastY: e.offsetY, button: e.button, moved: false, element };
    element.focus();
  });
  element.addEventListener("wheel", (e) => {
    e.preventDefault();
    view.zoomAt(e.offsetX, e.offsetY, Math.exp(-e.deltaY * 0.001));
    redraw();
  }, { passive: false });
}
window.addEventListener("mousemove", (e) => {
  if (!drag) return;
  const r = drag.element.getBoundingClientRect();
  const x = e.clientX - r.left, y = e.clientY - r.top;
  if (Math.abs(x - drag.x) + Math.abs(y - drag.y) > 4) drag.moved = true;
  if (!drag.moved) return;
  const dx = x - drag.lastX, dy = y - drag.lastY;
  drag.lastX = x; drag.lastY = y;
  if (drag.button === 2) view.rotate(dx * 0.01, dy * 0.01); else view.pan(dx, dy);
  view.draw();
});
window.addEventListener("mouseup", (e) => {
  if (!drag) return;
  const wasClick = !drag.moved && drag.button === 0;
  const start = drag;
  drag = null;
  if (!wasClick || !state || !state.ok) return;
  const index = view.pick(Math.round(start.x), Math.round(start.y));
  if (index < 0) { showError("no point under the cursor: click on a point"); return; }
  api("click", { point_index: index, background: e.shiftKey || e.ctrlKey || e.altKey || e.metaKey });
});

function cycleColour() {
  colourMode = COLOUR_MODES[(COLOUR_MODES.indexOf(colourMode) + 1) % COLOUR_MODES.length];
  renderPanel(); redraw(); updateCamera();
}
function toggleProjection() {
  view.setProjection(view.cam.projection === "perspective" ? "orthographic" : "perspective");
  if (view.cam.projection === "perspective" && view.cam.pitch > 1.2) view.look(view.cam.yaw, 0.6);
  renderPanel(); redraw();
}
function pickClass(name) { api("class", { class: name }); }
const commands = {
  prev: () => api("step", { delta: -1 }), next: () => api("step", { delta: 1 }),
  newobj: () => api("new_object"), undo: () => api("undo"), reset: () => api("reset"),
  colour: cycleColour, projection: toggleProjection,
  top: () => { view.look(0, Math.PI / 2); redraw(); },
  tilt: () => { view.look(view.cam.yaw, 0.6); redraw(); },
  fit: () => { fitView(); redraw(); },
  focus: () => focusObject(null), side: () => focusObject("side"), front: () => focusObject("front"),
  bigger: () => { view.pointSize += 1; renderPanel(); redraw(); },
  smaller: () => { view.pointSize -= 1; renderPanel(); redraw(); },
  accept: () => api("status", { status: "accepted" }), fix: () => api("status", { status: "needs_fix" }),
  todo: () => api("status", { status: "todo" }),
  export: () => api("export"),
  propagate: () => api("propagate", { frames: Math.max(1, Number($("propagateframes").value) || 5) }),
};
for (const [id, run] of Object.entries(commands)) if ($(id)) $(id).onclick = run;
$("goto").onclick = () => {
  const n = Number($("gotoframe").value);
  if (!Number.isInteger(n) || n < 1) { showError("frame number: an integer from 1"); return; }
  api("goto", { index: n - 1 });
};
$("open").onclick = () => api("open", { path: $("openpath").value, topic: $("opentopic").value });
$("classpick").addEventListener("change", () => pickClass($("classpick").value));
$("camerapick").addEventListener("change", () => updateCamera());
const KEYS = { n: "newobj", r: "reset", ArrowRight: "next", d: "next", ArrowLeft: "prev", a: "prev",
  c: "colour", t: "top", v: "tilt", f: "fit", o: "focus", x: "side", y: "front", p: "projection",
  "+": "bigger", "=": "bigger", "-": "smaller", g: "accept", b: "fix", e: "export", l: "propagate" };
window.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
  const k = e.key;
  const cls = ontology && ontology.classes.find((c) => c.key && c.key === k);
  if ((k === "z" && (e.ctrlKey || e.metaKey)) || k === "u") commands.undo();
  else if (cls && !e.ctrlKey && !e.metaKey) pickClass(cls.name);
  else if (KEYS[k] && !e.ctrlKey && !e.metaKey) commands[KEYS[k]]();
  else return;
  e.preventDefault();
});
window.addEventListener("resize", () => redraw());

async function chooseView() {
  const wanted = new URLSearchParams(location.search).get("view");
  if (wanted !== "2d") {
    try {
      const viewer = await (await fetch("api/viewer")).json();
      if (viewer.three) {
        const module = await import("./view3d.js");
        const v = module.createView3D($("view"), densestPixel);
        canvas.hidden = true;
        bindInput(v.element);
        return v;
      }
    } catch (error) {
      console.warn(`3-D view unavailable, using the 2-D canvas: ${error}`);
    }
  }
  bindInput(canvas);
  return createView2D();
}

async function start() {
  view = await chooseView();
  try {
    ontology = await (await fetch("api/ontology")).json();
    for (const c of ontology.classes) {
      const option = document.createElement("option");
      option.value = c.name; option.textContent = c.key ? `${c.key}: ${c.name}` : c.name;
      $("classpick").append(option);
    }
    $("ontology").textContent = `classes: ${ontology.name}`;
  } catch (error) { showError(`no ontology: ${error}`); }
  apply(await (await fetch("api/state")).json());
}
start().catch((error) => showError(`server not reachable: ${error}`));
