// JSON schemas (draft-07, for Fastify's ajv) of the Messages API request bodies, and the TypeScript
// types of a body that passed them. Derived from @anthropic-ai/sdk's resources/messages types.
//
// Written for Fastify's ajv (no `discriminator`, allErrors off, coerceTypes maybe on), so:
// - no anyOf/oneOf: a failed union reports every branch's error, and the first one would name the
//   wrong field. A string-or-array is `type: [string, array]`; tagged unions are a `type` enum plus an
//   `allOf` of `if {type: X} then {...}`, so a bad block reports e.g. /messages/0/content/1 must have
//   required property 'tool_use_id', and an unknown `type` reports the enum of allowed tags.
// - no `additionalProperties: false` anywhere: Fastify's removeAdditional would silently strip unknown
//   keys, and the API keeps growing fields (caller, toolset_name, ...). We check the fields we use.
// - tool input schemas and tool inputs are plain data (`type: object`), never compiled as schemas.
// Fastify's default coerceTypes ('array') would turn `stop_sequences: null` into [""] and
// `temperature: null` into 0: build the app with {@link fastifyAjvOptions}.

/**
 * For `Fastify({ ajv: fastifyAjvOptions })`: no type coercion, so wrong types are errors rather
 * than guesses, and union types (string or array) without strict-mode warnings.
 */
export const fastifyAjvOptions = { customOptions: { coerceTypes: false, allowUnionTypes: true } } as const;

type Schema = Record<string, unknown>;

const string: Schema = { type: 'string' };
const nonEmpty: Schema = { type: 'string', minLength: 1 };
const boolean: Schema = { type: 'boolean' };
const object: Schema = { type: 'object' };
// [T, 'null'] is the one union type ajv's strict mode allows without allowUnionTypes.
const nullable = (type: string): Schema => ({ type: [type, 'null'] });
const obj = (required: string[], properties: Record<string, Schema>): Schema => ({ type: 'object', required, properties });
/**
 * A string or an array of `items`. A union type, not `if string else array`: under Fastify's default
 * coerceTypes 'array', ajv's type check inside `if` unwraps one-element arrays ([x] -> x) and the
 * `else` then sees the element. ajv's strict mode logs a warning for union types unless
 * allowUnionTypes is on ({@link fastifyAjvOptions} turns it on); validation is right either way.
 */
const stringOr = (items?: Schema): Schema => ({ type: ['string', 'array'], ...(items && { items }) });

/**
 * A tagged union on `type`. `if` requires `type` so that a block without one reports
 * "must have required property 'type'" instead of the first branch's missing fields.
 */
function tagged(branches: Record<string, Schema>, common: Record<string, Schema> = {}): Schema {
  const tags = Object.keys(branches);
  return {
    type: 'object',
    required: ['type'],
    properties: { ...common, type: { type: 'string', enum: tags } },
    allOf: tags.map((tag) => ({ if: { required: ['type'], properties: { type: { const: tag } } }, then: branches[tag] })),
  };
}

const cacheControl: Schema = { type: ['object', 'null'], required: ['type'], properties: { type: string, ttl: string } };
/** Fields any content block may carry. */
const blockCommon = { cache_control: cacheControl };

const textBlock = obj(['text'], { text: string, citations: nullable('array') });
const imageSource = tagged({
  base64: obj(['media_type', 'data'], { media_type: string, data: string }),
  url: obj(['url'], { url: nonEmpty }),
  file: obj(['file_id'], { file_id: nonEmpty }),
});
const documentSource = tagged({
  base64: obj(['media_type', 'data'], { media_type: string, data: string }),
  text: obj(['media_type', 'data'], { media_type: string, data: string }),
  content: { type: 'object', required: ['content'], properties: { content: stringOr() } },
  url: obj(['url'], { url: nonEmpty }),
  file: obj(['file_id'], { file_id: nonEmpty }),
});
const imageBlock = obj(['source'], { source: imageSource });
const documentBlock = obj(['source'], { source: documentSource, title: nullable('string'), context: nullable('string') });
const searchResultBlock = obj(['source', 'title', 'content'], { source: string, title: string, content: { type: 'array' } });

