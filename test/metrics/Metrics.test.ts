import { describe, expect, it } from 'vitest';
import { Metrics } from '../../src/metrics/Metrics.js';

/**
 * A page's lines with sample values left out (gauges such as CPU and event-loop delay move between
 * two reads), and without the series of active resources by type (which the reads themselves change).
 */
const shape = (page: string): string[] =>
  page
    .split('\n')
    .filter((l) => !l.startsWith('nodejs_active_resources{'))
    .map((l) => (l.startsWith('#') || l === '' ? l : l.slice(0, l.lastIndexOf(' '))));

describe('Metrics.text', () => {
  it('renders the page prom-client renders: the same metrics, series and order', async () => {
    const m = new Metrics({ node: 'u1' });
    m.answered('iris', '1', 'ok', 3);
    m.answered('iris', '1', 'overloaded');
    m.batchRan('iris', 4, 1.5, [0.2, 0.4]);
    m.bytesReceived('client', 100);
    const ours = await m.text();
    const theirs = await m.registry.metrics();
    expect(ours.endsWith('\n')).toBe(true);
    expect(shape(ours)).toEqual(shape(theirs));
    expect(ours).toContain('actorserve_requests_total{model="iris",version="1",code="overloaded",node="u1"} 1');
  });

  it('lets the event loop take turns while it renders, so a scrape does not hold up requests', async () => {
    const m = new Metrics({ node: 'u1' });
    const metrics = m.registry.getMetricsAsArray().length;
    let turns = 0;
    let rendering = true;
    const turn = () => {
      if (!rendering) return;
      turns++;
      setImmediate(turn);
    };
    setImmediate(turn);
    // A slice of 0 ms: a turn before every metric.
    await m.text(0);
    rendering = false;
    expect(metrics).toBeGreaterThan(20);
    expect(turns).toBeGreaterThanOrEqual(metrics);
  });
});
