import { z } from "zod";

/**
 * Bedrock and Vertex AI credentials, as stored (JSON in the vault) and as the
 * gateway uses them. The keys stay in the server: the gateway signs each call
 * (SigV4) or fetches an access token (a service account's JWT) itself, so the
 * sandbox only ever holds its gateway token.
 */

/** Model names as the CLI sends them, to the cloud's own ids (anything not listed follows the default rule). */
const modelMap = z.record(z.string().min(1).max(200), z.string().min(1).max(300)).refine((m) => Object.keys(m).length <= 100, "lists at most 100 models");

/** Only the operator may point a credential at another endpoint (a private link, a proxy, a test double). */
const endpoint = z
  .string()
  .max(2000)
  .refine((value) => /^https?:\/\/[^\s/]+/.test(value) && !/[?#]/.test(value), "must be an http(s) URL without a query");

export const bedrockCredentialSchema = z
  .object({
    region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d$/, 'must be an AWS region such as "us-east-1"'),
    /** An IAM key pair (and a session token for temporary credentials)... */
    accessKeyId: z.string().min(16).max(128).optional(),
    secretAccessKey: z.string().min(16).max(128).optional(),
    sessionToken: z.string().min(1).max(4096).optional(),
    /** ...or a Bedrock API key, sent as a bearer token. */
    apiKey: z.string().min(16).max(4096).optional(),
    /** Cross-region inference profile prefix put before the default model ids: "us", "eu", "apac", "global". */
    inferenceProfile: z.enum(["us", "eu", "apac", "global"]).optional(),
    models: modelMap.optional(),
    endpoint: endpoint.optional(),
  })
  .strict()
  .refine((c) => Boolean(c.apiKey) !== Boolean(c.accessKeyId || c.secretAccessKey), 'needs either "apiKey" or "accessKeyId" with "secretAccessKey"')
  .refine((c) => Boolean(c.apiKey) || (Boolean(c.accessKeyId) && Boolean(c.secretAccessKey)), '"accessKeyId" and "secretAccessKey" go together');

const serviceAccount = z
  .object({
    type: z.literal("service_account"),
    client_email: z.string().min(3).max(320),
    private_key: z.string().min(100).max(16_384).refine((k) => k.includes("PRIVATE KEY"), "must be a PEM private key"),
    project_id: z.string().min(1).max(100).optional(),
    token_uri: z.string().max(2000).optional(),
  })
  .passthrough();

export const vertexCredentialSchema = z
  .object({
    region: z.string().regex(/^(global|[a-z]+-[a-z]+\d+)$/, 'must be a Google Cloud region such as "us-east5", or "global"'),
    projectId: z.string().regex(/^[a-z][a-z0-9-]{4,61}[a-z0-9]$/, "must be a Google Cloud project id").optional(),
    /** The service account key file's JSON. */
    serviceAccount: serviceAccount,
    models: modelMap.optional(),
    endpoint: endpoint.optional(),
    /** Where the service account's token is fetched: the key file's token_uri is not trusted for this. */
    tokenEndpoint: endpoint.optional(),
  })
  .strict();

export type BedrockCredential = z.infer<typeof bedrockCredentialSchema>;
export type VertexCredential = z.infer<typeof vertexCredentialSchema>;

export type CloudUpstream =
  | { kind: "bedrock"; credential: BedrockCredential; cacheKey: string }
  | { kind: "vertex"; credential: VertexCredential; projectId: string; cacheKey: string };

export class CloudCredentialError extends Error {}

/** What a stored bedrock or vertex credential says, checked; a CloudCredentialError naming what is wrong. */
export function parseCloudCredential(type: "bedrock" | "vertex", text: string, cacheKey: string): CloudUpstream {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new CloudCredentialError(`A ${type} credential's "key" is JSON (see the credentials section of the README); this one is not.`);
  }
  const schema = type === "bedrock" ? bedrockCredentialSchema : vertexCredentialSchema;
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const where = issue.path.length ? `"${issue.path.join(".")}" ` : "";
    throw new CloudCredentialError(`A ${type} credential's key: ${where}${issue.message}.`);
  }
  if (type === "bedrock") return { kind: "bedrock", credential: parsed.data as BedrockCredential, cacheKey };
  const credential = parsed.data as VertexCredential;
  const projectId = credential.projectId ?? credential.serviceAccount.project_id;
  if (!projectId) throw new CloudCredentialError('A vertex credential\'s key needs "projectId" (or a service account with "project_id").');
  return { kind: "vertex", credential, projectId, cacheKey };
}

/** Whether a credential points at an endpoint of its own (only the operator may store such). */
export function hasEndpointOverride(upstream: CloudUpstream): boolean {
  return Boolean(upstream.credential.endpoint || (upstream.kind === "vertex" && upstream.credential.tokenEndpoint));
}

/** A model name as Claude Code sends it, as Bedrock names it. */
export function bedrockModelId(credential: BedrockCredential, model: string): string {
  const mapped = credential.models?.[model];
  if (mapped) return mapped;
  // Already a Bedrock id, an inference profile or an ARN.
  if (model.includes(".") || model.startsWith("arn:")) return model;
  const id = `anthropic.${model}-v1:0`;
  return credential.inferenceProfile ? `${credential.inferenceProfile}.${id}` : id;
}

/** A model name as Claude Code sends it, as Vertex AI names it: the date after an "@". */
export function vertexModelId(credential: VertexCredential, model: string): string {
  const mapped = credential.models?.[model];
  if (mapped) return mapped;
  return model.includes("@") ? model : model.replace(/-(\d{8})$/, "@$1");
}
