/** `vmstack run`: placeholder until the throwaway-VM path lands. */
import type { Command } from "../command.js";
import { VmstackError } from "../../lib/errors.js";

export const runCommand: Command = {
  name: "run",
  summary: "boot a fresh VM, run a command in it, print its output and exit with its status",
  usage: "[options] -- COMMAND [ARG…]",
  options: {},
  async run() {
    throw new VmstackError("NOT_IMPLEMENTED", "not yet");
  },
};
