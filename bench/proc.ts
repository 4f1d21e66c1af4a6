import { readFileSync } from "node:fs";

/**
 * CPU seconds (user + system) a process has used so far, from /proc (clock
 * ticks of 1/100 s); with `reaped`, also the time of children it has waited for.
 */
export function cpuSeconds(pid: number, { reaped = false } = {}): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name, which may itself hold spaces and parentheses.
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(f[11]) + Number(f[12]) + (reaped ? Number(f[13]) + Number(f[14]) : 0);
  return ticks / 100;
}
