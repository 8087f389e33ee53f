/**
 * The initrd builder: extra files (busybox, init, agent) + the kernel modules the guest needs,
 * as a deterministic cpio newc archive, compressed, cached by a hash of everything that goes in.
 *
 * Modules go to /lib/modules/<release>/<path from modules.dep>, uncompressed (busybox insmod has
 * no decompressor, and the kernel's in-kernel decompression needs CONFIG_MODULE_DECOMPRESS), and
 * /lib/modules/load-order lists them one absolute path per line, dependencies first: the guest
 * init runs `insmod` on each line in order.
 *
 * Compression: chosen by measurement (docs/images.md, "Initrd compression"). The cloud kernel can
 * unpack gzip, lz4, xz, zstd … (CONFIG_RD_*=y). Default initrd (static busybox + init + the 13
 * default modules, 3.07 MB raw), 10 interleaved TCG boots each on this loaded 2-core host:
 *   none  3.07 MB  build  35 ms  kernel unpack (populate_rootfs) median  63 ms, min 32 ms
 *   lz4   1.85 MB  build  50 ms  kernel unpack median  67 ms, min 49 ms
 *   gzip  1.35 MB  build 120 ms  kernel unpack median 207 ms, min 89 ms
 * Whole-boot wall times were within noise of each other. Decompressing under TCG costs more than
 * QEMU copying 1–2 MB more into guest RAM, so "none" wins: fastest unpack, fastest build, no
 * external tool, and the cached file is a plain cpio anyone can list.
 */
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import { VmstackError, assertNever } from "../lib/errors.js";
import { openCache, sha256, type ContentStore, type Env } from "./cache.js";
import { normalizeArchivePath, writeCpio, type CpioEntry } from "./cpio.js";
import type { ResolvedKernel } from "./kernel.js";
import { DEFAULT_GUEST_MODULES, parseModulesBuiltin, parseModulesDep, resolveModules, type ModuleInfo } from "./modules.js";
import { runChild } from "../lib/run-child.js";

export type InitrdFile =
  | { readonly path: string; readonly mode?: number; readonly source: string }
  | { readonly path: string; readonly mode?: number; readonly bytes: Uint8Array | string }
  | { readonly path: string; readonly symlink: string }
  | { readonly path: string; readonly mode?: number; readonly directory: true };

export type InitrdCompression = "none" | "gzip" | "lz4";
export const INITRD_COMPRESSIONS: readonly InitrdCompression[] = ["none", "gzip", "lz4"];

/** The measured choice (see the file comment). */
export const DEFAULT_INITRD_COMPRESSION: InitrdCompression = "none";

/** Where the guest init finds the modules to load, in order. */
export const LOAD_ORDER_PATH = "/lib/modules/load-order";

/**
 * The directories and device node every guest needs before it can mount anything: mount points
 * (busybox mount wants them to exist) and /dev/console (char 5:1), which the kernel opens as
 * init's stdin/stdout before devtmpfs is mounted (init/main.c console_on_rootfs()). A file the
 * caller gives at one of these paths replaces the skeleton entry.
 */
export const INITRD_SKELETON: readonly CpioEntry[] = [
  { type: "dir", path: "bin" },
  { type: "dir", path: "dev" },
  { type: "char", path: "dev/console", mode: 0o600, major: 5, minor: 1 },
  { type: "dir", path: "proc", mode: 0o555 },
  { type: "dir", path: "root", mode: 0o700 },
  { type: "dir", path: "run" },
  { type: "dir", path: "sys", mode: 0o555 },
  { type: "dir", path: "tmp", mode: 0o1777 },
];

/** Bumped whenever the archive layout changes, so old cache entries are not reused. */
const LAYOUT_VERSION = 2;

export interface BuildInitrdOptions {
  readonly kernel: Pick<ResolvedKernel, "release" | "modulesDir">;
  /** Module names; their dependencies are added. Default DEFAULT_GUEST_MODULES. */
  readonly modules?: readonly string[];
  readonly files: readonly InitrdFile[];
  readonly compression?: InitrdCompression;
  readonly cache?: ContentStore;
  readonly env?: Env;
  readonly signal?: AbortSignal | undefined;
}

export interface InitrdResult {
  readonly path: string;
  readonly key: string;
  readonly cached: boolean;
  readonly compression: InitrdCompression;
  /** Module names in load order (empty when the kernel has no modules directory). */
  readonly modules: readonly string[];
}

interface LoadedModule {
  readonly info: ModuleInfo;
  /** Path inside the archive, always ending in .ko. */
  readonly archivePath: string;
  readonly raw: Buffer;
}

