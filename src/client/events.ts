/**
 * The events of one streamed turn, as the server sends them (`event:` names the type,
 * `data:` is the JSON payload, `id:` the session-wide sequence number).
 */

/** Token counts as the model reports them. */
export interface TokenUsage {
  input_tokens?: number;
  output_tokens?: number;
  cache_creation_input_tokens?: number;
  cache_read_input_tokens?: number;
  [key: string]: unknown;
}

/** A raw Agent SDK message (`system`, `assistant`, `user`, `result`, `stream_event`, …), passed on unchanged. */
export interface AgentSdkMessage {
  type: string;
  [key: string]: unknown;
}

export interface StreamEventData {
  session_start: { sessionId: string };
  text_delta: { delta: string };
  thinking_delta: { delta: string };
  tool_use: { id: string; name: string; input: Record<string, unknown> };
  tool_result: { tool_use_id: string; content: unknown; is_error?: boolean };
  /** The tool use waits for a decision (the session's confirmTools policy): answer with `decideTool`. */
  tool_confirmation: { toolUseId: string; name: string; input: Record<string, unknown> };
  /** A held tool use was allowed or denied (`message`: what the model is told of a denial). */
  tool_decision: { toolUseId: string; decision: "allow" | "deny"; message?: string };
  message: AgentSdkMessage;
  turn_complete: { numTurns: number; result?: string; usage?: TokenUsage };
  error: { error: string; code?: string };
  /** The sandbox asked the egress proxies for a connection its allowlist does not permit. */
  egress_denied: { host: string; port: number; protocol: string; reason: string };
  /** The session was rewound to checkpoint `checkpoint` (after turn `turn`); later events are history. */
  rewound: { sessionId: string; checkpoint: number; turn: number };
  done: { sessionId: string };
}

export type StreamEventType = keyof StreamEventData;

/**
 * One event of a session's stream. `id` is the session-wide sequence number: pass the last
 * one you saw as `lastEventId` to pick the stream up again without repeats.
 */
export type StreamEvent = {
  [T in StreamEventType]: { type: T; id: number; data: StreamEventData[T] };
}[StreamEventType];

/** The event of one type, e.g. `StreamEventOf<"tool_use">`. */
export type StreamEventOf<T extends StreamEventType> = Extract<StreamEvent, { type: T }>;

export const STREAM_EVENT_TYPES: readonly StreamEventType[] = [
  "session_start",
  "text_delta",
  "thinking_delta",
  "tool_use",
  "tool_result",
  "tool_confirmation",
  "tool_decision",
  "message",
  "turn_complete",
  "error",
  "egress_denied",
  "rewound",
  "done",
];

const KNOWN = new Set<string>(STREAM_EVENT_TYPES);

export function isStreamEventType(type: string): type is StreamEventType {
  return KNOWN.has(type);
}

/** Parses an event's sequence number; `undefined` when the frame carried none or a non-number. */
export function parseEventId(id: string | number | undefined | null): number | undefined {
  if (typeof id === "number") return Number.isSafeInteger(id) ? id : undefined;
  if (typeof id !== "string" || !/^\d+$/.test(id.trim())) return undefined;
  const n = Number(id.trim());
  return Number.isSafeInteger(n) ? n : undefined;
}
