import { getRouterParam, type H3 } from "h3";
import { z } from "zod";
import { randomUUID } from "node:crypto";
import type { AppContext } from "../context";
import { readJsonBody } from "../body";
import { validate } from "../validate";
import { badRequest, forbidden, notFound, unavailable, unprocessable } from "../errors";
import { CloudCredentialError, hasEndpointOverride, parseCloudCredential } from "../../gateway/cloud-credentials";
import { json } from "./sessions";
import { principalOf } from "../auth";
import { deleteCredential, insertCredential, listCredentials, type CredentialRecord } from "../../db/queries/credentials";
import { credentialBinding } from "../../vault/credentials";
import { CREDENTIAL_TYPES } from "../../contract";

const createSchema = z
  .object({
    type: z.enum(CREDENTIAL_TYPES),
    /** The secret: a model key, or for `custom` the variable's value. */
    key: z.string().min(1).max(16_384),
    label: z.string().max(200).optional(),
    /** For `custom`: the environment variable the session gets it as. */
    variable: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be a valid variable name").max(128).optional(),
  })
  .strict();

export function presentCredential(c: CredentialRecord) {
  return {
    id: c.id,
    type: c.type,
    label: c.label,
    variable: c.variable ?? undefined,
    active: c.active,
    createdAt: new Date(c.createdAt).toISOString(),
    lastUsedAt: c.lastUsedAt === null ? null : new Date(c.lastUsedAt).toISOString(),
  };
}

export function registerCredentials(app: H3, ctx: AppContext): void {
  const vault = () => {
    if (!ctx.vault) throw unavailable("Credentials are not enabled on this server: set ASH_CREDENTIAL_KEY (at least 32 characters) where it starts.", 3600);
    return ctx.vault;
  };

  app.post("/api/credentials", async (event) => {
    const caller = principalOf(event);
    const body = validate(createSchema, await readJsonBody(event, ctx.config.maxBodyBytes));
    if (body.type === "bedrock" || body.type === "vertex") {
      let cloud;
      try {
        cloud = parseCloudCredential(body.type, body.key, "check");
      } catch (error) {
        if (error instanceof CloudCredentialError) throw badRequest(error.message);
        throw error;
      }
      // Another endpoint would have the server send signed calls wherever a tenant points it.
      if (hasEndpointOverride(cloud) && !caller.operator) throw forbidden(`Only the server's own key may store a ${body.type} credential with "endpoint" or "tokenEndpoint".`);
    }
    if (body.type === "custom" && !body.variable) throw unprocessable('A "custom" credential needs "variable": the environment variable its value is given as.');
    if (body.type !== "custom" && body.variable) throw unprocessable(`Only "custom" credentials take "variable"; an ${body.type} key goes to the model gateway, never into the sandbox.`);
    const id = randomUUID();
    const sealed = vault().seal(body.key, credentialBinding(id, caller.tenantId));
    const record: CredentialRecord = {
      id,
      tenantId: caller.tenantId,
      type: body.type,
      label: body.label ?? "",
      variable: body.variable ?? null,
      sealed: sealed.sealed,
      masterKeyId: sealed.masterKeyId,
      active: true,
      createdAt: Date.now(),
      lastUsedAt: null,
    };
    await insertCredential(ctx.db, record);
    return json(201, { credential: presentCredential(record) });
  });

  app.get("/api/credentials", async (event) => {
    vault();
    return { credentials: (await listCredentials(ctx.db, principalOf(event).tenantId)).map(presentCredential) };
  });

  app.delete("/api/credentials/:id", async (event) => {
    vault();
    const id = getRouterParam(event, "id")!;
    if (!(await deleteCredential(ctx.db, principalOf(event).tenantId, id))) throw notFound(`No credential with id "${id}".`);
    return new Response(null, { status: 204 });
  });
}
