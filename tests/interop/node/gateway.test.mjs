// Interop: the OFFICIAL cos-nodejs-sdk-v5, unchanged, with temporary credentials from the REAL
// gateway (`stsgate dev`), against the emulator's COS data plane.
//
// Like tests/interop/conftest.py's `dev_gateway`: creates a fresh database from $DATABASE_URL
// (the maintenance database scripts/test exports) with psql, starts
//   DATABASE_URL=<that db> $STSGATE_BIN dev --data-dir <tmp>/dev --listen 127.0.0.1:0 \
//     --admin-listen 127.0.0.1:0 --emulator-listen 127.0.0.1:0
// waits for <tmp>/dev/dev.json, mints HS256 JWTs with the demo app's secret, and at the end sends
// SIGINT, requires exit code 0 (graceful shutdown) and drops the database.
// Run: scripts/interop-node, then `DATABASE_URL=… node --test` in this directory.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import COS from 'cos-nodejs-sdk-v5';

const here = path.dirname(fileURLToPath(import.meta.url));
const BIN = process.env.STSGATE_BIN || path.resolve(here, '../../../target/debug/stsgate');
const READY_TIMEOUT_MS = 90_000;
const STOP_TIMEOUT_MS = 40_000;

let dev; // the child process
let devExit; // resolves to the exit code
let tmp;
let dbName;
let maintenanceUrl;
let facts; // dev.json

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function psql(url, sql) {
  execFileSync('psql', [url, '-v', 'ON_ERROR_STOP=1', '-Atqc', sql], { stdio: ['ignore', 'pipe', 'pipe'] });
}

