// OpenAI's completion and chat request bodies, parsed into generate options (400s name the field),
// and the logprobs of a response in both of OpenAI's formats.
import type { GenerateOptions, GenerationChunk, TokenLogprob } from "../generate.ts";
import type { ChatMessage, Tokenizer } from "../tokenizer.ts";
import { type Body, HttpError } from "./http.ts";

function optionalNumber(body: Body, key: string, check: (v: number) => boolean, range: string): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v) || !check(v)) throw new HttpError(400, `'${key}' must be ${range}, got ${JSON.stringify(v)}`, key);
  return v;
}

const isInteger = (min: number, max = Number.MAX_SAFE_INTEGER) => (v: number) => Number.isSafeInteger(v) && v >= min && v <= max;

/** The generation options both endpoints share (OpenAI names, plus the library's samplers). */
function samplingOptions(body: Body): GenerateOptions {
  const n = optionalNumber(body, "n", isInteger(1), "an integer >= 1");
  if (n !== undefined && n !== 1) throw new HttpError(400, "'n' must be 1: one completion per request", "n");
  const stop = body["stop"];
  let stopStrings: string[] | undefined;
  if (typeof stop === "string") stopStrings = [stop];
  else if (Array.isArray(stop) && stop.length <= 4 && stop.every((s) => typeof s === "string")) stopStrings = stop as string[];
  else if (stop !== undefined && stop !== null) throw new HttpError(400, "'stop' must be a string or a list of up to 4 strings", "stop");
  const bias = body["logit_bias"];
  let logitBias: Record<number, number> | undefined;
  if (bias !== undefined && bias !== null) {
    if (typeof bias !== "object" || Array.isArray(bias)) throw new HttpError(400, "'logit_bias' must map token ids to numbers", "logit_bias");
    logitBias = {};
    for (const [id, value] of Object.entries(bias)) {
      if (!/^\d+$/.test(id) || typeof value !== "number" || !(value >= -100 && value <= 100)) {
        throw new HttpError(400, `'logit_bias' maps token ids to numbers in [-100, 100], got ${JSON.stringify(id)}: ${JSON.stringify(value)}`, "logit_bias");
      }
      logitBias[Number(id)] = value;
    }
  }
  const options: GenerateOptions = {
    maxTokens: optionalNumber(body, "max_completion_tokens", isInteger(1), "an integer >= 1") ?? optionalNumber(body, "max_tokens", isInteger(1), "an integer >= 1"),
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
  const { role, content } = message as { role?: unknown; content?: unknown };
  if (role !== "system" && role !== "user" && role !== "assistant" && role !== "developer") {
    throw new HttpError(400, `'${param}.role' must be system, developer, user or assistant, got ${JSON.stringify(role)}`, `${param}.role`);
  }
  let text: string;
  if (typeof content === "string") text = content;
  else if (Array.isArray(content) && content.every((p) => typeof p === "object" && p !== null && (p as { type?: unknown }).type === "text" && typeof (p as { text?: unknown }).text === "string")) {
    text = content.map((p) => (p as { text: string }).text).join("");
  } else {
    throw new HttpError(400, `'${param}.content' must be a string or a list of text parts`, `${param}.content`);
  }
  return { role: role === "developer" ? "system" : role, content: text };
}

/** The prompt of a chat request: the tokenizer's chat template, or, for a model without one, the
 * messages as "role: content" lines followed by "assistant:". */
function chatPrompt(tokenizer: Tokenizer, messages: ChatMessage[]): string {
  if (tokenizer.hasChatTemplate) return tokenizer.applyChatTemplate(messages);
  return `${messages.map((m) => `${m.role}: ${m.content}`).join("\n")}\nassistant:`;
}

export interface Completion {
  kind: "chat" | "text";
  prompt: string;
  options: GenerateOptions;
  /** Chat: top_logprobs (or 0) when logprobs are asked for; text: the logprobs count. */
  logprobs: number | undefined;
  stream: boolean;
  includeUsage: boolean;
}

export function parseCompletion(kind: "chat" | "text", body: Body, tokenizer: Tokenizer): Completion {
  const options = samplingOptions(body);
  let prompt: string;
  let logprobs: number | undefined;
  if (kind === "chat") {
    const messages = body["messages"];
    if (!Array.isArray(messages) || messages.length === 0) throw new HttpError(400, "'messages' must be a non-empty list", "messages");
    prompt = chatPrompt(tokenizer, messages.map(messageText));
    const wanted = body["logprobs"];
    if (wanted !== undefined && wanted !== null && typeof wanted !== "boolean") throw new HttpError(400, "'logprobs' must be a boolean", "logprobs");
    const top = optionalNumber(body, "top_logprobs", isInteger(0, 20), "an integer in [0, 20]");
    if (top !== undefined && wanted !== true) throw new HttpError(400, "'top_logprobs' needs 'logprobs': true", "top_logprobs");
    logprobs = wanted === true ? (top ?? 0) : undefined;
  } else {
    const p = body["prompt"];
    if (typeof p === "string") prompt = p;
    else if (Array.isArray(p) && p.length === 1 && typeof p[0] === "string") prompt = p[0];
    else throw new HttpError(400, "'prompt' must be a string (or a list of one string)", "prompt");
    logprobs = optionalNumber(body, "logprobs", isInteger(0, 20), "an integer in [0, 20]");
  }
  const stream = body["stream"];
  if (stream !== undefined && stream !== null && typeof stream !== "boolean") throw new HttpError(400, "'stream' must be a boolean", "stream");
  const streamOptions = body["stream_options"];
  const includeUsage = typeof streamOptions === "object" && streamOptions !== null && (streamOptions as { include_usage?: unknown }).include_usage === true;
  return { kind, prompt, options: { ...options, ...(logprobs !== undefined ? { logprobs } : {}) }, logprobs, stream: stream === true, includeUsage };
}

interface TokenScore {
  token: string;
  logprob: number;
  bytes: number[];
}

/** Accumulated logprobs in both of OpenAI's shapes. */
export class Logprobs {
  readonly chat: (TokenScore & { top_logprobs: TokenScore[] })[] = [];
  readonly text = { tokens: [] as string[], token_logprobs: [] as number[], top_logprobs: [] as Record<string, number>[], text_offset: [] as number[] };
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
    const text = { tokens: [own.token], token_logprobs: [own.logprob], top_logprobs: [Object.fromEntries(top.reverse().map((t) => [t.token, t.logprob]))], text_offset: [this.#offset] };
    this.#offset += chunk.text.length;
    for (const key of ["tokens", "token_logprobs", "top_logprobs", "text_offset"] as const) (this.text[key] as unknown[]).push(...text[key]);
    return { chat: [chat], text };
  }
}
