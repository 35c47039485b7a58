import { createHash } from 'node:crypto'
import { S3Client, type S3ClientConfig } from '@aws-sdk/client-s3'
import { DrError, inputError, runtimeError, usageError } from '../cli/errors.ts'
import { escapeControl, quoteValue } from '../cli/escape.ts'
import { oneLine, redact } from '../cli/redact.ts'
import { parseSwitch } from '../cli/switches.ts'
import { uploadSettings } from './part-size.ts'

/**
 * An S3 client configured from the environment, the way the aws CLI reads it:
 *
 * - credentials: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN)
 *   from `env`; without them the SDK's default chain (AWS_PROFILE and the
 *   shared config files, SSO, web identity, container and instance
 *   metadata), which reads the process environment;
 * - AWS_REGION (or AWS_DEFAULT_REGION), default us-east-1; AWS_MAX_ATTEMPTS
 *   (each request's tries, SDK default 3);
 * - AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL for an S3-compatible server
 *   (Ceph RGW, MinIO…); path-style addressing is then the default,
 *   S3_FORCE_PATH_STYLE=true|false overrides it;
 * - S3_PART_SIZE, the multipart part size (lib/storage/part-size.ts), and
 *   S3_CONTENT_MD5 (below), read only for a command that uploads.
 *
 * Checksums: the SDK's default (CRC32 trailers in aws-chunked encoding) is
 * refused by RGW and others (411 MissingContentLength), so request and
 * response checksums are only sent where an operation requires them.
 * Every body here is in memory (lib/storage/multipart.ts hands each part
 * over as a Buffer), so SigV4 signs its SHA-256 (x-amz-content-sha256) and the server
 * refuses bytes damaged on the way (400 XAmzContentSHA256Mismatch, on AWS
 * and RGW alike). Content-MD5 is added to single PUTs and DeleteObjects (whose
 * API requires it); on parts it would hash every byte a second time, ~20% of
 * the upload's throughput on 2 cores, so only S3_CONTENT_MD5=true adds it
 * there, for a server that does not check signed payload hashes. Artifacts
 * carry their own SHA-256s besides, which restore verifies end to end.
 *
 * Secrets never reach argv or a message: errors are worded here from the
 * error's name and status, and any server text is redacted.
 */
export interface S3Connection {
  readonly client: S3Client
  /** For messages: the endpoint URL, or "AWS S3 (us-east-1)". Never holds a secret. */
  readonly endpoint: string
  readonly region: string
  /** Values to scrub from any text that came from the server or the SDK. */
  readonly secrets: readonly string[]
  /** S3_PART_SIZE, when set: multipart part size in bytes (lib/storage/part-size.ts). */
  readonly partSize?: number
  /** AWS_PROFILE, when credentials are to come from it: named when it yields none. */
  readonly profile?: string
}

/** Requests that carry Content-MD5; S3_CONTENT_MD5=true adds multipart parts (see above). */
const MD5_COMMANDS = ['PutObjectCommand', 'DeleteObjectsCommand']
const PART_COMMAND = 'UploadPartCommand'

export interface S3ClientOptions {
  /** For a command that uploads (backup.sh): S3_PART_SIZE and S3_CONTENT_MD5 are read and checked; the others ignore them. */
  upload?: boolean
}

