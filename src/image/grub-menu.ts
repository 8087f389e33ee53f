/**
 * GRUB menus as pv-grub and pygrub read them: GRUB legacy's menu.lst and GRUB 2's grub.cfg.
 * PURE: text in, entries and the default out. Only what booting needs is understood: titles, the
 * kernel (`kernel`/`linux`/`linux16`/`linuxefi`), its arguments, the initrd(s), `root`, `default`
 * and `set default=…`; everything else (`insmod`, `if`, `load_video`, `search`…) is skipped.
 *
 * GRUB legacy (docs: "The GRUB Legacy manual", menu.lst): `default N` (0-based), `title T` starts an
 * entry, `root (hd0,0)`, `kernel PATH ARGS`, `initrd PATH`. GRUB 2 (grub.cfg): `menuentry 'T' … {`
 * … `}`, `submenu 'T' { menuentry … }`, `set default="N"` where N is an index, a title, an id, or
 * "A>B" for an entry inside a submenu.
 */
import { VmstackError } from "../lib/errors.js";

export interface GrubEntry {
  /** "Debian GNU/Linux", or "Advanced options>Debian …, with Linux 6.1" inside a submenu. */
  readonly title: string;
  /** Position as GRUB numbers it: "2", or "1>0" inside a submenu. */
  readonly index: string;
  /** `--id` of a GRUB 2 menuentry, when given. */
  readonly id?: string;
  readonly kernel: string;
  readonly args: string;
  readonly initrds: readonly string[];
  /** The entry's `root` device as written (`(hd0,0)`, `hd0,msdos1`), when set. */
  readonly root?: string;
}

export interface GrubMenu {
  readonly format: "menu.lst" | "grub.cfg";
  readonly entries: readonly GrubEntry[];
  /** The `default` as written ("0", "saved", a title, "1>2"), when set. */
  readonly defaultSpec?: string;
}

function menuError(source: string, line: number, message: string): VmstackError {
  return new VmstackError("GRUB_MENU_INVALID", `${source}:${line}: ${message}`, { facts: { source, line } });
}

/** Splits a line into words with GRUB 2's quoting ('…' literal, "…" with \-escapes). */
export function grubWords(line: string): string[] {
  const words: string[] = [];
  let cur = "";
  let inWord = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === "'") {
      const end = line.indexOf("'", i + 1);
      cur += end === -1 ? line.slice(i + 1) : line.slice(i + 1, end);
      i = end === -1 ? line.length : end;
      inWord = true;
    } else if (c === '"') {
      i++;
      for (; i < line.length && line[i] !== '"'; i++) cur += line[i] === "\\" && i + 1 < line.length ? line[++i]! : line[i]!;
      inWord = true;
    } else if (c === "\\" && i + 1 < line.length) {
      cur += line[++i]!;
      inWord = true;
    } else if (c === " " || c === "\t") {
      if (inWord) words.push(cur);
      cur = "";
      inWord = false;
    } else if (c === "#" && !inWord) {
      break;
    } else {
      cur += c;
      inWord = true;
    }
  }
  if (inWord) words.push(cur);
  return words;
}

export function parseMenuLst(text: string, source = "menu.lst"): GrubMenu {
  const entries: GrubEntry[] = [];
  let defaultSpec: string | undefined;
  let cur: { title: string; kernel?: string; args: string; initrds: string[]; root?: string; line: number } | undefined;
  const finish = (): void => {
    if (!cur) return;
    // An entry without a kernel (chainloader, Windows…) cannot be booted directly; keep its
    // position so `default N` still counts it, and refuse it only if it is chosen.
    entries.push({ title: cur.title, index: String(entries.length), kernel: cur.kernel ?? "", args: cur.args, initrds: cur.initrds, ...(cur.root ? { root: cur.root } : {}) });
    cur = undefined;
  };
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    // GRUB legacy accepts "key value" and "key=value".
    const m = /^(\S+?)(?:\s*=\s*|\s+)(.*)$/.exec(line) ?? [line, line, ""];
    const key = m[1]!.toLowerCase();
    const rest = m[2]!.trim();
    if (key === "title") {
      finish();
      cur = { title: rest, args: "", initrds: [], line: i + 1 };
    } else if (key === "default" && !cur) {
      defaultSpec = rest;
    } else if (cur && key === "kernel") {
      const [path, ...args] = rest.split(/\s+/);
      if (!path) throw menuError(source, i + 1, "'kernel' needs a path");
      cur.kernel = path;
      cur.args = args.join(" ");
    } else if (cur && key === "initrd") {
      if (!rest) throw menuError(source, i + 1, "'initrd' needs a path");
      cur.initrds.push(rest.split(/\s+/)[0]!);
    } else if (cur && key === "root") {
      cur.root = rest;
    }
  });
  finish();
  return { format: "menu.lst", entries, ...(defaultSpec !== undefined ? { defaultSpec } : {}) };
}

