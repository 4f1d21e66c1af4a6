import { lookup } from "node:dns/promises";
import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from "node:http";
import { BlockList, connect, isIP, type Socket } from "node:net";

/**
 * The egress proxies a sandbox reaches over its unix sockets (egress-net.ts):
 * an HTTP proxy (CONNECT for TLS, absolute-URI requests for plain HTTP) and
 * a SOCKS5 proxy for any other TCP. Both decide by host name against an
 * allowlist, resolve the name themselves, check the resolved address, and
 * connect to exactly that address, so a name cannot be re-pointed (DNS
 * rebinding) between the check and the connection.
 */
export interface EgressPolicy {
  /** Host names: exact (`api.example.com`), `*.suffix` (any name below it), optionally `:port`. */
  allow: string[];
  /** Allow names that resolve to private ranges (RFC 1918, ULA, CGNAT). */
  allowPrivate: boolean;
  /**
   * Test-only fixed answers (name -> address) used instead of DNS; the
   * operator chose these addresses, so they skip the address check.
   */
  hosts?: Record<string, string>;
}

export interface EgressAttempt {
  host: string;
  port: number;
  protocol: "http" | "connect" | "socks5";
}

export interface EgressHooks {
  /** A connection was refused (not allowlisted, or resolving to a forbidden address). */
  onDenied?(attempt: EgressAttempt & { reason: string }): void;
  onAllowed?(attempt: EgressAttempt & { address: string }): void;
}

export type EgressDecision = { allowed: true; address: string } | { allowed: false; reason: string };

// Never reachable by name, whatever the allowlist says: the host itself, link-local (instance
// metadata), multicast, broadcast, and the cloud metadata addresses outside link-local.
const FORBIDDEN = new BlockList();
FORBIDDEN.addSubnet("0.0.0.0", 8, "ipv4");
FORBIDDEN.addSubnet("127.0.0.0", 8, "ipv4");
FORBIDDEN.addSubnet("169.254.0.0", 16, "ipv4");
FORBIDDEN.addSubnet("224.0.0.0", 4, "ipv4");
FORBIDDEN.addSubnet("240.0.0.0", 4, "ipv4");
FORBIDDEN.addAddress("100.100.100.200", "ipv4");
FORBIDDEN.addAddress("168.63.129.16", "ipv4");
FORBIDDEN.addAddress("::", "ipv6");
FORBIDDEN.addAddress("::1", "ipv6");
FORBIDDEN.addSubnet("fe80::", 10, "ipv6");
FORBIDDEN.addSubnet("ff00::", 8, "ipv6");
FORBIDDEN.addSubnet("fd00:ec2::", 32, "ipv6");

const PRIVATE = new BlockList();
PRIVATE.addSubnet("10.0.0.0", 8, "ipv4");
PRIVATE.addSubnet("172.16.0.0", 12, "ipv4");
PRIVATE.addSubnet("192.168.0.0", 16, "ipv4");
PRIVATE.addSubnet("100.64.0.0", 10, "ipv4");
PRIVATE.addSubnet("198.18.0.0", 15, "ipv4");
PRIVATE.addSubnet("fc00::", 7, "ipv6");

/** The IPv4 address an IPv6 one carries (::ffff:a.b.c.d), or the address itself. */
function unwrap(address: string): { address: string; family: "ipv4" | "ipv6" } {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return { address: mapped[1]!, family: "ipv4" };
  return { address, family: isIP(address) === 6 ? "ipv6" : "ipv4" };
}

/** Why an address may not be dialed, or undefined. */
export function addressProblem(address: string, allowPrivate: boolean): string | undefined {
  const { address: plain, family } = unwrap(address);
  if (FORBIDDEN.check(plain, family)) return `${address} is a loopback, link-local, multicast or metadata address`;
  if (!allowPrivate && PRIVATE.check(plain, family)) return `${address} is a private address (set ASH_EGRESS_ALLOW_PRIVATE=true to allow those)`;
  return undefined;
}

/** Normalizes a host as clients send it: lower case, no brackets, no trailing dot. */
export function normalizeHost(host: string): string {
  return host.trim().toLowerCase().replace(/^\[(.*)\]$/, "$1").replace(/\.$/, "");
}

/** True when `host:port` matches an allowlist entry. */
export function hostAllowed(allow: string[], host: string, port: number): boolean {
  const name = normalizeHost(host);
  for (const raw of allow) {
    const entry = raw.trim().toLowerCase();
    if (!entry) continue;
    const colons = (entry.match(/:/g) ?? []).length;
    const { host: pattern, port: entryPort } = entry.startsWith("[") || colons === 1 ? splitHostPort(entry, 0) : { host: entry, port: 0 };
    if (entryPort !== 0 && entryPort !== port) continue;
    const bare = normalizeHost(pattern);
    if (bare.startsWith("*.")) {
      if (name.endsWith(bare.slice(1)) && name.length > bare.length - 1) return true;
    } else if (bare === name) return true;
  }
  return false;
}

