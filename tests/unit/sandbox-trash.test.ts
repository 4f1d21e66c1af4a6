/**
 * The trash a destroyed sandbox's folder goes to: gone from its path at once,
 * removed in the background without following anything the sandbox left in it,
 * and emptied at the next start after a crash.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { Trash } from "../../src/sandbox/trash";

const root = mkdtempSync(join(tmpdir(), "ash-trash-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A sandbox folder as a hostile sandbox may leave it: many files, deep folders, links leading out. */
function sandboxFolder(name: string, victim: string): string {
  const dir = join(root, "sandboxes", name);
  for (let d = 0; d < 20; d++) {
    mkdirSync(join(dir, "workspace", `d${d}`), { recursive: true });
    for (let f = 0; f < 50; f++) writeFileSync(join(dir, "workspace", `d${d}`, `f${f}`), "x");
  }
  let deep = join(dir, "workspace");
  for (let i = 0; i < 40; i++) deep = join(deep, "n".repeat(100));
  mkdirSync(deep, { recursive: true });
  symlinkSync(victim, join(dir, "workspace", "to-victim-file"));
  symlinkSync(join(victim, ".."), join(dir, "workspace", "to-victim-folder"));
  return dir;
}

describe("the sandbox trash", () => {
  it("takes a folder from its path at once and removes it in the background, never following its links", async () => {
    const victimDir = join(root, "victim");
    mkdirSync(victimDir, { recursive: true });
    const victim = join(victimDir, "keep.txt");
    writeFileSync(victim, "mine");
    const trashDir = join(root, "trash");
    const trash = new Trash(trashDir);
    const folders = ["a", "b", "c"].map((name) => sandboxFolder(name, victim));
    for (const folder of folders) {
      await trash.discard(folder);
      // The path is free as soon as discard returns (a new sandbox of that id could be made there).
      expect(existsSync(folder)).toBe(false);
    }
    await trash.settle();
    expect(trash.pending).toBe(0);
    expect(readdirSync(trashDir)).toEqual([]);
    expect(readFileSync(victim, "utf8")).toBe("mine");
    expect(readdirSync(victimDir)).toEqual(["keep.txt"]);
  });

  it("does nothing for a folder already gone, and removes in place what it cannot move", async () => {
    const trash = new Trash(join(root, "trash-2"));
    await trash.discard(join(root, "sandboxes", "never-made"));
    expect(trash.pending).toBe(0);
    // The trash's own path is taken by a file: the folder cannot be moved there, so it is removed where it is.
    writeFileSync(join(root, "not-a-folder"), "");
    const blocked = new Trash(join(root, "not-a-folder"));
    const folder = sandboxFolder("d", join(root, "victim", "keep.txt"));
    await blocked.discard(folder);
    expect(existsSync(folder)).toBe(false);
    expect(blocked.pending).toBe(0);
  });

  it("empties what an earlier run left in it, and says how many folders it found", async () => {
    const trashDir = join(root, "trash-3");
    mkdirSync(trashDir);
    for (const name of ["x.1", "y.2"]) {
      mkdirSync(join(trashDir, name, "workspace"), { recursive: true });
      writeFileSync(join(trashDir, name, "workspace", "file"), "left");
    }
    const trash = new Trash(trashDir);
    expect(await trash.empty()).toBe(2);
    expect(readdirSync(trashDir)).toEqual([]);
    expect(await new Trash(join(root, "no-trash-yet")).empty()).toBe(0);
  });
});
