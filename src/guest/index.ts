/** Public surface of the guest layer: the agent protocol, its host-side client, the guest artifacts. */
export { AgentClient } from "./agent-client.js";
export type { AgentInfo, ConnectOptions, FileOptions, RunOutput, WriteFileOptions } from "./agent-client.js";
export type { ExecRequest } from "./exec-request.js";
export { parseExecRequest } from "./exec-request.js";
export type { ExecHandle, ExecResult } from "./exec-session.js";
export { AGENT_PORT_NAME, XENSTORE_PORT_NAME, XENSTORE_SOCKET_NAME, XENSTORE_TOOL_NAMES, guestArtifacts } from "./artifacts.js";
export type { GuestArtifacts } from "./artifacts.js";
export {
  FrameDecoder,
  PROTOCOL_VERSION,
  MAX_PAYLOAD,
  encodeFrame,
  encodeMessage,
  signalName,
} from "./protocol.js";
export type { DecodeEvent, Message } from "./protocol.js";
export { startHostAgent } from "./host-agent.js";
export type { HostAgent, HostAgentOptions } from "./host-agent.js";
