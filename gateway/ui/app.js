// The gateway's dashboard: plain JavaScript over the gateway's own API (/services,
// /calls, /stats, /health, /mcp), with the token the operator signs in with, kept in
// sessionStorage (this browser tab's session only). No build step, no library: the
// charts are SVG drawn here.
"use strict";

const TOKEN_KEY = "mcp-gateway-token";
const REFRESH_MS = 2000;
const $ = (sel) => document.querySelector(sel);
let timer = null;
let toolsCache = [];

function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { "Authorization": `Bearer ${token()}`, ...(options.headers || {}) },
  });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) {
    signOut("The token was refused (401): sign in again.");
    throw new Error("unauthorized");
  }
  if (!response.ok) throw new Error(body.message || `HTTP ${response.status}`);
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}

function ms(v) { return v == null ? "-" : `${Number(v).toFixed(1)} ms`; }
function ago(at) {
  if (!at) return "-";
  const s = Math.max(0, Math.round((Date.now() - at) / 1000));
  return s < 60 ? `${s} s ago` : `${Math.round(s / 60)} min ago`;
}
function stamp(id) { $(id).textContent = `updated ${new Date().toLocaleTimeString()}`; }
function clock(at, withDate) {
  const d = new Date(at);
  const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return withDate ? `${d.toLocaleDateString([], { month: "short", day: "numeric" })} ${hm}` : hm;
}
function percent(v) { return `${(v * 100).toFixed(v && v < 0.1 ? 1 : 0)}%`; }

// ---- charts (SVG) ------------------------------------------------------------------

const SVG_NS = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

// The windows the trends page offers, each with the step of its points.
const WINDOWS = { "15m": { step: "1m", label: "15 minutes" }, "1h": { step: "1m", label: "hour" },
  "24h": { step: "10m", label: "24 hours" } };

