// The page's logic: list the models (/models), draw a grid from /sample and walk with
// /interpolate for the model picked; for that model, project two drawn digits with
// /project and walk between their latents, and move a seed along the directions of
// /directions (their weighted sum drawn by /combine). Paths are relative so the page
// also works behind a path prefix.
"use strict";

const $ = (id) => document.getElementById(id);
let models = {};
let walkFrames = [];
let walkLabels = null;

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

// Answers the request determines come with an ETag: the page keeps the last few and asks
// again with If-None-Match, so a request made before costs the server no work (304).
// Browsers do not cache POST answers themselves.
const answers = new Map();  // path + body -> {etag, data}, oldest first
const MAX_ANSWERS = 32;

async function post(path, body) {
  const headers = { "Content-Type": "application/json" };
  const token = $("token").value || sessionStorage.getItem("dcgan-token");
  if (token) headers.Authorization = "Bearer " + token;
  body.model = $("model").value;
  const key = path + " " + JSON.stringify(body);
  const kept = answers.get(key);
  if (kept) headers["If-None-Match"] = kept.etag;
  const response = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
  if (response.status === 304 && kept) {
    answers.delete(key);
    answers.set(key, kept);  // now the newest
    return kept.data;
  }
  const data = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(data.error || response.statusText);
  if (token) sessionStorage.setItem("dcgan-token", token);
  const etag = response.headers.get("ETag");
  if (etag) {
    answers.delete(key);
    answers.set(key, { etag, data });
    if (answers.size > MAX_ANSWERS) answers.delete(answers.keys().next().value);
  }
  return data;
}

function png(b64) {
  return "data:image/png;base64," + b64;
}

// Wait for every model to load or fail, then fill the picker (the failed ones disabled).
async function loadModels() {
  let listing = await (await fetch("models")).json();
  while (!listing.error && listing.models.some((m) => m.state === "loading")) {
    status("The models are loading…");
    await new Promise((resolve) => setTimeout(resolve, 1000));
    listing = await (await fetch("models")).json();
  }
  if (listing.error) {
    status("The models could not be loaded: " + listing.error, true);
    return false;
  }
  const info = await (await fetch("model")).json();
  $("auth").hidden = !info.auth_required;
  $("steps").max = info.limits.max_steps;
  models = Object.fromEntries(listing.models.map((m) => [m.name, m]));
  $("model").replaceChildren(...listing.models.map((m) => {
    const option = new Option(m.state === "failed" ? `${m.name} (not loaded)` : m.name, m.name);
    option.disabled = m.state !== "ready";
    option.selected = m.name === listing.default;
    return option;
  }));
  if (models[listing.default].state !== "ready") {
    const ready = listing.models.find((m) => m.state === "ready");
    if (!ready) {
      status("No model could be loaded: " + listing.models.map((m) => `${m.name}: ${m.error}`).join("; "), true);
      return false;
    }
    $("model").value = ready.name;
  }
  showModel();
  await initLatentSpace();
  return true;
}

// The card's figures in both feature networks, each beside its value for real digits.
function quality(card) {
  const two = (a, b, digits) => [a, b].map((v) => (v == null ? "-" : v.toFixed(digits))).join(" / ");
  if (card.fd_ratio == null) return "";
  let text = `; FD ratio ${two(card.fd_ratio, card.fd2_ratio, 2)} (real: 1)`;
  if (card.precision != null) {
    text += `, precision ${two(card.precision, card.precision2, 2)}` +
      ` (real: ${two(card.precision_floor, card.precision2_floor, 2)})` +
      `, recall ${two(card.recall, card.recall2, 2)} (real: ${two(card.recall_floor, card.recall2_floor, 2)})`;
  }
  if (card.label_accuracy != null) text += `, label kept ${(100 * card.label_accuracy).toFixed(1)}%`;
  return text;
}

// The picked model's line, card link and class selector (conditional models only).
function showModel() {
  const m = models[$("model").value];
  const shape = m.output_shape.join("x");
  $("model-line").textContent =
    `version ${m.version}, step ${m.card.step}, ${shape} on ${m.providers[0]}` +
    (m.num_classes ? `, ${m.num_classes} classes` : ", unconditional") + quality(m.card);
  $("card-link").href = "model?name=" + encodeURIComponent(m.name);
  $("label-box").hidden = !m.num_classes;
  $("label").replaceChildren(new Option("per seed", ""),
    ...m.classes.map((k) => new Option(String(k), String(k))));
}

