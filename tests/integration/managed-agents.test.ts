import { afterAll, beforeAll, describe, expect, it } from "vitest";
import Anthropic, { toFile } from "@anthropic-ai/sdk";
import { agentUpload, startTestServer, type TestServer } from "../helpers/server";
import { startFakeModel } from "../fake-model/fake-model.mjs";
import { backends } from "../helpers/backends";

type Stream = Awaited<ReturnType<Anthropic["beta"]["sessions"]["events"]["stream"]>>;
/** Every event this server streams has an id (deltas, which have none, are not sent). */
type StreamEvent = (Stream extends AsyncIterable<infer E> ? E : never) & { id: string };

/** Events from a stream until (and with) the first of type `until`; bounded in count. Closes the stream. */
async function readUntil(stream: Stream, until: string, max = 500): Promise<StreamEvent[]> {
  const seen: StreamEvent[] = [];
  for await (const event of stream) {
    seen.push(event as StreamEvent);
    if (event.type === until || seen.length >= max) break;
  }
  return seen;
}

/** Reads one stream in steps (a `for await` that breaks would close it). */
function stepper(stream: Stream) {
  const iterator = stream[Symbol.asyncIterator]();
  return {
    async until(type: string, max = 500): Promise<StreamEvent[]> {
      const seen: StreamEvent[] = [];
      while (seen.length < max) {
        const next = await iterator.next();
        if (next.done) break;
        seen.push(next.value as StreamEvent);
        if (next.value.type === type) break;
      }
      return seen;
    },
    close: () => iterator.return?.(),
  };
}

async function rejection(promise: Promise<unknown>): Promise<any> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error("expected the call to fail");
}

