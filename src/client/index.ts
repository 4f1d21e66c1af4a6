/**
 * The typed client for the Ash HTTP API (`@ash-ai/cli/client`).
 *
 *   const ash = new AshClient({ url: "http://localhost:4100", apiKey });
 *   const session = await ash.createSession({ agent: "my-agent" });
 *   for await (const event of ash.sendMessage(session.id, "Hello")) {
 *     if (event.type === "text_delta") process.stdout.write(event.data.delta);
 *   }
 */
export { AshClient } from "./client";
export type { SendMessageOptions, StreamEventsOptions } from "./client";
export { AshError, AshApiError, AshConnectionError, AshStreamError } from "./errors";
export { STREAM_EVENT_TYPES, isStreamEventType, parseEventId } from "./events";
export type { AgentSdkMessage, StreamEvent, StreamEventData, StreamEventOf, StreamEventType, TokenUsage } from "./events";
export { SseParser, readSseFrames } from "./sse";
export type { SseFrame, SseHooks } from "./sse";
export type * from "./types";
