#!/usr/bin/env node
/**
 * `image-dump`: the command line of the service. The server is IMAGE_DUMP_URL (or
 * --server); the token `login` gets is kept in a file only its owner can read.
 *
 * Exit codes, for scripts: 0 every image stored (or the command did what it says),
 * 1 some images failed, 2 refused (bad input, not logged in, wrong password, quota, …),
 * 3 the service cannot be reached or cannot answer.
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander'
import { packageInfo } from '../lib/package-info.js'
import { CliError, EXIT } from './client.js'
import { login, pull, push, quota, status, type Context } from './commands.js'
import { readPassword } from './password-input.js'
import { tokenFile } from './token-store.js'

const DEFAULT_SERVER = 'http://127.0.0.1:3000'

function dumpId (value: string): number {
  if (!/^[1-9][0-9]{0,9}$/.test(value)) throw new InvalidArgumentError('a dump id is a positive whole number')
  return Number(value)
}

function serverUrl (value: string): string {
  try {
    const url = new URL(value)
    if (url.protocol === 'http:' || url.protocol === 'https:') return url.toString()
  } catch {
    // said below
  }
  throw new InvalidArgumentError('the server is an http:// or https:// URL')
}

export async function main (argv: string[]): Promise<number> {
  let code: number = EXIT.OK
  const program = new Command()
    .name('image-dump')
    .description('Push product feeds to an Image Dump service, follow them, and pull the stored images.')
    .version(packageInfo().version)
    .addOption(new Option('--server <url>', 'the service').env('IMAGE_DUMP_URL').default(DEFAULT_SERVER).argParser(serverUrl))
    .addHelpText('after', `
Exit codes: 0 every image stored, 1 some images failed, 2 refused, 3 cannot reach the service.
The token from \`login\` is kept in ${tokenFile()} (IMAGE_DUMP_TOKEN_FILE), readable by you only.`)
    .exitOverride()
    .configureOutput({ writeErr: (text) => process.stderr.write(text) })

  const context = (): Context => ({
    server: new URL(program.opts<{ server: string }>().server).toString(),
    tokenFile: tokenFile(),
    stdout: process.stdout,
    stderr: process.stderr,
    pollMs: 500
  })

  program.command('login')
    .description('get a token and keep it for the next commands (the password is asked for, or read from standard input)')
    .argument('<username>')
    .action(async (username: string) => { code = await login(context(), username, await readPassword(process.stdin, process.stderr)) })

  program.command('push')
    .description('send a feed (XML or JSON) and show its progress until every image has its outcome')
    .argument('<file>', 'feed.xml or feed.json')
    .option('--async', 'return once the dump is admitted, printing its id')
    .option('--key <idempotency-key>', 'send the same key again to get the same dump instead of a new one [a new key]')
    .option('--json', 'print the dump\'s record as JSON')
    .action(async (file: string, options: { async?: boolean, key?: string, json?: boolean }) => {
      code = await push(context(), file, { async: options.async === true, json: options.json === true, ...(options.key === undefined ? {} : { key: options.key }) })
    })

  program.command('status')
    .description('what came of a dump so far')
    .argument('<id>', 'the dump\'s id', dumpId)
    .option('--json', 'print its record as JSON')
    .action(async (id: number, options: { json?: boolean }) => { code = await status(context(), id, { json: options.json === true }) })

  program.command('pull')
    .description('download the stored images of a dump into a folder, named as the service named them')
    .argument('<id>', 'the dump\'s id', dumpId)
    .argument('<dir>', 'the folder (made if missing)')
    .action(async (id: number, dir: string) => { code = await pull(context(), id, dir) })

  program.command('quota')
    .description('your plan, and how much of it the last hour used')
    .option('--json', 'print it as JSON')
    .action(async (options: { json?: boolean }) => { code = await quota(context(), { json: options.json === true }) })

  try {
    await program.parseAsync(argv)
    return code
  } catch (error) {
    if (error instanceof CommanderError) {
      // --help and --version end here too; a usage error was already explained by commander
      return error.exitCode === 0 ? EXIT.OK : EXIT.REFUSED
    }
    if (error instanceof CliError) {
      process.stderr.write(`image-dump: ${error.message}\n`)
      return error.exitCode
    }
    process.stderr.write(`image-dump: ${error instanceof Error ? error.stack ?? error.message : String(error)}\n`)
    return EXIT.UNREACHABLE
  }
}

process.exitCode = await main(process.argv)
