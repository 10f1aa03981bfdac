// The page's logic: read /model, draw a grid from /sample, walk with /interpolate.
// Paths are relative so the page also works behind a path prefix.
"use strict";

const $ = (id) => document.getElementById(id);
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
  const response = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
  const data = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(data.error || response.statusText);
  if (token) sessionStorage.setItem("dcgan-token", token);
  return data;
}

function png(b64) {
  return "data:image/png;base64," + b64;
}

async function loadModel() {
  let info = await (await fetch("model")).json();
  while (!info.ready) {
    if (info.error) {
      status("The model could not be loaded: " + info.error, true);
      return false;
    }
    status("The model is loading…");
    await new Promise((resolve) => setTimeout(resolve, 1000));
    info = await (await fetch("model")).json();
  }
  $("model-line").textContent =
    `${info.name} (version ${info.version}, step ${info.card.step}) on ${info.providers[0]}`;
  $("auth").hidden = !info.auth_required;
  $("steps").max = info.limits.max_steps;
  if (info.limits.num_classes > 0) {
    $("label-box").hidden = false;
    for (let k = 0; k < info.limits.num_classes; k++) {
      $("label").add(new Option(String(k), String(k)));
    }
  }
  return true;
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
    status(`Seeds ${data.seeds[0]} to ${data.seeds[data.seeds.length - 1]}.`);
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

$("sample-form").addEventListener("submit", drawGrid);
$("walk-form").addEventListener("submit", walk);
$("slider").addEventListener("input", showFrame);
$("random").addEventListener("click", () => {
  $("seed").value = Math.floor(Math.random() * 1e9);
  drawGrid();
});

loadModel().then((ready) => {
  if (ready) {
    drawGrid();
    walk();
  }
}).catch((err) => status(err.message, true));
