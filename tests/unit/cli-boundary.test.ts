import { describe, expect, it } from "vitest";
import { main } from "../../src/cli/app";
import { ashInProcess } from "../helpers/cli";

// Every leaf command of the tree, read from the tree itself, so a new command is covered too.
async function leafCommands(): Promise<string[][]> {
  const leaves: string[][] = [];
  const walk = async (cmd: any, path: string[]): Promise<void> => {
    const subs = typeof cmd.subCommands === "function" ? await cmd.subCommands() : cmd.subCommands;
    if (!subs) return void leaves.push(path);
    for (const [name, sub] of Object.entries(subs)) {
      await walk(typeof sub === "function" ? await (sub as () => Promise<unknown>)() : sub, [...path, name]);
    }
  };
  await walk(main, []);
  return leaves;
}

describe("the CLI's one error boundary", () => {
  it("refuses an unknown option for every command with exit 2 and one sentence, before doing anything", async () => {
    const leaves = await leafCommands();
    expect(leaves.length).toBeGreaterThanOrEqual(20);
    for (const path of leaves) {
      // No server and no Docker are reachable here: only the flag check can answer.
      const run = await ashInProcess([...path, "--bogus-flag"], { env: { ASH_SERVER_URL: "http://127.0.0.1:9", DOCKER_HOST: "unix:///nonexistent.sock" } });
      expect(run.code, path.join(" ")).toBe(2);
      expect(run.stdout, path.join(" ")).toBe("");
      expect(run.stderr.trim(), path.join(" ")).toBe(`Unknown option --bogus-flag for ash ${path.join(" ")}; see \`ash ${path.join(" ")} --help\`.`);
    }
  });

  it("catches the typo in `ash session send --jsn`", async () => {
    const run = await ashInProcess(["session", "send", "some-id", "hello", "--jsn"]);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain("Unknown option --jsn for ash session send");
  });

  it("answers an unknown command and a missing one with usage and exit 2, help and version with 0", async () => {
    const unknown = await ashInProcess(["sesion"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('Unknown command "sesion" for ash; see `ash --help`.');
    const missing = await ashInProcess(["session"]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("ash session needs a command");
    const help = await ashInProcess(["session", "send", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/USAGE/);
    expect(help.stdout).toMatch(/session send/);
    const version = await ashInProcess(["--version"]);
    expect(version.code).toBe(0);
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });

  it("gives exit 2 for bad input of a server command, and 1 when no server answers", async () => {
    const badValue = await ashInProcess(["session", "list", "--status", "sleeping"], { env: { ASH_SERVER_URL: "http://127.0.0.1:9" } });
    expect(badValue.code).toBe(2);
    expect(badValue.stderr).toContain('"sleeping" is not a session status');
    const noServer = await ashInProcess(["agent", "list"], { env: { ASH_SERVER_URL: "http://127.0.0.1:9", ASH_API_KEY: "k" } });
    expect(noServer.code).toBe(1);
    expect(noServer.stderr.trim()).toBe("No Ash server answers at http://127.0.0.1:9; start it with `ash start`.");
  });
});
