/**
 * The registry of CLI verbs. Adding a verb: one file in this folder and one line here.
 */
import type { Command } from "../command.js";
import { configCommand } from "./config.js";
import { createCommand } from "./create.js";
import { infoCommand } from "./info.js";
import { kernelCommand } from "./kernel.js";
import { runCommand } from "./run.js";
import { xenstoreCommand } from "./xenstore.js";
import { xenstoredCommand } from "./xenstored.js";
import { testCommand } from "./test.js";

export const commands: readonly Command[] = [runCommand, infoCommand, kernelCommand, xenstoreCommand, xenstoredCommand, createCommand, configCommand, testCommand];
