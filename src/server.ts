// An OpenAI-compatible HTTP server on Bun.serve. A decoder serves POST /v1/chat/completions and
// /v1/completions (server-sent events with `stream: true`) and a chat page at /; an encoder serves
// POST /v1/embeddings (src/serve/embeddings.ts); both GET /v1/models and GET /health, and answer the
// other kind's routes with a 400 that says which they serve.
// Requests are served by one model through one decode engine (src/engine/): continuous batching,
// each request joining the running batch when admitted and leaving it when done; up to
// `maxConcurrent` decode at once, the rest wait first-in first-out up to `maxQueue` (beyond it: 429).
// A request whose client goes away is cancelled and its slot freed. The KV caches of recent requests
// are kept (PromptCachePool): a prompt that continues one of them is prefilled only past the shared
// prefix.
import { checkOptionNames } from "./options.ts";
import { basename, join } from "node:path";
import { PromptCache } from "./prompt-cache.ts";
import { Engine } from "./engine/engine.ts";
import { type GenerateOptions, type GenerationChunk, type GenerationStats, generateOn, graphFor, type TokenLogprob } from "./generate.ts";
import { loadModel, type Model } from "./models/index.ts";
import { type ChatMessage, Tokenizer } from "./tokenizer.ts";
import { embeddingsResponse } from "./serve/embeddings.ts";
import { type Body, errorResponse, HttpError, readBody } from "./serve/http.ts";

export { HttpError } from "./serve/http.ts";

export interface ServeOptions {
  /** Checkpoint directory. */
  model: string;
  host?: string | undefined;
  /** 0 picks a free port (default 8080). */
  port?: number | undefined;
  backend?: string | undefined;
  /** The name clients pass as "model" (default: the directory's name). */
  modelId?: string | undefined;
  /** Request bodies larger than this are refused with 413 (default 1 MiB). */
  maxBodyBytes?: number | undefined;
  /** Requests decoding together in one batch (default 16). */
  maxConcurrent?: number | undefined;
  /** Requests waiting for a slot; more are refused with 429 (default 64). */
  maxQueue?: number | undefined;
  /** max_tokens when a request gives none (default 512, less when the context is shorter). */
  defaultMaxTokens?: number | undefined;
  /** Recent conversations' KV caches kept for reuse (default 4; 0: none). */
  promptCaches?: number | undefined;
  /** Seconds a request's body may take to arrive (and a connection may sit idle); later: 408
   * (default 30). A generation itself has no time limit. */
  bodyTimeout?: number | undefined;
}

export interface Server {
  /** http://host:port */
  url: string;
  port: number;
  modelId: string;
  /** What the model serves: completions (a decoder) or embeddings (an encoder). */
  kind: "decoder" | "encoder";
  /** Requests generating now, and waiting. */
  load(): { active: number; waiting: number };
  /** Stops accepting, ends every generation and frees the model. */
  stop(): Promise<void>;
}

// ---- request parsing ----

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

// ---- prompt caches kept across requests ----

/** The KV caches of recent requests, at most `size` kept while unused: a request takes the one that
 * shares the longest token prefix with its prompt and fits it (the engine then prefills only the
 * rest), or a new one sized to the request (at most `length` positions); it comes back when the
 * generation ends. */
class PromptCachePool {
  readonly #free: PromptCache[] = [];

  constructor(
    readonly model: Model,
    readonly size: number,
    readonly length: number,
  ) {}

