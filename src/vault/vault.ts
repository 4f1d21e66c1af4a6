import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";

/**
 * Seals secrets (model keys) for storage: AES-256-GCM under a key derived
 * with HKDF-SHA256 from the operator's master key (ASH_CREDENTIAL_KEY) and a
 * random salt per secret. The additional data binds a sealed value to where
 * it belongs (its credential id and tenant), so a row copied onto another
 * does not open. A master key is named by an id derived from it, so rows
 * sealed under a previous key can be found and sealed again (rotation).
 */

const SALT = 16;
const IV = 12;
const TAG = 16;
const INFO = "ash credential v1";

/** Shorter master keys are refused: they are typed by people, and this one guards every model key. */
export const MIN_MASTER_KEY_LENGTH = 32;

export class VaultError extends Error {
  override name = "VaultError";
}

function masterKeyId(master: string): string {
  return Buffer.from(hkdfSync("sha256", Buffer.from(master, "utf8"), Buffer.alloc(0), "ash credential key id", 8)).toString("hex");
}

function derive(master: string, salt: Buffer): Buffer {
  return Buffer.from(hkdfSync("sha256", Buffer.from(master, "utf8"), salt, INFO, 32));
}

export interface Sealed {
  /** base64url of salt | iv | tag | ciphertext. */
  sealed: string;
  masterKeyId: string;
}

export class Vault {
  readonly keyId: string;
  readonly previousKeyId?: string;

  constructor(
    private readonly master: string,
    private readonly previous?: string,
  ) {
    for (const [name, value] of [["ASH_CREDENTIAL_KEY", master], ["ASH_CREDENTIAL_KEY_PREVIOUS", previous]] as const) {
      if (value !== undefined && value.length < MIN_MASTER_KEY_LENGTH) throw new VaultError(`${name} must be at least ${MIN_MASTER_KEY_LENGTH} characters long`);
    }
    this.keyId = masterKeyId(master);
    if (previous !== undefined) this.previousKeyId = masterKeyId(previous);
  }

  seal(plaintext: string, bindTo: string): Sealed {
    const salt = randomBytes(SALT);
    const iv = randomBytes(IV);
    const cipher = createCipheriv("aes-256-gcm", derive(this.master, salt), iv);
    cipher.setAAD(Buffer.from(bindTo, "utf8"));
    const body = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
    return { sealed: Buffer.concat([salt, iv, cipher.getAuthTag(), body]).toString("base64url"), masterKeyId: this.keyId };
  }

  /** Opens a value sealed under the current or the previous master key; throws VaultError otherwise. */
  open(value: Sealed, bindTo: string): string {
    const master = value.masterKeyId === this.keyId ? this.master : value.masterKeyId === this.previousKeyId ? this.previous : undefined;
    if (master === undefined) throw new VaultError("sealed under a master key this server does not have (set ASH_CREDENTIAL_KEY_PREVIOUS to the old key to rotate)");
    const raw = Buffer.from(value.sealed, "base64url");
    if (raw.length < SALT + IV + TAG) throw new VaultError("sealed value is cut short");
    const salt = raw.subarray(0, SALT);
    const iv = raw.subarray(SALT, SALT + IV);
    const tag = raw.subarray(SALT + IV, SALT + IV + TAG);
    const decipher = createDecipheriv("aes-256-gcm", derive(master, salt), iv);
    decipher.setAAD(Buffer.from(bindTo, "utf8"));
    decipher.setAuthTag(tag);
    try {
      return Buffer.concat([decipher.update(raw.subarray(SALT + IV + TAG)), decipher.final()]).toString("utf8");
    } catch {
      throw new VaultError("sealed value does not open: altered, or bound to another credential");
    }
  }

  /** True when `value` was sealed under the previous master key and should be sealed again. */
  isStale(value: Sealed): boolean {
    return value.masterKeyId !== this.keyId;
  }
}