async function drawGrid(event) {
  if (event) event.preventDefault();
  const body = { n: Number($("count").value), seed: Number($("seed").value), format: "json" };
  if ($("label").value !== "") body.label = Number($("label").value);
  if ($("truncation").value !== "") body.truncation = Number($("truncation").value);
  status("Drawing…");
  try {
    const data = await post("sample", body);
    const grid = $("grid");
    grid.replaceChildren(...data.images.map((b64, k) => {
      const img = document.createElement("img");
      img.src = png(b64);
      img.alt = `seed ${data.seeds[k]}`;
      img.title = data.labels ? `seed ${data.seeds[k]}, class ${data.labels[k]}` : `seed ${data.seeds[k]}`;
      img.dataset.seed = data.seeds[k];
      return img;
    }));
    grid.dataset.model = data.model.name;
    status(`${data.model.name}: seeds ${data.seeds[0]} to ${data.seeds[data.seeds.length - 1]}.`);
  } catch (err) {
    status(err.message, true);
  }
}

function showFrame() {
  const k = Number($("slider").value);
  if (!walkFrames.length) return;
  $("frame").src = png(walkFrames[k]);
  $("frame").alt = `frame ${k + 1} of ${walkFrames.length}`;
  $("frame").dataset.index = k;
  $("frame-label").textContent = `frame ${k + 1} / ${walkFrames.length}` +
    (walkLabels ? `, class ${walkLabels[k]}` : "");
}

async function walk(event) {
  if (event) event.preventDefault();
  const body = {
    start: Number($("start").value), end: Number($("end").value),
    steps: Number($("steps").value), method: $("method").value, format: "frames",
  };
  if ($("label").value !== "") body.label = Number($("label").value);
  status("Walking…");
  try {
    const data = await post("interpolate", body);
    walkFrames = data.frames;
    walkLabels = data.labels || null;
    $("slider").max = walkFrames.length - 1;
    $("slider").value = 0;
    $("slider").disabled = false;
    showFrame();
    status(`${walkFrames.length} frames from seed ${body.start} to seed ${body.end}.`);
  } catch (err) {
    status(err.message, true);
  }
}

// --- the latent space: projection, the walk between two digits, directions ---------------

let projected = null;  // the latents of the last projection
let morphFrames = [];  // the walk between the two projected digits
let directions = [];   // the first SeFa directions: {name, vector}

let padsReady = false;

// The picked model's encoder and directions (GET /model?name=): show what it has.
async function initLatentSpace() {
  const name = $("model").value;
  const info = await (await fetch("model?name=" + encodeURIComponent(name))).json();
  if (name !== $("model").value) return;  // another model was picked meanwhile
  projected = null;
  morphFrames = [];
  directions = [];
  $("edit-projected").checked = false;
  $("edit-projected").disabled = true;
  $("morph-slider").disabled = true;
  $("projections").replaceChildren();
  $("project-section").hidden = !info.encoder;
  if (info.encoder && !padsReady) {
    for (const pad of document.querySelectorAll(".pad")) initPad(pad);
    padsReady = true;
  }
  const hasDirections = Boolean(info.directions && info.directions.length);
  $("directions-section").hidden = !hasDirections;
  $("direction-sliders").replaceChildren();
  if (hasDirections) await loadDirections(name);
}

function initPad(pad) {
  const ctx = pad.getContext("2d");
  clearPad(pad);
  let drawing = false;
  const at = (e) => {
    const r = pad.getBoundingClientRect();
    return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height];
  };
  pad.addEventListener("pointerdown", (e) => {
    drawing = true;
    pad.setPointerCapture(e.pointerId);
    ctx.beginPath();
    ctx.moveTo(...at(e));
  });
  pad.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    ctx.lineTo(...at(e));
    ctx.stroke();
  });
  pad.addEventListener("pointerup", () => { drawing = false; });
}

function clearPad(pad) {
  const ctx = pad.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, pad.width, pad.height);
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = 14;
  ctx.lineCap = ctx.lineJoin = "round";
}

function loadPicture(pad, file) {
  const img = new Image();
  img.onload = () => {
    clearPad(pad);
    pad.getContext("2d").drawImage(img, 0, 0, pad.width, pad.height);
    URL.revokeObjectURL(img.src);
  };
  img.src = URL.createObjectURL(file);
}

function padBase64(pad) {
  return pad.toDataURL("image/png").split(",")[1];
}

