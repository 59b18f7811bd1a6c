// An OpenAI-compatible HTTP server on Bun.serve. A decoder serves POST /v1/chat/completions and
// /v1/completions (server-sent events with `stream: true`) and a chat page at /; an encoder serves
// POST /v1/embeddings (src/serve/embeddings.ts); both GET /v1/models and GET /health, and answer the
// other kind's routes with a 400 that says which they serve.
// This file: the options, HTTP and routing. serve/completions.ts runs completions on one decode
// engine (serve/openai.ts parses and formats OpenAI's bodies; serve/prompt-caches.ts keeps recent
// requests' KV caches); serve/embeddings.ts answers embeddings; serve/http.ts holds what they share.
import { basename, join } from "node:path";
import { loadModel, type Model } from "../models/index.ts";
import { checkOptionNames } from "../options.ts";
import { completionSite } from "./completions.ts";
import { embeddingSite } from "./embeddings.ts";
import { errorResponse, HttpError, readBody, type Site } from "./http.ts";
import { Tokenizer } from "../tokenizer/tokenizer.ts";

export { HttpError } from "./http.ts";

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

/** Each numeric option an integer in its range: an Error naming it (a zero maxConcurrent would queue
 * every request forever). */
function checkServeOptions(options: ServeOptions): void {
  checkOptionNames("serve", options, [
    "model",
    "host",
    "port",
    "backend",
    "modelId",
    "maxBodyBytes",
    "maxConcurrent",
    "maxQueue",
    "defaultMaxTokens",
    "promptCaches",
    "bodyTimeout",
  ]);
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
    if (v !== undefined && (typeof v !== "number" || !Number.isSafeInteger(v) || v < min || v > max))
      throw new Error(`serve: ${key} must be an integer in [${min}, ${max}], got ${String(v)}`);
  }
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
    site =
      model.kind === "decoder"
        ? completionSite(model, tokenizer, modelId, options)
        : embeddingSite(model, tokenizer, modelId);
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
    "/health": {
      GET: () =>
        Response.json({
          status: "ok",
          model: modelId,
          kind: model.kind,
          generating: site.load().active,
          waiting: site.load().waiting,
        }),
    },
    "/v1/models": {
      GET: () =>
        Response.json({ object: "list", data: [{ id: modelId, object: "model", created, owned_by: "mlx-bun" }] }),
    },
    "/v1/chat/completions": { POST: async (r) => site.complete("chat", await bodyOf(r), r) },
    "/v1/completions": { POST: async (r) => site.complete("text", await bodyOf(r), r) },
    "/v1/embeddings": { POST: async (r) => site.embeddings(await bodyOf(r)) },
    ...(model.kind === "decoder"
      ? { "/": { GET: () => new Response(chatPage, { headers: { "content-type": "text/html; charset=utf-8" } }) } }
      : {}),
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
        if (!handler)
          return errorResponse(
            new HttpError(
              405,
              `${request.method} is not allowed on ${path} (allowed: ${Object.keys(route).join(", ")})`,
            ),
          );
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
