/**
 * Example documents of the API, typed by their schemas so that a change of a schema that
 * breaks one fails the type check; the API documentation (plugins/api-docs) shows them, in
 * JSON and in the XML the service writes from them, and its test validates every one.
 */
import type { LoginBody, TokenResponse } from './auth.js'
import type { Batch } from './batch.js'
import type { DumpResult } from './dump.js'
import type { ErrorBody } from './error.js'
import type { Quota } from './quota.js'

export const loginExample: LoginBody = {
  username: 'alice',
  // sha256("gold-password")
  passwordHash: 'bd6f5058b62d27b1c784c0c75043a9dcf446e81b6b551804e862c15dedbc9517'
}

export const tokenExample: TokenResponse = {
  access_token: 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjE3MDAwMDEyMDB9.c2lnbmF0dXJl',
  token_type: 'Bearer',
  expires_in: 1200
}

export const batchExample: Batch = {
  items: [
    {
      name: 'Tomato Soup',
      manufacturer: 'Cafe world',
      brand: 'Cafe',
      category: 'Food',
      images: ['https://example.com/a.png', 'https://example.com/b.png']
    },
    { name: 'Pea Soup', images: ['https://example.com/c.jpg'] }
  ]
}

export const dumpResultExample: DumpResult = {
  requestId: 42,
  status: 'PARTIAL',
  items: [
    {
      itemId: 1,
      name: 'Tomato Soup',
      manufacturer: 'Cafe world',
      brand: 'Cafe',
      category: 'Food',
      processStatus: 'PARTIAL',
      images: [
        {
          imageId: 1,
          url: 'https://example.com/a.png',
          status: 'SUCCESS',
          location: '1/42/1.png',
          contentType: 'image/png',
          bytes: 48213,
          sha256: '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08',
          // an earlier dump of this user stored the URL and the origin answered 304: not downloaded again
          reused: true
        },
        { imageId: 2, url: 'https://example.com/b.png', status: 'FAILURE', error: { type: 'HTTP_ERROR', httpStatus: 404 } }
      ]
    },
    {
      itemId: 2,
      name: 'Pea Soup',
      processStatus: 'FAILURE',
      images: [
        {
          imageId: 3,
          url: 'https://example.com/c.jpg',
          status: 'FAILURE',
          error: { type: 'INTERNAL_ERROR', code: 'NOT_AN_IMAGE', message: 'the response is not a supported image' }
        }
      ]
    }
  ]
}

/** A dump answered 202 (Prefer: respond-async), or read while it runs. */
export const runningDumpExample: DumpResult = {
  requestId: 43,
  status: 'PENDING',
  progress: { total: 3, done: 1, succeeded: 1, failed: 0 },
  items: [
    {
      itemId: 1,
      name: 'Tomato Soup',
      processStatus: 'PENDING',
      images: [
        {
          imageId: 1,
          url: 'https://example.com/a.png',
          status: 'SUCCESS',
          location: '1/43/1.png',
          contentType: 'image/png',
          bytes: 48213,
          sha256: '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08'
        },
        { imageId: 2, url: 'https://example.com/b.png', status: 'PENDING' }
      ]
    },
    { itemId: 2, name: 'Pea Soup', processStatus: 'PENDING', images: [{ imageId: 3, url: 'https://example.com/c.jpg', status: 'PENDING' }] }
  ]
}

export const quotaExample: Quota = { plan: 'gold', limit: 100, used: 3, remaining: 97, resetSeconds: 0, windowSeconds: 3600 }

export const healthExample = { status: 'ok', database: 'reachable' } as const

/** An error answer's example, by status: what the service says in that case. */
export const errorExamples: Readonly<Record<number, ErrorBody>> = {
  400: { statusCode: 400, error: 'Bad Request', message: 'items[0].name: is required' },
  401: { statusCode: 401, error: 'Unauthorized', message: 'Authorization token expired' },
  404: { statusCode: 404, error: 'Not Found', message: 'dump not found' },
  413: { statusCode: 413, error: 'Payload Too Large', message: 'request body is larger than BODY_LIMIT_BYTES (16777216 bytes)' },
  415: { statusCode: 415, error: 'Unsupported Media Type', message: 'unsupported media type "text/plain": send application/json, application/xml or text/xml' },
  422: { statusCode: 422, error: 'Unprocessable Entity', message: 'the Idempotency-Key "feed-2024-06-01" was first sent with a different batch (dump 42); send a new batch with a new key' },
  429: { statusCode: 429, error: 'Too Many Requests', message: 'quota exceeded: the gold plan allows 100 dumps per 60 minutes; the next slot frees in 1260 s' },
  500: { statusCode: 500, error: 'Internal Server Error', message: 'the server could not complete the request; the failure is in the service log' },
  503: { statusCode: 503, error: 'Service Unavailable', message: 'the service is overloaded right now; try again after the time in Retry-After' }
}
