// What the end-to-end and PostgreSQL suites need from the machine. A suite
// whose needs are missing is skipped with the reason, except under the full
// test command (scripts/test.sh sets ASH_TEST_REQUIRE_ALL=1), which sets
// everything up: there a missing need is a failure, never a silent skip.
import { execFileSync } from "node:child_process";

/** Returns `problem` for `describe.skipIf`, after saying it; throws instead when everything is required. */
export function skipUnlessReady(suite: string, problem: string | undefined): string | undefined {
  if (!problem) return undefined;
  if (process.env.ASH_TEST_REQUIRE_ALL === "1") throw new Error(`${suite} cannot run: ${problem}.`);
  console.warn(`${suite} skipped: ${problem}.`);
  return problem;
}

/** Why the Docker suites cannot run here, or undefined: an engine that answers and the image named by ASH_TEST_IMAGE. */
export function dockerImageProblem(image = process.env.ASH_TEST_IMAGE): string | undefined {
  try {
    execFileSync("docker", ["info"], { stdio: "ignore", timeout: 20_000 });
  } catch {
    return "no Docker engine answers `docker info` (start one with infra/docker-engine.sh)";
  }
  if (!image) return "ASH_TEST_IMAGE is not set (build the image with infra/build-image.sh and set it to the tag)";
  try {
    execFileSync("docker", ["image", "inspect", image], { stdio: "ignore" });
  } catch {
    return `the image ASH_TEST_IMAGE=${image} does not exist locally`;
  }
  return undefined;
}

/**
 * Why the host-side sandbox suites cannot run here, or undefined: they need
 * root and a bubblewrap that really builds namespaces (infra/host-packages.sh
 * installs it). `isolation` is what describeSandboxHost() found.
 */
export function sandboxProblem(isolation: { isolation: string; detail: string }): string | undefined {
  if (process.getuid?.() !== 0) return "they need root (bubblewrap mounts, setpriv, cgroups)";
  if (isolation.isolation !== "bwrap") return `bubblewrap is not usable: ${isolation.detail} (infra/host-packages.sh test installs it)`;
  return undefined;
}

/** Why the cgroup v1 suites cannot run here, or undefined: root and a host whose limits are cgroup v1. */
export function cgroup1Problem(host: { limitMode: string; limitDetail?: string }): string | undefined {
  if (process.getuid?.() !== 0) return "they need root to make cgroups";
  if (host.limitMode !== "cgroup1") return `this host's limit mode is ${host.limitMode}${host.limitDetail ? `: ${host.limitDetail}` : ""}`;
  return undefined;
}

/** Debian's Chromium, which the web console's browser tests drive (infra/host-packages.sh test installs it). */
export const CHROMIUM = "/usr/bin/chromium";

/** Why the browser suites cannot run here, or undefined: a Chromium that answers `--version`. */
export function chromiumProblem(path = CHROMIUM): string | undefined {
  try {
    execFileSync(path, ["--version"], { stdio: "ignore", timeout: 60_000 });
  } catch {
    return `no working Chromium at ${path} (infra/host-packages.sh test installs it)`;
  }
  return undefined;
}

/** Debian's HAProxy, the load balancer of the multi-server tests (infra/host-packages.sh test installs it). */
export const HAPROXY = "/usr/sbin/haproxy";

/** Why the load-balanced suites cannot run here, or undefined: an HAProxy that answers `-v`. */
export function haproxyProblem(path = HAPROXY): string | undefined {
  try {
    execFileSync(path, ["-v"], { stdio: "ignore", timeout: 20_000 });
  } catch {
    return `no working HAProxy at ${path} (infra/host-packages.sh test installs it)`;
  }
  return undefined;
}
