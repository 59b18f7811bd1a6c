// The server's constrained output: response_format (json_schema, json_object) and tools / tool_choice,
// through the openai client, validated with ajv. Model: the shipped default model on MLX.
import Ajv from "ajv";
import { describe, expect, test } from "bun:test";
import { servedDefaultModel } from "./server-setup.ts";

const served = servedDefaultModel();

describe("constrained output: response_format and tools", () => {
  const ajv = new Ajv({ strict: false });
  const person = {
    type: "object",
    properties: {
      name: { type: "string", maxLength: 12 },
      age: { type: "integer" },
      pets: { type: "array", items: { enum: ["cat", "dog"] }, maxItems: 2 },
    },
    required: ["name", "age"],
    additionalProperties: false,
  };
  const weather = {
    type: "object",
    properties: { city: { type: "string", maxLength: 12 }, unit: { enum: ["C", "F"] } },
    required: ["city", "unit"],
    additionalProperties: false,
  };
  const tools = [
    {
      type: "function" as const,
      function: { name: "get_weather", description: "Weather in a city", parameters: weather },
    },
    {
      type: "function" as const,
      function: {
        name: "get_time",
        parameters: { type: "object", properties: { zone: { type: "string", maxLength: 8 } }, required: ["zone"] },
      },
    },
  ];
  const messages = [{ role: "user" as const, content: "Tell me about a person." }];

  test("json_schema, whole and streamed, sampled: the content validates", async () => {
    const response_format = { type: "json_schema" as const, json_schema: { name: "person", schema: person } };
    for (const seed of [1, 2, 3]) {
      const whole = await served.client.chat.completions.create({
        model: "default-model",
        messages,
        max_tokens: 120,
        seed,
        response_format,
      });
      expect(whole.choices[0]!.finish_reason).toBe("stop");
      expect(ajv.validate(person, JSON.parse(whole.choices[0]!.message.content!))).toBe(true);
      const stream = await served.client.chat.completions.create({
        model: "default-model",
        messages,
        max_tokens: 120,
        seed,
        response_format,
        stream: true,
      });
      let text = "";
      for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
      expect(text).toBe(whole.choices[0]!.message.content!);
    }
  });

  test("json_object gives a JSON object (or stops at max_tokens inside one)", async () => {
    // The default model often writes long strings: answers that end are objects, and some end.
    let ended = 0;
    for (const seed of [1, 2, 3, 4, 5, 6]) {
      const completion = await served.client.chat.completions.create({
        model: "default-model",
        messages,
        max_tokens: 100,
        temperature: 0.7,
        seed,
        response_format: { type: "json_object" },
      });
      const { finish_reason, message } = completion.choices[0]!;
      if (finish_reason === "length") {
        expect(message.content!.startsWith("{")).toBe(true);
        continue;
      }
      ended++;
      const value = JSON.parse(message.content!);
      expect(typeof value === "object" && value !== null && !Array.isArray(value)).toBe(true);
    }
    expect(ended).toBeGreaterThan(0);
  });

  test("a schema it cannot follow is a 400 naming the keyword", async () => {
    const bad = { type: "json_schema" as const, json_schema: { name: "x", schema: { type: "string", pattern: "^a" } } };
    const error = await served.client.chat.completions
      .create({ model: "default-model", messages, response_format: bad })
      .catch((e) => e);
    expect(error.status).toBe(400);
    expect(error.message).toContain("unsupported JSON Schema keyword 'pattern'");
    const both = await served.client.chat.completions
      .create({ model: "default-model", messages, response_format: { type: "json_object" }, tools })
      .catch((e) => e);
    expect(both.status).toBe(400);
    const unknown = await served.client.chat.completions
      .create({
        model: "default-model",
        messages,
        tools,
        tool_choice: { type: "function", function: { name: "nope" } },
      })
      .catch((e) => e);
    expect(unknown.status).toBe(400);
    expect(unknown.message).toContain("'nope'");
  });

  test("tool_choice required and named: tool_calls whose arguments validate against the tool's parameters", async () => {
    for (const [seed, tool_choice] of [
      [1, "required"],
      [2, "required"],
      [3, { type: "function", function: { name: "get_time" } }],
    ] as const) {
      const completion = await served.client.chat.completions.create({
        model: "default-model",
        messages: [{ role: "user", content: "Weather in Paris?" }],
        max_tokens: 120,
        seed,
        tools,
        tool_choice,
      });
      const choice = completion.choices[0]!;
      expect(choice.finish_reason).toBe("tool_calls");
      expect(choice.message.content).toBeNull();
      const calls = choice.message.tool_calls!;
      expect(calls.length).toBeGreaterThanOrEqual(1);
      for (const call of calls) {
        if (call.type !== "function") throw new Error("not a function call");
        expect(call.id).toStartWith("call_");
        const tool = tools.find((t) => t.function.name === call.function.name)!;
        if (typeof tool_choice === "object") expect(call.function.name).toBe("get_time");
        expect(ajv.validate(tool.function.parameters, JSON.parse(call.function.arguments))).toBe(true);
      }
    }
  });

  test("tool calls streamed, and a conversation that carries calls and their results", async () => {
    const stream = await served.client.chat.completions.create({
      model: "default-model",
      messages: [{ role: "user", content: "Time?" }],
      max_tokens: 120,
      seed: 5,
      tools,
      tool_choice: "required",
      stream: true,
    });
    const calls: { name?: string; arguments?: string }[] = [];
    let finish: string | null = null;
    for await (const chunk of stream) {
      for (const call of chunk.choices[0]?.delta.tool_calls ?? [])
        calls[call.index] = { name: call.function?.name, arguments: call.function?.arguments };
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(finish).toBe("tool_calls");
    expect(calls.length).toBeGreaterThanOrEqual(1);
    for (const call of calls) expect(["get_weather", "get_time"]).toContain(call.name!);
    const followUp = await served.client.chat.completions.create({
      model: "default-model",
      max_tokens: 8,
      tools,
      tool_choice: "none",
      messages: [
        { role: "user", content: "Weather in Paris?" },
        {
          role: "assistant",
          content: null,
          tool_calls: [
            {
              id: "call_1",
              type: "function",
              function: { name: "get_weather", arguments: `{"city":"Paris","unit":"C"}` },
            },
          ],
        },
        { role: "tool", tool_call_id: "call_1", content: "18 C, sunny" },
      ],
    });
    expect(followUp.choices[0]!.message.tool_calls ?? []).toEqual([]);
    expect(typeof followUp.choices[0]!.message.content).toBe("string");
    await served.idle();
  });

  test("tool_choice auto: text or well-formed calls", async () => {
    for (const seed of [1, 2, 3, 4]) {
      const completion = await served.client.chat.completions.create({
        model: "default-model",
        messages: [{ role: "user", content: "Hello" }],
        max_tokens: 60,
        seed,
        tools,
      });
      const choice = completion.choices[0]!;
      if (choice.finish_reason === "tool_calls") {
        for (const call of choice.message.tool_calls!)
          if (call.type === "function") expect(() => JSON.parse(call.function.arguments)).not.toThrow();
      } else {
        expect(choice.message.content!.startsWith("<")).toBe(false);
      }
    }
  });
});
