import { createServer } from "node:net";
import pg from "pg";
import { describe, expect, it } from "vitest";
import {
  DatabaseUnavailableError,
  describeUnavailability,
  isRetryableTransactionError,
  isUnavailableError,
  isUniqueViolation,
  toDatabaseError,
} from "../../src/db/errors";

async function refusedConnectionError(): Promise<unknown> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  const client = new pg.Client({ connectionString: `postgresql://ash:ash@127.0.0.1:${port}/ash` });
  return client.connect().then(
    () => new Error("unexpectedly connected"),
    (err: unknown) => err,
  );
}

describe("database error classification", () => {
  it("wraps a refused connection in DatabaseUnavailableError, keeping the cause", async () => {
    const raw = await refusedConnectionError();
    expect(isUnavailableError(raw)).toBe(true);
    const wrapped = toDatabaseError(raw);
    expect(wrapped).toBeInstanceOf(DatabaseUnavailableError);
    expect(wrapped).toMatchObject({
      name: "DatabaseUnavailableError",
      code: "DATABASE_UNAVAILABLE",
      message: "database unavailable: connection refused",
      cause: raw,
    });
    expect(toDatabaseError(wrapped)).toBe(wrapped);
  });

  it("treats server shutdown, start-up and connection-class SQLSTATEs as unavailability", () => {
    for (const [code, reason] of [
      ["57P01", "server shutting down"],
      ["57P03", "server starting up"],
      ["08006", "connection failure (08006)"],
      ["53300", "too many connections"],
    ]) {
      const err = Object.assign(new Error("server said no"), { code });
      expect(isUnavailableError(err)).toBe(true);
      expect(describeUnavailability(err)).toBe(reason);
    }
    expect(isUnavailableError(new Error("Connection terminated unexpectedly"))).toBe(true);
    expect(isUnavailableError(new Error("timeout exceeded when trying to connect"))).toBe(true);
  });

  it("leaves ordinary SQL errors alone", () => {
    const syntax = Object.assign(new Error('syntax error at or near "SELEC"'), { code: "42601" });
    expect(isUnavailableError(syntax)).toBe(false);
    expect(toDatabaseError(syntax)).toBe(syntax);
    expect(isUnavailableError(undefined)).toBe(false);
    expect(isUnavailableError("ECONNREFUSED")).toBe(false);
  });

  it("finds the code through a cause chain and AggregateError members", () => {
    const inner = Object.assign(new Error("connect ECONNREFUSED ::1:5432"), { code: "ECONNREFUSED" });
    expect(isUnavailableError(new AggregateError([inner], "all attempts failed"))).toBe(true);
    expect(isUniqueViolation(new Error("wrapped", { cause: Object.assign(new Error("dup"), { code: "23505" }) }))).toBe(true);
  });

  it("knows which failures ask for the transaction to run again", () => {
    expect(isRetryableTransactionError(Object.assign(new Error("restart transaction"), { code: "40001" }))).toBe(true);
    expect(isRetryableTransactionError(Object.assign(new Error("deadlock detected"), { code: "40P01" }))).toBe(true);
    expect(isRetryableTransactionError(Object.assign(new Error("dup"), { code: "23505" }))).toBe(false);
  });
});
