import { invalidRequest } from '../errors.js';
import { DTYPE_BYTES, isDType, type WireTensor } from '../transport/protocol.js';
import type { ModelSpec } from './registry.js';

export interface ValidatedInputs {
  /** Size of dimension 0, shared by every input. */
  rows: number;
  /** Non-batch dimensions of every input: requests batch together only with an equal bucket. */
  bucket: string;
}

/**
 * Checks a request's tensors against the model's signature: names, dtypes,
 * ranks, fixed dimensions, byte lengths, and one shared batch size within
 * `maxBatch`.
 * @throws ActorserveError `invalid_request` naming the first problem found.
 */
export function validateInputs(spec: ModelSpec, inputs: Record<string, WireTensor | { dtype: string; shape: number[]; data: Uint8Array }>): ValidatedInputs {
  const given = Object.keys(inputs);
  if (given.length !== spec.inputs.length) {
    throw invalidRequest(`model ${spec.name} takes inputs [${spec.inputs.map((i) => i.name).join(', ')}], got [${given.join(', ')}]`);
  }
  let rows = -1;
  let bucket = '';
  for (const want of spec.inputs) {
    const t = Object.hasOwn(inputs, want.name) ? inputs[want.name] : undefined;
    if (!t) throw invalidRequest(`missing input "${want.name}"`);
    if (!isDType(t.dtype)) throw invalidRequest(`input "${want.name}": unknown dtype "${t.dtype}"`);
    if (t.dtype !== want.dtype) throw invalidRequest(`input "${want.name}": dtype ${t.dtype}, model wants ${want.dtype}`);
    if (t.shape.length !== want.shape.length) {
      throw invalidRequest(`input "${want.name}": rank ${t.shape.length}, model wants shape [${want.shape.join(',')}]`);
    }
    let elements = 1;
    for (let d = 0; d < t.shape.length; d++) {
      const have = t.shape[d]!;
      const need = want.shape[d]!;
      if (need !== -1 && have !== need) {
        throw invalidRequest(`input "${want.name}": dim ${d} is ${have}, model wants ${need}`);
      }
      if (have === 0) throw invalidRequest(`input "${want.name}": dim ${d} is 0`);
      elements *= have;
    }
    const bytes = elements * DTYPE_BYTES[t.dtype];
    if (t.data.byteLength !== bytes) {
      throw invalidRequest(`input "${want.name}": ${t.data.byteLength} data bytes, shape [${t.shape.join(',')}] of ${t.dtype} needs ${bytes}`);
    }
    const n = t.shape[0]!;
    if (rows === -1) rows = n;
    else if (n !== rows) throw invalidRequest(`inputs disagree on batch size: ${rows} and ${n}`);
    bucket += `${t.shape.slice(1).join('x')};`;
  }
  if (rows > spec.batching.maxBatch) {
    throw invalidRequest(`batch of ${rows} rows exceeds the model's maxBatch ${spec.batching.maxBatch}`);
  }
  return { rows, bucket };
}