// A line chart of `points` (a /stats series), one line per entry of `lines`
// ({key, label, cls}), from 0 to the largest value. Every point with a value is a circle
// carrying its time and value (data-at, data-value) and a tooltip.
function lineChart(name, title, points, lines, format) {
  const W = 640, H = 190, L = 58, R = 14, T = 12, B = 28;
  const values = lines.flatMap((l) => points.map((p) => p[l.key])).filter((v) => v != null);
  const max = Math.max(0, ...values) || (name === "errors" ? 0.01 : 1);
  const x = (i) => L + (points.length < 2 ? 0 : (i * (W - L - R)) / (points.length - 1));
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot", role: "img",
    "aria-label": title, "data-points": points.length });
  for (const f of [0, 0.5, 1]) {
    root.append(svg("line", { x1: L, x2: W - R, y1: y(max * f), y2: y(max * f), class: "grid" }),
      svg("text", { x: L - 6, y: y(max * f) + 4, class: "axis", "text-anchor": "end" }, format(max * f)));
  }
  const long = points.length > 1 && points[points.length - 1].at - points[0].at > 6 * 3600e3;
  for (const i of new Set([0, Math.floor((points.length - 1) / 2), points.length - 1])) {
    if (!points[i]) continue;
    root.append(svg("text", { x: x(i), y: H - 8, class: "axis",
      "text-anchor": i === 0 ? "start" : i === points.length - 1 ? "end" : "middle" }, clock(points[i].at, long)));
  }
  for (const line of lines) {
    let d = "";
    let drawing = false;
    points.forEach((p, i) => {
      const v = p[line.key];
      if (v == null) { drawing = false; return; }
      d += `${drawing ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
      drawing = true;
    });
    root.append(svg("path", { d, class: `line ${line.cls}` }));
    points.forEach((p, i) => {
      const v = p[line.key];
      if (v == null) return;
      root.append(svg("circle", { cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 2.6,
        class: `point ${line.cls}`, "data-at": p.at, "data-value": v },
        svg("title", {}, `${clock(p.at, long)}: ${line.label} ${format(v)}`)));
    });
  }
  const legend = lines.length > 1
    ? lines.map((l) => el("span", { class: `key ${l.cls}` }, l.label)) : [];
  return el("figure", { class: "chart", "data-chart": name },
    el("figcaption", {}, title, ...legend), root);
}

// A service's last hour at a glance: one bar per minute, its errors in red over it.
function sparkline(points) {
  const W = 120, H = 26;
  const max = Math.max(1, ...points.map((p) => p.calls));
  const w = W / Math.max(1, points.length);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "spark", "data-points": points.length });
  const calls = points.reduce((n, p) => n + p.calls, 0);
  const errors = points.reduce((n, p) => n + p.errors, 0);
  root.append(svg("title", {}, `last hour: ${calls} calls, ${errors} errors`));
  root.append(svg("line", { x1: 0, x2: W, y1: H - 0.5, y2: H - 0.5, class: "base" }));
  points.forEach((p, i) => {
    const h = (p.calls / max) * (H - 2);
    const e = (p.errors / max) * (H - 2);
    root.append(svg("rect", { x: (i * w).toFixed(2), y: (H - h).toFixed(2), width: Math.max(0.5, w - 0.4).toFixed(2),
      height: h.toFixed(2), class: "calls", "data-calls": p.calls, "data-errors": p.errors }));
    if (p.errors) {
      root.append(svg("rect", { x: (i * w).toFixed(2), y: (H - e).toFixed(2),
        width: Math.max(0.5, w - 0.4).toFixed(2), height: e.toFixed(2), class: "errors" }));
    }
  });
  return root;
}

// ---- pages -------------------------------------------------------------------------

// A stdio server's process, in one line: command, pid, uptime, restarts, last exit,
// CPU and memory (its last stderr lines are the line's tooltip).
function processLine(p) {
  // The program by its file name (the full command line is in /services).
  const parts = [p.command.replace(/^\S*\//, "")];
  if (p.pid) parts.push(`pid ${p.pid}`, `up ${ago(Date.now() - (p.uptimeMs || 0)).replace(" ago", "")}`);
  else parts.push("not running");
  parts.push(`${p.restarts} restart${p.restarts === 1 ? "" : "s"}`);
  if (p.lastExit) parts.push(`last exit: ${p.lastExit}`);
  if (p.cpuMs != null) parts.push(`cpu ${ms(p.cpuMs)}`);
  if (p.rssBytes != null) parts.push(`${(p.rssBytes / 1048576).toFixed(1)} MiB`);
  return parts.join(" · ");
}

async function showServices() {
  const [body, trend] = await Promise.all([api("/services"),
    api("/stats?window=1h&step=1m").catch(() => null)]);
  const hour = trend && trend.series;
  const quiet = hour ? hour.gateway.map((p) => ({ ...p, calls: 0, errors: 0 })) : [];
  const rows = body.services.map((s) => {
    const stats = s.stats || {};
    const lastCheck = Math.max(0, ...s.instances.map((i) => i.lastCheckMs || i.sinceMs || 0));
    return el("tr", { "data-service": s.name },
      el("td", { class: "name" }, el("a", { href: `#/trends?service=${encodeURIComponent(s.name)}` }, s.name)),
      el("td", {}, el("span", { class: `state ${s.state}` }, s.state)),
      el("td", { class: "instances" }, ...s.instances.map((i) =>
        el("div", {}, `${i.url} · ${i.state}${i.lastError ? " · " + i.lastError : ""}`,
          ...(i.process ? [el("div", { class: "process", title: (i.process.stderrTail || []).join("\n") },
            processLine(i.process))] : [])))),
      el("td", {}, lastCheck ? ago(lastCheck) : "-"),
      el("td", {}, String(s.toolCount)),
      el("td", {}, String(stats.calls ?? 0)),
      el("td", {}, stats.calls ? `${(stats.errorRate * 100).toFixed(1)}%` : "-"),
      el("td", {}, ms(stats.p95Ms)),
      el("td", { class: "trend" }, hour ? sparkline(hour.services[s.name] || quiet) : "-"));
  });
  $("#services tbody").replaceChildren(...rows);
  $("#services-empty").hidden = rows.length > 0;
  await showVirtualServers();
  await showReplicas();
  stamp("#services-updated");
}

// With a PostgreSQL store: the cluster's live replicas (from /health).
async function showReplicas() {
  const health = await fetch("/health").then((r) => r.json()).catch(() => ({}));
  const cluster = health.cluster;
  $("#replicas-part").hidden = !cluster;
  if (!cluster) return;
  $("#store-state").textContent = cluster.storeAvailable ? "store reachable" : "store unreachable: calls go on, registrations wait";
  $("#replicas tbody").replaceChildren(...cluster.replicas.map((r) => el("tr", { "data-replica": r.id },
    el("td", { class: "name" }, r.id, r.current ? el("small", { class: "muted" }, " (this page)") : ""),
    el("td", {}, el("code", {}, r.address)),
    el("td", {}, r.host),
    el("td", {}, new Date(r.startedAtMs).toLocaleString()),
    el("td", {}, ago(r.seenAtMs)))));
}

