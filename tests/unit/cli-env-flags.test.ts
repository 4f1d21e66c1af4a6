import { describe, expect, it } from "vitest";
import { parseArgs } from "citty";
import { parseEnvAssignment } from "../../src/agents/local-folder";
import deploy, { envFromFlags, repeatedFlag } from "../../src/cli/commands/deploy";

describe("repeated -e flags", () => {
  it("citty alone keeps only the last value, which is why deploy reads the raw arguments", async () => {
    const args = parseArgs(["./agent", "-e", "A=1", "-e", "B=2"], (await (deploy.args as any)) ?? {});
    expect(args.env).toBe("B=2");
    expect(args.dir).toBe("./agent");
  });

  it("collects every form of the flag, in order, and stops at --", () => {
    const raw = ["./agent", "-e", "A=1", "--env", "B=2", "--env=C=3", "-eD=4", "--name", "x", "--", "-e", "IGNORED=1"];
    expect(repeatedFlag(raw, "env", "e")).toEqual(["A=1", "B=2", "C=3", "D=4"]);
  });

  it("turns the values into variables, a later one winning, values kept verbatim", () => {
    expect(envFromFlags(["-e", "A=1", "-e", "TOKEN=a b=c", "-e", "A=2", "-e", "EMPTY="])).toEqual({
      A: "2",
      TOKEN: "a b=c",
      EMPTY: "",
    });
  });

  it("says what is wrong with a bad flag", () => {
    expect(() => envFromFlags(["-e"])).toThrow("-e needs a value after it.");
    expect(() => envFromFlags(["-e", "NOVALUE"])).toThrow('"NOVALUE" is not KEY=VALUE; write it like -e API_TOKEN=abc123.');
    expect(() => envFromFlags(["-e", "=x"])).toThrow("is not KEY=VALUE");
    expect(() => parseEnvAssignment("2X=1")).toThrow('"2X" is not a valid variable name');
  });
});
