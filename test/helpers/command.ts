import { spawn } from 'node:child_process'

export interface RunOptions {
  /** working directory [the current one] */
  cwd?: string
  /** the whole environment of the command [this process's] */
  env?: NodeJS.ProcessEnv
}

export interface RunResult {
  /** exit code; null when it could not be started or ended by a signal */
  code: number | null
  /** stdout and stderr as they came, trimmed */
  output: string
  /** stdout alone */
  stdout: string
}

/** Runs a command to its end and gives its exit code and output; never rejects. */
export async function run (command: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
  return await new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: options.cwd, env: options.env })
    let output = ''
    let stdout = ''
    child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString(); stdout += chunk.toString() })
    child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
    child.once('error', (error) => resolve({ code: null, output: String(error), stdout }))
    child.once('close', (code) => resolve({ code, output: output.trim(), stdout }))
  })
}

/**
 * This process's environment without tap's part of it (its coverage loader in NODE_OPTIONS
 * and its own variables), for commands run as a user would run them. npm's settings stay.
 */
export function userEnv (): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^(tap_|_tapjs_|node_options$)/i.test(name)))
}
