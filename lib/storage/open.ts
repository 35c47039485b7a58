import { LocalStore } from './local.ts'
import type { Location } from './location.ts'
import { S3Store, type S3StoreOptions } from './s3.ts'
import { s3ClientFromEnv } from './s3-client.ts'

/**
 * The store behind a location (lib/storage/location.ts's parseLocation).
 * Commands use the Store interface; S3-only extras (download, stale
 * uploads) are there when `kind` is 's3'. Credentials and endpoint come
 * from `env` (see s3-client.ts); nothing is sent until the first call.
 */
export function openStore(location: Location, env: NodeJS.ProcessEnv, options: S3StoreOptions = {}): LocalStore | S3Store {
  if (location.kind === 'local') return new LocalStore(location.path)
  return new S3Store(s3ClientFromEnv(env), location, options)
}
