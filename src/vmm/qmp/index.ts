/** QMP: QEMU's JSON machine protocol (protocol codec + client). */
export { QmpClient } from "./client.js";
export type { QmpCallOptions, QmpConnectOptions } from "./client.js";
export { decodeQmpLine, encodeQmpCommand, LineSplitter } from "./protocol.js";
export type { QmpEvent, QmpGreeting, QmpMessage } from "./protocol.js";
