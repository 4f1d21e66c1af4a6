import { type H3 } from "h3";
import { z } from "zod";
import type { AppContext } from "../context";
import { principalOf } from "../auth";
import { readJsonBody } from "../body";
import { parseSequence, parseWholeNumber, validate, singleQuery } from "../validate";
import { eventStreamResponse } from "../sse";
import { id } from "./sessions";
import { listMessages } from "../../db/queries/messages";
import { listEvents } from "../../db/queries/events";
import { badRequest } from "../errors";
import { presentMessage, timelineOf, TIMELINE_TYPES, type TimelineEvent } from "../history-shapes";

const contentBlock = z.object({ type: z.string() }).passthrough();

const sendSchema = z
  .object({
    content: z.union([z.string().min(1, "must not be empty").max(500_000), z.array(contentBlock).min(1).max(100)]),
    model: z.string().min(1).max(200).optional(),
    maxTurns: z.number().int().min(1).max(1000).optional(),
    includePartialMessages: z.boolean().optional(),
  })
  .strict();

const decisionSchema = z
  .object({
    toolUseId: z.string().min(1).max(200),
    decision: z.enum(["allow", "deny"]),
    message: z.string().max(10_000).optional(),
  })
  .strict();

export function registerMessages(app: H3, ctx: AppContext): void {
  // One turn: the answer is its event stream, which ends with `done`.
  app.post("/api/sessions/:id/messages", async (event) => {
    const body = validate(sendSchema, await readJsonBody(event, ctx.config.maxBodyBytes));
    const caller = principalOf(event);
    // A sleeping session woken by the message counts as live again.
    const session = await ctx.sessions.requireSession(id(event));
    const woken = await ctx.limits.admitWake(caller, session.status);
    const turnEnded = await ctx.limits.admitTurn(caller).catch((error) => {
      woken?.();
      throw error;
    });
    let sent;
    try {
      sent = await ctx.sessions.sendMessage(id(event), { ...body, onTurnEnd: turnEnded });
    } catch (error) {
      turnEnded();
      throw error;
    } finally {
      woken?.();
    }
    const { log, after } = sent;
    return eventStreamResponse(log, after, { endAfterDone: true, signal: ctx.drain.streamsEnd });
  });

  // Reconnect: every event after Last-Event-ID (or ?after=), then live ones.
  app.get("/api/sessions/:id/stream", async (event) => {
    const sessionId = id(event);
    await ctx.sessions.requireSession(sessionId);
    const header = event.req.headers.get("last-event-id");
    const query = singleQuery(event).after;
    const after =
      header !== null
        ? parseSequence(header, "The Last-Event-ID header")
        : query !== undefined
          ? parseSequence(typeof query === "string" ? query : "", 'The query parameter "after"')
          : 0;
    const log = await ctx.sessions.logForReader(sessionId);
    return eventStreamResponse(log, after, { endAfterDone: false, open: true, signal: ctx.drain.streamsEnd });
  });

  app.post("/api/sessions/:id/interrupt", async (event) => ({ interrupted: await ctx.sessions.interrupt(id(event)) }));

  // A person's answer to a `tool_confirmation` event: the held tool runs, or the model is told it was denied.
  app.post("/api/sessions/:id/tool-confirmations", async (event) => {
    const body = validate(decisionSchema, await readJsonBody(event, ctx.config.maxBodyBytes));
    const held = await ctx.sessions.decideTool(id(event), body.toolUseId, body.decision, body.message);
    return { toolUseId: held.toolUseId, name: held.name, decision: body.decision };
  });

  app.get("/api/sessions/:id/messages", async (event) => {
    const sessionId = id(event);
    await ctx.sessions.requireSession(sessionId);
    const { after, limit } = pageOf(singleQuery(event), 1000);
    // A message a rewind took off the session's line is still listed, with `rewound: true`.
    return { messages: (await listMessages(ctx.db, sessionId, { after, limit })).map((m) => presentMessage(sessionId, m)) };
  });

  app.get("/api/sessions/:id/events", async (event) => {
    const sessionId = id(event);
    await ctx.sessions.requireSession(sessionId);
    const q = singleQuery(event);
    const { after, limit } = pageOf(q, 1000);
    if (q.format !== undefined && q.format !== "timeline") throw badRequest('The query parameter "format" can only be "timeline" (the original API\'s shape), or left out.');
    if (q.format === "timeline") return { events: await timeline(sessionId, after, limit, q.type) };
    const events = await listEvents(ctx.db, sessionId, { after, limit, type: q.type });
    return { events: events.map((e) => ({ sequence: e.seq, type: e.type, data: e.data, createdAt: new Date(e.createdAt).toISOString() })) };
  });

  /** A page of the timeline: whole stored events only, so `after` = the last `sequence` reads on without a gap. */
  async function timeline(sessionId: string, after: number, limit: number, type: string | undefined): Promise<TimelineEvent[]> {
    if (type !== undefined && !(TIMELINE_TYPES as readonly string[]).includes(type)) {
      throw badRequest(`The query parameter "type" must be one of ${TIMELINE_TYPES.join(", ")} with format=timeline.`);
    }
    const page: TimelineEvent[] = [];
    for (let from = after; ; ) {
      const stored = await listEvents(ctx.db, sessionId, { after: from, limit: 500 });
      for (const e of stored) {
        const made = timelineOf(sessionId, e).filter((t) => type === undefined || t.type === type);
        if (page.length > 0 && page.length + made.length > limit) return page;
        page.push(...made);
        if (page.length >= limit) return page;
      }
      if (stored.length < 500) return page;
      from = stored[stored.length - 1]!.seq;
    }
  }
}

function pageOf(q: Record<string, unknown>, maxLimit: number): { after: number; limit: number } {
  const text = (v: unknown) => (typeof v === "string" ? v : "");
  const after = q.after === undefined ? 0 : parseSequence(text(q.after), 'The query parameter "after"');
  const limit = q.limit === undefined ? Math.min(100, maxLimit) : parseWholeNumber(text(q.limit), 'The query parameter "limit"', 1, maxLimit);
  return { after, limit };
}
