/**
 * Facts about the host that the argv builder must not look up itself (it is pure): the QEMU binary
 * and its version, the TSC frequency, whether /dev/kvm can be opened. Each is read once per process.
 */
import { accessSync, constants, readFileSync, statSync } from "node:fs";
import { delimiter, join } from "node:path";
import { runCommand } from "../lib/process.js";
import { VmstackError } from "../lib/errors.js";

export function qemuBinary(env: NodeJS.ProcessEnv = process.env): string {
  return env["VMSTACK_QEMU"] ?? "qemu-system-x86_64";
}

let versionCache: string | undefined;

/** "7.2.22" from `qemu-system-x86_64 --version`. */
export async function qemuVersion(binary = qemuBinary()): Promise<string> {
  if (versionCache !== undefined) return versionCache;
  let out: string;
  try {
    out = (await runCommand([binary, "--version"], "QEMU")).toString();
  } catch (e) {
    throw new VmstackError("QEMU_MISSING", `QEMU is not usable (${binary}); install it with ./setup or apt-get install qemu-system-x86`, { cause: e });
  }
  const m = /version (\d+\.\d+\.\d+)/.exec(out);
  versionCache = m?.[1] ?? out.trim().split("\n")[0] ?? "unknown";
  return versionCache;
}

/**
 * Which QEMU binary this is, without running it: its resolved path, inode, size and mtime. An
 * upgrade replaces the file, so the identity changes with the version. Used to key cached verdicts
 * (the KVM probe): spawning `--version` costs 30–70 ms here, on the path of every `vmstack run`.
 */
export function qemuIdentity(binary = qemuBinary(), envPath = process.env["PATH"] ?? ""): string {
  const candidates = binary.includes("/") ? [binary] : envPath.split(delimiter).filter(Boolean).map((d) => join(d, binary));
  for (const file of candidates) {
    try {
      const st = statSync(file);
      if (st.isFile()) return `${file}|${st.ino}|${st.size}|${Math.round(st.mtimeMs)}`;
    } catch {
      // not in this PATH entry
    }
  }
  throw new VmstackError("QEMU_MISSING", `QEMU is not usable (${binary} not found); install it with ./setup or apt-get install qemu-system-x86`);
}

/**
 * The host TSC frequency in kHz, from /proc/cpuinfo. microvm has no PIT/HPET/PM timer to calibrate
 * against, so a TCG guest hangs at "Unable to calibrate against PIT" unless it is told
 * `tsc_early_khz` (qemu-notes §2).
 */
export function tscKhz(cpuinfo = readFileSync("/proc/cpuinfo", "utf8")): number | undefined {
  const m = /^cpu MHz\s*:\s*([\d.]+)/m.exec(cpuinfo);
  return m?.[1] ? Math.round(Number(m[1]) * 1000) : undefined;
}

export function kvmDeviceUsable(path = "/dev/kvm"): boolean {
  try {
    accessSync(path, constants.R_OK | constants.W_OK);
    return true;
  } catch {
    // Absent or not permitted: either way KVM is not an option.
    return false;
  }
}

/** Identity of the host for caching probe results: host kernel + CPU model. */
export function hostIdentity(): string {
  const release = readFileSync("/proc/sys/kernel/osrelease", "utf8").trim();
  const model = /^model name\s*:\s*(.*)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "unknown-cpu";
  return `${release}|${model}`;
}
