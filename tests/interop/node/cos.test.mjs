// Interop: the OFFICIAL cos-nodejs-sdk-v5, unchanged, against the stsgate emulator's COS data
// plane, with temporary credentials from the emulator's own STS (GetFederationToken, TC3).
//
// Starts `$STSGATE_BIN emulator --listen 127.0.0.1:0` (default <repo>/target/debug/stsgate).
// Run: scripts/interop-node, then `node --test` in this directory.
//
// Two client settings are exercised:
//   proxy:  new COS({ ..., Protocol: 'http:', Proxy: EMULATOR_URL })
//           real virtual-host URLs (examplebucket-1250000000.cos.ap-guangzhou.myqcloud.com)
//           sent through the emulator as an HTTP proxy.
//   domain: new COS({ ..., Protocol: 'http:', Domain: '127.0.0.1:PORT/{Bucket}' })
//           path style; the SDK signs /<key>.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import COS from 'cos-nodejs-sdk-v5';

const here = path.dirname(fileURLToPath(import.meta.url));
const BIN = process.env.STSGATE_BIN || path.resolve(here, '../../../target/debug/stsgate');
const SECRET_ID = 'AKIDNODEINTEROP';
const SECRET_KEY = 'nodeinteropsecretkey';
const APPID = '1250000000';
const REGION = 'ap-guangzhou';
const BUCKET = `examplebucket-${APPID}`;

let emulator;
let emulatorUrl;

before(async () => {
  emulator = spawn(BIN, ['emulator', '--listen', '127.0.0.1:0', '--account', `${SECRET_ID}:${SECRET_KEY}:${APPID}`], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
  });
  emulatorUrl = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('emulator did not report readiness in 30 s')), 30000);
    emulator.on('exit', (code) => reject(new Error(`emulator exited with ${code}`)));
    createInterface({ input: emulator.stdout }).on('line', (line) => {
      const m = /stsgate emulator listening on (http:\/\/\S+)/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(m[1].replace(/\/$/, ''));
      }
    });
  });
});

after(() => {
  emulator?.kill('SIGTERM');
});

const sha256 = (s) => createHash('sha256').update(s).digest('hex');
const hmac = (key, msg) => createHmac('sha256', key).update(msg).digest();

/** GetFederationToken over TC3-HMAC-SHA256 (reference tencent-sts.md §1). */
async function federationToken(policy, durationSeconds = 1800) {
  const host = new URL(emulatorUrl).host;
  const payload = JSON.stringify({
    Name: 'alice',
    Policy: encodeURIComponent(JSON.stringify(policy)),
    DurationSeconds: durationSeconds,
  });
  const ts = Math.floor(Date.now() / 1000);
  const date = new Date(ts * 1000).toISOString().slice(0, 10);
  const canonical = `POST\n/\n\ncontent-type:application/json\nhost:${host}\n\ncontent-type;host\n${sha256(payload)}`;
  const scope = `${date}/sts/tc3_request`;
  const toSign = `TC3-HMAC-SHA256\n${ts}\n${scope}\n${sha256(canonical)}`;
  const key = hmac(hmac(hmac(`TC3${SECRET_KEY}`, date), 'sts'), 'tc3_request');
  const signature = createHmac('sha256', key).update(toSign).digest('hex');
  const res = await fetch(`${emulatorUrl}/`, {
    method: 'POST',
    headers: {
      'Content-Type': 'application/json',
      'X-TC-Action': 'GetFederationToken',
      'X-TC-Version': '2018-08-13',
      'X-TC-Timestamp': String(ts),
      'X-TC-Region': REGION,
      Authorization: `TC3-HMAC-SHA256 Credential=${SECRET_ID}/${scope}, SignedHeaders=content-type;host, Signature=${signature}`,
    },
    body: payload,
  });
  const body = await res.json();
  assert.ok(body.Response.Credentials, JSON.stringify(body));
  return body.Response.Credentials;
}

function alicePolicy() {
  return {
    version: '2.0',
    statement: [
      {
        effect: 'allow',
        action: ['name/cos:PutObject', 'name/cos:GetObject', 'name/cos:HeadObject'],
        resource: [`qcs::cos:${REGION}:uid/${APPID}:${BUCKET}/users/alice/*`],
      },
    ],
  };
}

function client(creds, style) {
  const common = {
    SecretId: creds.TmpSecretId,
    SecretKey: creds.TmpSecretKey,
    SecurityToken: creds.Token,
    Protocol: 'http:',
  };
  if (style === 'proxy') return new COS({ ...common, Proxy: emulatorUrl });
  return new COS({ ...common, Domain: `${new URL(emulatorUrl).host}/{Bucket}` });
}

const call = (cos, method, params) =>
  new Promise((resolve, reject) => {
    cos[method]({ Bucket: BUCKET, Region: REGION, ...params }, (err, data) => (err ? reject(err) : resolve(data)));
  });

for (const style of ['proxy', 'domain']) {
  test(`alice puts and gets her object back (${style})`, async () => {
    const cos = client(await federationToken(alicePolicy()), style);
    const body = randomBytes(300 * 1024);
    const key = `users/alice/node-${style}.bin`;
    const put = await call(cos, 'putObject', { Key: key, Body: body, ContentType: 'image/png' });
    assert.equal(put.statusCode, 200);
    assert.equal(put.ETag, `"${createHash('md5').update(body).digest('hex')}"`);
    const got = await call(cos, 'getObject', { Key: key });
    assert.equal(got.statusCode, 200);
    assert.ok(Buffer.compare(got.Body, body) === 0, 'byte-identical');
    assert.equal(got.headers['content-type'], 'image/png');
    const head = await call(cos, 'headObject', { Key: key });
    assert.equal(Number(head.headers['content-length']), body.length);
  });

  test(`bob's prefix is AccessDenied (${style})`, async () => {
    const cos = client(await federationToken(alicePolicy()), style);
    for (const [method, params] of [
      ['putObject', { Key: 'users/bob/a.jpg', Body: Buffer.from('x') }],
      ['getObject', { Key: 'users/bob/a.jpg' }],
    ]) {
      await assert.rejects(call(cos, method, params), (err) => {
        assert.equal(err.statusCode, 403, JSON.stringify(err));
        assert.equal(err.code, 'AccessDenied', JSON.stringify(err));
        return true;
      });
    }
  });
}
