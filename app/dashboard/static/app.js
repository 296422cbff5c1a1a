// slimforge dashboard: plain JavaScript, no build step, nothing fetched from outside the service.
// The API key lives in sessionStorage; every call sends it as "Authorization: Bearer".
"use strict";

const KEY = "slimforge.apiKey";
const ACTIVE = new Set(["queued", "running"]);
const SVG = "http://www.w3.org/2000/svg"; // an XML namespace name, never fetched
const $ = (id) => document.getElementById(id);

const state = {
  key: sessionStorage.getItem(KEY),
  methods: [],
  cursor: null,
  openId: null, // the job shown in the detail panel
  job: null, // ... and its last state from the API
  events: [],
  lastEventId: null,
  follow: null, // AbortController of the event stream being read
  chartTimer: null,
};

// ---------------------------------------------------------------- helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

const fmtInt = (n) => (n == null ? "–" : Number(n).toLocaleString("en-US"));
// Axis ticks: 4 significant digits, whole numbers from 1000, short exponents for tiny values.
function fmtSig(n) {
  if (Math.abs(n) >= 1000) return fmtInt(Math.round(n));
  if (n !== 0 && Math.abs(n) < 0.01) return n.toExponential(2);
  return String(Number(n.toPrecision(4)));
}
const fmtNum = (n, digits = 3) => (n == null ? "–" : Number(n).toFixed(digits));
const fmtBytes = (n) => (n == null ? "–" : n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${(n / 1e3).toFixed(1)} kB`);
const fmtTime = (t) => (t ? new Date(t).toLocaleString() : "–");
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// fetch with the key; JSON errors ({"error": {"message"}}) become ApiError with that message.
async function api(path, { method = "GET", json, signal, key = state.key } = {}) {
  const headers = { Authorization: `Bearer ${key}` };
  if (json !== undefined) headers["Content-Type"] = "application/json";
  const body = json === undefined ? undefined : JSON.stringify(json);
  const response = await fetch(path, { method, headers, body, signal });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const error = (await response.json()).error;
      if (error && error.message) message = error.message;
    } catch (_) {
      // not JSON: keep the status line
    }
    if (response.status === 401 && key === state.key && state.key) logout(`Logged out: ${message}`);
    throw new ApiError(response.status, message);
  }
  return response;
}

const getJson = async (path, options) => (await api(path, options)).json();

// ---------------------------------------------------------------- log in / out

async function login(event) {
  event.preventDefault();
  const key = $("api-key").value.trim();
  $("login-error").textContent = "";
  try {
    await api("/v1/jobs?limit=1", { key });
  } catch (error) {
    $("login-error").textContent = error.message;
    return;
  }
  sessionStorage.setItem(KEY, key);
  state.key = key;
  $("api-key").value = "";
  await showApp();
}

function logout(message = "") {
  stopFollowing();
  sessionStorage.removeItem(KEY);
  state.key = null;
  state.openId = null;
  state.job = null;
  $("app-view").hidden = true;
  $("logout").hidden = true;
  $("detail").hidden = true;
  $("login-view").hidden = false;
  $("login-error").textContent = message;
}

async function showApp() {
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  $("logout").hidden = false;
  await Promise.all([loadMethods(), loadJobs(true)]);
}

// ---------------------------------------------------------------- job list

async function loadJobs(reset) {
  if (reset) {
    state.cursor = null;
    $("job-rows").replaceChildren();
  }
  const params = new URLSearchParams({ limit: "20" });
  if ($("status-filter").value) params.set("status", $("status-filter").value);
  if (state.cursor) params.set("after", state.cursor);
  const page = await getJson(`/v1/jobs?${params}`);
  for (const job of page.items) $("job-rows").append(jobRow(job));
  state.cursor = page.next_cursor;
  $("load-more").hidden = !state.cursor;
  $("jobs-empty").hidden = $("job-rows").children.length > 0;
}

function jobRow(job) {
  const open = el("button", { type: "button", class: "link", text: job.id, onclick: () => openJob(job.id) });
  const row = el(
    "tr",
    { "data-job": job.id },
    el("td", {}, open),
    el("td", { text: job.method }),
    el("td", {}, el("span", { class: `status ${job.status}`, text: job.status })),
    el("td", { text: fmtTime(job.created_at) }),
  );
  if (state.openId === job.id) row.setAttribute("aria-current", "true");
  return row;
}

function updateRow(job) {
  const old = document.querySelector(`#job-rows tr[data-job="${job.id}"]`);
  if (old) old.replaceWith(jobRow(job));
}

// ---------------------------------------------------------------- job detail