/** What a tool_result's `content` array may hold. */
export const TOOL_RESULT_BLOCK_TYPES = ['text', 'image', 'document', 'search_result', 'tool_reference', 'browser_state'] as const;
const toolResultContent = tagged(
  {
    text: textBlock,
    image: imageBlock,
    document: documentBlock,
    search_result: searchResultBlock,
    tool_reference: obj(['tool_name'], { tool_name: nonEmpty }),
    browser_state: object,
  } satisfies Record<(typeof TOOL_RESULT_BLOCK_TYPES)[number], Schema>,
  blockCommon,
);

/** Results of Anthropic's server tools: accepted loosely (we never produce them; the handler decides). */
const serverToolResult = obj(['tool_use_id'], { tool_use_id: string });

/** Block types of a message's `content` array (the SDK's ContentBlockParam). */
export const CONTENT_BLOCK_TYPES = [
  'text',
  'image',
  'document',
  'search_result',
  'thinking',
  'redacted_thinking',
  'tool_use',
  'tool_result',
  'server_tool_use',
  'web_search_tool_result',
  'web_fetch_tool_result',
  'code_execution_tool_result',
  'bash_code_execution_tool_result',
  'text_editor_code_execution_tool_result',
  'tool_search_tool_result',
  'container_upload',
] as const;
const contentBlock = tagged(
  {
    text: textBlock,
    image: imageBlock,
    document: documentBlock,
    search_result: searchResultBlock,
    thinking: obj(['thinking', 'signature'], { thinking: string, signature: string }),
    redacted_thinking: obj(['data'], { data: string }),
    // `input` must be an object: it is re-serialized into the prompt as the call's arguments.
    tool_use: obj(['id', 'name', 'input'], { id: nonEmpty, name: nonEmpty, input: object }),
    tool_result: obj(['tool_use_id'], {
      tool_use_id: nonEmpty,
      content: stringOr(toolResultContent),
      is_error: boolean,
    }),
    server_tool_use: obj(['id', 'name', 'input'], { id: string, name: string, input: object }),
    web_search_tool_result: serverToolResult,
    web_fetch_tool_result: serverToolResult,
    code_execution_tool_result: serverToolResult,
    bash_code_execution_tool_result: serverToolResult,
    text_editor_code_execution_tool_result: serverToolResult,
    tool_search_tool_result: serverToolResult,
    container_upload: obj(['file_id'], { file_id: string }),
  } satisfies Record<(typeof CONTENT_BLOCK_TYPES)[number], Schema>,
  blockCommon,
);
const textOnlyBlock = tagged({ text: textBlock }, blockCommon);

const message: Schema = {
  type: 'object',
  required: ['role', 'content'],
  properties: {
    // 'system': Claude Code sends mid-conversation system messages (SDK: SystemMessageParam).
    role: { type: 'string', enum: ['user', 'assistant', 'system'] },
    // Empty strings and arrays pass here: the real API rejects them only in some positions (an empty
    // final assistant turn is allowed), which the handler can judge better than a schema.
    content: stringOr(contentBlock),
  },
  allOf: [{ if: { required: ['role'], properties: { role: { const: 'system' } } }, then: { properties: { content: stringOr(textOnlyBlock) } } }],
};

/** Custom tools (no `type`, or `type: "custom"`) need an object input schema; Anthropic's own tools just a `type`. */
const tool: Schema = {
  type: 'object',
  properties: {
    type: nullable('string'),
    name: nonEmpty,
    description: string,
    cache_control: cacheControl,
    defer_loading: boolean,
    strict: boolean,
    // Any JSON Schema (draft 2020-12 with `$schema` included): data to us, so only its `type` is checked.
    input_schema: { type: 'object', required: ['type'], properties: { type: { const: 'object' } } },
  },
  allOf: [
    {
      if: { properties: { type: { enum: ['custom', null] } } },
      then: { required: ['name', 'input_schema'] },
      else: { required: ['type'] },
    },
  ],
};

