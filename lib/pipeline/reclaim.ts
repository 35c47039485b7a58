/**
 * Streamed data arrives in buffers of its own (64 KiB socket reads, 1 MiB
 * file reads) whose memory lives outside the JS heap and is given back only
 * when their small JS handles are collected. V8 collects on heap pressure,
 * and those handles make almost none: measured on a 1 GiB read-back from a
 * bucket, 40-85 MB of dead buffers piled up between collections, which put a
 * `--copy-to` run at 160-175 MB peak RSS (130-137 MB with this). A young-
 * generation collection every few MiB of data (about 0.1 ms each;
 * lib/cli/launch.sh exposes `gc`) keeps that pile to a few MiB.
 */
export const RECLAIM_EVERY_BYTES = 8 * 1024 * 1024

export type Collect = (options: { type: 'minor' }) => void

/** A counter of bytes that went through a stream and are garbage now, which collects the young generation every `every` bytes. */
export function reclaimer(collect: Collect | undefined, every = RECLAIM_EVERY_BYTES): (bytes: number) => void {
  if (!collect) return () => {}
  let passed = 0
  return (bytes) => {
    passed += bytes
    if (passed < every) return
    passed = 0
    collect({ type: 'minor' })
  }
}

/** Does nothing where `gc` is not exposed (the tests, which run under tsx). */
export const reclaimAfter = reclaimer((globalThis as { gc?: Collect }).gc)
