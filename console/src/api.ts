import { AshApiError, AshClient, AshConnectionError } from "../../src/client";

/**
 * The API key lives in this tab's sessionStorage only: never in a URL, never
 * sent anywhere but the Authorization header of this server's /api.
 */
const KEY_ITEM = "ash.console.key";

export function storedKey(): string | undefined {
  try {
    return sessionStorage.getItem(KEY_ITEM) || undefined;
  } catch {
    return undefined;
  }
}

export function rememberKey(key: string): void {
  sessionStorage.setItem(KEY_ITEM, key);
}

export function forgetKey(): void {
  sessionStorage.removeItem(KEY_ITEM);
}

export function clientFor(apiKey: string): AshClient {
  return new AshClient({ url: location.origin, apiKey });
}

/** Checks a key with a call every scope may make; answers the refusal's sentence, or undefined. */
export async function checkKey(key: string): Promise<string | undefined> {
  try {
    await clientFor(key).listSessions({ limit: 1 });
    return undefined;
  } catch (error) {
    if (error instanceof AshApiError && error.statusCode === 401) return "The server refused this key: it is wrong, revoked or expired.";
    return messageOf(error);
  }
}

/** True when the key stopped working (revoked or expired while signed in). */
export function isSignedOut(error: unknown): boolean {
  return error instanceof AshApiError && error.statusCode === 401;
}

export function messageOf(error: unknown): string {
  if (error instanceof AshConnectionError) return "The server does not answer.";
  if (error instanceof Error) return error.message;
  return String(error);
}
