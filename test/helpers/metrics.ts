/** Reads samples from a node's `/metrics`. */

/** The values of the samples of `name` whose labels include `label` (e.g. `reason="leaving"`), or all of them without one. */
async function samples(port: number, name: string, label?: string): Promise<number[]> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const out: number[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([0-9.e+-]+|NaN)$/.exec(line);
    if (m?.[1] === name && (label === undefined || (m[2] ?? '').includes(label))) out.push(Number(m[3]));
  }
  return out;
}

/** The value of the first such sample; NaN when there is none. */
export const metric = async (port: number, name: string, label?: string): Promise<number> => (await samples(port, name, label))[0] ?? Number.NaN;

/** The sum of every such sample; 0 when there is none. */
export const metricSum = async (port: number, name: string, label?: string): Promise<number> => (await samples(port, name, label)).reduce((a, b) => a + b, 0);
