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

/** Decodes one untrusted frame; throws on malformed or trailing bytes. */
export const decodeUntrusted = (frame: Uint8Array): unknown => untrusted.unpack(frame);
