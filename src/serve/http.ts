// What every route of the server shares: the OpenAI-format error, and the request body read with a
// size limit and a deadline.

/** An error answered as OpenAI's { error: { message, type, param, code } } with an HTTP status. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly type = status >= 500 ? "server_error" : "invalid_request_error",
    readonly code: string | null = null,
  ) {
    super(message);
  }
}

export function errorResponse(e: unknown): Response {
  const error = e instanceof HttpError ? e : new HttpError(400, (e as Error).message ?? String(e));
  return Response.json(
    { error: { message: error.message, type: error.type, param: error.param, code: error.code } },
    { status: error.status },
  );
}

export type Body = Record<string, unknown>;

/** The request's JSON object body: at most `limit` bytes, all of it within `seconds` (408 after). */
export async function readBody(request: Request, limit: number, seconds: number): Promise<Body> {
  const declared = Number(request.headers.get("content-length") ?? "0");
  if (declared > limit) throw new HttpError(413, `the request body is ${declared} bytes; the limit is ${limit}`);
  let text: string;
  let timer: Timer | undefined;
  try {
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new HttpError(408, `the request body did not arrive within ${seconds} s`)),
        seconds * 1000,
      );
    });
    text = await Promise.race([request.text(), late]);
  } catch (e) {
    if (e instanceof HttpError) throw e;
    throw new HttpError(400, `could not read the request body (${(e as Error).message})`);
  } finally {
    clearTimeout(timer);
  }
  if (text.length > limit) throw new HttpError(413, `the request body is over the ${limit}-byte limit`);
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (e) {
    throw new HttpError(400, `the request body is not valid JSON (${(e as Error).message})`);
  }
  if (typeof body !== "object" || body === null || Array.isArray(body))
    throw new HttpError(400, "the request body must be a JSON object");
  return body as Body;
}

/** What a server does with its model: completions (a decoder, on the engine) or embeddings (an
 * encoder); the other kind's routes answer 400. */
export interface Site {
  complete(kind: "chat" | "text", body: Body, request: Request): Promise<Response>;
  embeddings(body: Body): Response;
  load(): { active: number; waiting: number };
  stop(): Promise<void>;
}
