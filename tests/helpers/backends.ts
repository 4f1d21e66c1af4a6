// The databases the server suites run on: SQLite always, PostgreSQL when a
// test server is configured (CI always configures one).
import { createPostgresDatabase, postgresAdminUrl } from "./postgres";

export interface Backend {
  name: "sqlite" | "postgres";
  /** Environment for a server on a fresh, empty database, and how to drop it. */
  prepare(): Promise<{ env: Record<string, string>; cleanup(): Promise<void> }>;
}

export const backends: Backend[] = [
  { name: "sqlite", prepare: async () => ({ env: {}, cleanup: async () => {} }) },
  ...(postgresAdminUrl
    ? [
        {
          name: "postgres" as const,
          prepare: async () => {
            const db = await createPostgresDatabase();
            return { env: { ASH_DATABASE_URL: db.url }, cleanup: () => db.drop() };
          },
        },
      ]
    : []),
];
