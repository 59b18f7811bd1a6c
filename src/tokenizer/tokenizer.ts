// tokenizer.json (+ tokenizer_config.json) through @huggingface/tokenizers; chat templates through
// @huggingface/jinja when the config carries one.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { isGguf } from "../io/checkpoint.ts";
import { readGgufHeader } from "../io/gguf.ts";

export interface ChatMessage {
  role: "system" | "user" | "assistant" | "tool";
  /** null for an assistant message that only calls tools. */
  content: string | null;
  /** An assistant message's tool calls (OpenAI's shape). */
  tool_calls?: { id: string; type: "function"; function: { name: string; arguments: string } }[];
  /** A tool message: the call it answers. */
  tool_call_id?: string;
}

/** A tool the model may call (OpenAI's shape): its parameters are a JSON Schema. */
export interface ChatTool {
  type: "function";
  function: { name: string; description?: string; parameters?: object };
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
  readonly #json: TokenizerJson;
  #bytes: (Uint8Array | null)[] | null = null;

  constructor(tokenizerJson: object, config: Record<string, unknown> = {}) {
    this.#inner = new HfTokenizer(tokenizerJson, config);
    this.#json = tokenizerJson as TokenizerJson;
    this.#config = config;
    this.#template = typeof config["chat_template"] === "string" ? new Template(config["chat_template"]) : null;
    const eos =
      typeof config["eos_token"] === "string"
        ? config["eos_token"]
        : (config["eos_token"] as { content?: string } | undefined)?.content;
    const eosId = eos === undefined ? undefined : this.#inner.token_to_id(eos);
    this.eosTokenIds = eosId === undefined ? [] : [eosId];
    const json = tokenizerJson as {
      truncation?: { max_length?: unknown } | null;
      padding?: { pad_id?: unknown } | null;
    };
    const truncation = json.truncation?.max_length;
    this.truncationLength =
      typeof truncation === "number" && Number.isSafeInteger(truncation) && truncation > 0 ? truncation : undefined;
    const padName =
      typeof config["pad_token"] === "string"
        ? config["pad_token"]
        : (config["pad_token"] as { content?: string } | undefined)?.content;
    const padId = json.padding?.pad_id;
    this.padTokenId =
      typeof padId === "number" ? padId : padName === undefined ? undefined : this.#inner.token_to_id(padName);
    const probe = this.encode("a", false);
    const full = this.encode("a", true);
    const at = full.findIndex((_, i) => probe.every((id, j) => full[i + j] === id));
    this.#specials = at < 0 ? { before: 0, after: 0 } : { before: at, after: full.length - at - probe.length };
  }

  /** A checkpoint directory's tokenizer.json (+ tokenizer_config.json), or a GGUF file's vocabulary. */
  static fromDir(dir: string): Tokenizer {
    if (isGguf(dir)) {
      const { json, config } = ggufTokenizer(dir, readGgufHeader(dir).metadata);
      return new Tokenizer(json, config);
    }
    const path = join(dir, "tokenizer.json");
    if (!existsSync(path)) throw new Error(`${dir}: no tokenizer.json`);
    const configPath = join(dir, "tokenizer_config.json");
    const config = existsSync(configPath) ? JSON.parse(readFileSync(configPath, "utf8")) : {};
    return new Tokenizer(JSON.parse(readFileSync(path, "utf8")), config);
  }

