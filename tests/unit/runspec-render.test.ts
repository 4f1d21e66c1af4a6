import { describe, expect, it } from "vitest";
import pkg from "../../package.json" with { type: "json" };
import {
  collectRepeatedFlag,
  fillTemplate,
  formatDockerRun,
  isolationOptions,
  parseEnvAssignment,
  printableSpec,
  renderRunSpec,
  toCreateOptions,
  toDockerRunArgs,
} from "../../src/runspec";

const dataDir = "/home/someone/.ash";

/** Values of every occurrence of `flag` in an argv (`-e A -e B` → [A, B]). */
function flagValues(argv: string[], flag: string): string[] {
  return argv.flatMap((arg, i) => (arg === flag ? [argv[i + 1]] : []));
}

describe("renderRunSpec: the container ash start creates", () => {
  const spec = renderRunSpec({ dataDir, hostEnv: { ANTHROPIC_API_KEY: "sk-ant-test" } });
  const create = toCreateOptions(spec);
  const argv = toDockerRunArgs(spec);

  it("names the container ash-server, labels it as Ash's and runs the versioned image", () => {
    expect(spec.name).toBe("ash-server");
    expect(spec.image).toBe(`ghcr.io/ash-ai/ash:${pkg.version}`);
    expect(create.name).toBe("ash-server");
    expect(create.Labels).toMatchObject({ "ai.ash.managed": "true", "ai.ash.role": "server", "ai.ash.data-dir": dataDir });
  });

  it("names the container after ASH_CONTAINER_NAME when set, and refuses a name Docker would refuse", () => {
    expect(renderRunSpec({ dataDir, hostEnv: { ASH_CONTAINER_NAME: "ash-staging" } }).name).toBe("ash-staging");
    expect(() => renderRunSpec({ dataDir, hostEnv: { ASH_CONTAINER_NAME: "-bad name" } })).toThrow(/ASH_CONTAINER_NAME must be a Docker container name/);
  });

  it("has every flag of the seed: --init, --cgroupns=host, the /data bind, -p 4100:4100, -e ANTHROPIC_API_KEY", () => {
    expect(create.HostConfig.Init).toBe(true);
    expect(create.HostConfig.CgroupnsMode).toBe("host");
    expect(create.HostConfig.Binds).toContain(`${dataDir}:/data`);
    expect(create.HostConfig.PortBindings).toEqual({ "4100/tcp": [{ HostPort: "4100" }] });
    expect(create.ExposedPorts).toEqual({ "4100/tcp": {} });
    expect(create.Env).toContain("ANTHROPIC_API_KEY=sk-ant-test");

    expect(argv).toContain("--init");
    expect(argv).toContain("--cgroupns=host");
    expect(flagValues(argv, "-v")).toContain(`${dataDir}:/data`);
    expect(flagValues(argv, "-p")).toEqual(["4100:4100"]);
  });

  it("isolates sandboxes with named capabilities instead of --privileged", () => {
    expect(create.HostConfig.Privileged).toBeUndefined();
    expect(argv).not.toContain("--privileged");
    expect(create.HostConfig.CapAdd).toEqual(["SYS_ADMIN"]);
    expect(create.HostConfig.SecurityOpt).toEqual(["seccomp=unconfined", "apparmor=unconfined"]);
    expect(create.HostConfig.Binds).toContain("/sys/fs/cgroup:/sys/fs/cgroup:rw");
    expect(flagValues(argv, "--cap-add")).toEqual(["SYS_ADMIN"]);
    expect(flagValues(argv, "--security-opt")).toEqual(["seccomp=unconfined", "apparmor=unconfined"]);
    expect(flagValues(argv, "-v")).toContain("/sys/fs/cgroup:/sys/fs/cgroup:rw");
  });

  it("never restarts on its own", () => {
    expect(create.HostConfig.RestartPolicy).toEqual({ Name: "no" });
    expect(flagValues(argv, "--restart")).toEqual(["no"]);
  });

  it("explains every flag it uses", () => {
    const flags = [
      "--init",
      "--cgroupns=host",
      "--cap-add SYS_ADMIN",
      "--security-opt seccomp=unconfined",
      "--security-opt apparmor=unconfined",
      "-v /sys/fs/cgroup:/sys/fs/cgroup:rw",
      "-v <data dir>:/data",
      "-p <port>:4100",
      "-e ANTHROPIC_API_KEY",
      "--restart no",
    ];
    for (const flag of flags) expect(spec.why[flag]?.length ?? 0, flag).toBeGreaterThan(40);
  });

  it("passes host secrets by name on the docker run line, never by value", () => {
    expect(flagValues(argv, "-e")).toContain("ANTHROPIC_API_KEY");
    expect(argv.join(" ")).not.toContain("sk-ant-test");
    expect(formatDockerRun(spec)).not.toContain("sk-ant-test");
    expect(JSON.stringify(printableSpec(spec))).not.toContain("sk-ant-test");
  });

  it("uses the port, image and data folder it is given", () => {
    const custom = renderRunSpec({ dataDir: "/srv/ash-data", port: "8080", image: "ash-dev", hostEnv: {} });
    const options = toCreateOptions(custom);
    expect(options.Image).toBe("ash-dev");
    expect(options.HostConfig.PortBindings).toEqual({ "4100/tcp": [{ HostPort: "8080" }] });
    expect(options.HostConfig.Binds).toContain("/srv/ash-data:/data");
    expect(toDockerRunArgs(custom).at(-1)).toBe("ash-dev");
  });

  it("makes a relative data folder absolute", () => {
    const relativeSpec = renderRunSpec({ dataDir: "data", hostEnv: {} });
    expect(relativeSpec.dataDir).toBe(`${process.cwd()}/data`);
    expect(relativeSpec.binds[0]).toBe(`${process.cwd()}/data:/data`);
  });
});

