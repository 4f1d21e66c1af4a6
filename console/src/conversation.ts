import type { StoredMessage, StreamEvent } from "../../src/client";

/** What the session page shows, built from the session's stored and live events. */
export type Item =
  | { kind: "user"; key: string; text: string }
  | { kind: "text"; key: string; text: string }
  | { kind: "thinking"; key: string; text: string }
  | { kind: "tool"; key: string; id: string; name: string; input: unknown; output?: string; isError?: boolean }
  | { kind: "error"; key: string; text: string }
  | { kind: "turn"; key: string; tokens?: number; running: false };

export interface Conversation {
  items: Item[];
  /** The id of the last event applied; events at or below it are repeats and are skipped. */
  lastId: number;
  /** A turn has started (session_start or any event) and its `done` has not come yet. */
  running: boolean;
  /** User messages not placed yet, by the sequence number they were stored at. */
  users: Array<{ sequence: number; text: string }>;
}

export const EMPTY: Conversation = { items: [], lastId: 0, running: false, users: [] };

/** The text of a stored user message (a string, or content blocks). */
export function userText(message: StoredMessage): string {
  const data = message.data;
  if (typeof data === "string") return data;
  if (Array.isArray(data)) return data.map((b) => (b && typeof b === "object" && typeof (b as { text?: unknown }).text === "string" ? (b as { text: string }).text : "")).join("");
  return "";
}

/** Puts the stored user messages in; each shows before the first event of its turn. */
export function withUsers(c: Conversation, messages: StoredMessage[]): Conversation {
  const users = messages.filter((m) => m.kind === "user").map((m) => ({ sequence: m.sequence, text: userText(m) }));
  return flushUsers({ ...c, users: [...c.users, ...users].sort((a, b) => a.sequence - b.sequence) }, Number.MAX_SAFE_INTEGER, false);
}

function flushUsers(c: Conversation, upTo: number, force: boolean): Conversation {
  const ready = c.users.filter((u) => u.sequence <= upTo && (force || u.sequence <= c.lastId + 1));
  if (ready.length === 0) return c;
  return {
    ...c,
    users: c.users.filter((u) => !ready.includes(u)),
    items: [...c.items, ...ready.map((u): Item => ({ kind: "user", key: `u${u.sequence}`, text: u.text }))],
  };
}

/** The message just sent from this page, shown at once. */
export function withSent(c: Conversation, text: string, key = `s${c.items.length}-${c.lastId}`): Conversation {
  return { ...c, items: [...c.items, { kind: "user", key, text }] };
}

/** Applies one event; a repeat (id at or below the last one applied) changes nothing. */
export function apply(c: Conversation, event: StreamEvent): Conversation {
  if (event.id <= c.lastId) return c;
  let next = flushUsers(c, event.id, true);
  next = { ...next, lastId: event.id };
  const items = next.items.slice();
  const last = items[items.length - 1];
  switch (event.type) {
    case "session_start":
      return { ...next, running: true };
    case "text_delta":
      if (last?.kind === "text") items[items.length - 1] = { ...last, text: last.text + event.data.delta };
      else items.push({ kind: "text", key: `t${event.id}`, text: event.data.delta });
      return { ...next, items, running: true };
    case "thinking_delta":
      if (last?.kind === "thinking") items[items.length - 1] = { ...last, text: last.text + event.data.delta };
      else items.push({ kind: "thinking", key: `h${event.id}`, text: event.data.delta });
      return { ...next, items, running: true };
    case "tool_use":
      items.push({ kind: "tool", key: `c${event.id}`, id: event.data.id, name: event.data.name, input: event.data.input });
      return { ...next, items, running: true };
    case "tool_result": {
      const at = items.findIndex((i) => i.kind === "tool" && i.id === event.data.tool_use_id);
      const output = resultText(event.data.content);
      if (at >= 0) items[at] = { ...(items[at] as Extract<Item, { kind: "tool" }>), output, isError: event.data.is_error === true };
      else items.push({ kind: "tool", key: `r${event.id}`, id: event.data.tool_use_id, name: "tool", input: undefined, output, isError: event.data.is_error === true });
      return { ...next, items };
    }
    case "error":
      items.push({ kind: "error", key: `e${event.id}`, text: event.data.error });
      return { ...next, items };
    case "turn_complete": {
      const usage = event.data.usage;
      const tokens = usage ? (usage.input_tokens ?? 0) + (usage.output_tokens ?? 0) : undefined;
      items.push({ kind: "turn", key: `d${event.id}`, tokens, running: false });
      return { ...next, items };
    }
    case "done":
      return { ...next, running: false };
    default:
      // Raw SDK messages repeat what the typed events already showed.
      return next;
  }
}

function resultText(content: unknown): string {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) return content.map((b) => (b && typeof b === "object" && "text" in b ? String((b as { text: unknown }).text) : JSON.stringify(b))).join("\n");
  return JSON.stringify(content, null, 2);
}
