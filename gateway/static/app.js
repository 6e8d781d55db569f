// The explorer page: plain DOM, no build step. It calls the gateway's own endpoints only:
// POST /v1/recommend, POST /v1/similar-items, GET /v1/status, GET /v1/models. Ids are shown with textContent
// (never as HTML): an item id is data.
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

// One request through the gateway: the reply (or the gateway's error body), the HTTP status,
// the latency the page saw and the one the gateway reports (Server-Timing).
async function ask(path, body) {
  const started = performance.now();
  const response = await fetch(path, {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  });
  const doc = await response.json();
  const timing = /dur=([\d.]+)/.exec(response.headers.get("Server-Timing") || "");
  return {
    doc, code: response.status, pageMs: performance.now() - started,
    gatewayMs: timing ? Number(timing[1]) : null,
  };
}

function describeError(code, doc) {
  const why = doc.error || JSON.stringify(doc);
  const field = doc.field ? ` (field: ${doc.field})` : "";
  return el("div", {class: "error"}, `${code} ${doc.status || ""}: ${why}${field}`);
}

// What a reply says besides its items: fallbacks, fills, ignored ids, filters, max_per.
function notes(reply) {
  const out = [];
  if (reply.fallback === "cold_start") {
    out.push("cold start: this version does not know the user; these are its most popular items (no score)");
  } else if (reply.items.some((i) => i.filled)) {
    out.push("filled: fewer than k items were left after exclusions and the filter; the rest come from the popularity list");
  }
  if (reply.filter_passing != null) out.push(`filter: ${reply.filter_passing} items of the catalogue pass`);
  if (reply.status === "no_match") out.push("no_match: no item passes the filter");
  if (reply.max_per) {
    const met = reply.status === "partial" ? "could not be met for all k" : "met";
    out.push(`at most ${reply.max_per.n} per ${reply.max_per.attr}: ${met}`);
  }
  if (reply.unknown_items && reply.unknown_items.length) {
    out.push(`ignored unknown items: ${reply.unknown_items.join(", ")}`);
  }
  if (reply.from_cache) out.push("answered from the reply cache");
  return out.map((n) => el("div", {class: "note"}, n));
}

// The item last clicked: its row is highlighted wherever it is listed (the user's list keeps the
// mark while its similar items show beside it; a similar-items reply never lists the item itself).
let clicked = null;

function highlightClicked() {
  for (const row of document.querySelectorAll("tr[data-item]")) {
    const on = row.dataset.item === clicked;
    row.classList.toggle("selected", on);
    if (on) row.setAttribute("aria-current", "true"); else row.removeAttribute("aria-current");
  }
}

function showReply(target, result, onItem) {
  const {doc, code} = result;
  target.replaceChildren();
  if (!doc.items) {  // the gateway's own error body (invalid, timeout, busy, ...)
    target.append(describeError(code, doc));
    return;
  }
  if (doc.status === "error" || doc.status === "expired") {
    target.append(describeError(code, doc));
    return;
  }
  const latency = `${result.pageMs.toFixed(1)} ms` +
    (result.gatewayMs != null ? ` (gateway ${result.gatewayMs.toFixed(1)} ms)` : "");
  target.append(
    el("div", {class: "meta"},
      el("b", {}, doc.kind === "recommend" ? `for ${doc.subject_id ?? "a vector"}` : `like ${doc.subject_id}`),
      ` · status ${doc.status}`,
      doc.model && doc.model !== "default" ? ` · model ${doc.model}` : "",
      " · version ", el("b", {class: "version"}, doc.index_version),
      doc.variant ? ` · arm ${doc.variant}` : "", doc.pinned ? " (pinned)" : "",
      ` · worker ${doc.worker_id} · latency `, el("b", {class: "latency"}, latency)),
    ...notes(doc));
  const rows = doc.items.map((item, i) => {
    const badges = [];
    if (item.filled) badges.push(el("span", {class: "badge filled"}, "filled"));
    if (doc.fallback === "cold_start") badges.push(el("span", {class: "badge cold"}, "cold start"));
    const button = el("button", {class: "item", type: "button", "data-item": item.item_id}, item.item_id);
    button.addEventListener("click", () => {
      clicked = item.item_id;
      highlightClicked();
      onItem(item.item_id);
    });
    return el("tr", {"data-item": item.item_id},
      el("td", {}, i + 1), el("td", {}, button, ...badges),
      el("td", {class: "score"}, item.score == null ? "–" : item.score.toFixed(4)));
  });
  target.append(el("table", {},
    el("thead", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, "item"), el("th", {}, "score"))),
    el("tbody", {}, ...rows)));
  highlightClicked();
}

function options() {
  const body = {k: Number($("k").value) || 10, model: $("model").value || "default"};
  const filter = $("filter").value.trim();
  if (filter) {
    try { body.filter = JSON.parse(filter); } catch (e) { throw new Error(`filter is not JSON: ${e.message}`); }
  }
  const exclude = $("exclude").value.split(/[\s,]+/).filter(Boolean);
  if (exclude.length) body.exclude_items = exclude;
  const maxPer = $("max-per").value.trim();
  if (maxPer) {
    const [attr, n] = [maxPer.slice(0, maxPer.lastIndexOf(":")), maxPer.slice(maxPer.lastIndexOf(":") + 1)];
    body.max_per = {attr, n: Number(n)};
  }
  return body;
}