const toolChoice = tagged(
  {
    auto: object,
    any: object,
    none: object,
    tool: obj(['name'], { name: nonEmpty }),
  },
  { disable_parallel_tool_use: boolean },
);

const thinkingDisplay = nullable('string');
const thinking = tagged({
  // The API requires budget_tokens >= 1024 (and < max_tokens, which the handler checks after clamping).
  enabled: obj(['budget_tokens'], { budget_tokens: { type: 'integer', minimum: 1024 }, display: thinkingDisplay }),
  disabled: object,
  adaptive: obj([], { display: thinkingDisplay }),
  between_tools: object,
});

/** Fields shared by both bodies. Unknown top-level keys pass: clients add fields faster than we do. */
const commonProperties: Record<string, Schema> = {
  model: nonEmpty,
  messages: { type: 'array', minItems: 1, items: message },
  system: stringOr(textOnlyBlock),
  tools: { type: 'array', items: tool },
  tool_choice: toolChoice,
  thinking,
  output_config: { type: 'object', properties: { effort: nullable('string'), format: nullable('object') } },
  cache_control: cacheControl,
  context_management: nullable('object'),
  mcp_servers: nullable('array'),
  container: { type: ['string', 'object', 'null'] },
  speed: nullable('string'),
};

/** Body of POST /v1/messages. */
export const messagesRequestSchema: Schema = {
  type: 'object',
  required: ['model', 'max_tokens', 'messages'],
  properties: {
    ...commonProperties,
    // No maximum: Claude Code asks for 128000; the handler clamps to what the context leaves.
    max_tokens: { type: 'integer', minimum: 1 },
    stream: boolean,
    temperature: { type: 'number', minimum: 0, maximum: 1 },
    top_p: { type: 'number', minimum: 0, maximum: 1 },
    top_k: { type: 'integer', minimum: 0 },
    stop_sequences: { type: 'array', items: string },
    metadata: { type: 'object', properties: { user_id: nullable('string') } },
    service_tier: string,
  },
};

/** Body of POST /v1/messages/count_tokens: the same prompt fields, nothing about generation. */
export const countTokensRequestSchema: Schema = {
  type: 'object',
  required: ['model', 'messages'],
  properties: commonProperties,
};

// ---- Types of a validated body. Loose members carry `[key: string]: unknown` for fields we pass over.

export interface CacheControl {
  type: 'ephemeral' | (string & {});
  ttl?: '5m' | '1h' | (string & {});
}
interface BlockBase {
  cache_control?: CacheControl | null;
}

export interface TextBlockParam extends BlockBase {
  type: 'text';
  text: string;
  citations?: unknown[] | null;
}
export type ImageSource =
  | { type: 'base64'; media_type: string; data: string }
  | { type: 'url'; url: string }
  | { type: 'file'; file_id: string };
export interface ImageBlockParam extends BlockBase {
  type: 'image';
  source: ImageSource;
}
export type DocumentSource =
  | { type: 'base64'; media_type: string; data: string }
  | { type: 'text'; media_type: string; data: string }
  | { type: 'content'; content: string | Array<TextBlockParam | ImageBlockParam> }
  | { type: 'url'; url: string }
  | { type: 'file'; file_id: string };
export interface DocumentBlockParam extends BlockBase {
  type: 'document';
  source: DocumentSource;
  title?: string | null;
  context?: string | null;
  citations?: unknown;
}
export interface SearchResultBlockParam extends BlockBase {
  type: 'search_result';
  source: string;
  title: string;
  content: TextBlockParam[];
}
export interface ThinkingBlockParam {
  type: 'thinking';
  thinking: string;
  signature: string;
}
export interface RedactedThinkingBlockParam {
  type: 'redacted_thinking';
  data: string;
}
export interface ToolUseBlockParam extends BlockBase {
  type: 'tool_use';
  id: string;
  name: string;
  input: Record<string, unknown>;
}
export interface ToolReferenceBlockParam extends BlockBase {
  type: 'tool_reference';
  tool_name: string;
}
export type ToolResultContentBlock =
  | TextBlockParam
  | ImageBlockParam
  | DocumentBlockParam
  | SearchResultBlockParam
  | ToolReferenceBlockParam
  | { type: 'browser_state'; [key: string]: unknown };
