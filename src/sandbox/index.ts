// Sandboxes: one isolated, resource-limited place per session where the
// Claude Code CLI and exec'd commands run (workspace snapshots: src/snapshots).
export {
  createSandbox,
  describeSandboxHost,
  SandboxDestroyedError,
  type CreateSandboxOptions,
  type ExecOptions,
  type ExecResult,
  type Sandbox,
} from "./spawn";
export { SandboxedProcess } from "./sandbox-process";
export { SandboxIsolationError, type IsolationKind, type IsolationReport } from "./isolation";
export {
  DEFAULT_LIMITS,
  DEFAULT_CGROUP1_PARENT,
  detectLimitMode,
  sweepResourceGroups,
  type LimitCounters,
  type LimitHost,
  type LimitMode,
  type LimitReason,
  type SandboxLimits,
} from "./limits";
export { buildSandboxEnv, isPassedThrough, type EnvMap } from "./env";
export { resolveSandboxUser, SANDBOX_USER_NAME, FALLBACK_SANDBOX_ID, type SandboxUser } from "./user";
export type { SandboxLogLine } from "./log-buffer";
