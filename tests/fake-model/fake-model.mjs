// A stand-in for the Anthropic Messages API, so every test runs offline and
// deterministically. It speaks the streaming wire format the Claude Code CLI
// uses (message_start, content_block_*, message_delta, message_stop) and can
// answer with text or tool_use blocks.
//
// Plain JavaScript with only node: built-ins, so it can also run inside a
// container on a test network (`node fake-model.mjs --port 8080`).
//
// What it answers is decided, in order, by:
//   1. a `respond(request)` function given by the test (in-process use);
//   2. directives in the last user text:
//        #bash <command>      answer with a Bash tool call
//        #tool <Name> <json>  answer with any tool call
//        #fail <status>       answer that HTTP status with an API error body
//        #hang                never answer (until the client goes away)
//        #slow <ms>           stream the text over about <ms> milliseconds
//   3. otherwise an echo: "Echo: <text> [turns seen: N]", where N is how many
//      user text messages the request carried, so tests can see memory.
// After a tool call, the next request carries the tool_result; the answer is
// "Tool result: <content>".
import { createServer } from "node:http";
import { randomUUID } from "node:crypto";

/** @typedef {{ text?: string, toolUse?: { name: string, input: unknown, id?: string }[], status?: number, hang?: boolean, durationMs?: number }} FakeReply */

/**
 * @param {{ port?: number, host?: string, respond?: (request: any) => FakeReply | undefined }} [options]
 */
export async function startFakeModel(options = {}) {
  /** @type {any[]} */
  const requests = [];
  const openResponses = new Set();
  let respond = options.respond;

  const server = createServer(async (req, res) => {
    const body = await readBody(req);
    const url = new URL(req.url ?? "/", "http://fake");

    if (req.method === "GET" && url.pathname === "/_requests") {
      return sendJson(res, 200, requests);
    }
    if (req.method === "DELETE" && url.pathname === "/_requests") {
      requests.length = 0;
      return sendJson(res, 200, { ok: true });
    }
    if (req.method === "POST" && url.pathname.endsWith("/v1/messages/count_tokens")) {
      return sendJson(res, 200, { input_tokens: estimateTokens(body) });
    }
    if (req.method !== "POST" || !url.pathname.endsWith("/v1/messages")) {
      return sendJson(res, 404, { type: "error", error: { type: "not_found_error", message: "not found" } });
    }

    let parsed;
    try {
      parsed = JSON.parse(body);
    } catch {
      return sendJson(res, 400, { type: "error", error: { type: "invalid_request_error", message: "bad json" } });
    }
    const entry = { headers: req.headers, body: parsed, receivedAt: Date.now(), usage: undefined };
    requests.push(entry);

    const reply = (respond && respond(parsed)) || replyFromDirectives(parsed);
    if (reply.hang) {
      openResponses.add(res);
      res.on("close", () => openResponses.delete(res));
      return; // never answered
    }
    if (reply.status && reply.status >= 400) {
      return sendJson(res, reply.status, {
        type: "error",
        error: { type: reply.status >= 500 ? "api_error" : "invalid_request_error", message: `fake model answered ${reply.status}` },
      });
    }
    const message = wholeMessage(parsed, reply);
    // What this answer reports, so tests can compare it with what was measured.
    entry.usage = message.usage;
    if (parsed.stream) return streamReply(res, message, reply, entry);
    return sendJson(res, 200, message);
  });

  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, options.host ?? "127.0.0.1", () => resolve(undefined));
  });
  const address = /** @type {import("node:net").AddressInfo} */ (server.address());

  return {
    url: `http://${options.host === "0.0.0.0" ? "127.0.0.1" : options.host ?? "127.0.0.1"}:${address.port}`,
    port: address.port,
    requests,
    /** Replace the test's answer function (undefined = directives/echo). */
    setRespond(fn) {
      respond = fn;
    },
    /** The user-visible texts of the messages the model received in request `i`. */
    userTexts(i = requests.length - 1) {
      return (requests[i]?.body.messages ?? [])
        .filter((m) => m.role === "user")
        .flatMap((m) => textsOf(m.content));
    },
    async close() {
      for (const res of openResponses) res.destroy();
      server.closeAllConnections?.();
      await new Promise((resolve) => server.close(() => resolve(undefined)));
    },
  };
}

/** @param {any} request @returns {FakeReply} */
export function replyFromDirectives(request) {
  const messages = request.messages ?? [];
  const last = messages[messages.length - 1];
  const toolResults = Array.isArray(last?.content) ? last.content.filter((b) => b.type === "tool_result") : [];
  if (toolResults.length > 0) {
    const text = toolResults.map((b) => textsOf(b.content).join("")).join("\n");
    return { text: `Tool result: ${text.trim()}` };
  }
  const userText = lastUserText(messages);
  const directive = /^#(\w+)\s*([\s\S]*)$/m.exec(userText);
  if (directive) {
    const [, name, rest] = directive;
    const arg = rest.trim();
    if (name === "bash") return { toolUse: [{ name: "Bash", input: { command: arg, description: "run a command" } }] };
    if (name === "tool") {
      const space = arg.indexOf(" ");
      const toolName = space < 0 ? arg : arg.slice(0, space);
      const input = space < 0 ? {} : JSON.parse(arg.slice(space + 1));
      return { toolUse: [{ name: toolName, input }] };
    }
    if (name === "fail") return { status: Number(arg) || 500 };
    if (name === "hang") return { hang: true };
    if (name === "slow") {
      return { text: `Slow answer ${"word ".repeat(40).trim()}`, durationMs: Number(arg) || 2000 };
    }
  }
  const turns = messages.filter((m) => m.role === "user" && typedTexts(m.content).some((t) => !isSystemNoise(t))).length;
  return { text: `Echo: ${userText} [turns seen: ${turns}]` };
}

