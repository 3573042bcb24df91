import Type, { type Static } from 'typebox'
import { ProcessStatus, ProgressSchema } from './dump.js'

/** One of the user's dumps as the list shows it: no items, its counts instead. */
export const DumpSummarySchema = Type.Object({
  requestId: Type.Integer(),
  /** the dump whose failed images this one retries */
  retryOf: Type.Optional(Type.Integer()),
  status: ProcessStatus,
  /** when it was admitted, ISO 8601 in UTC */
  createdAt: Type.String({ format: 'date-time' }),
  progress: ProgressSchema
})
export type DumpSummary = Static<typeof DumpSummarySchema>

/** A page of the list, newest first; `nextCursor` continues it, null on the last page. */
export const DumpListSchema = Type.Object({
  dumps: Type.Array(DumpSummarySchema),
  nextCursor: Type.Union([Type.String(), Type.Null()])
})
export type DumpList = Static<typeof DumpListSchema>

/** At most 100 per page, 20 unless asked; the cursor is one a previous page gave. */
export const DumpListQuerySchema = Type.Object({
  limit: Type.Integer({ minimum: 1, maximum: 100, default: 20 }),
  cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 64 }))
})
