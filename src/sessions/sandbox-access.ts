import type { ServerConfig } from "../config";
import type { GatewayGrant, ModelGateway } from "../gateway/gateway";
import { createForward, createHttpProxy, createSocksProxy, type EgressAttempt, type EgressPolicy } from "../sandbox/egress-proxy";
import type { SandboxService } from "../sandbox/egress-net";
import { modelUpstreamOf } from "./agent-env";
import type { SandboxNetworkOptions } from "./types";

/** Loopback ports inside every sandbox (each sandbox has its own loopback, so they never clash). */
export const SANDBOX_PORTS = { gateway: 4141, http: 3128, socks: 1080, otlp: 4318 } as const;

const OTLP_ENDPOINTS = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] as const;

/**
 * With ASH_SANDBOX_OTEL the CLI exports spans to the server's collector. Its
 * http:// endpoints become fixed forwards on the sandbox's loopback (the
 * collector is the operator's, often on the host's loopback, which the
 * proxies refuse); an https:// one keeps its name, so its host is allowed
 * through the proxies instead.
 */
function telemetryRoutes(env: Record<string, string>): { services: SandboxService[]; env: Record<string, string>; allow: string[] } {
  const services: SandboxService[] = [];
  const rewritten: Record<string, string> = {};
  const allow: string[] = [];
  const ports = new Map<string, number>();
  for (const name of OTLP_ENDPOINTS) {
    const value = env[name];
    if (!value) continue;
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      continue;
    }
    const port = Number(url.port || (url.protocol === "https:" ? 443 : 80));
    if (url.protocol === "https:") {
      allow.push(`${url.hostname}:${port}`);
      continue;
    }
    let inside = ports.get(url.host);
    if (inside === undefined) {
      inside = SANDBOX_PORTS.otlp + ports.size;
      ports.set(url.host, inside);
      services.push({ name: `otlp${ports.size}`, port: inside, accept: createForward(url.hostname.replace(/^\[(.*)\]$/, "$1"), port) });
    }
    rewritten[name] = `http://127.0.0.1:${inside}${url.pathname === "/" ? "" : url.pathname}${url.search}`;
  }
  return { services, env: rewritten, allow };
}

export interface SandboxAccess {
  grant: GatewayGrant;
  /** Only for the CLI's environment: the session token in place of a model key. */
  cliEnv: Record<string, string>;
  network: SandboxNetworkOptions;
}

export interface SandboxAccessDeps {
  config: ServerConfig;
  gateway: ModelGateway;
  /** Every proxied connection attempt, allowed or not. */
  onEgress(grant: GatewayGrant, attempt: EgressAttempt & { reason?: string }, allowed: boolean): void;
}

/**
 * What one new sandbox gets to reach the world: a gateway token bound to it
 * (and to its session, once it has one), and three services on its own
 * loopback: the model gateway, an HTTP proxy and a SOCKS5 proxy, the two
 * proxies holding the server-wide and the agent's egress allowlist.
 */
export function prepareSandboxAccess(
  deps: SandboxAccessDeps,
  input: {
    sandboxId: string;
    agentName: string;
    sessionId?: string;
    agentEnv: Record<string, string>;
    extraEnv: Record<string, string>;
    egress: string[];
    /** The sandbox's declared environment (its OpenTelemetry export settings are routed too). */
    env?: Record<string, string>;
    /** The session's stored model key, used by the gateway only. */
    credential?: { id: string; value: string; type?: string };
  },
): SandboxAccess & { token: string } {
  const { config, gateway } = deps;
  const upstream = modelUpstreamOf({ config, agentEnv: input.agentEnv, extraEnv: input.extraEnv, credential: input.credential });
  const { token, grant } = gateway.issue({ sandboxId: input.sandboxId, agentName: input.agentName, sessionId: input.sessionId, upstream });
  const telemetry = telemetryRoutes(input.env ?? {});
  const policy: EgressPolicy = {
    allow: [...config.egress.allow, ...input.egress, ...telemetry.allow],
    allowPrivate: config.egress.allowPrivate,
    hosts: config.egress.testHosts,
  };
  const hooks = {
    onDenied: (attempt: EgressAttempt & { reason: string }) => deps.onEgress(grant, attempt, false),
    onAllowed: (attempt: EgressAttempt) => deps.onEgress(grant, attempt, true),
  };
  const network: SandboxNetworkOptions = {
    services: [
      { name: "gateway", port: SANDBOX_PORTS.gateway, accept: gateway.acceptFor(input.sandboxId) },
      { name: "http", port: SANDBOX_PORTS.http, accept: createHttpProxy(() => policy, hooks) },
      { name: "socks", port: SANDBOX_PORTS.socks, accept: createSocksProxy(() => policy, hooks) },
      ...telemetry.services,
    ],
    env: (addresses) => {
      const at = (name: string) => `${addresses[name]!.host}:${addresses[name]!.port}`;
      const http = `http://${at("http")}`;
      const socks = `socks5h://${at("socks")}`;
      const none = "localhost,127.0.0.1,::1";
      return {
        ANTHROPIC_BASE_URL: `http://${at("gateway")}`,
        HTTP_PROXY: http,
        HTTPS_PROXY: http,
        http_proxy: http,
        https_proxy: http,
        ALL_PROXY: socks,
        all_proxy: socks,
        NO_PROXY: none,
        no_proxy: none,
        ...telemetry.env,
      };
    },
  };
  return { token, grant, cliEnv: { ANTHROPIC_API_KEY: token }, network };
}
