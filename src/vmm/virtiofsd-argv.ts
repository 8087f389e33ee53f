/**
 * The one virtiofsd command line, for throwaway runs (`vmstack run --share`) and domains (`shares`)
 * alike. PURE. The C virtiofsd of qemu-system-common has no read-only option, so a read-only share
 * runs it in a private mount namespace where the source is bind-mounted read-only onto itself: the
 * guest's writes then fail with EROFS on the host side, whatever the guest does. The script is
 * constant; paths arrive as positional parameters, never spliced into it.
 */
export interface VirtiofsdShare {
  /** The host directory served. */
  readonly source: string;
  readonly readOnly: boolean;
}

/** The C virtiofsd shipped in Debian's qemu-system-common (there is no separate package). */
export const DEFAULT_VIRTIOFSD = "/usr/lib/qemu/virtiofsd";

export function virtiofsdArgv(share: VirtiofsdShare, socketPath: string, bin: string = DEFAULT_VIRTIOFSD): string[] {
  // cache=auto: the guest caches with close-to-open consistency; it exits when QEMU disconnects.
  const daemon = [bin, `--socket-path=${socketPath}`, "-o", `source=${share.source}`, "-o", "cache=auto", "-o", "log_level=err"];
  if (!share.readOnly) return daemon;
  return [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "--",
    "/bin/sh",
    "-c",
    'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"',
    "vmstack-ro-share",
    share.source,
    ...daemon,
  ];
}