/** Decides one destination: allowlisted name, then its resolved address. */
export async function decideEgress(policy: EgressPolicy, host: string, port: number): Promise<EgressDecision> {
  const name = normalizeHost(host);
  if (!Number.isInteger(port) || port < 1 || port > 65535) return { allowed: false, reason: `port ${port} is not valid` };
  if (!hostAllowed(policy.allow, name, port)) return { allowed: false, reason: `${name} is not in this agent's egress allowlist` };
  const fixed = policy.hosts?.[name];
  if (fixed) return { allowed: true, address: fixed };
  let candidates: string[];
  if (isIP(name)) candidates = [name];
  else {
    try {
      candidates = (await lookup(name, { all: true, verbatim: true })).map((a) => a.address);
    } catch (error) {
      return { allowed: false, reason: `${name} could not be resolved (${(error as NodeJS.ErrnoException).code ?? "error"})` };
    }
  }
  const problems: string[] = [];
  for (const address of candidates) {
    const problem = addressProblem(address, policy.allowPrivate);
    if (!problem) return { allowed: true, address };
    problems.push(problem);
  }
  return { allowed: false, reason: `${name} resolves only to addresses a sandbox may not reach: ${problems.join("; ")}` };
}

function denialText(attempt: EgressAttempt, reason: string): string {
  return `Ash egress proxy: the connection to ${attempt.host}:${attempt.port} was refused because ${reason}. Add the host to the agent's egress allowlist (ash.json "egress", or "egress" on deploy) to allow it.\n`;
}

/** Splits `host:port` (with [v6]:port), defaulting the port. */
function splitHostPort(value: string, fallbackPort: number): { host: string; port: number } {
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(value);
  if (v6) return { host: v6[1]!, port: v6[2] ? Number(v6[2]) : fallbackPort };
  const index = value.lastIndexOf(":");
  if (index > 0 && value.indexOf(":") === index) return { host: value.slice(0, index), port: Number(value.slice(index + 1)) };
  return { host: value, port: fallbackPort };
}

function pipeBoth(a: Socket, b: Socket): void {
  a.pipe(b);
  b.pipe(a);
  const end = () => {
    a.destroy();
    b.destroy();
  };
  a.on("error", end);
  b.on("error", end);
  a.on("close", end);
  b.on("close", end);
}

const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-authorization", "proxy-connection", "proxy-authenticate", "te", "trailer", "transfer-encoding", "upgrade"]);

/** The HTTP proxy: hand it each accepted connection. */
export function createHttpProxy(policy: () => EgressPolicy, hooks: EgressHooks = {}): (socket: Socket) => void {
  const server = createServer();
  server.on("connect", (req: IncomingMessage, client: Socket, head: Buffer) => {
    client.on("error", () => undefined);
    const { host, port } = splitHostPort(req.url ?? "", 443);
    const attempt: EgressAttempt = { host: normalizeHost(host), port, protocol: "connect" };
    void decideEgress(policy(), host, port).then((decision) => {
      if (!decision.allowed) {
        hooks.onDenied?.({ ...attempt, reason: decision.reason });
        const text = denialText(attempt, decision.reason);
        client.end(`HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`);
        return;
      }
      hooks.onAllowed?.({ ...attempt, address: decision.address });
      const upstream = connect({ host: decision.address, port, noDelay: true });
      upstream.once("connect", () => {
        client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
        if (head.length) upstream.write(head);
        pipeBoth(client, upstream);
      });
      let connected = false;
      upstream.once("connect", () => (connected = true));
      upstream.once("error", (error) => {
        if (!connected) client.end(`HTTP/1.1 502 Bad Gateway\r\nconnection: close\r\n\r\nAsh egress proxy: ${attempt.host}:${port} could not be reached (${(error as NodeJS.ErrnoException).code ?? error.message}).\n`);
      });
    });
  });
  server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    let target: URL;
    try {
      target = new URL(req.url ?? "");
      if (target.protocol !== "http:") throw new Error("not http");
    } catch {
      res.writeHead(400, { "content-type": "text/plain; charset=utf-8" });
      res.end("Ash egress proxy: send absolute http:// URLs, or CONNECT for https.\n");
      return;
    }
    const port = target.port ? Number(target.port) : 80;
    const attempt: EgressAttempt = { host: normalizeHost(target.hostname), port, protocol: "http" };
    void decideEgress(policy(), target.hostname, port).then((decision) => {
      if (!decision.allowed) {
        hooks.onDenied?.({ ...attempt, reason: decision.reason });
        res.writeHead(403, { "content-type": "text/plain; charset=utf-8", connection: "close" });
        res.end(denialText(attempt, decision.reason));
        return;
      }
      hooks.onAllowed?.({ ...attempt, address: decision.address });
      const headers: Record<string, string | string[]> = {};
      for (const [name, value] of Object.entries(req.headers)) if (value !== undefined && !HOP_BY_HOP.has(name)) headers[name] = value;
      headers.host = target.host;
      const upstream = httpRequest({ host: decision.address, port, method: req.method, path: target.pathname + target.search, headers, setHost: false }, (answer) => {
        const out: Record<string, string | string[]> = {};
        for (const [name, value] of Object.entries(answer.headers)) if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value;
        res.writeHead(answer.statusCode ?? 502, out);
        answer.pipe(res);
      });
      upstream.on("error", (error) => {
        if (!res.headersSent) {
          res.writeHead(502, { "content-type": "text/plain; charset=utf-8" });
          res.end(`Ash egress proxy: ${attempt.host}:${port} could not be reached (${(error as NodeJS.ErrnoException).code ?? error.message}).\n`);
        } else res.destroy();
      });
      req.pipe(upstream);
    });
  });
  server.on("clientError", (_error, socket) => socket.destroy());
  return (socket) => server.emit("connection", socket);
}

