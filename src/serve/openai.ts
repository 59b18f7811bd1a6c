// OpenAI's completion and chat request bodies, parsed into generate options (400s name the field),
// and the logprobs of a response in both of OpenAI's formats.
import type { GenerateOptions, GenerationChunk, ResponseFormat, TokenLogprob } from "../engine/generate.ts";
import { grammarOf } from "../grammar/constraint.ts";
import { type ToolChoice, toolCallGrammar } from "../grammar/tools.ts";
import type { ChatMessage, ChatTool, Tokenizer } from "../tokenizer/tokenizer.ts";
import { type Body, HttpError } from "./http.ts";

function optionalNumber(body: Body, key: string, check: (v: number) => boolean, range: string): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v) || !check(v))
    throw new HttpError(400, `'${key}' must be ${range}, got ${JSON.stringify(v)}`, key);
  return v;
}

const isInteger =
  (min: number, max = Number.MAX_SAFE_INTEGER) =>
  (v: number) =>
    Number.isSafeInteger(v) && v >= min && v <= max;

/** The generation options both endpoints share (OpenAI names, plus the library's samplers). */
function samplingOptions(body: Body): GenerateOptions {
  const n = optionalNumber(body, "n", isInteger(1), "an integer >= 1");
  if (n !== undefined && n !== 1) throw new HttpError(400, "'n' must be 1: one completion per request", "n");
  const stop = body["stop"];
  let stopStrings: string[] | undefined;
  if (typeof stop === "string") stopStrings = [stop];
  else if (Array.isArray(stop) && stop.length <= 4 && stop.every((s) => typeof s === "string"))
    stopStrings = stop as string[];
  else if (stop !== undefined && stop !== null)
    throw new HttpError(400, "'stop' must be a string or a list of up to 4 strings", "stop");
  const bias = body["logit_bias"];
  let logitBias: Record<number, number> | undefined;
  if (bias !== undefined && bias !== null) {
    if (typeof bias !== "object" || Array.isArray(bias))
      throw new HttpError(400, "'logit_bias' must map token ids to numbers", "logit_bias");
    logitBias = {};
    for (const [id, value] of Object.entries(bias)) {
      if (!/^\d+$/.test(id) || typeof value !== "number" || !(value >= -100 && value <= 100)) {
        throw new HttpError(
          400,
          `'logit_bias' maps token ids to numbers in [-100, 100], got ${JSON.stringify(id)}: ${JSON.stringify(value)}`,
          "logit_bias",
        );
      }
      logitBias[Number(id)] = value;
    }
  }
  const options: GenerateOptions = {
    maxTokens:
      optionalNumber(body, "max_completion_tokens", isInteger(1), "an integer >= 1") ??
      optionalNumber(body, "max_tokens", isInteger(1), "an integer >= 1"),
    temperature: optionalNumber(body, "temperature", (v) => v >= 0 && v <= 2, "a number in [0, 2]") ?? 1,
    topP: optionalNumber(body, "top_p", (v) => v > 0 && v <= 1, "a number in (0, 1]"),
    seed: optionalNumber(body, "seed", Number.isSafeInteger, "an integer") ?? Math.floor(Math.random() * 2 ** 31),
    stopStrings,
    topK: optionalNumber(body, "top_k", isInteger(0), "an integer >= 0"),
    minP: optionalNumber(body, "min_p", (v) => v >= 0 && v <= 1, "a number in [0, 1]"),
    repetitionPenalty: optionalNumber(body, "repetition_penalty", (v) => v >= 0, "a number >= 0"),
    presencePenalty: optionalNumber(body, "presence_penalty", (v) => v >= -2 && v <= 2, "a number in [-2, 2]"),
    frequencyPenalty: optionalNumber(body, "frequency_penalty", (v) => v >= -2 && v <= 2, "a number in [-2, 2]"),
    logitBias,
  };
  return options;
}

function messageText(message: unknown, i: number): ChatMessage {
  const param = `messages[${i}]`;
  if (typeof message !== "object" || message === null) throw new HttpError(400, `'${param}' must be an object`, param);
  const {
    role,
    content,
    tool_calls: calls,
    tool_call_id: callId,
  } = message as { role?: unknown; content?: unknown; tool_calls?: unknown; tool_call_id?: unknown };
  if (role !== "system" && role !== "user" && role !== "assistant" && role !== "developer" && role !== "tool") {
    throw new HttpError(
      400,
      `'${param}.role' must be system, developer, user, assistant or tool, got ${JSON.stringify(role)}`,
      `${param}.role`,
    );
  }
  let text: string | null;
  if (typeof content === "string") text = content;
  else if (
    Array.isArray(content) &&
    content.every(
      (p) =>
        typeof p === "object" &&
        p !== null &&
        (p as { type?: unknown }).type === "text" &&
        typeof (p as { text?: unknown }).text === "string",
    )
  ) {
    text = content.map((p) => (p as { text: string }).text).join("");
  } else if (role === "assistant" && (content === null || content === undefined) && calls !== undefined) {
    text = null;
  } else {
    throw new HttpError(400, `'${param}.content' must be a string or a list of text parts`, `${param}.content`);
  }
  const out: ChatMessage = { role: role === "developer" ? "system" : role, content: text };
  if (calls !== undefined) {
    const valid = (c: unknown) => {
      const call = c as { id?: unknown; type?: unknown; function?: { name?: unknown; arguments?: unknown } };
      return (
        typeof call === "object" &&
        call !== null &&
        typeof call.id === "string" &&
        call.type === "function" &&
        typeof call.function?.name === "string" &&
        typeof call.function.arguments === "string"
      );
    };
    if (role !== "assistant" || !Array.isArray(calls) || !calls.every(valid)) {
      throw new HttpError(
        400,
        `'${param}.tool_calls' must be an assistant's list of {id, type: "function", function: {name, arguments}}`,
        `${param}.tool_calls`,
      );
    }
    out.tool_calls = calls as NonNullable<ChatMessage["tool_calls"]>;
  }
  if (role === "tool") {
    if (typeof callId !== "string")
      throw new HttpError(
        400,
        `'${param}.tool_call_id' must be the id of the call it answers`,
        `${param}.tool_call_id`,
      );
    out.tool_call_id = callId;
  }
  return out;
}

