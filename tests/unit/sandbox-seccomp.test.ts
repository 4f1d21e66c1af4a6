// The seccomp program, run by a small classic-BPF interpreter over made-up
// seccomp_data. (The real kernel runs it in tests/security/.)
import { describe, expect, it } from "vitest";
import {
  AUDIT_ARCH_AARCH64,
  AUDIT_ARCH_X86_64,
  BPF,
  CLONE_NEWNET,
  CLONE_NEWNS,
  CLONE_NEWPID,
  CLONE_NEWUSER,
  DENIED_SYSCALLS,
  ENOSYS,
  EPERM,
  SECCOMP_RET_ALLOW,
  SECCOMP_RET_ERRNO,
  SECCOMP_RET_KILL_PROCESS,
  SYSCALL_NUMBERS,
  X32_SYSCALL_BIT,
  sandboxSeccompInstructions,
  sandboxSeccompProgram,
  type BpfInstruction,
  type SeccompArch,
} from "../../src/sandbox/seccomp";

const AUDIT_ARCH_I386 = 0x40000003;
const ARCHES: Record<SeccompArch, number> = { x86_64: AUDIT_ARCH_X86_64, aarch64: AUDIT_ARCH_AARCH64 };

/** struct seccomp_data, little-endian. */
function seccompData(arch: number, nr: number, args: bigint[] = []): Buffer {
  const data = Buffer.alloc(64);
  data.writeUInt32LE(nr >>> 0, 0);
  data.writeUInt32LE(arch >>> 0, 4);
  data.writeBigUInt64LE(0x400000n, 8);
  args.forEach((arg, i) => data.writeBigUInt64LE(arg, 16 + 8 * i));
  return data;
}

/** Runs the subset of classic BPF a seccomp filter may use here; refuses anything else. */
function run(program: BpfInstruction[], data: Buffer): number {
  let a = 0;
  let pc = 0;
  for (let steps = 0; steps < 10_000; steps++) {
    const ins = program[pc];
    if (!ins) throw new Error(`fell off the program at ${pc}`);
    switch (ins.code) {
      case BPF.LD_W_ABS:
        if (ins.k % 4 !== 0 || ins.k + 4 > data.length) throw new Error(`bad load offset ${ins.k}`);
        a = data.readUInt32LE(ins.k);
        pc++;
        break;
      case BPF.JEQ_K:
        pc += 1 + (a === ins.k ? ins.jt : ins.jf);
        break;
      case BPF.JGE_K:
        pc += 1 + (a >= ins.k ? ins.jt : ins.jf);
        break;
      case BPF.JSET_K:
        pc += 1 + ((a & ins.k) >>> 0 !== 0 ? ins.jt : ins.jf);
        break;
      case BPF.RET_K:
        return ins.k >>> 0;
      default:
        throw new Error(`unexpected opcode ${ins.code.toString(16)} at ${pc}`);
    }
  }
  throw new Error("no return");
}

const program = sandboxSeccompInstructions();
const decide = (arch: number, nr: number, args: bigint[] = []) => run(program, seccompData(arch, nr, args));
const errno = (n: number) => (SECCOMP_RET_ERRNO | n) >>> 0;

describe("sandbox seccomp program", () => {
  it("is what bwrap reads: 8-byte sock_filter records, short enough for one pipe write", () => {
    const bytes = sandboxSeccompProgram();
    expect(bytes.length).toBe(program.length * 8);
    expect(program.length).toBeLessThan(4096); // BPF_MAXINSNS
    const first = program[0]!;
    expect([bytes.readUInt16LE(0), bytes[2], bytes[3], bytes.readUInt32LE(4)]).toEqual([first.code, first.jt, first.jf, first.k]);
  });

  it("ends every path in a return (no jump past the end)", () => {
    program.forEach((ins, i) => {
      if (ins.code === BPF.RET_K) return;
      const furthest = i + 1 + Math.max(ins.jt, ins.jf);
      expect(furthest).toBeLessThan(program.length);
    });
    expect(program.at(-1)!.code).toBe(BPF.RET_K);
  });

  describe.each(Object.keys(ARCHES) as SeccompArch[])("on %s", (arch) => {
    const nr = SYSCALL_NUMBERS[arch];
    const audit = ARCHES[arch];

    it.each([...DENIED_SYSCALLS])("refuses %s with EPERM", (name) => {
      expect(decide(audit, nr[name])).toBe(errno(EPERM));
    });

    it("answers clone3 with ENOSYS, so libc falls back to clone", () => {
      expect(decide(audit, nr.clone3)).toBe(errno(ENOSYS));
    });

    it.each([
      ["CLONE_NEWUSER", CLONE_NEWUSER],
      ["CLONE_NEWNS", CLONE_NEWNS],
      ["CLONE_NEWPID", CLONE_NEWPID],
      ["CLONE_NEWNET", CLONE_NEWNET],
      ["CLONE_NEWUSER with fork flags", CLONE_NEWUSER | 0x01200011],
    ])("refuses clone with %s", (_name, flags) => {
      expect(decide(audit, nr.clone, [BigInt(flags)])).toBe(errno(EPERM));
    });

    it.each([
      ["fork (SIGCHLD | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID)", 0x01200011],
      ["a thread (CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | ...)", 0x003d0f00],
      ["vfork (CLONE_VM | CLONE_VFORK | SIGCHLD)", 0x00004111],
      ["flags with high bits only above 32", 0x1_0000_0011],
    ])("allows clone for %s", (_name, flags) => {
      expect(decide(audit, nr.clone, [BigInt(flags)])).toBe(SECCOMP_RET_ALLOW);
    });

    it("allows ordinary calls, ptrace and personality among them", () => {
      const ordinary = arch === "x86_64" ? [0, 1, 2, 3, 9, 57, 59, 61, 101, 135, 231, 257] : [56, 57, 63, 64, 93, 117, 92, 221, 222, 260];
      for (const call of ordinary) expect(decide(audit, call)).toBe(SECCOMP_RET_ALLOW);
    });

    it("does not confuse another arch's numbers: each block checks its own", () => {
      const other = arch === "x86_64" ? SYSCALL_NUMBERS.aarch64 : SYSCALL_NUMBERS.x86_64;
      // aarch64's unshare (97) is x86_64's getrusage; x86_64's unshare (272) is aarch64's allowed call.
      const denied = new Set(DENIED_SYSCALLS.map((name) => nr[name]));
      if (!denied.has(other.unshare) && other.unshare !== nr.clone && other.unshare !== nr.clone3) {
        expect(decide(audit, other.unshare)).toBe(SECCOMP_RET_ALLOW);
      }
    });
  });

  it("answers x32 calls with ENOSYS, as a kernel without x32 would", () => {
    expect(decide(AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 0)).toBe(errno(ENOSYS));
    expect(decide(AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | SYSCALL_NUMBERS.x86_64.unshare)).toBe(errno(ENOSYS));
  });

  it("kills a process that calls through another arch (i386 compat, anything unknown)", () => {
    expect(decide(AUDIT_ARCH_I386, 1)).toBe(SECCOMP_RET_KILL_PROCESS);
    expect(decide(AUDIT_ARCH_I386, 310 /* i386 unshare */)).toBe(SECCOMP_RET_KILL_PROCESS);
    expect(decide(0, 0)).toBe(SECCOMP_RET_KILL_PROCESS);
  });
});
