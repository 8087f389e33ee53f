/**
 * Where the built guest pieces are, for the initrd builder: `make -C guest` (part of
 * `npm run build`) puts them in dist/guest/.
 */
import { fileURLToPath } from "node:url";

export interface GuestArtifacts {
  /** Static vmstack-agent binary; goes to /bin/vmstack-agent in the initrd. */
  readonly agent: string;
  /** The busybox sh init script; goes to /init in the initrd. */
  readonly init: string;
}

export function guestArtifacts(): GuestArtifacts {
  // This file compiles to dist/src/guest/artifacts.js; the artifacts live in dist/guest/.
  return {
    agent: fileURLToPath(new URL("../../guest/vmstack-agent", import.meta.url)),
    init: fileURLToPath(new URL("../../guest/init", import.meta.url)),
  };
}

/** The virtio-serial port name the agent serves (QEMU: -device virtserialport,name=...). */
export const AGENT_PORT_NAME = "org.vmstack.agent";

/**
 * The second port: the xenstore wire protocol (xs_wire.h framing) unchanged, which vmstackd binds
 * to the guest's domid (docs/agent-protocol.md, "The xenstore channel"). Apart from the agent's
 * port so that neither protocol can stall the other.
 */
export const XENSTORE_PORT_NAME = "org.vmstack.xenstore";

/** The xenstore tools' multi-call names: links to the agent binary in the default guest's initrd. */
export const XENSTORE_TOOL_NAMES = ["xenstore-read", "xenstore-write", "xenstore-ls", "xenstore-list", "xenstore-rm", "xenstore-mkdir", "xenstore-exists", "xenstore-watch"] as const;

/** The socket file of the xenstore port in a domain's run directory (QEMU serves it). */
export const XENSTORE_SOCKET_NAME = "xenstore.sock";
