// The default model served on 127.0.0.1 for a server test file (made in beforeAll, stopped in
// afterAll), with an openai client, and a wait for the server to go idle.
import { afterAll, beforeAll, expect } from "bun:test";
import OpenAI from "openai";
import { DEFAULT_MODEL_DIR, type Server, serve } from "../src/index.ts";

/** logit_bias that keeps the default model from ending early. */
export const NO_EOS = { "0": -100 };

export interface Served {
  server: Server;
  client: OpenAI;
  /** Waits until the server has no generation active or waiting. */
  idle(): Promise<void>;
}

export function servedDefaultModel(): Served {
  const served = {
    async idle(): Promise<void> {
      const load = () => served.server.load();
      for (let i = 0; i < 500 && (load().active > 0 || load().waiting > 0); i++) await Bun.sleep(10);
      expect(load()).toEqual({ active: 0, waiting: 0 });
    },
  } as Served;
  beforeAll(() => {
    served.server = serve({ model: DEFAULT_MODEL_DIR, port: 0, backend: "mlx", maxConcurrent: 4, maxQueue: 8 });
    served.client = new OpenAI({ baseURL: `${served.server.url}/v1`, apiKey: "unused", maxRetries: 0 });
  });
  afterAll(() => served.server.stop());
  return served;
}
