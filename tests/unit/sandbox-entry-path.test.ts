import { describe, expect, it } from "vitest";
import { entryPath } from "../../src/sandbox/workspace-io";

describe("archive entry names (entryPath)", () => {
  it("takes tar's plain names as they are, without its leading ./", () => {
    expect(entryPath("./src/index.ts")).toBe("src/index.ts");
    expect(entryPath("src/index.ts")).toBe("src/index.ts");
    for (const name of [".hidden/x", "..a", "a..", "a/.b", "a/..b/c", "...", "a/...", "./a/ b", "naïve ☃.md", "back\\..", "./.a"]) {
      expect(entryPath(name)).toBe(name.replace(/^\.\//, ""));
    }
  });

  it("normalizes empty and '.' parts and a trailing slash", () => {
    expect(entryPath("a//b")).toBe("a/b");
    expect(entryPath("./a/./b")).toBe("a/b");
    expect(entryPath(".//a")).toBe("a");
    expect(entryPath("./a/b/")).toBe("a/b");
  });

  it("refuses names that leave the workspace, are absolute, empty or hold a NUL", () => {
    for (const name of ["/etc/passwd", "..", "./..", "a/..", "a/../b", "a/b/..", "../x", "./", ".", "", "a\0b", "./a\0"]) {
      expect(entryPath(name)).toBeNull();
    }
  });
});
