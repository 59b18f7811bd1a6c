// Rotary position embeddings' frequencies: shared by the graph builders (models/), the plain
// kernels and the rope rewrite, so they live below all three.

export interface RopeScaling {
  type: "none" | "linear" | "llama3" | "dynamic";
  factor: number;
  lowFreqFactor?: number;
  highFreqFactor?: number;
  originalMaxPositions?: number;
}

/** Inverse frequencies of rotary embeddings (dims / 2 values): base frequencies, llama3's banded
 * rescaling, or linear scaling. Dynamic NTK falls back to base frequencies (documented limit). */
export function inverseFrequencies(dims: number, base: number, s: RopeScaling): Float32Array {
  const out = new Float32Array(dims / 2);
  for (let i = 0; i < dims / 2; i++) {
    // Computed in float32 steps as mlx-lm does, so the tables match.
    const period = Math.fround(base ** Math.fround((2 * i) / dims));
    let p = period;
    if (s.type === "linear") p = Math.fround(period * s.factor);
    if (s.type === "llama3") {
      const wavelength = 2 * Math.PI * period;
      const lowWavelength = s.originalMaxPositions! / s.lowFreqFactor!;
      const highWavelength = s.originalMaxPositions! / s.highFreqFactor!;
      if (wavelength > lowWavelength) p = period * s.factor;
      else if (wavelength > highWavelength) {
        const smooth =
          (s.originalMaxPositions! / wavelength - s.lowFreqFactor!) / (s.highFreqFactor! - s.lowFreqFactor!);
        p = period / ((1 - smooth) / s.factor + smooth);
      }
    }
    out[i] = 1 / p;
  }
  return out;
}
