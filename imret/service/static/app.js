"use strict";
// The search page: pick or drop a photo, optionally drag a box, see ranked results.
const $ = (id) => document.getElementById(id);
// seq: the number of the latest search; an answer to an older one is dropped, so results
// never show (or open with) another search's matches.
const state = { file: null, image: null, box: null, drag: null, scale: 1, query: null, seq: 0, abort: null,
                writable: false };

async function loadInfo() {
  try {
    const r = await fetch("/info");
    const info = await r.json();
    $("status").textContent = statusText(info);
    if (typeof info.min_score === "number") $("min-score").value = info.min_score;
    state.writable = !!info.writable;
    $("manage").hidden = !info.writable;
    if (info.rerank_steps && info.rerank_steps.length) {
      // the first option searches with the preset's own steps, as the API does when given none
      $("rerank").options[0].text = `preset's (${stepNames(info.rerank) || "none"})`;
      for (const s of info.rerank_steps) $("rerank").add(new Option(s, s));
      $("rerank-wrap").hidden = false;
    }
  } catch (e) { $("status").textContent = "service unreachable"; }
}

// The line under the title: what is searched, and whose head weights made its descriptors
// (/info's head_weights: the preset's shipped ones, the index's own from --adapt,
// --checkpoint or an earlier release, or null for a head with nothing to learn).
function statusText(info) {
  const head = { shipped: " · head: the preset's trained weights", own: " · head: weights of its own (--adapt, --checkpoint or an earlier release)" };
  return `${info.images.toLocaleString()} images · preset ${info.preset} · ${info.dim}-d${head[info.head_weights] || ""}`;
}

// "dba:k=2,alpha=3,aqe:n=2" → "dba,aqe": the step names of a re-ranking spec
function stepNames(spec) {
  return (spec || "").split(",").filter(t => t.includes(":") || !t.includes("=")).map(t => t.split(":")[0]).join(",");
}

function showMessage(text) { const m = $("message"); m.textContent = text; m.hidden = !text; }
function showNotice(text) { const m = $("notice"); m.textContent = text || ""; m.hidden = !text; }
function clearResults() { $("results").replaceChildren(); showNotice(""); }

function setFile(file) {
  if (!file) return;
  state.file = file; state.box = null;
  clearResults();  // the old results belong to another photo
  const img = new Image();
  img.onload = () => { state.image = img; drawPreview(); $("search").disabled = false; search(); };
  // The server decodes more formats than browsers do (TIFF, 16-bit, CMYK): let it decide.
  img.onerror = () => { state.image = null; $("preview").hidden = true; $("search").disabled = false; search(); };
  img.src = URL.createObjectURL(file);
  $("drop-hint").hidden = true;
}

function drawPreview() {
  const c = $("preview"), img = state.image;
  const maxW = c.parentElement.clientWidth - 16;
  state.scale = Math.min(1, maxW / img.naturalWidth, 360 / img.naturalHeight);
  c.width = Math.round(img.naturalWidth * state.scale); c.height = Math.round(img.naturalHeight * state.scale);
  c.hidden = false;
  const g = c.getContext("2d");
  g.drawImage(img, 0, 0, c.width, c.height);
  const b = state.box || state.drag;
  if (b) {
    g.fillStyle = "rgba(0,0,0,.45)";
    const [x0, y0, x1, y1] = norm(b).map((v) => v * state.scale);
    g.fillRect(0, 0, c.width, y0); g.fillRect(0, y1, c.width, c.height - y1);
    g.fillRect(0, y0, x0, y1 - y0); g.fillRect(x1, y0, c.width - x1, y1 - y0);
    g.strokeStyle = "#ffd23f"; g.lineWidth = 2; g.strokeRect(x0, y0, x1 - x0, y1 - y0);
  }
  $("clear-box").disabled = !state.box;
}

const norm = (b) => [Math.min(b[0], b[2]), Math.min(b[1], b[3]), Math.max(b[0], b[2]), Math.max(b[1], b[3])];

function pointer(ev) {
  const r = $("preview").getBoundingClientRect();
  const sx = $("preview").width / r.width;
  return [(ev.clientX - r.left) * sx / state.scale, (ev.clientY - r.top) * sx / state.scale];
}

