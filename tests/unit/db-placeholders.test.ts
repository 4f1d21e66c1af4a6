import { describe, expect, it } from "vitest";
import { toNumberedPlaceholders } from "../../src/db/placeholders";

describe("toNumberedPlaceholders", () => {
  it("numbers each ? in order", () => {
    expect(toNumberedPlaceholders("SELECT * FROM t WHERE a = ? AND b IN (?, ?)")).toBe(
      "SELECT * FROM t WHERE a = $1 AND b IN ($2, $3)",
    );
  });

  it("leaves SQL without placeholders unchanged", () => {
    const sql = "SELECT 1 FROM t WHERE x = 'a'";
    expect(toNumberedPlaceholders(sql)).toBe(sql);
  });

  it("keeps ? inside string literals, including ones with escaped quotes", () => {
    expect(toNumberedPlaceholders("SELECT 'what?', 'it''s ?' , ? FROM t")).toBe(
      "SELECT 'what?', 'it''s ?' , $1 FROM t",
    );
  });

  it("keeps ? inside E'' strings with backslash-escaped quotes", () => {
    expect(toNumberedPlaceholders("SELECT E'a\\'?', ?")).toBe("SELECT E'a\\'?', $1");
  });

  it("keeps ? inside quoted identifiers, comments and dollar-quoted bodies", () => {
    const sql = [
      'SELECT "odd?name", ? -- trailing ? comment',
      "/* block ? /* nested ? */ still ? */ , ?",
      "$$ body ? $$, $fn$ other ? $fn$, ?",
    ].join("\n");
    expect(toNumberedPlaceholders(sql)).toBe(
      [
        'SELECT "odd?name", $1 -- trailing ? comment',
        "/* block ? /* nested ? */ still ? */ , $2",
        "$$ body ? $$, $fn$ other ? $fn$, $3",
      ].join("\n"),
    );
  });

  it("refuses a query that mixes ? with $n placeholders", () => {
    expect(() => toNumberedPlaceholders("SELECT $1, ?")).toThrow(/cannot mix/);
  });

  it("leaves queries written with $n alone", () => {
    expect(toNumberedPlaceholders("SELECT $1, $2")).toBe("SELECT $1, $2");
  });
});
