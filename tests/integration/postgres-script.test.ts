/**
 * infra/postgres.sh, as the test command and the Compose-like tests use it: a
 * new cluster must not answer over TCP before its `ash` role exists, or a
 * server already waiting for it sees a wrong-password error and gives up.
 */
import pg from "pg";
import { afterAll, expect, it } from "vitest";
import { describeWithPostgres } from "../helpers/postgres";
import { privatePostgres, type PrivatePostgres } from "../helpers/private-postgres";

describeWithPostgres("infra/postgres.sh on a new cluster", () => {
  let cluster: PrivatePostgres | undefined;
  afterAll(async () => {
    await cluster?.purge().catch(() => undefined);
  });

  it("is reachable over TCP only once the ash role and database exist", async () => {
    cluster = await privatePostgres();
    const seen: string[] = [];
    let starting = true;
    const started = cluster.start().finally(() => (starting = false));
    // Connect as a waiting server would, as often as we can, until start returns (bounded: start gives up after 60 s).
    for (let i = 0; starting && i < 20_000; i++) {
      const client = new pg.Client({ connectionString: cluster.url, connectionTimeoutMillis: 2_000 });
      client.on("error", () => {});
      try {
        await client.connect();
        await client.query("SELECT 1");
        seen.push("ok");
      } catch (err) {
        seen.push((err as { code?: string }).code ?? "error");
      } finally {
        await client.end().catch(() => {});
      }
    }
    await started;
    // Refused (ECONNREFUSED) or starting up (57P03) are what waiting is for; a password failure (28P01) or missing role is not.
    expect(seen.filter((code) => !["ok", "ECONNREFUSED", "57P03"].includes(code))).toEqual([]);
    expect(seen.length).toBeGreaterThan(0);
  }, 120_000);
});
