import type { KubeOptions } from "../../src/runspec";

/**
 * The variants kept as reference files in infra/kubernetes/ (ash.<name>.yaml),
 * checked against the renderer and against the Kubernetes schemas.
 */
export const KUBE_REFERENCES: Record<string, KubeOptions> = {
  cockroach: { database: "cockroach" },
  postgres: { database: "postgres" },
  external: { databaseUrl: "postgresql://ash@db.example.internal:26257/ash?sslmode=verify-full", snapshotStore: "s3://ash-sessions" },
};
