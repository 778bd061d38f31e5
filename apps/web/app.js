// kseg portrait mode in the browser: exports/portrait.tflite runs in MediaPipe Tasks'
// ImageSegmenter (it reads the labels and the softmax activation from the model's metadata) on
// each webcam frame; the person's confidence mask cuts the sharp person out and lays it over the
// blurred background (blur) or another background (swap), on a canvas.
//
// Everything is served by apps/web/serve.py (`make web`): the library and its wasm from
// node_modules, the model from exports/. Nothing is fetched from elsewhere.
//
// URL options: ?effect=blur|swap, ?model=exports/portrait-fast.tflite, ?delegate=CPU|GPU.
// For tests: document.body.dataset.state is "loading", "running" or "error" (with
// dataset.error), and window.ksegStats holds the counters (see `stats` below).

import { FilesetResolver, ImageSegmenter } from "./node_modules/@mediapipe/tasks-vision/vision_bundle.mjs";

const WASM = "./node_modules/@mediapipe/tasks-vision/wasm";
const params = new URLSearchParams(location.search);
const MODEL = params.get("model") ?? "exports/portrait.tflite";
const DELEGATE = (params.get("delegate") ?? "CPU").toUpperCase();
const EFFECTS = ["blur", "swap"];
const BLUR_SCALE = 4; // the background is blurred at a quarter of the resolution: cheap, same look

const $ = (id) => document.getElementById(id);
const video = $("video");
const out = $("out");
const ctx = out.getContext("2d");
// scratch canvases: the mask at the size MediaPipe returns it (the frame's), the cut-out person,
// the background at a quarter of the size before and after the blur
const maskCanvas = document.createElement("canvas");
const maskCtx = maskCanvas.getContext("2d");
const personCanvas = document.createElement("canvas");
const personCtx = personCanvas.getContext("2d");
const smallCanvas = document.createElement("canvas");
const smallCtx = smallCanvas.getContext("2d");
const blurCanvas = document.createElement("canvas");
const blurCtx = blurCanvas.getContext("2d", { willReadFrequently: true });

const stats = {
  frames: 0,               // frames segmented and drawn
  fps: 0,                  // frames/s over the last 30 frames
  segmentMs: 0,            // segmentForVideo's time, mean over the last 30 frames
  frameMs: 0,              // segmentation + drawing, mean over the last 30 frames
  personFraction: 0,       // share of the last frame's pixels with person confidence > 0.5
  personFractionSum: 0,    // sum over all frames (a test takes differences over a window)
  width: 0, height: 0,     // the camera frame
  maskWidth: 0, maskHeight: 0,
  labels: [],
  effect: EFFECTS.includes(params.get("effect")) ? params.get("effect") : "blur",
  delegate: DELEGATE,
  model: MODEL,
};
window.ksegStats = stats;

let segmenter = null;
let personIndex = 1;
let background = null; // a canvas the size of the frame, for swap
let backgroundImage = null;
let maskImage = null;
const frameTimes = [];
const segmentTimes = [];
const workTimes = [];
const mean = (a) => a.reduce((x, y) => x + y, 0) / a.length;
const keep30 = (a, v) => { a.push(v); if (a.length > 30) a.shift(); };

function setState(state, message = "") {
  document.body.dataset.state = state;
  if (state === "error") document.body.dataset.error = message;
  $("message").textContent = message;
}

function gradientBackground(w, h) {
  const c = document.createElement("canvas");
  c.width = w; c.height = h;
  const g = c.getContext("2d");
  const lin = g.createLinearGradient(0, 0, w, h);
  lin.addColorStop(0, "#1d3b72");
  lin.addColorStop(0.55, "#2a7f8f");
  lin.addColorStop(1, "#e0a96d");
  g.fillStyle = lin;
  g.fillRect(0, 0, w, h);
  const glow = g.createRadialGradient(w * 0.75, h * 0.25, 0, w * 0.75, h * 0.25, w * 0.6);
  glow.addColorStop(0, "rgba(255, 240, 210, 0.55)");
  glow.addColorStop(1, "rgba(255, 240, 210, 0)");
  g.fillStyle = glow;
  g.fillRect(0, 0, w, h);
  return c;
}