  take(ids: readonly number[], maxTokens: number): PromptCache | undefined {
    const needed = ids.length + maxTokens;
    if (this.size === 0 || needed > this.length) return undefined;
    let best = -1;
    let shared = 0;
    this.#free.forEach((cache, i) => {
      const n = cache.maxLength >= needed ? cache.reusable(ids) : 0;
      if (n > shared) [best, shared] = [i, n];
    });
    if (best >= 0) return this.#free.splice(best, 1)[0];
    // Room for a few more turns of the conversation, within the context.
    return new PromptCache(this.model, Math.min(this.length, Math.max(2 * needed, 1024)));
  }

  give(cache: PromptCache): void {
    this.#free.push(cache);
    while (this.#free.length > this.size) this.#free.shift()!.dispose();
  }

  dispose(): void {
    for (const cache of this.#free.splice(0)) cache.dispose();
  }
}

/** A request's generation on the engine: its chunks go to `onChunk`, then done() or fail() once;
 * cancel() (the client went away) ends it and frees its slot. */
interface Job {
  onChunk(chunk: GenerationChunk): void;
  done(): void;
  fail(e: unknown): void;
}

// ---- responses ----

interface Completion {
  kind: "chat" | "text";
  prompt: string;
  options: GenerateOptions;
  /** Chat: top_logprobs (or 0) when logprobs are asked for; text: the logprobs count. */
  logprobs: number | undefined;
  stream: boolean;
  includeUsage: boolean;
}

function parseCompletion(kind: "chat" | "text", body: Body, tokenizer: Tokenizer): Completion {
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
class Logprobs {
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

/** Each numeric option an integer in its range: an Error naming it (a zero maxConcurrent would queue
 * every request forever). */
function checkServeOptions(options: ServeOptions): void {
  checkOptionNames("serve", options, ["model", "host", "port", "backend", "modelId", "maxBodyBytes", "maxConcurrent", "maxQueue", "defaultMaxTokens", "promptCaches", "bodyTimeout"]);
  const ranges: [keyof ServeOptions, number, number][] = [
    ["port", 0, 65535],
    ["maxBodyBytes", 1, 2 ** 31],
    ["maxConcurrent", 1, 1024],
    ["maxQueue", 0, 1 << 20],
    ["defaultMaxTokens", 1, 2 ** 31],
    ["promptCaches", 0, 1024],
    ["bodyTimeout", 1, 255],
  ];
  for (const [key, min, max] of ranges) {
    const v = options[key];
    if (v !== undefined && (typeof v !== "number" || !Number.isSafeInteger(v) || v < min || v > max)) throw new Error(`serve: ${key} must be an integer in [${min}, ${max}], got ${String(v)}`);
  }
}

/** What a server does with its model: completions (a decoder, on the engine) or embeddings (an
 * encoder); the other kind's routes answer 400. */
interface Site {
  complete(kind: "chat" | "text", body: Body, request: Request): Promise<Response>;
  embeddings(body: Body): Response;
  load(): { active: number; waiting: number };
  stop(): Promise<void>;
}

/** The site of an encoder: POST /v1/embeddings. */
function embeddingSite(model: Model, tokenizer: Tokenizer, modelId: string): Site {
  return {
    complete: async () => {
      throw new HttpError(400, `this server's model '${modelId}' is an encoder (${model.config.modelType}): it serves POST /v1/embeddings, not completions`, "model");
    },
    embeddings: (body) => embeddingsResponse(model, tokenizer, modelId, body),
    load: () => ({ active: 0, waiting: 0 }),
    stop: async () => {},
  };
}

/** The site of a decoder: chat and text completions on one decode engine. */
function completionSite(model: Model, tokenizer: Tokenizer, modelId: string, options: ServeOptions): Site {
  const engine = new Engine(model, { graph: graphFor(model, undefined), maxBatch: options.maxConcurrent ?? 16 });
  const maxQueue = options.maxQueue ?? 64;
  let stopped = false;
  /** Jobs running now (waiting in the engine or decoding). */
  const running = new Set<{ cancel(): void }>();
  const pool = new PromptCachePool(model, options.promptCaches ?? 4, Math.min(model.config.maxPositions ?? 4096, 8192));
  const context = model.config.maxPositions;

  /** maxTokens within the context: the request's, else the default, less when the prompt is long. */
  function budget(c: Completion): { promptIds: number[]; maxTokens: number } {
    const promptIds = tokenizer.encode(c.prompt);
    const room = context === undefined ? Infinity : context - promptIds.length;
    if (room < 1) throw new HttpError(400, `the prompt is ${promptIds.length} tokens; this model's context is ${context}`, c.kind === "chat" ? "messages" : "prompt", "invalid_request_error", "context_length_exceeded");
    const asked = c.options.maxTokens;
    if (asked !== undefined && asked > room) {
      throw new HttpError(400, `the prompt (${promptIds.length} tokens) + max_tokens (${asked}) exceeds this model's context of ${context}`, "max_tokens", "invalid_request_error", "context_length_exceeded");
    }
    return { promptIds, maxTokens: asked ?? Math.min(options.defaultMaxTokens ?? 512, room) };
  }

  /** Starts a request's generation on the engine (429 when the queue is full); its chunks go to the
   * job. A cancelled generation fails the job with 499. */
  function start(generation: { promptIds: number[]; options: GenerateOptions; stats: Partial<GenerationStats> }, job: Job): { cancel(): void } {
    if (stopped) throw new HttpError(503, "the server is stopping", null, "server_error");
    const { active, waiting } = engine.load;
    if (active >= engine.maxBatch && waiting >= maxQueue) {
      throw new HttpError(429, `the server is busy: ${active} generating, ${waiting} waiting`, null, "rate_limit_error");
    }
    const { promptIds, options, stats } = generation;
    const promptCache = pool.take(promptIds, options.maxTokens ?? 0);
    let run: ReturnType<typeof generateOn>;
    try {
      run = generateOn(engine, tokenizer, promptIds, { ...options, ...(promptCache ? { promptCache } : {}) }, stats);
    } catch (e) {
      if (promptCache) pool.give(promptCache);
      throw e;
    }
    let cancelled = false;
    const handle = {
      cancel() {
        cancelled = true;
        run.cancel();
      },
    };
    running.add(handle);
    void (async () => {
      try {
        for await (const chunk of run.chunks) job.onChunk(chunk);
        if (cancelled) job.fail(new HttpError(stopped ? 503 : 499, stopped ? "the server stopped" : "the client went away"));
        else job.done();
      } catch (e) {
        job.fail(stopped ? new HttpError(503, "the server stopped", null, "server_error") : e);
      } finally {
        running.delete(handle);
        if (promptCache) pool.give(promptCache);
      }
    })();
    return handle;
  }

  async function complete(kind: "chat" | "text", body: Body, request: Request): Promise<Response> {
    if (body["model"] !== undefined && body["model"] !== modelId) {
      throw new HttpError(404, `The model '${String(body["model"])}' does not exist (this server has '${modelId}')`, "model", "invalid_request_error", "model_not_found");
    }
    const c = parseCompletion(kind, body, tokenizer);
    const { promptIds, maxTokens } = budget(c);
    const id = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${crypto.randomUUID()}`;
    const stats: Partial<GenerationStats> = {};
    const generation = { promptIds, options: { ...c.options, maxTokens }, stats };
    const usage = () => ({
      prompt_tokens: promptIds.length,
      completion_tokens: stats.generatedTokens ?? 0,
      total_tokens: promptIds.length + (stats.generatedTokens ?? 0),
      prompt_tokens_details: { cached_tokens: stats.cachedTokens ?? 0 },
    });
    const logprobs = new Logprobs(tokenizer);
    const base = { id, created: Math.floor(Date.now() / 1000), model: modelId };
    const object = kind === "chat" ? (c.stream ? "chat.completion.chunk" : "chat.completion") : "text_completion";
    const choiceOf = (text: string, scores: ReturnType<Logprobs["add"]>, finish: string | null) =>
      kind === "chat"
        ? { index: 0, [c.stream ? "delta" : "message"]: c.stream ? (text ? { content: text } : {}) : { role: "assistant", content: text, refusal: null }, logprobs: scores ? { content: scores.chat, refusal: null } : null, finish_reason: finish }
        : { index: 0, text, logprobs: scores ? scores.text : null, finish_reason: finish };

    if (!c.stream) {
      let text = "";
      await new Promise<void>((resolve, reject) => {
        const job: Job = { onChunk: (chunk) => ((text += chunk.text), logprobs.add(chunk)), done: resolve, fail: reject };
        const { cancel } = start(generation, job);
        request.signal.addEventListener("abort", cancel);
      });
      const scores = c.logprobs === undefined ? null : { chat: logprobs.chat, text: logprobs.text };
      return Response.json({ ...base, object, choices: [choiceOf(text, scores, stats.finishReason ?? "length")], usage: usage(), system_fingerprint: null });
    }

    // Streaming: the first chunk (or the error) decides the status, then server-sent events.
    const encoder = new TextEncoder();
    let controller!: ReadableStreamDefaultController<Uint8Array>;
    const events: Uint8Array[] = [];
    let started: ((error: unknown) => void) | null = null;
    const first = new Promise<unknown>((resolve) => (started = resolve));
    const send = (payload: unknown) => {
      const bytes = encoder.encode(`data: ${typeof payload === "string" ? payload : JSON.stringify(payload)}\n\n`);
      if (controller) controller.enqueue(bytes);
      else events.push(bytes);
    };
    const chunkOf = (choice: unknown, extra: object = {}) => ({ ...base, object, choices: [choice], system_fingerprint: null, ...extra });
    if (kind === "chat") send(chunkOf({ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }));
    let aborted = false;
    let finished = false;
    const job: Job = {
      onChunk(chunk) {
        const scores = logprobs.add(chunk);
        if (chunk.text || scores) send(chunkOf(choiceOf(chunk.text, scores, null)));
        started?.(null);
        started = null;
      },
      done() {
        send(chunkOf(choiceOf("", null, stats.finishReason ?? "length")));
        if (c.includeUsage) send({ ...base, object, choices: [], usage: usage() });
        send("[DONE]");
        started?.(null);
        started = null;
        finished = true;
        close();
      },
      fail(e) {
        if (started) {
          started(e);
          started = null;
          return;
        }
        // Mid-stream: an error event, then the end of the stream.
        if (!aborted) send({ error: { message: (e as Error).message, type: "server_error", param: null, code: null } });
        finished = true;
        close();
      },
    };
    const close = () => {
      try {
        controller?.close();
      } catch {}
    };
    const { cancel } = start(generation, job);
    const abort = () => {
      aborted = true;
      cancel();
    };
    request.signal.addEventListener("abort", abort);
    const error = await first;
    if (error) throw error;
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        controller = c;
        for (const bytes of events.splice(0)) c.enqueue(bytes);
        if (finished) close();
      },
      cancel: abort,
    });
    return new Response(stream, { headers: { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" } });
  }

  return {
    complete,
    embeddings: () => {
      throw new HttpError(400, `this server's model '${modelId}' is a decoder (${model.config.modelType}): embeddings need an encoder model (mlx-bun serve --model on one, e.g. all-MiniLM-L6-v2)`, "model");
    },
    load: () => engine.load,
    async stop() {
      stopped = true;
      for (const job of [...running]) job.cancel();
      while (running.size > 0) await new Promise((resolve) => setTimeout(resolve, 1));
      engine.dispose();
      pool.dispose();
    },
  };
}

export function serve(options: ServeOptions): Server {
  checkServeOptions(options);
  const model: Model = loadModel(options.model, { backend: options.backend });
  const tokenizer = Tokenizer.fromDir(options.model);
  const modelId = options.modelId ?? basename(options.model.replace(/\/+$/, ""));
  const maxBodyBytes = options.maxBodyBytes ?? 2 ** 20;
  const bodySeconds = options.bodyTimeout ?? 30;
  const created = Math.floor(Date.now() / 1000);
  const chatPage = Bun.file(join(import.meta.dir, "chat.html"));
  let site: Site;
  try {
    site = model.kind === "decoder" ? completionSite(model, tokenizer, modelId, options) : embeddingSite(model, tokenizer, modelId);
  } catch (e) {
    model.dispose();
    throw e;
  }
  let server: ReturnType<typeof Bun.serve>;
  /** The body, within the size limit and the deadline; then the connection may idle as long as the
   * generation takes (the idle timeout guards slow bodies and idle connections only). */
  const bodyOf = async (request: Request) => {
    const body = await readBody(request, maxBodyBytes, bodySeconds);
    server.timeout(request, 0);
    return body;
  };
  const routes: Record<string, Partial<Record<string, (request: Request) => Promise<Response> | Response>>> = {
    "/health": { GET: () => Response.json({ status: "ok", model: modelId, kind: model.kind, generating: site.load().active, waiting: site.load().waiting }) },
    "/v1/models": { GET: () => Response.json({ object: "list", data: [{ id: modelId, object: "model", created, owned_by: "mlx-bun" }] }) },
    "/v1/chat/completions": { POST: async (r) => site.complete("chat", await bodyOf(r), r) },
    "/v1/completions": { POST: async (r) => site.complete("text", await bodyOf(r), r) },
    "/v1/embeddings": { POST: async (r) => site.embeddings(await bodyOf(r)) },
    ...(model.kind === "decoder" ? { "/": { GET: () => new Response(chatPage, { headers: { "content-type": "text/html; charset=utf-8" } }) } } : {}),
  };

  try {
    server = Bun.serve({
      hostname: options.host ?? "127.0.0.1",
      port: options.port ?? 8080,
      maxRequestBodySize: maxBodyBytes,
      idleTimeout: bodySeconds,
      async fetch(request) {
        // An HTTP/1.1 request must name its Host (RFC 9112); an HTTP/1.0 one without it has no URL.
        if (!request.headers.get("host")) return errorResponse(new HttpError(400, "the request has no Host header"));
        const path = new URL(request.url).pathname.replace(/\/+$/, "") || "/";
        const route = routes[path];
        if (!route) return errorResponse(new HttpError(404, `no route ${path}`));
        const handler = route[request.method];
        if (!handler) return errorResponse(new HttpError(405, `${request.method} is not allowed on ${path} (allowed: ${Object.keys(route).join(", ")})`));
        try {
          return await handler(request);
        } catch (e) {
          return errorResponse(e);
        }
      },
      error(e) {
        return errorResponse(new HttpError(500, e.message));
      },
    });
  } catch (e) {
    void site.stop();
    model.dispose();
    throw e;
  }
  return {
    url: `http://${server.hostname}:${server.port}`,
    port: server.port!,
    modelId,
    kind: model.kind,
    load: () => site.load(),
    async stop() {
      await server.stop(true);
      await site.stop();
      model.dispose();
    },
  };
}
