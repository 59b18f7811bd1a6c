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
  /** tokenizer.json's truncation length, if it sets one (the library here never truncates by itself). */
  readonly truncationLength: number | undefined;
  /** The padding token's id: tokenizer.json's padding, else the config's pad_token, if either names one. */
  readonly padTokenId: number | undefined;
  /** Special tokens encode() puts before and after a single text (BERT: [CLS] ... [SEP]). */
  readonly #specials: { before: number; after: number };

  constructor(tokenizerJson: object, config: Record<string, unknown> = {}) {
    this.#inner = new HfTokenizer(tokenizerJson, config);
    this.#config = config;
    this.#template = typeof config["chat_template"] === "string" ? new Template(config["chat_template"]) : null;
    const eos = typeof config["eos_token"] === "string" ? config["eos_token"] : (config["eos_token"] as { content?: string } | undefined)?.content;
    const eosId = eos === undefined ? undefined : this.#inner.token_to_id(eos);
    this.eosTokenIds = eosId === undefined ? [] : [eosId];
    const json = tokenizerJson as { truncation?: { max_length?: unknown } | null; padding?: { pad_id?: unknown } | null };
    const truncation = json.truncation?.max_length;
    this.truncationLength = typeof truncation === "number" && Number.isSafeInteger(truncation) && truncation > 0 ? truncation : undefined;
    const padName = typeof config["pad_token"] === "string" ? config["pad_token"] : (config["pad_token"] as { content?: string } | undefined)?.content;
    const padId = json.padding?.pad_id;
    this.padTokenId = typeof padId === "number" ? padId : padName === undefined ? undefined : this.#inner.token_to_id(padName);
    const probe = this.encode("a", false);
    const full = this.encode("a", true);
    const at = full.findIndex((_, i) => probe.every((id, j) => full[i + j] === id));
    this.#specials = at < 0 ? { before: 0, after: 0 } : { before: at, after: full.length - at - probe.length };
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
    if (typeof text !== "string") throw new Error(`Tokenizer.encode: text must be a string, got ${text === null ? "null" : typeof text}`);
    return this.#inner.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  /** encode() with special tokens, cut to at most `maxLength` ids as Hugging Face truncates a single
   * text: the text's own tokens are cut, the special tokens around them kept. */
  encodeTruncated(text: string, maxLength: number): { ids: number[]; truncated: boolean } {
    const { before, after } = this.#specials;
    if (!Number.isSafeInteger(maxLength) || maxLength < before + after + 1) {
      throw new Error(`maxLength must be an integer >= ${before + after + 1} (this tokenizer adds ${before + after} special tokens), got ${maxLength}`);
    }
    const full = this.encode(text, true);
    if (full.length <= maxLength) return { ids: full, truncated: false };
    return { ids: [...full.slice(0, maxLength - after), ...full.slice(full.length - after)], truncated: true };
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
