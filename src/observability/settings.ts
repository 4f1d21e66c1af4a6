import { ConfigError } from "../config";
import { boolean, text } from "../env-values";

import type { Env } from "../env-values";

/** What the observability variables say, parsed once at start-up. */
export interface ObservabilitySettings {
  metrics: {
    /** ASH_METRICS_PUBLIC: /metrics without the API key. */
    public: boolean;
  };
  tracing: {
    /** Where spans go (OTLP/HTTP); unset leaves tracing off. */
    tracesUrl?: string;
    headers: Record<string, string>;
    serviceName: string;
    resourceAttributes: Record<string, string>;
    /** ASH_SANDBOX_OTEL: let the agent CLI in each sandbox export its own spans too. */
    sandboxExport: boolean;
    /** The exporter settings handed to sandboxes when `sandboxExport` is on. */
    sandboxEnv: Record<string, string>;
  };
  telemetry: {
    url?: string;
    token?: string;
  };
}

/**
 * Reads the observability variables. A bad value stops start-up with a
 * sentence that names the variable, like every other setting.
 */
export function readObservabilitySettings(env: Env = process.env): ObservabilitySettings {
  const sdkDisabled = boolean(env, "OTEL_SDK_DISABLED", false);
  const tracesEndpoint = text(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
  const endpoint = text(env, "OTEL_EXPORTER_OTLP_ENDPOINT");
  if (tracesEndpoint !== undefined) httpUrl("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", tracesEndpoint);
  if (endpoint !== undefined) httpUrl("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
  // The signal-specific URL is used as given; the general one gets /v1/traces appended (OTLP spec).
  const tracesUrl = sdkDisabled ? undefined : (tracesEndpoint ?? (endpoint ? endpoint.replace(/\/+$/, "") + "/v1/traces" : undefined));

  const protocol = text(env, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") ?? text(env, "OTEL_EXPORTER_OTLP_PROTOCOL");
  if (tracesUrl && protocol !== undefined && protocol !== "http/json" && protocol !== "http/protobuf") {
    throw new ConfigError(
      `OTEL_EXPORTER_OTLP_PROTOCOL is "${protocol}", but Ash exports traces over OTLP/HTTP (JSON): use an http:// endpoint (usually port 4318) and http/json or http/protobuf`,
    );
  }

  const headers = {
    ...keyValueList(env, "OTEL_EXPORTER_OTLP_HEADERS"),
    ...keyValueList(env, "OTEL_EXPORTER_OTLP_TRACES_HEADERS"),
  };
  const resourceAttributes = keyValueList(env, "OTEL_RESOURCE_ATTRIBUTES");
  const serviceName = text(env, "OTEL_SERVICE_NAME") ?? resourceAttributes["service.name"] ?? "ash";

  const sandboxExport = boolean(env, "ASH_SANDBOX_OTEL", false);
  const sandboxEnv: Record<string, string> = {};
  if (sandboxExport && tracesUrl) {
    for (const name of SANDBOX_EXPORTER_SETTINGS) {
      const value = text(env, name);
      if (value !== undefined) sandboxEnv[name] = value;
    }
    if (!sandboxEnv.OTEL_EXPORTER_OTLP_PROTOCOL && !sandboxEnv.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL) sandboxEnv.OTEL_EXPORTER_OTLP_PROTOCOL = "http/json";
  }

  const telemetryUrl = text(env, "ASH_TELEMETRY_URL");
  if (telemetryUrl !== undefined) httpUrl("ASH_TELEMETRY_URL", telemetryUrl);
  const telemetryToken = text(env, "ASH_TELEMETRY_TOKEN");

  return {
    metrics: { public: boolean(env, "ASH_METRICS_PUBLIC", false) },
    tracing: { tracesUrl, headers, serviceName, resourceAttributes, sandboxExport, sandboxEnv },
    telemetry: { url: telemetryUrl, token: telemetryToken },
  };
}

/** The server's exporter settings a sandbox may receive (ASH_SANDBOX_OTEL=true), so its CLI sends to the same collector. */
const SANDBOX_EXPORTER_SETTINGS = [
  "OTEL_EXPORTER_OTLP_ENDPOINT",
  "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
  "OTEL_EXPORTER_OTLP_HEADERS",
  "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
  "OTEL_EXPORTER_OTLP_PROTOCOL",
  "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
] as const;

function httpUrl(name: string, value: string): void {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    // The value is not repeated: it may carry credentials.
    throw new ConfigError(`${name} must be an http:// or https:// URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new ConfigError(`${name} must be an http:// or https:// URL, not ${url.protocol}`);
}

/** `key1=value1,key2=value2` with percent-encoded values (OTel's format for headers and resource attributes). */
function keyValueList(env: Env, name: string): Record<string, string> {
  const raw = text(env, name);
  const result: Record<string, string> = {};
  if (raw === undefined) return result;
  for (const part of raw.split(",")) {
    if (!part.trim()) continue;
    const eq = part.indexOf("=");
    const key = eq === -1 ? "" : part.slice(0, eq).trim();
    if (!key) throw new ConfigError(`${name} must be a comma-separated list of key=value pairs`);
    let value = part.slice(eq + 1).trim();
    try {
      value = decodeURIComponent(value);
    } catch {
      // A value with a stray % is kept as written.
    }
    result[key] = value;
  }
  return result;
}
