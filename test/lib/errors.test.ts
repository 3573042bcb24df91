import t from 'tap'
import {
  BadRequestError, NotFoundError, PayloadTooLargeError, UnsupportedMediaTypeError, createServiceError, publicMessageOf, statusCodeOf
} from '../../lib/errors.js'

t.test('the 4xx classes carry their status; the message is the client\'s', async (t) => {
  for (const [Class, status] of [[BadRequestError, 400], [NotFoundError, 404], [PayloadTooLargeError, 413], [UnsupportedMediaTypeError, 415]] as const) {
    const error = new Class('what is wrong, with a % sign and %s')
    t.equal(error.statusCode, status)
    t.equal(error.message, 'what is wrong, with a % sign and %s', 'the message as given, not a format string')
    t.ok(error instanceof Error)
    t.ok(error instanceof Class)
  }
  t.notOk(new BadRequestError('x') instanceof NotFoundError)
})

t.test('createServiceError: a 5xx class whose client words are written once', async (t) => {
  class DatabaseDown extends createServiceError('DATABASE_DOWN', 503, 'the database is unavailable; try again') {}
  const cause = new Error('connect ECONNREFUSED 10.0.0.5:3306')
  const error = new DatabaseDown(`lookup failed: ${cause.message}`, { cause })
  t.equal(error.statusCode, 503)
  t.equal(error.code, 'DATABASE_DOWN')
  t.equal(error.message, 'lookup failed: connect ECONNREFUSED 10.0.0.5:3306', 'the log keeps the details')
  t.equal(error.cause, cause)
  t.equal(publicMessageOf(error), 'the database is unavailable; try again', 'the client gets the written words')
  t.ok(error instanceof DatabaseDown)
  const specific = new DatabaseDown('x', { publicMessage: 'nothing was admitted; try again' })
  t.equal(publicMessageOf(specific), 'nothing was admitted; try again', 'one error may say more')
  t.equal(specific.cause, undefined)
})

t.test('publicMessageOf and statusCodeOf read any error', async (t) => {
  t.equal(publicMessageOf(new Error('x')), undefined)
  t.equal(publicMessageOf(Object.assign(new Error('x'), { publicMessage: '' })), undefined, 'empty words are none')
  t.equal(publicMessageOf('a string'), undefined)
  t.equal(statusCodeOf(Object.assign(new Error('x'), { statusCode: 429 })), 429)
  t.equal(statusCodeOf({ status: 409 }), 409)
  t.equal(statusCodeOf({ statusCode: 200 }), undefined, 'not an error status')
  t.equal(statusCodeOf(null), undefined)
})
