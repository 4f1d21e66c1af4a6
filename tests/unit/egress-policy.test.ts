import { describe, expect, it } from "vitest";
import { addressProblem, decideEgress, hostAllowed } from "../../src/sandbox/egress-proxy";

describe("egress allowlist", () => {
  it("matches exact names, *.suffix below a name only, and an optional port", () => {
    const allow = ["api.example.com", "*.pkg.dev", "files.test:8443"];
    expect(hostAllowed(allow, "api.example.com", 443)).toBe(true);
    expect(hostAllowed(allow, "API.Example.com.", 443)).toBe(true);
    expect(hostAllowed(allow, "x.api.example.com", 443)).toBe(false);
    expect(hostAllowed(allow, "a.pkg.dev", 443)).toBe(true);
    expect(hostAllowed(allow, "a.b.pkg.dev", 80)).toBe(true);
    expect(hostAllowed(allow, "pkg.dev", 443)).toBe(false);
    expect(hostAllowed(allow, "evilpkg.dev", 443)).toBe(false);
    expect(hostAllowed(allow, "files.test", 8443)).toBe(true);
    expect(hostAllowed(allow, "files.test", 22)).toBe(false);
    expect(hostAllowed([], "anything.com", 443)).toBe(false);
  });

  it("refuses loopback, link-local, metadata and (unless allowed) private addresses, also in IPv6 forms", () => {
    for (const address of ["127.0.0.1", "127.8.9.10", "::1", "169.254.169.254", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "0.0.0.0", "fe80::1", "224.0.0.1", "100.100.100.200"]) {
      expect(addressProblem(address, true), address).toBeDefined();
    }
    for (const address of ["10.1.2.3", "172.16.0.1", "192.168.1.1", "fd12::1", "100.64.0.1"]) {
      expect(addressProblem(address, false), address).toMatch(/private/);
      expect(addressProblem(address, true), address).toBeUndefined();
    }
    expect(addressProblem("93.184.216.34", false)).toBeUndefined();
  });

  it("decides by name first, then by the address it will connect to", async () => {
    const policy = { allow: ["ok.test", "127.0.0.1", "localhost"], allowPrivate: false, hosts: { "ok.test": "127.0.0.1" } };
    expect(await decideEgress(policy, "ok.test", 80)).toEqual({ allowed: true, address: "127.0.0.1" });
    expect(await decideEgress(policy, "other.test", 80)).toMatchObject({ allowed: false, reason: expect.stringContaining("not in this agent's egress allowlist") });
    // An allowlisted literal or name that resolves to loopback is still refused.
    expect(await decideEgress(policy, "127.0.0.1", 80)).toMatchObject({ allowed: false, reason: expect.stringContaining("loopback") });
    expect(await decideEgress(policy, "localhost", 80)).toMatchObject({ allowed: false });
    expect(await decideEgress(policy, "ok.test", 0)).toMatchObject({ allowed: false });
  });
});
