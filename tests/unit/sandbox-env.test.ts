import { describe, expect, it } from "vitest";
import { buildSandboxEnv, isPassedThrough } from "../../src/sandbox/env";

const dirs = { homeDir: "/data/sandboxes/s1/home", configDir: "/data/sandboxes/s1/home/.claude" };

describe("sandbox environment", () => {
  it("passes the model endpoint, key, CLI settings and trace context, and drops server secrets", () => {
    const env = buildSandboxEnv({
      dirs,
      host: { LANG: "en_US.UTF-8" },
      passed: {
        ANTHROPIC_API_KEY: "model-key",
        ANTHROPIC_BASE_URL: "http://127.0.0.1:9999",
        CLAUDE_CODE_ENTRYPOINT: "sdk-ts",
        CLAUDE_CODE_MAX_RETRIES: "0",
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318",
        TRACEPARENT: "00-abc-def-01",
        ASH_API_KEY: "server-secret",
        ASH_DATABASE_URL: "postgresql://u:p@db/ash",
        AWS_SECRET_ACCESS_KEY: "nope",
        PATH: "/root/bin:/usr/bin",
        HOME: "/root",
        NODE_OPTIONS: "--require /root/hook.js",
      },
    });
    expect(env).toEqual({
      PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      LANG: "en_US.UTF-8",
      TERM: "dumb",
      ANTHROPIC_API_KEY: "model-key",
      ANTHROPIC_BASE_URL: "http://127.0.0.1:9999",
      CLAUDE_CODE_ENTRYPOINT: "sdk-ts",
      CLAUDE_CODE_MAX_RETRIES: "0",
      OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318",
      TRACEPARENT: "00-abc-def-01",
      HOME: dirs.homeDir,
      TMPDIR: "/tmp",
      CLAUDE_CONFIG_DIR: dirs.configDir,
    });
  });

  it("adds the agent's and session's declared variables but never lets them move HOME or the config dir", () => {
    const env = buildSandboxEnv({
      dirs,
      host: {},
      declared: { GREETING: "hello", PATH: "/opt/tool/bin:/usr/bin", HOME: "/root", CLAUDE_CONFIG_DIR: "/data", TMPDIR: "/data" },
    });
    expect(env.GREETING).toBe("hello");
    expect(env.PATH).toBe("/opt/tool/bin:/usr/bin");
    expect(env.HOME).toBe(dirs.homeDir);
    expect(env.CLAUDE_CONFIG_DIR).toBe(dirs.configDir);
    expect(env.TMPDIR).toBe("/tmp");
  });

  it("rejects declared names the shell could not use and values with NUL bytes", () => {
    expect(() => buildSandboxEnv({ dirs, declared: { "BAD NAME": "x" } })).toThrow(/Invalid environment variable name/);
    expect(() => buildSandboxEnv({ dirs, declared: { "1ABC": "x" } })).toThrow(/Invalid environment variable name/);
    expect(() => buildSandboxEnv({ dirs, declared: { OK: "a\0b" } })).toThrow(/NUL/);
  });

  it("knows which names pass through", () => {
    expect(isPassedThrough("ANTHROPIC_MODEL")).toBe(true);
    expect(isPassedThrough("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC")).toBe(true);
    expect(isPassedThrough("OTEL_SERVICE_NAME")).toBe(true);
    expect(isPassedThrough("ASH_API_KEY")).toBe(false);
    expect(isPassedThrough("CLAUDE_CONFIG_DIR")).toBe(false);
    expect(isPassedThrough("LD_PRELOAD")).toBe(false);
  });
});
