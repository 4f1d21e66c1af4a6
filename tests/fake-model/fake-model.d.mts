// Types for the fake Anthropic Messages API (fake-model.mjs).
export interface FakeReply {
  text?: string;
  toolUse?: Array<{ name: string; input: unknown; id?: string }>;
  status?: number;
  hang?: boolean;
  durationMs?: number;
}

export interface RecordedRequest {
  headers: Record<string, string | string[] | undefined>;
  body: any;
  receivedAt: number;
  /** The usage the answer reported (unset for errors and hangs). */
  usage?: { input_tokens: number; output_tokens: number };
}

export interface FakeModel {
  url: string;
  port: number;
  requests: RecordedRequest[];
  setRespond(fn: ((request: any) => FakeReply | undefined) | undefined): void;
  userTexts(i?: number): string[];
  close(): Promise<void>;
}

export function startFakeModel(options?: { port?: number; host?: string; respond?: (request: any) => FakeReply | undefined }): Promise<FakeModel>;
export function replyFromDirectives(request: any): FakeReply;
