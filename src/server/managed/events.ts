import type { H3 } from "h3";
import { z } from "zod";
import { randomUUID } from "node:crypto";
import type { AppContext } from "../context";
import { principalOf } from "../auth";
import { readJsonBody } from "../body";
import { validate } from "../validate";
import { badRequest, conflict, notFound } from "../errors";
import { EVENT_STREAM_HEADERS, OPEN_COMMENT, PING_COMMENT, PING_EVERY_MS, waitOrPing } from "../sse";
import { listEvents, type StoredEvent } from "../../db/queries/events";
import { listMessages } from "../../db/queries/messages";
import { turnStartAtOrBefore } from "../../db/queries/managed";
import type { AshDatabase } from "../../db/types";
import { iso, limitOf, listOf, queryOf, single } from "./common";
import { EventMapper, eventId, isAfter, parseEventId, type ManagedEvent, type Position } from "./event-map";
import { requireManagedSession } from "./sessions";

const BATCH = 200;
/** Reading a long session's log to find one page stops here; the page ends early rather than the server reading on. */
const MAX_BATCHES = 5000;

const base64Source = z.object({ type: z.literal("base64"), media_type: z.string().min(1).max(100), data: z.string().min(1) }).strict();
const textSource = z.object({ type: z.literal("text"), media_type: z.literal("text/plain"), data: z.string() }).strict();
const blockSchema = z.discriminatedUnion("type", [
  z.object({ type: z.literal("text"), text: z.string().min(1, "must not be empty") }).strict(),
  z.object({ type: z.literal("image"), source: base64Source }).strict(),
  z.object({ type: z.literal("document"), source: z.union([base64Source, textSource]), title: z.string().nullable().optional(), context: z.string().nullable().optional() }).strict(),
]);

const NOT_YET: Record<string, string> = {
  "user.custom_tool_result": "user.custom_tool_result is not available on this server: agents here have no custom tools.",
  "user.define_outcome": "user.define_outcome is not available on this server.",
  "user.tool_result": "user.tool_result is not available on this server.",
};

const eventSchema = z.union([
  z.object({ type: z.literal("user.message"), content: z.array(blockSchema).min(1).max(100) }).strict(),
  z.object({ type: z.literal("user.interrupt"), session_thread_id: z.string().nullable().optional() }).strict(),
  z
    .object({
      type: z.literal("user.tool_confirmation"),
      tool_use_id: z.string().min(1).max(200),
      result: z.enum(["allow", "deny"]),
      deny_message: z.string().max(10_000).nullable().optional(),
      session_thread_id: z.string().nullable().optional(),
    })
    .strict(),
]);
const SENDABLE = ["user.message", "user.interrupt", "user.tool_confirmation"];
const sendSchema = z.object({ events: z.array(z.object({ type: z.string() }).passthrough()).min(1, "must hold at least one event").max(50) }).strict();

/** The messages turns began with, for the `session_start` events among `events`. */
async function userContents(db: AshDatabase, sessionId: string, events: StoredEvent[]): Promise<Map<number, unknown>> {
  const contents = new Map<number, unknown>();
  for (const e of events) {
    if (e.type !== "session_start") continue;
    const [m] = await listMessages(db, sessionId, { after: e.seq - 1, limit: 1 });
    if (m && m.sequence === e.seq && m.role === "user") contents.set(e.seq, m.content);
  }
  return contents;
}

/**
 * Reads mapped events after `after` (null: from the beginning): the mapper
 * replays from the start of the turn holding `after` so it knows the open
 * model request and tool calls. Stops once `want` events are collected.
 */
export async function readManagedEvents(db: AshDatabase, sessionId: string, after: Position | null, want: number, keep: (e: ManagedEvent) => boolean = () => true) {
  const mapper = new EventMapper();
  const start = after ? await turnStartAtOrBefore(db, sessionId, after.seq) : 0;
  let cursor = start > 0 ? start - 1 : 0;
  const out: ManagedEvent[] = [];
  for (let round = 0; round < MAX_BATCHES && out.length < want; round++) {
    const batch = await listEvents(db, sessionId, { after: cursor, limit: BATCH });
    if (batch.length === 0) break;
    const contents = await userContents(db, sessionId, batch);
    for (const stored of batch) {
      cursor = stored.seq;
      for (const e of mapper.map(stored, contents.get(stored.seq))) if ((!after || isAfter(parseEventId(e.id)!, after)) && keep(e)) out.push(e);
    }
  }
  return { events: out, mapper, cursor };
}

