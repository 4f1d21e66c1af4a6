import { defineConfig } from "vitest/config";

// Unit files share nothing and run in parallel first; the suites that start real
// servers, containers and databases (and share the Docker engine and the
// PostgreSQL cluster) then run one file at a time.
export default defineConfig({
  test: {
    testTimeout: 120_000,
    hookTimeout: 180_000,
    pool: "forks",
    projects: [
      {
        extends: true,
        // Mostly waiting on child processes and I/O: more workers than the 2 cores of CI pay off.
        test: { name: "unit", include: ["tests/unit/**/*.test.ts"], maxWorkers: 4, sequence: { groupOrder: 0 } },
      },
      {
        extends: true,
        test: {
          name: "system",
          include: ["tests/**/*.test.ts"],
          exclude: ["tests/unit/**"],
          fileParallelism: false,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
