/**
 * The seccomp filter every bwrap sandbox runs under (bwrap `--seccomp FD`
 * loads it just before it starts the command, so setpriv and everything
 * after it are filtered; bwrap's own mounts happen before).
 *
 * It is a classic BPF program over `struct seccomp_data`:
 *
 *   offset 0   u32 nr     system call number
 *   offset 4   u32 arch   AUDIT_ARCH_* of the calling convention
 *   offset 8   u64 instruction_pointer
 *   offset 16  u64 args[6] (little-endian on both arches: args[0]'s low half is at 16)
 *
 * Each instruction is 8 bytes in host byte order: u16 code, u8 jt, u8 jf,
 * u32 k. Jumps are relative to the next instruction, forward only, at most
 * 255 ahead. Layout of the program:
 *
 *   ld arch
 *   jeq x86_64  -> x86_64 block, else
 *   jeq aarch64 -> aarch64 block, else
 *   ret KILL_PROCESS                (i386 compat calls, anything else)
 *   per arch block:
 *     ld nr
 *     [x86_64] jge 0x40000000 -> ret ENOSYS   (x32 calls: as on a kernel without x32)
 *     jeq <denied nr> -> ret EPERM             (one per denied call)
 *     jeq clone3 -> ret ENOSYS                 (its flags are in memory seccomp cannot read;
 *                                               ENOSYS makes libc fall back to clone)
 *     jeq clone -> check flags, else ret ALLOW
 *     check flags: ld args[0] low half; jset NAMESPACE_FLAGS -> ret EPERM, else ret ALLOW
 */

export const AUDIT_ARCH_X86_64 = 0xc000003e;
export const AUDIT_ARCH_AARCH64 = 0xc00000b7;
/** Set in the number of an x32 system call (which reports AUDIT_ARCH_X86_64). */
export const X32_SYSCALL_BIT = 0x40000000;

export const SECCOMP_RET_KILL_PROCESS = 0x80000000;
export const SECCOMP_RET_ERRNO = 0x00050000;
export const SECCOMP_RET_ALLOW = 0x7fff0000;
export const EPERM = 1;
export const ENOSYS = 38;

// BPF opcodes (linux/bpf_common.h).
const BPF_LD_W_ABS = 0x00 | 0x00 | 0x20;
const BPF_JMP_JEQ_K = 0x05 | 0x10 | 0x00;
const BPF_JMP_JGE_K = 0x05 | 0x30 | 0x00;
const BPF_JMP_JSET_K = 0x05 | 0x40 | 0x00;
const BPF_RET_K = 0x06 | 0x00;
export const BPF = { LD_W_ABS: BPF_LD_W_ABS, JEQ_K: BPF_JMP_JEQ_K, JGE_K: BPF_JMP_JGE_K, JSET_K: BPF_JMP_JSET_K, RET_K: BPF_RET_K } as const;

export const CLONE_NEWNS = 0x00020000;
export const CLONE_NEWCGROUP = 0x02000000;
export const CLONE_NEWUTS = 0x04000000;
export const CLONE_NEWIPC = 0x08000000;
export const CLONE_NEWUSER = 0x10000000;
export const CLONE_NEWPID = 0x20000000;
export const CLONE_NEWNET = 0x40000000;
/** Namespace flags refused in clone(). (CLONE_NEWTIME shares its bit with the exit signal there; clone3 and unshare are refused whole.) */
export const CLONE_NAMESPACE_FLAGS = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET;

export type SeccompArch = "x86_64" | "aarch64";

/**
 * Calls refused with EPERM: namespaces and mounts (a new user namespace
 * hands out root-in-namespace and with it much of the kernel), the keyring,
 * eBPF, perf, userfaultfd (a tool for kernel exploits), io_uring (a large
 * surface that bypasses this filter's view of calls), kernel modules, kexec.
 */
export const DENIED_SYSCALLS = [
  "unshare", "setns", "mount", "umount2", "pivot_root",
  "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "open_tree_attr",
  "add_key", "request_key", "keyctl",
  "bpf", "perf_event_open", "userfaultfd",
  "io_uring_setup", "io_uring_enter", "io_uring_register",
  "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
] as const;

export type SyscallName = (typeof DENIED_SYSCALLS)[number] | "clone" | "clone3";

/** From asm/unistd_64.h (x86_64) and asm-generic/unistd.h (aarch64). */
export const SYSCALL_NUMBERS: Record<SeccompArch, Record<SyscallName, number>> = {
  x86_64: {
    unshare: 272, setns: 308, mount: 165, umount2: 166, pivot_root: 155,
    move_mount: 429, open_tree: 428, fsopen: 430, fsconfig: 431, fsmount: 432, fspick: 433, mount_setattr: 442, open_tree_attr: 467,
    add_key: 248, request_key: 249, keyctl: 250,
    bpf: 321, perf_event_open: 298, userfaultfd: 323,
    io_uring_setup: 425, io_uring_enter: 426, io_uring_register: 427,
    kexec_load: 246, kexec_file_load: 320, init_module: 175, finit_module: 313, delete_module: 176,
    clone: 56, clone3: 435,
  },
  aarch64: {
    unshare: 97, setns: 268, mount: 40, umount2: 39, pivot_root: 41,
    move_mount: 429, open_tree: 428, fsopen: 430, fsconfig: 431, fsmount: 432, fspick: 433, mount_setattr: 442, open_tree_attr: 467,
    add_key: 217, request_key: 218, keyctl: 219,
    bpf: 280, perf_event_open: 241, userfaultfd: 282,
    io_uring_setup: 425, io_uring_enter: 426, io_uring_register: 427,
    kexec_load: 104, kexec_file_load: 294, init_module: 105, finit_module: 273, delete_module: 106,
    clone: 220, clone3: 435,
  },
};