async function openJob(id) {
  stopFollowing();
  state.openId = id;
  state.job = null;
  state.events = [];
  $("d-metrics").replaceChildren();
  $("d-charts").replaceChildren();
  state.lastEventId = null;
  $("d-events").replaceChildren();
  $("d-event-count").textContent = "0";
  $("d-files").replaceChildren();
  $("d-progress").value = 0;
  $("d-progress-label").textContent = "Progress";
  for (const row of document.querySelectorAll("#job-rows tr")) {
    if (row.dataset.job === id) row.setAttribute("aria-current", "true");
    else row.removeAttribute("aria-current");
  }
  $("detail").hidden = false;
  await refreshJob(id);
  followEvents(id);
}

async function refreshJob(id = state.openId) {
  const job = await getJson(`/v1/jobs/${id}`);
  updateRow(job);
  if (id !== state.openId) return job; // another job was opened meanwhile
  state.job = job;
  $("d-id").textContent = job.id;
  $("d-status").textContent = job.status;
  $("d-status").className = `status ${job.status}`;
  $("d-stage").textContent = job.stage || "–";
  $("d-error").textContent = job.error || "";
  $("d-cancel").hidden = !ACTIVE.has(job.status) || job.cancel_requested;
  if (!ACTIVE.has(job.status)) {
    $("d-progress").max = 1;
    $("d-progress").value = job.status === "succeeded" ? 1 : 0;
    $("d-progress-label").textContent = job.status === "succeeded" ? "Finished" : `Ended: ${job.status}`;
  }
  renderMetrics(job.metrics || {});
  scheduleCharts();
  if (job.status === "succeeded" && !$("d-files").children.length) await loadFiles(job.id);
  return job;
}

async function cancelJob() {
  try {
    await api(`/v1/jobs/${state.openId}/cancel`, { method: "POST" });
  } catch (error) {
    $("d-error").textContent = error.message;
  }
  await refreshJob();
}

// Follows GET /v1/jobs/{id}/events?stream=true with fetch (EventSource cannot send the
// Authorization header): reads the body, splits it into server-sent events at blank lines and
// parses their "data:" lines. Reconnects after a dropped connection from the last event id.
async function followEvents(id) {
  const control = new AbortController();
  state.follow = control;
  while (!control.signal.aborted) {
    let ended = false;
    try {
      const after = state.lastEventId == null ? "" : `&after=${state.lastEventId}`;
      const response = await api(`/v1/jobs/${id}/events?stream=true${after}`, { signal: control.signal });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const message = parseSse(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
          if (message && message.event === "job.end") ended = true;
          else if (message && message.data) onEvent(message.data);
        }
      }
    } catch (error) {
      if (control.signal.aborted) return;
      if (error instanceof ApiError && error.status < 500) {
        $("d-error").textContent = error.message;
        return;
      }
    }
    if (control.signal.aborted) return;
    if (ended) {
      await refreshJob(id);
      return;
    }
    await sleep(1000); // connection dropped: resume after the last event seen
  }
}

function parseSse(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue; // a comment (keep-alive)
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  return { event, data: JSON.parse(data.join("\n")) };
}

function stopFollowing() {
  if (state.follow) state.follow.abort();
  state.follow = null;
}

function onEvent(event) {
  if (event.job_id !== state.openId) return;
  state.events.push(event);
  state.lastEventId = event.id;
  const item = el("li", { class: event.level }, el("time", { text: fmtTime(event.time) }), ` [${event.stage || "–"}] ${event.message}`);
  $("d-events").append(item);
  $("d-event-count").textContent = String(state.events.length);
  scheduleCharts();
  if (state.job && !ACTIVE.has(state.job.status)) return; // ended: the log replays, the bar stays
  if (event.message.startsWith("stage ")) refreshJob().catch(() => {});
  const data = event.data || {};
  if (event.stage) {
    $("d-stage").textContent = event.stage;
    if ($("d-status").textContent === "queued") $("d-status").textContent = "running";
  }
  const what = event.stage ? `${event.stage}: ${event.message}` : event.message;
  if (data.index && data.total) {
    $("d-progress").max = data.total;
    $("d-progress").value = data.index;
    $("d-progress-label").textContent = `${what} (${data.index}/${data.total})`;
  } else {
    $("d-progress-label").textContent = what;
  }
}

