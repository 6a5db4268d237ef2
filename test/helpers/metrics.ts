/** Reads one sample from a node's `/metrics`. */

/**
 * The value of the first sample of `name` (whose labels include `label`,
 * e.g. `reason="leaving"`, when given); NaN when there is none.
 */
export async function metric(port: number, name: string, label?: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([0-9.e+-]+|NaN)$/.exec(line);
    if (m?.[1] === name && (label === undefined || (m[2] ?? '').includes(label))) return Number(m[3]);
  }
  return Number.NaN;
}
