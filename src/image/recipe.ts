/**
 * Build recipes (`vmstack fetch RECIPE`, `vmstack build RECIPE`): a JSON file naming the inputs,
 * the guest image, the build script and its outputs. Parsed once at the entry point; unknown keys
 * are refused with the path of the offending key (house rule 5).
 *
 * {
 *   "name": "hello",
 *   "image": { "debian": { "release": "bookworm", "packages": ["gcc", "libc6-dev"] } },
 *   "inputs": {
 *     "hello.c":  { "path": "src/hello.c" },
 *     "zlib.tgz": { "url": "https://…/zlib-1.3.tar.gz", "sha256": "…" },
 *     "make.deb": { "debian": "make", "sha256": "…" }
 *   },
 *   "script": "gcc -O2 -o /out/hello /in/hello.c",
 *   "outputs": ["hello"],
 *   "network": false, "memoryMiB": 512, "timeoutSeconds": 600
 * }
 *
 * Inputs appear in the guest at /in/NAME (a local directory as a directory). Outputs are what the
 * script leaves in /out; the listed ones must exist. `image` absent: vmstack's busybox guest.
 */
import { VmstackError } from "../lib/errors.js";

export type InputSource =
  | { readonly kind: "path"; readonly path: string }
  | { readonly kind: "url"; readonly url: string; readonly sha256: string }
  | { readonly kind: "debian"; readonly package: string; readonly version?: string; readonly sha256?: string };

export type RecipeImage =
  | { readonly kind: "busybox" }
  | { readonly kind: "debian"; readonly release: string; readonly packages: readonly string[] }
  | { readonly kind: "path"; readonly path: string };

export interface Recipe {
  readonly name: string;
  readonly image: RecipeImage;
  readonly inputs: ReadonlyMap<string, InputSource>;
  readonly script: string;
  readonly outputs: readonly string[];
  readonly network: boolean;
  readonly memoryMiB: number;
  readonly timeoutSeconds?: number;
}

const SHA256 = /^[0-9a-f]{64}$/;

function fail(where: string, message: string): never {
  throw new VmstackError("BAD_RECIPE", `recipe ${where}: ${message}`, { facts: { where } });
}

function object(v: unknown, where: string, allowed: readonly string[]): Record<string, unknown> {
  if (v === null || typeof v !== "object" || Array.isArray(v)) fail(where, "expected an object");
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!allowed.includes(k)) fail(`${where}.${k}`, `unknown key (expected one of: ${allowed.join(", ")})`);
  return o;
}

function str(v: unknown, where: string): string {
  if (typeof v !== "string" || v === "") fail(where, "expected a non-empty string");
  return v;
}

function sha(v: unknown, where: string): string {
  const s = str(v, where).toLowerCase();
  if (!SHA256.test(s)) fail(where, "expected 64 hex digits (a sha256)");
  return s;
}

/** An input or output name: one path component, no hidden tricks. */
function fileName(v: string, where: string): string {
  if (!/^[A-Za-z0-9._+-][A-Za-z0-9._+/-]*$/.test(v) || v.split("/").some((c) => c === ".." || c === "." || c === "")) {
    fail(where, `'${v}' is not a safe relative name`);
  }
  return v;
}

