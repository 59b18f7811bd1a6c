// tokenizer.json (+ tokenizer_config.json) through @huggingface/tokenizers; chat templates through
// @huggingface/jinja when the config carries one.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";

export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

export class Tokenizer {
  readonly #inner: HfTokenizer;
  readonly #config: Record<string, unknown>;
  readonly #template: Template | null;
  /** Ids that end generation (the tokenizer's eos token, if any). */
  readonly eosTokenIds: number[];

  constructor(tokenizerJson: object, config: Record<string, unknown> = {}) {
    this.#inner = new HfTokenizer(tokenizerJson, config);
    this.#config = config;
    this.#template = typeof config["chat_template"] === "string" ? new Template(config["chat_template"]) : null;
    const eos = typeof config["eos_token"] === "string" ? config["eos_token"] : (config["eos_token"] as { content?: string } | undefined)?.content;
    const eosId = eos === undefined ? undefined : this.#inner.token_to_id(eos);
    this.eosTokenIds = eosId === undefined ? [] : [eosId];
  }

  static fromDir(dir: string): Tokenizer {
    const path = join(dir, "tokenizer.json");
    if (!existsSync(path)) throw new Error(`${dir}: no tokenizer.json`);
    const configPath = join(dir, "tokenizer_config.json");
    const config = existsSync(configPath) ? JSON.parse(readFileSync(configPath, "utf8")) : {};
    return new Tokenizer(JSON.parse(readFileSync(path, "utf8")), config);
  }

  get hasChatTemplate(): boolean {
    return this.#template !== null;
  }

  encode(text: string, addSpecialTokens = true): number[] {
    return this.#inner.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  decode(ids: readonly number[], skipSpecialTokens = true): string {
    if (ids.length === 0) return "";
    return this.#inner.decode([...ids], { skip_special_tokens: skipSpecialTokens });
  }

  /** Renders messages with the chat template (generation prompt appended). */
  applyChatTemplate(messages: ChatMessage[]): string {
    if (!this.#template) throw new Error("this tokenizer has no chat_template");
    return this.#template.render({
      messages,
      add_generation_prompt: true,
      bos_token: this.#config["bos_token"] ?? "",
      eos_token: this.#config["eos_token"] ?? "",
    });
  }
}
