import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { H3 } from "h3";

/**
 * The web console: the static files `npm run build` writes to `dist/console`,
 * served as they are. They hold no key and no setting; the browser signs in
 * with an API key of its own and calls `/api` like any client.
 */

/** No inline script or style, nothing from elsewhere, no framing. */
export const CONSOLE_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data: blob:",
  "connect-src 'self'",
  "font-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

const TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
  svg: "image/svg+xml",
  png: "image/png",
  ico: "image/x-icon",
  json: "application/json; charset=utf-8",
};

/** A file name the build makes: plain segments, a known extension; nothing else is looked up on disk. */
const SAFE_PATH = /^(?:[A-Za-z0-9_-][A-Za-z0-9._-]*\/)*[A-Za-z0-9_-][A-Za-z0-9._-]*\.(html|js|css|svg|png|ico|json)$/;

/** `<package root>/dist/console`, found from this module whether it runs from src/ or from dist/. */
export function consoleDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, "package.json"))) return join(dir, "dist", "console");
    dir = dirname(dir);
  }
  return join(dirname(fileURLToPath(import.meta.url)), "console");
}

export function registerConsole(app: H3, options: { dir: string; onMissing?: (dir: string) => void }): void {
  // The build never changes while the server runs: each file is read once.
  const cache = new Map<string, Promise<Uint8Array | undefined>>();
  const read = (path: string) => {
    let hit = cache.get(path);
    if (!hit) {
      hit = readFile(join(options.dir, path)).then(
        (bytes) => new Uint8Array(bytes),
        () => undefined,
      );
      cache.set(path, hit);
    }
    return hit;
  };
  let warned = false;

  const serve = async (path: string): Promise<Response> => {
    const match = SAFE_PATH.exec(path);
    const bytes = match ? await read(path) : undefined;
    if (!bytes) {
      if (path === "index.html" && !warned) {
        warned = true;
        options.onMissing?.(options.dir);
      }
      const text = path === "index.html" ? "The console is not built: run `npm run build`.\n" : "Not found.\n";
      return new Response(text, { status: path === "index.html" ? 503 : 404, headers: { ...SECURITY, "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" } });
    }
    // Vite names assets by their content hash: a changed file is a new name.
    const immutable = path.startsWith("assets/");
    return new Response(bytes, {
      headers: {
        ...SECURITY,
        "content-type": TYPES[match![1]],
        "cache-control": immutable ? "public, max-age=31536000, immutable" : "no-cache",
      },
    });
  };

  app.get("/console", () => serve("index.html"));
  app.get("/console/**", (event) => {
    const rest = event.url.pathname.slice("/console/".length);
    return serve(rest === "" ? "index.html" : rest);
  });
}

const SECURITY = {
  "content-security-policy": CONSOLE_CSP,
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
};
