import { randomUUID } from "node:crypto";
import type { ConsolaInstance } from "consola";
import type { ServerConfig } from "../config";
import type { AshDatabase } from "../db/types";
import type { SessionRecord, SessionSettings } from "../db/queries/sessions";
import { insertUsage, sessionTokenTotal } from "../db/queries/usage";
import { hasModelKey, type GatewayGrant, type GatewayRefusal } from "../gateway/gateway";
import { totalTokens, type ModelUsage } from "../gateway/usage-tap";
import type { EgressAttempt } from "../sandbox/egress-proxy";
import type { Observability } from "../observability";

/** Which budget applies to a session, and what it has used. */
export interface BudgetState {
  limit?: number;
  which?: "session" | "agent" | "server";
  used: number;
  /** Set when the gateway refused a call of the running turn for it. */
  exceeded?: { budget: string; limit: number; used: number };
}

/** Tokens of the running turn, as the gateway read them. */
export interface TurnUsage {
  requests: number;
  inputTokens: number;
  outputTokens: number;
  cacheCreationTokens: number;
  cacheReadTokens: number;
  totalTokens: number;
}

export const emptyTurnUsage = (): TurnUsage => ({ requests: 0, inputTokens: 0, outputTokens: 0, cacheCreationTokens: 0, cacheReadTokens: 0, totalTokens: 0 });

/** What accounting needs of a live session: whose it is and its running counts. */
export interface AccountedSession {
  session: Pick<SessionRecord, "tenantId" | "apiKeyId">;
  grant: GatewayGrant;
  budget: BudgetState;
  turnUsage?: TurnUsage;
}

export interface GatewayAccountingOptions {
  config: Pick<ServerConfig, "defaultMaxTokens">;
  db: AshDatabase;
  log: ConsolaInstance;
  metrics: Observability["metrics"];
  /** The live session a gateway token belongs to, if it still does. */
  liveOf: (sessionId: string) => AccountedSession | undefined;
  /** Adds a refused connection to the session's event stream. */
  egressDenied: (sessionId: string, event: { host: string; port: number; protocol: string; reason?: string }) => Promise<void>;
}

/**
 * What the model gateway asks of the session layer: may this call go
 * (a model key, the token budget), what did it use (budget, turn, stored usage),
 * and a proxied connection seen.
 */
export class GatewayAccounting {
  constructor(private readonly o: GatewayAccountingOptions) {}

  /** The session's budget: its own, else its agent's, else the server's default. */
  budgetLimit(settings: SessionSettings, agentMax: number | undefined): Pick<BudgetState, "limit" | "which"> {
    if (settings.maxTokens !== undefined) return { limit: settings.maxTokens, which: "session" };
    if (agentMax !== undefined) return { limit: agentMax, which: "agent" };
    if (this.o.config.defaultMaxTokens !== undefined) return { limit: this.o.config.defaultMaxTokens, which: "server" };
    return {};
  }

  /** The budget that applies to a session and what it used so far (all its stored usage). */
  async budgetFor(session: SessionRecord, agentMax: number | undefined): Promise<BudgetState> {
    return { ...this.budgetLimit(session.settings, agentMax), used: await sessionTokenTotal(this.o.db, session.id) };
  }

  private liveOf(grant: GatewayGrant): AccountedSession | undefined {
    const live = grant.sessionId ? this.o.liveOf(grant.sessionId) : undefined;
    return live && live.grant === grant ? live : undefined;
  }

  /** Asked before each call is forwarded: refuses a call without a model key, or past the budget. */
  admit(grant: GatewayGrant): GatewayRefusal | undefined {
    if (!hasModelKey(grant.upstream)) {
      return { status: 401, type: "authentication_error", message: "invalid x-api-key: the Ash server has no ANTHROPIC_API_KEY for this agent" };
    }
    const live = this.liveOf(grant);
    if (!live) return undefined;
    const { budget } = live;
    if (budget.limit !== undefined && budget.used >= budget.limit) {
      budget.exceeded = { budget: budget.which ?? "session", limit: budget.limit, used: budget.used };
      this.o.metrics.budgetRefused();
      return {
        status: 403,
        type: "permission_error",
        message: `Token budget exceeded: this session has used ${budget.used} of its ${budget.limit} tokens (${budget.which} budget).`,
      };
    }
    return undefined;
  }

  /** One model response's usage: counted for the budget and the turn at once, stored in the background. */
  recordUsage(grant: GatewayGrant, usage: ModelUsage): void {
    const total = totalTokens(usage);
    const live = this.liveOf(grant);
    if (live) {
      live.budget.used += total;
      const turn = live.turnUsage;
      if (turn && grant.turnId) {
        turn.requests++;
        turn.inputTokens += usage.inputTokens;
        turn.outputTokens += usage.outputTokens;
        turn.cacheCreationTokens += usage.cacheCreationTokens;
        turn.cacheReadTokens += usage.cacheReadTokens;
        turn.totalTokens += total;
      }
    }
    this.o.metrics.modelTokens(grant.agentName, usage);
    const record = {
      tenantId: live?.session.tenantId,
      apiKeyId: live?.session.apiKeyId ?? null,
      id: randomUUID(),
      sessionId: grant.sessionId ?? null,
      agentName: grant.agentName,
      turnId: grant.turnId ?? null,
      keyId: grant.upstream.keyId,
      ...usage,
      createdAt: Date.now(),
    };
    insertUsage(this.o.db, record).catch((error) => this.o.log.error(`storing model usage failed:`, error));
  }

  /** A proxied connection: counted; a refused one also goes into the session's event stream. */
  egressSeen(grant: GatewayGrant, attempt: EgressAttempt & { reason?: string }, allowed: boolean): void {
    this.o.metrics.egress(allowed);
    if (allowed || !grant.sessionId) return;
    const sessionId = grant.sessionId;
    this.o.log.info(`session ${sessionId}: egress to ${attempt.host}:${attempt.port} denied (${attempt.reason})`);
    void this.o
      .egressDenied(sessionId, { host: attempt.host, port: attempt.port, protocol: attempt.protocol, reason: attempt.reason })
      .catch((error) => this.o.log.error(`session ${sessionId}: storing an egress_denied event failed:`, error));
  }
}
