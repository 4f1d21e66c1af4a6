import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { open } from "node:fs/promises";
import { join } from "node:path";
import type { AshDatabase } from "../db/types";
import { insertApiKey, listApiKeyHashes } from "../db/queries/api-keys";
import { isUniqueViolation } from "../db/errors";

export const INITIAL_KEY_FILE = "initial-api-key";

export function hashKey(key: string): Buffer {
  return createHash("sha256").update(key, "utf8").digest();
}

/**
 * Holds only hashes of the accepted keys. Keys are long random strings, so a
 * plain SHA-256 is enough; comparing hashes with timingSafeEqual, against
 * every stored hash, keeps the check's timing independent of the key.
 */
export class KeyRing {
  private constructor(private readonly hashes: Buffer[]) {}

  static async load(db: AshDatabase, options: { apiKey?: string; dataDir: string; log: (message: string) => void }): Promise<KeyRing> {
    // A key given in the environment is the only key: changing it revokes the old one.
    if (options.apiKey) return new KeyRing([hashKey(options.apiKey)]);
    const stored = await listApiKeyHashes(db);
    if (stored.length > 0) return new KeyRing(stored.map((h) => Buffer.from(h, "hex")));
    const key = `ash_${randomBytes(32).toString("base64url")}`;
    try {
      // A fixed id makes the first boot happen once, even when servers start together.
      await insertApiKey(db, { id: "initial", keyHash: hashKey(key).toString("hex"), label: "generated on first boot" });
    } catch (error) {
      if (!isUniqueViolation(error)) throw error;
      return new KeyRing((await listApiKeyHashes(db)).map((h) => Buffer.from(h, "hex")));
    }
    const file = await open(join(options.dataDir, INITIAL_KEY_FILE), "wx", 0o600);
    try {
      await file.writeFile(key + "\n");
      await file.sync();
    } finally {
      await file.close();
    }
    options.log(`No ASH_API_KEY was set: generated one and wrote it to ${INITIAL_KEY_FILE} in the data directory.`);
    return new KeyRing([hashKey(key)]);
  }

  verify(presented: string | undefined): boolean {
    if (!presented) return false;
    const candidate = hashKey(presented);
    let ok = false;
    for (const hash of this.hashes) ok = timingSafeEqual(candidate, hash) || ok;
    return ok;
  }
}

/** The key from `Authorization: Bearer <key>`. */
export function bearerKey(header: string | null): string | undefined {
  const match = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  return match?.[1];
}