async function search() {
  if (!state.file) return;
  const seq = ++state.seq;
  if (state.abort) state.abort.abort();
  const abort = state.abort = new AbortController();
  const fd = new FormData();
  fd.append("file", state.file);
  fd.append("top", $("top").value);
  if ($("rerank").value) fd.append("rerank", $("rerank").value);
  if ($("min-score").value !== "") fd.append("min_score", $("min-score").value);
  if (state.box) fd.append("bbox", norm(state.box).map((v) => Math.round(v)).join(","));
  showMessage("");
  const t0 = performance.now();
  try {
    const r = await fetch("/search", { method: "POST", body: fd, signal: abort.signal });
    const body = await r.json();
    if (seq !== state.seq) return;  // a newer search was started meanwhile
    if (!r.ok) {
      clearResults();
      showMessage(typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
      return;
    }
    state.query = body.query;
    render(body, seq);
    $("status").textContent = `${body.images.toLocaleString()} images · query ${body.ms.toFixed(0)} ms on the server, ${(performance.now() - t0).toFixed(0)} ms in all`;
  } catch (e) {
    if (seq === state.seq && e.name !== "AbortError") { clearResults(); showMessage(`search failed: ${e}`); }
  }
}

function render(body, seq) {
  const ol = $("results"); ol.replaceChildren();
  for (const h of body.results) {
    const li = document.createElement("li");
    li.tabIndex = 0; li.dataset.id = h.id; li.dataset.seq = seq;
    li.className = "result " + (h.match ? "match" : "no-match");
    li.innerHTML = `<img loading="lazy" alt=""><div class="meta"><span class="rank">#${h.rank}</span><span class="cosine" title="cosine similarity of the descriptors"></span></div><div class="name"></div>`;
    li.querySelector(".cosine").textContent = `cosine ${h.cosine.toFixed(3)}`;
    if (h.inliers !== undefined) {
      const v = document.createElement("span");
      // coloured only when verification verified it
      v.className = "inliers " + (h.verified ? "verified" : "low");
      v.textContent = `${h.inliers} inliers${h.verified ? " ✓" : ""}`;
      v.title = h.verified ? "verified by matching local features" : "too few consistent local matches: not verified";
      li.querySelector(".meta").append(v);
    }
    li.querySelector("img").src = h.thumbnail;
    li.querySelector(".name").textContent = h.name;
    li.title = h.path;
    if (state.writable && $("token").value) {
      const rm = document.createElement("button");
      rm.type = "button"; rm.className = "remove"; rm.textContent = "remove";
      rm.onclick = (ev) => { ev.stopPropagation(); removePhoto(h, li); };
      li.append(rm);
    }
    li.onclick = li.onkeydown = (ev) => {
      if ((ev.type === "click" || ev.key === "Enter") && Number(li.dataset.seq) === state.seq) openDetail(h);
    };
    ol.append(li);
  }
  if (!body.results.length) showMessage("The index is empty.");
  else showNotice(body.no_match ? `${body.no_match}. The closest photos are shown greyed.` : "");
}

const authHeaders = () => ({ Authorization: `Bearer ${$("token").value}` });
const detailText = (d) => (typeof d === "string" ? d : d && d.message ? d.message : JSON.stringify(d));

async function addPhotos(files) {
  if (!files || !files.length) return;
  const fd = new FormData();
  for (const f of files) fd.append("files", f);
  $("manage-message").textContent = `adding ${files.length} photo(s)…`;
  try {
    const r = await fetch("/index/add", { method: "POST", body: fd, headers: authHeaders() });
    const body = await r.json();
    if (!r.ok) { $("manage-message").textContent = `not added: ${detailText(body.detail)}`; return; }
    const rej = body.rejected.length ? `; rejected ${body.rejected.map((x) => `${x.name} (${x.reason})`).join(", ")}` : "";
    $("manage-message").textContent = `added ${body.added.length}${rej}; ${body.images} images in the index`;
    loadInfo();
  } catch (e) { $("manage-message").textContent = `adding failed: ${e}`; }
}

async function removePhoto(h, li) {
  try {
    const r = await fetch(`/index/${h.id}`, { method: "DELETE", headers: authHeaders() });
    const body = await r.json();
    if (!r.ok) { $("manage-message").textContent = `not removed: ${detailText(body.detail)}`; return; }
    li.remove();
    $("manage-message").textContent = `removed ${h.name}; ${body.images} images in the index`;
  } catch (e) { $("manage-message").textContent = `removing failed: ${e}`; }
}

function openDetail(h) {
  const verdict = h.inliers === undefined ? "" : ` · ${h.inliers} inliers (${h.verified ? "verified" : "not verified"})`;
  $("detail-title").textContent = `#${h.rank} · ${h.name} · cosine ${h.cosine.toFixed(3)}${verdict} · ${h.match ? "a match" : "not a match"}`;
  const c = $("detail-query"), img = state.image;
  if (img) {
    const b = state.box ? norm(state.box) : [0, 0, img.naturalWidth, img.naturalHeight];
    c.width = Math.max(1, b[2] - b[0]); c.height = Math.max(1, b[3] - b[1]);
    c.getContext("2d").drawImage(img, b[0], b[1], c.width, c.height, 0, 0, c.width, c.height);
  }
  $("detail-result").src = h.image;
  $("detail-caption").textContent = `result: ${h.path}`;
  const extra = $("detail-extra"); extra.replaceChildren();
  $("detail").classList.toggle("with-matches", !!(h.matches && h.matches.length));
  if (h.matches && h.matches.length && img) {
    const result = new Image();
    result.onload = () => extra.append(drawMatches(h, c, result));
    result.src = h.image;
  }
  $("detail").showModal();
}

// Query (as searched: the box, at the size the server decoded) and result side by side,
// with a line for each inlier match of the spatial verification.
function drawMatches(h, query, result) {
  const H = Math.max(160, Math.min(360, Math.round(window.innerHeight * 0.45))), gap = 8;  // fits above the fold
  const sq = H / query.height, sr = H / result.naturalHeight;
  const wq = Math.round(query.width * sq), wr = Math.round(result.naturalWidth * sr);
  const k = state.query && state.query.width ? query.width / state.query.width : 1;
  const c = document.createElement("canvas");
  c.width = wq + gap + wr; c.height = H; c.className = "matches";
  c.setAttribute("aria-label", `${h.inliers} inlier matches`);
  const g = c.getContext("2d");
  g.drawImage(query, 0, 0, wq, H);
  g.drawImage(result, wq + gap, 0, wr, H);
  g.lineWidth = 1.5; g.strokeStyle = "rgba(60, 220, 90, 0.85)";
  for (const [qx, qy, rx, ry] of h.matches) {
    g.beginPath(); g.moveTo(qx * k * sq, qy * k * sq); g.lineTo(wq + gap + rx * sr, ry * sr); g.stroke();
  }
  const fig = document.createElement("figure");
  const cap = document.createElement("figcaption");
  cap.textContent = `query (left) → result (right): ${h.inliers} inlier matches (spatial verification)`;
  fig.append(c, cap);
  return fig;
}

function init() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => setFile(e.target.files[0]));
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
  drop.addEventListener("drop", (e) => setFile(e.dataTransfer.files[0]));
  const c = $("preview");
  c.addEventListener("pointerdown", (e) => { e.preventDefault(); const p = pointer(e); state.drag = [...p, ...p]; c.setPointerCapture(e.pointerId); });
  c.addEventListener("pointermove", (e) => { if (state.drag) { const p = pointer(e); state.drag[2] = p[0]; state.drag[3] = p[1]; drawPreview(); } });
  c.addEventListener("pointerup", () => {
    const b = state.drag; state.drag = null;
    if (b && Math.abs(b[2] - b[0]) > 8 && Math.abs(b[3] - b[1]) > 8) { state.box = b; search(); }
    drawPreview();
  });
  c.addEventListener("click", (e) => e.preventDefault());  // a drag on the preview must not reopen the file picker
  $("clear-box").onclick = () => { state.box = null; drawPreview(); search(); };
  $("search").onclick = search;
  $("top").onchange = search;
  $("rerank").onchange = search;
  $("min-score").onchange = search;
  $("add-files").addEventListener("change", (e) => { addPhotos(e.target.files); e.target.value = ""; });
  $("token").addEventListener("change", () => state.file && search());  // show or hide the remove buttons
  window.addEventListener("resize", () => state.image && drawPreview());
  loadInfo();
}
init();
