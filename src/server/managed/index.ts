import type { H3 } from "h3";
import type { AppContext } from "../context";
import { registerManagedAgents } from "./agents";
import { registerManagedEnvironments } from "./environments";
import { registerManagedSessions } from "./sessions";
import { registerManagedEvents } from "./events";
import { registerManagedFiles } from "./files";

export { managedApiErrors, MANAGED_PREFIX } from "./errors";

/** Anthropic's Managed Agents API over the same agents, sessions, events and files as /api (docs/managed-agents-api.md). */
export function registerManagedApi(app: H3, ctx: AppContext): void {
  registerManagedAgents(app, ctx);
  registerManagedEnvironments(app, ctx);
  registerManagedSessions(app, ctx);
  registerManagedEvents(app, ctx);
  registerManagedFiles(app, ctx);
}
