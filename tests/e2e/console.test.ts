/**
 * The web console in a real browser: Debian's Chromium driven by
 * playwright-core, against a real server (real sandboxes) and the fake model.
 * Screenshots of the main pages go to .ash-test/console/.
 *
 * Needs /usr/bin/chromium; skipped without it, and a failure under the full
 * test command (scripts/test.sh).
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chromium, type BrowserContext, type Page, type Request } from "playwright-core";
import { strToU8, zipSync } from "fflate";
import { agentUpload, startTestServer, type TestServer } from "../helpers/server";
import { startFakeModel } from "../fake-model/fake-model.mjs";
import { CHROMIUM, chromiumProblem, skipUnlessReady } from "../helpers/requirements";
import { removeTree } from "../../src/sandbox/remove-tree";

const ROOT = resolve(import.meta.dirname, "../..");
const SHOTS = join(ROOT, ".ash-test", "console");
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const SLOW_ANSWER = `Slow answer ${"word ".repeat(40).trim()}`;

const reason = skipUnlessReady("The web console's browser tests", chromiumProblem());

describe.skipIf(reason)("the web console in Chromium", () => {
  let model: Awaited<ReturnType<typeof startFakeModel>>;
  let server: TestServer;
  let browser: BrowserContext;
  let profile: string;
  let page: Page;
  let otherTenantKey: string;
  let sessionId: string;
  /** Every request the browser made that did not go to the server, and every page error (CSP refusals included). */
  const strayRequests: string[] = [];
  const pageErrors: string[] = [];

  const watch = (p: Page) => {
    p.on("request", (request: Request) => {
      if (!request.url().startsWith(server.url) && !request.url().startsWith("data:") && !request.url().startsWith("blob:")) strayRequests.push(request.url());
    });
    p.on("pageerror", (error) => pageErrors.push(error.message));
    p.on("console", (message) => {
      if (message.type() === "error" && /Content Security Policy|Refused to/i.test(message.text())) pageErrors.push(message.text());
    });
    p.setDefaultTimeout(0);
    return p;
  };
  const signIn = async (p: Page, key: string) => {
    await p.locator("#api-key").fill(key);
    await p.getByRole("button", { name: "Sign in" }).click();
  };
  /** The agent's streamed answers as the page shows them. */
  const answers = () => page.locator('[data-kind="text"] p').allTextContents();
  /** Sends a message from the session page once no turn runs (the send box waits for the last one's end). */
  const send = async (text: string) => {
    await page.locator(".status-running").waitFor({ state: "detached" });
    await page.locator("#message").fill(text);
    await page.locator("#message").press("Enter");
  };
  const shot = (name: string) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });

  beforeAll(async () => {
    // The console as the source is now (npm run build does the same after the server's build).
    execFileSync(process.execPath, [join(ROOT, "node_modules/vite/bin/vite.js"), "build", "--config", "console/vite.config.ts"], { cwd: ROOT, stdio: "ignore" });
    await mkdir(SHOTS, { recursive: true });
    model = await startFakeModel();
    server = await startTestServer({ modelUrl: model.url });
    const deployed = await server.api("/api/agents", { method: "POST", json: agentUpload("console-agent", { "CLAUDE.md": "You are the console's test agent.\n", "notes.txt": "agent notes\n" }) });
    expect(deployed.status).toBe(201);
    const key = await server.api("/api/api-keys", { method: "POST", json: { tenant: "globex", scope: "admin" } });
    expect(key.status).toBe(201);
    otherTenantKey = (await key.json()).key;
    profile = await mkdtemp(join(tmpdir(), "ash-chromium-"));
    browser = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: FLAGS, viewport: { width: 1280, height: 860 } });
    page = watch(browser.pages()[0] ?? (await browser.newPage()));
  });

  afterAll(async () => {
    await browser?.close();
    await server?.dispose();
    await model?.close();
    if (profile) await removeTree(profile);
  });

  it("serves the console without a key, under a strict policy, and never serves a key or a setting", async () => {
    const index = await fetch(`${server.url}/console`);
    expect(index.status).toBe(200);
    expect(index.headers.get("content-security-policy")).toMatch(/default-src 'self'.*script-src 'self'.*frame-ancestors 'none'/);
    expect(index.headers.get("content-security-policy")).not.toMatch(/unsafe-inline|unsafe-eval|https?:/);
    expect(index.headers.get("x-content-type-options")).toBe("nosniff");
    expect(index.headers.get("cache-control")).toBe("no-cache");
    const html = await index.text();
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/); // no inline script
    const asset = /src="(\/console\/assets\/[^"]+\.js)"/.exec(html)?.[1];
    expect(asset).toBeDefined();
    const script = await fetch(`${server.url}${asset}`);
    expect(script.headers.get("cache-control")).toBe("public, max-age=31536000, immutable");
    expect(script.headers.get("content-type")).toMatch(/^text\/javascript/);
    const code = await script.text();
    expect(code).not.toContain(server.apiKey);
    // Paths outside the build, and names the build never makes, are not looked up.
    for (const path of ["/console/../package.json", "/console/%2e%2e/package.json", "/console/config.js", "/console/assets/nope.js"]) {
      expect((await fetch(`${server.url}${path}`)).status, path).toBe(404);
    }
  });

  it("refuses a wrong key with a clear sentence, and signs in with the right one, keeping it in the tab only", async () => {
    await page.goto(`${server.url}/console/`);
    await signIn(page, "wrong-key-0123456789");
    const refusal = page.getByRole("alert");
    await refusal.waitFor();
    expect(await refusal.textContent()).toMatch(/refused this key/);
    expect(await page.locator("nav").count()).toBe(0);

    await signIn(page, server.apiKey);
    await page.getByRole("navigation", { name: "Main" }).waitFor();
    expect(page.url()).not.toContain(server.apiKey);
    expect(await page.evaluate(() => (globalThis as any).sessionStorage.getItem("ash.console.key"))).toBe(server.apiKey);
    expect(await page.evaluate(() => (globalThis as any).localStorage.length)).toBe(0);

    // The policy holds: a script injected inline does not run, and the refusal is reported.
    const reported = pageErrors.length;
    const policyRefusal = page.waitForEvent("console", (message) => /Content Security Policy/.test(message.text()));
    await page.addScriptTag({ content: "globalThis.injected = true;" }).catch(() => undefined);
    await policyRefusal;
    expect(await page.evaluate(() => (globalThis as any).injected)).toBeUndefined();
    expect(pageErrors.slice(reported).join("\n")).toMatch(/Content Security Policy/);
    pageErrors.splice(reported);
  });

  it("shows the overview: health, version, database, isolation, sandboxes", async () => {
    const card = (label: string) => page.locator(`[data-card="${label}"] dd`);
    await card("Health").waitFor();
    expect(await card("Health").textContent()).toBe("ok");
    expect(await card("Database").textContent()).toBe("sqlite");
    expect(await card("Version").textContent()).toMatch(/^\d+\.\d+\.\d+/);
    expect(await card("Isolation").textContent()).toMatch(/^bwrap/);
    expect(await card("Sandboxes live / max").textContent()).toMatch(/^\d+ \/ 50$/);
    expect(await card("Agents").textContent()).toBe("1");
    await shot("overview");
  });

  it("deploys an agent from a folder, refusing a bad name without deploying anything", async () => {
    const folder = join(profile, "dropped-agent");
    await mkdir(join(folder, "docs"), { recursive: true });
    await writeFile(join(folder, "CLAUDE.md"), "You are the agent deployed from the console.\n");
    await writeFile(join(folder, "docs", "notes.txt"), "agent notes\n");
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Agents" }).click();
    await page.locator("#deploy-folder").setInputFiles(folder);
    expect(await page.locator("#deploy-name").inputValue()).toBe("dropped-agent");

    await page.locator("#deploy-name").fill("bad name!");
    await page.getByRole("button", { name: "Deploy" }).click();
    const form = page.getByRole("form", { name: "Deploy an agent" });
    await form.getByRole("alert").waitFor();
    expect(await form.getByRole("alert").textContent()).toBe("An agent name is letters, digits, - and _ (1 to 64).");
    expect((await server.api("/api/agents").then((r) => r.json())).agents.map((a: { name: string }) => a.name)).toEqual(["console-agent"]);

    await page.locator("#deploy-name").fill("dropped-agent");
    await page.getByRole("button", { name: "Deploy" }).click();
    await page.getByRole("status").waitFor();
    expect(await page.getByRole("status").textContent()).toBe("Deployed dropped-agent v1 (2 files).");
    const files = (await server.api("/api/agents/dropped-agent/files").then((r) => r.json())).files.map((f: { path: string }) => f.path).sort();
    expect(files).toEqual(["CLAUDE.md", "docs/notes.txt"]);
  });

  it("deploys an agent from a zip (its one folder unpacked), and says so when a file is not a zip", async () => {
    const form = page.getByRole("form", { name: "Deploy an agent" });
    await page.locator("#deploy-zip").setInputFiles({ name: "broken.zip", mimeType: "application/zip", buffer: Buffer.from("not a zip at all") });
    await form.getByRole("alert").waitFor();
    expect(await form.getByRole("alert").textContent()).toBe("broken.zip is not a zip file this console can read.");

    const zip = zipSync({ "zipped-agent/CLAUDE.md": strToU8("You came in a zip.\n"), "zipped-agent/data/z.txt": strToU8("zipped\n") });
    await page.locator("#deploy-zip").setInputFiles({ name: "zipped-agent.zip", mimeType: "application/zip", buffer: Buffer.from(zip) });
    // The zip is read in the page, after the change event: the name follows once it is.
    await page.waitForFunction(() => ((globalThis as any).document.querySelector("#deploy-name") as { value: string }).value === "zipped-agent");
    await page.getByRole("button", { name: "Deploy" }).click();
    await page.getByText("Deployed zipped-agent v1 (2 files).").waitFor();
    const files = (await server.api("/api/agents/zipped-agent/files").then((r) => r.json())).files.map((f: { path: string }) => f.path).sort();
    expect(files).toEqual(["CLAUDE.md", "data/z.txt"]);
  });

  it("deploys what is dropped on the form: a zip of an agent folder, or loose files under the name given", async () => {
    const form = page.getByRole("form", { name: "Deploy an agent" });
    const drop = async (files: Array<{ name: string; bytes: number[] }>) => {
      const transfer = await page.evaluateHandle((list) => {
        const t = new (globalThis as any).DataTransfer();
        for (const f of list) t.items.add(new (globalThis as any).File([new Uint8Array(f.bytes)], f.name));
        return t;
      }, files);
      await form.dispatchEvent("dragover", { dataTransfer: transfer });
      await form.dispatchEvent("drop", { dataTransfer: transfer });
    };
    await drop([{ name: "zip-dropped.zip", bytes: [...zipSync({ "zip-dropped/CLAUDE.md": strToU8("Dropped as a zip.\n"), "zip-dropped/a.txt": strToU8("a\n") })] }]);
    // The zip's one folder names the agent.
    await page.waitForFunction(() => ((globalThis as any).document.querySelector("#deploy-name") as { value: string }).value === "zip-dropped");
    await form.getByRole("button", { name: "Deploy" }).click();
    await page.getByText("Deployed zip-dropped v1 (2 files).").waitFor();
    expect((await server.api("/api/agents/zip-dropped/files").then((r) => r.json())).files.map((f: { path: string }) => f.path).sort()).toEqual(["CLAUDE.md", "a.txt"]);

    await drop([
      { name: "CLAUDE.md", bytes: [...Buffer.from("Loose files.\n")] },
      { name: "b.txt", bytes: [...Buffer.from("b\n")] },
    ]);
    await page.locator("#deploy-name").fill("loose-dropped");
    await form.getByRole("button", { name: "Deploy" }).click();
    await page.getByText("Deployed loose-dropped v1 (2 files).").waitFor();
    expect((await server.api("/api/agents/loose-dropped/files/CLAUDE.md").then((r) => r.json())).content).toBe("Loose files.\n");
  });

  it("starts a session on the deployed agent, streams the answer and shows the tool call with its input and output", async () => {
    await page.getByRole("link", { name: "dropped-agent" }).click();
    await page.getByText("docs/notes.txt").waitFor();
    await page.getByRole("button", { name: "New session" }).click();
    await page.waitForURL(/#\/sessions\/[0-9a-f-]{36}$/);
    sessionId = decodeURIComponent(page.url().split("/").pop()!);

    await send("#bash echo console-check > made.txt");
    const tool = page.locator('[data-kind="tool"]');
    await tool.locator("pre.output").waitFor();
    expect(await tool.locator("summary").textContent()).toContain("Bash");
    expect(await tool.locator("pre.input").textContent()).toContain("echo console-check > made.txt");
    await page.locator('[data-kind="turn"]').first().waitFor();
    expect(await answers()).toEqual(["Tool result: (Bash completed with no output)"]);
    expect(await page.locator('[data-kind="user"]').allTextContents()).toEqual(["You#bash echo console-check > made.txt"]);
  });

  it("picks a turn up after a reload mid-way, without repeating any text", async () => {
    await send("#slow 3000");
    // Some words are there, the turn is not over.
    await page.locator('[data-kind="text"] p', { hasText: /^Slow answer word word word/ }).waitFor();
    expect(await page.locator('[data-kind="turn"]').count()).toBe(1);
    await shot("session");
    await page.reload();
    await page.locator('[data-kind="turn"]').nth(1).waitFor();
    expect(await answers()).toEqual(["Tool result: (Bash completed with no output)", SLOW_ANSWER]);
    expect(await page.locator('[data-kind="user"] p').allTextContents()).toEqual(["#bash echo console-check > made.txt", "#slow 3000"]);
  });

  it("opens a file of the workspace", async () => {
    await page.getByText("Sandbox log").click();
    await page.locator(".log pre, .log p").first().waitFor();
    await page.getByRole("button", { name: "made.txt", exact: true }).click();
    const preview = page.getByRole("figure", { name: "File made.txt" });
    await preview.waitFor();
    expect(await preview.locator("pre").textContent()).toBe("console-check\n");
  });

  it("pauses and resumes the session", async () => {
    const status = page.locator(".meta .status").first();
    await page.getByRole("button", { name: "Pause" }).click();
    await page.locator(".meta .status", { hasText: /^paused$/ }).waitFor();
    expect((await server.api(`/api/sessions/${sessionId}`).then((r) => r.json())).session.status).toBe("paused");
    await page.getByRole("button", { name: "Resume" }).click();
    await page.locator(".meta .status", { hasText: /^active$/ }).waitFor();
    expect(await status.textContent()).toBe("active");
    // The resumed session still answers, and remembers.
    await send("after resume");
    await page.locator('[data-kind="turn"]').nth(2).waitFor();
    expect((await answers()).at(-1)).toBe("Echo: after resume [turns seen: 3]");
    // The turn's `done` follows its result: then the page says nothing runs any more.
    await page.locator(".status-running").waitFor({ state: "detached" });
    // At phone width everything fits the screen's width (wide tables scroll inside their own box).
    await page.setViewportSize({ width: 390, height: 844 });
    expect(await page.evaluate(() => (globalThis as any).document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    await shot("session-phone");
    await page.setViewportSize({ width: 1280, height: 860 });
  });

  it("lists the session on the sessions page", async () => {
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Sessions" }).click();
    const row = page.locator(`tr[data-session="${sessionId}"]`);
    await row.waitFor();
    expect(await row.locator(".status").textContent()).toBe("active");
    expect(await row.locator("td").nth(2).textContent()).toBe("dropped-agent");
    // What it has done: its completed turns, and tokens (as the API counts them).
    const listed = (await server.api("/api/sessions").then((r) => r.json())).sessions.find((s: any) => s.id === sessionId);
    expect(listed.turns).toBeGreaterThan(0);
    expect(listed.tokens).toBeGreaterThan(0);
    expect(await row.locator('[data-col="turns"]').textContent()).toBe(String(listed.turns));
    expect(Number((await row.locator('[data-col="tokens"]').textContent())!.replace(/[^\d]/g, ""))).toBe(listed.tokens);
    await shot("sessions");
    await page.setViewportSize({ width: 390, height: 844 });
    expect(await page.evaluate(() => (globalThis as any).document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    await page.setViewportSize({ width: 1280, height: 860 });
  });

  it("forks the session, whole or at a turn, into a new one that links back to it", async () => {
    await page.locator(`tr[data-session="${sessionId}"] a`).click();
    await page.getByRole("button", { name: "Fork" }).click();
    await page.waitForURL((url) => /#\/sessions\/[0-9a-f-]{36}$/.test(url.hash) && !url.hash.endsWith(sessionId));
    const forked = page.getByRole("link", { name: sessionId.slice(0, 8) });
    await forked.waitFor();
    // The fork carries the conversation so far.
    await page.locator('[data-kind="turn"]').nth(2).waitFor();
    expect(await answers()).toEqual(["Tool result: (Bash completed with no output)", SLOW_ANSWER, "Echo: after resume [turns seen: 3]"]);
    await forked.click();
    await page.waitForURL((url) => url.hash.endsWith(sessionId));

    // Forked at the first turn's checkpoint: only that turn comes along.
    await page.getByText("Checkpoints").click();
    await page.getByRole("button", { name: "Fork at turn 1" }).click();
    await page.waitForURL((url) => /#\/sessions\/[0-9a-f-]{36}$/.test(url.hash) && !url.hash.endsWith(sessionId));
    await page.getByRole("link", { name: sessionId.slice(0, 8) }).waitFor();
    await page.locator('[data-kind="turn"]').first().waitFor();
    expect(await answers()).toEqual(["Tool result: (Bash completed with no output)"]);
    await page.getByRole("link", { name: sessionId.slice(0, 8) }).click();
    await page.waitForURL((url) => url.hash.endsWith(sessionId));
  });

  it("rewinds the session to a turn after asking, leaving the later turns marked in its checkpoints", async () => {
    const before = (await server.api(`/api/sessions/${sessionId}/checkpoints`).then((r) => r.json())).checkpoints;
    expect(before.length).toBeGreaterThan(1);
    page.once("dialog", (dialog) => void dialog.accept());
    // Opened (the fork above may have left the list open already).
    const openCheckpoints = async () => {
      const details = page.locator("details.checkpoints");
      await details.waitFor({ timeout: 30_000 });
      if ((await details.getAttribute("open")) === null) await details.locator("summary").click();
    };
    await openCheckpoints();
    await page.getByRole("button", { name: "Rewind to turn 1" }).click({ timeout: 30_000 });
    await page.locator(".meta .status", { hasText: /^paused$/ }).waitFor({ timeout: 30_000 });
    const after = (await server.api(`/api/sessions/${sessionId}/checkpoints`).then((r) => r.json())).checkpoints;
    expect(after.filter((c: any) => c.rewound).length).toBe(before.length - 1);
    await openCheckpoints();
    await page.getByText(/turn 2.*\(rewound\)/).first().waitFor({ timeout: 30_000 });
  });

  it("charts the last hour on the overview: tokens, model calls, sessions started", async () => {
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Overview" }).click();
    const caption = (title: string) => page.locator(`[data-chart="${title}"] figcaption`);
    await caption("Model calls").waitFor();
    const calls = Number(/([\d,]+) calls/.exec((await caption("Model calls").textContent())!)![1].replace(/,/g, ""));
    // Every model call the gateway counted for this tenant, as the API reports them.
    const usage = (await server.api("/api/usage?limit=1000").then((r) => r.json())).usage;
    expect(calls).toBe(usage.length);
    expect(calls).toBeGreaterThan(0);
    // The session, its two forks, and none of another tenant's.
    expect(await caption("Sessions started").textContent()).toContain("3 sessions in the last hour");
    expect(await page.locator('[data-chart="Tokens"] rect').count()).toBe(12);
    expect(await page.locator(`[data-card="Tokens today"] dd`).textContent()).not.toBe("0");
    await shot("overview");
  });

  it("shows another tenant's key none of this tenant's sessions", async () => {
    const other = watch(await browser.newPage());
    try {
      await other.goto(`${server.url}/console/#/sessions`);
      await signIn(other, otherTenantKey);
      await other.getByText("No sessions.").waitFor();
      expect(await other.locator("tr[data-session]").count()).toBe(0);
      await other.goto(`${server.url}/console/#/sessions/${sessionId}`);
      await other.reload();
      await other.getByRole("alert").waitFor();
      expect(await other.getByRole("alert").textContent()).toContain(`No session with id "${sessionId}"`);
    } finally {
      await other.close();
    }
  });

  it("interrupts a running turn, downloads a file and the whole workspace, and stops the session", async () => {
    await page.evaluate((id) => ((globalThis as any).location.hash = `#/sessions/${encodeURIComponent(id)}`), sessionId);
    await page.locator("#message").waitFor();
    const errorsBefore = await page.locator('[data-kind="error"]').count();
    await send("#slow 30000");
    await page.locator('[data-kind="text"] p', { hasText: /^Slow answer word/ }).last().waitFor();
    await page.getByRole("button", { name: "Interrupt" }).click();
    await page.locator(".status-running").waitFor({ state: "detached" });
    // Ended early: the page says so, and the answer stopped part way.
    await page.locator('[data-kind="error"]').nth(errorsBefore).waitFor();
    expect((await answers()).at(-1)!.length).toBeLessThan(SLOW_ANSWER.length);
    const events = (await server.api(`/api/sessions/${sessionId}/events?limit=1000`).then((r) => r.json())).events;
    expect(events.filter((e: any) => e.type === "error").at(-1).data).toMatchObject({ code: "interrupted" });

    // One file, as its bytes.
    const [file] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Download made.txt" }).click()]);
    expect(file.suggestedFilename()).toBe("made.txt");
    expect(readFileSync((await file.path())!, "utf8")).toBe("console-check\n");
    // The whole workspace, as a gzipped tar that has the file.
    const [all] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Download all (.tar.gz)" }).click()]);
    expect(all.suggestedFilename()).toBe(`${sessionId}.tar.gz`);
    expect(execFileSync("tar", ["-tzf", (await all.path())!]).toString()).toMatch(/(^|\/)made\.txt$/m);

    await page.getByRole("button", { name: "Stop" }).click();
    await page.locator(".meta .status", { hasText: /^stopped$/ }).waitFor();
    expect((await server.api(`/api/sessions/${sessionId}`).then((r) => r.json())).session.status).toBe("stopped");
  });

  it("signs out, forgetting the key", async () => {
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.locator("#api-key").waitFor();
    expect(await page.evaluate(() => (globalThis as any).sessionStorage.getItem("ash.console.key"))).toBeNull();
    expect(strayRequests).toEqual([]);
    expect(pageErrors).toEqual([]);
  });
});

describe.skipIf(reason)("the web console turned off", () => {
  it("has no /console route with ASH_CONSOLE=false", async () => {
    const server = await startTestServer({ env: { ASH_CONSOLE: "false" } });
    try {
      expect((await fetch(`${server.url}/console`)).status).toBe(404);
      expect((await fetch(`${server.url}/console/index.html`)).status).toBe(404);
      expect((await fetch(`${server.url}/health`)).status).toBe(200);
    } finally {
      await server.dispose();
    }
  });
});
