// Chat templates rendered by @huggingface/jinja against Python's jinja2 on the same template.
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { ORACLE_PYTHON } from "./helpers.ts";

const TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

test("applyChatTemplate renders like jinja2", () => {
  const tokenizerJson = JSON.parse(
    readFileSync(join(import.meta.dir, "fixtures", "data", "models", "qwen3", "tokenizer.json"), "utf8"),
  );
  const tokenizer = new Tokenizer(tokenizerJson, { chat_template: TEMPLATE, eos_token: "<|im_end|>" });
  const messages = [
    { role: "system" as const, content: "You are terse." },
    { role: "user" as const, content: 'Say "hi" — then stop.' },
  ];
  const ours = tokenizer.applyChatTemplate(messages);
  const python = Bun.spawnSync([
    ORACLE_PYTHON,
    "-c",
    "import jinja2, json, sys; t = jinja2.Environment().from_string(sys.argv[1]); sys.stdout.write(t.render(messages=json.loads(sys.argv[2]), add_generation_prompt=True))",
    TEMPLATE,
    JSON.stringify(messages),
  ]);
  expect(python.exitCode).toBe(0);
  expect(ours).toBe(python.stdout.toString());
  expect(ours.endsWith("<|im_start|>assistant\n")).toBe(true);
  expect(() => new Tokenizer(tokenizerJson, {}).applyChatTemplate(messages)).toThrow(
    "this tokenizer has no chat_template",
  );
});