function input(v: unknown, where: string): InputSource {
  const o = object(v, where, ["path", "url", "debian", "version", "sha256"]);
  const kinds = ["path", "url", "debian"].filter((k) => o[k] !== undefined);
  if (kinds.length !== 1) fail(where, "give exactly one of path, url or debian");
  if (o["path"] !== undefined) {
    if (o["sha256"] !== undefined || o["version"] !== undefined) fail(where, "a path input takes no sha256 or version (its hash goes into the lock file)");
    return { kind: "path", path: str(o["path"], `${where}.path`) };
  }
  if (o["url"] !== undefined) {
    const url = str(o["url"], `${where}.url`);
    if (!/^https?:\/\//.test(url)) fail(`${where}.url`, "expected an http(s) URL");
    if (o["version"] !== undefined) fail(`${where}.version`, "only debian inputs have a version");
    if (o["sha256"] === undefined) fail(where, "a url input needs its sha256");
    return { kind: "url", url, sha256: sha(o["sha256"], `${where}.sha256`) };
  }
  const pkg = str(o["debian"], `${where}.debian`);
  if (!/^[a-z0-9][a-z0-9+.-]+$/.test(pkg)) fail(`${where}.debian`, `'${pkg}' is not a Debian package name`);
  return {
    kind: "debian",
    package: pkg,
    ...(o["version"] !== undefined ? { version: str(o["version"], `${where}.version`) } : {}),
    ...(o["sha256"] !== undefined ? { sha256: sha(o["sha256"], `${where}.sha256`) } : {}),
  };
}

function image(v: unknown, where: string): RecipeImage {
  if (v === undefined || v === "busybox") return { kind: "busybox" };
  const o = object(v, where, ["debian", "path"]);
  if (o["path"] !== undefined) return { kind: "path", path: str(o["path"], `${where}.path`) };
  const d = object(o["debian"], `${where}.debian`, ["release", "packages"]);
  const pk = d["packages"] ?? [];
  if (!Array.isArray(pk)) fail(`${where}.debian.packages`, "expected a list of package names");
  return { kind: "debian", release: d["release"] === undefined ? "bookworm" : str(d["release"], `${where}.debian.release`), packages: pk.map((p, i) => str(p, `${where}.debian.packages[${i}]`)) };
}

export function parseRecipe(v: unknown, where = "recipe"): Recipe {
  const o = object(v, where, ["name", "image", "inputs", "script", "outputs", "network", "memoryMiB", "timeoutSeconds"]);
  const inputs = new Map<string, InputSource>();
  for (const [name, src] of Object.entries(object(o["inputs"] ?? {}, `${where}.inputs`, Object.keys((o["inputs"] as object | undefined) ?? {})))) {
    inputs.set(fileName(name, `${where}.inputs`), input(src, `${where}.inputs.${name}`));
  }
  const outputs = o["outputs"] ?? [];
  if (!Array.isArray(outputs)) fail(`${where}.outputs`, "expected a list of names under /out");
  const mem = o["memoryMiB"] ?? 512;
  if (typeof mem !== "number" || !Number.isInteger(mem) || mem < 64) fail(`${where}.memoryMiB`, "expected an integer >= 64");
  const timeout = o["timeoutSeconds"];
  if (timeout !== undefined && (typeof timeout !== "number" || !Number.isInteger(timeout) || timeout < 1)) fail(`${where}.timeoutSeconds`, "expected an integer >= 1");
  if (o["network"] !== undefined && typeof o["network"] !== "boolean") fail(`${where}.network`, "expected true or false");
  return {
    name: o["name"] === undefined ? "build" : fileName(str(o["name"], `${where}.name`), `${where}.name`),
    image: image(o["image"], `${where}.image`),
    inputs,
    script: str(o["script"], `${where}.script`),
    outputs: outputs.map((x, i) => fileName(str(x, `${where}.outputs[${i}]`), `${where}.outputs[${i}]`)),
    network: o["network"] === true,
    memoryMiB: mem,
    ...(timeout !== undefined ? { timeoutSeconds: timeout as number } : {}),
  };
}

/** The lock file written by fetch: every input's content hash, as found. */
export interface LockFile {
  readonly version: 1;
  readonly inputs: Readonly<Record<string, { readonly sha256: string; readonly size: number; readonly kind: "file" | "tree"; readonly source: string }>>;
  /** The cached guest image the build will use (debian images are built at fetch time: they need the network). */
  readonly image?: { readonly path: string };
}

export function parseLockFile(v: unknown, where: string): LockFile {
  const o = object(v, where, ["version", "inputs", "image"]);
  if (o["version"] !== 1) fail(`${where}.version`, "expected 1");
  const inputs: Record<string, LockFile["inputs"][string]> = {};
  for (const [name, e] of Object.entries(object(o["inputs"] ?? {}, `${where}.inputs`, Object.keys((o["inputs"] as object | undefined) ?? {})))) {
    const x = object(e, `${where}.inputs.${name}`, ["sha256", "size", "kind", "source"]);
    const kind = x["kind"];
    if (kind !== "file" && kind !== "tree") fail(`${where}.inputs.${name}.kind`, "expected file or tree");
    inputs[name] = { sha256: sha(x["sha256"], `${where}.inputs.${name}.sha256`), size: Number(x["size"]), kind, source: str(x["source"], `${where}.inputs.${name}.source`) };
  }
  const img = o["image"] === undefined ? undefined : object(o["image"], `${where}.image`, ["path"]);
  return { version: 1, inputs, ...(img ? { image: { path: str(img["path"], `${where}.image.path`) } } : {}) };
}
