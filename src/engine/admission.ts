// Admission: the waiting sequences' prompts, left-padded to one length and prefilled in chunks
// (while other sequences decode) in a cache of their own before they join the running batch.
import type { HostKVCache, KVCache } from "../kv-cache.ts";
import type { Sequence } from "./sequence.ts";

export interface Admission {
  rows: Sequence[];
  cache: KVCache | HostKVCache;
  /** Each row's ids to prefill, left-padded to one length. */
  ids: number[];
  length: number;
  /** Positions prefilled so far, and where each chunk ends. */
  done: number;
  ends: number[];
  /** The cache is borrowed (a promptCache's, or the solo cache): not disposed after joining. */
  borrowed: boolean;
}

/** The prompts left-padded with `pad` to the longest one's length: their ids, row after row. */
export function leftPadded(prompts: readonly (readonly number[])[], pad: number): { ids: number[]; length: number } {
  const length = Math.max(...prompts.map((p) => p.length));
  const ids = prompts.flatMap((p) => [...new Array<number>(length - p.length).fill(pad), ...p]);
  return { ids, length };
}

/** Where each prefill chunk of a prompt of `length` ends: every `chunk` positions; a quantized cache
 * takes the prompt but its last token at full precision, then the last token over the quantized
 * cache (mlx-lm's quantized_kv_start 0). */
export function chunkEnds(length: number, chunk: number, quantized: boolean): number[] {
  const ends: number[] = [];
  if (quantized && length > 1) ends.push(length - 1);
  for (let e = chunk; e < length; e += chunk) if (!ends.includes(e)) ends.push(e);
  ends.push(length);
  return ends.sort((x, y) => x - y);
}

/** The ids of every row from where the admission stands to `end`, row after row. */
export function chunkIds(a: Admission, end: number): number[] {
  const ids: number[] = [];
  for (let b = 0; b < a.rows.length; b++) ids.push(...a.ids.slice(b * a.length + a.done, b * a.length + end));
  return ids;
}
