import Type, { type Static } from 'typebox'

export const InternalErrorCodes = [
  'TIMEOUT', 'DNS', 'CONNECTION', 'TLS', 'TOO_LARGE', 'NOT_AN_IMAGE',
  'BLOCKED_ADDRESS', 'INVALID_URL', 'TOO_MANY_REDIRECTS', 'IO', 'INTERRUPTED'
] as const
export type InternalErrorCode = typeof InternalErrorCodes[number]

export const ImageErrorSchema = Type.Union([
  Type.Object({ type: Type.Literal('HTTP_ERROR'), httpStatus: Type.Integer(), message: Type.Optional(Type.String()) }),
  Type.Object({
    type: Type.Literal('INTERNAL_ERROR'),
    code: Type.Enum(InternalErrorCodes),
    message: Type.String()
  })
])
export type ImageError = Static<typeof ImageErrorSchema>

/** PENDING only appears in a stored record while its dump is still being processed. */
export const ImageStatus = Type.Union([Type.Literal('SUCCESS'), Type.Literal('FAILURE'), Type.Literal('PENDING')])
export const ProcessStatus = Type.Union([Type.Literal('SUCCESS'), Type.Literal('PARTIAL'), Type.Literal('FAILURE'), Type.Literal('PENDING')])

export const ImageResultSchema = Type.Object({
  imageId: Type.Integer(),
  url: Type.String(),
  status: ImageStatus,
  location: Type.Optional(Type.String()),
  contentType: Type.Optional(Type.String()),
  bytes: Type.Optional(Type.Integer()),
  sha256: Type.Optional(Type.String()),
  /** as displayed (EXIF orientation applied), from the header; absent when it could not be read */
  width: Type.Optional(Type.Integer()),
  height: Type.Optional(Type.Integer()),
  /**
   * true when the origin answered 304 to validators from an earlier dump of this user: the
   * bytes stored then are this image's, nothing was downloaded; absent when it was downloaded
   */
  reused: Type.Optional(Type.Boolean()),
  error: Type.Optional(ImageErrorSchema)
})
export type ImageResult = Static<typeof ImageResultSchema>

export const ItemResultSchema = Type.Object({
  itemId: Type.Integer(),
  name: Type.String(),
  manufacturer: Type.Optional(Type.String()),
  brand: Type.Optional(Type.String()),
  category: Type.Optional(Type.String()),
  processStatus: ProcessStatus,
  images: Type.Array(ImageResultSchema)
})
export type ItemResult = Static<typeof ItemResultSchema>

/** How far a running dump has got: `done` images have an outcome, `succeeded` + `failed` of them. */
export const ProgressSchema = Type.Object({
  total: Type.Integer(),
  done: Type.Integer(),
  succeeded: Type.Integer(),
  failed: Type.Integer()
})
export type Progress = Static<typeof ProgressSchema>

/**
 * A dump's record. `progress` is there while the dump runs (status PENDING) and only then:
 * a complete record is the v1 answer, unchanged, whose counts follow from its images.
 */
export const DumpResultSchema = Type.Object({
  requestId: Type.Integer(),
  /** the dump whose failed images this one retries (POST /v1/dumps/{id}/retry) */
  retryOf: Type.Optional(Type.Integer()),
  status: ProcessStatus,
  progress: Type.Optional(ProgressSchema),
  items: Type.Array(ItemResultSchema)
})
export type DumpResult = Static<typeof DumpResultSchema>