export function parseGrubCfg(text: string, source = "grub.cfg"): GrubMenu {
  const entries: GrubEntry[] = [];
  let defaultSpec: string | undefined;
  // A stack of open blocks: submenus (with their title and child count) and the current entry.
  const submenus: { title: string; index: string; children: number }[] = [];
  let topLevel = 0;
  let entry: { title: string; index: string; id?: string; kernel?: string; args: string; initrds: string[]; root?: string } | undefined;
  let otherDepth = 0; // `if … fi`-free braces of other blocks (e.g. `function x {`)
  text.split(/\r?\n/).forEach((raw, i) => {
    const words = grubWords(raw.trim());
    const head = words[0];
    if (head === undefined) return;
    const opensBlock = words[words.length - 1] === "{";
    if (head === "menuentry" || head === "submenu") {
      if (!opensBlock) throw menuError(source, i + 1, `'${head}' must end with '{'`);
      const title = words[1];
      if (title === undefined) throw menuError(source, i + 1, `'${head}' needs a title`);
      const parent = submenus[submenus.length - 1];
      const position = parent ? `${parent.index}>${parent.children++}` : String(topLevel++);
      const fullTitle = parent ? `${parent.title}>${title}` : title;
      if (head === "submenu") {
        submenus.push({ title: fullTitle, index: position, children: 0 });
      } else {
        const idAt = words.indexOf("--id");
        const id = idAt === -1 ? undefined : words[idAt + 1];
        entry = { title: fullTitle, index: position, args: "", initrds: [], ...(id ? { id } : {}) };
      }
      return;
    }
    if (head === "}") {
      if (otherDepth > 0) otherDepth--;
      else if (entry) {
        entries.push({ ...entry, kernel: entry.kernel ?? "" });
        entry = undefined;
      } else if (submenus.length > 0) submenus.pop();
      return;
    }
    if (opensBlock) {
      otherDepth++;
      return;
    }
    if (!entry) {
      const m = /^set\s+default=(.*)$/.exec(raw.trim());
      if (m && otherDepth === 0) defaultSpec = grubWords(m[1]!).join(" ");
      return;
    }
    if (head === "linux" || head === "linux16" || head === "linuxefi") {
      if (!words[1]) throw menuError(source, i + 1, `'${head}' needs a path`);
      entry.kernel = words[1];
      entry.args = words.slice(2).join(" ");
    } else if (head === "initrd" || head === "initrd16" || head === "initrdefi") {
      entry.initrds.push(...words.slice(1));
    } else if (head === "set" && words[1]?.startsWith("root=")) {
      entry.root = words[1].slice("root=".length);
    }
  });
  if (entry || submenus.length > 0) throw menuError(source, text.split(/\r?\n/).length, "a menuentry or submenu is not closed with '}'");
  return { format: "grub.cfg", entries, ...(defaultSpec !== undefined ? { defaultSpec } : {}) };
}

/**
 * The entry to boot: `entry` when given (an index, as pv-grub's), else the menu's default; GRUB's
 * rules: an index ("0", "1>2"), a title, or an id. "saved" and variables need grubenv, which
 * pv-grub does not read either: they fall back to the first entry, and `note` says so.
 */
export function chooseGrubEntry(menu: GrubMenu, entry?: number): { entry: GrubEntry; note?: string } {
  const bootable = (e: GrubEntry | undefined, why: string): { entry: GrubEntry; note?: string } => {
    if (!e) throw new VmstackError("GRUB_ENTRY_MISSING", `the GRUB menu has no entry ${why} (it has ${menu.entries.length})`, { facts: { entries: menu.entries.map((x) => x.title) } });
    if (!e.kernel) throw new VmstackError("GRUB_ENTRY_UNBOOTABLE", `GRUB menu entry '${e.title}' names no Linux kernel (chainloader or other OS)`, { facts: { title: e.title } });
    return { entry: e };
  };
  if (menu.entries.length === 0) throw new VmstackError("GRUB_ENTRY_MISSING", "the GRUB menu has no entries");
  if (entry !== undefined) return bootable(menu.entries.filter((e) => !e.index.includes(">"))[entry] ?? menu.entries[entry], `number ${entry}`);
  const spec = menu.defaultSpec;
  if (spec === undefined || spec === "") return bootable(menu.entries[0], "0");
  if (/^\d+(>\d+)*$/.test(spec)) {
    // "1" may name a submenu: then GRUB boots that submenu's first entry.
    const exact = menu.entries.find((e) => e.index === spec) ?? menu.entries.find((e) => e.index.startsWith(`${spec}>`));
    return bootable(exact, `at position ${spec}`);
  }
  const named = menu.entries.find((e) => e.title === spec || e.id === spec || e.title.endsWith(`>${spec}`));
  if (named) return bootable(named, spec);
  const first = bootable(menu.entries[0], "0");
  return { ...first, note: `default '${spec}' cannot be resolved without GRUB's environment block; booting the first entry` };
}