// The image scaled and centre-cropped to fill w×h (as apps/effects/background.py `cover`).
function coverBackground(img, w, h) {
  const c = document.createElement("canvas");
  c.width = w; c.height = h;
  const s = Math.max(w / img.width, h / img.height);
  const iw = img.width * s, ih = img.height * s;
  c.getContext("2d").drawImage(img, (w - iw) / 2, (h - ih) / 2, iw, ih);
  return c;
}

function resize(w, h) {
  for (const c of [out, personCanvas]) { c.width = w; c.height = h; }
  for (const c of [smallCanvas, blurCanvas]) {
    c.width = Math.max(1, Math.round(w / BLUR_SCALE));
    c.height = Math.max(1, Math.round(h / BLUR_SCALE));
  }
  background = backgroundImage ? coverBackground(backgroundImage, w, h) : gradientBackground(w, h);
  stats.width = w; stats.height = h;
}

// The person's confidence (Float32Array, maskW×maskH, 0..1) into the alpha of maskCanvas.
function maskToAlpha(conf, mw, mh) {
  if (!maskImage || maskImage.width !== mw || maskImage.height !== mh) {
    maskCanvas.width = mw; maskCanvas.height = mh;
    maskImage = maskCtx.createImageData(mw, mh); // RGB stays 0: only alpha is used
  }
  const d = maskImage.data;
  let person = 0;
  for (let i = 0, j = 3; i < conf.length; i++, j += 4) {
    const p = conf[i];
    d[j] = p * 255;
    if (p > 0.5) person++;
  }
  maskCtx.putImageData(maskImage, 0, 0);
  return person / conf.length;
}

// Lens blur without a halo: blur only the background (the frame with alpha = 1 - person), then
// divide by the blurred alpha, so the person's colours never bleed into the background around
// them. The division is the canvas's own: it keeps premultiplied pixels, and getImageData
// returns them un-premultiplied. The frame's border is handled by the same division.
function blurBackground(w, h) {
  const sw = smallCanvas.width, sh = smallCanvas.height;
  const r = Number($("strength").value) * 6; // px at the small size
  if (r <= 0) { ctx.drawImage(video, 0, 0, w, h); return; }
  smallCtx.globalCompositeOperation = "copy";
  smallCtx.drawImage(video, 0, 0, sw, sh);
  smallCtx.globalCompositeOperation = "destination-out";
  smallCtx.drawImage(maskCanvas, 0, 0, sw, sh);
  blurCtx.globalCompositeOperation = "copy";
  blurCtx.filter = `blur(${r}px)`;
  blurCtx.drawImage(smallCanvas, 0, 0);
  blurCtx.filter = "none";
  const img = blurCtx.getImageData(0, 0, sw, sh);
  const d = img.data;
  for (let j = 3; j < d.length; j += 4) d[j] = 255; // pixels all person inside stay dark: the person covers them
  blurCtx.putImageData(img, 0, 0);
  ctx.imageSmoothingQuality = "medium";
  ctx.drawImage(blurCanvas, 0, 0, w, h);
}

function compose(w, h) {
  // the sharp person: the mask (scaled smoothly to the frame), then the frame inside it
  personCtx.globalCompositeOperation = "copy";
  personCtx.drawImage(maskCanvas, 0, 0, w, h);
  personCtx.globalCompositeOperation = "source-in";
  personCtx.drawImage(video, 0, 0, w, h);

  if (stats.effect === "swap") {
    ctx.drawImage(background, 0, 0);
  } else {
    blurBackground(w, h);
  }
  ctx.drawImage(personCanvas, 0, 0);
}

