/**
 * Sending a stored image from the object store, the same on every backend: a strong ETag
 * from its SHA-256 (what the bytes are, so every instance and every object holding them
 * agrees), Last-Modified from the object, 304 to a matching If-None-Match (or, without
 * one, If-Modified-Since), and one byte range (206, or 416 past the end). Several ranges in
 * one request are answered 200 with the whole image: a multipart answer is rarely asked
 * for and little use for images.
 *
 * Rows from before SHA-256s were recorded with their object have a weak ETag made from the
 * object's size and time instead.
 */
import type { FastifyReply, FastifyRequest } from 'fastify'
import parseRange from 'range-parser'
import type { ObjectStore } from '../lib/object-store/contract.js'
import { NotFoundError } from '../lib/errors.js'

export interface ServedImage {
  key: string
  contentType: string
  sha256?: string
}

/** The opaque tags of an If-None-Match value ('*' for any), weak or not. */
function tagsOf (header: string): string[] {
  return header.split(',').map((tag) => tag.trim().replace(/^W\//, '')).filter((tag) => tag !== '')
}

/** Seconds since the epoch, as an HTTP date has them. */
const seconds = (date: Date): number => Math.floor(date.getTime() / 1000)

function notModified (request: FastifyRequest, etag: string, lastModified: Date): boolean {
  const noneMatch = request.headers['if-none-match']
  // If-None-Match decides when sent (RFC 9110, 13.2.2); the weak comparison applies
  if (noneMatch !== undefined) {
    const tags = tagsOf(noneMatch)
    return tags.includes('*') || tags.includes(etag.replace(/^W\//, ''))
  }
  const since = request.headers['if-modified-since']
  if (since === undefined) return false
  const date = Date.parse(since)
  return !Number.isNaN(date) && seconds(lastModified) <= Math.floor(date / 1000)
}

/** Whether a Range may be honoured: no If-Range, or one that names this representation (strongly). */
function rangeApplies (request: FastifyRequest, etag: string, lastModified: Date): boolean {
  const ifRange = request.headers['if-range']
  if (ifRange === undefined) return true
  const value = (Array.isArray(ifRange) ? ifRange[0] ?? '' : ifRange).trim()
  if (value.startsWith('"') || value.startsWith('W/')) return !etag.startsWith('W/') && value === etag
  const date = Date.parse(value)
  return !Number.isNaN(date) && seconds(lastModified) === Math.floor(date / 1000)
}

export async function sendImage (store: ObjectStore, image: ServedImage, request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
  const info = await store.stat(image.key)
  if (info === undefined) throw new NotFoundError('image not found')
  const etag = image.sha256 !== undefined
    ? `"${image.sha256}"`
    : `W/"${info.bytes.toString(16)}-${info.lastModified.getTime().toString(16)}"`
  reply.header('ETag', etag)
  reply.header('Last-Modified', info.lastModified.toUTCString())
  reply.header('Accept-Ranges', 'bytes')
  if (notModified(request, etag, info.lastModified)) return reply.code(304).send()

  let range: { start: number, end: number } | undefined
  const header = request.headers.range
  if (header !== undefined && rangeApplies(request, etag, info.lastModified)) {
    const ranges = parseRange(info.bytes, header, { combine: true })
    if (ranges === -1) {
      reply.header('Content-Range', `bytes */${info.bytes}`)
      return reply.code(416).type('text/plain; charset=utf-8').send('range not satisfiable')
    }
    // a malformed header is ignored (-2), as are other units and several ranges: the whole image
    if (ranges !== -2 && ranges.type === 'bytes' && ranges.length === 1) range = ranges[0]
  }

  const read = await store.read(image.key, range)
  if (read === undefined) throw new NotFoundError('image not found')
  reply.type(image.contentType)
  if (range !== undefined) {
    reply.code(206)
    reply.header('Content-Range', `bytes ${range.start}-${range.end}/${read.bytes}`)
    reply.header('Content-Length', range.end - range.start + 1)
  } else {
    reply.header('Content-Length', read.bytes)
  }
  return reply.send(read.body)
}