/** The prompt of a chat request: the tokenizer's chat template, or, for a model without one, the
 * messages as "role: content" lines followed by "assistant:" (the tools, if any, in a first line). */
function chatPrompt(tokenizer: Tokenizer, messages: ChatMessage[], tools: ChatTool[] | undefined): string {
  if (tokenizer.hasChatTemplate) return tokenizer.applyChatTemplate(messages, tools);
  const line = (m: ChatMessage) =>
    `${m.role}: ${m.content ?? m.tool_calls?.map((c) => `<tool_call>${JSON.stringify({ name: c.function.name, arguments: c.function.arguments })}</tool_call>`).join("\n") ?? ""}`;
  const offer =
    tools && tools.length > 0
      ? [`tools: ${JSON.stringify(tools)} (call one as <tool_call>{"name": ..., "arguments": ...}</tool_call>)`]
      : [];
  return `${[...offer, ...messages.map(line)].join("\n")}\nassistant:`;
}

/** OpenAI's response_format as the library's (400 naming what is wrong). */
function responseFormatOf(body: Body): ResponseFormat | undefined {
  const f = body["response_format"];
  if (f === undefined || f === null) return undefined;
  const type = (f as { type?: unknown }).type;
  let format: ResponseFormat;
  if (type === "text" || type === "json_object") format = { type };
  else if (type === "json_schema") {
    const spec = (f as { json_schema?: { schema?: unknown } }).json_schema;
    if (typeof spec !== "object" || spec === null)
      throw new HttpError(400, "'response_format.json_schema' must be an object with a 'schema'", "response_format");
    format = { type: "json_schema", schema: spec.schema ?? {} };
  } else
    throw new HttpError(
      400,
      `'response_format.type' must be text, json_object or json_schema, got ${JSON.stringify(type)}`,
      "response_format",
    );
  try {
    grammarOf(format);
  } catch (e) {
    throw new HttpError(400, `'response_format': ${(e as Error).message}`, "response_format");
  }
  return format;
}

/** The request's tools and tool_choice (none offered: no tools). */
function toolsOf(body: Body): { tools: ChatTool[]; choice: ToolChoice } | undefined {
  const tools = body["tools"];
  const choice = body["tool_choice"];
  if (tools === undefined || tools === null || (Array.isArray(tools) && tools.length === 0)) {
    if (choice !== undefined && choice !== null && choice !== "none")
      throw new HttpError(400, "'tool_choice' needs 'tools'", "tool_choice");
    return undefined;
  }
  const valid = (t: unknown) => {
    const tool = t as { type?: unknown; function?: { name?: unknown; parameters?: unknown } };
    return (
      typeof tool === "object" &&
      tool !== null &&
      tool.type === "function" &&
      typeof tool.function?.name === "string" &&
      /^[A-Za-z0-9_-]{1,64}$/.test(tool.function.name) &&
      (tool.function.parameters === undefined ||
        (typeof tool.function.parameters === "object" && tool.function.parameters !== null))
    );
  };
  if (!Array.isArray(tools) || !tools.every(valid))
    throw new HttpError(
      400,
      "'tools' must be a list of {type: \"function\", function: {name, description?, parameters?}} (names of letters, digits, _ and -)",
      "tools",
    );
  let parsed: ToolChoice;
  if (choice === undefined || choice === null || choice === "auto") parsed = "auto";
  else if (choice === "none" || choice === "required") parsed = choice;
  else {
    const name = (choice as { function?: { name?: unknown } }).function?.name;
    if ((choice as { type?: unknown }).type !== "function" || typeof name !== "string")
      throw new HttpError(
        400,
        "'tool_choice' must be none, auto, required or {type: \"function\", function: {name}}",
        "tool_choice",
      );
    if (!(tools as ChatTool[]).some((t) => t.function.name === name))
      throw new HttpError(400, `'tool_choice' names '${name}', which is not in 'tools'`, "tool_choice");
    parsed = { name };
  }
  return { tools: tools as ChatTool[], choice: parsed };
}

