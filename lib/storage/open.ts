import { LocalStore } from './local.ts'
import type { Location } from './location.ts'
import type { S3Store, S3StoreOptions } from './s3.ts'
import type { S3ClientOptions } from './s3-client.ts'

/**
 * The store behind a location (lib/storage/location.ts's parseLocation).
 * Commands use the Store interface; S3-only extras (download, stale
 * uploads) are there when `kind` is 's3'. Credentials and endpoint come
 * from `env` (see s3-client.ts); nothing is sent until the first call.
 * The AWS SDK is loaded only for a bucket: it adds about 0.3 s and 40 MB
 * to every start, which a local backup has no use for.
 */
export async function openStore(location: Location, env: NodeJS.ProcessEnv, options: S3StoreOptions & S3ClientOptions = {}): Promise<LocalStore | S3Store> {
  if (location.kind === 'local') return new LocalStore(location.path)
  const [{ S3Store }, { s3ClientFromEnv }] = await Promise.all([import('./s3.ts'), import('./s3-client.ts')])
  return new S3Store(s3ClientFromEnv(env, { upload: options.upload }), location, options)
}
