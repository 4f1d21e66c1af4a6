import { getRouterParam, type H3 } from "h3";
import { z } from "zod";
import { Readable } from "node:stream";
import { createGzip } from "node:zlib";
import type { AppContext } from "../context";
import { principalOf } from "../auth";
import { readJsonBody } from "../body";
import { validate, singleQuery } from "../validate";
import { badRequest, conflict, gone, notFound, tooLarge } from "../errors";
import { checkAgentPath } from "../../agents/agent-files";
import { listWorkspaceFiles, openWorkspaceFile, removeWorkspacePath, writeWorkspaceEntries, WorkspaceWriteError, type UploadEntry } from "../../sessions/workspace-files";
import { checkAgainstWorkspace, readUploadArchive } from "../../sessions/upload-archive";
import { fileResponse } from "./file-response";
import type { H3Event } from "h3";
import type { IncomingMessage } from "node:http";
import type { WorkspaceIo } from "../../sandbox/workspace-io";
import { id, json } from "./sessions";

const execSchema = z
  .object({
    command: z.string().min(1, "must not be empty").max(100_000),
    timeout: z.number().int().min(100).max(3_600_000).optional(),
  })
  .strict();

const writeFilesSchema = z
  .object({
    files: z
      .array(
        z
          .object({
            path: z.string(),
            content: z.string(),
            encoding: z.enum(["base64", "utf8"]).optional(),
            mode: z.number().int().min(0).max(0o7777).optional(),
          })
          .strict(),
      )
      .min(1, "must list at least one file")
      .max(10_000),
    /** A folder of the workspace the paths are relative to (made when missing). */
    targetPath: z.string().max(4096).optional(),
  })
  .strict();

export function registerWorkspace(app: H3, ctx: AppContext): void {
  // Files are read from the live sandbox when there is one, else from the snapshot; `source` says which.
  app.get("/api/sessions/:id/files", async (event) => listFiles(ctx, id(event)));

  // The bytes by default (streamed, typed by extension, never sniffed, a download);
  // ?format=json for {path, size, encoding, content}.
  app.get("/api/sessions/:id/files/**", async (event) => {
    const sessionId = id(event);
    const path = checkAgentPath(decodeURIComponent(getRouterParam(event, "_") ?? ""));
    const format = singleQuery(event).format ?? "raw";
    if (format !== "raw" && format !== "json") throw badRequest('The query parameter "format" must be "raw" or "json".');
    await ctx.sessions.requireSession(sessionId);
    const max = format === "json" ? Math.min(ctx.config.maxFileBytes, 64 * 1024 * 1024) : ctx.config.maxFileBytes;
    const tooBig = (size: number) =>
      tooLarge(`"${path}" is ${size} bytes, more than the ${max} this server serves${format === "json" ? " as JSON (ask for the raw bytes instead)" : " (ASH_MAX_FILE_BYTES)"}; download the workspace archive instead.`);
    const sandbox = ctx.sessions.liveSandbox(sessionId);
    const source = sandbox ? "sandbox" : "snapshot";
    if (sandbox && format === "raw") {
      const opened = await openWorkspaceFile(sandbox.io, path, max, tooBig);
      if (!opened) throw notFound(`No file "${path}" in this session's workspace.`);
      const response = fileResponse(path, opened.stream, opened.size);
      response.headers.set("x-ash-source", source);
      return response;
    }
    let content: Buffer | null;
    if (sandbox) {
      const opened = await openWorkspaceFile(sandbox.io, path, max, tooBig);
      content = opened ? await collect(opened.stream) : null;
    } else content = await ctx.sessions.workspaces.read(sessionId, path);
    if (content === null) throw notFound(`No file "${path}" in this session's workspace.`);
    if (content.length > max) throw tooBig(content.length);
    if (format === "raw") {
      const response = fileResponse(path, content);
      response.headers.set("x-ash-source", source);
      return response;
    }
    const text = isUtf8Text(content);
    return { path, size: content.length, encoding: text ? "utf8" : "base64", content: content.toString(text ? "utf8" : "base64"), source };
  });

  // A batch of files, written by the sandbox user (the sandbox is woken when asleep).
  app.post("/api/sessions/:id/files", async (event) => {
    const sessionId = id(event);
    const body = validate(writeFilesSchema, await readJsonBody(event, ctx.config.maxUploadBytes));
    const target = body.targetPath === undefined || body.targetPath.replace(/[/.]/g, "") === "" ? "" : checkAgentPath(body.targetPath);
    const seen = new Set<string>();
    const entries: UploadEntry[] = body.files.map((file) => {
      const path = checkAgentPath(target ? `${target}/${file.path}` : file.path);
      if (/[\\/]$/.test(file.path)) throw badRequest(`files: "${file.path}" names a folder; send the files in it instead.`);
      if (seen.has(path)) throw badRequest(`files: "${path}" appears twice.`);
      seen.add(path);
      if (file.encoding !== "utf8" && !/^[A-Za-z0-9+/_-]*={0,2}$/.test(file.content)) throw badRequest(`files: the content of "${path}" is not base64 (say "encoding": "utf8" for text).`);
      const content = Buffer.from(file.content, file.encoding === "utf8" ? "utf8" : "base64");
      return { type: "file", path, mode: file.mode !== undefined && file.mode & 0o111 ? 0o755 : 0o644, content };
    });
    for (const path of seen) {
      const parts = path.split("/");
      for (let i = 1; i < parts.length; i++) if (seen.has(parts.slice(0, i).join("/"))) throw badRequest(`files: "${parts.slice(0, i).join("/")}" is a file, but "${path}" needs it to be a folder.`);
    }
    const sandbox = await wokenSandbox(ctx, event, sessionId);
    await writeChecked(sandbox.io, entries);
    return json(201, { files: entries.map((e) => ({ path: e.path, size: e.type === "file" ? e.content.length : 0 })), targetPath: target || null });
  });

  app.delete("/api/sessions/:id/files/**", async (event) => {
    const sessionId = id(event);
    const path = checkAgentPath(decodeURIComponent(getRouterParam(event, "_") ?? ""));
    const sandbox = await wokenSandbox(ctx, event, sessionId);
    let removed: boolean;
    try {
      removed = await removeWorkspacePath(sandbox.io, path);
    } catch (error) {
      if (error instanceof WorkspaceWriteError) throw conflict(`${error.message}.`);
      throw error;
    }
    if (!removed) throw notFound(`No file or folder "${path}" in this session's workspace.`);
    return { path, deleted: true };
  });

  // A tar.gz (or tar) body unpacked into the workspace (or ?targetPath=), checked whole before anything is written.
  app.post("/api/sessions/:id/workspace", async (event) => {
    const sessionId = id(event);
    const q = singleQuery(event);
    const rawTarget = typeof q.targetPath === "string" ? q.targetPath : "";
    const target = rawTarget.replace(/[/.]/g, "") === "" ? "" : checkAgentPath(rawTarget);
    const max = ctx.config.maxUploadBytes;
    const declared = Number(event.req.headers.get("content-length") ?? NaN);
    if (Number.isFinite(declared) && declared > max) throw tooLarge(`The upload is larger than ${max} bytes (ASH_MAX_UPLOAD_BYTES).`);
    const entries = await readUploadArchive(bodyOf(event, max), max, target);
    const sandbox = await wokenSandbox(ctx, event, sessionId);
    await writeChecked(sandbox.io, entries);
    const files = entries.filter((e) => e.type === "file").length;
    return json(201, { extracted: true, files, entries: entries.length, targetPath: target || null });
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
    const sandbox = await wokenSandbox(ctx, event, sessionId);
    const result = await sandbox.exec(body.command, { timeoutMs: body.timeout ?? 60_000 });
    if (result.limit) ctx.observability.metrics.limitKilled(result.limit);
    return { exitCode: result.exitCode, stdout: result.stdout, stderr: result.stderr, timedOut: Boolean(result.timedOut), limit: result.limit ?? null };
  });

  app.get("/api/sessions/:id/logs", async (event) => {
    const sessionId = id(event);
    const session = await ctx.sessions.requireSession(sessionId);
    if (session.status === "ended") throw gone("This session has ended.");
    const sandbox = ctx.sessions.liveSandbox(sessionId);
    // Only a live sandbox has logs; a sleeping session's are gone with its sandbox.
    return { logs: sandbox?.logs() ?? [], source: sandbox ? "sandbox" : "snapshot" };
  });
}