export interface Completion {
  kind: "chat" | "text";
  prompt: string;
  options: GenerateOptions;
  /** Chat: top_logprobs (or 0) when logprobs are asked for; text: the logprobs count. */
  logprobs: number | undefined;
  stream: boolean;
  includeUsage: boolean;
  /** Chat with tools: the answer may be tool calls (tools.ts's format). */
  tools?: { tools: ChatTool[]; choice: ToolChoice } | undefined;
}

export function parseCompletion(kind: "chat" | "text", body: Body, tokenizer: Tokenizer): Completion {
  const options = samplingOptions(body);
  let prompt: string;
  let logprobs: number | undefined;
  let tools: Completion["tools"];
  const format = responseFormatOf(body);
  if (kind === "chat") {
    const messages = body["messages"];
    if (!Array.isArray(messages) || messages.length === 0)
      throw new HttpError(400, "'messages' must be a non-empty list", "messages");
    tools = toolsOf(body);
    prompt = chatPrompt(tokenizer, messages.map(messageText), tools?.tools);
    const wanted = body["logprobs"];
    if (wanted !== undefined && wanted !== null && typeof wanted !== "boolean")
      throw new HttpError(400, "'logprobs' must be a boolean", "logprobs");
    const top = optionalNumber(body, "top_logprobs", isInteger(0, 20), "an integer in [0, 20]");
    if (top !== undefined && wanted !== true)
      throw new HttpError(400, "'top_logprobs' needs 'logprobs': true", "top_logprobs");
    logprobs = wanted === true ? (top ?? 0) : undefined;
  } else {
    const p = body["prompt"];
    if (typeof p === "string") prompt = p;
    else if (Array.isArray(p) && p.length === 1 && typeof p[0] === "string") prompt = p[0];
    else throw new HttpError(400, "'prompt' must be a string (or a list of one string)", "prompt");
    logprobs = optionalNumber(body, "logprobs", isInteger(0, 20), "an integer in [0, 20]");
  }
  const stream = body["stream"];
  if (stream !== undefined && stream !== null && typeof stream !== "boolean")
    throw new HttpError(400, "'stream' must be a boolean", "stream");
  const streamOptions = body["stream_options"];
  const includeUsage =
    typeof streamOptions === "object" &&
    streamOptions !== null &&
    (streamOptions as { include_usage?: unknown }).include_usage === true;
  const toolGrammar = tools ? toolCallGrammar(tools.tools, tools.choice) : null;
  if (toolGrammar && format && format.type !== "text")
    throw new HttpError(
      400,
      "'response_format' and 'tools' cannot both constrain the answer (use tool_choice: none)",
      "response_format",
    );
  let responseFormat = format;
  if (toolGrammar) {
    responseFormat = { type: "grammar", grammar: toolGrammar };
    try {
      grammarOf(responseFormat);
    } catch (e) {
      throw new HttpError(400, `'tools': ${(e as Error).message}`, "tools");
    }
  }
  const extra = { ...(logprobs !== undefined ? { logprobs } : {}), ...(responseFormat ? { responseFormat } : {}) };
  return {
    kind,
    prompt,
    options: { ...options, ...extra },
    logprobs,
    stream: stream === true,
    includeUsage,
    tools: toolGrammar ? tools : undefined,
  };
}

interface TokenScore {
  token: string;
  logprob: number;
  bytes: number[];
}

/** Accumulated logprobs in both of OpenAI's shapes. */
export class Logprobs {
  readonly chat: (TokenScore & { top_logprobs: TokenScore[] })[] = [];
  readonly text = {
    tokens: [] as string[],
    token_logprobs: [] as number[],
    top_logprobs: [] as Record<string, number>[],
    text_offset: [] as number[],
  };
  #offset = 0;

  constructor(readonly tokenizer: Tokenizer) {}

  #score(t: TokenLogprob): TokenScore {
    const token = this.tokenizer.decode([t.token], false);
    return { token, logprob: t.logprob, bytes: [...new TextEncoder().encode(token)] };
  }

  /** Adds a token's scores (none without logprobs). Alternatives that decode to the same text share
   * a key in the completions format: the most probable one is kept. */
  add(chunk: GenerationChunk): { chat: Logprobs["chat"]; text: Logprobs["text"] } | null {
    if (chunk.logprob === undefined) return null;
    const top = (chunk.topLogprobs ?? []).map((t) => this.#score(t));
    const own = this.#score({ token: chunk.token, logprob: chunk.logprob });
    const chat = { ...own, top_logprobs: [...top] };
    this.chat.push(chat);
    const text = {
      tokens: [own.token],
      token_logprobs: [own.logprob],
      top_logprobs: [Object.fromEntries(top.reverse().map((t) => [t.token, t.logprob]))],
      text_offset: [this.#offset],
    };
    this.#offset += chunk.text.length;
    for (const key of ["tokens", "token_logprobs", "top_logprobs", "text_offset"] as const)
      (this.text[key] as unknown[]).push(...text[key]);
    return { chat: [chat], text };
  }
}