async function loadFiles(id) {
  const listing = await getJson(`/v1/jobs/${id}/artifacts`);
  const items = listing.files.map((file) => {
    const link = el("a", { href: file.url, "data-path": file.path, text: `Download ${file.path}` });
    link.addEventListener("click", (event) => {
      event.preventDefault();
      download(file).catch((error) => ($("d-error").textContent = error.message));
    });
    return el("li", {}, link, el("span", { class: "muted", text: ` ${fmtBytes(file.size)} · sha256 ${file.sha256.slice(0, 12)}…` }));
  });
  $("d-files").replaceChildren(...items);
}

// Downloads need the Bearer header, so: fetch → blob → object URL → a temporary <a download>.
async function download(file) {
  const blob = await (await api(file.url)).blob();
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: file.path.split("/").pop() });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

// ---------------------------------------------------------------- metrics and charts

function renderMetrics(m) {
  const rows = [["metric", "teacher", "student", ""]];
  if (m.params_before != null) {
    const target = m.target_params ? `${fmtNum(100 * m.achieved_ratio, 2)} % of the model; target ${fmtInt(m.target_params)}` : "";
    rows.push(["parameters", fmtInt(m.params_before), fmtInt(m.params_after), target]);
  }
  if (m.teacher_perplexity != null || m.student_perplexity != null) {
    const ratio = m.perplexity_ratio != null ? `×${fmtNum(m.perplexity_ratio, 2)}` : "";
    rows.push(["perplexity", fmtNum(m.teacher_perplexity), fmtNum(m.student_perplexity), ratio]);
  }
  if (m.perplexity_before_distill != null) rows.push(["perplexity before kd", "", fmtNum(m.perplexity_before_distill), ""]);
  if (m.artifact_bytes != null) rows.push(["artifact size", "", fmtBytes(m.artifact_bytes), ""]);
  if (m.peak_rss_bytes != null) rows.push(["peak memory (worker)", "", fmtBytes(m.peak_rss_bytes), ""]);
  if (m.tokens_used != null) rows.push(["calibration tokens", "", fmtInt(m.tokens_used), ""]);
  for (const [stage, seconds] of Object.entries(m.stage_seconds || {})) {
    rows.push([`${stage} (s)`, "", fmtNum(seconds, 2), ""]);
  }
  const table = $("d-metrics");
  table.replaceChildren();
  if (rows.length === 1) return;
  const [head, ...body] = rows;
  table.append(el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col", text: h })))));
  table.append(
    el("tbody", {}, ...body.map(([name, ...cells]) =>
      el("tr", { "data-metric": name }, el("th", { scope: "row", text: name }), ...cells.map((c) => el("td", { text: c })))),
    ),
  );
}

function scheduleCharts() {
  if (state.chartTimer) return;
  state.chartTimer = setTimeout(() => {
    state.chartTimer = null;
    renderCharts();
  }, 200);
}

// Loss curves from the events (lillama per block, kd steps, minitron candidates), then the
// teacher-vs-student bars once the job has metrics.
function renderCharts() {
  const charts = [];
  const blocks = state.events.filter((e) => e.data && e.data.loss_before != null && e.data.loss_after != null);
  if (blocks.length) {
    charts.push(lineChart("Lillama: loss per block", "block", [
      { name: "loss before", points: blocks.map((e) => [e.data.index, e.data.loss_before]) },
      { name: "loss after", points: blocks.map((e) => [e.data.index, e.data.loss_after]) },
    ]));
  }
  let kd = state.events.filter((e) => e.stage === "distilling" && e.data && e.data.loss != null).map((e) => e.data);
  const m = (state.job && state.job.metrics) || {};
  if (!kd.length && m.distill && m.distill.curve) kd = m.distill.curve;
  if (kd.length) charts.push(lineChart("Distillation (kd) loss", "step", [{ name: "kd loss", points: kd.map((p) => [p.step, p.loss]) }]));
  const candidates = state.events.filter((e) => e.message === "candidate scored" && e.data.perplexity != null);
  if (candidates.length) {
    charts.push(lineChart("Minitron candidates: perplexity", "candidate", [
      { name: "perplexity", points: candidates.map((e) => [e.data.index, e.data.perplexity]) },
    ]));
  }
  if (m.teacher_perplexity != null && m.student_perplexity != null) {
    charts.push(barChart("Perplexity: teacher vs student", [
      ["teacher", m.teacher_perplexity, fmtNum(m.teacher_perplexity, 2)],
      ["student", m.student_perplexity, fmtNum(m.student_perplexity, 2)],
    ]));
  }
  if (m.params_before != null && m.params_after != null) {
    charts.push(barChart("Parameters: teacher vs student", [
      ["teacher", m.params_before, fmtInt(m.params_before)],
      ["student", m.params_after, fmtInt(m.params_after)],
    ]));
  }
  if (!charts.length) charts.push(el("p", { class: "muted", text: "No chart data yet: losses and metrics appear here as the job reports them." }));
  $("d-charts").replaceChildren(...charts);
}

const W = 360;
const H = 200;
const PAD = { left: 48, right: 12, top: 40, bottom: 32 };

function frame(title) {
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": title, class: "chart" });
  root.append(svg("title", {}, title), svg("text", { x: W / 2, y: 16, "text-anchor": "middle", class: "chart-title" }, title));
  return root;
}

function lineChart(title, xLabel, series) {
  const root = frame(title);
  const all = series.flatMap((s) => s.points);
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y0 === y1) [y0, y1] = [y0 - 1, y1 + 1];
  const sx = (x) => PAD.left + (x1 === x0 ? 0.5 : (x - x0) / (x1 - x0)) * (W - PAD.left - PAD.right);
  const sy = (y) => H - PAD.bottom - ((y - y0) / (y1 - y0)) * (H - PAD.top - PAD.bottom);
  root.append(
    svg("line", { x1: PAD.left, y1: H - PAD.bottom, x2: W - PAD.right, y2: H - PAD.bottom, class: "axis" }),
    svg("line", { x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: H - PAD.bottom, class: "axis" }),
    svg("text", { x: PAD.left - 4, y: sy(y1) + 4, "text-anchor": "end", class: "tick" }, fmtSig(y1)),
    svg("text", { x: PAD.left - 4, y: sy(y0) + 4, "text-anchor": "end", class: "tick" }, fmtSig(y0)),
    svg("text", { x: sx(x0), y: H - PAD.bottom + 14, "text-anchor": "middle", class: "tick" }, String(x0)),
    svg("text", { x: sx(x1), y: H - PAD.bottom + 14, "text-anchor": "middle", class: "tick" }, String(x1)),
    svg("text", { x: (W + PAD.left) / 2, y: H - 4, "text-anchor": "middle", class: "tick" }, xLabel),
  );
  series.forEach((s, i) => {
    const points = s.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
    root.append(svg("polyline", { points, class: `line s${i}` }));
    for (const [x, y] of s.points) root.append(svg("circle", { cx: sx(x), cy: sy(y), r: 2.5, class: `dot s${i}` }));
    root.append(svg("text", { x: PAD.left + 90 * i, y: 30, class: `legend s${i}` }, `— ${s.name}`));
  });
  return root;
}

