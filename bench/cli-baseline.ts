// The baseline of the turn benchmarks: the Claude Code CLI through the Agent
// SDK, without the server and without a sandbox, in folder `dir`, against the
// fake model. One definition, so every baseline runs the CLI the same way.
import { join } from "node:path";
import type { Options } from "@anthropic-ai/claude-agent-sdk";

export function bareCliOptions(dir: string, modelUrl: string): Options {
  return {
    cwd: dir,
    // IS_SANDBOX: the CLI refuses to skip permissions as root otherwise (these runs are not sandboxed).
    env: { PATH: process.env.PATH!, HOME: dir, CLAUDE_CONFIG_DIR: join(dir, ".config"), ANTHROPIC_BASE_URL: modelUrl, ANTHROPIC_API_KEY: "sk-fake", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1", IS_SANDBOX: "1" },
    settingSources: ["project"],
    permissionMode: "bypassPermissions",
    allowDangerouslySkipPermissions: true,
    includePartialMessages: true,
  };
}
