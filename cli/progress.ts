/**
 * How `push` shows a dump's progress. On a terminal: a spinner, a bar of the images done,
 * the counts and the elapsed time, redrawn in place (cli-progress). Anywhere else (a pipe,
 * a file, CI): plain lines, one each time the counts change, and no control characters.
 */
import { SingleBar } from 'cli-progress'
import type { Progress } from '../schemas/dump.js'

const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏']

export interface ProgressView {
  update (progress: Progress): void
  stop (): void
}

function seconds (ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`
}

export function createProgressView (stream: NodeJS.WriteStream, requestId: number, total: number): ProgressView {
  const started = performance.now()
  if (stream.isTTY !== true) {
    let last = ''
    return {
      update ({ total, done, succeeded, failed }) {
        const counts = `${done}/${total} images (${succeeded} stored, ${failed} failed)`
        if (counts === last) return
        last = counts
        stream.write(`dump ${requestId}: ${counts}, ${seconds(performance.now() - started)}\n`)
      },
      stop () {}
    }
  }

  const bar = new SingleBar({
    stream,
    format: `{spinner} dump ${requestId} [{bar}] {value}/{total} images | {succeeded} stored, {failed} failed | {duration_formatted}`,
    barsize: 30,
    barCompleteChar: '\u2588',
    barIncompleteChar: '\u2591',
    hideCursor: true,
    clearOnComplete: false,
    stopOnComplete: false,
    fps: 10
  })
  let frame = 0
  let counts = { succeeded: 0, failed: 0 }
  bar.start(total, 0, { spinner: SPINNER[0], ...counts })
  // the spinner turns while nothing else changes, so a long download still looks alive
  const spin = setInterval(() => {
    frame = (frame + 1) % SPINNER.length
    bar.update({ spinner: SPINNER[frame], ...counts })
  }, 100)
  return {
    update ({ total, done, succeeded, failed }) {
      counts = { succeeded, failed }
      bar.setTotal(total)
      bar.update(done, { spinner: SPINNER[frame], ...counts })
    },
    stop () {
      clearInterval(spin)
      bar.update({ spinner: '✔', ...counts })
      bar.stop()
    }
  }
}
