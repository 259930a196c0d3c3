// npiseg-annotate 3-D view on three.js (WebGL): the sweep as GL points with the page's colours,
// perspective or orthographic camera about a target, exact picking of the point under the
// cursor through an offscreen index buffer, click markers and object boxes. Loaded by app.js
// with a dynamic import; when three.js is not installed (or WebGL is missing) the page keeps
// its own 2-D canvas renderer. Same interface as that renderer (app.js, "View interface").
import * as THREE from "./vendor/three.module.js";

// position and size of a point (perspective: uSize pixels at the target's depth, larger nearer)
const PLACE_POINT = `
  vec4 mv = modelViewMatrix * vec4(position, 1.0);
  gl_Position = projectionMatrix * mv;
  float size = uRefDepth > 0.0 ? uSize * uRefDepth / max(-mv.z, 1e-3) : uSize;
  gl_PointSize = clamp(size, 1.0, 16.0);`;
const DISPLAY_VERTEX = `
attribute vec3 color;
uniform float uSize;
uniform float uRefDepth;
varying vec3 vColor;
void main() {${PLACE_POINT}
  vColor = color;
}`;
const DISPLAY_FRAGMENT = `
varying vec3 vColor;
void main() { gl_FragColor = vec4(vColor, 1.0); }`;
// the pick pass draws each point's index + 1 as a 24-bit colour (0 = nothing)
const PICK_VERTEX = `
attribute float pickable;
attribute float pointIndex;
uniform float uSize;
uniform float uRefDepth;
varying vec3 vIndex;
varying float vPickable;
void main() {${PLACE_POINT}
  float id = pointIndex + 1.0;
  vIndex = vec3(mod(id, 256.0), mod(floor(id / 256.0), 256.0), floor(id / 65536.0)) / 255.0;
  vPickable = pickable;
}`;
const PICK_FRAGMENT = `
varying vec3 vIndex;
varying float vPickable;
void main() { if (vPickable < 0.5) discard; gl_FragColor = vec4(vIndex, 1.0); }`;
const MARKER_VERTEX = `
attribute vec3 color;
varying vec3 vColor;
void main() { gl_Position = projectionMatrix * modelViewMatrix * vec4(position, 1.0);
  gl_PointSize = 18.0; vColor = color; }`;
const MARKER_FRAGMENT = `
varying vec3 vColor;
void main() { float r = length(gl_PointCoord - 0.5); if (r > 0.5 || r < 0.3) discard;
  gl_FragColor = vec4(vColor, 1.0); }`;

