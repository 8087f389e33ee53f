/**
 * Disk images in vmstack's cache, keyed by content: the same spec over the same directory contents
 * gives the same key, so it is built once (`ContentStore.buildOnce`, atomic rename into place).
 */
import { hashTree } from "./disk-tree.js";
import { createDisk, type DiskSpec } from "./disk.js";
import type { BuildResult, ContentStore } from "./cache.js";

/** Bump when the way images are made changes, so old cache entries are not reused. */
const DISK_RECIPE_VERSION = 1;

export async function diskRecipe(spec: DiskSpec): Promise<unknown> {
  return {
    kind: "disk",
    v: DISK_RECIPE_VERSION,
    format: spec.format,
    sizeBytes: spec.sizeBytes,
    fs: spec.fs && {
      type: spec.fs.type,
      label: spec.fs.label,
      uuid: spec.fs.uuid,
      tree: spec.fs.from === undefined ? undefined : await hashTree(spec.fs.from),
    },
  };
}

export async function cachedDisk(store: ContentStore, spec: DiskSpec): Promise<BuildResult> {
  return store.buildOnce(await diskRecipe(spec), (tmp) => createDisk(tmp, spec), { ext: `.${spec.format}` });
}
