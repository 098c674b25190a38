// The gateway's dashboard: plain JavaScript over the gateway's own API (/services,
// /calls, /stats, /mcp), with the token the operator signs in with, kept in
// sessionStorage (this browser tab's session only). No build step.
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
  const body = await api("/services");
  const rows = body.services.map((s) => {
    const stats = s.stats || {};
    const lastCheck = Math.max(0, ...s.instances.map((i) => i.lastCheckMs || i.sinceMs || 0));
    return el("tr", { "data-service": s.name },
      el("td", { class: "name" }, s.name),
      el("td", {}, el("span", { class: `state ${s.state}` }, s.state)),
      el("td", { class: "instances" }, ...s.instances.map((i) =>
        el("div", {}, `${i.url} · ${i.state}${i.lastError ? " · " + i.lastError : ""}`,
          ...(i.process ? [el("div", { class: "process", title: (i.process.stderrTail || []).join("\n") },
            processLine(i.process))] : [])))),
      el("td", {}, lastCheck ? ago(lastCheck) : "-"),
      el("td", {}, String(s.toolCount)),
      el("td", {}, String(stats.calls ?? 0)),
      el("td", {}, stats.calls ? `${(stats.errorRate * 100).toFixed(1)}%` : "-"),
      el("td", {}, ms(stats.p95Ms)));
  });
  $("#services tbody").replaceChildren(...rows);
  $("#services-empty").hidden = rows.length > 0;
  await showVirtualServers();
  stamp("#services-updated");
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
    el("a", { href: `#/playground?tool=${encodeURIComponent(t.name)}` }, "Try it"))));
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
  $("#calls tbody").replaceChildren(...body.calls.map((c) => el("tr", { "data-tool": c.tool },
    el("td", {}, new Date(c.at).toLocaleTimeString()),
    el("td", {}, c.identity),
    el("td", {}, c.service),
    el("td", { class: "tool-name" }, c.tool),
    el("td", {}, el("span", { class: `outcome ${c.outcome}` }, c.outcome)),
    el("td", {}, ms(c.durationMs)),
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

const PAGES = { services: showServices, tools: showTools, calls: showCalls, playground: showPlayground };
const REFRESHING = new Set(["services", "calls"]);

function route() {
  clearInterval(timer);
  if (!token()) { show("sign-in"); return; }
  const [path, query] = (location.hash.slice(2) || "services").split("?");
  const page = PAGES[path] ? path : "services";
  show(page);
  const params = new URLSearchParams(query || "");
  const run = () => PAGES[page](params).catch((e) => console.warn(e));
  run();
  if (REFRESHING.has(page)) timer = setInterval(run, REFRESH_MS);
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
$("#tool-select").addEventListener("change", () => {
  location.hash = `#/playground?tool=${encodeURIComponent($("#tool-select").value)}`;
});
$("#call-button").addEventListener("click", () => callTool().catch((e) => {
  $("#result").classList.add("failed");
  $("#result").textContent = e.message;
}));
window.addEventListener("hashchange", route);
route();