/**
 * The session's sandbox for a write or a command, woken when it sleeps: the
 * woken session counts against the caller's live-session limits as it would
 * for a message (and is refused with a 429 when over them).
 */
async function wokenSandbox(ctx: AppContext, event: H3Event, sessionId: string) {
  const session = await ctx.sessions.requireSession(sessionId);
  const woken = await ctx.limits.admitWake(principalOf(event), session.status);
  try {
    return await ctx.sessions.sandboxOf(sessionId);
  } finally {
    woken?.();
  }
}

async function listFiles(ctx: AppContext, sessionId: string) {
  await ctx.sessions.requireSession(sessionId);
  const sandbox = ctx.sessions.liveSandbox(sessionId);
  if (sandbox) return { files: await listWorkspaceFiles(sandbox.io), source: "sandbox" as const };
  return { files: (await ctx.sessions.workspaces.list(sessionId)) ?? [], source: "snapshot" as const };
}

/** Writes checked entries as the sandbox user, after checking them against what is already there. */
async function writeChecked(io: WorkspaceIo, entries: UploadEntry[]): Promise<void> {
  await checkAgainstWorkspace(io, entries);
  try {
    await writeWorkspaceEntries(io, entries);
  } catch (error) {
    if (error instanceof WorkspaceWriteError) throw conflict(`${error.message}.`);
    throw error;
  }
}

/** The raw request body, counted: past `max` bytes it stops with 413. */
async function* bodyOf(event: H3Event, max: number): AsyncGenerator<Buffer> {
  const nodeReq = (event.req as { runtime?: { node?: { req?: IncomingMessage } } }).runtime?.node?.req;
  const source: AsyncIterable<Uint8Array> = nodeReq ?? (event.req.body as unknown as AsyncIterable<Uint8Array>) ?? [];
  let seen = 0;
  for await (const chunk of source) {
    seen += chunk.byteLength;
    if (seen > max) throw tooLarge(`The upload is larger than ${max} bytes (ASH_MAX_UPLOAD_BYTES).`);
    yield Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  }
}

async function collect(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(part as Buffer);
  return Buffer.concat(parts);
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