  /** Each token id's bytes as the decoder writes them (null for special tokens and ids without a
   * piece): byte-level BPE (GPT-2's byte alphabet) and SentencePiece-style pieces (U+2581 as a space,
   * <0xHH> byte fallback). Made once. */
  tokenBytes(): (Uint8Array | null)[] {
    if (this.#bytes) return this.#bytes;
    const { model, added_tokens: added = [], decoder } = this.#json;
    const out: (Uint8Array | null)[] = [];
    const encoder = new TextEncoder();
    const byteLevel = JSON.stringify(decoder ?? {}).includes('"ByteLevel"');
    const alphabet = byteLevel ? byteDecoder() : null;
    const piece = (text: string): Uint8Array | null => {
      if (alphabet) {
        const bytes = new Uint8Array(text.length);
        let n = 0;
        for (const ch of text) {
          const b = alphabet.get(ch);
          if (b === undefined) return encoder.encode(text);
          bytes[n++] = b;
        }
        return bytes.subarray(0, n);
      }
      const fallback = /^<0x([0-9A-Fa-f]{2})>$/.exec(text);
      if (fallback && model.byte_fallback) return Uint8Array.of(Number.parseInt(fallback[1]!, 16));
      return encoder.encode(text.replaceAll("\u2581", " "));
    };
    const entries: [string, number][] = Array.isArray(model.vocab)
      ? model.vocab.map(([p], i) => [p, i])
      : Object.entries(model.vocab ?? {});
    for (const [text, id] of entries) out[id] = piece(text);
    for (const t of added) out[t.id] = t.special ? null : encoder.encode(t.content);
    for (let i = 0; i < out.length; i++) out[i] ??= null;
    this.#bytes = out;
    return out;
  }

  /** Whether the decoder is byte-level BPE's alone: a text is then the UTF-8 decode of its tokens'
   * bytes (tokenBytes), with nothing stripped or replaced. */
  get byteLevel(): boolean {
    return (this.#json.decoder as { type?: unknown } | null | undefined)?.type === "ByteLevel";
  }

  get hasChatTemplate(): boolean {
    return this.#template !== null;
  }

  encode(text: string, addSpecialTokens = true): number[] {
    if (typeof text !== "string")
      throw new Error(`Tokenizer.encode: text must be a string, got ${text === null ? "null" : typeof text}`);
    return this.#inner.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  /** encode() with special tokens, cut to at most `maxLength` ids as Hugging Face truncates a single
   * text: the text's own tokens are cut, the special tokens around them kept. */
  encodeTruncated(text: string, maxLength: number): { ids: number[]; truncated: boolean } {
    const { before, after } = this.#specials;
    if (!Number.isSafeInteger(maxLength) || maxLength < before + after + 1) {
      throw new Error(
        `maxLength must be an integer >= ${before + after + 1} (this tokenizer adds ${before + after} special tokens), got ${maxLength}`,
      );
    }
    const full = this.encode(text, true);
    if (full.length <= maxLength) return { ids: full, truncated: false };
    return { ids: [...full.slice(0, maxLength - after), ...full.slice(full.length - after)], truncated: true };
  }

  /** The text of `ids`. `cleanUp` (default: tokenizer_config's clean_up_tokenization_spaces, else
   * true, as Hugging Face) drops spaces before punctuation (" ," -> ","); generated text is decoded
   * without it (it would change text already streamed). */
  decode(ids: readonly number[], skipSpecialTokens = true, cleanUp?: boolean): string {
    if (ids.length === 0) return "";
    return this.#inner.decode([...ids], {
      skip_special_tokens: skipSpecialTokens,
      ...(cleanUp === undefined ? {} : { clean_up_tokenization_spaces: cleanUp }),
    });
  }

  /** Renders messages with the chat template (generation prompt appended); `tools` go to the
   * template's `tools` variable, as transformers passes them. */
  applyChatTemplate(messages: ChatMessage[], tools?: ChatTool[]): string {
    if (!this.#template) throw new Error("this tokenizer has no chat_template");
    // Templates read tool-call arguments as objects (transformers parses them).
    const rendered = messages.map((m) =>
      m.tool_calls
        ? {
            ...m,
            tool_calls: m.tool_calls.map((c) => ({
              ...c,
              function: { ...c.function, arguments: parsedArguments(c.function.arguments) },
            })),
          }
        : m,
    );
    return this.#template.render({
      messages: rendered,
      ...(tools && tools.length > 0 ? { tools } : {}),
      add_generation_prompt: true,
      bos_token: this.#config["bos_token"] ?? "",
      eos_token: this.#config["eos_token"] ?? "",
    });
  }
}

