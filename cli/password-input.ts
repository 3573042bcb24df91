/**
 * The password for `login`: asked for on a terminal without echoing it, or read from
 * standard input when that is a pipe (`printf %s "$PASSWORD" | image-dump login alice`),
 * so that it never appears in the command line or the shell's history.
 */
import { CliError, EXIT } from './client.js'

async function readPiped (input: NodeJS.ReadStream): Promise<string> {
  let text = ''
  for await (const chunk of input) text += String(chunk)
  return text.replace(/\r?\n$/, '')
}

async function askHidden (input: NodeJS.ReadStream, output: NodeJS.WriteStream): Promise<string> {
  output.write('password: ')
  input.setRawMode(true)
  input.setEncoding('utf8')
  input.resume()
  return await new Promise((resolve, reject) => {
    let value = ''
    const finish = (error?: Error): void => {
      input.off('data', onData)
      input.setRawMode(false)
      input.pause()
      output.write('\n')
      if (error === undefined) resolve(value)
      else reject(error)
    }
    const onData = (chunk: string): void => {
      for (const character of chunk) {
        if (character === '\r' || character === '\n') return finish()
        if (character === '\u0003' || character === '\u0004') return finish(new CliError('login cancelled', EXIT.REFUSED))
        if (character === '\u007f' || character === '\b') value = value.slice(0, -1)
        else value += character
      }
    }
    input.on('data', onData)
  })
}

export async function readPassword (input: NodeJS.ReadStream, output: NodeJS.WriteStream): Promise<string> {
  const password = input.isTTY ? await askHidden(input, output) : await readPiped(input)
  if (password === '') throw new CliError('no password given (type it when asked, or pipe it to standard input)', EXIT.REFUSED)
  return password
}
