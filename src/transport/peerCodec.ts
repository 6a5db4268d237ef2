import { Unpackr } from 'msgpackr';

/**
 * Peer frames come from authenticated nodes, but a decoder of its own, set up
 * as safely as the client one, costs nothing and keeps a compromised or buggy
 * peer from planting records or prototypes.
 */
const peerUnpackr = new Unpackr({
  useRecords: false,
  mapsAsObjects: true,
  structuredClone: false,
  int64AsType: 'number',
  moreTypes: false,
});

export const decodePeer = (frame: Uint8Array): unknown => peerUnpackr.unpack(frame);
