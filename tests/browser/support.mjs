// What the browser tests share: `stsgate dev` on free ports with its own database, headless
// Chromium with a fresh profile, HS256 JWTs, polling.
//
// Needs: STSGATE_BIN (the stsgate binary), DATABASE_URL (a maintenance database; a fresh one is
// created and dropped), /usr/bin/chromium (scripts/test installs it).

import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repo = path.resolve(here, '..', '..');
export const shots = path.join(repo, 'target', 'screenshots');
export const BIN = process.env.STSGATE_BIN || path.join(repo, 'target', 'debug', 'stsgate');
const MAINTENANCE = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** An HS256 JWT with `claims`, signed with `secret`. */
export function jwt(claims, secret) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  const sig = crypto.createHmac('sha256', secret).update(body).digest('base64url');
  return `${body}.${sig}`;
}

function databaseUrl(name) {
  const u = new URL(MAINTENANCE);
  u.pathname = '/' + name;
  return u.toString();
}

function psql(sql) {
  execFileSync('psql', [MAINTENANCE, '-qAtc', sql], { stdio: ['ignore', 'ignore', 'inherit'] });
}

export async function waitFor(what, fn, timeoutMs = 120_000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch {
      // not yet
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

/** Starts `stsgate dev` on free ports with its own database; returns its facts and a stop(). */
export async function startDev() {
  const db = `stsgate_browser_${Date.now()}_${crypto.randomBytes(3).toString('hex')}`;
  psql(`CREATE DATABASE "${db}"`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stsgate-browser-'));
  const log = fs.openSync(path.join(dir, 'dev.log'), 'w');
  const child = spawn(
    BIN,
    ['dev', '--data-dir', dir, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0',
      '--emulator-listen', '127.0.0.1:0'],
    { env: { ...process.env, DATABASE_URL: databaseUrl(db) }, stdio: ['ignore', log, log] },
  );
  let exited = null;
  child.on('exit', (code) => { exited = code; });
  const facts = await waitFor('dev.json', async () => {
    if (exited !== null) {
      throw new Error(`stsgate dev exited (${exited}):\n${fs.readFileSync(path.join(dir, 'dev.log'), 'utf8')}`);
    }
    const f = JSON.parse(fs.readFileSync(path.join(dir, 'dev.json'), 'utf8'));
    const res = await fetch(`${f.admin_url}/healthz`);
    return res.ok ? f : null;
  }).catch((e) => {
    child.kill('SIGINT');
    throw e;
  });
  const stop = async () => {
    if (exited === null) {
      child.kill('SIGINT');
      await waitFor('stsgate dev to stop', () => exited !== null, 30_000).catch(() => child.kill('SIGKILL'));
    }
    try {
      psql(`DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`);
    } catch {
      // dropped by a later run of policy-store's test helper at worst
    }
    fs.rmSync(dir, { recursive: true, force: true });
  };
  return { facts, stop, dir };
}

export async function signIn(page, adminUrl, username, password) {
  await page.goto(`${adminUrl}/login`);
  await page.fill('input[name=username]', username);
  await page.fill('input[name=password]', password);
  await Promise.all([page.waitForURL(`${adminUrl}/`), page.click('button[type=submit]')]);
}

/** Headless Chromium with a fresh profile of its own, closed (and removed) when `t` ends. */
export async function launchChromium(t, options = {}) {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium`);
  assert.ok(fs.existsSync(BIN), `${BIN} is missing: cargo build first`);
  fs.mkdirSync(shots, { recursive: true });
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'stsgate-chromium-'));
  // A fresh profile directory of our own (launchPersistentContext passes it as --user-data-dir).
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1400, height: 1000 },
    ...options,
  });
  // One hook, in this order: the browser must have exited before its profile is removed
  // (node:test runs separate after-hooks first-registered first, which raced Chromium's writes).
  t.after(async () => {
    await context.close();
    fs.rmSync(userDataDir, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 });
  });
  return context;
}
