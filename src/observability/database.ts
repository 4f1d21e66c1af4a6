import { isUnavailableError } from "../db/errors";
import type { AshDatabase } from "../db/types";
import type { Metrics } from "./metrics";

/**
 * The same database, with every operation that fails because the database is
 * unreachable or busy counted in `ash_database_errors_total` (a failed
 * `ping` counts too). Errors the caller expects, such as a unique-key
 * conflict, are not counted. A transaction counts once, however many of its
 * statements failed.
 */
export function observeDatabase(db: AshDatabase, metrics: Pick<Metrics, "databaseError">): AshDatabase {
  const counted = <T>(promise: Promise<T>): Promise<T> =>
    promise.catch((error) => {
      if (isUnavailableError(error)) metrics.databaseError();
      throw error;
    });
  return {
    get dialect() {
      return db.dialect;
    },
    get db0() {
      return db.db0;
    },
    all: (sql, params) => counted(db.all(sql, params)),
    get: (sql, params) => counted(db.get(sql, params)),
    run: (sql, params) => counted(db.run(sql, params)),
    transaction: (fn) => counted(db.transaction(fn)),
    ping: async () => {
      const up = await db.ping();
      if (!up) metrics.databaseError();
      return up;
    },
    close: () => db.close(),
  };
}
