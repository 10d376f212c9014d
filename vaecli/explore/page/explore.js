// vae explore's page: every picture comes from the server, which makes it as the vaecli commands do; this
// script only keeps the page's state (the current code, the class, the ends of an interpolation) and asks.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  facts: null,     // the model: latent_dim, shape, class names, scores...
  code: [],        // the code on the sliders
  label: null,     // the class for a conditional model
  atlas: null,     // the map and the KL, once the server has them
  point: null,     // where the decoded code lies on the map
  drawn: null,     // the last drawn or dropped image: {image, code, point}
  ends: { a: null, b: null },
  sliders: [],     // per coordinate: {input, output}
};

// --- talking to the server ---------------------------------------------------------------------------

async function api(path, body) {
  const pending = () => Number(document.body.dataset.pending);
  document.body.dataset.pending = pending() + 1;  // tests wait for 0: every answer shown
  try {
    const options = body === undefined ? {} :
      { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
    const response = await fetch(path, options);
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || response.statusText);
    return answer;
  } finally {
    document.body.dataset.pending = pending() - 1;
  }
}

function say(message, error = false) {
  $("status").textContent = message;
  $("status").classList.toggle("error", error);
}

function withLabel(body) {
  return state.facts.class_names.length ? { ...body, label: state.label } : body;
}

// One decode in flight at a time; while it runs only the newest request waits, so a fast drag never queues up.
const decoder = { busy: false, next: null };

function decode(body, moveSliders) {
  decoder.next = { body: withLabel(body), moveSliders };
  if (!decoder.busy) pump();
}

async function pump() {
  decoder.busy = true;
  document.body.dataset.decoding = "1";
  while (decoder.next) {
    const { body, moveSliders } = decoder.next;
    decoder.next = null;
    try {
      showDecoded(await api("/api/decode", body), moveSliders);
    } catch (error) {
      say(error.message, true);
    }
  }
  decoder.busy = false;
  document.body.dataset.decoding = "0";
}

function showDecoded(answer, moveSliders) {
  state.code = answer.code;
  state.point = answer.point;
  $("view").src = answer.image;
  $("view").dataset.code = JSON.stringify(answer.code);
  $("view-caption").textContent = describeCode(answer.code);
  if (moveSliders) setSliders(answer.code);
  drawMap();
}

function describeCode(code) {
  const norm = Math.sqrt(code.reduce((sum, v) => sum + v * v, 0));
  return `|z| = ${norm.toFixed(2)}` + (state.facts.layers > 1 ? "; lower layers at their prior means" : "");
}

// --- the model's facts, then the map -----------------------------------------------------------------

async function start() {
  try {
    state.facts = await api("/api/model");
  } catch (error) {
    say(`cannot reach the server: ${error.message}`, true);
    return;
  }
  const f = state.facts;
  $("model-name").textContent = f.name;
  $("model-facts").textContent = `${f.arch}, latent ${f.latent_dim}` +
    (f.layers > 1 ? ` (top of ${f.layers} layers)` : "") +
    `, images ${f.channels}x${f.height}x${f.width}, ${f.likelihood}, prior ${f.prior}, trained on ${f.dataset}`;
  setUpClasses(f.class_names);
  setUpPad(f);
  state.code = new Array(f.latent_dim).fill(0);
  buildSliders([...Array(f.latent_dim).keys()], [], 3);
  decode({ code: state.code }, false);
  await waitForModel();
  pollAtlas();
}

async function waitForModel() {
  for (;;) {
    const status = (await api("/api/model")).status;
    if (status.model === "ready") { say("ready"); return; }
    if (status.model === "failed") { say("the model could not be loaded; see the terminal", true); return; }
    say("loading the model\u2026");
    await new Promise((done) => setTimeout(done, 300));
  }
}

async function pollAtlas() {
  for (;;) {
    let answer;
    try {
      answer = await api("/api/atlas");
    } catch (error) {
      $("map-caption").textContent = error.message;
      return;
    }
    if (answer.ready) { useAtlas(answer); return; }
    if (answer.status.map === "failed") {
      $("map-caption").textContent = `no map: ${answer.status.map_error}`;
      $("map-caption").classList.add("error");
      $("sliders-note").textContent = "in coordinate order: the test KL could not be computed";
      return;
    }
    $("map-caption").textContent = `${answer.status.map}\u2026`;
    await new Promise((done) => setTimeout(done, 500));
  }
}

