import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { pack } from 'msgpackr';
import { checkFrameStructure, decodeUntrusted, encode } from '../../src/transport/codec.js';

describe('the frame structure check', () => {
  it('invariant: every value msgpackr encodes as plain msgpack passes the check and decodes to an equal value, a `__proto__` key renamed `__proto_`', () => {
    // msgpackr never writes a key named __proto__ into a decoded object (prototype safety): it renames it.
    const renamed = (_key: string, value: unknown) => {
      if (value === null || typeof value !== 'object' || Array.isArray(value) || !Object.hasOwn(value, '__proto__')) return value;
      return Object.fromEntries(Object.entries(value).map(([k, x]) => [k === '__proto__' ? '__proto_' : k, x]));
    };
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 6 }), (v) => {
        const bytes = encode(v);
        expect(() => checkFrameStructure(bytes)).not.toThrow();
        expect(decodeUntrusted(bytes)).toEqual(JSON.parse(JSON.stringify(v), renamed));
      }),
      { numRuns: 300 },
    );
  });

  it('passes a real infer frame with tensor bytes, whatever their size', () => {
    const data = new Uint8Array(16 * 3 * 48 * 192 * 4);
    expect(() => checkFrameStructure(encode({ t: 'infer', id: 1, model: 'm', inputs: { x: { dtype: 'float32', shape: [16, 3, 48, 192], data } } }))).not.toThrow();
  });

  it.each([
    ['a truncated frame', Uint8Array.from([0x92, 0x01])],
    ['trailing bytes', Uint8Array.from([0x01, 0x02])],
    ['the never-used byte 0xc1', Uint8Array.from([0xc1])],
    ['a map32 declaring 2^32-1 pairs with nothing behind', Uint8Array.from([0xdf, 0xff, 0xff, 0xff, 0xff])],
    ['a bin32 longer than the frame', Uint8Array.from([0xc6, 0x00, 0x10, 0x00, 0x00, 0x01])],
    ['nesting 33 deep', Uint8Array.from([...new Array(33).fill(0x91), 0x01])],
  ])('refuses %s', (_what, bytes) => {
    expect(() => checkFrameStructure(bytes)).toThrow(RangeError);
    expect(() => decodeUntrusted(bytes)).toThrow();
  });

  it('refuses a frame of more values than the cap quickly, before decoding it', () => {
    const big = pack(Array.from({ length: 100_000 }, (_, i) => i));
    const t = performance.now();
    expect(() => checkFrameStructure(big)).toThrow(/more than 65536 values/);
    expect(performance.now() - t).toBeLessThan(100);
  });
});
