/**
 * How many cores this process can use: the CPUs it may run on, capped by its
 * cgroup's CPU quota.
 *
 * Node 20's `os.availableParallelism()` (libuv 1.46) counts the CPUs in the
 * affinity mask only. In a container with a CPU limit (Kubernetes
 * `resources.limits.cpu`, `docker run --cpus`) on a big host that is the
 * host's count, while the kernel throttles the process to its quota: a node
 * limited to 2 CPUs on a 64-core host would size its intra-op threads and its
 * collector for 64. libuv 1.49 reads the quota itself; until Node ships it,
 * this does what it does (and what Rust's `available_parallelism` does):
 * quota ÷ period, rounded down, at least 1, the smallest along the process's
 * cgroup and its ancestors, cgroup v2 (`cpu.max`) or v1 (`cpu.cfs_quota_us`).
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';

/** Where the cgroup files are: the real ones by default, a fixture's in tests. */
export interface CgroupFiles {
  /** The contents of /proc/self/cgroup. */
  procSelfCgroup: string;
  /** Reads a file under the cgroup mount (/sys/fs/cgroup); undefined when it is not there. */
  read(path: string): string | undefined;
}

const systemCgroups: () => CgroupFiles = () => ({
  procSelfCgroup: readOr('/proc/self/cgroup') ?? '',
  read: (p) => readOr(join('/sys/fs/cgroup', p)),
});

function readOr(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** The cgroup path and its ancestors, the process's own first: `/a/b` → `/a/b`, `/a`, `/`. */
function upwards(path: string): string[] {
  const parts = path.split('/').filter(Boolean);
  return Array.from({ length: parts.length + 1 }, (_, i) => `/${parts.slice(0, parts.length - i).join('/')}`);
}

/**
 * The CPU quota of the process's cgroups in whole cores (rounded down, at
 * least 1); undefined when none has a limit or the files cannot be read.
 */
export function cgroupCpuLimit(files: CgroupFiles = systemCgroups()): number | undefined {
  let limit: number | undefined;
  const take = (quota: number, period: number) => {
    if (!(quota > 0) || !(period > 0)) return;
    const cores = Math.max(1, Math.floor(quota / period));
    limit = limit === undefined ? cores : Math.min(limit, cores);
  };
  for (const line of files.procSelfCgroup.split('\n')) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line.trim());
    if (m === null) continue;
    const [, controllers, path] = m as unknown as [string, string, string];
    if (controllers === '') {
      // cgroup v2: "max 100000" is no limit, "200000 100000" is 2 cores.
      for (const dir of upwards(path)) {
        const [quota, period] = (files.read(join(dir, 'cpu.max')) ?? '').trim().split(/\s+/);
        if (quota !== undefined && quota !== 'max') take(Number(quota), Number(period));
      }
    } else if (controllers.split(',').includes('cpu')) {
      // cgroup v1: the cpu controller's hierarchy, mounted as cpu or cpu,cpuacct; a quota of -1 is no limit.
      for (const mount of ['cpu', 'cpu,cpuacct']) {
        for (const dir of upwards(path)) {
          const quota = files.read(join(mount, dir, 'cpu.cfs_quota_us'));
          const period = files.read(join(mount, dir, 'cpu.cfs_period_us'));
          if (quota !== undefined && period !== undefined) take(Number(quota.trim()), Number(period.trim()));
        }
      }
    }
  }
  return limit;
}

/** This process's own figure, read once: start-up asks for it per model spec, for the collector and for its log line. */
let systemCores: number | undefined;

/** Cores this process can use: `os.availableParallelism()`, capped by the cgroup CPU quota (the system's files read once). */
export function usableCores(files?: CgroupFiles): number {
  if (files === undefined && systemCores !== undefined) return systemCores;
  const affinity = availableParallelism();
  const quota = cgroupCpuLimit(files);
  const cores = quota === undefined ? affinity : Math.min(affinity, quota);
  if (files === undefined) systemCores = cores;
  return cores;
}
