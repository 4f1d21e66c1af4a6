import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["tests/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 180_000,
    // Suites start real servers, containers and databases: run files one at a time.
    fileParallelism: false,
    pool: "forks",
  },
});
