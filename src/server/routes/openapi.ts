import type { H3 } from "h3";
import type { AppContext } from "../context";
import { AGENT_NAME, QUEUE_STATUSES, SESSION_STATES, SESSION_STATUSES } from "../../contract";

// The API reference, served as OpenAPI 3.1 at GET /openapi.json (public, like /health).

const error = { $ref: "#/components/responses/Error" };
const sessionAnswer = { description: "The session as it now is", content: { "application/json": { schema: { type: "object", properties: { session: { $ref: "#/components/schemas/Session" } } } } } };
const idParam = { name: "id", in: "path", required: true, schema: { type: "string" } };
// Sequence numbers are plain decimal digits; anything else ("-0", "0x10", "1e3", " 5 ") is 400.
const sequence = { type: "string", pattern: "^[0-9]{1,16}$" };
const afterParam = { name: "after", in: "query", schema: sequence };
const nameParam = { name: "name", in: "path", required: true, schema: { type: "string", pattern: AGENT_NAME.source } };
const evalCase = {
  type: "object",
  required: ["question"],
  additionalProperties: false,
  properties: {
    question: { type: "string", minLength: 1 },
    expectedTopics: { type: "array", items: { type: "string" }, description: "Mentioned by a good answer (case-insensitive)" },
    unexpectedTopics: { type: "array", items: { type: "string" }, description: "Not mentioned by a good answer" },
    referenceAnswer: { type: ["string", "null"] },
    category: { type: ["string", "null"] },
    tags: { type: "array", items: { type: "string" } },
    history: { type: "array", items: { type: "object", required: ["role", "content"], properties: { role: { enum: ["user", "assistant"] }, content: { type: "string" } } }, description: "Earlier turns; the user ones are sent first" },
  },
};
const limitParam = { name: "limit", in: "query", schema: { type: "string", pattern: "^[0-9]{1,16}$" } };

function op(summary: string, responses: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  return { summary, responses: { ...responses, "400": error, "401": error, "404": error }, ...extra };
}

function body(schema: unknown) {
  return { requestBody: { required: true, content: { "application/json": { schema } } } };
}

const versionParam = { name: "version", in: "path", required: true, schema: { type: "string", pattern: "^v?[0-9]{1,10}$" } };
const fileParam = { name: "path", in: "path", required: true, schema: { type: "string" } };
/** What a new agent version changes. */
const CHANGE = {
          type: "object",
          additionalProperties: false,
          properties: {
            systemPrompt: { type: ["string", "null"], description: "A prompt-only agent: its new CLAUDE.md; otherwise the appended prompt (null removes it)" },
            env: { type: "object", additionalProperties: { type: ["string", "null"] }, description: "Variables to set; null removes one" },
            files: { type: "array", items: { $ref: "#/components/schemas/UploadedFile" }, description: "Files to add or replace" },
            removeFiles: { type: "array", items: { type: "string" } },
            egress: { type: "array", items: { type: "string" } },
            maxTokens: { type: ["integer", "null"], minimum: 1 },
          },
        };

