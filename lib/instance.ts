import cluster from 'node:cluster'
import { hostname } from 'node:os'

/**
 * The name a process goes by in the dumps it runs (requests.run_by). It must tell apart
 * every process that runs dumps at the same time on one database: the host, then the
 * process. A worker of WORKERS is named by its supervisor's pid and its cluster worker id,
 * which the supervisor knows before the worker has run a line, so that when the worker
 * dies the supervisor can name the dumps it left (workerInstance); the worker computes
 * the same name for itself (thisInstance).
 */

// within VARCHAR(128), with room for the rest
const host = hostname().slice(0, 80)

/** The name of worker `workerId` of the supervisor with pid `primaryPid` on this host. */
export function workerInstance (primaryPid: number, workerId: number): string {
  return `${host}:${primaryPid}:w${workerId}`
}

/** This process's name: as its supervisor names it when it is a worker, else host and pid. */
export function thisInstance (): string {
  const worker = cluster.worker
  return worker === undefined ? `${host}:${process.pid}` : workerInstance(process.ppid, worker.id)
}
