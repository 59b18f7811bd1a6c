// The site of a decoder: chat and text completions as sequences of one decode engine (continuous
// batching: up to `maxConcurrent` decode together, the rest wait first-in first-out up to
// `maxQueue`, beyond it 429), whole or streamed as server-sent events; a client that goes away
// cancels its sequence.
import { Engine } from "../engine/engine.ts";
import {
  type GenerateOptions,
  type GenerationChunk,
  type GenerationStats,
  generateOn,
  graphFor,
} from "../engine/generate.ts";
import { parseToolCalls } from "../grammar/tools.ts";
import type { Model } from "../models/index.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { type Body, HttpError, type Site } from "./http.ts";
import { type Completion, Logprobs, parseCompletion } from "./openai.ts";
import { PromptCachePool } from "./prompt-caches.ts";

/** The server options a completion site reads (ServeOptions has them). */
export interface CompletionOptions {
  maxConcurrent?: number | undefined;
  maxQueue?: number | undefined;
  promptCaches?: number | undefined;
  defaultMaxTokens?: number | undefined;
}

/** A request's generation on the engine: its chunks go to `onChunk`, then done() or fail() once;
 * cancel() (the client went away) ends it and frees its slot. */
interface Job {
  onChunk(chunk: GenerationChunk): void;
  done(): void;
  fail(e: unknown): void;
}

/** The site of a decoder: chat and text completions on one decode engine. */
export function completionSite(model: Model, tokenizer: Tokenizer, modelId: string, options: CompletionOptions): Site {
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
    if (room < 1)
      throw new HttpError(
        400,
        `the prompt is ${promptIds.length} tokens; this model's context is ${context}`,
        c.kind === "chat" ? "messages" : "prompt",
        "invalid_request_error",
        "context_length_exceeded",
      );
    const asked = c.options.maxTokens;
    if (asked !== undefined && asked > room) {
      throw new HttpError(
        400,
        `the prompt (${promptIds.length} tokens) + max_tokens (${asked}) exceeds this model's context of ${context}`,
        "max_tokens",
        "invalid_request_error",
        "context_length_exceeded",
      );
    }
    return { promptIds, maxTokens: asked ?? Math.min(options.defaultMaxTokens ?? 512, room) };
  }

  /** Starts a request's generation on the engine (429 when the queue is full); its chunks go to the
   * job. A cancelled generation fails the job with 499. */
  function start(
    generation: { promptIds: number[]; options: GenerateOptions; stats: Partial<GenerationStats> },
    job: Job,
  ): { cancel(): void } {
    if (stopped) throw new HttpError(503, "the server is stopping", null, "server_error");
    const { active, waiting } = engine.load;
    if (active >= engine.maxBatch && waiting >= maxQueue) {
      throw new HttpError(
        429,
        `the server is busy: ${active} generating, ${waiting} waiting`,
        null,
        "rate_limit_error",
      );
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
        if (cancelled)
          job.fail(new HttpError(stopped ? 503 : 499, stopped ? "the server stopped" : "the client went away"));
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
      throw new HttpError(
        404,
        `The model '${String(body["model"])}' does not exist (this server has '${modelId}')`,
        "model",
        "invalid_request_error",
        "model_not_found",
      );
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
        ? {
            index: 0,
            [c.stream ? "delta" : "message"]: c.stream
              ? text
                ? { content: text }
                : {}
              : { role: "assistant", content: text, refusal: null },
            logprobs: scores ? { content: scores.chat, refusal: null } : null,
            finish_reason: finish,
          }
        : { index: 0, text, logprobs: scores ? scores.text : null, finish_reason: finish };

    // With tools, a completed answer in the tool-call format is calls (OpenAI's tool_calls).
    const callsOf = (text: string) =>
      c.tools && stats.finishReason === "stop"
        ? parseToolCalls(text)?.map((call) => ({
            id: `call_${crypto.randomUUID().replaceAll("-", "")}`,
            type: "function",
            function: call,
          }))
        : undefined;

    if (!c.stream) {
      let text = "";
      await new Promise<void>((resolve, reject) => {
        const job: Job = {
          onChunk: (chunk) => {
            text += chunk.text;
            logprobs.add(chunk);
          },
          done: resolve,
          fail: reject,
        };
        const { cancel } = start(generation, job);
        request.signal.addEventListener("abort", cancel);
      });
      const scores = c.logprobs === undefined ? null : { chat: logprobs.chat, text: logprobs.text };
      const calls = callsOf(text);
      const choice = calls
        ? {
            index: 0,
            message: { role: "assistant", content: null, tool_calls: calls, refusal: null },
            logprobs: scores ? { content: scores.chat, refusal: null } : null,
            finish_reason: "tool_calls",
          }
        : choiceOf(text, scores, stats.finishReason ?? "length");
      return Response.json({ ...base, object, choices: [choice], usage: usage(), system_fingerprint: null });
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
    const chunkOf = (choice: unknown, extra: object = {}) => ({
      ...base,
      object,
      choices: [choice],
      system_fingerprint: null,
      ...extra,
    });
    if (kind === "chat")
      send(chunkOf({ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }));
    let aborted = false;
    let finished = false;
    // With tools, an answer that opens with "<" (the grammar's tool-call format) is held back and
    // sent as tool_calls at the end.
    let held: string | null = c.tools ? "" : null;
    const job: Job = {
      onChunk(chunk) {
        const scores = logprobs.add(chunk);
        if (held !== null) {
          held += chunk.text;
          if (held.length > 0 && !held.startsWith("<")) {
            send(chunkOf(choiceOf(held, scores, null)));
            held = null;
          }
        } else if (chunk.text || scores) send(chunkOf(choiceOf(chunk.text, scores, null)));
        started?.(null);
        started = null;
      },
      done() {
        const calls = held ? callsOf(held) : undefined;
        if (calls) {
          send(
            chunkOf({
              index: 0,
              delta: { tool_calls: calls.map((call, index) => ({ index, ...call })) },
              logprobs: null,
              finish_reason: null,
            }),
          );
          send(chunkOf({ index: 0, delta: {}, logprobs: null, finish_reason: "tool_calls" }));
        } else {
          if (held) send(chunkOf(choiceOf(held, null, null)));
          send(chunkOf(choiceOf("", null, stats.finishReason ?? "length")));
        }
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
    return new Response(stream, {
      headers: { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" },
    });
  }

  return {
    complete,
    embeddings: () => {
      throw new HttpError(
        400,
        `this server's model '${modelId}' is a decoder (${model.config.modelType}): embeddings need an encoder model (mlx-bun serve --model on one, e.g. all-MiniLM-L6-v2)`,
        "model",
      );
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