export function s3ClientFromEnv(env: NodeJS.ProcessEnv, options: S3ClientOptions = {}): S3Connection {
  const value = (name: string): string | undefined => {
    const v = env[name]
    return v === undefined || v.trim() === '' ? undefined : v.trim()
  }
  const region = value('AWS_REGION') ?? value('AWS_DEFAULT_REGION') ?? 'us-east-1'
  if (!/^[a-z0-9-]+$/.test(region)) throw usageError(`AWS_REGION ${quoteValue(region, 40)} is not a region name`, 'use a name such as us-east-1')
  const endpointName = value('AWS_ENDPOINT_URL_S3') !== undefined ? 'AWS_ENDPOINT_URL_S3' : 'AWS_ENDPOINT_URL'
  const endpoint = value(endpointName)
  if (endpoint !== undefined) checkEndpoint(endpoint, endpointName)
  const pathStyleRaw = value('S3_FORCE_PATH_STYLE')
  const forcePathStyle = pathStyleRaw !== undefined ? parseSwitch(pathStyleRaw, 'S3_FORCE_PATH_STYLE') : endpoint !== undefined

  const accessKeyId = value('AWS_ACCESS_KEY_ID')
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY || undefined
  const sessionToken = env.AWS_SESSION_TOKEN || undefined
  if ((accessKeyId === undefined) !== (secretAccessKey === undefined)) {
    const [set, unset] = accessKeyId === undefined ? ['AWS_SECRET_ACCESS_KEY', 'AWS_ACCESS_KEY_ID'] : ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY']
    throw usageError(`${set} is set but ${unset} is not`, `set both, or neither to use AWS_PROFILE or the instance's role`)
  }

  const { partSize, md5Parts } = options.upload ? uploadSettings(env) : { partSize: undefined, md5Parts: false }

  const attemptsRaw = value('AWS_MAX_ATTEMPTS')
  if (attemptsRaw !== undefined && !/^[1-9]\d?$/.test(attemptsRaw)) {
    throw usageError(`AWS_MAX_ATTEMPTS ${quoteValue(attemptsRaw, 20)} is not a number of attempts`, 'use a whole number from 1 to 99')
  }

  const config: S3ClientConfig = {
    region,
    ...(attemptsRaw !== undefined ? { maxAttempts: Number(attemptsRaw) } : {}),
    forcePathStyle,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    // Fail fast on an endpoint that does not answer; an idle socket (a stalled
    // server) is an error after two minutes instead of a hang.
    requestHandler: { connectionTimeout: 10_000, socketTimeout: 120_000 },
  }
  if (endpoint !== undefined) config.endpoint = endpoint
  if (accessKeyId !== undefined && secretAccessKey !== undefined) {
    config.credentials = { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) }
  } else if (value('AWS_PROFILE') !== undefined) {
    config.profile = value('AWS_PROFILE')
  }
  // The SDK warns on every run that its releases after January 2027 need
  // Node 22. package.json pins an exact SDK version for that reason, so the
  // warning would only be noise in cron mail; an operator's own setting wins.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'
  const client = new S3Client(config)
  addContentMd5(client, new Set(md5Parts ? [...MD5_COMMANDS, PART_COMMAND] : MD5_COMMANDS))
  return {
    client,
    endpoint: endpoint ?? `AWS S3 (${region})`,
    region,
    secrets: [secretAccessKey, sessionToken].filter((s): s is string => s !== undefined),
    ...(partSize !== undefined ? { partSize } : {}),
    ...(config.profile !== undefined ? { profile: config.profile } : {}),
  }
}

function checkEndpoint(endpoint: string, name: string): void {
  let url: URL
  try {
    url = new URL(endpoint)
  } catch {
    throw usageError(`${name} ${quoteValue(endpoint)} is not a URL`, 'use http(s)://host:port')
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw usageError(`${name} must be an http:// or https:// URL`, 'use http(s)://host:port')
  // Never echo a URL that carries credentials: they belong in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
  if (url.username || url.password) throw usageError(`${name} must not hold credentials`, 'put them in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY')
}

/** Content-MD5 on `commands` when their body is in memory. Added in the build step, before signing, only when absent. */
function addContentMd5(client: S3Client, commands: ReadonlySet<string>): void {
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const request = args.request as { headers?: Record<string, string>; body?: unknown }
      if (commands.has(context.commandName ?? '') && request.headers && !hasHeader(request.headers, 'content-md5')) {
        const body = request.body
        const bytes = typeof body === 'string' ? Buffer.from(body) : body instanceof Uint8Array ? body : null
        if (bytes) request.headers['content-md5'] = createHash('md5').update(bytes).digest('base64')
      }
      return next(args)
    },
    { step: 'build', name: 'conductorContentMd5', override: true },
  )
}

function hasHeader(headers: Record<string, string>, name: string): boolean {
  return Object.keys(headers).some((h) => h.toLowerCase() === name)
}

/** What a failed request was about, for its one line. */
export interface S3ErrorContext {
  conn: Pick<S3Connection, 'endpoint' | 'region' | 'secrets' | 'profile'>
  bucket: string
  /** The s3:// URL of what was being done (the store, an artifact, one object). */
  url: string
}

const AUTH_FIX = 'check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) for this endpoint'
const NETWORK: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host name lookup failed',
  ECONNRESET: 'connection reset',
  ETIMEDOUT: 'connection timed out',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  EPIPE: 'connection closed',
  ECONNABORTED: 'connection aborted',
}

interface SdkError {
  name?: string
  code?: string
  message?: string
  cause?: unknown
  errors?: unknown[]
  $metadata?: { httpStatusCode?: number }
}

