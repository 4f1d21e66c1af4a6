import type { Queryable } from "../types";

export interface AttachmentRecord {
  id: string;
  tenantId: string;
  sessionId: string;
  messageId: string | null;
  filename: string;
  mimeType: string;
  size: number;
  createdAt: number;
}

const COLUMNS = `id, tenant_id, session_id, message_id, filename, mime_type, size, created_at`;

function toAttachment(row: any): AttachmentRecord {
  return {
    id: row.id,
    tenantId: row.tenant_id,
    sessionId: row.session_id,
    messageId: row.message_id ?? null,
    filename: row.filename,
    mimeType: row.mime_type,
    size: Number(row.size),
    createdAt: Number(row.created_at),
  };
}

export async function insertAttachment(db: Queryable, a: AttachmentRecord & { content: Buffer }): Promise<void> {
  await db.run(`INSERT INTO attachments (${COLUMNS}, content_base64) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, [
    a.id,
    a.tenantId,
    a.sessionId,
    a.messageId,
    a.filename,
    a.mimeType,
    a.size,
    a.createdAt,
    a.content.toString("base64"),
  ]);
}

/** A tenant's attachment (with its bytes); undefined for none or another tenant's. */
export async function getAttachment(db: Queryable, tenantId: string, id: string): Promise<(AttachmentRecord & { content: Buffer }) | undefined> {
  const row = await db.get<any>(`SELECT ${COLUMNS}, content_base64 FROM attachments WHERE id = ? AND tenant_id = ?`, [id, tenantId]);
  return row ? { ...toAttachment(row), content: Buffer.from(row.content_base64, "base64") } : undefined;
}

export async function listAttachments(db: Queryable, sessionId: string): Promise<AttachmentRecord[]> {
  return (await db.all(`SELECT ${COLUMNS} FROM attachments WHERE session_id = ? ORDER BY created_at, id`, [sessionId])).map(toAttachment);
}

export async function deleteAttachment(db: Queryable, tenantId: string, id: string): Promise<boolean> {
  return (await db.run(`DELETE FROM attachments WHERE id = ? AND tenant_id = ?`, [id, tenantId])).changes > 0;
}

/** A tenant's attachments, oldest first after the cursor; `sessionId` narrows them to one session's. */
export async function listTenantAttachments(db: Queryable, tenantId: string, options: { sessionId?: string; limit: number; cursor?: { createdAt: number; id: string } }): Promise<AttachmentRecord[]> {
  const params: unknown[] = [tenantId];
  let sql = `SELECT ${COLUMNS} FROM attachments WHERE tenant_id = ?`;
  if (options.sessionId !== undefined) {
    sql += ` AND session_id = ?`;
    params.push(options.sessionId);
  }
  if (options.cursor) {
    sql += ` AND (created_at > ? OR (created_at = ? AND id > ?))`;
    params.push(options.cursor.createdAt, options.cursor.createdAt, options.cursor.id);
  }
  sql += ` ORDER BY created_at, id LIMIT ?`;
  params.push(options.limit);
  return (await db.all(sql, params)).map(toAttachment);
}
