/**
 * A fresh, empty PostgreSQL database per test file.
 *
 * `ASH_TEST_POSTGRES_URL` names a server and a role that may create databases
 * (`infra/postgres.sh start` prints one). Each file gets its own database,
 * created before its tests and dropped after them, so files can run in
 * parallel. Without the variable, PostgreSQL suites are skipped with a notice.
 */
import { randomBytes } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe } from "vitest";
import { skipUnlessReady } from "./requirements";

export const postgresAdminUrl: string | undefined = process.env.ASH_TEST_POSTGRES_URL || undefined;

const missing = skipUnlessReady(
  "The PostgreSQL tests",
  postgresAdminUrl ? undefined : "ASH_TEST_POSTGRES_URL is not set (run `infra/postgres.sh start` and export the URL it prints as ASH_TEST_POSTGRES_URL)",
);

/** `describe` that runs only when a test PostgreSQL is configured. */
export const describeWithPostgres = describe.skipIf(Boolean(missing));

export interface TestDatabase {
  name: string;
  url: string;
  drop(): Promise<void>;
}

async function withAdmin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  if (!postgresAdminUrl) throw new Error("ASH_TEST_POSTGRES_URL is not set");
  const client = new pg.Client({ connectionString: postgresAdminUrl });
  client.on("error", () => {});
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

/** Creates an empty database on the test server and returns its URL. */
export async function createPostgresDatabase(): Promise<TestDatabase> {
  const name = `ash_test_${randomBytes(6).toString("hex")}`;
  await withAdmin((client) => client.query(`CREATE DATABASE ${name}`));
  const url = new URL(postgresAdminUrl!);
  url.pathname = `/${name}`;
  return {
    name,
    url: url.toString(),
    drop: () =>
      withAdmin(async (client) => {
        try {
          await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
        } catch {
          // Servers without WITH (FORCE) (older PostgreSQL, CockroachDB).
          await client.query(`DROP DATABASE IF EXISTS ${name}`);
        }
      }),
  };
}

/**
 * Call inside a `describeWithPostgres` block: creates the file's database
 * before its tests, drops it after, and returns a getter for its URL.
 */
export function usePostgresDatabase(): () => string {
  let database: TestDatabase | undefined;
  beforeAll(async () => {
    database = await createPostgresDatabase();
  });
  afterAll(async () => {
    await database?.drop();
  });
  return () => {
    if (!database) throw new Error("the test database is created in beforeAll; read its URL inside a test");
    return database.url;
  };
}
