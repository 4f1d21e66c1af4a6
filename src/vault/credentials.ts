import type { Queryable } from "../db/types";
import { credentialsSealedUnder, getCredential, resealCredential, touchCredential } from "../db/queries/credentials";
import { Vault, VaultError } from "./vault";
import type { CredentialType } from "../contract";

/** The additional data a credential is sealed with: it opens only as this id of this tenant. */
export function credentialBinding(id: string, tenantId: string): string {
  return `credential:${tenantId}:${id}`;
}

/** An opened credential, as the session layer uses it. */
export interface OpenedCredential {
  id: string;
  type: CredentialType;
  value: string;
  variable: string | null;
}

/** Opens a tenant's credential; undefined when it does not exist there (or is not active). */
export async function openCredential(db: Queryable, vault: Vault, tenantId: string, id: string): Promise<OpenedCredential | undefined> {
  const row = await getCredential(db, tenantId, id);
  if (!row || !row.active) return undefined;
  const value = vault.open({ sealed: row.sealed, masterKeyId: row.masterKeyId }, credentialBinding(row.id, row.tenantId));
  void touchCredential(db, row.id, Date.now()).catch(() => undefined);
  return { id: row.id, type: row.type as CredentialType, value, variable: row.variable };
}

/**
 * Rotation: seals again, under the current master key, every credential
 * sealed under the previous one (ASH_CREDENTIAL_KEY_PREVIOUS). Answers how
 * many were moved; those under a key the server does not have are left and
 * counted as `unreadable`.
 */
export async function resealCredentials(db: Queryable, vault: Vault): Promise<{ resealed: number; unreadable: number }> {
  let resealed = 0;
  let unreadable = 0;
  for (const row of await credentialsSealedUnder(db, vault.keyId)) {
    const binding = credentialBinding(row.id, row.tenantId);
    let plain: string;
    try {
      plain = vault.open({ sealed: row.sealed, masterKeyId: row.masterKeyId }, binding);
    } catch (error) {
      if (error instanceof VaultError) {
        unreadable++;
        continue;
      }
      throw error;
    }
    if (await resealCredential(db, row.id, row.sealed, vault.seal(plain, binding))) resealed++;
  }
  return { resealed, unreadable };
}
