// The check every public entry runs on its options object: an Error naming the entry and the
// unknown key (a typo such as `poolin` would otherwise fall back to a default without a word).

/** Throws unless `options` is an object (or undefined) whose keys are all in `names`. */
export function checkOptionNames<T extends object>(
  what: string,
  options: T | undefined,
  names: readonly (keyof T & string)[],
): void {
  if (options === undefined) return;
  if (options === null || typeof options !== "object" || Array.isArray(options))
    throw new Error(
      `${what}: options must be an object, got ${options === null ? "null" : Array.isArray(options) ? "an array" : typeof options}`,
    );
  for (const key of Object.keys(options)) {
    if (!(names as readonly string[]).includes(key))
      throw new Error(`${what}: unknown option '${key}' (valid: ${names.join(", ")})`);
  }
}