export interface BpfInstruction {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

type Target = string | 0; // a label, or 0: the next instruction
type Pending =
  | { kind: "ld"; offset: number }
  | { kind: "jmp"; code: number; k: number; jt: Target; jf: Target }
  | { kind: "ret"; k: number }
  | { kind: "label"; name: string };

/** Resolves labels into the forward relative offsets classic BPF wants. */
function assemble(items: Pending[]): BpfInstruction[] {
  const labels = new Map<string, number>();
  let index = 0;
  for (const item of items) {
    if (item.kind === "label") labels.set(item.name, index);
    else index++;
  }
  const out: BpfInstruction[] = [];
  const offset = (target: Target, at: number) => {
    if (target === 0) return 0;
    const to = labels.get(target);
    if (to === undefined) throw new Error(`seccomp: unknown label ${target}`);
    const delta = to - at - 1;
    if (delta < 0 || delta > 255) throw new Error(`seccomp: jump to ${target} out of range (${delta})`);
    return delta;
  };
  for (const item of items) {
    if (item.kind === "label") continue;
    const at = out.length;
    if (item.kind === "ld") out.push({ code: BPF_LD_W_ABS, jt: 0, jf: 0, k: item.offset });
    else if (item.kind === "ret") out.push({ code: BPF_RET_K, jt: 0, jf: 0, k: item.k >>> 0 });
    else out.push({ code: item.code, jt: offset(item.jt, at), jf: offset(item.jf, at), k: item.k >>> 0 });
  }
  return out;
}

function archBlock(arch: SeccompArch): Pending[] {
  const nr = SYSCALL_NUMBERS[arch];
  const p = `${arch}_`;
  const items: Pending[] = [{ kind: "label", name: `${p}start` }, { kind: "ld", offset: 0 }];
  if (arch === "x86_64") items.push({ kind: "jmp", code: BPF_JMP_JGE_K, k: X32_SYSCALL_BIT, jt: `${p}enosys`, jf: 0 });
  for (const name of DENIED_SYSCALLS) items.push({ kind: "jmp", code: BPF_JMP_JEQ_K, k: nr[name], jt: `${p}eperm`, jf: 0 });
  items.push(
    { kind: "jmp", code: BPF_JMP_JEQ_K, k: nr.clone3, jt: `${p}enosys`, jf: 0 },
    { kind: "jmp", code: BPF_JMP_JEQ_K, k: nr.clone, jt: 0, jf: `${p}allow` },
    { kind: "ld", offset: 16 },
    { kind: "jmp", code: BPF_JMP_JSET_K, k: CLONE_NAMESPACE_FLAGS, jt: `${p}eperm`, jf: 0 },
    { kind: "label", name: `${p}allow` },
    { kind: "ret", k: SECCOMP_RET_ALLOW },
    { kind: "label", name: `${p}eperm` },
    { kind: "ret", k: SECCOMP_RET_ERRNO | EPERM },
    { kind: "label", name: `${p}enosys` },
    { kind: "ret", k: SECCOMP_RET_ERRNO | ENOSYS },
  );
  return items;
}

/** The filter as instructions (for tests and inspection). */
export function sandboxSeccompInstructions(): BpfInstruction[] {
  return assemble([
    { kind: "ld", offset: 4 },
    { kind: "jmp", code: BPF_JMP_JEQ_K, k: AUDIT_ARCH_X86_64, jt: "x86_64_start", jf: 0 },
    { kind: "jmp", code: BPF_JMP_JEQ_K, k: AUDIT_ARCH_AARCH64, jt: "aarch64_start", jf: 0 },
    { kind: "ret", k: SECCOMP_RET_KILL_PROCESS },
    ...archBlock("x86_64"),
    ...archBlock("aarch64"),
  ]);
}

let cached: Buffer | undefined;

/** The filter as bwrap reads it from `--seccomp FD`: the raw `struct sock_filter` array. */
export function sandboxSeccompProgram(): Buffer {
  if (cached) return cached;
  const instructions = sandboxSeccompInstructions();
  const buffer = Buffer.alloc(instructions.length * 8);
  const le = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
  instructions.forEach((ins, i) => {
    const at = i * 8;
    if (le) {
      buffer.writeUInt16LE(ins.code, at);
      buffer.writeUInt32LE(ins.k, at + 4);
    } else {
      buffer.writeUInt16BE(ins.code, at);
      buffer.writeUInt32BE(ins.k, at + 4);
    }
    buffer.writeUInt8(ins.jt, at + 2);
    buffer.writeUInt8(ins.jf, at + 3);
  });
  cached = buffer;
  return buffer;
}