function barChart(title, bars) {
  const root = frame(title);
  const max = Math.max(...bars.map((b) => b[1])) || 1;
  const slot = (W - PAD.left - PAD.right) / bars.length;
  const height = H - PAD.top - PAD.bottom;
  bars.forEach(([label, value, text], i) => {
    const h = (value / max) * (height - 14);
    const x = PAD.left + i * slot + slot * 0.2;
    root.append(
      svg("rect", { x, y: H - PAD.bottom - h, width: slot * 0.6, height: h, class: `bar s${i}` }),
      svg("text", { x: x + slot * 0.3, y: H - PAD.bottom - h - 4, "text-anchor": "middle", class: "tick" }, text),
      svg("text", { x: x + slot * 0.3, y: H - PAD.bottom + 14, "text-anchor": "middle", class: "tick" }, label),
    );
  });
  root.append(svg("line", { x1: PAD.left, y1: H - PAD.bottom, x2: W - PAD.right, y2: H - PAD.bottom, class: "axis" }));
  return root;
}

// ---------------------------------------------------------------- submit form from the schemas

async function loadMethods() {
  state.methods = await getJson("/v1/methods");
  const select = $("f-method");
  const previous = select.value;
  select.replaceChildren(...state.methods.map((m) => el("option", { value: m.name, text: m.name })));
  if (previous) select.value = previous;
  renderParams();
}

function fieldKind(prop) {
  const options = prop.anyOf ? prop.anyOf.filter((p) => p.type !== "null") : [prop];
  const base = options[0] || {};
  if (base.$ref || options.length > 1) return { kind: "json" };
  if (base.enum) return { kind: "enum", options: base.enum, nullable: !!prop.anyOf };
  if (base.type === "array") return { kind: "array", hint: base.items && base.items.enum };
  return { kind: base.type || "json", min: base.minimum, max: base.maximum };
}

