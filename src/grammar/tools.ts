// Tool calls in the format of Qwen's and Hermes's chat templates, which most open models with tool
// use were trained on: each call is <tool_call>{"name": ..., "arguments": {...}}</tool_call> (a
// newline may follow the opening tag and precede the closing one), calls one per line. The grammar
// constrains a call's JSON to one of the tools, its arguments to that tool's parameters schema.
import type { ChatTool } from "../tokenizer/tokenizer.ts";
import { gbnfLiteral, jsonSchemaGrammar } from "./json-schema.ts";

/** How the model may use the tools: OpenAI's tool_choice ("none": never; "auto": text or calls;
 * "required": one call or more; a name: calls of that tool). */
export type ToolChoice = "none" | "auto" | "required" | { name: string };

/** The most calls in one answer. */
const MAX_CALLS = 8;

/** GBNF of an answer under `choice` ("none" has no grammar: null). */
export function toolCallGrammar(tools: readonly ChatTool[], choice: ToolChoice): string | null {
  if (choice === "none") return null;
  const offered = typeof choice === "object" ? tools.filter((t) => t.function.name === choice.name) : tools;
  const schema = {
    anyOf: offered.map((t) => ({
      type: "object",
      properties: { name: { const: t.function.name }, arguments: t.function.parameters ?? { type: "object" } },
      required: ["name", "arguments"],
      additionalProperties: false,
    })),
  };
  const json = jsonSchemaGrammar(schema).replace(/^root ::= /, "tool-json ::= ");
  const calls = `tool-calls ::= tool-call ("\\n" tool-call){0,${MAX_CALLS - 1}}\ntool-call ::= ${gbnfLiteral("<tool_call>")} "\\n"? tool-json "\\n"? ${gbnfLiteral("</tool_call>")}\n`;
  // Text: anything that does not open with "<" (so a call is never half text).
  const root = choice === "auto" ? `root ::= tool-calls | tool-text\ntool-text ::= [^<] .*\n` : "root ::= tool-calls\n";
  return root + calls + json;
}

export interface ParsedToolCall {
  name: string;
  /** The arguments as JSON text (OpenAI's shape). */
  arguments: string;
}

/** The tool calls of an answer, or null when it is text (or a call did not complete). */
export function parseToolCalls(text: string): ParsedToolCall[] | null {
  if (!text.trimStart().startsWith("<tool_call>")) return null;
  const calls: ParsedToolCall[] = [];
  const rest = text.replace(/<tool_call>\s*([\s\S]*?)\s*<\/tool_call>\s*/g, (_, body: string) => {
    try {
      const call = JSON.parse(body) as { name?: unknown; arguments?: unknown };
      if (typeof call.name === "string")
        calls.push({ name: call.name, arguments: JSON.stringify(call.arguments ?? {}) });
      else calls.push({ name: "", arguments: "" });
    } catch {
      calls.push({ name: "", arguments: "" });
    }
    return "";
  });
  if (rest.trim() !== "" || calls.length === 0 || calls.some((c) => c.name === "")) return null;
  return calls;
}
