import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { redactUrl, resolveDatabaseTarget } from "../../src/db/url";

describe("database URLs", () => {
  it("defaults to SQLite at <dataDir>/ash.db", () => {
    expect(resolveDatabaseTarget(undefined, "/data")).toEqual({ dialect: "sqlite", path: join("/data", "ash.db") });
    expect(resolveDatabaseTarget("  ", "/data")).toEqual({ dialect: "sqlite", path: join("/data", "ash.db") });
    expect(resolveDatabaseTarget("sqlite:", "/data")).toEqual({ dialect: "sqlite", path: join("/data", "ash.db") });
    expect(resolveDatabaseTarget("sqlite:///srv/x.db", "/data")).toEqual({ dialect: "sqlite", path: "/srv/x.db" });
    expect(resolveDatabaseTarget("file:sub/y.db", "/data")).toEqual({ dialect: "sqlite", path: join("/data", "sub", "y.db") });
  });

  it("sends postgres:// and postgresql:// URLs, with their parameters, to PostgreSQL", () => {
    const url = "postgresql://ash:pw@db:5432/ash?sslmode=require";
    expect(resolveDatabaseTarget(url, "/data")).toEqual({ dialect: "postgres", url });
    expect(resolveDatabaseTarget("POSTGRES://db/ash", "/data").dialect).toBe("postgres");
  });

  it("refuses a malformed PostgreSQL URL without echoing its password", () => {
    expect(() => resolveDatabaseTarget("postgresql://ash:hunter2@[bad/ash", "/data")).toThrow(
      "the database URL is not a valid URL: postgresql://ash:***@[bad/ash",
    );
  });

  it("hides the password when printing a URL", () => {
    expect(redactUrl("postgresql://ash:s3cr%40t@db:5432/ash")).toBe("postgresql://ash:***@db:5432/ash");
    expect(redactUrl("postgresql://db:5432/ash")).toBe("postgresql://db:5432/ash");
    expect(redactUrl("postgresql://ash@db/ash")).toBe("postgresql://ash@db/ash");
    expect(redactUrl("postgresql://ash:p@ss:w@db/ash?x=a@b")).toBe("postgresql://ash:***@db/ash?x=a@b");
  });
});
