/**
 * GRUB menus for a guest image vmstack makes: GRUB legacy's menu.lst (what pv-grub reads, and what
 * the NixOS wiki's `extra = "(hd0)/boot/grub/menu.lst"` names) and GRUB 2's grub.cfg (what pygrub
 * prefers and what GRUB 2 itself reads when it boots the disk through the firmware). PURE: text out.
 * Both name the same kernel, initrd and command line, so every boot path boots the same system.
 */
export interface MenuEntrySpec {
  readonly title: string;
  /** Paths inside the file system holding /boot, e.g. /boot/vmlinuz-6.1.0-56-cloud-amd64. */
  readonly kernel: string;
  readonly initrd?: string | undefined;
  readonly cmdline: string;
  /** Seconds GRUB waits at the menu (GRUB 2 only; pv-grub resolution never waits). */
  readonly timeoutSeconds?: number;
}

/** GRUB legacy syntax (the GRUB Legacy manual): `default`, `timeout`, `title`, `root`, `kernel`, `initrd`. */
export function menuLstText(e: MenuEntrySpec): string {
  return [
    "# Written by vmstack image debian. GRUB legacy format: pv-grub reads this file.",
    "default 0",
    `timeout ${e.timeoutSeconds ?? 0}`,
    "",
    `title ${e.title}`,
    "root (hd0)",
    `kernel ${e.kernel} ${e.cmdline}`,
    ...(e.initrd ? [`initrd ${e.initrd}`] : []),
    "",
  ].join("\n");
}

/**
 * GRUB 2 syntax. The serial lines make GRUB's own menu visible on the first UART (the domain's
 * console) when GRUB really runs from the disk's boot sector; a resolver that only reads the menu
 * skips them. `search --label` finds /boot's file system wherever the disk ends up.
 */
export function grubCfgText(e: MenuEntrySpec & { readonly label?: string | undefined }): string {
  const quote = (s: string): string => `'${s.replaceAll("'", `'\\''`)}'`;
  return [
    "# Written by vmstack image debian. GRUB 2 format.",
    "serial --unit=0 --speed=115200",
    "terminal_input serial console",
    "terminal_output serial console",
    "set default=0",
    `set timeout=${e.timeoutSeconds ?? 0}`,
    "",
    `menuentry ${quote(e.title)} {`,
    ...(e.label ? [`  search --no-floppy --label --set=root ${quote(e.label)}`] : []),
    `  linux ${e.kernel} ${e.cmdline}`,
    ...(e.initrd ? [`  initrd ${e.initrd}`] : []),
    "}",
    "",
  ].join("\n");
}