const SOCKS_DENIED = 0x02;
const SOCKS_UNREACHABLE = 0x04;
const SOCKS_REFUSED = 0x05;
const SOCKS_COMMAND_UNSUPPORTED = 0x07;
const SOCKS_ADDRESS_UNSUPPORTED = 0x08;

/** A SOCKS5 proxy (no authentication, CONNECT only): hand it each accepted connection. */
export function createSocksProxy(policy: () => EgressPolicy, hooks: EgressHooks = {}): (socket: Socket) => void {
  return (client) => {
    client.on("error", () => undefined);
    let buffer = Buffer.alloc(0);
    let stage: "greeting" | "request" | "done" = "greeting";
    const reply = (code: number) => client.end(Buffer.from([0x05, code, 0x00, 0x01, 0, 0, 0, 0, 0, 0]));
    const onData = (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      if (buffer.length > 600) return client.destroy();
      if (stage === "greeting") {
        if (buffer.length < 2) return;
        if (buffer[0] !== 0x05) return client.destroy();
        const count = buffer[1]!;
        if (buffer.length < 2 + count) return;
        const methods = buffer.subarray(2, 2 + count);
        buffer = buffer.subarray(2 + count);
        if (!methods.includes(0x00)) return void client.end(Buffer.from([0x05, 0xff]));
        client.write(Buffer.from([0x05, 0x00]));
        stage = "request";
      }
      if (stage === "request") {
        if (buffer.length < 5) return;
        const [version, command, , type] = buffer;
        let host: string;
        let offset: number;
        if (type === 0x01) {
          if (buffer.length < 10) return;
          host = [...buffer.subarray(4, 8)].join(".");
          offset = 8;
        } else if (type === 0x03) {
          const length = buffer[4]!;
          if (buffer.length < 5 + length + 2) return;
          host = buffer.subarray(5, 5 + length).toString("latin1");
          offset = 5 + length;
        } else if (type === 0x04) {
          if (buffer.length < 22) return;
          const parts: string[] = [];
          for (let i = 0; i < 16; i += 2) parts.push(buffer.readUInt16BE(4 + i).toString(16));
          host = parts.join(":");
          offset = 20;
        } else return reply(SOCKS_ADDRESS_UNSUPPORTED);
        if (version !== 0x05) return client.destroy();
        const port = buffer.readUInt16BE(offset);
        const rest = buffer.subarray(offset + 2);
        stage = "done";
        client.off("data", onData);
        client.pause();
        if (command !== 0x01) return reply(SOCKS_COMMAND_UNSUPPORTED);
        const attempt: EgressAttempt = { host: normalizeHost(host), port, protocol: "socks5" };
        void decideEgress(policy(), host, port).then((decision) => {
          if (!decision.allowed) {
            hooks.onDenied?.({ ...attempt, reason: decision.reason });
            return reply(SOCKS_DENIED);
          }
          hooks.onAllowed?.({ ...attempt, address: decision.address });
          const upstream = connect({ host: decision.address, port, noDelay: true });
          let connected = false;
          upstream.once("connect", () => {
            connected = true;
            client.write(Buffer.from([0x05, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0]));
            if (rest.length) upstream.write(rest);
            pipeBoth(client, upstream);
            client.resume();
          });
          upstream.once("error", (error) => {
            if (!connected) reply((error as NodeJS.ErrnoException).code === "ECONNREFUSED" ? SOCKS_REFUSED : SOCKS_UNREACHABLE);
          });
        });
      }
    };
    client.on("data", onData);
  };
}

/**
 * A fixed TCP forward to one destination the operator configured (the
 * OpenTelemetry collector a sandbox's CLI exports to): no allowlist, since
 * the sandbox cannot choose where it goes.
 */
export function createForward(host: string, port: number): (socket: Socket) => void {
  return (client) => {
    client.on("error", () => undefined);
    const upstream = connect({ host, port, noDelay: true });
    upstream.on("error", () => client.destroy());
    pipeBoth(client, upstream);
  };
}
