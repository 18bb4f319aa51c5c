// Qwen3-Coder's XML tool calls write a string parameter as raw text up to its closing tag, and llama.cpp's
// grammar for it (the rule xml-arg-string) takes any such text, whatever the schema says. A parameter whose
// schema allows only some strings (enum, const) is held to them here, by rewriting its rule in the grammar
// that the chat layer made. Typed parameters are already held to their JSON schema there.

interface ToolFunction {
  name?: string;
  parameters?: { properties?: Record<string, unknown> };
}

/** The rule that accepts any text up to and with "\n</parameter>\n". */
const ANY_STRING_RULE = 'xml-arg-string';
const CLOSE = '"\\n</parameter>\\n"';

/** llama.cpp's rule names: every run of characters outside [a-zA-Z0-9-] becomes '-'. */
const ruleName = (name: string): string => name.replace(/[^a-zA-Z0-9-]+/g, '-');

/** A GBNF literal: JSON's string escapes are GBNF's, but for \b and \f, which GBNF writes as \x.. */
const literal = (text: string): string => JSON.stringify(text).replace(/\\b/g, '\\x08').replace(/\\f/g, '\\x0C');

/** The strings a parameter's schema allows, when it allows only a list of strings. */
function allowedStrings(schema: unknown): string[] | undefined {
  const s = schema as { enum?: unknown; const?: unknown } | null;
  if (!s || typeof s !== 'object') return undefined;
  const values = s.enum !== undefined ? s.enum : 'const' in s ? [s.const] : undefined;
  if (!Array.isArray(values) || values.length === 0 || !values.every((v) => typeof v === 'string')) return undefined;
  return values as string[];
}

/** `grammar` with each string parameter of `tools` (OpenAI format) that the schema limits to some strings held to them. */
export function holdXmlStringEnums(grammar: string, tools: readonly unknown[] | undefined): string {
  if (!tools || !grammar.includes(ANY_STRING_RULE)) return grammar;
  const lines = grammar.split('\n');
  for (const tool of tools) {
    const fn = (tool as { function?: ToolFunction }).function;
    if (!fn?.name) continue;
    for (const [param, schema] of Object.entries(fn.parameters?.properties ?? {})) {
      const allowed = allowedStrings(schema);
      if (!allowed) continue;
      const head = `${ruleName(`tool-${fn.name}-arg-${param}`)} ::= `;
      const i = lines.findIndex((line) => line.startsWith(head) && line.endsWith(` ${ANY_STRING_RULE}`));
      if (i < 0) continue;
      const values = allowed.map(literal).join(' | ');
      lines[i] = `${lines[i]!.slice(0, -ANY_STRING_RULE.length)}(${values}) ${CLOSE}`;
    }
  }
  return lines.join('\n');
}