// The Managed Agents API, driven only by the official SDK (@anthropic-ai/sdk, pinned in
// package.json) against a running server with real sandboxes and the Claude Code CLI; only
// the model is the fake one. /api is used alongside only to show that both APIs see the
// same agents, sessions and files.
describe.each(backends)("the Managed Agents API through the official SDK on $name", (backend) => {
  let server: TestServer;
  let cleanup: () => Promise<void>;
  let model: Awaited<ReturnType<typeof startFakeModel>>;
  let client: Anthropic;
  let agentId: string;
  let environmentId: string;

  beforeAll(async () => {
    model = await startFakeModel();
    const prepared = await backend.prepare();
    cleanup = prepared.cleanup;
    server = await startTestServer({ modelUrl: model.url, env: { ...prepared.env, ASH_MAX_ATTACHMENT_BYTES: "65536" } });
    client = new Anthropic({ baseURL: server.url, apiKey: server.apiKey, maxRetries: 0 });
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
    await cleanup?.();
  });

  it("creates an agent, versions it on update, lists and archives it; /api sees the same agent", async () => {
    const agent = await client.beta.agents.create({
      name: "helper",
      model: "claude-sonnet-4-5",
      system: "You are terse.",
      description: "answers briefly",
      metadata: { team: "docs" },
      tools: [{ type: "agent_toolset_20260401", configs: [{ name: "web_search", enabled: false }] }],
      mcp_servers: [{ name: "docs", type: "url", url: "https://mcp.example.com/mcp" }],
    });
    agentId = agent.id;
    expect(agent).toMatchObject({ type: "agent", name: "helper", version: 1, system: "You are terse.", description: "answers briefly", metadata: { team: "docs" }, archived_at: null });
    expect(agent.model.id).toBe("claude-sonnet-4-5");
    expect(agent.mcp_servers).toEqual([{ name: "docs", type: "url", url: "https://mcp.example.com/mcp" }]);
    const toolset = agent.tools.find((t) => t.type === "agent_toolset_20260401") as any;
    expect(toolset.configs.find((c: any) => c.name === "web_search").enabled).toBe(false);
    expect(toolset.configs.find((c: any) => c.name === "bash").enabled).toBe(true);

    // One store: /api shows it under its name, and its folder carries what the fields mean.
    const viaApi = (await (await server.api("/api/agents/helper")).json()).agent;
    expect(viaApi).toMatchObject({ id: agent.id, version: 1, systemPrompt: "You are terse." });
    const settings = JSON.parse((await (await server.api("/api/agents/helper/files/.claude/settings.json")).json()).content);
    expect(settings).toMatchObject({ model: "claude-sonnet-4-5", permissions: { deny: ["WebSearch"] }, enableAllProjectMcpServers: true });
    const mcp = JSON.parse((await (await server.api("/api/agents/helper/files/.mcp.json")).json()).content);
    expect(mcp).toEqual({ mcpServers: { docs: { type: "http", url: "https://mcp.example.com/mcp" } } });

    const updated = await client.beta.agents.update(agent.id, { version: 1, system: "You are kind.", metadata: { team: null, owner: "ops" } });
    expect(updated).toMatchObject({ version: 2, system: "You are kind.", metadata: { owner: "ops" } });
    expect((await (await server.api("/api/agents/helper")).json()).agent).toMatchObject({ version: 2, systemPrompt: "You are kind." });
    expect((await client.beta.agents.retrieve(agent.id, { version: 1 })).system).toBe("You are terse.");
    const versions = [];
    for await (const v of client.beta.agents.versions.list(agent.id, { limit: 1 })) versions.push(v.version);
    expect(versions).toEqual([2, 1]);

    // A stale version is refused and changes nothing.
    const stale = await rejection(client.beta.agents.update(agent.id, { version: 1, system: "lost" }));
    expect(stale).toBeInstanceOf(Anthropic.ConflictError);
    expect((await client.beta.agents.retrieve(agent.id)).version).toBe(2);

    // The other direction: an agent deployed through /api is a /v1 agent.
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("from-api") })).status).toBe(201);
    const scratch = await client.beta.agents.create({ name: "scratch", model: "claude-sonnet-4-5" });
    const names: string[] = [];
    for await (const a of client.beta.agents.list({ limit: 1 })) names.push(a.name);
    expect(names).toEqual(["helper", "from-api", "scratch"]);

    const archived = await client.beta.agents.archive(scratch.id);
    expect(archived.archived_at).not.toBeNull();
    const listed: string[] = [];
    for await (const a of client.beta.agents.list()) listed.push(a.name);
    expect(listed).toEqual(["helper", "from-api"]);
    const all: string[] = [];
    for await (const a of client.beta.agents.list({ include_archived: true })) all.push(a.name);
    expect(all).toContain("scratch");
    const refused = await rejection(client.beta.sessions.create({ agent: scratch.id, environment_id: "env_default" }));
    expect(refused).toBeInstanceOf(Anthropic.BadRequestError);
    expect(refused.message).toMatch(/archived/);
  });

  it("answers errors in Anthropic's shape, so the SDK raises its typed errors", async () => {
    const wrongKey = new Anthropic({ baseURL: server.url, apiKey: "not-a-key", maxRetries: 0 });
    const unauthorized = await rejection(wrongKey.beta.agents.list());
    expect(unauthorized).toBeInstanceOf(Anthropic.AuthenticationError);
    expect(unauthorized.requestID).toMatch(/^req_/);
    expect(unauthorized.error).toMatchObject({ type: "error", error: { type: "authentication_error" } });

    // The key as a bearer token works too.
    const bearer = new Anthropic({ baseURL: server.url, apiKey: null, authToken: server.apiKey, maxRetries: 0 });
    expect((await bearer.beta.agents.retrieve(agentId)).name).toBe("helper");

    const missing = await rejection(client.beta.agents.retrieve("no-such-agent"));
    expect(missing).toBeInstanceOf(Anthropic.NotFoundError);
    expect(missing.error.error.type).toBe("not_found_error");
    expect(await rejection(client.beta.sessions.retrieve("no-such-session"))).toBeInstanceOf(Anthropic.NotFoundError);
    expect(await rejection(client.beta.files.retrieveMetadata("no-such-file"))).toBeInstanceOf(Anthropic.NotFoundError);

    // Bad input: a clear 400 and nothing made.
    const before = (await (await server.api("/api/agents")).json()).agents.length;
    for (const [params, message] of [
      [{ name: "has spaces", model: "claude-sonnet-4-5" }, /name/],
      [{ name: "custom", model: "claude-sonnet-4-5", tools: [{ type: "custom", name: "lookup", description: "d", input_schema: { type: "object" } }] }, /custom tools/],
      [{ name: "asks", model: "claude-sonnet-4-5", tools: [{ type: "agent_toolset_20260401", default_config: { permission_policy: { type: "sometimes" } } }] }, /always_allow or always_ask/],
      [{ name: "skilled", model: "claude-sonnet-4-5", skills: [{ type: "anthropic", skill_id: "xlsx" }] }, /skills/],
      [{ name: "effortful", model: { id: "claude-sonnet-4-5", effort: "high" } }, /effort/],
      [{ name: "crowd", model: "claude-sonnet-4-5", multiagent: { type: "coordinator", agents: [] } }, /multiagent sessions are not available/],
      [{ name: "helper", model: "claude-sonnet-4-5" }, /exists already/],
    ] as const) {
      const error = await rejection(client.beta.agents.create(params as any));
      expect(error.status, JSON.stringify(params)).toBe(error instanceof Anthropic.ConflictError ? 409 : 400);
      expect(error.message).toMatch(message);
    }
    expect((await (await server.api("/api/agents")).json()).agents.length).toBe(before);
    for (const [params, status, message] of [
      [{ agent: { type: "agent_with_overrides", id: agentId, system: "other" }, environment_id: "env_default" }, 400, /overrides/],
      [{ agent: agentId, environment_id: "env_nowhere" }, 404, /environment/],
      [{ agent: { type: "agent", id: agentId, version: 99 }, environment_id: "env_default" }, 404, /no version 99/],
      [{ agent: agentId, environment_id: "env_default", vault_ids: ["vlt_1"] }, 400, /vaults/],
      [{ agent: agentId, environment_id: "env_default", initial_events: [{ type: "user.message", content: [{ type: "text", text: "hi" }] }] }, 400, /initial events are not available/],
    ] as const) {
      const error = await rejection(client.beta.sessions.create(params as any));
      expect([error.status, error.message], JSON.stringify(params)).toEqual([status, expect.stringMatching(message)]);
    }
    expect((await (await server.api("/api/sessions")).json()).sessions).toEqual([]);

    // A key over its requests a minute gets a RateLimitError carrying retry-after.
    const made = await (await server.api("/api/api-keys", { method: "POST", json: { scope: "read", limits: { requestsPerMinute: 2 } } })).json();
    const limited = new Anthropic({ baseURL: server.url, apiKey: made.key, maxRetries: 0 });
    let limitedError: any;
    for (let i = 0; i < 5 && !limitedError; i++) limitedError = await limited.beta.agents.list().then(() => undefined, (e) => e);
    expect(limitedError).toBeInstanceOf(Anthropic.RateLimitError);
    expect(Number(limitedError.headers.get("retry-after"))).toBeGreaterThan(0);
    // A read key may not make agents: permission_error.
    const readOnly = new Anthropic({ baseURL: server.url, apiKey: (await (await server.api("/api/api-keys", { method: "POST", json: { scope: "read" } })).json()).key, maxRetries: 0 });
    expect(await rejection(readOnly.beta.agents.create({ name: "nope", model: "claude-sonnet-4-5" }))).toBeInstanceOf(Anthropic.PermissionDeniedError);
  });

  it("runs a session: send, stream until idle, list the same events, resume a stream, usage", async () => {
    const environment = await client.beta.environments.create({ name: "greeting", config: { type: "cloud", networking: { type: "limited" }, env: { GREETING: "hello from the environment" } } as any });
    environmentId = environment.id;
    expect(environment.config).toMatchObject({ type: "cloud", env: { GREETING: "***" } });
    expect((await client.beta.environments.retrieve("env_default")).name).toBe("default");
    const envs: string[] = [];
    for await (const e of client.beta.environments.list()) envs.push(e.id);
    expect(envs).toEqual(["env_default", environment.id]);
    const badEnv = await rejection(client.beta.environments.create({ name: "pkgs", config: { type: "cloud", packages: { pip: ["requests"] } } }));
    expect(badEnv).toBeInstanceOf(Anthropic.BadRequestError);
    expect(badEnv.message).toMatch(/packages/);

    const session = await client.beta.sessions.create({ agent: { type: "agent", id: agentId, version: 2 }, environment_id: environment.id, title: "first", metadata: { ticket: "42" } });
    expect(session).toMatchObject({ type: "session", status: "idle", title: "first", metadata: { ticket: "42" }, environment_id: environment.id });
    expect(session.agent).toMatchObject({ id: agentId, version: 2, system: "You are kind." });
    // The same session in /api.
    expect((await (await server.api(`/api/sessions/${session.id}`)).json()).session).toMatchObject({ id: session.id, agentName: "helper", agentVersion: 2, model: "claude-sonnet-4-5" });

    const stream = await client.beta.sessions.events.stream(session.id);
    const sent = await client.beta.sessions.events.send(session.id, { events: [{ type: "user.message", content: [{ type: "text", text: "#bash echo $GREETING" }] }] });
    expect(sent.data?.[0]).toMatchObject({ type: "user.message" });
    const events = await readUntil(stream, "session.status_idle");
    const types = events.map((e) => e.type);
    expect(types[0]).toBe("user.message");
    expect(types).toEqual(expect.arrayContaining(["session.status_running", "span.model_request_start", "agent.tool_use", "agent.tool_result", "agent.message", "span.model_request_end", "session.status_idle"]));
    expect(events[0]!.id).toBe(sent.data?.[0]?.id);
    const toolUse = events.find((e) => e.type === "agent.tool_use") as any;
    expect(toolUse).toMatchObject({ name: "Bash", input: { command: "echo $GREETING" } });
    const toolResult = events.find((e) => e.type === "agent.tool_result") as any;
    expect(toolResult.tool_use_id).toBe(toolUse.id);
    expect(JSON.stringify(toolResult.content)).toContain("hello from the environment");
    const spanEnd = events.find((e) => e.type === "span.model_request_end") as any;
    expect(spanEnd.model_request_start_id).toBe(events.find((e) => e.type === "span.model_request_start")!.id);
    expect(spanEnd.model_usage.output_tokens).toBeGreaterThan(0);
    expect(events[events.length - 1]).toMatchObject({ type: "session.status_idle", stop_reason: { type: "end_turn" } });
    expect(JSON.stringify(events.filter((e) => e.type === "agent.message"))).toContain("Tool result:");

    // The listing has the same events with the same ids, in pages.
    const listed = [];
    for await (const e of client.beta.sessions.events.list(session.id, { limit: 3 })) listed.push(e);
    expect(listed.map((e) => e.id)).toEqual(events.map((e) => e.id));
    const onlyTools = [];
    for await (const e of client.beta.sessions.events.list(session.id, { types: ["agent.tool_use"] })) onlyTools.push(e.type);
    expect(onlyTools).toEqual(["agent.tool_use"]);

    // A client that lost its stream reconnects with the last id it saw and gets the rest.
    const resumed = await client.beta.sessions.events.stream(session.id, {}, { headers: { "Last-Event-ID": events[2]!.id } });
    const rest = await readUntil(resumed, "session.status_idle");
    expect(rest.map((e) => e.id)).toEqual(events.slice(3).map((e) => e.id));
    const badResume = await rejection(client.beta.sessions.events.stream(session.id, {}, { headers: { "Last-Event-ID": "17" } }));
    expect(badResume).toBeInstanceOf(Anthropic.BadRequestError);

    const after = await client.beta.sessions.retrieve(session.id);
    expect(after.status).toBe("idle");
    expect(after.usage.output_tokens).toBeGreaterThan(0);
    expect(after.stats.active_seconds).toBeGreaterThan(0);

    const renamed = await client.beta.sessions.update(session.id, { title: "renamed", metadata: { ticket: null, stage: "review" } });
    expect(renamed).toMatchObject({ title: "renamed", metadata: { stage: "review" } });

    // A confirmation for a tool use that never waited (always_allow) finds nothing to decide, and nothing runs.
    const confirmation = await rejection(client.beta.sessions.events.send(session.id, { events: [{ type: "user.tool_confirmation", tool_use_id: toolUse.id, result: "allow" }] }));
    expect(confirmation).toBeInstanceOf(Anthropic.NotFoundError);
    expect(confirmation.message).toMatch(/waiting for confirmation/);
    const empty = await rejection(client.beta.sessions.events.send(session.id, { events: [{ type: "user.message", content: [] }] }));
    expect(empty).toBeInstanceOf(Anthropic.BadRequestError);
    const count = [];
    for await (const e of client.beta.sessions.events.list(session.id)) count.push(e.id);
    expect(count).toEqual(events.map((e) => e.id));
  });

  it("holds an always_ask tool until a user.tool_confirmation allows or denies it", async () => {
    const agent = await client.beta.agents.create({
      name: "asker",
      model: "claude-sonnet-4-5",
      tools: [{ type: "agent_toolset_20260401", configs: [{ name: "bash", permission_policy: { type: "always_ask" } }] }],
    });
    const bash = (agent.tools[0] as any).configs.find((c: any) => c.name === "bash");
    expect(bash.permission_policy).toEqual({ type: "always_ask" });
    expect((agent.tools[0] as any).configs.find((c: any) => c.name === "read").permission_policy).toEqual({ type: "always_allow" });
    // The same policy in /api: the agent's confirmTools.
    expect((await (await server.api("/api/agents/asker")).json()).agent.confirmTools).toEqual(["Bash"]);
    const session = await client.beta.sessions.create({ agent: agent.id, environment_id: "env_default" });
    const exists = async (path: string) => (await server.api(`/api/sessions/${session.id}/files/${path}?format=json`)).status === 200;
    const stream = stepper(await client.beta.sessions.events.stream(session.id));

    // Allow: the session goes idle asking, then runs the tool once allowed.
    await client.beta.sessions.events.send(session.id, { events: [{ type: "user.message", content: [{ type: "text", text: "#bash echo confirmed > allowed.txt && cat allowed.txt" }] }] });
    const asking = await stream.until("session.status_idle");
    const toolUse = asking.find((e) => e.type === "agent.tool_use") as any;
    expect(toolUse).toMatchObject({ name: "Bash" });
    expect(asking[asking.length - 1]).toMatchObject({ type: "session.status_idle", stop_reason: { type: "requires_action", event_ids: [toolUse.id] } });
    expect((await client.beta.sessions.retrieve(session.id)).status).toBe("idle");
    expect(await exists("allowed.txt")).toBe(false);
    // An id that names no waiting tool use: 404, the tool still waits.
    expect(await rejection(client.beta.sessions.events.send(session.id, { events: [{ type: "user.tool_confirmation", tool_use_id: "sevt_999999_0", result: "allow" }] }))).toBeInstanceOf(Anthropic.NotFoundError);
    const allowed = await client.beta.sessions.events.send(session.id, { events: [{ type: "user.tool_confirmation", tool_use_id: toolUse.id, result: "allow" }] });
    expect(allowed.data?.[0]).toMatchObject({ type: "user.tool_confirmation", tool_use_id: toolUse.id, result: "allow" });
    const ran = await stream.until("session.status_idle");
    const types = ran.map((e) => e.type);
    expect(types.slice(0, 2)).toEqual(["user.tool_confirmation", "session.status_running"]);
    expect(ran[0]!.id).toBe(allowed.data?.[0]?.id);
    const result = ran.find((e) => e.type === "agent.tool_result") as any;
    expect(result).toMatchObject({ tool_use_id: toolUse.id, is_error: false });
    expect(JSON.stringify(result.content)).toContain("confirmed");
    expect(ran[ran.length - 1]).toMatchObject({ type: "session.status_idle", stop_reason: { type: "end_turn" } });
    expect(await exists("allowed.txt")).toBe(true);
    // A second answer to the same tool use: 409, nothing changes.
    expect(await rejection(client.beta.sessions.events.send(session.id, { events: [{ type: "user.tool_confirmation", tool_use_id: toolUse.id, result: "deny" }] }))).toBeInstanceOf(Anthropic.ConflictError);

    // Deny: the command never runs; the model gets the deny_message.
    await client.beta.sessions.events.send(session.id, { events: [{ type: "user.message", content: [{ type: "text", text: "#bash touch denied.txt" }] }] });
    const asked = await stream.until("session.status_idle");
    const denyUse = asked.find((e) => e.type === "agent.tool_use") as any;
    expect(asked[asked.length - 1]).toMatchObject({ stop_reason: { type: "requires_action", event_ids: [denyUse.id] } });
    await client.beta.sessions.events.send(session.id, { events: [{ type: "user.tool_confirmation", tool_use_id: denyUse.id, result: "deny", deny_message: "no files today" }] });
    const denied = await stream.until("session.status_idle");
    await stream.close();
    expect(denied[0]).toMatchObject({ type: "user.tool_confirmation", tool_use_id: denyUse.id, result: "deny", deny_message: "no files today" });
    const deniedResult = denied.find((e) => e.type === "agent.tool_result") as any;
    expect(deniedResult).toMatchObject({ tool_use_id: denyUse.id, is_error: true });
    expect(JSON.stringify(deniedResult.content)).toContain("no files today");
    expect(denied[denied.length - 1]).toMatchObject({ stop_reason: { type: "end_turn" } });
    expect(await exists("denied.txt")).toBe(false);

    // The listing tells the same story with the same ids.
    const listed: string[] = [];
    for await (const e of client.beta.sessions.events.list(session.id)) listed.push(e.id);
    expect(listed).toEqual([...asking, ...ran, ...asked, ...denied].map((e) => e.id));
  });

  it("interrupts a long turn", async () => {
    const session = await client.beta.sessions.create({ agent: agentId, environment_id: environmentId });
    const stream = stepper(await client.beta.sessions.events.stream(session.id));
    await client.beta.sessions.events.send(session.id, { events: [{ type: "user.message", content: [{ type: "text", text: "#slow 60000 a very long answer that nobody waits for" }] }] });
    const started = await stream.until("session.status_running");
    expect(started.map((e) => e.type)).toContain("session.status_running");
    expect((await client.beta.sessions.retrieve(session.id)).status).toBe("running");
    // Another message while the turn runs is refused (409), the turn goes on.
    expect(await rejection(client.beta.sessions.events.send(session.id, { events: [{ type: "user.message", content: [{ type: "text", text: "hello?" }] }] }))).toBeInstanceOf(Anthropic.ConflictError);

    const interrupted = await client.beta.sessions.events.send(session.id, { events: [{ type: "user.interrupt" }] });
    const rest = await stream.until("session.status_idle");
    await stream.close();
    const interrupt = rest.find((e) => e.type === "user.interrupt");
    expect(interrupt?.id).toBe(interrupted.data?.[0]?.id);
    expect(rest[rest.length - 1]!.type).toBe("session.status_idle");
    expect((await client.beta.sessions.retrieve(session.id)).status).toBe("idle");
  });

  it("uploads files, places one in a session's workspace, serves and deletes them", async () => {
    const file = await client.beta.files.upload({ file: await toFile(Buffer.from("the heron flies at dawn\n"), "notes.txt", { type: "text/plain" }) });
    expect(file).toMatchObject({ type: "file", filename: "notes.txt", mime_type: "text/plain", size_bytes: 24 });
    expect(await (await client.beta.files.download(file.id)).text()).toBe("the heron flies at dawn\n");
    const ids: string[] = [];
    for await (const f of client.beta.files.list()) ids.push(f.id);
    expect(ids).toContain(file.id);
    // One store: /api serves the same bytes.
    expect(await (await server.api(`/api/attachments/${file.id}`)).text()).toBe("the heron flies at dawn\n");

    // A resource naming no file makes no session.
    const sessionsBefore = (await (await server.api("/api/sessions")).json()).sessions.length;
    const noFile = await rejection(client.beta.sessions.create({ agent: agentId, environment_id: "env_default", resources: [{ type: "file", file_id: "file_missing" }] }));
    expect(noFile).toBeInstanceOf(Anthropic.NotFoundError);
    const escape = await rejection(client.beta.sessions.create({ agent: agentId, environment_id: "env_default", resources: [{ type: "file", file_id: file.id, mount_path: "../../etc/passwd" }] }));
    expect(escape).toBeInstanceOf(Anthropic.BadRequestError);
    // Mount paths that need one another (or an agent file) to be a folder: refused before anything is made.
    const nested = await rejection(
      client.beta.sessions.create({ agent: agentId, environment_id: "env_default", resources: [{ type: "file", file_id: file.id, mount_path: "a/b" }, { type: "file", file_id: file.id, mount_path: "a" }] }),
    );
    expect(nested).toBeInstanceOf(Anthropic.BadRequestError);
    expect(nested.error.error.message).toMatch(/mount_path "a\/b" needs "a" to be a folder, but it is the mount_path "a"/);
    const overAgentFile = await rejection(client.beta.sessions.create({ agent: agentId, environment_id: "env_default", resources: [{ type: "file", file_id: file.id, mount_path: "CLAUDE.md/x" }] }));
    expect(overAgentFile).toBeInstanceOf(Anthropic.BadRequestError);
    expect(overAgentFile.error.error.message).toMatch(/needs "CLAUDE.md" to be a folder, but it is the agent's file "CLAUDE.md"/);
    expect((await (await server.api("/api/sessions")).json()).sessions.length).toBe(sessionsBefore);

    const session = await client.beta.sessions.create({ agent: agentId, environment_id: "env_default", resources: [{ type: "file", file_id: file.id, mount_path: "inputs/notes.txt" }] });
    expect(session.resources).toEqual([expect.objectContaining({ type: "file", file_id: file.id, mount_path: "inputs/notes.txt" })]);
    const stream = await client.beta.sessions.events.stream(session.id);
    await client.beta.sessions.events.send(session.id, { events: [{ type: "user.message", content: [{ type: "text", text: "#bash cat inputs/notes.txt" }] }] });
    const events = await readUntil(stream, "session.status_idle");
    expect(JSON.stringify(events.find((e) => e.type === "agent.tool_result"))).toContain("the heron flies at dawn");

    // Content blocks other than text reach the model with the message.
    const next = await client.beta.sessions.events.stream(session.id);
    const document = { type: "document" as const, source: { type: "text" as const, media_type: "text/plain" as const, data: "a note about herons" } };
    await client.beta.sessions.events.send(session.id, { events: [{ type: "user.message", content: [document, { type: "text", text: "what does the note say?" }] }] });
    const answer = await readUntil(next, "session.status_idle");
    expect(answer[0]).toMatchObject({ type: "user.message", content: [document, { type: "text", text: "what does the note say?" }] });
    expect(model.requests.some((r) => JSON.stringify(r.body?.messages ?? []).includes("a note about herons"))).toBe(true);
    expect(answer.at(-1)).toMatchObject({ type: "session.status_idle", stop_reason: { type: "end_turn" } });

    const tooBig = await rejection(client.beta.files.upload({ file: await toFile(Buffer.alloc(70_000, 1), "big.bin") }));
    expect(tooBig.status).toBe(413);
    expect(await client.beta.files.delete(file.id)).toMatchObject({ id: file.id });
    expect(await rejection(client.beta.files.retrieveMetadata(file.id))).toBeInstanceOf(Anthropic.NotFoundError);
  });

  it("lists sessions both ways, archives and deletes them; an /api session is a /v1 session", async () => {
    const viaApi = (await (await server.api("/api/sessions", { method: "POST", json: { agent: "from-api" } })).json()).session;
    const shown = await client.beta.sessions.retrieve(viaApi.id);
    expect(shown).toMatchObject({ id: viaApi.id, environment_id: "env_default", status: "idle" });

    const first = await client.beta.sessions.list({ limit: 2 });
    expect(first.data.map((s) => s.id)[0]).toBe(viaApi.id);
    expect(first.prev_page).toBeNull();
    const second = await first.getNextPage();
    expect(second.data.length).toBeGreaterThan(0);
    expect(second.data.map((s) => s.id)).not.toContain(viaApi.id);
    const back = await client.beta.sessions.list({ limit: 2, page: second.prev_page! });
    expect(back.data.map((s) => s.id)).toEqual(first.data.map((s) => s.id));
    const all: string[] = [];
    for await (const s of client.beta.sessions.list({ limit: 1 })) all.push(s.id);
    expect(all.length).toBe(5);
    const oldestFirst: string[] = [];
    for await (const s of client.beta.sessions.list({ order: "asc" })) oldestFirst.push(s.id);
    expect(oldestFirst).toEqual([...all].reverse());

    const archived = await client.beta.sessions.archive(viaApi.id);
    expect(archived).toMatchObject({ status: "terminated" });
    expect(archived.archived_at).not.toBeNull();
    expect(await rejection(client.beta.sessions.events.send(viaApi.id, { events: [{ type: "user.message", content: [{ type: "text", text: "hi" }] }] }))).toBeInstanceOf(Anthropic.BadRequestError);
    const live: string[] = [];
    for await (const s of client.beta.sessions.list()) live.push(s.id);
    expect(live).not.toContain(viaApi.id);
    const withArchived: string[] = [];
    for await (const s of client.beta.sessions.list({ include_archived: true })) withArchived.push(s.id);
    expect(withArchived).toContain(viaApi.id);

    // Another tenant's key sees none of it: not the agents, sessions, events, environments or files.
    expect((await server.api("/api/tenants", { method: "POST", json: { id: "acme" } })).status).toBe(201);
    const acmeKey = (await (await server.api("/api/api-keys", { method: "POST", json: { tenant: "acme", scope: "admin" } })).json()).key;
    const acme = new Anthropic({ baseURL: server.url, apiKey: acmeKey, maxRetries: 0 });
    expect((await acme.beta.agents.list()).data).toEqual([]);
    expect((await acme.beta.sessions.list()).data).toEqual([]);
    expect((await acme.beta.files.list()).data).toEqual([]);
    expect((await acme.beta.environments.list()).data.map((e) => e.id)).toEqual(["env_default"]);
    expect(await rejection(acme.beta.agents.retrieve(agentId))).toBeInstanceOf(Anthropic.NotFoundError);
    expect(await rejection(acme.beta.sessions.retrieve(all[0]!))).toBeInstanceOf(Anthropic.NotFoundError);
    expect(await rejection(acme.beta.sessions.events.list(all[0]!))).toBeInstanceOf(Anthropic.NotFoundError);
    expect(await rejection(acme.beta.sessions.events.send(all[0]!, { events: [{ type: "user.interrupt" }] }))).toBeInstanceOf(Anthropic.NotFoundError);
    expect(await rejection(acme.beta.environments.retrieve(environmentId))).toBeInstanceOf(Anthropic.NotFoundError);
    expect(await rejection(acme.beta.sessions.create({ agent: agentId, environment_id: "env_default" }))).toBeInstanceOf(Anthropic.NotFoundError);

    const victim = all[all.length - 1]!;
    expect(await client.beta.sessions.delete(victim)).toMatchObject({ id: victim, type: "session_deleted" });
    expect(await rejection(client.beta.sessions.retrieve(victim))).toBeInstanceOf(Anthropic.NotFoundError);
    // /api keeps its history, ended.
    expect((await (await server.api(`/api/sessions/${victim}`)).json()).session.status).toBe("ended");
  });
});
