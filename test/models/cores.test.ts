/**
 * Cores a node can use (src/cores.ts): the affinity count capped by the
 * cgroup CPU quota, read from cgroup v2 and v1 files laid out as containers
 * and Kubernetes lay them out.
 */
import { describe, expect, it } from 'vitest';
import { availableParallelism } from 'node:os';
import { cgroupCpuLimit, usableCores, type CgroupFiles } from '../../src/cores.js';

const fixture = (procSelfCgroup: string, files: Record<string, string>): CgroupFiles => ({ procSelfCgroup, read: (p) => files[p] });

describe('cgroupCpuLimit', () => {
  it('cgroup v2 in a container\'s namespace: quota ÷ period of cpu.max, rounded down, at least 1; "max" is no limit', () => {
    expect(cgroupCpuLimit(fixture('0::/\n', { '/cpu.max': '200000 100000\n' }))).toBe(2);
    expect(cgroupCpuLimit(fixture('0::/\n', { '/cpu.max': '250000 100000\n' }))).toBe(2);
    expect(cgroupCpuLimit(fixture('0::/\n', { '/cpu.max': '50000 100000\n' }))).toBe(1);
    expect(cgroupCpuLimit(fixture('0::/\n', { '/cpu.max': 'max 100000\n' }))).toBeUndefined();
  });

  it('takes the smallest quota along the process\'s cgroup and its ancestors (a pod limit above an unlimited container)', () => {
    const files = { '/kubepods/pod1/c1/cpu.max': 'max 100000', '/kubepods/pod1/cpu.max': '300000 100000', '/kubepods/cpu.max': '1600000 100000' };
    expect(cgroupCpuLimit(fixture('0::/kubepods/pod1/c1', files))).toBe(3);
  });

  it('cgroup v1: cpu.cfs_quota_us ÷ cpu.cfs_period_us under the cpu controller\'s mount, whichever name it has; -1 is no limit', () => {
    expect(cgroupCpuLimit(fixture('4:cpu,cpuacct:/\n3:memory:/x\n', { 'cpu,cpuacct/cpu.cfs_quota_us': '400000\n', 'cpu,cpuacct/cpu.cfs_period_us': '100000\n' }))).toBe(4);
    expect(cgroupCpuLimit(fixture('1:cpu:/\n2:cpuacct:/\n', { 'cpu/cpu.cfs_quota_us': '-1\n', 'cpu/cpu.cfs_period_us': '100000\n' }))).toBeUndefined();
    // Docker without a cgroup namespace: the path names the host's hierarchy, the mount's root is the container's.
    expect(cgroupCpuLimit(fixture('1:cpu:/docker/abc\n', { 'cpu/cpu.cfs_quota_us': '150000', 'cpu/cpu.cfs_period_us': '100000' }))).toBe(1);
  });

  it('no limit when nothing can be read, and a malformed file is no limit, not a crash', () => {
    expect(cgroupCpuLimit(fixture('', {}))).toBeUndefined();
    expect(cgroupCpuLimit(fixture('0::/\n', { '/cpu.max': 'garbage' }))).toBeUndefined();
    expect(cgroupCpuLimit(fixture('0::/\n', { '/cpu.max': '0 100000' }))).toBeUndefined();
  });
});

describe('usableCores', () => {
  it('is the affinity count capped by the quota, never above the affinity count', () => {
    expect(usableCores(fixture('0::/\n', { '/cpu.max': '100000 100000' }))).toBe(1);
    expect(usableCores(fixture('0::/\n', { '/cpu.max': '100000000 100000' }))).toBe(availableParallelism());
    expect(usableCores(fixture('', {}))).toBe(availableParallelism());
    const here = usableCores();
    expect(here).toBeGreaterThanOrEqual(1);
    expect(here).toBeLessThanOrEqual(availableParallelism());
  });
});
