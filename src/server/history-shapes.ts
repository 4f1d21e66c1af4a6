import type { MessageRecord } from "../db/queries/messages";
import type { StoredEvent } from "../db/queries/events";

/**
 * A history row as the original API answers it, which its SDK hands to users
 * who JSON.parse `content`: `role` is user or assistant, `content` the SDK
 * message as a JSON string. What we add: `kind` (user, assistant, tool or
 * result: what the row is) and `data` (its content, parsed).
 */
export function presentMessage(sessionId: string, m: MessageRecord) {
  return {
    id: m.id,
    sessionId,
    role: m.role === "user" || m.role === "tool" ? ("user" as const) : ("assistant" as const),
    content: JSON.stringify(sdkMessageOf(m)),
    sequence: m.sequence,
    createdAt: new Date(m.createdAt).toISOString(),
    kind: m.role,
    data: m.content,
    ...(m.rewoundAt ? { rewound: true as const } : {}),
  };
}

/** The Agent SDK message a stored row came from, in the form the original stored it. */
function sdkMessageOf(m: MessageRecord): Record<string, unknown> {
  switch (m.role) {
    case "user":
      return { type: "user", content: m.content };
    case "tool":
      return { type: "user", message: { role: "user", content: m.content } };
    case "assistant":
      return { type: "assistant", message: { role: "assistant", content: m.content } };
    case "result": {
      const r = (m.content ?? {}) as { subtype?: string; result?: string | null; isError?: boolean; usage?: unknown };
      return { type: "result", subtype: r.subtype ?? "success", result: r.result ?? null, is_error: Boolean(r.isError), usage: r.usage ?? null };
    }
  }
}

/** The original API's timeline event types. */
export const TIMELINE_TYPES = ["text", "tool_start", "tool_result", "reasoning", "error", "turn_complete", "lifecycle"] as const;
export type TimelineType = (typeof TIMELINE_TYPES)[number];

export interface TimelineEvent {
  id: string;
  sessionId: string;
  type: TimelineType;
  /** JSON, as the original stores it. */
  data: string;
  /** The stored event it came from: `?after=` this sequence reads on past it. */
  sequence: number;
  createdAt: string;
}

/** The timeline events one stored stream event makes (none for deltas and bookkeeping). */
export function timelineOf(sessionId: string, e: StoredEvent): TimelineEvent[] {
  const made: Array<[TimelineType, Record<string, unknown>]> = [];
  const d = (e.data ?? {}) as any;
  if (e.type === "message") {
    if (d.type === "assistant" && Array.isArray(d.message?.content)) {
      for (const block of d.message.content) {
        if (block?.type === "text") made.push(["text", { text: block.text }]);
        else if (block?.type === "tool_use") made.push(["tool_start", { toolName: block.name, toolId: block.id, input: block.input }]);
        else if (block?.type === "thinking") made.push(["reasoning", { thinking: block.thinking }]);
      }
    }
    if (d.type === "user" && Array.isArray(d.message?.content)) {
      const result = d.tool_use_result && typeof d.tool_use_result === "object" ? d.tool_use_result : {};
      for (const block of d.message.content) {
        if (block?.type !== "tool_result") continue;
        made.push(["tool_result", { toolId: block.tool_use_id, content: block.content ?? null, isError: Boolean(block.is_error), stdout: result.stdout, stderr: result.stderr }]);
      }
    }
    if (d.type === "result") made.push(["turn_complete", { numTurns: d.num_turns, result: d.result ?? null }]);
  } else if (e.type === "error") {
    made.push(["error", { error: d.error, code: d.code }]);
  } else if (e.type === "rewound") {
    made.push(["lifecycle", { action: "rewound", ...d }]);
  }
  return made.map(([type, data], i) => ({
    id: `${e.seq}.${i}`,
    sessionId,
    type,
    data: JSON.stringify(data),
    sequence: e.seq,
    createdAt: new Date(e.createdAt).toISOString(),
  }));
}
