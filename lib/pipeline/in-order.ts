/**
 * Waits for independent steps run together, then fails with the first
 * failure in the order given, not the order they happened: the operator
 * sees the same error every time (a missing pg_dump, not whichever of two
 * missing tools lost a race).
 */
export async function allInOrder<T extends readonly unknown[]>(steps: { [K in keyof T]: Promise<T[K]> }): Promise<T> {
  const settled = await Promise.allSettled(steps)
  for (const s of settled) if (s.status === 'rejected') throw s.reason
  return settled.map((s) => (s as PromiseFulfilledResult<unknown>).value) as unknown as T
}