// Trends: calls per minute, error rate and latency over a window, for the gateway, a
// service or a tool (the URL says which: #/trends?window=1h&service=&tool=).
async function showTrends(params, ctx = { first: true, current: () => true }) {
  const win = Object.hasOwn(WINDOWS, params.get("window") || "") ? params.get("window") : "1h";
  const service = params.get("service") || "";
  const tool = params.get("tool") || "";
  const query = new URLSearchParams({ window: win, step: WINDOWS[win].step });
  if (service) query.set("service", service);
  if (tool) query.set("tool", tool);
  let stats, tools;
  try {
    // The tools (for the selects) are read again each time the page is opened.
    [stats, tools] = await Promise.all([api(`/stats?${query}`),
      ctx.first || !toolsCache.length ? loadTools() : toolsCache]);
  } catch (e) {
    if (!ctx.current()) return;
    // The call log off (404) or unreadable: say so rather than show stale charts.
    $("#trends-scope").textContent = `No trends: ${e.message}`;
    $("#charts").replaceChildren();
    throw e;
  }
  if (!ctx.current()) return;
  const series = stats.series;
  fillSelect("#trend-window", null, win);
  // Services with tools, and those with calls in the window (virtual servers' composites,
  // services since removed).
  fillSelect("#trend-service",
    [...new Set([...tools.map((t) => t.service), ...Object.keys(series.services)])].sort(), service);
  fillSelect("#trend-tool", tools.filter((t) => !service || t.service === service)
    .map((t) => t.name).sort(), tool);
  const quiet = series.gateway.map((p) => ({ ...p, calls: 0, errors: 0, errorRate: 0,
    callsPerMinute: 0, p50Ms: null, p95Ms: null }));
  let points = series.gateway;
  let scope = service ? `service ${service}` : "every service";
  if (tool) {
    const found = series.tools.find((t) => !service || t.service === service);
    points = found ? found.points : quiet;
    scope = `tool ${tool}${found ? ` (${found.service})` : ""}`;
  } else if (service) {
    points = series.services[service] || quiet;
  }
  const calls = points.reduce((n, p) => n + p.calls, 0);
  const errors = points.reduce((n, p) => n + p.errors, 0);
  $("#trends-scope").textContent = `${scope}: ${calls} call${calls === 1 ? "" : "s"}, ` +
    `${errors} error${errors === 1 ? "" : "s"} in the last ${WINDOWS[win].label}, ` +
    `one point per ${series.step}`;
  $("#charts").replaceChildren(
    lineChart("calls", "Calls per minute", points,
      [{ key: "callsPerMinute", label: "calls/min", cls: "calls" }], (v) => `${+v.toFixed(1)}`),
    lineChart("errors", "Error rate", points,
      [{ key: "errorRate", label: "errors", cls: "errors" }], percent),
    lineChart("latency", "Latency", points,
      [{ key: "p50Ms", label: "p50", cls: "p50" }, { key: "p95Ms", label: "p95", cls: "p95" }], ms));
  stamp("#trends-updated");
}

// Keeps a select's options (a first "every ..." option, then `values`, and `value` if
// they lack it, so the URL's choice is never dropped) and its value.
function fillSelect(css, values, value) {
  const select = $(css);
  if (values) {
    if (value && !values.includes(value)) values = [...values, value];
    const first = select.options[0];
    const wanted = [first.value, ...values];
    const have = [...select.options].map((o) => o.value);
    if (wanted.join("\n") !== have.join("\n")) {
      select.replaceChildren(first, ...values.map((v) => el("option", { value: v }, v)));
    }
  }
  select.value = value;
}

function trendsChanged(event) {
  const form = new FormData($("#trends-filter"));
  if (event.target.id === "trend-service") form.set("tool", "");
  const query = new URLSearchParams();
  for (const [k, v] of form.entries()) if (v) query.set(k, v);
  location.hash = `#/trends?${query}`;
}

async function showVirtualServers() {
  const body = await api("/virtual-servers");
  const rows = body.servers.map((v) => {
    const d = v.definition;
    const exposes = [...new Set([...(d.tools || []), ...(d.prompts || []), ...(d.resources || [])])];
    const composites = (d.composites || []).map((c) => c.name);
    return el("tr", { "data-virtual-server": v.name },
      el("td", { class: "name" }, v.name),
      el("td", {}, el("code", {}, v.endpoint)),
      el("td", { class: "patterns" }, exposes.join(", ")),
      el("td", { class: "tool-count" }, String(v.toolCount)),
      el("td", { class: "composites" }, composites.join(", ") || "-"),
      el("td", {}, d.tool_search || "default"));
  });
  $("#virtual-servers tbody").replaceChildren(...rows);
  $("#virtual-servers-empty").hidden = rows.length > 0;
}