function useAtlas(atlas) {
  state.atlas = atlas;
  const inactive = atlas.order.filter((d) => !atlas.active.includes(d));
  buildSliders(atlas.active, inactive, atlas.spread);
  $("sliders-note").textContent = "largest test KL first";
  $("map-caption").textContent = `${atlas.points.length.toLocaleString()} test images; x: ${atlas.xlabel}, ` +
    `y: ${atlas.ylabel}`;
  const legend = $("legend");
  legend.replaceChildren();
  const present = new Set(atlas.points.map((p) => p[2]));
  atlas.class_names.forEach((name, index) => {
    if (!present.has(index)) return;
    const item = document.createElement("li");
    const dot = document.createElement("span");
    dot.style.background = atlas.colours[index];
    item.append(dot, name);
    legend.append(item);
  });
  setUpMap();
  decode({ code: state.code }, false);  // its point on the map
}

// --- sliders -----------------------------------------------------------------------------------------

function buildSliders(shown, folded, spread) {
  const kl = state.atlas ? state.atlas.kl : null;
  state.sliders = [];
  const make = (box, dims) => {
    box.replaceChildren();
    for (const d of dims) {
      const label = document.createElement("label");
      label.textContent = `z${d + 1}` + (kl ? ` ${kl[d].toFixed(2)}` : "");
      label.title = kl ? `coordinate ${d + 1}: average KL ${kl[d].toFixed(3)} nats on the test images` : "";
      const input = document.createElement("input");
      Object.assign(input, { type: "range", min: -spread, max: spread, step: 0.01, value: state.code[d] });
      input.id = `z${d + 1}`;
      label.htmlFor = input.id;
      const output = document.createElement("output");
      output.textContent = Number(state.code[d]).toFixed(2);
      input.addEventListener("input", () => {
        state.code = [...state.code];
        state.code[d] = Number(input.value);
        output.textContent = state.code[d].toFixed(2);
        decode({ code: state.code }, false);
      });
      state.sliders[d] = { input, output };
      box.append(label, input, output);
    }
  };
  make($("sliders"), shown);
  make($("inactive-sliders"), folded);
  $("inactive").hidden = folded.length === 0;
  $("inactive-count").textContent = folded.length;
}

function setSliders(code) {
  code.forEach((value, d) => {
    const slider = state.sliders[d];
    if (!slider) return;
    slider.input.value = value;
    slider.output.textContent = value.toFixed(2);
  });
}

// --- the map -----------------------------------------------------------------------------------------

const MAP_MARGIN = 14;
let mapView = null;  // the plane's bounds as drawn: {x0, x1, y0, y1}

function setUpMap() {
  const xs = state.atlas.points.map((p) => p[0]);
  const ys = state.atlas.points.map((p) => p[1]);
  const pad = (low, high) => { const room = (high - low) * 0.04 || 1; return [low - room, high + room]; };
  const [x0, x1] = pad(Math.min(...xs), Math.max(...xs));
  const [y0, y1] = pad(Math.min(...ys), Math.max(...ys));
  mapView = { x0, x1, y0, y1 };
  const canvas = $("map");
  canvas.addEventListener("click", (event) => {
    const [x, y] = toPlane(event);
    decode({ point: [x, y] }, true);
  });
  canvas.addEventListener("mousemove", (event) => showHover(event));
  canvas.addEventListener("mouseleave", () => { $("hover").hidden = true; });
  drawMap();
}

function toCanvas(x, y) {
  const canvas = $("map");
  const w = canvas.width - 2 * MAP_MARGIN, h = canvas.height - 2 * MAP_MARGIN;
  return [MAP_MARGIN + (x - mapView.x0) / (mapView.x1 - mapView.x0) * w,
    MAP_MARGIN + (mapView.y1 - y) / (mapView.y1 - mapView.y0) * h];
}

function toPlane(event) {
  const canvas = $("map");
  const box = canvas.getBoundingClientRect();
  const px = (event.clientX - box.left) * canvas.width / box.width;
  const py = (event.clientY - box.top) * canvas.height / box.height;
  const w = canvas.width - 2 * MAP_MARGIN, h = canvas.height - 2 * MAP_MARGIN;
  return [mapView.x0 + (px - MAP_MARGIN) / w * (mapView.x1 - mapView.x0),
    mapView.y1 - (py - MAP_MARGIN) / h * (mapView.y1 - mapView.y0)];
}

function drawMap() {
  if (!mapView) return;
  const canvas = $("map");
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.globalAlpha = 0.7;
  for (const [x, y, label] of state.atlas.points) {
    const [px, py] = toCanvas(x, y);
    context.fillStyle = state.atlas.colours[label] || "#999";
    context.beginPath();
    context.arc(px, py, 2.2, 0, 2 * Math.PI);
    context.fill();
  }
  context.globalAlpha = 1;
  if (state.drawn && state.drawn.point) marker(context, state.drawn.point, "#d55e00", "ring");
  if (state.point) marker(context, state.point, "#000", "cross");
}