/** The errno-style code of a network failure, looking inside wrappers (AggregateError from Node's happy eyeballs, a cause). */
function networkCode(err: SdkError, depth = 0): string | undefined {
  if (!err || typeof err !== 'object' || depth > 3) return undefined
  if (typeof err.code === 'string' && err.code in NETWORK) return err.code
  for (const inner of [err.cause, ...(Array.isArray(err.errors) ? err.errors : [])]) {
    const code = networkCode(inner as SdkError, depth + 1)
    if (code) return code
  }
  return undefined
}

export function s3StatusOf(err: unknown): number | undefined {
  return (err as SdkError)?.$metadata?.httpStatusCode
}

export function s3NameOf(err: unknown): string | undefined {
  return (err as SdkError)?.name
}

/** A conditional write (If-None-Match: *) refused: something already has the key. */
export const isPreconditionFailed = (err: unknown): boolean => s3StatusOf(err) === 412 || s3NameOf(err) === 'PreconditionFailed'

/**
 * Any failure of an S3 request as one DrError line with a fix: the
 * operator's to fix (credentials, a missing bucket) exits 3, the
 * network's or the server's exits 1.
 */
export function s3Error(err: unknown, ctx: S3ErrorContext): DrError {
  if (err instanceof DrError) return err
  const e = (err ?? {}) as SdkError
  const name = e.name ?? 'Error'
  const status = e.$metadata?.httpStatusCode
  const endpoint = ctx.conn.endpoint
  const net = networkCode(e)
  if (net) return runtimeError(`cannot reach the S3 endpoint ${endpoint}: ${NETWORK[net]}`, 'check AWS_ENDPOINT_URL (or AWS_REGION) and that the server is running and reachable')
  if (name === 'TimeoutError' || name === 'RequestTimeout') return runtimeError(`the S3 endpoint ${endpoint} did not answer in time`, 'check that the server is running and reachable, then run again')
  switch (name) {
    case 'InvalidAccessKeyId':
      return inputError(`the S3 endpoint ${endpoint} does not know the access key (InvalidAccessKeyId)`, AUTH_FIX)
    case 'SignatureDoesNotMatch':
      return inputError(`the S3 endpoint ${endpoint} refused the request signature: wrong secret key (SignatureDoesNotMatch)`, AUTH_FIX)
    case 'InvalidToken':
    case 'ExpiredToken':
    case 'TokenRefreshRequired':
      return inputError(`the S3 session token was refused (${name})`, 'renew the credentials (AWS_SESSION_TOKEN, or log in again for AWS_PROFILE)')
    case 'AccessDenied':
    case 'Forbidden':
      return inputError(
        `access denied to ${ctx.url} at ${endpoint} (${name})`,
        'use credentials that may list, read, write and delete objects and abort multipart uploads in this bucket',
      )
    case 'CredentialsProviderError':
      if (ctx.conn.profile !== undefined) {
        return inputError(`AWS_PROFILE ${quoteValue(ctx.conn.profile, 64)} gives no credentials`, 'check that the profile exists in ~/.aws/config or ~/.aws/credentials (AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE) and holds keys, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY')
      }
      return inputError('no AWS credentials found', 'set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE')
    case 'NoSuchBucket':
      return inputError(`bucket ${quoteValue(ctx.bucket)} does not exist at ${endpoint}`, 'create it, or correct the s3:// location (and AWS_ENDPOINT_URL or AWS_REGION)')
    case 'InvalidBucketName':
      return inputError(`bucket name ${quoteValue(ctx.bucket)} is refused by ${endpoint}`, 'correct the s3:// location')
    case 'PermanentRedirect':
    case 'AuthorizationHeaderMalformed':
    case 'IllegalLocationConstraintException':
      return inputError(`bucket ${quoteValue(ctx.bucket)} is not in region ${quoteValue(ctx.conn.region)} (${name})`, "set AWS_REGION to the bucket's region")
  }
  if (status === 301) return inputError(`bucket ${quoteValue(ctx.bucket)} is in another region (HTTP 301)`, "set AWS_REGION to the bucket's region")
  const detail = e.message ? `: ${escapeControl(oneLine(redact(e.message, ctx.conn.secrets), 200))}` : ''
  const code = status ? ` (${name}, HTTP ${status})` : ` (${name})`
  if (status !== undefined && status >= 500) return runtimeError(`the S3 endpoint ${endpoint} failed a request for ${ctx.url}${code}${detail}`, 'retry later; if it persists, check the server')
  return runtimeError(`S3 request for ${ctx.url} failed${code}${detail}`, 'check the endpoint, the bucket and the credentials')
}