async function loadTools() {
  const body = await api("/services");
  toolsCache = body.services.flatMap((s) => s.tools.map((t) => ({ ...t, service: s.name })));
  return toolsCache;
}

async function showTools() {
  const tools = toolsCache.length ? toolsCache : await loadTools();
  const defs = await toolDefinitions();
  const needle = $("#tool-search").value.trim().toLowerCase();
  const shown = tools.filter((t) =>
    !needle || `${t.name} ${t.description || ""}`.toLowerCase().includes(needle));
  $("#tools").replaceChildren(...shown.map((t) => el("div", { class: "tool", "data-tool": t.name },
    el("h3", {}, t.name, " ", el("small", { class: "muted" }, `(${t.service})`)),
    el("div", {}, t.description || ""),
    el("details", {}, el("summary", {}, "Input schema"),
      el("pre", {}, JSON.stringify((defs[t.name] || {}).inputSchema || {}, null, 2))),
    el("div", { class: "links" },
      el("a", { href: `#/playground?tool=${encodeURIComponent(t.name)}` }, "Try it"),
      el("a", { href: `#/trends?service=${encodeURIComponent(t.service)}&tool=${encodeURIComponent(t.name)}` }, "Trends")))));
}

let definitions = null;
async function toolDefinitions() {
  if (definitions) return definitions;
  const all = {};
  let cursor;
  do {
    const params = cursor ? { cursor } : {};
    const answer = await api("/mcp", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Accept": "application/json, text/event-stream" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list", params }),
    });
    for (const t of answer.result.tools) all[t.name] = t;
    cursor = answer.result.nextCursor;
  } while (cursor);
  definitions = all;
  return all;
}

async function showCalls() {
  const form = new FormData($("#calls-filter"));
  const query = new URLSearchParams({ limit: "50" });
  for (const [k, v] of form.entries()) if (v) query.set(k, v);
  const body = await api(`/calls?${query}`);
  // A cluster's shared log names the replica that served each call.
  const clustered = body.calls.some((c) => c.replica);
  $("#calls th.replica").hidden = !clustered;
  $("#calls tbody").replaceChildren(...body.calls.map((c) => el("tr", { "data-tool": c.tool },
    el("td", {}, new Date(c.at).toLocaleTimeString()),
    el("td", {}, c.identity),
    el("td", {}, c.service),
    el("td", { class: "tool-name" }, c.tool),
    el("td", {}, el("span", { class: `outcome ${c.outcome}` }, c.outcome)),
    el("td", {}, ms(c.durationMs)),
    el("td", { class: "replica", hidden: !clustered }, c.replica || ""),
    el("td", {}, c.error || ""))));
  stamp("#calls-updated");
}

// The form for a tool's inputSchema: one field per property.
function buildForm(tool) {
  const schema = tool.inputSchema || {};
  const required = new Set(schema.required || []);
  const fields = Object.entries(schema.properties || {}).map(([name, prop]) => {
    let input;
    const type = Array.isArray(prop.type) ? prop.type.find((t) => t !== "null") : prop.type;
    if (prop.enum) {
      input = el("select", { name }, el("option", { value: "" }, ""),
        ...prop.enum.map((v) => el("option", { value: JSON.stringify(v) }, String(v))));
      input.dataset.kind = "enum";
    } else if (type === "boolean") {
      input = el("input", { type: "checkbox", name });
      input.dataset.kind = "boolean";
    } else if (type === "integer" || type === "number") {
      input = el("input", { type: "number", name, step: type === "integer" ? "1" : "any" });
      input.dataset.kind = "number";
    } else if (type === "object" || type === "array") {
      input = el("textarea", { name, placeholder: type === "array" ? "[ ]" : "{ }" });
      input.dataset.kind = "json";
    } else {
      input = el("input", { type: "text", name });
      input.dataset.kind = "string";
    }
    return el("label", {}, el("span", {}, `${name}${required.has(name) ? " *" : ""}`), input,
      prop.description ? el("small", { class: "muted" }, ` ${prop.description}`) : "");
  });
  $("#tool-form").replaceChildren(...fields);
  $("#tool-description").textContent = tool.description || "";
}