function figure(src, caption) {
  const fig = document.createElement("figure");
  const img = document.createElement("img");
  img.src = src;
  img.alt = caption;
  const cap = document.createElement("figcaption");
  cap.textContent = caption;
  fig.append(img, cap);
  return fig;
}

async function projectAndWalk(event) {
  if (event) event.preventDefault();
  status("Projecting…");
  try {
    const pads = [$("pad-a"), $("pad-b")];
    const data = await post("project", {
      images: pads.map(padBase64), search: Number($("search").value),
    });
    projected = data.latents;
    $("projections").replaceChildren(...data.inputs.flatMap((input, k) => [
      figure(png(input), `digit ${k + 1} as the model sees it`),
      figure(png(data.reconstructions[k]), `its reconstruction (RMS ${data.distances[k].toFixed(3)})`),
    ]));
    $("edit-projected").disabled = false;
    const walkData = await post("interpolate", {
      start: projected[0], end: projected[1], steps: Number($("morph-steps").value), format: "frames",
    });
    morphFrames = walkData.frames;
    $("morph-slider").max = morphFrames.length - 1;
    $("morph-slider").value = 0;
    $("morph-slider").disabled = false;
    showMorph();
    status(`Projected 2 digits (pixel RMS ${data.distances.map((d) => d.toFixed(3)).join(", ")}); ` +
           `${morphFrames.length} frames between them.`);
  } catch (err) {
    status(err.message, true);
  }
}


function showMorph() {
  const k = Number($("morph-slider").value);
  if (!morphFrames.length) return;
  $("morph-frame").src = png(morphFrames[k]);
  $("morph-frame").alt = `frame ${k + 1} of ${morphFrames.length}`;
  $("morph-label").textContent = `frame ${k + 1} / ${morphFrames.length}`;
}

async function loadDirections(name) {
  const response = await fetch("directions?model=" + encodeURIComponent(name));
  if (!response.ok || name !== $("model").value) return;
  const data = await response.json();
  directions = data.sefa.slice(0, 4);
  $("direction-sliders").replaceChildren(...directions.map((d) => {
    const label = document.createElement("label");
    label.textContent = `${d.name} (eigenvalue ${d.eigenvalue.toFixed(2)})`;
    const input = document.createElement("input");
    Object.assign(input, { type: "range", min: -6, max: 6, step: 0.5, value: 0, id: `slider-${d.name}` });
    input.addEventListener("change", drawEdit);
    label.append(input);
    return label;
  }));
  drawEdit();
}

async function drawEdit() {
  const usingProjection = $("edit-projected").checked && projected;
  const start = usingProjection ? { latent: projected[0] } : { seed: Number($("edit-seed").value) };
  const amounts = directions.map((d) => Number($(`slider-${d.name}`).value));
  const terms = [{ ...start, weight: 1 },
    ...directions.map((d, k) => ({ latent: d.vector, weight: amounts[k] })).filter((t) => t.weight !== 0)];
  try {
    const data = await post("combine", { terms, format: "json" });
    $("edit-frame").src = png(data.image);
    $("edit-frame").alt = "the edited image";
    $("edit-label").textContent = (usingProjection ? "projected digit" : `seed ${start.seed}`) +
      directions.map((d, k) => (amounts[k] ? `, ${d.name} ${amounts[k] > 0 ? "+" : ""}${amounts[k]}` : "")).join("");
  } catch (err) {
    status(err.message, true);
  }
}

for (const button of document.querySelectorAll("[data-clear]")) {
  button.addEventListener("click", () => clearPad($(button.dataset.clear)));
}
for (const input of document.querySelectorAll("input[data-pad]")) {
  input.addEventListener("change", () => input.files[0] && loadPicture($(input.dataset.pad), input.files[0]));
}
$("project-form").addEventListener("submit", projectAndWalk);
$("morph-slider").addEventListener("input", showMorph);
$("edit-form").addEventListener("change", drawEdit);
$("edit-form").addEventListener("submit", (e) => { e.preventDefault(); drawEdit(); });

async function drawAll() {
  await drawGrid();
  await walk();
}

$("sample-form").addEventListener("submit", drawGrid);
$("walk-form").addEventListener("submit", walk);
$("slider").addEventListener("input", showFrame);
$("model").addEventListener("change", async () => {
  showModel();
  drawAll();
  await initLatentSpace().catch((err) => status(err.message, true));
});
$("random").addEventListener("click", () => {
  $("seed").value = Math.floor(Math.random() * 1e9);
  drawGrid();
});

loadModels().then((ready) => {
  if (ready) drawAll();
}).catch((err) => status(err.message, true));
