import { tenantEndpointProblem, type ModelUpstream } from "../gateway/gateway";
import type { GradeScore } from "../db/queries/evals";
import type { ModelUsage } from "../gateway/usage-tap";

/** Marks the grader's requests (the model endpoint sees this system prompt). */
export const GRADER_SYSTEM =
  "You grade answers of an AI agent for an evaluation. Compare the answer with the question, the reference answer and the expected topics. " +
  'Reply with JSON only: {"score": <number from 0 to 1>, "reason": "<one sentence>"}.';

export interface GradeInput {
  upstream: ModelUpstream;
  model: string;
  question: string;
  referenceAnswer: string | null;
  expectedTopics: string[];
  answer: string;
}

/**
 * Asks the model for a 0–1 score, with one direct call to the same endpoint and key
 * the agent's sessions use. A failed call or an answer without a score gives
 * `score: null` and says why; it never fails the case.
 */
export async function gradeAnswer(input: GradeInput, onUsage?: (usage: ModelUsage) => void): Promise<GradeScore> {
  const { upstream, model } = input;
  const prompt = [
    `Question:\n${input.question}`,
    input.referenceAnswer ? `Reference answer:\n${input.referenceAnswer}` : "Reference answer: (none)",
    input.expectedTopics.length ? `Expected topics: ${input.expectedTopics.join(", ")}` : "",
    `Answer to grade:\n${input.answer}`,
  ]
    .filter(Boolean)
    .join("\n\n");
  const headers: Record<string, string> = { "content-type": "application/json", "anthropic-version": "2023-06-01" };
  if (upstream.apiKey) headers["x-api-key"] = upstream.apiKey;
  else if (upstream.authToken) headers.authorization = `Bearer ${upstream.authToken}`;
  if (upstream.tenantEndpoint) {
    // The agent's own endpoint: the same rule as the gateway's (no host, link-local or private addresses).
    const problem = await tenantEndpointProblem(new URL(upstream.baseUrl), upstream.tenantEndpoint.allowPrivate);
    if (problem) return { score: null, reason: null, model, error: `The grader does not call the agent's own ANTHROPIC_BASE_URL: ${problem}.` };
  }
  try {
    const response = await fetch(`${upstream.baseUrl.replace(/\/+$/, "")}/v1/messages`, {
      method: "POST",
      headers,
      body: JSON.stringify({ model, max_tokens: 400, system: GRADER_SYSTEM, messages: [{ role: "user", content: prompt }] }),
      signal: AbortSignal.timeout(120_000),
    });
    const body = (await response.json().catch(() => undefined)) as any;
    if (!response.ok) return { score: null, reason: null, model, error: `The grader's model call failed (${response.status}${body?.error?.message ? `: ${body.error.message}` : ""}).` };
    const u = body?.usage;
    if (u && onUsage) {
      onUsage({
        model: typeof body.model === "string" ? body.model : model,
        inputTokens: Number(u.input_tokens ?? 0),
        outputTokens: Number(u.output_tokens ?? 0),
        cacheCreationTokens: Number(u.cache_creation_input_tokens ?? 0),
        cacheReadTokens: Number(u.cache_read_input_tokens ?? 0),
      });
    }
    const text = Array.isArray(body?.content) ? body.content.filter((b: any) => b?.type === "text").map((b: any) => String(b.text)).join("") : "";
    return readGrade(text, model);
  } catch (error) {
    return { score: null, reason: null, model, error: `The grader's model call failed: ${error instanceof Error ? error.message : String(error)}` };
  }
}

/** The score in the grader's reply: its JSON object, or failing that, the first "score: n". */
export function readGrade(text: string, model: string): GradeScore {
  const json = /\{[\s\S]*\}/.exec(text)?.[0];
  if (json) {
    try {
      const parsed = JSON.parse(json);
      const score = Number(parsed.score);
      if (Number.isFinite(score) && score >= 0 && score <= 1) return { score, reason: typeof parsed.reason === "string" ? parsed.reason : null, model };
    } catch {
      // read below
    }
  }
  const loose = /score\W{0,3}(0(?:\.\d+)?|1(?:\.0+)?)\b/i.exec(text);
  if (loose) return { score: Number(loose[1]), reason: null, model };
  return { score: null, reason: null, model, error: `The grader's answer had no score: ${text.slice(0, 200)}` };
}