function marker(context, point, colour, shape) {
  const [px, py] = toCanvas(point[0], point[1]);
  context.lineWidth = 2.5;
  context.strokeStyle = colour;
  context.beginPath();
  if (shape === "ring") {
    context.arc(px, py, 7, 0, 2 * Math.PI);
  } else {
    context.moveTo(px - 8, py); context.lineTo(px + 8, py);
    context.moveTo(px, py - 8); context.lineTo(px, py + 8);
  }
  context.stroke();
}

function showHover(event) {
  const canvas = $("map");
  const box = canvas.getBoundingClientRect();
  const px = (event.clientX - box.left) * canvas.width / box.width;
  const py = (event.clientY - box.top) * canvas.height / box.height;
  let best = -1, bestDistance = 36;  // within 6 canvas pixels
  state.atlas.points.forEach(([x, y], index) => {
    const [qx, qy] = toCanvas(x, y);
    const distance = (qx - px) ** 2 + (qy - py) ** 2;
    if (distance < bestDistance) { best = index; bestDistance = distance; }
  });
  const hover = $("hover");
  if (best < 0) { hover.hidden = true; return; }
  hover.src = `/api/atlas/image/${best}`;
  hover.title = state.atlas.class_names[state.atlas.points[best][2]] || "";
  hover.style.left = `${(event.clientX - box.left) + 12}px`;
  hover.style.top = `${(event.clientY - box.top) + 12}px`;
  hover.hidden = false;
}

// --- draw and drop -----------------------------------------------------------------------------------

let drawSeq = 0;

function setUpPad(facts) {
  const pad = $("pad");
  pad.height = Math.round(pad.width * facts.height / facts.width);
  pad.style.height = `${pad.height}px`;
  if (facts.channels === 3) $("ink").hidden = false;
  clearPad();
  let last = null;
  const at = (event) => {
    const box = pad.getBoundingClientRect();
    return [(event.clientX - box.left) * pad.width / box.width, (event.clientY - box.top) * pad.height / box.height];
  };
  pad.addEventListener("pointerdown", (event) => {
    pad.setPointerCapture(event.pointerId);
    last = at(event);
    stroke(last, last);
  });
  pad.addEventListener("pointermove", (event) => {
    if (!last) return;
    const next = at(event);
    stroke(last, next);
    last = next;
  });
  const finish = () => {
    if (!last) return;
    last = null;
    sendImage(pad.toDataURL("image/png"));
  };
  pad.addEventListener("pointerup", finish);
  pad.addEventListener("pointercancel", finish);
  $("clear").addEventListener("click", clearPad);
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files.length) readFile(event.dataTransfer.files[0]);
  });
  $("file").addEventListener("change", () => { if ($("file").files.length) readFile($("file").files[0]); });
  $("invert").addEventListener("change", () => { if (state.drawn) sendImage(state.drawn.image); });
}

function clearPad() {
  const pad = $("pad");
  const context = pad.getContext("2d");
  context.fillStyle = "#000";
  context.fillRect(0, 0, pad.width, pad.height);
}

function stroke(from, to) {
  const context = $("pad").getContext("2d");
  context.strokeStyle = state.facts.channels === 3 ? $("ink").value : "#fff";
  context.lineWidth = Number($("pen").value);
  context.lineCap = "round";
  context.beginPath();
  context.moveTo(from[0], from[1]);
  context.lineTo(to[0], to[1]);
  context.stroke();
}

function readFile(file) {
  const reader = new FileReader();
  reader.onload = () => {
    // The file itself is sent (so the result is `vae reconstruct FILE`'s); the pad shows it, to draw over.
    sendImage(reader.result);
    const picture = new Image();
    picture.onload = () => {
      clearPad();
      $("pad").getContext("2d").drawImage(picture, 0, 0, $("pad").width, $("pad").height);
    };
    picture.src = reader.result;
  };
  reader.onerror = () => say(`cannot read ${file.name}`, true);
  reader.readAsDataURL(file);
}

async function sendImage(image) {
  const seq = ++drawSeq;
  const invert = $("invert").value;
  try {
    const answer = await api("/api/encode", withLabel({ image, invert }));
    if (seq !== drawSeq) return;  // a newer drawing has been sent meanwhile
    $("seen").src = answer.input;
    $("recon").src = answer.reconstruction;
    $("recon").dataset.sent = image;
    state.drawn = { image, code: answer.code, point: answer.point };
    $("drawn-to-a").disabled = $("drawn-to-b").disabled = false;
    drawMap();
    if (state.facts.scores.length) showScores(await api("/api/score", { image, invert }), seq);
    else $("scores").replaceChildren(row("scores", "need an unconditional model (p(x), not p(x|y))"));
  } catch (error) {
    say(error.message, true);
  }
}

