import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

// The web console, built into the package next to the server (dist/console),
// which serves it at /console. Everything is bundled: no request leaves the server.
export default defineConfig({
  root: fileURLToPath(new URL(".", import.meta.url)),
  base: "/console/",
  publicDir: false,
  logLevel: "warn",
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: {
    outDir: fileURLToPath(new URL("../dist/console", import.meta.url)),
    emptyOutDir: true,
    // The preload polyfill would be an inline script, which the console's CSP refuses.
    modulePreload: { polyfill: false },
    // No data: URLs for small assets: every file is a file, under the same CSP.
    assetsInlineLimit: 0,
    sourcemap: false,
    target: "es2022",
  },
});
