import type { StoredEvent } from "../../db/queries/events";
import { iso } from "./common";

/**
 * Claude Code's stream, as the session's event log stores it, in the Managed
 * Agents API's event types. The mapping is a pure function of the log read
 * from the start of a turn, so a listing and a live stream give every event
 * the same id (`sevt_<sequence>_<n>`: the n-th event made from the stored one)
 * and a reader can resume after any id (docs/managed-agents-api.md).
 */

export interface ManagedEvent {
  id: string;
  type: string;
  processed_at: string;
  [field: string]: unknown;
}

/** Where an event sits in the log: the stored event's sequence and its index among those made from it. */
export interface Position {
  seq: number;
  index: number;
}

const ID = /^sevt_([0-9]{1,15})_([0-9]{1,4})$/;

export const eventId = (p: Position) => `sevt_${p.seq}_${p.index}`;

export function parseEventId(raw: string): Position | undefined {
  const m = ID.exec(raw);
  return m ? { seq: Number(m[1]), index: Number(m[2]) } : undefined;
}

export const isAfter = (a: Position, b: Position) => a.seq > b.seq || (a.seq === b.seq && a.index > b.index);

/** The user's content as the API shows it: blocks, a plain string being one text block. */
export function contentBlocks(content: unknown): unknown[] {
  if (typeof content === "string") return [{ type: "text", text: content }];
  return Array.isArray(content) ? content : [];
}

function resultBlocks(content: unknown): unknown[] {
  if (typeof content === "string") return [{ type: "text", text: content }];
  if (!Array.isArray(content)) return [];
  return content.map((b) => (b && typeof b === "object" && (b as { type?: string }).type === "text" ? { type: "text", text: String((b as { text?: unknown }).text ?? "") } : b));
}

const MCP_TOOL = /^mcp__(.+?)__(.+)$/;

/** Error codes a turn ends with that are the model's failing. */
const MODEL_ERRORS = new Set(["model_error", "model_timeout"]);

export class EventMapper {
  /** The model response being streamed: its span's start event and latest usage. */
  private open?: { startId: string; messageId: string; usage: any };
  private toolUses = new Map<string, { eventId: string; mcp: boolean }>();
  private lastError?: string;
  /** Tool uses held for a user.tool_confirmation: Claude's tool use id → its agent.tool_use event id. */
  private held = new Map<string, string>();

  /** The Claude tool use id behind an agent.tool_use event id of the turn read so far. */
  claudeToolUseId(eventIdOrToolUseId: string): string | undefined {
    for (const [toolUseId, use] of this.toolUses) if (use.eventId === eventIdOrToolUseId || toolUseId === eventIdOrToolUseId) return toolUseId;
    return undefined;
  }

  private eventIdOfTool(toolUseId: string): string {
    return this.toolUses.get(toolUseId)?.eventId ?? toolUseId;
  }

