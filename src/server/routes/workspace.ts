import { getRouterParam, type H3 } from "h3";
import { z } from "zod";
import { Readable } from "node:stream";
import { createGzip } from "node:zlib";
import type { AppContext } from "../context";
import { readJsonBody } from "../body";
import { validate } from "../validate";
import { gone, notFound } from "../errors";
import { checkAgentPath } from "../../agents/agent-files";
import { listWorkspaceFiles, readWorkspaceFile } from "../../sessions/workspace-files";
import type { WorkspaceIo } from "../../sandbox/workspace-io";
import { id } from "./sessions";

const execSchema = z
  .object({
    command: z.string().min(1, "must not be empty").max(100_000),
    timeout: z.number().int().min(100).max(3_600_000).optional(),
  })
  .strict();

export function registerWorkspace(app: H3, ctx: AppContext): void {
  // Files are read from the live sandbox when there is one, else from the snapshot.
  app.get("/api/sessions/:id/files", async (event) => ({ files: await listFiles(ctx, id(event)) }));

  app.get("/api/sessions/:id/files/**", async (event) => {
    const sessionId = id(event);
    const raw = decodeURIComponent(getRouterParam(event, "_") ?? "");
    const path = checkAgentPath(raw);
    await ctx.sessions.requireSession(sessionId);
    const sandbox = ctx.sessions.liveSandbox(sessionId);
    const content = sandbox ? await readWorkspaceFile(sandbox.io, path) : await ctx.sessions.workspaces.read(sessionId, path);
    if (content === null) throw notFound(`No file "${path}" in this session's workspace.`);
    const text = isUtf8Text(content);
    return { path, size: content.length, encoding: text ? "utf8" : "base64", content: content.toString(text ? "utf8" : "base64") };
  });

  app.get("/api/sessions/:id/workspace", async (event) => {
    const sessionId = id(event);
    await ctx.sessions.requireSession(sessionId);
    const sandbox = ctx.sessions.liveSandbox(sessionId);
    // Live: tar runs as the sandbox user and the server only relays its bytes. Asleep: built from the snapshot.
    let archive: Readable | null;
    if (sandbox) {
      const { proc } = tarOutRaw(sandbox.io);
      archive = proc;
    } else archive = await ctx.sessions.workspaces.archive(sessionId);
    if (!archive) throw notFound("This session has no workspace yet.");
    const gzip = createGzip();
    archive.on("error", (error) => gzip.destroy(error));
    const stream = Readable.toWeb(archive.pipe(gzip)) as ReadableStream;
    return new Response(stream, {
      headers: { "content-type": "application/gzip", "content-disposition": `attachment; filename="workspace-${sessionId}.tar.gz"` },
    });
  });

  app.post("/api/sessions/:id/exec", async (event) => {
    const sessionId = id(event);
    const body = validate(execSchema, await readJsonBody(event, ctx.config.maxBodyBytes));
    const sandbox = await ctx.sessions.sandboxOf(sessionId);
    const result = await sandbox.exec(body.command, { timeoutMs: body.timeout ?? 60_000 });
    if (result.limit) ctx.observability.metrics.limitKilled(result.limit);
    return { exitCode: result.exitCode, stdout: result.stdout, stderr: result.stderr, timedOut: Boolean(result.timedOut), limit: result.limit ?? null };
  });

  app.get("/api/sessions/:id/logs", async (event) => {
    const sessionId = id(event);
    const session = await ctx.sessions.requireSession(sessionId);
    if (session.status === "ended") throw gone("This session has ended.");
    return { logs: ctx.sessions.liveSandbox(sessionId)?.logs() ?? [] };
  });
}

async function listFiles(ctx: AppContext, sessionId: string) {
  await ctx.sessions.requireSession(sessionId);
  const sandbox = ctx.sessions.liveSandbox(sessionId);
  if (sandbox) return listWorkspaceFiles(sandbox.io);
  return (await ctx.sessions.workspaces.list(sessionId)) ?? [];
}

/** The live workspace as tar produces it; stderr notes are dropped. */
function tarOutRaw(io: WorkspaceIo): { proc: Readable } {
  const proc = io.run("tar", ["-c", "--format=posix", "--numeric-owner", "--hard-dereference", "-f", "-", "."]);
  proc.done.catch(() => undefined);
  return { proc: proc.stdout };
}

function isUtf8Text(content: Buffer): boolean {
  if (content.includes(0)) return false;
  return Buffer.from(content.toString("utf8"), "utf8").equals(content);
}
