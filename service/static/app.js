// The page's logic: list the models (/models), draw a grid from /sample and walk with
// /interpolate for the model picked. Paths are relative so the page also works behind a
// path prefix.
"use strict";

const $ = (id) => document.getElementById(id);
let models = {};
let walkFrames = [];
let walkLabels = null;

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function post(path, body) {
  const headers = { "Content-Type": "application/json" };
  const token = $("token").value || sessionStorage.getItem("dcgan-token");
  if (token) headers.Authorization = "Bearer " + token;
  body.model = $("model").value;
  const response = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
  const data = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(data.error || response.statusText);
  if (token) sessionStorage.setItem("dcgan-token", token);
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
  return true;
}

// The picked model's line, card link and class selector (conditional models only).
function showModel() {
  const m = models[$("model").value];
  const shape = m.output_shape.join("x");
  $("model-line").textContent =
    `version ${m.version}, step ${m.card.step}, ${shape} on ${m.providers[0]}` +
    (m.num_classes ? `, ${m.num_classes} classes` : ", unconditional");
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

async function drawAll() {
  await drawGrid();
  await walk();
}

$("sample-form").addEventListener("submit", drawGrid);
$("walk-form").addEventListener("submit", walk);
$("slider").addEventListener("input", showFrame);
$("model").addEventListener("change", () => {
  showModel();
  drawAll();
});
$("random").addEventListener("click", () => {
  $("seed").value = Math.floor(Math.random() * 1e9);
  drawGrid();
});

loadModels().then((ready) => {
  if (ready) drawAll();
}).catch((err) => status(err.message, true));