function formArguments() {
  const args = {};
  for (const input of $("#tool-form").querySelectorAll("[name]")) {
    const kind = input.dataset.kind;
    if (kind === "boolean") { if (input.checked) args[input.name] = true; continue; }
    if (input.value === "") continue;
    if (kind === "number") args[input.name] = Number(input.value);
    else if (kind === "enum" || kind === "json") args[input.name] = JSON.parse(input.value);
    else args[input.name] = input.value;
  }
  return args;
}

async function showPlayground(params) {
  const defs = Object.values(await toolDefinitions()).sort((a, b) => a.name.localeCompare(b.name));
  const select = $("#tool-select");
  if (select.options.length !== defs.length) {
    select.replaceChildren(...defs.map((t) => el("option", { value: t.name }, t.name)));
  }
  const wanted = params.get("tool");
  if (wanted && defs.some((t) => t.name === wanted)) select.value = wanted;
  const tool = defs.find((t) => t.name === select.value);
  if (tool) buildForm(tool);
}

async function callTool() {
  const result = $("#result");
  result.classList.remove("failed");
  result.textContent = "calling…";
  let args;
  try { args = formArguments(); } catch (e) { result.textContent = `Bad JSON in a field: ${e.message}`; return; }
  const answer = await api("/mcp", {
    method: "POST",
    headers: { "Content-Type": "application/json", "Accept": "application/json, text/event-stream" },
    body: JSON.stringify({ jsonrpc: "2.0", id: Date.now(), method: "tools/call",
      params: { name: $("#tool-select").value, arguments: args } }),
  });
  if (answer.error) {
    result.classList.add("failed");
    result.textContent = `Error ${answer.error.code}: ${answer.error.message}`;
    return;
  }
  const r = answer.result;
  if (r.isError) result.classList.add("failed");
  const texts = (r.content || []).filter((c) => c.type === "text").map((c) => c.text);
  result.textContent = r.structuredContent
    ? JSON.stringify(r.structuredContent, null, 2)
    : texts.join("\n") || JSON.stringify(r, null, 2);
}

// ---- navigation --------------------------------------------------------------------

const PAGES = { services: showServices, trends: showTrends, tools: showTools, calls: showCalls,
  playground: showPlayground };
// How often a page refreshes itself (ms); the trends' points are a minute or more apart.
const REFRESHING = { services: REFRESH_MS, trends: 10000, calls: REFRESH_MS };

// Each route is a generation: a page's answer that lands after the next route began is
// dropped (ctx.current()), and a page refreshes only after its last refresh finished.
let generation = 0;
function route() {
  clearTimeout(timer);
  const mine = ++generation;
  if (!token()) { show("sign-in"); return; }
  const [path, query] = (location.hash.slice(2) || "services").split("?");
  const page = PAGES[path] ? path : "services";
  show(page);
  const params = new URLSearchParams(query || "");
  const every = REFRESHING[page];
  const run = async (first) => {
    try {
      await PAGES[page](params, { first, current: () => mine === generation });
    } catch (e) {
      console.warn(e);
    }
    if (every && mine === generation) timer = setTimeout(() => run(false), every);
  };
  run(true);
}

function show(page) {
  for (const section of document.querySelectorAll(".page")) {
    section.hidden = section.id !== `${page}-page`;
  }
  $("#nav").hidden = page === "sign-in";
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.page === page);
  }
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  definitions = null;
  toolsCache = [];
  $("#sign-in-error").textContent = message || "";
  location.hash = "";
  route();
}

$("#sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const candidate = $("#token").value.trim();
  const check = await fetch("/services", { headers: { "Authorization": `Bearer ${candidate}` } });
  if (!check.ok) {
    const body = await check.json().catch(() => ({}));
    $("#sign-in-error").textContent = `Refused (${check.status}): ${body.message || "bad token"}`;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, candidate);
  $("#token").value = "";
  $("#sign-in-error").textContent = "";
  location.hash = "#/services";
  route();
});
$("#sign-out").addEventListener("click", () => signOut());
$("#tool-search").addEventListener("input", () => showTools());
$("#calls-filter").addEventListener("input", () => showCalls());
$("#trends-filter").addEventListener("change", trendsChanged);
$("#tool-select").addEventListener("change", () => {
  location.hash = `#/playground?tool=${encodeURIComponent($("#tool-select").value)}`;
});
$("#call-button").addEventListener("click", () => callTool().catch((e) => {
  $("#result").classList.add("failed");
  $("#result").textContent = e.message;
}));
window.addEventListener("hashchange", route);
route();
