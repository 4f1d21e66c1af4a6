import { describe, expect, it } from "vitest";
import { normalizeKey } from "unstorage";
import { assertSessionId, escapeSegment, fileKey, normalizeRelativePath, unescapeSegment } from "../../src/sandbox/snapshot-keys";

describe("snapshot keys", () => {
  it("maps awkward file names to one storage key each and back", () => {
    const names = ["plain.txt", "a:b", "what?", "back\\slash", "100%", "dots..", "trailing.", ".hidden", "x%3Ay", "naïve ☃.md"];
    const keys = new Set<string>();
    for (const name of names) {
      const segment = escapeSegment(name);
      expect(unescapeSegment(segment)).toBe(name);
      // unstorage must keep the key as one segment (no split, nothing dropped).
      expect(normalizeKey(`s1:workspace:${segment}`)).toBe(`s1:workspace:${segment}`);
      expect(segment.endsWith("..")).toBe(false);
      keys.add(segment);
    }
    expect(keys.size).toBe(names.length);
  });

  it("keeps ordinary names readable", () => {
    expect(fileKey("s1:workspace", "src/index.ts")).toBe("s1:workspace:src:index.ts");
  });

  it("refuses unsafe session ids and paths", () => {
    for (const bad of ["", "..", "../x", "a/b", "a:b", "a b", ".hidden", "x".repeat(200), "end."]) {
      expect(() => assertSessionId(bad)).toThrow(/Invalid session id/);
    }
    expect(() => assertSessionId("sess_01-AB.c")).not.toThrow();
    expect(normalizeRelativePath("/a//b/./c")).toBe("a/b/c");
    expect(() => normalizeRelativePath("a/../../etc/passwd")).toThrow(/Invalid snapshot path/);
    expect(() => normalizeRelativePath("")).toThrow(/Invalid snapshot path/);
  });
});
