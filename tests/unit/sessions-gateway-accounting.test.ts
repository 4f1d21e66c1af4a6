// Admission and usage accounting for the model gateway
// (src/sessions/gateway-accounting.ts) over a real SQLite database: which
// budget applies, when a call is refused, and what is stored for each call.
import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { consola } from "consola";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openSqlite } from "../../src/db/sqlite";
import { migrate } from "../../src/db/migrate";
import { migrations } from "../../src/db/migrations";
import { listUsage } from "../../src/db/queries/usage";
import type { AshDatabase } from "../../src/db/types";
import type { GatewayGrant } from "../../src/gateway/gateway";
import { Metrics } from "../../src/observability";
import { emptyTurnUsage, GatewayAccounting, type AccountedSession } from "../../src/sessions/gateway-accounting";
import { until } from "../helpers/session-fakes";

let dir: string;
let db: AshDatabase;
const live = new Map<string, AccountedSession>();
const denied: Array<{ sessionId: string; host: string }> = [];

function accounting(defaultMaxTokens?: number) {
  const log = consola.withTag("test");
  log.level = -999;
  return new GatewayAccounting({
    config: { defaultMaxTokens },
    db,
    log,
    metrics: new Metrics({}),
    liveOf: (id) => live.get(id),
    egressDenied: async (sessionId, event) => void denied.push({ sessionId, host: event.host }),
  });
}

const grant = (sessionId: string, over: Partial<GatewayGrant> = {}): GatewayGrant => ({
  id: randomUUID(),
  sandboxId: randomUUID(),
  agentName: "writer",
  sessionId,
  upstream: { baseUrl: "http://127.0.0.1:1", apiKey: "k", keyId: "server" },
  revoked: false,
  ...over,
});

const usage = (input: number, output: number) => ({ model: "m", inputTokens: input, outputTokens: output, cacheCreationTokens: 0, cacheReadTokens: 0 });

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "ash-accounting-"));
  db = await openSqlite({ path: join(dir, "ash.db") });
  await migrate(db, migrations);
  live.clear();
  denied.length = 0;
});
afterEach(async () => {
  await db.close();
  await rm(dir, { recursive: true, force: true });
});

describe("which budget applies", () => {
  it("the session's own, else its agent's, else the server's, else none", () => {
    expect(accounting(500).budgetLimit({ maxTokens: 10 }, 20)).toEqual({ limit: 10, which: "session" });
    expect(accounting(500).budgetLimit({}, 20)).toEqual({ limit: 20, which: "agent" });
    expect(accounting(500).budgetLimit({}, undefined)).toEqual({ limit: 500, which: "server" });
    expect(accounting().budgetLimit({}, undefined)).toEqual({});
  });
});

describe("admission", () => {
  it("refuses a call without a model key with the API's own authentication error", () => {
    const refusal = accounting().admit(grant("s1", { upstream: { baseUrl: "http://127.0.0.1:1", keyId: "server" } }));
    expect(refusal).toMatchObject({ status: 401, type: "authentication_error" });
  });

  it("refuses a call once the session's tokens reach its budget, and the turn learns which budget", () => {
    const g = grant("s1");
    const session: AccountedSession = { session: { tenantId: "default", apiKeyId: null }, grant: g, budget: { limit: 100, which: "agent", used: 99 } };
    live.set("s1", session);
    const a = accounting();
    expect(a.admit(g)).toBeUndefined();
    a.recordUsage(g, usage(1, 0));
    const refusal = a.admit(g);
    expect(refusal).toMatchObject({ status: 403, type: "permission_error" });
    expect(refusal!.message).toMatch(/100 of its 100 tokens \(agent budget\)/);
    expect(session.budget.exceeded).toEqual({ budget: "agent", limit: 100, used: 100 });
  });

  it("a grant the session no longer holds (an old sandbox's) is not counted against it", () => {
    const current = grant("s1");
    const session: AccountedSession = { session: { tenantId: "default", apiKeyId: null }, grant: current, budget: { limit: 10, used: 10 } };
    live.set("s1", session);
    const old = grant("s1");
    const a = accounting();
    expect(a.admit(old)).toBeUndefined();
    a.recordUsage(old, usage(5, 5));
    expect(session.budget.used).toBe(10);
  });
});

describe("usage", () => {
  it("counts a call for the budget and the running turn at once, and stores it under the session's tenant and key", async () => {
    const g = grant("s1", { turnId: "t1" });
    const session: AccountedSession = { session: { tenantId: "acme", apiKeyId: "key-1" }, grant: g, budget: { used: 0 }, turnUsage: emptyTurnUsage() };
    live.set("s1", session);
    const a = accounting();
    a.recordUsage(g, usage(3, 4));
    a.recordUsage(g, { ...usage(1, 1), cacheReadTokens: 2 });
    expect(session.budget.used).toBe(11);
    expect(session.turnUsage).toEqual({ requests: 2, inputTokens: 4, outputTokens: 5, cacheCreationTokens: 0, cacheReadTokens: 2, totalTokens: 11 });
    await until(async () => (await listUsage(db, { tenantId: "acme", limit: 10 })).length === 2);
    const stored = await listUsage(db, { tenantId: "acme", limit: 10 });
    expect(stored.map((r) => [r.sessionId, r.turnId, r.keyId, r.inputTokens])).toEqual(
      expect.arrayContaining([
        ["s1", "t1", "server", 3],
        ["s1", "t1", "server", 1],
      ]),
    );
  });

  it("a call outside a turn counts for the budget only", () => {
    const g = grant("s1");
    const session: AccountedSession = { session: { tenantId: "default", apiKeyId: null }, grant: g, budget: { used: 0 }, turnUsage: emptyTurnUsage() };
    live.set("s1", session);
    accounting().recordUsage(g, usage(2, 2));
    expect(session.budget.used).toBe(4);
    expect(session.turnUsage!.requests).toBe(0);
  });
});

describe("egress", () => {
  it("puts a refused connection into the session's events, and an allowed one nowhere", async () => {
    const a = accounting();
    a.egressSeen(grant("s1"), { host: "evil.example", port: 443, protocol: "connect", reason: "not allowed" }, false);
    a.egressSeen(grant("s1"), { host: "ok.example", port: 443, protocol: "connect" }, true);
    await until(() => denied.length === 1);
    expect(denied).toEqual([{ sessionId: "s1", host: "evil.example" }]);
  });
});
