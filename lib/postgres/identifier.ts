/**
 * What PostgreSQL can name a database or a role: 1 to 63 bytes
 * (NAMEDATALEN - 1), no NUL. The one rule for names from the operator
 * (PGDATABASE, DRILL_DATABASE), from a manifest and from roles.json.
 */
export const isPgIdentifier = (v: unknown): v is string => typeof v === 'string' && v.length > 0 && !v.includes('\0') && Buffer.byteLength(v) <= 63
