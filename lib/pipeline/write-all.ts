import type { Writable } from 'node:stream'

/** Writes with backpressure, and fails instead of waiting forever when the reader is gone. */
export function writeAll(stream: Writable, chunk: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    if (stream.destroyed || stream.writableEnded) return reject(new Error('the reading process has gone'))
    const onError = (err: Error) => finish(err)
    const onClose = () => finish(new Error('the reading process has gone'))
    const finish = (err?: Error) => {
      stream.off('error', onError)
      stream.off('close', onClose)
      stream.off('drain', onDrain)
      if (err) reject(err)
      else resolve()
    }
    const onDrain = () => finish()
    stream.on('error', onError)
    stream.on('close', onClose)
    if (stream.write(chunk)) finish()
    else stream.on('drain', onDrain)
  })
}