function parsedArguments(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

interface TokenizerJson {
  model: { vocab?: Record<string, number> | [string, number][]; byte_fallback?: boolean };
  added_tokens?: { id: number; content: string; special: boolean }[];
  decoder?: unknown;
}

/** GPT-2's byte-level alphabet: the character standing for each byte. */
function byteDecoder(): Map<string, number> {
  const printable: number[] = [];
  for (const [lo, hi] of [
    [33, 126],
    [161, 172],
    [174, 255],
  ])
    for (let b = lo!; b <= hi!; b++) printable.push(b);
  const map = new Map<string, number>();
  let extra = 0;
  for (let b = 0; b < 256; b++) map.set(String.fromCodePoint(printable.includes(b) ? b : 256 + extra++), b);
  return map;
}

/** tokenizer.json and tokenizer_config.json equivalents of a GGUF file's tokenizer metadata: gpt2
 * (byte-level BPE with merges) or llama (SentencePiece pieces with scores, byte fallback). Control and
 * user-defined tokens (token_type 3 and 4) are added tokens; control ones special. */
function ggufTokenizer(path: string, meta: Map<string, unknown>): { json: object; config: Record<string, unknown> } {
  const kind = meta.get("tokenizer.ggml.model");
  const tokens = meta.get("tokenizer.ggml.tokens");
  if (!Array.isArray(tokens) || !tokens.every((t) => typeof t === "string"))
    throw new Error(`${path}: no tokenizer.ggml.tokens in the GGUF metadata`);
  const types = (meta.get("tokenizer.ggml.token_type") as number[] | undefined) ?? [];
  const added = tokens.flatMap((content, id) =>
    types[id] === 3 || types[id] === 4
      ? [{ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: types[id] === 3 }]
      : [],
  );
  const name = (key: string) => {
    const id = meta.get(`tokenizer.ggml.${key}_token_id`);
    return typeof id === "number" && tokens[id] !== undefined ? tokens[id] : undefined;
  };
  const config: Record<string, unknown> = {
    eos_token: name("eos"),
    bos_token: name("bos") ?? null,
    pad_token: name("padding"),
  };
  const template = meta.get("tokenizer.chat_template");
  if (typeof template === "string") config["chat_template"] = template;
  let json: object;
  if (kind === "gpt2") {
    const merges = meta.get("tokenizer.ggml.merges");
    if (!Array.isArray(merges)) throw new Error(`${path}: a gpt2 tokenizer needs tokenizer.ggml.merges`);
    json = {
      added_tokens: added,
      normalizer: null,
      pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: true },
      post_processor: null,
      decoder: { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: true },
      model: {
        type: "BPE",
        vocab: Object.fromEntries(tokens.map((t, i) => [t, i])),
        merges,
        ignore_merges: false,
        byte_fallback: false,
      },
    };
  } else if (kind === "llama") {
    const scores = (meta.get("tokenizer.ggml.scores") as number[] | undefined) ?? [];
    const unk = meta.get("tokenizer.ggml.unknown_token_id");
    json = {
      added_tokens: added,
      normalizer: null,
      pre_tokenizer: { type: "Metaspace", replacement: "\u2581", prepend_scheme: "first", split: false },
      post_processor: null,
      decoder: {
        type: "Sequence",
        decoders: [
          { type: "Replace", pattern: { String: "\u2581" }, content: " " },
          { type: "ByteFallback" },
          { type: "Fuse" },
          { type: "Strip", content: " ", start: 1, stop: 0 },
        ],
      },
      model: {
        type: "Unigram",
        vocab: tokens.map((t, i) => [t, scores[i] ?? 0]),
        unk_id: typeof unk === "number" ? unk : 0,
        byte_fallback: true,
      },
    };
  } else {
    throw new Error(`${path}: GGUF tokenizer model ${JSON.stringify(kind)} is not supported (gpt2, llama)`);
  }
  return { json, config };
}
