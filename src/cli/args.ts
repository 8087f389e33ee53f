/**
 * Argument parsing for CLI commands: node's parseArgs plus a usage error that says what was wrong
 * and points at --help. Commands declare their options once; --help text is built from them.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { VmstackError } from "../lib/errors.js";

export interface OptionSpec {
  readonly type: "boolean" | "string";
  readonly short?: string;
  readonly multiple?: boolean;
  readonly default?: string | boolean;
  /** Shown in --help, e.g. "MiB" for `--mem MiB`. */
  readonly arg?: string;
  readonly help: string;
}

export type OptionSpecs = Readonly<Record<string, OptionSpec>>;

export interface Parsed {
  readonly values: Record<string, string | boolean | string[] | boolean[] | undefined>;
  readonly positionals: string[];
}

export function usageError(command: string, message: string): VmstackError {
  return new VmstackError("USAGE", `${command}: ${message} (see 'vmstack ${command} --help')`, {
    facts: { command },
  });
}

export function parseCommandArgs(command: string, argv: readonly string[], options: OptionSpecs): Parsed {
  const config: ParseArgsConfig = {
    args: [...argv],
    options: Object.fromEntries(
      Object.entries(options).map(([name, o]) => [
        name,
        {
          type: o.type,
          ...(o.short === undefined ? {} : { short: o.short }),
          ...(o.multiple === undefined ? {} : { multiple: o.multiple }),
          ...(o.default === undefined ? {} : { default: o.default }),
        },
      ]),
    ),
    allowPositionals: true,
    strict: true,
  };
  try {
    const { values, positionals } = parseArgs(config);
    return { values: values as Parsed["values"], positionals };
  } catch (e) {
    throw usageError(command, e instanceof Error ? e.message.replace(/\. To specify.*$/s, "") : String(e));
  }
}

export function formatOptions(options: OptionSpecs): string {
  const rows = Object.entries(options).map(([name, o]) => {
    const flag = `${o.short ? `-${o.short}, ` : "    "}--${name}${o.arg ? ` ${o.arg}` : ""}`;
    return [flag, o.help + (o.default !== undefined && o.type === "string" ? ` (default ${String(o.default)})` : "")] as const;
  });
  const width = Math.max(0, ...rows.map(([f]) => f.length));
  return rows.map(([f, h]) => `  ${f.padEnd(width)}  ${h}`).join("\n");
}

export function stringOpt(p: Parsed, name: string): string | undefined {
  const v = p.values[name];
  return typeof v === "string" ? v : undefined;
}

export function boolOpt(p: Parsed, name: string): boolean {
  return p.values[name] === true;
}

export function intOpt(command: string, p: Parsed, name: string, min = 0): number | undefined {
  const v = stringOpt(p, name);
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || Number(v) < min) throw usageError(command, `--${name} expects an integer >= ${min}, got '${v}'`);
  return Number(v);
}
