// The official TypeScript SDK's client through the gateway, cell by cell
// (scripts/clients.sh). Usage: node matrix.mjs URL TOKEN (run where
// @modelcontextprotocol/sdk is installed: NODE_PATH or the working directory).
// Prints one JSON object per cell, as matrix.py does.

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
} from "@modelcontextprotocol/sdk/types.js";

const [url, token] = process.argv.slice(2);
const CLIENT = "typescript-sdk";
const SAMPLED = "sampled by the client";

function report(cell, ok, detail = "") {
  const text = typeof detail === "string" ? detail : JSON.stringify(detail);
  console.log(JSON.stringify({ client: CLIENT, cell, ok: Boolean(ok), detail: (text ?? "").slice(0, 300) }));
}

const textOf = (result) =>
  (result.content ?? []).find((c) => c.type === "text")?.text ?? JSON.stringify(result).slice(0, 300);

async function cell(name, run) {
  try {
    await run();
  } catch (e) {
    report(name, false, String(e));
  }
}

const client = new Client(
  { name: "matrix", version: "1" },
  { capabilities: { sampling: {}, elicitation: {} } },
);
client.setRequestHandler(CreateMessageRequestSchema, async () => ({
  role: "assistant",
  content: { type: "text", text: SAMPLED },
  model: "matrix",
  stopReason: "endTurn",
}));
client.setRequestHandler(ElicitRequestSchema, async () => ({
  action: "accept",
  content: { username: "matrix", email: "matrix@example.com" },
}));

try {
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  });
  await client.connect(transport);
  await cell("list tools", async () => {
    const names = new Set((await client.listTools()).tools.map((t) => t.name));
    report("list tools", names.has("test_simple_text") && names.has("getProductById"), `${names.size} tools`);
  });
  await cell("call, structured content", async () => {
    const result = await client.callTool({ name: "getProductById", arguments: { id: "123" } });
    const ok = result.structuredContent?.id === "123";
    report("call, structured content", ok, ok ? "" : result);
  });
  await cell("read resource", async () => {
    const text = (await client.readResource({ uri: "test://static-text" })).contents.find((c) => c.text)?.text;
    report("read resource", Boolean(text), text ?? "");
  });
  await cell("get prompt", async () => {
    const messages = (await client.getPrompt({ name: "test_simple_prompt" })).messages;
    report("get prompt", messages.length >= 1, `${messages.length} messages`);
  });
  await cell("sampling round trip", async () => {
    const text = textOf(await client.callTool({ name: "test_sampling", arguments: { prompt: "say hi" } }));
    report("sampling round trip", text.includes(SAMPLED), text);
  });
  await cell("elicitation round trip", async () => {
    const text = textOf(await client.callTool({ name: "test_elicitation", arguments: { message: "your name?" } }));
    report("elicitation round trip", text.toLowerCase().includes("accept"), text);
  });
  await client.close();
} catch (e) {
  report("connect", false, String(e));
}