function lastUserText(messages) {
  for (let i = messages.length - 1; i >= 0; i--) {
    if (messages[i].role !== "user") continue;
    const texts = textsOf(messages[i].content).filter((t) => !isSystemNoise(t));
    if (texts.length > 0) return texts[texts.length - 1].trim();
  }
  return "";
}

// The CLI adds reminder blocks to user messages; they are not what the user typed.
function isSystemNoise(text) {
  return /^\s*<(system-reminder|command-name|local-command)/.test(text);
}

function textsOf(content) {
  if (typeof content === "string") return [content];
  if (!Array.isArray(content)) return [];
  return content.flatMap((b) => (b.type === "text" ? [b.text] : b.type === "tool_result" ? textsOf(b.content) : []));
}

// Only what a person typed: plain text blocks, not tool results.
function typedTexts(content) {
  if (typeof content === "string") return [content];
  return Array.isArray(content) ? content.filter((b) => b.type === "text").map((b) => b.text) : [];
}

function blocksOf(reply) {
  const blocks = [];
  if (reply.text) blocks.push({ type: "text", text: reply.text });
  for (const tool of reply.toolUse ?? []) {
    blocks.push({ type: "tool_use", id: tool.id ?? `toolu_${randomUUID().replace(/-/g, "").slice(0, 24)}`, name: tool.name, input: tool.input });
  }
  return blocks;
}

function usageOf(request, blocks) {
  return { input_tokens: estimateTokens(JSON.stringify(request.messages ?? [])), output_tokens: Math.max(1, Math.ceil(JSON.stringify(blocks).length / 4)) };
}

function wholeMessage(request, reply) {
  const blocks = blocksOf(reply);
  return {
    id: `msg_${randomUUID().replace(/-/g, "")}`,
    type: "message",
    role: "assistant",
    model: request.model ?? "fake-model",
    content: blocks,
    stop_reason: blocks.some((b) => b.type === "tool_use") ? "tool_use" : "end_turn",
    stop_sequence: null,
    usage: usageOf(request, blocks),
  };
}

async function streamReply(res, message, reply, entry) {
  // When each text piece was written (Date.now()), so a benchmark can tell what the server added.
  if (entry) entry.emittedAt = [];
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" });
  let closed = false;
  res.on("close", () => (closed = true));
  const send = (event, data) => {
    if (!closed) res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  };
  const chunks = message.content.flatMap((b) => (b.type === "text" ? splitWords(b.text) : [null]));
  const pause = reply.durationMs ? reply.durationMs / Math.max(1, chunks.length) : 0;

  send("message_start", { type: "message_start", message: { ...message, content: [], stop_reason: null, usage: { ...message.usage, output_tokens: 1 } } });
  for (const [index, block] of message.content.entries()) {
    if (block.type === "text") {
      send("content_block_start", { type: "content_block_start", index, content_block: { type: "text", text: "" } });
      for (const piece of splitWords(block.text)) {
        if (pause) await sleep(pause);
        if (closed) return;
        send("content_block_delta", { type: "content_block_delta", index, delta: { type: "text_delta", text: piece } });
        entry?.emittedAt.push(Date.now());
      }
    } else {
      send("content_block_start", { type: "content_block_start", index, content_block: { type: "tool_use", id: block.id, name: block.name, input: {} } });
      send("content_block_delta", { type: "content_block_delta", index, delta: { type: "input_json_delta", partial_json: JSON.stringify(block.input) } });
    }
    send("content_block_stop", { type: "content_block_stop", index });
  }
  send("message_delta", { type: "message_delta", delta: { stop_reason: message.stop_reason, stop_sequence: null }, usage: { output_tokens: message.usage.output_tokens } });
  send("message_stop", { type: "message_stop" });
  res.end();
}

function splitWords(text) {
  return text.match(/\S+\s*|\s+/g) ?? [text];
}

function estimateTokens(text) {
  return Math.max(1, Math.ceil(String(text).length / 4));
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function sendJson(res, status, value) {
  const text = JSON.stringify(value);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

// `node fake-model.mjs --port 8080 [--host 0.0.0.0]` runs it on its own.
if (import.meta.url === `file://${process.argv[1]}`) {
  const arg = (name, fallback) => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? process.argv[i + 1] : fallback;
  };
  const fake = await startFakeModel({ port: Number(arg("port", "8080")), host: arg("host", "127.0.0.1") });
  console.log(`fake model listening on port ${fake.port}`);
  const stop = () => fake.close().then(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}