function onFrame() {
  const w = video.videoWidth, h = video.videoHeight;
  if (!w || !h) return;
  if (w !== out.width || h !== out.height || !background) resize(w, h);
  const t0 = performance.now();
  segmenter.segmentForVideo(video, t0, (result) => {
    // the masks live only inside this callback
    const mask = result.confidenceMasks[personIndex];
    keep30(segmentTimes, performance.now() - t0);
    stats.maskWidth = mask.width; stats.maskHeight = mask.height;
    stats.personFraction = maskToAlpha(mask.getAsFloat32Array(), mask.width, mask.height);
  });
  compose(w, h);
  const now = performance.now();
  stats.frames += 1;
  stats.personFractionSum += stats.personFraction;
  keep30(workTimes, now - t0);
  keep30(frameTimes, now);
  stats.segmentMs = mean(segmentTimes);
  stats.frameMs = mean(workTimes);
  if (frameTimes.length > 1) {
    stats.fps = (1000 * (frameTimes.length - 1)) / (now - frameTimes[0]);
  }
  $("hud").textContent =
    `${stats.fps.toFixed(1)} frames/s   segment ${stats.segmentMs.toFixed(1)} ms   frame ${stats.frameMs.toFixed(1)} ms   ` +
    `${w}×${h}   ${DELEGATE}`;
}

// One call per new camera frame (requestVideoFrameCallback), else once per display frame.
function loop() {
  let lastTime = -1;
  const tick = () => {
    if (video.currentTime !== lastTime && video.readyState >= 2) {
      lastTime = video.currentTime;
      try {
        onFrame();
      } catch (err) {
        // measured: with delegate GPU, MediaPipe's dequantization of the uint8 output receives
        // float32 from the GPU and stops ("Unsupported input tensor type: Float32")
        const hint = DELEGATE === "GPU" ? " (the GPU delegate fails on exports with uint8 output: use ?delegate=CPU)" : "";
        setState("error", `segmentation failed: ${err.message ?? err}${hint}`);
        return;
      }
    }
    schedule();
  };
  const schedule = () =>
    "requestVideoFrameCallback" in video ? video.requestVideoFrameCallback(tick) : requestAnimationFrame(tick);
  schedule();
}

function setEffect(name) {
  stats.effect = name;
  $("effect").textContent = name === "blur" ? "blur → swap" : "swap → blur";
}

const toggleEffect = () => setEffect(EFFECTS[(EFFECTS.indexOf(stats.effect) + 1) % EFFECTS.length]);

async function main() {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new Error("this browser gives no camera here: open the page from http://127.0.0.1 or localhost (make web), not as a file");
  }
  setEffect(stats.effect);
  $("effect").addEventListener("click", toggleEffect);
  window.addEventListener("keydown", (e) => { if (e.key === "e") toggleEffect(); });
  $("background").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (!file) return;
    const img = new Image();
    img.onload = () => { backgroundImage = img; background = null; setEffect("swap"); };
    img.src = URL.createObjectURL(file);
  });

  setState("loading", "loading MediaPipe Tasks and the model…");
  const fileset = await FilesetResolver.forVisionTasks(WASM);
  segmenter = await ImageSegmenter.createFromOptions(fileset, {
    baseOptions: { modelAssetPath: MODEL, delegate: DELEGATE },
    runningMode: "VIDEO",
    outputConfidenceMasks: true,
    outputCategoryMask: false,
  });
  stats.labels = segmenter.getLabels();
  // the label file in the model's metadata names the classes; "person" is index 1 in portrait
  personIndex = stats.labels.indexOf("person");
  if (personIndex < 0) {
    throw new Error(`${MODEL} has no "person" class (labels: ${stats.labels.join(", ") || "none"}); use a portrait export`);
  }

  setState("loading", "waiting for the camera…");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 }, facingMode: "user" },
      audio: false,
    });
  } catch (err) {
    throw new Error(`no camera: ${err.name}: ${err.message} (allow the camera for this page, or plug one in)`);
  }
  video.srcObject = stream;
  await video.play();
  setState("running", `${MODEL}, labels: ${stats.labels.join(", ")}; e or the button switches the effect`);
  loop();
}

main().catch((err) => {
  console.error(err);
  setState("error", String(err.message ?? err));
});