export function openApiDocument(version: string) {
  return {
    openapi: "3.1.0",
    info: {
      title: "Ash",
      version,
      description:
        "Agents as an API: deploy an agent folder, open sessions, stream turns. JSON bodies are at most ASH_MAX_BODY_BYTES (413 beyond) and nest arrays and objects at most 64 deep (400 beyond).",
    },
    security: [{ bearer: [] }],
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
      responses: {
        Error: {
          description: "An error: the sentence says what went wrong",
          content: { "application/json": { schema: { type: "object", required: ["error", "statusCode"], properties: { error: { type: "string" }, statusCode: { type: "integer" } } } } },
        },
      },
      schemas: {
        Limits: {
          type: "object",
          additionalProperties: false,
          description: "Per key or tenant; over one: 429 with Retry-After",
          properties: {
            requestsPerMinute: { type: "integer", minimum: 1 },
            liveSessions: { type: "integer", minimum: 1 },
            runningTurns: { type: "integer", minimum: 1 },
            tokensPerDay: { type: "integer", minimum: 1 },
          },
        },
        UploadedFile: { type: "object", required: ["path", "content"], properties: { path: { type: "string" }, content: { type: "string", contentEncoding: "base64" }, mode: { type: "integer" } } },
        Agent: {
          type: "object",
          properties: {
            id: { type: "string" },
            name: { type: "string" },
            version: { type: "integer" },
            createdAt: { type: "string", format: "date-time" },
            updatedAt: { type: "string", format: "date-time" },
            env: { type: "object", additionalProperties: { const: "***" } },
          },
        },
        Session: {
          type: "object",
          properties: {
            id: { type: "string" },
            agentName: { type: "string" },
            agentVersion: { type: "integer" },
            sandboxId: { type: ["string", "null"] },
            status: { enum: [...SESSION_STATUSES] },
            state: { enum: [...SESSION_STATES], description: "hot: agent process running; idle: only the sandbox kept; asleep: workspace saved, nothing running" },
            createdAt: { type: "string", format: "date-time" },
            lastActiveAt: { type: "string", format: "date-time" },
            model: { type: "string" },
            parentSessionId: { type: "string" },
            maxTokens: { type: ["integer", "null"] },
          },
        },
      },
    },
    paths: {
      "/health": { get: { security: [], summary: "Capacity (pool, with resumeWarmHits and resumeColdHits), isolation and limits, and whether the server is ready; 503 while the database is unreachable or the server shuts down", responses: { "200": { description: "ok" }, "503": { description: "degraded or draining" } } } },
      "/health/live": { get: { security: [], summary: "200 while the process answers (a liveness probe; the database is not asked)", responses: { "200": { description: "{status: live}" } } } },
      "/health/ready": { get: { security: [], summary: "200 when the server takes new work; 503 with the reason (draining, database) otherwise (a readiness probe)", responses: { "200": { description: "{status: ready}" }, "503": { description: "{status: not ready, reason}" } } } },
      "/api/agents": {
        post: op("Deploy an agent folder (a new version when the name exists)", { "201": { description: "The agent" }, "413": error, "422": error }, body({
          type: "object",
          required: ["name"],
          additionalProperties: false,
          properties: {
            name: { type: "string", pattern: AGENT_NAME.source },
            files: { type: "array", items: { type: "object", required: ["path", "content"], properties: { path: { type: "string" }, content: { type: "string", contentEncoding: "base64" }, mode: { type: "integer" } } } },
            path: { type: "string", description: "A folder on the server instead of files: relative to the data directory, or absolute inside it or inside a folder of ASH_AGENT_ROOTS" },
            env: { type: "object", additionalProperties: { type: "string" } },
            systemPrompt: { type: "string", description: "Alone (no files, no path): the agent's CLAUDE.md is made from it (managed: true). With files: appended to CLAUDE.md's prompt" },
            egress: { type: "array", items: { type: "string" }, description: "Hosts its sessions may reach through the egress proxies: example.com, *.example.com, host:port (added to ash.json's)" },
            maxTokens: { type: "integer", minimum: 1, description: "Default token budget of each of its sessions" },
          },
        })),
        get: op("List agents", { "200": { description: "{agents}" } }),
      },
      "/api/agents/{name}": {
        parameters: [{ name: "name", in: "path", required: true, schema: { type: "string" } }],
        get: op("One agent", { "200": { description: "{agent}" } }),
        patch: op("A new active version with the changes; running sessions keep theirs", { "200": { description: "{agent}" }, "422": error }, body(CHANGE)),
        delete: op("Delete an agent: new sessions of the name get 404; sessions made from it keep running on their version", { "200": { description: "{agent, deleted, ok}" } }),
      },
      "/api/agents/{name}/files": {
        parameters: [nameParam],
        get: op("The files of the active version (or ?version=)", { "200": { description: "{version, files:[{path, size, mode, modifiedAt}]}" } }, { parameters: [{ name: "version", in: "query", schema: { type: "string" } }] }),
        post: op("Add or replace files (checked like a deploy): a new active version", { "201": { description: "{agent, files}" }, "413": error }, body({
          type: "object",
          required: ["files"],
          additionalProperties: false,
          properties: { files: { type: "array", items: { $ref: "#/components/schemas/UploadedFile" } } },
        })),
      },
      "/api/agents/{name}/files/{path}": {
        parameters: [nameParam, { name: "path", in: "path", required: true, schema: { type: "string" } }],
        get: op("One file of the active version (or ?version=): JSON by default, ?format=raw for the bytes", { "200": { description: "{path, size, mode, encoding, content} or the bytes" } }, {
          parameters: [{ name: "format", in: "query", schema: { enum: ["json", "raw"] } }, { name: "version", in: "query", schema: { type: "string" } }],
        }),
      },
      "/api/agents/{name}/versions": {
        parameters: [nameParam],
        get: op("Every version, oldest first", { "200": { description: "{versions:[AgentVersion]}" } }),
        post: op("A new version from the active one (or cloneFrom); active only with activate: true", { "201": { description: "{version: AgentVersion}" }, "422": error }, body({
          type: "object",
          additionalProperties: false,
          properties: {
            ...CHANGE.properties,
            name: { type: "string", maxLength: 255 },
            releaseNotes: { type: "string", maxLength: 10000 },
            cloneFrom: { type: "integer", minimum: 1 },
            activate: { type: "boolean", default: false },
          },
        })),
      },
      "/api/agents/{name}/versions/{version}": {
        parameters: [nameParam, versionParam],
        get: op("One version", { "200": { description: "{version: AgentVersion}" } }),
      },
      "/api/agents/{name}/versions/{version}/activate": {
        parameters: [nameParam, versionParam],
        post: op("Make this the version new sessions (and warm spares) get; running and sleeping sessions keep theirs", { "200": { description: "{activated, versionNumber, agent}" } }),
      },
      "/api/agents/{name}/config": {
        parameters: [nameParam],
        get: op("The agent's config", { "200": { description: "{config:{warmSpares, maxTokens, egress, version}}" } }),
        patch: op("warmSpares (null: the server's default) is the agent's own; maxTokens and egress make a new active version", { "200": { description: "{config}" } }, body({
          type: "object",
          additionalProperties: false,
          properties: { warmSpares: { type: ["integer", "null"], minimum: 0, maximum: 100 }, maxTokens: { type: ["integer", "null"], minimum: 1 }, egress: { type: "array", items: { type: "string" } } },
        })),
      },
      "/api/sessions": {
        post: op("Open a session on an agent", { "201": sessionAnswer, "503": error }, body({
          type: "object",
          required: ["agent"],
          additionalProperties: false,
          properties: {
            agent: { type: "string" },
            model: { type: "string" },
            systemPrompt: { type: "string" },
            extraEnv: { type: "object", additionalProperties: { type: "string" } },
            mcpServers: { type: "object" },
            permissionMode: { enum: ["default", "acceptEdits", "bypassPermissions", "plan", "dontAsk"] },
            allowedTools: { type: "array", items: { type: "string" } },
            disallowedTools: { type: "array", items: { type: "string" } },
            confirmTools: { oneOf: [{ const: "all" }, { type: "array", items: { type: "string" } }], description: "Tools held for a person's allow or deny before they run (tool_confirmation events); unset: the agent's" },
            maxTokens: { type: "integer", minimum: 1, description: "Token budget (input + output + cache tokens); past it the turn ends with error budget_exceeded" },
          },
        })),
        get: op("List sessions, newest first", { "200": { description: "{sessions, nextCursor}" } }, {
          parameters: ["agent", "status", "limit", "cursor"].map((name) => ({ name, in: "query", schema: { type: "string" } })),
        }),
      },
      "/api/sessions/{id}": {
        parameters: [idParam],
        get: op("One session", { "200": sessionAnswer }),
        patch: op("Change a session's token budget (null: back to the agent's or server's); a session stopped by its budget works again once it is raised", { "200": sessionAnswer }, body({
          type: "object",
          required: ["maxTokens"],
          additionalProperties: false,
          properties: { maxTokens: { type: ["integer", "null"], minimum: 1 } },
        })),
        delete: op("End a session (history is kept)", { "200": sessionAnswer }),
      },
      "/api/usage": {
        get: op("Model usage as the gateway measured it, one record per model response, oldest first; `events` is the same page in the original API's shape", { "200": { description: "{usage:[{id, sessionId, agentName, turnId, keyId, model, inputTokens, outputTokens, cacheCreationTokens, cacheReadTokens, createdAt}], nextCursor, events:[{id, sessionId, agentName, eventType, value, createdAt}]}" } }, {
          parameters: ["session", "agent", "from", "to", "sessionId", "agentName", "after", "before", "limit", "cursor"].map((name) => ({ name, in: "query", schema: { type: "string" } })),
        }),
      },
      "/api/usage/stats": {
        get: op("Usage sums, grouped by agent and model, and the original API's flat totals", { "200": { description: "{totals, groups:[{agentName, model, requests, inputTokens, outputTokens, cacheCreationTokens, cacheReadTokens}], stats:{totalInputTokens, totalOutputTokens, totalCacheCreationTokens, totalCacheReadTokens, totalToolCalls, totalMessages, totalComputeSeconds}}" } }, {
          parameters: ["session", "agent", "from", "to", "sessionId", "agentName", "after", "before"].map((name) => ({ name, in: "query", schema: { type: "string" } })),
        }),
      },
      "/api/analytics": {
        get: op("A summary of the caller's tenant: agents, sessions by status, usage (narrowed by after/before), evaluation runs by status", { "200": { description: "{agents:{total}, sessions:{total, byStatus}, usage:{totalInputTokens, ...}, evals:{totalRuns, byStatus}}" } }, {
          parameters: ["after", "before"].map((name) => ({ name, in: "query", schema: { type: "string" } })),
        }),
      },
      "/api/api-keys": {
        get: op("API keys of the caller's tenant (the operator: all, or ?tenant=); prefixes only", { "200": { description: "{keys:[{id, label, tenant, scope, keyPrefix, createdAt, expiresAt, lastUsedAt, revoked, limits}]}" }, "403": error }, {
          parameters: [{ name: "tenant", in: "query", schema: { type: "string" } }],
        }),
        post: op("Make a key (answered once: `key`); its scope at most the caller's, its tenant the caller's unless the operator asks", { "201": { description: "{id, key, label, tenant, scope, keyPrefix, createdAt, expiresAt, limits}" }, "403": error }, body({
          type: "object",
          additionalProperties: false,
          properties: {
            label: { type: "string" },
            tenant: { type: "string", pattern: "^[a-z0-9][a-z0-9_-]{0,62}$" },
            scope: { enum: ["read", "sessions", "admin"], default: "sessions" },
            expiresAt: { oneOf: [{ type: "integer" }, { type: "string", format: "date-time" }] },
            limits: { $ref: "#/components/schemas/Limits" },
          },
        })),
      },
      "/api/api-keys/{id}": {
        parameters: [{ name: "id", in: "path", required: true, schema: { type: "string" } }],
        patch: op("Set a key's limits", { "200": { description: "{apiKey}" } }, body({ type: "object", required: ["limits"], additionalProperties: false, properties: { limits: { $ref: "#/components/schemas/Limits" } } })),
        delete: op("Revoke a key at once", { "204": { description: "Revoked" }, "403": error }),
      },
      "/api/tenants": {
        get: op("Every tenant (operator only)", { "200": { description: "{tenants:[{id, label, limits, createdAt}]}" }, "403": error }),
        post: op("Make a tenant (operator only)", { "201": { description: "{tenant}" }, "403": error }, body({ type: "object", required: ["id"], additionalProperties: false, properties: { id: { type: "string" }, label: { type: "string" }, limits: { $ref: "#/components/schemas/Limits" } } })),
      },
      "/api/tenants/{id}": {
        parameters: [{ name: "id", in: "path", required: true, schema: { type: "string" } }],
        get: op("A tenant (its own admins, or the operator)", { "200": { description: "{tenant}" } }),
        patch: op("Set a tenant's limits (operator only)", { "200": { description: "{tenant}" }, "403": error }, body({ type: "object", required: ["limits"], additionalProperties: false, properties: { limits: { $ref: "#/components/schemas/Limits" } } })),
      },
      "/api/credentials": {
        get: op("The tenant's stored credentials (never their secrets)", { "200": { description: "{credentials:[{id, type, label, variable, active, createdAt, lastUsedAt}]}" }, "503": error }),
        post: op("Store a secret sealed with ASH_CREDENTIAL_KEY; sessions and agents name it as credentialId", { "201": { description: "{credential}" }, "422": error, "503": error }, body({
          type: "object",
          required: ["type", "key"],
          additionalProperties: false,
          properties: { type: { enum: ["anthropic", "custom"] }, key: { type: "string" }, label: { type: "string" }, variable: { type: "string", description: "custom: the environment variable" } },
        })),
      },
      "/api/credentials/{id}": {
        parameters: [{ name: "id", in: "path", required: true, schema: { type: "string" } }],
        delete: op("Delete a stored credential", { "204": { description: "Deleted" }, "503": error }),
      },
      "/api/sessions/{id}/attachments": {
        parameters: [idParam],
        get: op("The session's attachments", { "200": { description: "{attachments:[{id, sessionId, messageId, filename, mimeType, size, path, createdAt}]}" } }),
        post: op("Attach a file (base64); a live session also finds it under attachments/", { "201": { description: "{attachment}" }, "413": error }, body({
          type: "object",
          required: ["filename", "content"],
          additionalProperties: false,
          properties: { filename: { type: "string" }, mimeType: { type: "string" }, content: { type: "string", contentEncoding: "base64" }, messageId: { type: "string" } },
        })),
      },
      "/api/attachments/{id}": {
        parameters: [{ name: "id", in: "path", required: true, schema: { type: "string" } }],
        get: op("An attachment's bytes (a download, never rendered in place)", { "200": { description: "The bytes" } }),
        delete: op("Delete an attachment", { "204": { description: "Deleted" } }),
      },
      "/api/queue": {
        post: op("Queue a prompt; a server runs it in the background (at most ASH_QUEUE_CONCURRENCY at once per server), retrying failures with exponential backoff", { "201": { description: "{item}" }, "409": error }, body({
          type: "object",
          required: ["agent", "prompt"],
          additionalProperties: false,
          properties: {
            agent: { type: "string", pattern: AGENT_NAME.source },
            prompt: { type: "string", minLength: 1 },
            sessionId: { type: "string", description: "Continue this session of the agent instead of starting a new one" },
            priority: { type: "integer", minimum: -1000, maximum: 1000, default: 0, description: "Higher runs first" },
            maxRetries: { type: "integer", minimum: 0, maximum: 20, default: 3 },
          },
        })),
        get: op("Queue items, newest first", { "200": { description: "{items:[QueueItem], nextCursor}" } }, {
          parameters: [{ name: "status", in: "query", schema: { enum: [...QUEUE_STATUSES] } }, { name: "agent", in: "query", schema: { type: "string" } }, limitParam, { name: "cursor", in: "query", schema: { type: "string" } }],
        }),
      },
      "/api/queue/stats": { get: op("How many items have each status; what the answering server runs", { "200": { description: "{pending, running, completed, failed, cancelled, total, runningHere, concurrency}" } }) },
      "/api/queue/{id}": {
        parameters: [idParam],
        get: op("One item: status, attempts, its session, its result or error", { "200": { description: "{item:{id, agent, prompt, status, priority, attempts, maxRetries, sessionId, continueSessionId, result, error, claimedBy, leaseUntil, nextAttemptAt, createdAt, startedAt, completedAt}}" } }),
        delete: op("Cancel a pending or running item (a running turn is interrupted)", { "200": { description: "{item}" }, "409": error }),
      },
      "/api/agents/{name}/evals/cases": {
        parameters: [nameParam],
        get: op("The agent's evaluation cases, in the order they were added", { "200": { description: "{cases:[EvalCase]}" } }),
        post: op("Add one case", { "201": { description: "{case}" } }, body(evalCase)),
      },
      "/api/agents/{name}/evals/cases/{caseId}": {
        parameters: [nameParam, { name: "caseId", in: "path", required: true, schema: { type: "string" } }],
        delete: op("Remove one case (runs keep their results)", { "200": { description: "{deleted}" } }),
      },
      "/api/agents/{name}/evals/import": {
        parameters: [nameParam],
        post: op("Add cases, or replace all of them; takes what export writes", { "201": { description: "{imported, total, cases}" } }, body({
          type: "object",
          required: ["cases"],
          additionalProperties: false,
          properties: { format: { const: "ash-evals/1" }, agent: { type: "string" }, cases: { type: "array", minItems: 1, maxItems: 1000, items: evalCase }, replace: { type: "boolean" } },
        })),
      },
      "/api/agents/{name}/evals/export": { parameters: [nameParam], get: op("The agent's cases as JSON that import takes", { "200": { description: "{format: \"ash-evals/1\", agent, cases}" } }) },
      "/api/agents/{name}/evals/runs": {
        parameters: [nameParam],
        post: op("Start a run in the background: each case a session of the agent version, at most ASH_EVAL_CONCURRENCY at once", { "202": { description: "{run}" }, "422": error }, body({
          type: "object",
          additionalProperties: false,
          properties: {
            version: { type: "integer", minimum: 1, description: "Default: the latest" },
            concurrency: { type: "integer", minimum: 1, maximum: 100 },
            grade: { type: "boolean", default: true, description: "Have the model grade each answer" },
            category: { type: "string" },
            tags: { type: "array", items: { type: "string" }, description: "Only cases with all of these tags" },
          },
        })),
        get: op("The agent's runs, newest first", { "200": { description: "{runs:[EvalRun]}" } }, { parameters: [limitParam] }),
      },
      "/api/eval-runs/{id}": {
        parameters: [idParam],
        get: op("A run and its results", {
          "200": {
            description:
              "{run:{id, agent, agentVersion, status, grade, error, createdAt, completedAt, summary:{cases, completed, failed, passed, score, autoScore, gradeScore, humanScored}}, results:[{caseId, question, status, sessionId, answer, error, score, autoScore, pass, checks, gradeScore, grade, humanScore, humanNotes, startedAt, completedAt}]}",
          },
        }),
      },
      "/api/eval-runs/{id}/results/{caseId}": {
        parameters: [idParam, { name: "caseId", in: "path", required: true, schema: { type: "string" } }],
        patch: op("A person's score (0 to 1; null takes it back) and notes; it becomes the case's score", { "200": { description: "{result}" } }, body({
          type: "object",
          required: ["humanScore"],
          additionalProperties: false,
          properties: { humanScore: { type: ["number", "null"], minimum: 0, maximum: 1 }, notes: { type: ["string", "null"] } },
        })),
      },
      "/api/eval-runs/{id}/compare/{other}": {
        parameters: [idParam, { name: "other", in: "path", required: true, schema: { type: "string" } }],
        get: op("Case by case: the other run's score minus this one's", { "200": { description: "{base, other, cases:[{caseId, question, base, other, delta, change}], summary:{improved, regressed, same, missing, delta}}" } }),
      },
      "/api/sessions/{id}/pause": { parameters: [idParam], post: op("Save the workspace and free the sandbox", { "200": sessionAnswer, "409": error, "410": error }) },
      "/api/sessions/{id}/resume": { parameters: [idParam], post: op("Make the session active again", { "200": sessionAnswer, "410": error, "503": error }) },
      "/api/sessions/{id}/stop": { parameters: [idParam], post: op("Like pause, but the running turn and process end at once", { "200": sessionAnswer, "410": error }) },
      "/api/sessions/{id}/fork": {
        parameters: [idParam],
        post: op("A new session with the history, conversation and files as they are now, or as after `checkpoint`", { "201": sessionAnswer, "404": error, "409": error }, body({
          type: "object",
          additionalProperties: false,
          properties: { checkpoint: { type: "integer", minimum: 1 } },
        })),
      },
      "/api/sessions/{id}/checkpoints": {
        parameters: [idParam],
        get: op("One checkpoint per completed turn, oldest first", { "200": { description: "{checkpoints:[{checkpoint, turn, parent, createdAt, prompt, fileCount, bytes, filesChanged, bytesChanged, rewound}]}" } }),
      },
      "/api/sessions/{id}/rewind": {
        parameters: [idParam],
        post: op("Move the session back to a checkpoint: files and conversation as after that turn; later history stays, marked rewound", { "200": sessionAnswer, "404": error, "409": error, "410": error }, body({
          type: "object",
          required: ["checkpoint"],
          additionalProperties: false,
          properties: { checkpoint: { type: "integer", minimum: 1 } },
        })),
      },
      "/api/sessions/{id}/messages": {
        parameters: [idParam],
        post: op("Send a message; the answer is the turn's event stream (text/event-stream), ending with `done`", { "200": { description: "SSE frames: id, event, data" }, "409": error, "410": error, "503": error }, body({
          type: "object",
          required: ["content"],
          additionalProperties: false,
          properties: { content: { oneOf: [{ type: "string" }, { type: "array" }] }, model: { type: "string" }, maxTurns: { type: "integer" }, includePartialMessages: { type: "boolean", default: true } },
        })),
        get: op("The session's history", { "200": { description: "{messages}" } }, { parameters: [afterParam, limitParam] }),
      },
      "/api/sessions/{id}/stream": {
        parameters: [idParam],
        get: op("Every event after Last-Event-ID (or ?after=), then live ones", { "200": { description: "text/event-stream" } }, {
          parameters: [{ name: "Last-Event-ID", in: "header", schema: sequence }, afterParam],
        }),
      },
      "/api/sessions/{id}/interrupt": { parameters: [idParam], post: op("Stop the running turn", { "200": { description: "{interrupted}" } }) },
      "/api/sessions/{id}/tool-confirmations": {
        parameters: [idParam],
        post: op("Allow or deny a tool use held by the session's confirmTools policy (its tool_confirmation event)", { "200": { description: "{toolUseId, name, decision}" }, "404": error, "409": error, "410": error }, body({
          type: "object",
          required: ["toolUseId", "decision"],
          additionalProperties: false,
          properties: { toolUseId: { type: "string" }, decision: { enum: ["allow", "deny"] }, message: { type: "string", description: "With deny: what the model is told instead of the tool's result" } },
        })),
      },
      "/api/sessions/{id}/events": {
        parameters: [idParam],
        get: op("Stored stream events, in order", { "200": { description: "{events}" } }, { parameters: [afterParam, limitParam, { name: "type", in: "query", schema: { type: "string" } }] }),
      },
      "/api/sessions/{id}/files": {
        parameters: [idParam],
        get: op("List the workspace's files; source says sandbox (live) or snapshot", { "200": { description: "{files, source}" } }),
        post: op("Write files as the sandbox user (a sleeping session is woken), under targetPath when given", { "201": { description: "{files:[{path, size}], targetPath}" }, "409": error, "410": error, "413": error }, body({
          type: "object",
          required: ["files"],
          additionalProperties: false,
          properties: {
            files: { type: "array", items: { type: "object", required: ["path", "content"], properties: { path: { type: "string" }, content: { type: "string" }, encoding: { enum: ["base64", "utf8"], default: "base64" }, mode: { type: "integer" } } } },
            targetPath: { type: "string" },
          },
        })),
      },
      "/api/sessions/{id}/files/{path}": {
        parameters: [idParam, fileParam],
        get: op("One file: its raw bytes (streamed, typed by extension, nosniff, a download; X-Ash-Source says sandbox or snapshot), or ?format=json", { "200": { description: "the bytes, or {path, size, encoding, content, source}" }, "413": error }, {
          parameters: [{ name: "format", in: "query", schema: { enum: ["raw", "json"], default: "raw" } }],
        }),
        delete: op("Remove a file or folder, as the sandbox user", { "200": { description: "{path, deleted}" }, "409": error, "410": error }),
      },
      "/api/sessions/{id}/workspace": {
        parameters: [idParam],
        get: op("The workspace as tar.gz", { "200": { description: "application/gzip" } }),
        post: op("Unpack a tar.gz (or tar) body into the workspace (or ?targetPath=), as the sandbox user; checked whole first: no absolute names, no .., no links out, no devices; 413 past ASH_MAX_UPLOAD_BYTES unpacked", { "201": { description: "{extracted, files, entries, targetPath}" }, "409": error, "410": error, "413": error }, {
          parameters: [{ name: "targetPath", in: "query", schema: { type: "string" } }],
          requestBody: { required: true, content: { "application/gzip": { schema: { type: "string", format: "binary" } }, "application/x-tar": { schema: { type: "string", format: "binary" } } } },
        }),
      },
      "/api/sessions/{id}/exec": { parameters: [idParam], post: op("Run a command in the sandbox", { "200": { description: "{exitCode, stdout, stderr, timedOut}" }, "410": error }, body({ type: "object", required: ["command"], properties: { command: { type: "string" }, timeout: { type: "integer" } } })) },
      "/api/sessions/{id}/logs": { parameters: [idParam], get: op("The sandbox's recent output lines; source sandbox (live) or snapshot (asleep: none kept)", { "200": { description: "{logs, source}" } }) },
    },
  };
}

export function registerOpenApi(app: H3, ctx: AppContext): void {
  const document = JSON.stringify(openApiDocument(ctx.version));
  app.get("/openapi.json", () => new Response(document, { headers: { "content-type": "application/json; charset=utf-8" } }));
}
