import { defineBuildConfig } from "unbuild";

// One package, several entry points: the server, the CLI, and the two
// libraries users import (the typed client and the Testcontainers module).
export default defineBuildConfig({
  entries: [
    "src/index",
    "src/server/main",
    "src/cli/main",
    "src/client/index",
    "src/testcontainers/index",
  ],
  // The image build turns them off (ASH_BUILD_DECLARATIONS=0): only the npm package needs them.
  declaration: process.env.ASH_BUILD_DECLARATIONS !== "0",
  // Without declarations unbuild warns that package.json names .d.mts files it did not write.
  failOnWarn: process.env.ASH_BUILD_DECLARATIONS !== "0",
  clean: true,
  rollup: {
    emitCJS: false,
  },
  externals: [/^@anthropic-ai\//, "better-sqlite3", "pg", "dockerode", "testcontainers"],
});
