import type { SpawnedProcess, SpawnOptions } from "@anthropic-ai/claude-agent-sdk";
import { AgentSession, type AgentSessionOptions } from "../runtime/agent-session";
import { PROJECT_DIR_NAME } from "../runtime/transcript-store";
import type { SandboxHandle } from "./types";

/** What the session layer uses of a Claude Code CLI process (src/runtime/agent-session). */
export type AgentProcess = Pick<
  AgentSession,
  "alive" | "sdkSessionId" | "start" | "started" | "prime" | "useModel" | "runTurn" | "interrupt" | "close"
>;

/** Makes (does not start) an agent process; the real one runs the CLI, tests may run a stand-in. */
export type AgentLauncher = (options: AgentSessionOptions) => AgentProcess;

export const launchAgentSession: AgentLauncher = (options) => new AgentSession(options);

/** How a session's or a spare's agent process differs; the rest follows from its sandbox. */
export type AgentProcessSettings = Omit<AgentSessionOptions, "cwd" | "env" | "spawn"> & {
  /** The sandbox's environment (the agent's variables, trace context). */
  env: Record<string, string>;
  /** The CLI's own variables: where it reaches the model gateway. */
  cliEnv: Record<string, string>;
  /** Spawns the CLI in the sandbox (with a niceness, for a spare); default: at the sandbox's own priority. */
  spawn?: (sandbox: SandboxHandle, options: SpawnOptions) => SpawnedProcess;
};

/**
 * The one way an agent process of a sandbox is made, for a session and for a
 * warm spare alike: it runs in the workspace, with its home and Claude Code's
 * config folder inside the sandbox and the transcript folder name the store expects.
 */
export function sandboxAgent(launch: AgentLauncher, sandbox: SandboxHandle, settings: AgentProcessSettings): AgentProcess {
  const { env, cliEnv, spawn, ...rest } = settings;
  return launch({
    ...rest,
    cwd: sandbox.workspaceDir,
    env: { ...env, ...cliEnv, HOME: sandbox.homeDir, CLAUDE_CONFIG_DIR: `${sandbox.homeDir}/.claude`, CLAUDE_CODE_PROJECT_DIR_NAME: PROJECT_DIR_NAME },
    spawn: (options) => (spawn ? spawn(sandbox, options) : sandbox.spawnClaudeCode(options)),
  });
}