describe("renderRunSpec: environment", () => {
  it("reports ANTHROPIC_API_KEY as missing when the shell has none, and sets nothing for it", () => {
    const spec = renderRunSpec({ dataDir, hostEnv: {} });
    expect(spec.missingHostEnv).toEqual(["ANTHROPIC_API_KEY"]);
    expect(spec.env).toEqual({});
    expect(toDockerRunArgs(spec)).not.toContain("ANTHROPIC_API_KEY");
  });

  it("passes ANTHROPIC_BASE_URL only when it is set (and not empty)", () => {
    expect(renderRunSpec({ dataDir, hostEnv: { ANTHROPIC_API_KEY: "k" } }).env).not.toHaveProperty("ANTHROPIC_BASE_URL");
    expect(renderRunSpec({ dataDir, hostEnv: { ANTHROPIC_API_KEY: "k", ANTHROPIC_BASE_URL: "" } }).env).not.toHaveProperty("ANTHROPIC_BASE_URL");
    const spec = renderRunSpec({ dataDir, hostEnv: { ANTHROPIC_API_KEY: "k", ANTHROPIC_BASE_URL: "http://127.0.0.1:9999" } });
    expect(spec.env.ANTHROPIC_BASE_URL).toBe("http://127.0.0.1:9999");
    expect(flagValues(toDockerRunArgs(spec), "-e")).toContain("ANTHROPIC_BASE_URL");
  });

  it("merges repeated -e in order, later ones winning, and keeps literal values on the command line", () => {
    const env = ["ASH_MAX_SANDBOXES=50", "FOO=first", "FOO=second", "EMPTY="].map(parseEnvAssignment);
    const spec = renderRunSpec({ dataDir, env, hostEnv: {} });
    expect(spec.env).toEqual({ ASH_MAX_SANDBOXES: "50", FOO: "second", EMPTY: "" });
    expect(flagValues(toDockerRunArgs(spec), "-e")).toEqual(["ASH_MAX_SANDBOXES=50", "FOO=second", "EMPTY="]);
    expect(toCreateOptions(spec).Env).toEqual(["ASH_MAX_SANDBOXES=50", "FOO=second", "EMPTY="]);
  });

  it("reads a bare -e NAME from the shell, like docker run, and leaves it out when unset", () => {
    const spec = renderRunSpec({ dataDir, env: [parseEnvAssignment("MY_TOKEN"), parseEnvAssignment("NOT_SET")], hostEnv: { MY_TOKEN: "t0ken" } });
    expect(spec.env).toEqual({ MY_TOKEN: "t0ken" });
    expect(flagValues(toDockerRunArgs(spec), "-e")).toEqual(["MY_TOKEN"]);
  });

  it("lets -e ANTHROPIC_API_KEY=… replace the shell's key", () => {
    const spec = renderRunSpec({ dataDir, env: [parseEnvAssignment("ANTHROPIC_API_KEY=sk-given")], hostEnv: { ANTHROPIC_API_KEY: "sk-shell" } });
    expect(spec.env.ANTHROPIC_API_KEY).toBe("sk-given");
    expect(spec.envFromHost).toEqual([]);
    expect(flagValues(toDockerRunArgs(spec), "-e")).toEqual(["ANTHROPIC_API_KEY=sk-given"]);
  });

  it("turns --database-url into ASH_DATABASE_URL", () => {
    const url = "postgresql://user:pass@db.internal:5432/ash";
    const spec = renderRunSpec({ dataDir, databaseUrl: url, hostEnv: {} });
    expect(spec.env.ASH_DATABASE_URL).toBe(url);
    expect(flagValues(toDockerRunArgs(spec), "-e")).toContain(`ASH_DATABASE_URL=${url}`);
    // The same value twice is fine; two different ones are a mistake.
    expect(renderRunSpec({ dataDir, databaseUrl: url, env: [parseEnvAssignment(`ASH_DATABASE_URL=${url}`)], hostEnv: {} }).env.ASH_DATABASE_URL).toBe(url);
    expect(() => renderRunSpec({ dataDir, databaseUrl: url, env: [parseEnvAssignment("ASH_DATABASE_URL=postgresql://other/ash")], hostEnv: {} })).toThrow(
      /--database-url and -e ASH_DATABASE_URL disagree/,
    );
    expect(() => renderRunSpec({ dataDir, databaseUrl: " ", hostEnv: {} })).toThrow(/--database-url is empty/);
  });
});

