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

export interface ScriptResult {
  code: number | null
  signal: NodeJS.Signals | null
  stderr: string
}

/**
 * Runs `script` (an ES module in TypeScript, its imports relative to `cwd`) in a process of
 * its own as a user would (userEnv), to its end or `timeoutMs`: for what only a whole process
 * shows, such as whether it exits by itself.
 */
export async function runScript (script: string, cwd: string, timeoutMs = 30_000): Promise<ScriptResult> {
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '--eval', script], { cwd, env: userEnv(), stdio: ['ignore', 'ignore', 'pipe'], timeout: timeoutMs })
  let stderr = ''
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  return await new Promise((resolve) => child.once('close', (code, signal) => resolve({ code, signal, stderr })))
}
