import { mkdtempSync, realpathSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { bwrapOptions, setprivArgs } from "../../src/sandbox/isolation";

const plan = {
  workspaceDir: "/srv/ash-data/sandboxes/s1/workspace",
  homeDir: "/srv/ash-data/sandboxes/s1/home",
  readOnlyPaths: [],
  cwd: "/srv/ash-data/sandboxes/s1/workspace",
  tmpSizeBytes: 1048576,
};

/** [option, source, dest] triples of bind mounts in an argv. */
function binds(args: string[]) {
  const out: Array<[string, string, string]> = [];
  args.forEach((arg, i) => {
    if (arg === "--bind" || arg === "--ro-bind") out.push([arg, args[i + 1]!, args[i + 2]!]);
  });
  return out;
}

describe("bwrap argv", () => {
  it("shows only this sandbox's workspace and home read-write, and never the data dir itself", () => {
    const args = bwrapOptions(plan);
    const writable = binds(args).filter(([option]) => option === "--bind");
    expect(writable).toEqual([
      ["--bind", plan.workspaceDir, plan.workspaceDir],
      ["--bind", plan.homeDir, plan.homeDir],
    ]);
    expect(binds(args).some(([, source]) => source === "/srv/ash-data" || source === "/srv/ash-data/sandboxes")).toBe(false);
    for (const [, source] of binds(args).filter(([option]) => option === "--ro-bind")) {
      expect(["/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"]).toContain(source);
    }
  });

  it("uses fresh namespaces, a private /tmp of the given size, and starts in the workspace", () => {
    const args = bwrapOptions(plan).join(" ");
    for (const flag of ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent", "--new-session", "--proc /proc", "--dev /dev"]) {
      expect(args).toContain(flag);
    }
    expect(args).toContain("--perms 1777 --size 1048576 --tmpfs /tmp");
    expect(args).toContain(`--chdir ${plan.workspaceDir}`);
    expect(args).not.toContain("--as-pid-1"); // bwrap's own pid 1 reaps zombies
  });

  it("creates the skeleton parents of the workspace 0755 before binding it", () => {
    const args = bwrapOptions(plan).join(" ");
    expect(args).toContain("--perms 0755 --dir /srv --perms 0755 --dir /srv/ash-data --perms 0755 --dir /srv/ash-data/sandboxes");
    expect(args.indexOf("--dir /srv/ash-data/sandboxes/s1")).toBeLessThan(args.indexOf(`--bind ${plan.workspaceDir}`));
  });

  it("adds extra read-only folders once, skips missing ones and those inside system mounts", () => {
    const extra = mkdtempSync(join(tmpdir(), "ash-ro-"));
    try {
      const args = bwrapOptions({ ...plan, readOnlyPaths: [extra, `${extra}/`, "/usr/lib", "/usr/bin", `${extra}-missing`] });
      const readOnly = binds(args).filter(([option]) => option === "--ro-bind").map(([, source]) => source);
      expect(readOnly.filter((source) => source === realpathSync(extra))).toHaveLength(1);
      expect(readOnly.filter((source) => source.startsWith("/usr/") || source.endsWith("-missing"))).toEqual([]);
      expect(() => bwrapOptions({ ...plan, readOnlyPaths: ["relative/dir"] })).toThrow(/absolute/);
    } finally {
      rmSync(extra, { recursive: true, force: true });
    }
  });

  it("drops every capability when switching user", () => {
    expect(setprivArgs("/usr/bin/setpriv", { uid: 10001, gid: 10002 })).toEqual([
      "/usr/bin/setpriv",
      "--reuid=10001",
      "--regid=10002",
      "--clear-groups",
      "--inh-caps=-all",
      "--bounding-set=-all",
      "--no-new-privs",
      "--pdeathsig=SIGKILL",
    ]);
  });
});
