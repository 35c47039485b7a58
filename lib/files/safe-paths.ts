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

export class PathGuard {
  private readonly roots: string[]
  private readonly symlinks = new Set<string>()
  private current = 0

  constructor(roots: readonly string[]) {
    this.roots = roots.map(memberRoot)
  }

  /** The index of the root `path` belongs to, or undefined. */
  rootOf(path: string): number | undefined {
    const i = this.roots.findIndex((r) => within(path, r))
    return i === -1 ? undefined : i
  }

  private throughSymlink(path: string): string | undefined {
    const parts = path.split('/')
    for (let i = 1; i < parts.length; i++) {
      const prefix = parts.slice(0, i).join('/')
      if (this.symlinks.has(prefix)) return prefix
    }
    return undefined
  }

  /**
   * Checks the next member, in archive order; returns its root's index or
   * a reason to refuse the whole archive.
   */
  check(entry: { path: string; type: string; link?: string }): { root: number; linkRoot?: number } | { refused: string } {
    const shown = JSON.stringify(entry.path)
    if (!isSafeMemberPath(entry.path)) return { refused: `${shown} is absolute or climbs out with '..'` }
    const root = this.rootOf(entry.path)
    if (root === undefined) return { refused: `${shown} is outside the backed-up paths` }
    if (root < this.current) return { refused: `${shown} comes after the members of a later path (the archive was reordered)` }
    this.current = root
    const via = this.throughSymlink(entry.path)
    if (via !== undefined) return { refused: `${shown} would be written through the symlink ${JSON.stringify(via)}` }
    if (entry.type === 'symlink') {
      if (entry.path === this.roots[root]) return { refused: `${shown}: a backed-up path that is itself a symlink cannot be restored safely` }
      this.symlinks.add(entry.path)
    }
    if (entry.type === 'hardlink') {
      const target = entry.link ?? ''
      const linkRoot = isSafeMemberPath(target) ? this.rootOf(target) : undefined
      // A file linked into two backed-up paths: its target is in this path or one already restored.
      if (linkRoot === undefined || linkRoot > root) return { refused: `${shown} is a hardlink to ${JSON.stringify(target)}, outside the backed-up paths` }
      if (this.throughSymlink(target) !== undefined || this.symlinks.has(target)) return { refused: `${shown} is a hardlink through a symlink` }
      if (linkRoot !== root) return { root, linkRoot }
    }
    return { root }
  }
}