async function loadModules(kernel: BuildInitrdOptions["kernel"], wanted: readonly string[]): Promise<LoadedModule[]> {
  if (wanted.length === 0) return [];
  const dir = kernel.modulesDir;
  if (dir === undefined) {
    throw new VmstackError(
      "MODULES_MISSING",
      `kernel ${kernel.release} has no modules directory, but the guest needs modules ${wanted.join(", ")}; ` +
        "put lib/modules/<release> next to the kernel, or use a kernel with these drivers built in and ask for no modules",
      { facts: { release: kernel.release, modules: wanted } },
    );
  }
  const depPath = join(dir, "modules.dep");
  let depText: string;
  try {
    depText = await readFile(depPath, "utf8");
  } catch (e) {
    throw new VmstackError("MODULES_MISSING", `cannot read ${depPath} (run 'depmod -b <root> ${kernel.release}'?)`, {
      cause: e,
      facts: { path: depPath },
    });
  }
  let builtinText = "";
  try {
    builtinText = await readFile(join(dir, "modules.builtin"), "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  const index = { modules: parseModulesDep(depText, depPath), builtin: parseModulesBuiltin(builtinText) };
  const closure = resolveModules(index, wanted, kernel.release);
  return Promise.all(
    closure.map(async (info) => ({
      info,
      archivePath: `lib/modules/${kernel.release}/${info.path.replace(/\.ko\.(xz|zst|gz)$/, ".ko")}`,
      raw: await readFile(join(dir, info.path)),
    })),
  );
}

async function decompressModule(m: LoadedModule, signal: AbortSignal | undefined): Promise<Uint8Array> {
  const path = m.info.path;
  if (path.endsWith(".ko")) return m.raw;
  if (path.endsWith(".ko.gz")) return gunzipSync(m.raw);
  const argv = path.endsWith(".ko.xz") ? ["xz", "-dc"] : ["zstd", "-dcq"];
  return (await runChild(argv, { input: m.raw, signal })).stdout;
}

interface LoadedFile {
  readonly file: InitrdFile;
  readonly data: Uint8Array | undefined;
}

async function loadFile(file: InitrdFile): Promise<LoadedFile> {
  if ("source" in file) {
    try {
      return { file, data: await readFile(file.source) };
    } catch (e) {
      throw new VmstackError("INITRD_SOURCE_MISSING", `cannot read ${file.source} for ${file.path} in the initrd`, {
        cause: e,
        facts: { source: file.source, path: file.path },
      });
    }
  }
  if ("bytes" in file) return { file, data: typeof file.bytes === "string" ? Buffer.from(file.bytes) : file.bytes };
  return { file, data: undefined };
}

function toEntry({ file, data }: LoadedFile): CpioEntry {
  if ("symlink" in file) return { type: "symlink", path: file.path, target: file.symlink };
  if ("directory" in file) return { type: "dir", path: file.path, ...(file.mode === undefined ? {} : { mode: file.mode }) };
  if (data === undefined) throw new Error(`initrd: no data for ${file.path}`);
  // Executables are the common case (busybox, init, agent), so files default to 0755.
  return { type: "file", path: file.path, mode: file.mode ?? 0o755, data };
}

/** What identifies an initrd: every input's path, mode and content hash. */
function recipeOf(
  release: string,
  compression: InitrdCompression,
  modules: readonly LoadedModule[],
  files: readonly LoadedFile[],
): unknown {
  return {
    kind: "initrd",
    layout: LAYOUT_VERSION,
    release,
    compression,
    modules: modules.map((m) => [m.archivePath, sha256(m.raw)]),
    files: files.map(({ file, data }) => ({ ...file, source: undefined, bytes: undefined, sha256: data && sha256(data) })),
  };
}

async function compress(cpio: Buffer, compression: InitrdCompression, signal: AbortSignal | undefined): Promise<Uint8Array> {
  switch (compression) {
    case "none":
      return cpio;
    case "gzip":
      return gzipSync(cpio, { level: 6 });
    case "lz4":
      // The kernel's initramfs unpacker reads only the legacy LZ4 frame format (lib/decompress_unlz4.c): -l.
      return (await runChild(["lz4", "-l", "-c"], { input: cpio, signal })).stdout;
    default:
      return assertNever(compression, "initrd compression");
  }
}

/**
 * Builds (or finds in the cache) the initrd for `kernel` with `files` and the closure of
 * `modules`. A second call with the same inputs returns the cached file with `cached: true`.
 */
export async function buildInitrd(options: BuildInitrdOptions): Promise<InitrdResult> {
  const compression = options.compression ?? DEFAULT_INITRD_COMPRESSION;
  const cache = options.cache ?? openCache(options.env ?? process.env);
  const modules = await loadModules(options.kernel, options.modules ?? DEFAULT_GUEST_MODULES);
  const files = await Promise.all(options.files.map(loadFile));
  const recipe = recipeOf(options.kernel.release, compression, modules, files);
  const ext = compression === "none" ? ".cpio" : compression === "gzip" ? ".cpio.gz" : ".cpio.lz4";
  const result = await cache.buildOnce(
    recipe,
    async (tmp) => {
      const moduleEntries: CpioEntry[] = await Promise.all(
        modules.map(async (m) => ({ type: "file" as const, path: m.archivePath, mode: 0o644, data: await decompressModule(m, options.signal) })),
      );
      const loadOrder = modules.map((m) => `/${m.archivePath}\n`).join("");
      const given = files.map(toEntry);
      const givenPaths = new Set(given.map((e) => normalizeArchivePath(e.path)));
      const entries: CpioEntry[] = [
        ...INITRD_SKELETON.filter((e) => !givenPaths.has(e.path)),
        ...given,
        ...moduleEntries,
        { type: "file", path: LOAD_ORDER_PATH, mode: 0o644, data: Buffer.from(loadOrder) },
      ];
      await writeFile(tmp, await compress(writeCpio(entries), compression, options.signal));
    },
    { ext },
  );
  return { ...result, compression, modules: modules.map((m) => m.info.name) };
}
