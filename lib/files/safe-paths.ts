/**
 * A member path that stays where it is put: relative, no empty, '.' or
 * '..' segment, no NUL. Unlike artifact file names, any other byte
 * (a backslash, a newline) is a legal file name and is restored as such.
 */
function isSafeMemberPath(path: string): boolean {
  if (path === '' || path.startsWith('/') || path.includes('\0')) return false
  return path.split('/').every((part) => part !== '' && part !== '.' && part !== '..')
}

/**
 * Pure checks that an archive (or its index) cannot write outside the
 * directories it restores: no absolute or `..` paths, nothing outside the
 * recorded roots, no member reached through a symlink that an earlier
 * member planted, no hardlink to anything outside its own root.
 */

/** The longest path a restore can name (lstat, verify, clean up): PATH_MAX (4096) with its NUL. */
export const PATH_MAX = 4095

/** `inner` is `outer` or lies below it (plain string paths, normalised). */
export const within = (inner: string, outer: string) => inner === outer || inner.startsWith(outer.endsWith('/') ? outer : `${outer}/`)

/** The first root that lies within another (or repeats one), with that other; undefined when none does. */
export function nestedRoot(roots: readonly string[]): { inner: string; outer: string } | undefined {
  for (const [i, inner] of roots.entries()) {
    for (const [j, outer] of roots.entries()) if (i !== j && within(inner, outer)) return { inner, outer }
  }
  return undefined
}

/** '/etc/conductor' → 'etc/conductor': how tar names a root inside the archive. */
export function memberRoot(root: string): string {
  return root.replace(/^\/+/, '')
}

/**
 * A name's exact bytes as a string (one char per byte): names that differ
 * only in bytes that are not UTF-8 (decoded alike, to U+FFFD) stay apart.
 * '/' is one byte in UTF-8 and never part of a longer character, so the
 * key splits into segments as the name does.
 */
function byteKey(name: string, raw: Buffer | string | undefined): string {
  if (raw === undefined) return Buffer.from(name, 'utf8').toString('latin1')
  return (typeof raw === 'string' ? Buffer.from(raw, 'base64') : raw).toString('latin1')
}

/** An archive member or index entry: its name, and its exact bytes when they are not UTF-8. */
export interface GuardedEntry {
  path: string
  type: string
  link?: string
  /** From the archive (tar-header). */
  rawPath?: Buffer
  rawLink?: Buffer
  /** From the index, base64. */
  pathBytes?: string
  linkBytes?: string
}

export class PathGuard {
  private readonly roots: string[]
  /** Byte keys (byteKey) of the symlinks seen so far. */
  private readonly symlinks = new Set<string>()
  private current = 0

  constructor(roots: readonly string[]) {
    this.roots = roots.map((r) => byteKey(memberRoot(r), undefined))
  }

  /** The index of the root a byte key belongs to, or undefined. */
  private rootOf(key: string): number | undefined {
    const i = this.roots.findIndex((r) => within(key, r))
    return i === -1 ? undefined : i
  }

  private throughSymlink(key: string): string | undefined {
    const parts = key.split('/')
    for (let i = 1; i < parts.length; i++) {
      const prefix = parts.slice(0, i).join('/')
      if (this.symlinks.has(prefix)) return prefix
    }
    return undefined
  }

  /**
   * Checks the next member, in archive order; returns its root's index or
   * a reason to refuse the whole archive. Names are compared by their
   * bytes, as the file system does.
   */
  check(entry: GuardedEntry): { root: number; linkRoot?: number } | { refused: string } {
    const shown = JSON.stringify(entry.path)
    const shownKey = (key: string) => JSON.stringify(Buffer.from(key, 'latin1').toString('utf8'))
    const key = byteKey(entry.path, entry.rawPath ?? entry.pathBytes)
    if (!isSafeMemberPath(key)) return { refused: `${shown} is absolute or climbs out with '..'` }
    const root = this.rootOf(key)
    if (root === undefined) return { refused: `${shown} is outside the backed-up paths` }
    if (root < this.current) return { refused: `${shown} comes after the members of a later path (the archive was reordered)` }
    this.current = root
    const via = this.throughSymlink(key)
    if (via !== undefined) return { refused: `${shown} would be written through the symlink ${shownKey(via)}` }
    if (entry.type === 'symlink') {
      if (key === this.roots[root]) return { refused: `${shown}: a backed-up path that is itself a symlink cannot be restored safely` }
      this.symlinks.add(key)
    }
    if (entry.type === 'hardlink') {
      const target = byteKey(entry.link ?? '', entry.rawLink ?? entry.linkBytes)
      const linkRoot = isSafeMemberPath(target) ? this.rootOf(target) : undefined
      // A file linked into two backed-up paths: its target is in this path or one already restored.
      if (linkRoot === undefined || linkRoot > root) return { refused: `${shown} is a hardlink to ${shownKey(target)}, outside the backed-up paths` }
      if (this.throughSymlink(target) !== undefined || this.symlinks.has(target)) return { refused: `${shown} is a hardlink through a symlink` }
      if (linkRoot !== root) return { root, linkRoot }
    }
    return { root }
  }
}
