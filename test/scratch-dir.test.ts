// Scratch directories left by a killed run are removed by the next one, and nothing else is.
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { makeScratchDir, removeAbandoned } from '../lib/artifact/scratch-dir.ts'
import { tempDir } from './helpers.ts'

const PREFIX = 'conductor-restore-'

function leftover(parent: string, name: string, owner: unknown): string {
  const dir = join(parent, PREFIX + name)
  mkdirSync(dir)
  writeFileSync(join(dir, 'postgres.dump'), 'a staged dump')
  if (owner !== undefined) writeFileSync(join(dir, '.owner'), typeof owner === 'string' ? owner : JSON.stringify(owner))
  return dir
}

t.test('only this host and user\'s directories whose process is gone are removed', async (t) => {
  const parent = tempDir(t)
  const deadPid = spawnSync('true').pid! // exited by now
  const dead = leftover(parent, 'dead', { host: hostname(), pid: deadPid })
  const live = leftover(parent, 'live', { host: hostname(), pid: process.ppid })
  const mine = leftover(parent, 'mine', { host: hostname(), pid: process.pid })
  const otherHost = leftover(parent, 'other-host', { host: hostname() + '-elsewhere', pid: deadPid })
  const noOwner = leftover(parent, 'no-owner', undefined)
  const garbled = leftover(parent, 'garbled', '{not json')
  const otherPrefix = join(parent, 'cdr-fetch-dead')
  mkdirSync(otherPrefix)
  writeFileSync(join(otherPrefix, '.owner'), JSON.stringify({ host: hostname(), pid: deadPid }))
  // A link named like one, to a directory of someone's data: never followed, never removed.
  const data = join(parent, 'data')
  mkdirSync(data)
  writeFileSync(join(data, '.owner'), JSON.stringify({ host: hostname(), pid: deadPid }))
  symlinkSync(data, join(parent, PREFIX + 'link'))

  t.same(await removeAbandoned(parent, PREFIX), [dead])
  t.notOk(existsSync(dead), 'the abandoned one is gone')
  for (const kept of [live, mine, otherHost, noOwner, garbled, otherPrefix, join(parent, PREFIX + 'link'), data]) t.ok(existsSync(kept), `kept: ${kept}`)
  t.equal(readFileSync(join(data, '.owner'), 'utf8').length > 0, true, 'the link target is untouched')
})

t.test('a new scratch directory is private and records its owner; it clears abandoned ones first', async (t) => {
  const parent = tempDir(t)
  const dead = leftover(parent, 'dead', { host: hostname(), pid: spawnSync('true').pid! })
  const dir = await makeScratchDir(parent, PREFIX)
  t.notOk(existsSync(dead))
  t.equal(statSync(dir).mode & 0o777, 0o700)
  t.same(JSON.parse(readFileSync(join(dir, '.owner'), 'utf8')), { host: hostname(), pid: process.pid })
  t.same(await removeAbandoned(parent, PREFIX), [], 'our own is never removed')
})

t.test('a parent that cannot be read removes nothing and does not fail', async (t) => {
  t.same(await removeAbandoned(join(tempDir(t), 'missing'), PREFIX), [])
})
