/**
 * Start-up: wait until PostgreSQL answers. Under Compose the server often
 * starts before the database accepts connections, or before an init step has
 * created its database, so an unreachable server or a missing database is
 * retried (with a log line each time) until `timeoutMs`; an error that waiting
 * cannot fix (a wrong password) fails at once.
 */
import { consola } from "consola";
import pg from "pg";
import { exponentialDelay, formatSeconds, retry } from "../retry";
import { DatabaseUnavailableError, describeUnavailability, isUnavailableError } from "./errors";
import { redactUrl } from "./url";

const log = consola.withTag("db");

/** One connection attempt may take this long before it counts as failed. */
const ATTEMPT_TIMEOUT_MS = 10_000;
const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 2_000;

async function probe(config: pg.ClientConfig, timeoutMs: number): Promise<void> {
  const client = new pg.Client({ ...config, connectionTimeoutMillis: Math.max(1, timeoutMs) });
  client.on("error", () => {}); // a failure here is reported by connect()/query() below
  try {
    await client.connect();
    await client.query("SELECT 1");
  } finally {
    await client.end().catch(() => {});
  }
}

/** SQLSTATE 3D000: the database named in the URL does not exist (yet). */
function isMissingDatabase(err: unknown): boolean {
  return (err as { code?: string } | undefined)?.code === "3D000";
}

export async function waitForPostgres(config: pg.ClientConfig & { connectionString: string }, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const where = redactUrl(config.connectionString);
  let attempts = 0;
  await retry(
    async (attempt) => {
      attempts = attempt;
      await probe(config, Math.min(ATTEMPT_TIMEOUT_MS, deadline - Date.now()));
    },
    {
      attempts: Infinity,
      // Waiting cannot fix an error other than an unreachable server or a database not made yet (a wrong password).
      retryIf: (err) => isUnavailableError(err) || isMissingDatabase(err),
      delay: (attempt) => exponentialDelay(attempt, FIRST_DELAY_MS, MAX_DELAY_MS),
      onRetry: (err, _attempt, delay) => {
        const reason = describeUnavailability(err);
        if (Date.now() + delay >= deadline) throw new DatabaseUnavailableError(err, `PostgreSQL at ${where} was not reachable within ${formatSeconds(timeoutMs)} (${reason})`);
        log.warn(`database not reachable yet (${reason}); retrying in ${formatSeconds(delay)}`);
      },
    },
  ).catch((err) => {
    if (err instanceof DatabaseUnavailableError) throw err;
    throw new Error(`cannot use PostgreSQL at ${where}: ${describeUnavailability(err)}`, { cause: err });
  });
  if (attempts > 1) log.info(`database reachable after ${attempts} attempts`);
}
