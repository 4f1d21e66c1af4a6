import { afterAll, describe, expect, it } from "vitest";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openDatabase } from "../../src/db/connect";
import { migrate } from "../../src/db/migrate";
import { migrations } from "../../src/db/migrations";
import { getAgent, getAgentFiles } from "../../src/db/queries/agents";
import { getSession } from "../../src/db/queries/sessions";
import { apiKeyByHash } from "../../src/db/queries/api-keys";
import { backends } from "../helpers/backends";

// A database made by the release before tenants and checkpoints (migrations 1
// and 2) with data in it: upgrading keeps every agent, version, file, session
// and key, now owned by the default tenant, and the old key is the operator's.
describe.each(backends)("upgrading a database on $name", (backend) => {
  const cleanups: Array<() => Promise<void>> = [];
  afterAll(async () => {
    for (const cleanup of cleanups) await cleanup();
  });

  it("keeps agents, versions, files, sessions and the key through every later migration", async () => {
    const prepared = await backend.prepare();
    cleanups.push(prepared.cleanup);
    const dataDir = await mkdtemp(join(tmpdir(), "ash-upgrade-"));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    const db = await openDatabase({ url: prepared.env.ASH_DATABASE_URL || undefined, dataDir });
    cleanups.push(() => db.close());

    expect((await migrate(db, migrations.filter((m) => m.id <= 2))).applied).toEqual([1, 2]);
    const now = Date.now();
    await db.run(`INSERT INTO agents (id, name, version, created_at, updated_at) VALUES ('a1', 'legacy', 2, ?, ?)`, [now, now]);
    for (const version of [1, 2]) {
      await db.run(`INSERT INTO agent_versions (agent_id, version, env, system_prompt, created_at, settings) VALUES ('a1', ?, '{"X":"1"}', 'be brief', ?, '{"maxTokens":500}')`, [version, now]);
      await db.run(`INSERT INTO agent_files (agent_id, version, path, mode, content_base64) VALUES ('a1', ?, 'CLAUDE.md', 420, ?)`, [version, Buffer.from(`v${version}`).toString("base64")]);
    }
    await db.run(
      `INSERT INTO sessions (id, agent_id, agent_name, agent_version, status, sandbox_id, sdk_session_id, model, settings, parent_session_id, created_at, last_active_at)
       VALUES ('s1', 'a1', 'legacy', 1, 'paused', NULL, 'sdk-1', NULL, '{}', NULL, ?, ?)`,
      [now, now],
    );
    await db.run(`INSERT INTO api_keys (id, key_hash, label, created_at) VALUES ('initial', 'hash-of-the-old-key', 'generated on first boot', ?)`, [now]);

    const applied = (await migrate(db, migrations)).applied;
    expect(applied[0]).toBe(3);
    expect(applied.at(-1)).toBe(Math.max(...migrations.map((m) => m.id)));

    const agent = await getAgent(db, "default", "legacy");
    expect(agent).toMatchObject({ id: "a1", tenantId: "default", name: "legacy", version: 2, systemPrompt: "be brief", env: { X: "1" } });
    expect(agent!.settings.maxTokens).toBe(500);
    expect((await getAgentFiles(db, "a1", 1)).map((f) => f.content.toString())).toEqual(["v1"]);
    expect(await getAgent(db, "other", "legacy")).toBeUndefined();
    expect(await getSession(db, "s1")).toMatchObject({ agentName: "legacy", tenantId: "default", apiKeyId: null, workspaceVersion: null, sdkSessionId: "sdk-1" });
    expect(await apiKeyByHash(db, "hash-of-the-old-key")).toMatchObject({ id: "initial", tenantId: "default", operator: true, scope: "admin", revokedAt: null });
    // Agent names are unique per tenant now: the same name in another tenant is another agent.
    await db.run(`INSERT INTO agents (id, tenant_id, name, version, created_at, updated_at) VALUES ('a2', 'acme', 'legacy', 1, ?, ?)`, [now, now]);
    await expect(db.run(`INSERT INTO agents (id, tenant_id, name, version, created_at, updated_at) VALUES ('a3', 'acme', 'legacy', 1, ?, ?)`, [now, now])).rejects.toThrow();
    // Nothing left to apply on the next start.
    expect((await migrate(db, migrations)).applied).toEqual([]);
  });
});
