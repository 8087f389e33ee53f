/**
 * The default guest: the resolved kernel plus an initrd holding static busybox, vmstack's init and
 * agent, and the kernel modules the guest needs (closure over modules.dep). Built once per content
 * hash, so a warm `vmstack run` builds nothing.
 */
import { existsSync } from "node:fs";
import { buildInitrd, guestModulesFor, resolveKernel, withPvhVmlinux, type Env, type InitrdResult, type ResolvedKernel } from "../image/index.js";
import { XENSTORE_TOOL_NAMES, guestArtifacts } from "../guest/index.js";
import { VmstackError } from "../lib/errors.js";
import { runCommand } from "../lib/process.js";

/** Debian's busybox-static installs a statically linked /bin/busybox (the guest has no libc). */
export const BUSYBOX_PATH = "/bin/busybox";

/**
 * Every applet as a symlink made at build time (`busybox --list-full`: "bin/sh", "usr/bin/tr", …),
 * rather than `busybox --install` at each boot, which would cost hundreds of syscalls under TCG.
 */
/** Not linked: busybox itself, and busybox init under names the kernel might run instead of /init. */
const NOT_APPLETS = new Set(["bin/busybox", "linuxrc", "sbin/init"]);

async function busyboxApplets(busybox: string): Promise<string[]> {
  const out = await runCommand([busybox, "--list-full"], "busybox");
  return out
    .toString()
    .split("\n")
    .filter((l) => l !== "" && !NOT_APPLETS.has(l) && /^[a-z0-9/._\[-]+$/.test(l));
}

export interface GuestImage {
  readonly kernel: ResolvedKernel;
  readonly initrd: InitrdResult;
}

/**
 * Guest features that need kernel modules. Each module costs ~20 ms of boot under TCG (more under
 * load), so the initrd carries only what the VM's devices need.
 */
export type GuestFeature = "disk" | "network" | "share";

/** microvm's virtio-mmio transport and the agent's virtio-serial port are always needed. */
export function guestModules(features: readonly GuestFeature[] = []): string[] {
  return guestModulesFor({
    transport: "mmio",
    block: features.includes("disk"),
    net: features.includes("network"),
    virtiofs: features.includes("share"),
  });
}

export async function prepareGuestImage(options: {
  kernelPath?: string | undefined;
  env: Env;
  features?: readonly GuestFeature[];
  signal?: AbortSignal | undefined;
}): Promise<GuestImage> {
  // A user's bzImage gets its vmlinux extracted once (cached), so it boots through PVH too.
  const kernel = await withPvhVmlinux(await resolveKernel({ kernelPath: options.kernelPath, env: options.env }), { env: options.env, signal: options.signal });
  const busybox = options.env["VMSTACK_BUSYBOX"] ?? BUSYBOX_PATH;
  const guest = guestArtifacts();
  for (const [what, path, hint] of [
    ["static busybox", busybox, "apt-get install busybox-static (or ./setup)"],
    ["the guest agent", guest.agent, "npm run build (or ./setup)"],
  ] as const) {
    if (!existsSync(path)) throw new VmstackError("GUEST_PIECE_MISSING", `${what} is missing at ${path}: ${hint}`, { facts: { path } });
  }
  const initrd = await buildInitrd({
    kernel,
    modules: guestModules(options.features),
    files: [
      { path: "/bin/busybox", mode: 0o755, source: busybox },
      // Mount points and homes the init and commands expect.
      ...["/proc", "/sys", "/dev", "/tmp", "/run", "/root", "/etc", "/mnt"].map((path) => ({ path, directory: true as const, mode: path === "/tmp" ? 0o1777 : 0o755 })),
      ...(await busyboxApplets(busybox)).map((path) => ({ path: `/${path}`, symlink: "/bin/busybox" })),
      // The agent itself is PID 1: it mounts, loads the modules and serves the channel with system
      // calls, ~0.1 s per boot faster than the sh init (one fork+exec of busybox per step; measured
      // in docs/agent-protocol.md). guest/init stays the readable reference of the same steps.
      { path: "/init", mode: 0o755, source: guest.agent },
      { path: "/bin/vmstack-agent", symlink: "/init" },
      // The guest's xenstore tools under Xen's names (the agent is a multi-call binary).
      ...XENSTORE_TOOL_NAMES.map((n) => ({ path: `/bin/${n}`, symlink: "/init" })),
    ],
    env: options.env,
    signal: options.signal,
  });
  return { kernel, initrd };
}
