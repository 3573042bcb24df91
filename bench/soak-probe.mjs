// Loaded into the service process by bench/soak.ts (`node --import`), never by the service
// itself: it measures the event loop's delay from the inside and answers over the IPC
// channel the soak opened. Without an IPC channel it does nothing.
import { monitorEventLoopDelay } from 'node:perf_hooks'

// The histogram records whole intervals between ticks of a RESOLUTION_MS timer: an idle
// loop shows about RESOLUTION_MS, which the soak subtracts.
export const RESOLUTION_MS = 10

if (typeof process.send === 'function') {
  const histogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS })
  histogram.enable()
  const ms = (ns) => ns / 1e6
  process.on('message', (message) => {
    if (message === 'probe:reset') {
      histogram.reset()
    } else if (message === 'probe:sample') {
      process.send({ type: 'sample', memory: process.memoryUsage(), resolutionMs: RESOLUTION_MS })
    } else if (message === 'probe:report') {
      process.send({
        type: 'report',
        resolutionMs: RESOLUTION_MS,
        count: histogram.count,
        p50: ms(histogram.percentile(50)),
        p90: ms(histogram.percentile(90)),
        p99: ms(histogram.percentile(99)),
        max: ms(histogram.max),
        mean: ms(histogram.mean)
      })
    }
  })
  // the channel must not keep a process alive that would otherwise exit
  process.channel?.unref()
}
