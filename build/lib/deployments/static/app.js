// Product Photo Detector web page: upload -> /predict/explain -> result card, heat map, history.
"use strict";

const MAX_UPLOAD_BYTES = 9 * 1024 * 1024;   // stay under the server's 10 MB limit
const MAX_SIDE = 2048;                      // px; larger still photos are downscaled in the browser
const SNIFF_BYTES = 256 * 1024;             // where a PNG's acTL or a JPEG's MPF segment must be
const HISTORY_KEY = "ppd-history";
const HISTORY_SIZE = 12;
const LABELS = { ai_generated: "AI-generated", real: "Real photo" };

const $ = (id) => document.getElementById(id);
let apiKey = sessionStorage.getItem("ppd-api-key") || "";

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function loadImage(file) {
  return new Promise((resolve, reject) => {
    const url = URL.createObjectURL(file);
    const img = new Image();
    img.onload = () => { URL.revokeObjectURL(url); resolve(img); };
    img.onerror = () => { URL.revokeObjectURL(url); reject(new Error("not an image this browser can read")); };
    img.src = url;
  });
}

function canvasBlob(canvas, quality) {
  return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", quality));
}

// What the server will judge: "animation" (an APNG or animated WebP: several frames),
// "multi-picture" (a JPEG carrying extra pictures, MPO: its primary picture) or "still".
// Read from the bytes, as the server does, never from the file name or type.
async function pictureKind(file) {
  const bytes = new Uint8Array(await file.slice(0, SNIFF_BYTES).arrayBuffer());
  const view = new DataView(bytes.buffer);
  const text = (at, length) => String.fromCharCode(...bytes.subarray(at, at + length));
  if (bytes.length > 8 && text(1, 3) === "PNG") {         // chunks: length, type, data, CRC
    for (let at = 8; at + 8 <= bytes.length; at += 12 + view.getUint32(at)) {
      const type = text(at + 4, 4);
      if (type === "acTL" && at + 12 <= bytes.length) return view.getUint32(at + 8) > 1 ? "animation" : "still";
      if (type === "IDAT") break;                           // acTL comes before the image data
    }
  } else if (bytes.length > 20 && text(0, 4) === "RIFF" && text(8, 4) === "WEBP") {
    if (text(12, 4) === "VP8X" && (bytes[20] & 0x02)) return "animation";  // the animation flag
  } else if (bytes[0] === 0xff && bytes[1] === 0xd8) {     // JPEG segments up to the scan
    for (let at = 2; at + 4 <= bytes.length && bytes[at] === 0xff; at += 2 + view.getUint16(at + 2)) {
      const marker = bytes[at + 1];
      if (marker === 0xda) break;
      if (marker === 0xe2 && text(at + 4, 4) === "MPF\0") return "multi-picture";
    }
  }
  return "still";
}

// Files under the server's byte limit go as they are; so does an animation or a multi-picture
// JPEG of any side, since their frames and pictures matter. Only larger still photos (and
// multi-picture JPEGs over the byte limit: the primary picture is what the server judges) are
// redrawn smaller as JPEG; an animation over the byte limit cannot be: it would lose its frames.
async function fitForUpload(file) {
  const img = await loadImage(file);
  const kind = await pictureKind(file);
  const longest = Math.max(img.naturalWidth, img.naturalHeight);
  if (file.size <= MAX_UPLOAD_BYTES && (kind !== "still" || longest <= MAX_SIDE)) {
    return { blob: file, img, kind };
  }
  if (kind === "animation") {
    throw new Error(`This animation is ${(file.size / 2 ** 20).toFixed(1)} MB: shrinking it here ` +
      "would keep only its first frame, so it is not sent. Send one under 9 MB " +
      "(fewer or smaller frames).");
  }
  const scale = Math.min(1, MAX_SIDE / longest);
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(img.naturalWidth * scale));
  canvas.height = Math.max(1, Math.round(img.naturalHeight * scale));
  canvas.getContext("2d").drawImage(img, 0, 0, canvas.width, canvas.height);
  for (const quality of [0.9, 0.8, 0.65, 0.5]) {
    const blob = await canvasBlob(canvas, quality);
    if (blob && blob.size <= MAX_UPLOAD_BYTES) return { blob, img, kind, resized: true };
  }
  throw new Error("the photo is too large even after downscaling");
}

function thumbnail(img) {
  const canvas = document.createElement("canvas");
  const side = 96;
  const scale = side / Math.max(img.naturalWidth, img.naturalHeight);
  canvas.width = Math.max(1, Math.round(img.naturalWidth * scale));
  canvas.height = Math.max(1, Math.round(img.naturalHeight * scale));
  canvas.getContext("2d").drawImage(img, 0, 0, canvas.width, canvas.height);
  return canvas.toDataURL("image/jpeg", 0.7);
}

