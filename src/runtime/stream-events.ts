import type { SDKMessage } from "@anthropic-ai/claude-agent-sdk";
import type { LimitReason } from "../contract";

/** The event names of the streaming contract (API.md, "Messages: one turn, streamed"). */
export type StreamEventType =
  | "session_start"
  | "text_delta"
  | "thinking_delta"
  | "tool_use"
  | "tool_result"
  /** A tool use waits for a person's allow or deny (the session's confirmTools policy). */
  | "tool_confirmation"
  /** Someone allowed or denied a held tool use. */
  | "tool_decision"
  | "message"
  | "turn_complete"
  | "error"
  | "egress_denied"
  /** A rewind moved the session back to a checkpoint; events before this one after it are history. */
  | "rewound"
  | "done";

export interface StreamEvent {
  type: StreamEventType;
  data: unknown;
}

/** Codes carried by `error` events. */
export type TurnErrorCode =
  | "model_error"
  | "model_timeout"
  | "interrupted"
  | LimitReason
  | "sandbox_crashed"
  | "workspace_save_failed"
  | "server_restart"
  | "server_shutdown"
  /** The server running the turn died or lost its lease; another server took the session over. */
  | "server_lost"
  | "budget_exceeded";

/**
 * Turns one raw Agent SDK message into the granular events clients read,
 * followed by the raw message itself in a `message` event. Partial stream
 * events become deltas; their raw form (which doubles the stream) is sent
 * too only with `rawPartials`, for clients that read nothing but `message`
 * frames (the original API's, when asked for partial messages).
 */
export function mapSdkMessage(message: SDKMessage, options: { partials: boolean; rawPartials?: boolean }): StreamEvent[] {
  const m = message as any;
  if (m.type === "stream_event") {
    if (!options.partials) return [];
    const event = m.event;
    const events: StreamEvent[] = [];
    if (event?.type === "content_block_delta" && event.delta?.type === "text_delta") events.push({ type: "text_delta", data: { delta: event.delta.text } });
    if (event?.type === "content_block_delta" && event.delta?.type === "thinking_delta") events.push({ type: "thinking_delta", data: { delta: event.delta.thinking } });
    if (options.rawPartials) events.push({ type: "message", data: message });
    return events;
  }
  const events: StreamEvent[] = [];
  if (m.type === "assistant" && Array.isArray(m.message?.content)) {
    for (const block of m.message.content) {
      if (block.type === "tool_use") events.push({ type: "tool_use", data: { id: block.id, name: block.name, input: block.input } });
    }
  }
  if (m.type === "user" && Array.isArray(m.message?.content)) {
    for (const block of m.message.content) {
      if (block.type === "tool_result") {
        events.push({ type: "tool_result", data: { tool_use_id: block.tool_use_id, content: block.content, is_error: Boolean(block.is_error) } });
      }
    }
  }
  events.push({ type: "message", data: message });
  return events;
}

/** The `turn_complete` payload from a `result` message. */
export function turnCompleteOf(result: any): StreamEvent {
  return { type: "turn_complete", data: { numTurns: result.num_turns, result: result.result ?? null, usage: result.usage ?? null, totalCostUsd: result.total_cost_usd ?? null } };
}
