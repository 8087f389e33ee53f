/**
 * vmstack as a library: the typed APIs behind the CLI. (VM tests import `vmstack/testing`.)
 */
export { VmstackError, isVmstackError } from "./lib/errors.js";
export * as domain from "./domain/index.js";
export * as xenstore from "./xenstore/index.js";
export * as guest from "./guest/index.js";
export * as image from "./image/index.js";
export * as vmm from "./vmm/index.js";
