import { getRouterParam, type H3, type H3Event } from "h3";
import { randomUUID } from "node:crypto";
import type { AppContext } from "../context";
import { principalOf } from "../auth";
import { readRawBody } from "../body";
import { badRequest, notFound, tooLarge } from "../errors";
import { attachmentName } from "../routes/attachments";
import { deleteAttachment, getAttachment, insertAttachment, listTenantAttachments, type AttachmentRecord } from "../../db/queries/attachments";
import { decodePage, forwardPage, iso, limitOf, queryOf, single } from "./common";

/** A file uploaded on its own (not to a session through /api) has no session. */
const NO_SESSION = "";

const mediaType = /^[\w.+-]+\/[\w.+-]+$/;

export function presentFile(a: AttachmentRecord) {
  return {
    type: "file" as const,
    id: a.id,
    filename: a.filename,
    mime_type: a.mimeType,
    size_bytes: a.size,
    created_at: iso(a.createdAt),
    downloadable: true,
    // A file attached to a session through /api is scoped to it.
    scope: a.sessionId === NO_SESSION ? null : { type: "session", id: a.sessionId },
  };
}

/**
 * /v1/files are the attachments table's rows (migration 10): one store for
 * both APIs. Uploads are multipart with one `file` part, as the SDK sends them.
 */
export function registerManagedFiles(app: H3, ctx: AppContext): void {
  async function requireFile(event: H3Event) {
    const id = getRouterParam(event, "id") ?? "";
    const file = await getAttachment(ctx.db, principalOf(event).tenantId, id);
    if (!file) throw notFound(`No file with id "${id}".`);
    return file;
  }

  app.post("/v1/files", async (event) => {
    const type = event.req.headers.get("content-type") ?? "";
    if (!/^multipart\/form-data\s*;/i.test(type)) throw badRequest('Upload the file as multipart/form-data with one part named "file".');
    // The multipart framing adds a little to the file's own size.
    const bytes = await readRawBody(event, ctx.config.maxAttachmentBytes + 64 * 1024);
    let form: FormData;
    try {
      form = await new Response(new Uint8Array(bytes), { headers: { "content-type": type } }).formData();
    } catch {
      throw badRequest("The multipart body could not be read.");
    }
    const part = form.get("file");
    if (!part || typeof part === "string") throw badRequest('The multipart body has no file part named "file".');
    const content = Buffer.from(await part.arrayBuffer());
    if (content.length === 0) throw badRequest("The file is empty.");
    if (content.length > ctx.config.maxAttachmentBytes) throw tooLarge(`The file is larger than ${ctx.config.maxAttachmentBytes} bytes (ASH_MAX_ATTACHMENT_BYTES).`);
    const mime = part.type.split(";")[0]!.trim();
    const record: AttachmentRecord = {
      id: `file_${randomUUID().replace(/-/g, "")}`,
      tenantId: principalOf(event).tenantId,
      sessionId: NO_SESSION,
      messageId: null,
      filename: attachmentName(part.name || "upload"),
      mimeType: mime && mediaType.test(mime) && mime.length <= 255 ? mime : "application/octet-stream",
      size: content.length,
      createdAt: Date.now(),
    };
    await insertAttachment(ctx.db, { ...record, content });
    return presentFile(record);
  });

  // Oldest first; `scope_id` narrows to the files attached to one session through /api.
  app.get("/v1/files", async (event) => {
    const q = queryOf(event);
    const limit = limitOf(q, 20, 1000);
    const rows = await listTenantAttachments(ctx.db, principalOf(event).tenantId, { sessionId: single(q, "scope_id"), limit: limit + 1, cursor: decodePage(q) });
    const { items, next } = forwardPage(rows, limit);
    return { data: items.map(presentFile), next_page: next };
  });

  app.get("/v1/files/:id", async (event) => presentFile(await requireFile(event)));

  // The bytes, as a download that a browser never renders in place.
  app.get("/v1/files/:id/content", async (event) => {
    const file = await requireFile(event);
    return new Response(new Uint8Array(file.content), {
      headers: {
        "content-type": file.mimeType,
        "content-length": String(file.content.length),
        "x-content-type-options": "nosniff",
        "content-security-policy": "sandbox",
        "content-disposition": `attachment; filename*=UTF-8''${encodeURIComponent(file.filename).replace(/'/g, "%27")}`,
      },
    });
  });

  // Sessions it was placed in keep their copy (it is in their workspace).
  app.delete("/v1/files/:id", async (event) => {
    const id = getRouterParam(event, "id") ?? "";
    if (!(await deleteAttachment(ctx.db, principalOf(event).tenantId, id))) throw notFound(`No file with id "${id}".`);
    return { type: "file_deleted", id };
  });
}