// A probability as a percentage with the precision a classifier's score has: two significant
// digits at most, and never "100%" or "0%" (no model is that sure): "> 99%" and "< 1%".
function formatPercent(probability) {
  if (probability > 0.99) return "> 99%";
  if (probability < 0.01) return "< 1%";
  const percent = probability * 100;
  return `${percent >= 10 ? Math.round(percent) : Number(percent.toPrecision(2))}%`;
}

// The card shows the probability of the answer given: P(AI) for "AI-generated", 1 - P(AI) for "real".
function percentFor(body) {
  return formatPercent(body.prediction === "ai_generated" ? body.probability : 1 - body.probability);
}

function framesNote(frames) {
  return frames > 1 ? `${frames} frames judged; the answer and the heat map are for the frame most likely AI-generated` : "";
}

function showResult(body) {
  const card = $("card");
  card.className = `card ${body.prediction} ${body.confidence}`;
  $("label").textContent = LABELS[body.prediction] || body.prediction;
  $("percent").textContent = percentFor(body);
  $("details").textContent =
    `${body.confidence} confidence · P(AI-generated) ${formatPercent(body.probability)} · ` +
    `model ${body.model_version} · ${body.inference_time_ms.toFixed(0)} ms`;
  $("frames").textContent = framesNote(body.frames);
  $("frames").hidden = !(body.frames > 1);
  $("heatmap").src = `data:image/jpeg;base64,${body.heatmap_base64}`;
  $("result").hidden = false;
}

function readHistory() {
  try { return JSON.parse(localStorage.getItem(HISTORY_KEY)) || []; } catch { return []; }
}

function renderHistory() {
  const list = $("history");
  list.replaceChildren();
  for (const entry of readHistory()) {
    const item = document.createElement("li");
    const img = document.createElement("img");
    img.src = entry.thumb; img.alt = "";
    const tag = document.createElement("span");
    tag.className = "tag";
    tag.textContent = `${LABELS[entry.prediction]} ${percentFor(entry)}`;
    const meta = document.createElement("span");
    const frames = entry.frames > 1 ? ` · ${entry.frames} frames` : "";
    meta.textContent = `${entry.name} · ${entry.confidence}${frames} · ${new Date(entry.at).toLocaleTimeString()}`;
    item.append(img, tag, meta);
    list.append(item);
  }
}

function remember(name, body, thumb) {
  const entry = { name, thumb, at: Date.now(), prediction: body.prediction,
                  probability: body.probability, confidence: body.confidence, frames: body.frames };
  const history = [entry, ...readHistory()].slice(0, HISTORY_SIZE);
  try { localStorage.setItem(HISTORY_KEY, JSON.stringify(history)); } catch { /* storage full */ }
  renderHistory();
}

async function classify(file) {
  setStatus("Reading the photo…");
  let prepared;
  try { prepared = await fitForUpload(file); } catch (err) { setStatus(err.message, true); return; }
  const analysing = prepared.kind === "animation" ? "Analysing the animation's frames…" : "Analysing…";
  setStatus(prepared.resized ? "Photo downscaled for upload; analysing…" : analysing);
  const form = new FormData();
  form.append("file", prepared.blob, file.name);
  const headers = apiKey ? { "X-API-Key": apiKey } : {};
  let response;
  try {
    response = await fetch("/predict/explain", { method: "POST", body: form, headers });
  } catch (err) { setStatus(`The server could not be reached: ${err.message}`, true); return; }
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) {
    $("key-box").hidden = false;
    setStatus("An API key is required: enter it below, then choose the photo again.", true);
    return;
  }
  if (!response.ok) {
    const retry = response.headers.get("Retry-After");
    setStatus(`${body.detail || response.statusText}${retry ? ` (retry in ${retry} s)` : ""}`, true);
    return;
  }
  setStatus("");
  showResult(body);
  remember(file.name, body, thumbnail(prepared.img));
}

function setup() {
  const zone = $("dropzone");
  $("file-input").addEventListener("change", (e) => { if (e.target.files[0]) classify(e.target.files[0]); e.target.value = ""; });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault(); zone.classList.remove("over");
    if (e.dataTransfer.files[0]) classify(e.dataTransfer.files[0]);
  });
  zone.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file-input").click(); });
  $("key-save").addEventListener("click", () => {
    apiKey = $("api-key").value.trim();
    sessionStorage.setItem("ppd-api-key", apiKey);
    setStatus(apiKey ? "Key set. Choose a photo." : "Key cleared.");
  });
  $("history-clear").addEventListener("click", () => { localStorage.removeItem(HISTORY_KEY); renderHistory(); });
  if (apiKey) { $("key-box").hidden = false; $("api-key").value = apiKey; }
  renderHistory();
}

setup();
