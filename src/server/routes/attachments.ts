import { getRouterParam, type H3 } from "h3";
import { z } from "zod";
import { randomUUID } from "node:crypto";
import type { AppContext } from "../context";
import { principalOf } from "../auth";
import { readJsonBody } from "../body";
import { validate } from "../validate";
import { badRequest, notFound, tooLarge } from "../errors";
import { json, id } from "./sessions";
import { deleteAttachment, getAttachment, insertAttachment, listAttachments, type AttachmentRecord } from "../../db/queries/attachments";
import { writeWorkspaceEntries } from "../../sessions/workspace-files";

/** The folder of the workspace attachments are written to while the session is live. */
export const ATTACHMENTS_FOLDER = "attachments";

const uploadSchema = z
  .object({
    filename: z.string().min(1).max(255),
    mimeType: z.string().regex(/^[\w.+-]+\/[\w.+-]+$/, "must be a media type such as text/plain").max(255).optional(),
    /** The bytes, base64. */
    content: z.string().min(1),
    messageId: z.string().min(1).max(200).optional(),
  })
  .strict();

/**
 * A file name as given, reduced to a plain name: no folders, no NUL or
 * control characters, not "." or "..", at most 255 bytes.
 */
export function attachmentName(raw: string): string {
  const base = raw.split(/[\\/]/).pop() ?? "";
  const clean = base.replace(/[\u0000-\u001f\u007f]/g, "").trim();
  if (!clean || clean === "." || clean === "..") throw badRequest(`The field "filename" is invalid: "${raw.slice(0, 100)}" has no usable name.`);
  if (Buffer.byteLength(clean) > 255) throw badRequest('The field "filename" is invalid: longer than 255 bytes.');
  return clean;
}

export function presentAttachment(a: AttachmentRecord) {
  return {
    id: a.id,
    sessionId: a.sessionId,
    messageId: a.messageId,
    filename: a.filename,
    mimeType: a.mimeType,
    size: a.size,
    path: `${ATTACHMENTS_FOLDER}/${a.filename}`,
    createdAt: new Date(a.createdAt).toISOString(),
  };
}

export function registerAttachments(app: H3, ctx: AppContext): void {
  // The body is base64: a third larger than the file it carries.
  const bodyLimit = Math.ceil(ctx.config.maxAttachmentBytes * 1.37) + 4096;

  app.post("/api/sessions/:id/attachments", async (event) => {
    const body = validate(uploadSchema, await readJsonBody(event, bodyLimit));
    const session = await ctx.sessions.requireSession(id(event));
    if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(body.content)) throw badRequest('The field "content" is invalid: it must be base64.');
    const content = Buffer.from(body.content, "base64");
    if (content.length === 0) throw badRequest('The field "content" is invalid: the file is empty.');
    if (content.length > ctx.config.maxAttachmentBytes) throw tooLarge(`The attachment is larger than ${ctx.config.maxAttachmentBytes} bytes (ASH_MAX_ATTACHMENT_BYTES).`);
    const record: AttachmentRecord = {
      id: randomUUID(),
      tenantId: principalOf(event).tenantId,
      sessionId: session.id,
      messageId: body.messageId ?? null,
      filename: attachmentName(body.filename),
      mimeType: body.mimeType ?? "application/octet-stream",
      size: content.length,
      createdAt: Date.now(),
    };
    await insertAttachment(ctx.db, { ...record, content });
    // A live session sees it at once, written by its own user (a sleeping one can be sent the bytes again).
    const sandbox = ctx.sessions.liveSandbox(session.id);
    if (sandbox) {
      await writeWorkspaceEntries(sandbox.io, [
        { type: "dir", path: ATTACHMENTS_FOLDER, mode: 0o755 },
        { type: "file", path: `${ATTACHMENTS_FOLDER}/${record.filename}`, mode: 0o644, content },
      ]).catch((error) => ctx.log.warn(`session ${session.id}: writing attachment ${record.id} into the workspace failed:`, error));
    }
    return json(201, { attachment: presentAttachment(record) });
  });

  app.get("/api/sessions/:id/attachments", async (event) => ({ attachments: (await listAttachments(ctx.db, id(event))).map(presentAttachment) }));

  // The bytes, as a download that a browser never renders in place.
  app.get("/api/attachments/:id", async (event) => {
    const attachmentId = getRouterParam(event, "id")!;
    const found = await getAttachment(ctx.db, principalOf(event).tenantId, attachmentId);
    if (!found) throw notFound(`No attachment with id "${attachmentId}".`);
    return new Response(new Uint8Array(found.content), {
      headers: {
        "content-type": found.mimeType,
        "content-length": String(found.content.length),
        "x-content-type-options": "nosniff",
        "content-security-policy": "sandbox",
        "content-disposition": `attachment; filename*=UTF-8''${encodeURIComponent(found.filename).replace(/'/g, "%27")}`,
      },
    });
  });

  app.delete("/api/attachments/:id", async (event) => {
    const attachmentId = getRouterParam(event, "id")!;
    if (!(await deleteAttachment(ctx.db, principalOf(event).tenantId, attachmentId))) throw notFound(`No attachment with id "${attachmentId}".`);
    return new Response(null, { status: 204 });
  });
}