async function similar(itemId) {
  const target = $("similar-result");
  target.replaceChildren(el("div", {class: "meta"}, `similar to ${itemId}…`));
  let body;
  try { body = {...options(), item_id: itemId}; } catch (e) {
    target.replaceChildren(el("div", {class: "error"}, e.message)); return;
  }
  showReply(target, await ask("/v1/similar-items", body), similar);
}

async function recommend(event) {
  event.preventDefault();
  const target = $("rec-result");
  let body;
  try { body = {...options(), user_id: $("user-id").value.trim()}; } catch (e) {
    target.replaceChildren(el("div", {class: "error"}, e.message)); return;
  }
  target.replaceChildren(el("div", {class: "meta"}, "asking…"));
  showReply(target, await ask("/v1/recommend", body), similar);
}

// GET /v1/models: each model's LATEST, newest versions, experiment arms and pins.
let models = [];

async function loadModels() {
  try {
    const response = await fetch("/v1/models");
    if (!response.ok) return;
    models = (await response.json()).models;
  } catch (e) { return; }
  const chosen = $("model").value;
  $("model").replaceChildren(...models.map((m) => el("option", {value: m.model}, m.model)));
  if (models.some((m) => m.model === chosen)) $("model").value = chosen;
  fillSides();
}

// The versions one side of the comparison can take: the experiment's arms first, then LATEST,
// then every listed version. Each is asked with `version` pinned, so LATEST is pinned too (an
// unpinned request would follow the user's arm).
function sideChoices(model) {
  const out = [];
  for (const arm of model.experiment?.arms || []) {
    if (!arm.version) continue;
    const share = `${Math.round(arm.share * 100)}%`;
    out.push({version: arm.version, label: `arm ${arm.name} (${share}): ${arm.version}`});
  }
  if (model.latest) out.push({version: model.latest, label: `LATEST: ${model.latest}`});
  for (const v of model.versions) {
    out.push({version: v, label: v + (model.pinned.includes(v) ? " (pinned)" : "")});
  }
  return out;
}

function fillSides() {
  const model = models.find((m) => m.model === $("model").value);
  const choices = model ? sideChoices(model) : [];
  for (const id of ["cmp-a", "cmp-b"]) {
    $(id).replaceChildren(...choices.map((c) => el("option", {value: c.version}, c.label)));
  }
  const distinct = [...new Set(choices.map((c) => c.version))];
  $("compare").disabled = distinct.length < 2;
  $("cmp-summary").textContent = distinct.length < 2
    ? "this model has one version: nothing to compare yet" : "";
  if (distinct.length >= 2) {
    $("cmp-a").value = distinct[0];
    $("cmp-b").value = distinct[1];
  }
}

async function compare(event) {
  event.preventDefault();
  const sides = [["A", $("cmp-a").value, $("cmp-result-a")], ["B", $("cmp-b").value, $("cmp-result-b")]];
  let body;
  try { body = {...options(), user_id: $("user-id").value.trim()}; } catch (e) {
    $("cmp-summary").replaceChildren(el("div", {class: "error"}, e.message)); return;
  }
  $("cmp-summary").textContent = "asking both…";
  const results = await Promise.all(sides.map(([, version]) => ask("/v1/recommend", {...body, version})));
  const lists = results.map((r) => new Set((r.doc.items || []).map((i) => i.item_id)));
  sides.forEach(([name, , target], i) => {
    showReply(target, results[i], similar);
    const other = lists[1 - i];
    for (const row of target.querySelectorAll("tr[data-item]")) {
      if (!other.has(row.dataset.item)) {
        row.classList.add("only");
        row.cells[1].append(el("span", {class: "badge only"}, `only in ${name}`));
      }
    }
  });
  const shared = [...lists[0]].filter((id) => lists[1].has(id)).length;
  $("cmp-summary").textContent = results.every((r) => r.doc.items)
    ? `A and B share ${shared} of their ${lists[0].size} and ${lists[1].size} items` : "";
}

function age(seconds) {
  if (seconds == null) return "?";
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

async function refreshStatus() {
  const target = $("status");
  try {
    const response = await fetch("/v1/status");
    const doc = await response.json();
    if (!response.ok) { target.textContent = `status: ${doc.error}`; return; }
    if (!doc.versions.length) { target.textContent = "no worker is serving (no heartbeat in Redis)"; return; }
    const parts = doc.versions.map((v) => {
      const recall = Object.entries(v.live_recall)
        .map(([kind, r]) => `${kind} ${r.recall.toFixed(3)} (${r.samples} samples)`).join(", ");
      return `serving ${v.version} on ${v.workers.length} worker(s), built ${age(v.age_s)} ago` +
        ` · live recall@k ${recall || "not sampled yet"}`;
    });
    const fresh = doc.serving_latest
      ? el("span", {class: "ok"}, " · serving LATEST")
      : el("span", {class: "warn"}, ` · LATEST is ${doc.latest}: not served by every worker yet`);
    target.replaceChildren(parts.join(" | "), fresh);
  } catch (e) {
    target.textContent = `status unavailable: ${e.message}`;
  }
}

$("recommend-form").addEventListener("submit", recommend);
$("compare-form").addEventListener("submit", compare);
$("model").addEventListener("change", fillSides);
loadModels();
$("example-users").append(...[0, 1, 2, 3, 42].map((u) => el("option", {value: `u${u}`})));
refreshStatus();
setInterval(refreshStatus, 5000);