function showScores(answer, seq) {
  if (seq !== drawSeq) return;
  const table = $("scores");
  table.replaceChildren(row("score", `nats, higher = more unusual (K = ${answer.iw_samples}, seed ${answer.seed})`));
  for (const [name, value] of Object.entries(answer.scores)) table.append(scoreRow(name, value));
  if (state.facts.scores.includes("regret")) {
    // Regret refits the posterior for seconds: asked for by a click, not by every stroke.
    const button = document.createElement("button");
    button.type = "button";
    button.id = "regret";
    button.textContent = "compute (seconds)";
    button.addEventListener("click", () => scoreRegret(button, seq));
    const last = row("regret", "");
    last.lastChild.append(button);
    table.append(last);
  }
}

async function scoreRegret(button, seq) {
  button.disabled = true;
  try {
    const answer = await api("/api/score", { image: state.drawn.image, invert: $("invert").value,
      scores: ["regret"] });
    if (seq === drawSeq) button.parentNode.parentNode.replaceWith(scoreRow("regret", answer.scores.regret));
  } catch (error) {
    say(error.message, true);
    button.disabled = false;
  }
}

function scoreRow(name, value) {
  return row(name, value === null ? "n/a" : value.toFixed(4));
}

function row(name, value) {
  const tr = document.createElement("tr");
  const th = document.createElement("th");
  const td = document.createElement("td");
  th.textContent = name;
  td.textContent = value;
  tr.append(th, td);
  return tr;
}

// --- interpolate -------------------------------------------------------------------------------------

function setEnd(which, end) {
  if (!end) return;
  state.ends[which] = end;
  $(`end-${which}`).src = end.picture;
  $("interpolate").disabled = !(state.ends.a && state.ends.b);
}

async function interpolate() {
  const spec = (end) => (end.image ? { image: end.image } : { code: end.code });
  const body = withLabel({ a: spec(state.ends.a), b: spec(state.ends.b), method: $("method").value,
    steps: Number($("steps").value), invert: $("invert").value });
  try {
    const answer = await api("/api/interpolate", body);
    const strip = $("strip");
    strip.replaceChildren(...answer.images.map((image, index) => picture(image, answer.codes[index])));
    $("strip-caption").textContent = answer.inputs.length ?
      "two images: every layer moves, as vae interpolate does" : "the top codes' path, decoded as vae decode does";
  } catch (error) {
    say(error.message, true);
  }
}

function picture(image, code) {
  const img = document.createElement("img");
  img.src = image;
  img.addEventListener("click", () => { decode({ code }, true); });
  return img;
}

// --- sample ------------------------------------------------------------------------------------------

async function sample() {
  const body = withLabel({ n: Number($("count").value), seed: Number($("seed").value),
    temperature: Number($("temperature").value) });
  try {
    const answer = await api("/api/sample", body);
    $("samples").replaceChildren(...answer.images.map((image, index) => picture(image, answer.codes[index])));
  } catch (error) {
    say(error.message, true);
  }
}

// --- classes and buttons -----------------------------------------------------------------------------

function setUpClasses(names) {
  if (!names.length) return;
  const select = $("label");
  names.forEach((name, index) => select.append(new Option(name, index)));
  state.label = 0;
  $("class-picker").hidden = false;
  select.addEventListener("change", () => {
    state.label = Number(select.value);
    decode({ code: state.code }, false);
    if (state.drawn) sendImage(state.drawn.image);
  });
}

function wireButtons() {
  $("reset").addEventListener("click", () => {
    state.code = new Array(state.facts.latent_dim).fill(0);
    setSliders(state.code);
    decode({ code: state.code }, false);
  });
  $("view-to-a").addEventListener("click", () => setEnd("a", { code: state.code, picture: $("view").src }));
  $("view-to-b").addEventListener("click", () => setEnd("b", { code: state.code, picture: $("view").src }));
  const drawn = () => state.drawn && { image: state.drawn.image, picture: $("seen").src };
  $("drawn-to-a").addEventListener("click", () => setEnd("a", drawn()));
  $("drawn-to-b").addEventListener("click", () => setEnd("b", drawn()));
  $("interpolate").addEventListener("click", interpolate);
  $("sample").addEventListener("click", sample);
  $("reseed").addEventListener("click", () => {
    $("seed").value = Math.floor(Math.random() * 2 ** 31);
    sample();
  });
  $("temperature").addEventListener("input", () => { $("temperature-value").textContent = $("temperature").value; });
}

wireButtons();
start();
