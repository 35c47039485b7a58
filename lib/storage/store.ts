import type { Readable } from 'node:stream'
import type { ArtifactEntry } from '../artifact/list.ts'
import type { Digest } from '../pipeline/checksum.ts'

/**
 * Where artifacts live: a local directory or an S3-compatible bucket.
 * Commands talk to this interface and never ask which store they have
 * (restic's backend/, pgBackRest's storage/ drivers). One artifact is a
 * set of files under its name; its manifest is written last and is the
 * only proof that it is complete.
 */
export interface Store {
  /** For messages: the directory path, or s3://bucket/prefix. Never holds a secret. */
  readonly url: string
  readonly kind: 'local' | 's3'

  /**
   * Starts a new artifact under `name`. Refuses (resolves null) when that
   * name is already taken by a complete or in-progress artifact, so the
   * caller can try the next second.
   */
  create(name: string): Promise<ArtifactWriter | null>

  /** Every complete, partial and damaged artifact, newest first (lib/artifact/list.ts's compareNewestFirst). */
  list(): Promise<ArtifactEntry[]>

  /**
   * Deletes one artifact, manifest (and sidecar) first, so a half-deleted
   * artifact is never mistaken for a complete one. A partial is deleted
   * whole (on S3 its unfinished multipart uploads are aborted too).
   */
  remove(entry: ArtifactEntry): Promise<void>

  /** One file of an artifact, streamed (reading a copy back to check it, downloading for a restore). */
  read(name: string, file: string): Promise<Readable>
}

export interface ArtifactWriter {
  /** The artifact being written, for messages: a path or an s3:// URL. */
  readonly location: string

  /**
   * Streams one data file of the artifact from `source` and resolves when
   * it is durable (fsynced, or the upload completed). `file` is a plain
   * name such as postgres.dump.zst, never a path. Memory stays flat.
   * `expectedBytes`, when the caller can tell, sizes a bucket's multipart
   * parts so that the object fits S3's 10,000 parts.
   */
  writeFile(file: string, source: Readable, expectedBytes?: number): Promise<void>

  /**
   * Local stores only: a new file of the artifact for a child process
   * (zstd, age) to write through its own descriptor, so the stored bytes
   * never pass through this process. A bucket has none: its uploads
   * pass through this process anyway.
   */
  directFile?(file: string): DirectFile

  /**
   * Makes the artifact complete: writes the sidecar, then the manifest,
   * neither overwriting anything that exists. Before this resolves the
   * artifact is not restorable; after it, it is.
   */
  publish(manifestText: string, sumText: string): Promise<void>

  /** Removes everything written so far (aborts unfinished uploads). Idempotent; does nothing after publish. */
  discard(): Promise<void>
}

/** A file being written by a child process; see ArtifactWriter.directFile. */
export interface DirectFile {
  /** Open for writing: the last process of the chain's stdout. */
  readonly fd: number
  /** Where it is, for messages. */
  readonly path: string
  /**
   * Hashes the file as it is written and, once `written` resolves (the
   * writer exited well), the rest; then makes it durable. Closes the
   * descriptor whatever happens; rejects with `written`'s failure.
   */
  finish(written: Promise<unknown>, onProgress?: (bytes: number) => void): Promise<Digest>
}
