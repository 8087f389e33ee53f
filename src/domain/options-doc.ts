/**
 * docs/options.md, rendered from the option table in spec.ts (the only place options are
 * described). `npm run docs:options` writes it; a unit test fails when the file is stale.
 */
import { type Field, type Schema, describeType } from "./schema.js";
import { domainSchema } from "./spec.js";

interface Row {
  readonly path: string;
  readonly field: Field;
}

function rows(schema: Schema, prefix: string, out: Row[]): void {
  if (schema.kind === "object") {
    for (const [key, field] of Object.entries(schema.fields)) {
      const path = prefix === "" ? key : `${prefix}.${key}`;
      out.push({ path, field });
      rows(field.schema, path, out);
    }
  } else if (schema.kind === "list") rows(schema.item, `${prefix}[]`, out);
  else if (schema.kind === "union") {
    for (const [tag, variant] of Object.entries(schema.variants)) rows(variant, `${prefix}{${schema.tag}=${tag}}`, out);
  }
}

function defaultText(f: Field): string {
  switch (f.presence) {
    case "required":
      return "**required**";
    case "optional":
      return "absent";
    case "derived":
      return f.derivedFrom ?? "derived";
    case "default":
      return f.schema.kind === "object" ? "see below" : "`" + JSON.stringify(f.default) + "`";
  }
}

const cell = (s: string): string => s.replaceAll("|", "\\|").replaceAll("\n", " ");

export function renderOptionsDoc(): string {
  const all: Row[] = [];
  rows(domainSchema, "", all);
  return [
    "# Domain options",
    "",
    "<!-- Generated from src/domain/spec.ts by `npm run docs:options`; do not edit by hand. -->",
    "",
    "A domain is a JSON object (or an xl.cfg / xm file, converted on reading; see `vmstack config convert`).",
    "Unknown options are errors. `nics[]{type=user}` means: an entry of `nics` whose `type` is `user`.",
    "",
    "| option | type | default | description |",
    "| --- | --- | --- | --- |",
    ...all.map((r) => `| \`${r.path}\` | ${cell(describeType(r.field.schema))} | ${cell(defaultText(r.field))} | ${cell(r.field.description)} |`),
    "",
  ].join("\n");
}