function parsePosition(raw: string, what: string): Position {
  const position = parseEventId(raw);
  if (!position) throw badRequest(`${what} must be an event id this server gave out (sevt_...).`);
  return position;
}

export function registerManagedEvents(app: H3, ctx: AppContext): void {
  // Oldest first; `page` is the id of the last event of the previous page.
  app.get("/v1/sessions/:id/events", async (event) => {
    const { record } = await requireManagedSession(ctx, event);
    const q = queryOf(event);
    const limit = limitOf(q, 100, 1000);
    const order = single(q, "order") ?? "asc";
    if (order !== "asc") throw badRequest('The query parameter "order" may only be asc here: read forward and page with next_page.');
    const types = new Set(listOf(q, "types"));
    const page = single(q, "page");
    const after = page ? parsePosition(page, 'The query parameter "page"') : null;
    const { events } = await readManagedEvents(ctx.db, record.id, after, limit + 1, (e) => types.size === 0 || types.has(e.type));
    const data = events.slice(0, limit);
    return { data, next_page: events.length > limit ? data[data.length - 1]!.id : null };
  });

  app.post("/v1/sessions/:id/events", async (event) => {
    const { events } = validate(sendSchema, await readJsonBody(event, ctx.config.maxBodyBytes));
    // Every event is checked before any is acted on.
    const parsed = events.map((e, i) => {
      if (NOT_YET[e.type]) throw badRequest(`events.${i}: ${NOT_YET[e.type]}`);
      const result = eventSchema.safeParse(e);
      if (result.success) return result.data;
      if (!SENDABLE.includes(e.type)) throw badRequest(`events.${i}.type: "${String(e.type).slice(0, 100)}" is not an event a client sends (${SENDABLE.join(", ")}).`);
      return validate(eventSchema, e);
    });
    const session = await requireManagedSession(ctx, event);
    if (session.record.status === "ended" || session.extras.archivedAt !== null) throw badRequest(`Session "${session.record.id}" is terminated${session.extras.archivedAt !== null ? " (archived)" : ""}; start a new one.`);
    const sessionId = session.record.id;
    const content = parsed.flatMap((e) => (e.type === "user.message" ? e.content : []));
    const answered: ManagedEvent[] = [];

    // Decisions first: a held tool goes on (or is denied) before anything else of this request.
    for (const confirmation of parsed.flatMap((e) => (e.type === "user.tool_confirmation" ? [e] : []))) {
      const turn = async () => {
        const start = await turnStartAtOrBefore(ctx.db, sessionId, Number.MAX_SAFE_INTEGER);
        return readManagedEvents(ctx.db, sessionId, start > 0 ? { seq: start, index: 1 } : null, 10_000);
      };
      const toolUseId = (await turn()).mapper.claudeToolUseId(confirmation.tool_use_id);
      if (!toolUseId) throw notFound(`No tool use "${confirmation.tool_use_id}" in this session's current turn: tool_use_id is the id of the agent.tool_use event named in session.status_idle's stop_reason.event_ids.`);
      await ctx.sessions.decideTool(sessionId, toolUseId, confirmation.result, confirmation.deny_message ?? undefined);
      const made = (await turn()).events.filter((e) => e.type === "user.tool_confirmation" && e.tool_use_id === confirmation.tool_use_id);
      answered.push(made[made.length - 1] ?? { id: `sevt_none_${randomUUID().replace(/-/g, "")}`, type: "user.tool_confirmation", tool_use_id: confirmation.tool_use_id, result: confirmation.result, processed_at: iso(Date.now()) });
    }

    if (parsed.some((e) => e.type === "user.interrupt")) {
      const stopped = await ctx.sessions.interrupt(sessionId);
      let id = `sevt_none_${randomUUID().replace(/-/g, "")}`;
      if (stopped) {
        // The stopped turn's log now holds the interrupt; its id comes from there.
        const start = await turnStartAtOrBefore(ctx.db, sessionId, Number.MAX_SAFE_INTEGER);
        const { events: turn } = await readManagedEvents(ctx.db, sessionId, start > 0 ? { seq: start, index: 1 } : null, 10_000, (e) => e.type === "user.interrupt");
        id = turn[turn.length - 1]?.id ?? id;
      }
      answered.push({ id, type: "user.interrupt", processed_at: iso(Date.now()) });
    }

    if (content.length > 0) {
      const caller = principalOf(event);
      const woken = await ctx.limits.admitWake(caller, session.record.status);
      const turnEnded = await ctx.limits.admitTurn(caller).catch((error) => {
        woken?.();
        throw error;
      });
      let sent;
      try {
        sent = await ctx.sessions.sendMessage(sessionId, { content, onTurnEnd: turnEnded });
      } catch (error) {
        turnEnded();
        if (error instanceof Error && /already running/.test(error.message)) throw conflict("The session is running a turn: wait for session.status_idle, or send user.interrupt first.");
        throw error;
      } finally {
        woken?.();
      }
      answered.push({ id: eventId({ seq: sent.after + 1, index: 0 }), type: "user.message", content, processed_at: iso(Date.now()) });
    }
    return { data: answered };
  });

  /**
   * Live events as SSE, from now on; with `Last-Event-ID` (an event id) from
   * just after that event, so a client that lost its connection misses
   * nothing. Pulled like /api's stream: a slow reader never makes the server buffer.
   */
  app.get("/v1/sessions/:id/events/stream", async (event) => {
    const { record } = await requireManagedSession(ctx, event);
    if (listOf(queryOf(event), "event_deltas").length > 0) throw badRequest("event_deltas are not available on this server: agent.message and agent.thinking come whole.");
    const header = event.req.headers.get("last-event-id");
    const log = await ctx.sessions.logForReader(record.id);
    const after: Position = header ? parsePosition(header.trim(), "The Last-Event-ID header") : { seq: log.lastSeq, index: Number.MAX_SAFE_INTEGER };
    // Catch up from the database (this also rebuilds what the mapper knows of the turn under way).
    const caught = await readManagedEvents(ctx.db, record.id, after, 1000);
    const mapper = caught.mapper;
    let cursor = Math.max(caught.cursor, Math.min(after.seq, log.lastSeq));
    let pending: ManagedEvent[] = caught.events;
    const encoder = new TextEncoder();
    const frame = (e: ManagedEvent) => `event: ${e.type}\nid: ${e.id}\ndata: ${JSON.stringify(e)}\n\n`;
    const detach = log.attach();
    let finished = false;
    const finish = () => {
      finished = true;
      detach();
    };
    const stream = new ReadableStream<Uint8Array>(
      {
        start(controller) {
          controller.enqueue(encoder.encode(OPEN_COMMENT));
        },
        async pull(controller) {
          while (!finished) {
            if (pending.length > 0) {
              controller.enqueue(encoder.encode(pending.map(frame).join("")));
              pending = [];
              return;
            }
            const stored = await log.read(cursor, 100);
            if (stored.length > 0) {
              const contents = await userContents(ctx.db, record.id, stored);
              for (const e of stored) {
                cursor = e.seq;
                pending.push(...mapper.map(e, contents.get(e.seq)).filter((m) => isAfter(parseEventId(m.id)!, after)));
              }
              continue;
            }
            if (log.isClosed || ctx.drain.streamsEnd.aborted) {
              finish();
              controller.close();
              return;
            }
            if (await waitOrPing(log, cursor, PING_EVERY_MS, ctx.drain.streamsEnd)) {
              controller.enqueue(encoder.encode(PING_COMMENT));
              return;
            }
          }
        },
        cancel() {
          finish();
        },
      },
      { highWaterMark: 1 },
    );
    return new Response(stream, { status: 200, headers: EVENT_STREAM_HEADERS });
  });
}
