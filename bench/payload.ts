/**
 * The request every phase sends, built once: the same seeded rows for the
 * in-process ceiling, the plain HTTP server and actorserve, so the three
 * run the same model on the same numbers.
 */
import { mulberry32 as rng } from '../src/random.js';

/** What a load phase needs to know about a model's single input. */
export interface ModelInput {
  model: string;
  inputName: string;
  /** Shape of one row (the input's shape without the batch dimension). */
  rowShape: number[];
}


/** `rows` rows of the model's row shape; iris gets flower-like values, images values in [-1, 1). */
export function sampleInput(model: string, rowShape: readonly number[], rows: number, seed = 7): Float32Array {
  const rand = rng(seed);
  const per = rowShape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(per * rows);
  if (model === 'iris') {
    const means = [5.8, 3.0, 3.8, 1.2];
    for (let i = 0; i < out.length; i++) out[i] = means[i % 4]! + (rand() - 0.5);
  } else {
    for (let i = 0; i < out.length; i++) out[i] = rand() * 2 - 1;
  }
  return out;
}

/**
 * The plain server's JSON body for one row: `{"inputs": <nested array of
 * shape [1, ...rowShape]>}`, the way a JSON-over-HTTP client usually sends a
 * tensor.
 */
export function jsonBody(input: ModelInput): string {
  const data = sampleInput(input.model, input.rowShape, 1);
  let i = 0;
  const nest = (dims: readonly number[]): unknown =>
    dims.length === 0 ? data[i++] : Array.from({ length: dims[0]! }, () => nest(dims.slice(1)));
  return JSON.stringify({ inputs: nest([1, ...input.rowShape]) });
}
