// The server against hostile requests: malformed and oversized bodies, bad headers, slow and
// vanishing clients (raw HTTP and fetch). Model: the shipped default model on MLX.
import { describe, expect, test } from "bun:test";
import { connect } from "node:net";
import { DEFAULT_MODEL_DIR, liveTensorCount, serve } from "../src/index.ts";
import { NO_EOS, servedDefaultModel } from "./server-setup.ts";

const served = servedDefaultModel();

describe("hostile requests", () => {
  const post = (path: string, body: string, headers: Record<string, string> = {}) =>
    fetch(`${served.server.url}${path}`, {
      method: "POST",
      body,
      headers: { "content-type": "application/json", ...headers },
    });

  test.each([
    ["malformed JSON", "/v1/chat/completions", "{", 400, "not valid JSON"],
    ["a JSON array", "/v1/completions", "[1]", 400, "must be a JSON object"],
    [
      "messages of the wrong type",
      "/v1/chat/completions",
      '{"messages": "hi"}',
      400,
      "'messages' must be a non-empty list",
    ],
    [
      "a message without a role",
      "/v1/chat/completions",
      '{"messages": [{"content": "hi"}]}',
      400,
      "'messages[0].role'",
    ],
    ["a prompt of the wrong type", "/v1/completions", '{"prompt": 3}', 400, "'prompt' must be a string"],
    [
      "max_tokens of the wrong type",
      "/v1/completions",
      '{"prompt": "x", "max_tokens": "ten"}',
      400,
      "'max_tokens' must be an integer >= 1",
    ],
    ["a bad logit_bias", "/v1/completions", '{"prompt": "x", "logit_bias": {"abc": 1}}', 400, "'logit_bias'"],
    [
      "a logit_bias past the vocabulary",
      "/v1/completions",
      '{"prompt": "x", "logit_bias": {"99999": 1}, "max_tokens": 2}',
      400,
      "logitBias",
    ],
    [
      "stream of the wrong type",
      "/v1/completions",
      '{"prompt": "x", "stream": "yes"}',
      400,
      "'stream' must be a boolean",
    ],
  ])("%s -> %d", async (_, path, body, status, message) => {
    const response = await post(path, body);
    expect(response.status).toBe(status);
    const { error } = (await response.json()) as { error: { message: string; type: string } };
    expect(error.message).toContain(message);
    expect(error.type).toBe("invalid_request_error");
  });

  test("a decoder answers /v1/embeddings with a 400 that says so", async () => {
    const response = await post("/v1/embeddings", JSON.stringify({ input: "hi" }));
    expect(response.status).toBe(400);
    expect(((await response.json()) as { error: { message: string } }).error.message).toContain(
      "is a decoder (llama): embeddings need an encoder model",
    );
  });

  test("an HTTP/1.0 request without a Host header is 400; a body that never completes is 408 after bodyTimeout", async () => {
    const raw = (port: number, text: string) =>
      new Promise<string>((resolve) => {
        const socket = connect(port, "127.0.0.1", () => socket.write(text));
        let out = "";
        socket.on("data", (d) => (out += d));
        socket.on("close", () => resolve(out));
        setTimeout(() => {
          socket.destroy();
          resolve(`${out}(still open after 20 s)`);
        }, 20_000);
      });
    expect(await raw(served.server.port, "GET /v1/models HTTP/1.0\r\n\r\n")).toMatch(
      /^HTTP\/1\.[01] 400[\s\S]*the request has no Host header/,
    );
    const impatient = serve({ model: DEFAULT_MODEL_DIR, port: 0, backend: "mlx", bodyTimeout: 1 });
    try {
      const started = Date.now();
      const answer = await raw(
        impatient.port,
        'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"prompt":',
      );
      expect(answer).toMatch(/^HTTP\/1\.1 408[\s\S]*did not arrive within 1 s/);
      expect(answer).not.toContain("still open");
      expect(Date.now() - started).toBeLessThan(15_000);
    } finally {
      await impatient.stop();
    }
  });

  test("an oversized body is 413, an unknown route 404, a wrong method 405", async () => {
    const big = await post("/v1/completions", JSON.stringify({ prompt: "x".repeat(2 ** 21) }));
    expect(big.status).toBe(413);
    expect((await fetch(`${served.server.url}/v2/nothing`)).status).toBe(404);
    const wrong = await fetch(`${served.server.url}/v1/chat/completions`);
    expect(wrong.status).toBe(405);
    expect(((await wrong.json()) as { error: { message: string } }).error.message).toContain("allowed: POST");
    const page = await fetch(`${served.server.url}/`);
    expect(page.headers.get("content-type")).toContain("text/html");
    expect(await page.text()).toContain("/v1/chat/completions");
  });

  test("a client that disconnects mid-stream stops its generation; nothing it made is left", async () => {
    await served.idle();
    // Tensors earlier tests dropped without disposing are collected first (not counted as this one's).
    Bun.gc(true);
    await Bun.sleep(20);
    const before = liveTensorCount();
    const abort = new AbortController();
    const response = await fetch(`${served.server.url}/v1/completions`, {
      method: "POST",
      body: JSON.stringify({ prompt: "The ship sailed", max_tokens: 900, stream: true, logit_bias: NO_EOS }),
      signal: abort.signal,
    });
    const reader = response.body!.getReader();
    await reader.read();
    expect(served.server.load().active).toBe(1);
    abort.abort();
    await served.idle();
    expect(liveTensorCount()).toBeLessThanOrEqual(before);
    // The server carries on.
    const after = await served.client.completions.create({
      model: "default-model",
      prompt: "Water",
      max_tokens: 4,
      logit_bias: NO_EOS,
    });
    expect(after.usage!.completion_tokens).toBe(4);
  });
});
