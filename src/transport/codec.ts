import { Packr, Unpackr } from 'msgpackr';

/**
 * msgpack for the wire. Outgoing frames are plain maps (no records); tensor
 * bytes go out as msgpack `bin` from `Uint8Array` views, never as typed-array
 * extensions or number arrays.
 */
const packr = new Packr({ useRecords: false, moreTypes: false });

/**
 * Client frames are untrusted: no records, no structured clone, 64-bit ints as
 * numbers. This instance is never shared with trusted (peer) decoding.
 * Extensions still decode to objects; the schema check after decoding is what
 * rejects them.
 */
const untrusted = new Unpackr({
  useRecords: false,
  mapsAsObjects: true,
  structuredClone: false,
  int64AsType: 'number',
  moreTypes: false,
});

export const encode = (value: unknown): Buffer => packr.pack(value);

/** Caps on the structure of an untrusted frame, checked before decoding it. */
export const FRAME_STRUCTURE_LIMITS = { maxItems: 65_536, maxDepth: 32 } as const;

/**
 * Walks a msgpack frame's headers without building anything and throws when
 * it is malformed, truncated, nested deeper than `maxDepth` or holds more than
 * `maxItems` values. Tensor bytes are skipped by length, so a real frame costs
 * a few dozen steps; a frame of a million tiny keys, which would cost seconds
 * to decode, is refused in microseconds.
 */
export function checkFrameStructure(b: Uint8Array, limits = FRAME_STRUCTURE_LIMITS): void {
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const pending: number[] = []; // values still expected by each open container
  let expect = 1; // values expected at the current level (the top level holds one)
  let items = 0;
  let i = 0;
  const need = (n: number) => {
    if (i + n > b.length) throw new RangeError('truncated msgpack frame');
  };
  const open = (n: number) => {
    // Each value takes at least one byte: a count beyond what is left cannot be real.
    if (n > b.length - i) throw new RangeError('msgpack container longer than its frame');
    if (n === 0) return;
    if (pending.length >= limits.maxDepth) throw new RangeError(`msgpack nesting deeper than ${limits.maxDepth}`);
    pending.push(expect);
    expect = n;
  };
  for (;;) {
    while (expect === 0) {
      if (pending.length === 0) {
        if (i !== b.length) throw new RangeError('trailing bytes after the msgpack value');
        return;
      }
      expect = pending.pop()!;
    }
    expect--;
    if (++items > limits.maxItems) throw new RangeError(`msgpack frame holds more than ${limits.maxItems} values`);
    need(1);
    const t = b[i++]!;
    if (t <= 0x7f || t >= 0xe0 || t === 0xc0 || t === 0xc2 || t === 0xc3) continue;
    if (t <= 0x8f) { open(2 * (t & 0x0f)); continue; }
    if (t <= 0x9f) { open(t & 0x0f); continue; }
    if (t <= 0xbf) { need(t & 0x1f); i += t & 0x1f; continue; }
    let len: number;
    switch (t) {
      case 0xc4: case 0xd9: need(1); len = b[i]!; i += 1; break;
      case 0xc5: case 0xda: need(2); len = view.getUint16(i); i += 2; break;
      case 0xc6: case 0xdb: need(4); len = view.getUint32(i); i += 4; break;
      case 0xc7: need(2); len = b[i]! + 1; i += 1; break;
      case 0xc8: need(3); len = view.getUint16(i) + 1; i += 2; break;
      case 0xc9: need(5); len = view.getUint32(i) + 1; i += 4; break;
      case 0xca: len = 4; break;
      case 0xcb: len = 8; break;
      case 0xcc: case 0xd0: len = 1; break;
      case 0xcd: case 0xd1: len = 2; break;
      case 0xce: case 0xd2: len = 4; break;
      case 0xcf: case 0xd3: len = 8; break;
      case 0xd4: len = 2; break;
      case 0xd5: len = 3; break;
      case 0xd6: len = 5; break;
      case 0xd7: len = 9; break;
      case 0xd8: len = 17; break;
      case 0xdc: need(2); { const n = view.getUint16(i); i += 2; open(n); } continue;
      case 0xdd: need(4); { const n = view.getUint32(i); i += 4; open(n); } continue;
      case 0xde: need(2); { const n = 2 * view.getUint16(i); i += 2; open(n); } continue;
      case 0xdf: need(4); { const n = 2 * view.getUint32(i); i += 4; open(n); } continue;
      default: throw new RangeError(`byte 0x${t.toString(16)} is not msgpack`); // 0xc1
    }
    need(len);
    i += len;
  }
}

/** Decodes one untrusted frame; throws on malformed, truncated, oversized-structure or trailing bytes. */
export const decodeUntrusted = (frame: Uint8Array): unknown => {
  checkFrameStructure(frame);
  return untrusted.unpack(frame);
};
