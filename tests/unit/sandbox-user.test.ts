import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { FALLBACK_SANDBOX_ID, lookupUser, resolveSandboxUser } from "../../src/sandbox/user";

const dir = mkdtempSync(join(tmpdir(), "ash-user-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("sandbox user", () => {
  it("finds an account in a passwd file", () => {
    const passwd = join(dir, "passwd");
    writeFileSync(passwd, "root:x:0:0:root:/root:/bin/bash\nash-sandbox:x:999:998::/home/ash-sandbox:/usr/sbin/nologin\n");
    expect(lookupUser("ash-sandbox", passwd)).toEqual({ uid: 999, gid: 998, name: "ash-sandbox" });
    expect(lookupUser("nobody-here", passwd)).toBeUndefined();
    expect(lookupUser("ash-sandbox", join(dir, "missing"))).toBeUndefined();
  });

  it("takes explicit ids, uses the uid as gid when only a uid is given, and refuses root", () => {
    expect(resolveSandboxUser({ uid: 20001, gid: 20002 })).toMatchObject({ uid: 20001, gid: 20002 });
    expect(resolveSandboxUser({ uid: 20001 })).toMatchObject({ uid: 20001, gid: 20001 });
    expect(() => resolveSandboxUser({ uid: 0 })).toThrow(/root/);
    expect(() => resolveSandboxUser({ uid: 1000, gid: 0 })).toThrow(/root/);
    expect(() => resolveSandboxUser({ uid: -5 })).toThrow(/positive integer/);
  });

  it("falls back to 10001 when no ash-sandbox account exists", () => {
    const user = resolveSandboxUser();
    if (lookupUser("ash-sandbox")) expect(user.name).toBe("ash-sandbox");
    else expect(user).toEqual({ uid: FALLBACK_SANDBOX_ID, gid: FALLBACK_SANDBOX_ID, name: undefined });
  });
});