  /** `userContent`: for a `session_start`, the message its turn started with (stored with it). */
  map(stored: StoredEvent, userContent?: unknown): ManagedEvent[] {
    const out: ManagedEvent[] = [];
    const at = iso(stored.createdAt);
    const push = (type: string, fields: Record<string, unknown> = {}): string => {
      const id = eventId({ seq: stored.seq, index: out.length });
      out.push({ id, type, processed_at: at, ...fields });
      return id;
    };
    const close = () => {
      if (!this.open) return;
      const u = this.open.usage ?? {};
      push("span.model_request_end", {
        model_request_start_id: this.open.startId,
        is_error: false,
        model_usage: {
          input_tokens: Number(u.input_tokens ?? 0),
          output_tokens: Number(u.output_tokens ?? 0),
          cache_creation_input_tokens: Number(u.cache_creation_input_tokens ?? 0),
          cache_read_input_tokens: Number(u.cache_read_input_tokens ?? 0),
          speed: "standard",
        },
      });
      this.open = undefined;
    };
    const data = (stored.data ?? {}) as any;
    switch (stored.type) {
      case "session_start":
        this.open = undefined;
        this.toolUses.clear();
        this.held.clear();
        this.lastError = undefined;
        push("user.message", { content: contentBlocks(userContent) });
        push("session.status_running");
        break;
      case "message":
        if (data.type === "assistant" && data.message) {
          const messageId = String(data.message.id ?? stored.seq);
          if (this.open && this.open.messageId !== messageId) close();
          if (!this.open) this.open = { startId: push("span.model_request_start"), messageId, usage: data.message.usage };
          else this.open.usage = data.message.usage ?? this.open.usage;
          for (const block of Array.isArray(data.message.content) ? data.message.content : []) {
            if (block?.type === "text" && block.text) push("agent.message", { content: [{ type: "text", text: String(block.text) }] });
            else if (block?.type === "thinking" || block?.type === "redacted_thinking") push("agent.thinking");
            else if (block?.type === "tool_use") {
              const mcp = MCP_TOOL.exec(String(block.name));
              const id = mcp
                ? push("agent.mcp_tool_use", { name: mcp[2], mcp_server_name: mcp[1], input: block.input ?? {} })
                : push("agent.tool_use", { name: String(block.name), input: block.input ?? {} });
              this.toolUses.set(String(block.id), { eventId: id, mcp: Boolean(mcp) });
            }
          }
        } else if (data.type === "user" && data.message) {
          close();
          for (const block of Array.isArray(data.message.content) ? data.message.content : []) {
            if (block?.type !== "tool_result") continue;
            const use = this.toolUses.get(String(block.tool_use_id));
            const fields = { content: resultBlocks(block.content), is_error: Boolean(block.is_error) };
            if (use?.mcp) push("agent.mcp_tool_result", { mcp_tool_use_id: use.eventId, ...fields });
            else push("agent.tool_result", { tool_use_id: use?.eventId ?? String(block.tool_use_id), ...fields });
          }
        } else if (data.type === "result") close();
        break;
      // A tool use waits for the user: the session is idle until every held one is answered.
      case "tool_confirmation":
        close();
        this.held.set(String(data.toolUseId), this.eventIdOfTool(String(data.toolUseId)));
        push("session.status_idle", { stop_reason: { type: "requires_action", event_ids: [...this.held.values()] }, stop_details: null });
        break;
      case "tool_decision": {
        const toolUseId = String(data.toolUseId);
        const eventIdOfUse = this.held.get(toolUseId) ?? this.eventIdOfTool(toolUseId);
        this.held.delete(toolUseId);
        push("user.tool_confirmation", {
          tool_use_id: eventIdOfUse,
          result: data.decision === "allow" ? "allow" : "deny",
          ...(data.decision === "allow" ? {} : { deny_message: typeof data.message === "string" ? data.message : null }),
        });
        if (this.held.size > 0) push("session.status_idle", { stop_reason: { type: "requires_action", event_ids: [...this.held.values()] }, stop_details: null });
        else push("session.status_running");
        break;
      }
      case "error":
        close();
        this.held.clear();
        this.lastError = String(data.code ?? "");
        // The turn stopped because the user asked: that request is the event.
        if (data.code === "interrupted") push("user.interrupt");
        else push("session.error", { error: { type: MODEL_ERRORS.has(this.lastError) ? "model_request_failed_error" : "unknown_error", message: String(data.error ?? "The turn failed."), retry_status: { type: "terminal" } } });
        break;
      case "done":
        close();
        push("session.status_idle", {
          stop_reason: this.lastError === "budget_exceeded" ? { type: "budget_reached" } : MODEL_ERRORS.has(this.lastError ?? "") ? { type: "retries_exhausted" } : { type: "end_turn" },
          stop_details: null,
        });
        break;
      // Deltas and the per-block copies of `message` carry nothing the events above do not.
      default:
        break;
    }
    return out;
  }
}