function withDatabase(url, name) {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

function tail(file) {
  try {
    return fs.readFileSync(file, 'utf8').slice(-4000);
  } catch {
    return '<unreadable>';
  }
}

const diagnostics = () =>
  `stdout (tail):\n${tail(path.join(tmp, 'dev.stdout'))}\nstderr (tail):\n${tail(path.join(tmp, 'dev.stderr'))}`;

before(async () => {
  maintenanceUrl = process.env.DATABASE_URL;
  if (!maintenanceUrl) {
    throw new Error(
      'DATABASE_URL is not set: this test creates its own database from it ' +
        '(scripts/test exports it; e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres)',
    );
  }
  fs.accessSync(BIN, fs.constants.X_OK); // throws with the path when missing: build with `cargo build`
  dbName = `stsgate_interop_node_${randomBytes(6).toString('hex')}`;
  psql(maintenanceUrl, `CREATE DATABASE "${dbName}"`);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'stsgate-interop-node-dev-'));
  const dataDir = path.join(tmp, 'dev');
  const env = { ...process.env, DATABASE_URL: withDatabase(maintenanceUrl, dbName) };
  for (const k of ['HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'http_proxy', 'https_proxy', 'all_proxy']) delete env[k];
  dev = spawn(
    BIN,
    ['dev', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--emulator-listen', '127.0.0.1:0'],
    {
      stdio: ['ignore', fs.openSync(path.join(tmp, 'dev.stdout'), 'w'), fs.openSync(path.join(tmp, 'dev.stderr'), 'w')],
      env,
      cwd: tmp,
    },
  );
  let exited = null;
  devExit = new Promise((resolve) => dev.on('exit', (code, sig) => resolve((exited = code ?? sig))));
  const deadline = Date.now() + READY_TIMEOUT_MS;
  const factsPath = path.join(dataDir, 'dev.json');
  while (!facts) {
    if (exited !== null) throw new Error(`stsgate dev exited (${exited}) before writing dev.json\n${diagnostics()}`);
    if (Date.now() > deadline) throw new Error(`stsgate dev did not write ${factsPath} in time\n${diagnostics()}`);
    try {
      facts = JSON.parse(fs.readFileSync(factsPath, 'utf8')); // written atomically (tmp + rename)
    } catch {
      await sleep(100);
    }
  }
});

after(async () => {
  try {
    if (dev && (dev.exitCode !== null || dev.signalCode !== null)) {
      assert.fail(`stsgate dev stopped on its own (${dev.exitCode ?? dev.signalCode})\n${diagnostics()}`);
    }
    if (dev) {
      dev.kill('SIGINT');
      let timer;
      const timeout = new Promise((resolve) => {
        timer = setTimeout(() => resolve('timeout'), STOP_TIMEOUT_MS);
      });
      const code = await Promise.race([devExit, timeout]);
      clearTimeout(timer); // a pending timer would keep this process alive
      if (code === 'timeout') dev.kill('SIGKILL');
      assert.equal(code, 0, `stsgate dev after SIGINT: want exit code 0 (graceful shutdown)\n${diagnostics()}`);
    }
  } finally {
    if (dbName) psql(maintenanceUrl, `DROP DATABASE IF EXISTS "${dbName}" WITH (FORCE)`);
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  }
});

const b64url = (buf) => Buffer.from(buf).toString('base64url');

/** HS256 JWT for `sub` with the demo app's secret, issuer and audience. */
function jwt(sub) {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const payload = b64url(
    JSON.stringify({ sub, iss: facts.jwt_issuer, aud: facts.jwt_audience, iat: now, exp: now + 600 }),
  );
  const sig = createHmac('sha256', facts.jwt_hs256_secret).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${sig}`;
}

async function gatewayCredentials(sub, query = '') {
  const res = await fetch(`${facts.api_url}/v1/apps/${facts.app}/credentials${query}`, {
    headers: { Authorization: `Bearer ${jwt(sub)}` },
  });
  const text = await res.text();
  assert.equal(res.status, 200, `credentials for ${sub}: ${text}`);
  return JSON.parse(text);
}

function cosOptions(style) {
  const emulatorHost = new URL(facts.emulator_url).host;
  return style === 'proxy'
    ? { Protocol: 'http:', Proxy: facts.emulator_url }
    : { Protocol: 'http:', Domain: `${emulatorHost}/{Bucket}` };
}

/** A client from the gateway's default (`sdk`) response shape. */
async function clientFor(sub, style) {
  const c = await gatewayCredentials(sub);
  assert.equal(c.prefix, `users/${sub}/`);
  return new COS({
    SecretId: c.credentials.tmpSecretId,
    SecretKey: c.credentials.tmpSecretKey,
    SecurityToken: c.credentials.sessionToken,
    ...cosOptions(style),
  });
}

const call = (cos, method, params) =>
  new Promise((resolve, reject) => {
    cos[method]({ Bucket: facts.bucket, Region: facts.region, ...params }, (err, data) =>
      err ? reject(err) : resolve(data),
    );
  });

const accessDenied = (err) => {
  assert.equal(err.statusCode, 403, JSON.stringify(err));
  assert.equal(err.code, 'AccessDenied', JSON.stringify(err));
  return true;
};

for (const style of ['proxy', 'domain']) {
  test(`alice puts and gets her object back byte-identical (${style})`, async () => {
    const cos = await clientFor('alice', style);
    const body = randomBytes(300 * 1024 + 3);
    const key = `users/alice/node-${style}.jpg`;
    const put = await call(cos, 'putObject', { Key: key, Body: body, ContentType: 'image/jpeg' });
    assert.equal(put.statusCode, 200);
    assert.equal(put.ETag, `"${createHash('md5').update(body).digest('hex')}"`);
    const got = await call(cos, 'getObject', { Key: key });
    assert.equal(got.statusCode, 200);
    assert.ok(Buffer.compare(got.Body, body) === 0, 'byte-identical');
    assert.equal(got.headers['content-type'], 'image/jpeg');
  });

  test(`users/bob/a.jpg is AccessDenied with alice's credentials (${style})`, async () => {
    // Bob's object exists (put with his own credentials), so the refusal is about authorization.
    const bobBody = randomBytes(2048);
    const bob = await clientFor('bob', style);
    await call(bob, 'putObject', { Key: 'users/bob/a.jpg', Body: bobBody });

    const alice = await clientFor('alice', style);
    await assert.rejects(call(alice, 'putObject', { Key: 'users/bob/a.jpg', Body: Buffer.from('x') }), accessDenied);
    await assert.rejects(call(alice, 'getObject', { Key: 'users/bob/a.jpg' }), accessDenied);

    const still = await call(bob, 'getObject', { Key: 'users/bob/a.jpg' });
    assert.ok(Buffer.compare(still.Body, bobBody) === 0, "bob's object is untouched");
  });
}

test('getAuthorization with format=cos-js (the cos-js-sdk-v5 callback shape)', async () => {
  let fetched = 0;
  const cos = new COS({
    ...cosOptions('domain'),
    getAuthorization(_options, callback) {
      fetched += 1;
      fetch(`${facts.api_url}/v1/apps/${facts.app}/credentials?format=cos-js`, {
        headers: { Authorization: `Bearer ${jwt('alice')}` },
      })
        .then((r) => r.json())
        .then(callback, (e) => callback({ error: String(e) }));
    },
  });
  const body = randomBytes(4096);
  await call(cos, 'putObject', { Key: 'users/alice/node-cos-js.bin', Body: body });
  const got = await call(cos, 'getObject', { Key: 'users/alice/node-cos-js.bin' });
  assert.ok(Buffer.compare(got.Body, body) === 0, 'byte-identical');
  await assert.rejects(call(cos, 'getObject', { Key: 'users/bob/a.jpg' }), accessDenied);
  assert.ok(fetched >= 1, 'the SDK asked the gateway for credentials');
});