// densestPixel(ids Int32Array W*H, W, H, indices) -> [x, y]: app.js's search of an index buffer
export function createView3D(container, densestPixel) {
  const renderer = new THREE.WebGLRenderer({ antialias: false, preserveDrawingBuffer: true });
  renderer.setPixelRatio(1);  // picking works in CSS pixels
  renderer.setClearColor(0x111111);
  const canvas = renderer.domElement;
  canvas.id = "cloud3d";
  canvas.tabIndex = 0;
  canvas.setAttribute("aria-label", "point cloud (3-D): click = object, shift-click = background");
  container.prepend(canvas);
  const scene = new THREE.Scene();
  const pickScene = new THREE.Scene();
  const perspective = new THREE.PerspectiveCamera(50, 1, 0.1, 5000);
  const orthographic = new THREE.OrthographicCamera(-1, 1, 1, -1, -5000, 5000);
  const cam = { target: new THREE.Vector3(), yaw: 0, pitch: Math.PI / 2, scale: 10,
    projection: "orthographic" };
  const uniforms = { uSize: { value: 2.0 }, uRefDepth: { value: 0.0 } };
  const geometry = new THREE.BufferGeometry();
  const points = new THREE.Points(geometry, new THREE.ShaderMaterial({
    uniforms, vertexShader: DISPLAY_VERTEX, fragmentShader: DISPLAY_FRAGMENT }));
  const pickPoints = new THREE.Points(geometry, new THREE.ShaderMaterial({
    uniforms, vertexShader: PICK_VERTEX, fragmentShader: PICK_FRAGMENT }));
  points.frustumCulled = pickPoints.frustumCulled = false;
  scene.add(points);
  pickScene.add(pickPoints);
  const markerGeometry = new THREE.BufferGeometry();
  const markers = new THREE.Points(markerGeometry, new THREE.ShaderMaterial({
    vertexShader: MARKER_VERTEX, fragmentShader: MARKER_FRAGMENT, depthTest: false }));
  markers.frustumCulled = false;
  markers.renderOrder = 2;
  scene.add(markers);
  const boxes = new THREE.LineSegments(new THREE.BufferGeometry(),
    new THREE.LineBasicMaterial({ vertexColors: true }));
  boxes.frustumCulled = false;
  scene.add(boxes);
  let pickTarget = null, pickDirty = true, count = 0, xyz = null, drawMs = 0;

  function size() {
    const r = container.getBoundingClientRect();
    return [Math.max(1, Math.round(r.width)), Math.max(1, Math.round(r.height))];
  }
  // the screen axes in world coordinates (the same yaw/pitch as the 2-D renderer)
  function axes() {
    const cy = Math.cos(cam.yaw), sy = Math.sin(cam.yaw), cp = Math.cos(cam.pitch), sp = Math.sin(cam.pitch);
    return { right: new THREE.Vector3(cy, -sy, 0), up: new THREE.Vector3(sp * sy, sp * cy, cp),
      toward: new THREE.Vector3(-cp * sy, -cp * cy, sp) };
  }
  function camera() { return cam.projection === "perspective" ? perspective : orthographic; }
  function place() {
    const [W, H] = size();
    renderer.setSize(W, H, false);
    canvas.style.width = "100%"; canvas.style.height = "100%";
    const { up, toward } = axes();
    // perspective at the distance where the target shows cam.scale pixels per metre
    const distance = (H / 2) / (cam.scale * Math.tan(THREE.MathUtils.degToRad(perspective.fov / 2)));
    perspective.aspect = W / H;
    perspective.near = Math.max(distance / 1000, 0.01);
    perspective.far = distance + 2000;
    perspective.position.copy(cam.target).addScaledVector(toward, distance);
    orthographic.left = -W / 2 / cam.scale; orthographic.right = W / 2 / cam.scale;
    orthographic.top = H / 2 / cam.scale; orthographic.bottom = -H / 2 / cam.scale;
    orthographic.position.copy(cam.target).addScaledVector(toward, 1000);
    orthographic.near = 0; orthographic.far = 5000;
    for (const c of [perspective, orthographic]) {
      c.up.copy(up); c.lookAt(cam.target); c.updateProjectionMatrix(); c.updateMatrixWorld();
    }
    uniforms.uRefDepth.value = cam.projection === "perspective" ? distance : 0.0;
    if (!pickTarget || pickTarget.width !== W || pickTarget.height !== H) {
      if (pickTarget) pickTarget.dispose();
      pickTarget = new THREE.WebGLRenderTarget(W, H, { depthBuffer: true });
    }
    return [W, H];
  }
  const probe = new Uint8Array(4);
  function draw(sync = false) {  // sync: wait for the GPU (a measurement: a 1-pixel read)
    const started = performance.now();
    place();
    renderer.setRenderTarget(null);
    renderer.render(scene, camera());
    if (sync) {
      const gl = renderer.getContext();
      gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, probe);
    }
    pickDirty = true;
    drawMs = performance.now() - started;
  }
  function renderPick() {
    if (!pickDirty) return;
    place();
    renderer.setRenderTarget(pickTarget);
    renderer.setClearColor(0x000000);
    renderer.clear();
    renderer.render(pickScene, camera());
    renderer.setRenderTarget(null);
    renderer.setClearColor(0x111111);
    pickDirty = false;
  }
  function readIndices(x, y, w, h) {  // CSS pixels, top-left origin -> Int32Array (-1 none)
    renderPick();
    const H = pickTarget.height;
    const buffer = new Uint8Array(4 * w * h);
    renderer.readRenderTargetPixels(pickTarget, x, H - y - h, w, h, buffer);
    const out = new Int32Array(w * h);
    for (let row = 0; row < h; row++) {  // GL rows go bottom-up
      for (let col = 0; col < w; col++) {
        const k = 4 * ((h - 1 - row) * w + col);
        out[row * w + col] = buffer[k] + 256 * buffer[k + 1] + 65536 * buffer[k + 2] - 1;
      }
    }
    return out;
  }
  // the point under the cursor: of the points drawn within 3 px, the nearest to the camera (a
  // close-up shows the background through the gaps between an object's points), else the
  // nearest drawn point within `radius` px
  function pick(sx, sy, radius = 6) {
    if (!count) return -1;
    const [W, H] = size();
    const x0 = Math.max(0, sx - radius), y0 = Math.max(0, sy - radius);
    const x1 = Math.min(W - 1, sx + radius), y1 = Math.min(H - 1, sy + radius);
    if (x1 < x0 || y1 < y0) return -1;
    const w = x1 - x0 + 1, h = y1 - y0 + 1, ids = readIndices(x0, y0, w, h);
    const eye = camera().position, { toward } = axes();
    let best = -1, bestD = Infinity, front = -1, frontDepth = Infinity;
    for (let row = 0; row < h; row++) for (let col = 0; col < w; col++) {
      const i = ids[row * w + col], d = (x0 + col - sx) ** 2 + (y0 + row - sy) ** 2;
      if (i < 0) continue;
      if (d < bestD) { best = i; bestD = d; }
      if (d <= 9) {
        const depth = -((xyz[3 * i] - eye.x) * toward.x + (xyz[3 * i + 1] - eye.y) * toward.y
          + (xyz[3 * i + 2] - eye.z) * toward.z);
        if (depth < frontDepth) { front = i; frontDepth = depth; }
      }
    }
    return front >= 0 ? front : best;
  }
  function findPixel(indices) {
    if (!count) return null;
    const [W, H] = size();
    return densestPixel(readIndices(0, 0, W, H), W, H, indices);
  }
  // the world point under the cursor (its picked point, else on the plane through the target)
  function worldAt(sx, sy) {
    const [W, H] = size();
    const index = pick(Math.round(sx), Math.round(sy), 4);
    if (index >= 0) return new THREE.Vector3(xyz[3 * index], xyz[3 * index + 1], xyz[3 * index + 2]);
    const { right, up } = axes();
    return cam.target.clone().addScaledVector(right, (sx - W / 2) / cam.scale)
      .addScaledVector(up, (H / 2 - sy) / cam.scale);
  }
  function frame(points3, extent) {  // centre the target on points, extent metres fill the view
    if (!points3.length) return;
    const [W, H] = size();
    const c = new THREE.Vector3();
    for (const p of points3) c.add(p);
    cam.target.copy(c.multiplyScalar(1 / points3.length));
    cam.scale = 0.9 * Math.min(W, H) / Math.max(extent, 0.5);
  }
  return {
    kind: "webgl",
    element: canvas,
    cam,
    get drawMs() { return drawMs; },
    get pointSize() { return uniforms.uSize.value; },
    set pointSize(v) { uniforms.uSize.value = Math.min(Math.max(v, 1), 12); },
    setCloud(cloud) {
      xyz = cloud;
      count = cloud ? cloud.length / 3 : 0;
      geometry.dispose();
      if (!count) { geometry.setAttribute("position", new THREE.BufferAttribute(new Float32Array(0), 3)); return; }
      // NaN rows (left out by the session) are moved far away and never picked
      const position = new Float32Array(cloud), index = new Float32Array(count);
      for (let i = 0; i < count; i++) {
        index[i] = i;
        if (!(Number.isFinite(position[3 * i]) && Number.isFinite(position[3 * i + 1]) && Number.isFinite(position[3 * i + 2]))) {
          position[3 * i] = position[3 * i + 1] = position[3 * i + 2] = 1e7;
        }
      }
      geometry.setAttribute("position", new THREE.BufferAttribute(position, 3));
      geometry.setAttribute("pointIndex", new THREE.BufferAttribute(index, 1));
      geometry.setAttribute("color", new THREE.BufferAttribute(new Uint8Array(3 * count), 3, true));
      geometry.setAttribute("pickable", new THREE.BufferAttribute(new Uint8Array(count), 1, false));
      pickDirty = true;
    },
    setColours(rgb, pickable) {  // Uint8Array 3N, Uint8Array N (1 = may be clicked)
      if (!count) return;
      geometry.getAttribute("color").array.set(rgb);
      geometry.getAttribute("color").needsUpdate = true;
      geometry.getAttribute("pickable").array.set(pickable);
      geometry.getAttribute("pickable").needsUpdate = true;
      pickDirty = true;
    },
    setMarkers(list) {  // [{position: [x, y, z], colour: [r, g, b] 0..255}]
      const p = new Float32Array(3 * list.length), c = new Float32Array(3 * list.length);
      list.forEach((m, k) => { p.set(m.position, 3 * k); c.set(m.colour.map((v) => v / 255), 3 * k); });
      markerGeometry.setAttribute("position", new THREE.BufferAttribute(p, 3));
      markerGeometry.setAttribute("color", new THREE.BufferAttribute(c, 3));
    },
    setBoxes(list) {  // [{center, size: [l, w, h], yaw, colour}]
      const p = [], c = [];
      for (const b of list) {
        const [l, w, h] = b.size.map((v) => v / 2), cy = Math.cos(b.yaw), sy = Math.sin(b.yaw);
        const corner = (u, v, z) => [b.center[0] + cy * u - sy * v, b.center[1] + sy * u + cy * v, b.center[2] + z];
        const k = [[l, w], [l, -w], [-l, -w], [-l, w]];
        for (let e = 0; e < 4; e++) {
          const [u0, v0] = k[e], [u1, v1] = k[(e + 1) % 4];
          for (const z of [-h, h]) p.push(...corner(u0, v0, z), ...corner(u1, v1, z));
          p.push(...corner(u0, v0, -h), ...corner(u0, v0, h));
        }
        for (let n = 0; n < 24; n++) c.push(...b.colour.map((v) => v / 255));
      }
      boxes.geometry.dispose();
      boxes.geometry = new THREE.BufferGeometry();
      boxes.geometry.setAttribute("position", new THREE.BufferAttribute(new Float32Array(p), 3));
      boxes.geometry.setAttribute("color", new THREE.BufferAttribute(new Float32Array(c), 3));
    },
    draw,
    pick,
    findPixel,
    pan(dx, dy) {
      const { right, up } = axes();
      cam.target.addScaledVector(right, -dx / cam.scale).addScaledVector(up, dy / cam.scale);
    },
    rotate(dyaw, dpitch) {
      cam.yaw += dyaw;
      cam.pitch = Math.min(Math.PI / 2, Math.max(0, cam.pitch + dpitch));
    },
    zoomAt(sx, sy, factor) {  // the point under the cursor stays under it
      const anchor = worldAt(sx, sy);
      const { toward } = axes();
      const offset = anchor.clone().sub(cam.target);
      offset.addScaledVector(toward, -offset.dot(toward));  // in the view plane
      cam.target.addScaledVector(offset, 1 - 1 / factor);
      cam.scale *= factor;
    },
    setProjection(kind) { cam.projection = kind; },
    look(yaw, pitch) { cam.yaw = yaw; cam.pitch = pitch; },
    fitTo(points3, extent) { frame(points3, extent); },
  };
}