describe("renderRunSpec: bad input is refused with a sentence naming the flag", () => {
  it.each([
    ["0", /--port must be a port number from 1 to 65535/],
    ["65536", /--port must be a port number/],
    ["80x", /--port must be a port number/],
    ["-1", /--port must be a port number/],
  ])("--port %s", (port, message) => {
    expect(() => renderRunSpec({ dataDir, port, hostEnv: {} })).toThrow(message);
  });

  it.each([[""], ["  "], ["has space"], ["--pull"]])("--image %j", (image) => {
    expect(() => renderRunSpec({ dataDir, image, hostEnv: {} })).toThrow(/--image must be an image reference/);
  });

  it("refuses a data folder with a colon, which Docker's bind syntax cannot carry", () => {
    expect(() => renderRunSpec({ dataDir: "/tmp/a:b", hostEnv: {} })).toThrow(/--data-dir cannot contain ":"/);
  });

  it.each([["1BAD=x"], ["=x"], ["WITH SPACE=1"], ["A-B=1"]])("-e %j", (text) => {
    expect(() => parseEnvAssignment(text)).toThrow(/expected KEY=VALUE/);
  });
});

describe("the --dry-run output", () => {
  const spec = renderRunSpec({
    dataDir: "/home/some one/.ash",
    port: 8080,
    env: [parseEnvAssignment("GREETING=it's $HOME")],
    hostEnv: { ANTHROPIC_API_KEY: "sk-secret" },
  });

  it("is a copy-pasteable docker run line, one option per line, with shell quoting", () => {
    const text = formatDockerRun(spec);
    const lines = text.split(" \\\n  ");
    expect(lines[0]).toBe("docker run");
    expect(lines).toContain("--init");
    expect(lines).toContain("--cgroupns=host");
    expect(lines).toContain("-p 8080:4100");
    expect(lines).toContain("-v '/home/some one/.ash:/data'");
    expect(lines).toContain(`-e 'GREETING=it'\\''s $HOME'`);
    expect(lines).toContain("-e ANTHROPIC_API_KEY");
    expect(lines.at(-1)).toBe(spec.image);
  });

  it("says where host values come from instead of printing them", () => {
    expect(printableSpec(spec).env.ANTHROPIC_API_KEY).toBe("<from your environment: $ANTHROPIC_API_KEY>");
    expect(printableSpec(spec).env.GREETING).toBe("it's $HOME");
  });
});

describe("isolationOptions: what the Testcontainers module shares with ash start", () => {
  it("is the run spec's host options and cgroup bind, without the data folder", () => {
    const { hostConfig, binds } = isolationOptions();
    const spec = renderRunSpec({ dataDir, hostEnv: {} });
    expect(hostConfig).toEqual(spec.hostConfig);
    expect(binds).toEqual(["/sys/fs/cgroup:/sys/fs/cgroup:rw"]);
  });
});

describe("collectRepeatedFlag", () => {
  it("finds every spelling of a repeated flag, in order, and stops at --", () => {
    const raw = ["--port", "1", "-e", "A=1", "--env", "B=2", "--env=C=3", "-eD=4", "-e=E=5", "--no-pull", "--", "-e", "F=6"];
    expect(collectRepeatedFlag(raw, "e", "env")).toEqual(["A=1", "B=2", "C=3", "D=4", "E=5"]);
  });

  it("does not mistake other flags for it", () => {
    expect(collectRepeatedFlag(["--email", "x", "--envoy", "y", "-x"], "e", "env")).toEqual([]);
  });

  it("refuses a trailing -e without a value", () => {
    expect(() => collectRepeatedFlag(["-e"], "e", "env")).toThrow(/-e needs a value/);
  });
});

describe("fillTemplate", () => {
  it("puts whole values where a placeholder stands alone and text where it is inside a string", () => {
    const out = fillTemplate({ $comment: "dropped", a: "{{n}}", b: "x{{n}}y", c: ["{{list}}"], d: { e: "{{map}}" } }, { n: 5, list: [1, 2], map: { k: "v" } });
    expect(out).toEqual({ a: 5, b: "x5y", c: [[1, 2]], d: { e: { k: "v" } } });
  });

  it("refuses a placeholder without a value instead of leaving it empty", () => {
    expect(() => fillTemplate({ a: { b: "{{missing}}" } }, {})).toThrow("Template value {{missing}} is missing (at a.b)");
  });

  it("does not share nested values between renders", () => {
    const shared = { k: ["v"] };
    const out = fillTemplate({ a: "{{shared}}" }, { shared }) as unknown as { a: { k: string[] } };
    out.a.k.push("changed");
    expect(shared.k).toEqual(["v"]);
  });
});
