import { spawn } from 'node:child_process'

/** Runs a command to its end and gives its exit code and output (stdout and stderr, trimmed); never rejects. */
export async function run (command: string, args: string[]): Promise<{ code: number | null, output: string }> {
  return await new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
    child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
    child.once('error', (error) => resolve({ code: null, output: String(error) }))
    child.once('close', (code) => resolve({ code, output: output.trim() }))
  })
}