export interface ToolResultBlockParam extends BlockBase {
  type: 'tool_result';
  tool_use_id: string;
  content?: string | ToolResultContentBlock[];
  is_error?: boolean;
}
/** Blocks of Anthropic's server tools and the Files API: accepted, checked only loosely. */
export interface ServerBlockParam extends BlockBase {
  type: Exclude<(typeof CONTENT_BLOCK_TYPES)[number], ContentBlockParamKnown['type']>;
  [key: string]: unknown;
}
type ContentBlockParamKnown =
  | TextBlockParam
  | ImageBlockParam
  | DocumentBlockParam
  | SearchResultBlockParam
  | ThinkingBlockParam
  | RedactedThinkingBlockParam
  | ToolUseBlockParam
  | ToolResultBlockParam;
export type ContentBlockParam = ContentBlockParamKnown | ServerBlockParam;

export type Role = 'user' | 'assistant' | 'system';
export type MessageParam =
  | { role: 'user' | 'assistant'; content: string | ContentBlockParam[] }
  | { role: 'system'; content: string | TextBlockParam[] };
export type SystemParam = string | TextBlockParam[];

/** A tool the client runs, described by a JSON Schema the model fills in. */
export interface ToolParam {
  type?: 'custom' | null;
  name: string;
  description?: string;
  /** Any JSON Schema with `type: "object"`; may carry `$schema`, `$defs`, ... */
  input_schema: { type: 'object'; properties?: unknown; required?: string[] | null; [key: string]: unknown };
  cache_control?: CacheControl | null;
  /** Not offered to the model until a tool search brings it in: do not list it as callable. */
  defer_loading?: boolean;
  strict?: boolean;
  [key: string]: unknown;
}
/** One of Anthropic's own tools (`bash_20250124`, `web_search_20250305`, ...): the handler decides what to do. */
export interface ServerToolParam {
  type: string;
  name?: string;
  [key: string]: unknown;
}
export type ToolUnionParam = ToolParam | ServerToolParam;
export const isCustomTool = (tool: ToolUnionParam): tool is ToolParam => tool.type == null || tool.type === 'custom';

export type ToolChoice =
  | { type: 'auto' | 'any'; disable_parallel_tool_use?: boolean }
  | { type: 'none' }
  | { type: 'tool'; name: string; disable_parallel_tool_use?: boolean };

export type ThinkingConfig =
  | { type: 'enabled'; budget_tokens: number; display?: 'summarized' | 'omitted' | null }
  | { type: 'disabled' }
  | { type: 'adaptive'; display?: 'summarized' | 'omitted' | null }
  | { type: 'between_tools' };

export interface OutputConfig {
  effort?: 'low' | 'medium' | 'high' | 'xhigh' | 'max' | null;
  format?: { type: 'json_schema'; schema: Record<string, unknown> } | null;
  [key: string]: unknown;
}

/** Body of POST /v1/messages/count_tokens after validation. */
export interface CountTokensRequest {
  model: string;
  messages: MessageParam[];
  system?: SystemParam;
  tools?: ToolUnionParam[];
  tool_choice?: ToolChoice;
  thinking?: ThinkingConfig;
  output_config?: OutputConfig;
  cache_control?: CacheControl | null;
  context_management?: Record<string, unknown> | null;
  mcp_servers?: unknown[] | null;
  container?: string | Record<string, unknown> | null;
  speed?: string | null;
  [key: string]: unknown;
}

/** Body of POST /v1/messages after validation. */
export interface MessagesRequest extends CountTokensRequest {
  max_tokens: number;
  stream?: boolean;
  temperature?: number;
  top_p?: number;
  top_k?: number;
  stop_sequences?: string[];
  metadata?: { user_id?: string | null };
  service_tier?: string;
}