function renderParams() {
  const method = state.methods.find((m) => m.name === $("f-method").value);
  const fieldset = $("f-params");
  fieldset.replaceChildren(el("legend", { text: "Method parameters" }));
  if (!method) return;
  $("f-method-summary").textContent = method.summary;
  for (const [name, prop] of Object.entries(method.parameters_schema.properties || {})) {
    if (name === "name") continue;
    const id = `p-${name}`;
    const info = fieldKind(prop);
    const label = el("label", { for: id, text: prop.title || name });
    const help = el("small", { id: `${id}-help`, class: "muted", text: prop.description || "" });
    let control;
    if (info.kind === "boolean") {
      control = el("input", { id, type: "checkbox" });
      control.checked = !!prop.default;
    } else if (info.kind === "enum") {
      const values = info.nullable ? ["", ...info.options] : info.options;
      control = el("select", { id }, ...values.map((v) => el("option", { value: v, text: v || "(none)" })));
      control.value = prop.default == null ? "" : prop.default;
    } else if (info.kind === "integer" || info.kind === "number") {
      control = el("input", { id, type: "number", step: info.kind === "integer" ? "1" : "any" });
      if (info.min != null) control.min = info.min;
      if (info.max != null) control.max = info.max;
      control.value = prop.default == null ? "" : prop.default;
      control.placeholder = "default";
    } else if (info.kind === "array") {
      control = el("input", { id, placeholder: info.hint ? info.hint.join(", ") : "comma-separated; empty for the default" });
      if (Array.isArray(prop.default)) control.value = prop.default.join(", ");
    } else if (info.kind === "string") {
      control = el("input", { id });
      control.value = prop.default == null ? "" : prop.default;
    } else {
      control = el("textarea", { id, rows: "2", placeholder: "JSON; empty for the default" });
      if (prop.default != null) control.value = JSON.stringify(prop.default);
    }
    control.dataset.param = name;
    control.dataset.kind = info.kind;
    control.setAttribute("aria-describedby", help.id);
    const wrap = info.kind === "boolean" ? el("div", { class: "check" }, control, label) : el("div", {}, label, control);
    fieldset.append(wrap, help);
  }
}

function paramValues() {
  const values = {};
  for (const control of $("f-params").querySelectorAll("[data-param]")) {
    const { param, kind } = control.dataset;
    if (kind === "boolean") {
      values[param] = control.checked;
      continue;
    }
    const raw = control.value.trim();
    if (raw === "") continue;
    if (kind === "integer" || kind === "number") values[param] = Number(raw);
    else if (kind === "array") values[param] = raw.split(",").map((s) => s.trim()).filter(Boolean);
    else if (kind === "json") {
      try {
        values[param] = JSON.parse(raw);
      } catch (_) {
        throw new Error(`method.${param}: not valid JSON`);
      }
    } else values[param] = raw;
  }
  return values;
}

function optionalNumber(id) {
  const raw = $(id).value.trim();
  return raw === "" ? undefined : Number(raw);
}

function jobBody() {
  const model = $("f-model").value.trim();
  const text = (path, tokens) => ({ path, max_tokens: optionalNumber(tokens), seq_len: optionalNumber("f-seq-len") });
  const body = {
    model: $("f-model-kind").value === "id" ? { id: model } : { path: model },
    target: { ratio: Number($("f-ratio").value) },
    method: { name: $("f-method").value, ...paramValues() },
    calibration: text($("f-calib").value.trim(), "f-calib-tokens"),
  };
  if ($("f-eval").value.trim()) body.evaluation = text($("f-eval").value.trim(), "f-eval-tokens");
  const kd = optionalNumber("f-kd-tokens");
  if (kd !== undefined) body.distill = { tokens: kd };
  return body; // undefined values vanish in JSON.stringify
}

async function submitJob(event) {
  event.preventDefault();
  $("submit-error").textContent = "";
  try {
    const job = await getJson("/v1/jobs", { method: "POST", json: jobBody() });
    $("job-rows").prepend(jobRow(job));
    $("jobs-empty").hidden = true;
    await openJob(job.id);
  } catch (error) {
    $("submit-error").textContent = error.message;
  }
}

// ---------------------------------------------------------------- wiring

function report(promise) {
  promise.catch((error) => {
    if (!(error instanceof ApiError && error.status === 401)) console.error(error);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (e) => report(login(e)));
  $("logout").addEventListener("click", () => logout());
  $("status-filter").addEventListener("change", () => report(loadJobs(true)));
  $("refresh").addEventListener("click", () => report(loadJobs(true)));
  $("load-more").addEventListener("click", () => report(loadJobs(false)));
  $("d-cancel").addEventListener("click", () => report(cancelJob()));
  $("f-method").addEventListener("change", renderParams);
  $("job-form").addEventListener("submit", (e) => report(submitJob(e)));
  if (state.key) report(showApp());
});
