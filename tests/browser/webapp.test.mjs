// A web app in real headless Chromium (issue 13): a static page on origin A uploads with the
// official cos-js-sdk-v5 (from npm, never a CDN) straight to the emulator's COS on origin C,
// with `format=cos-js` credentials that its getAuthorization fetches from `stsgate dev` on
// origin B with the user's JWT, across CORS.
//
// The admin lists origin A on the demo app (stsgate dev's own demo origins are there out of the
// box) and sets a 30 s credential duration. Then: putObject and getObject byte-identical; a
// put into another user's folder fails with AccessDenied and the page shows it; once the first
// credential's ExpiredTime has passed, the SDK asks again and the next upload works with a new
// credential; a page on origin D, not listed, gets the browser's CORS refusal. The snippet the
// page runs (webapp/stsgate-cos.js) is the README's, byte for byte. Screenshots go to
// target/screenshots/webapp-*.png.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchChromium, repo, shots, signIn, sleep, startDev, waitFor } from './support.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const SNIPPET = fs.readFileSync(path.join(here, 'webapp', 'stsgate-cos.js'), 'utf8');
const SDK = path.join(here, 'node_modules', 'cos-js-sdk-v5', 'dist', 'cos-js-sdk-v5.min.js');

/** The page's static files on 127.0.0.1:<free port>, with /config.js naming the gateway. */
async function serveWebApp(t, config) {
  const files = {
    '/': ['index.html', 'text/html'],
    '/page.js': ['page.js', 'text/javascript'],
    '/stsgate-cos.js': ['stsgate-cos.js', 'text/javascript'],
    '/ui.js': ['ui.js', 'text/javascript'],
  };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    let body;
    let type = 'text/javascript';
    if (url.pathname === '/config.js') {
      body = config;
    } else if (url.pathname === '/cos-js-sdk-v5.min.js') {
      body = fs.readFileSync(SDK);
    } else if (files[url.pathname]) {
      const [name, t] = files[url.pathname];
      body = fs.readFileSync(path.join(here, 'webapp', name));
      type = t;
    } else {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': `${type}; charset=utf-8`, 'cache-control': 'no-store' }).end(body);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => server.close(resolve)));
  return `http://127.0.0.1:${server.address().port}`;
}

/** What a preflight from `origin` gets from the gateway. */
async function preflight(apiUrl, origin) {
  const res = await fetch(`${apiUrl}/v1/apps/demo/credentials?format=cos-js`, {
    method: 'OPTIONS',
    headers: { origin, 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' },
  });
  return { status: res.status, allow: res.headers.get('access-control-allow-origin') };
}

test('a web app uploads to COS from headless Chromium across CORS', { timeout: 300_000 }, async (t) => {
  const readme = fs.readFileSync(path.join(repo, 'README.md'), 'utf8');
  assert.ok(readme.includes('```js\n' + SNIPPET + '```'), 'README shows webapp/stsgate-cos.js as it is');

  const dev = await startDev();
  t.after(dev.stop);
  const { facts } = dev;
  const api = facts.api_url;
  const emulatorHost = new URL(facts.emulator_url).host;
  const config = [
    `const STSGATE = ${JSON.stringify(api)};`,
    `const APP = ${JSON.stringify(facts.app)};`,
    `const COS_OPTIONS = { Protocol: 'http:', Domain: ${JSON.stringify(`${emulatorHost}/{Bucket}`)} };`,
    '',
  ].join('\n');
  const originA = await serveWebApp(t, config);
  const originD = await serveWebApp(t, config);

  // stsgate dev's demo origins work out of the box; origin A is not listed yet.
  assert.deepEqual(facts.web_origins.slice(0, 2), ['http://localhost:3000', 'http://127.0.0.1:3000']);
  for (const origin of facts.web_origins) {
    assert.deepEqual(await preflight(api, origin), { status: 204, allow: origin }, origin);
  }
  assert.deepEqual(await preflight(api, originA), { status: 403, allow: null });

  const context = await launchChromium(t);
  const errors = [];
  const cosRefusals = [];
  const newPage = async () => {
    const page = await context.newPage();
    page.on('console', (m) => {
      if (m.type() !== 'error') return;
      if (/blocked by CORS policy/.test(m.text())) cosRefusals.push(m.text());
      else if (!m.text().startsWith('Failed to load resource')) errors.push(m.text());
    });
    page.on('pageerror', (e) => errors.push(String(e)));
    return page;
  };

  // ---- The admin lists origin A on the demo app and sets 30 s credentials.
  const admin = await newPage();
  await signIn(admin, facts.admin_url, facts.admin_user, facts.admin_password);
  await admin.goto(`${facts.admin_url}/apps/${facts.app}/edit`);
  const listed = await admin.inputValue('textarea[name=allowed_origins]');
  assert.deepEqual(listed.split('\n'), facts.web_origins, 'the demo origins are in the form');
  await admin.fill('textarea[name=allowed_origins]', `${listed}\n${originA}/`);
  await admin.fill('input[name=duration_default]', '30');
  await Promise.all([admin.waitForURL(/\?notice=saved$/), admin.click('button:has-text("Save")')]);
  assert.ok((await admin.textContent('#allowed-origins')).includes(originA), 'stored without the slash');
  await admin.screenshot({ path: path.join(shots, 'webapp-admin-origins.png'), fullPage: true });
  await waitFor('the gateway to allow origin A', async () => (await preflight(api, originA)).status === 204, 10_000);

  // ---- Origin A: upload, read back byte-identical.
  const credentials = [];
  const page = await newPage();
  page.on('response', async (res) => {
    if (res.url().startsWith(`${api}/v1/apps/`) && res.request().method() === 'GET' && res.ok()) {
      credentials.push(await res.json());
    }
  });
  await page.goto(`${originA}/`);
  await page.evaluate(([jwt]) => window.demo.signIn(jwt, 'alice'), [facts.sample_jwt]);
  const bytes = crypto.randomBytes(200_000);
  bytes.set([0, 255, 13, 10, 0x80], 0);
  await page.setInputFiles('#file', { name: 'photo.bin', mimeType: 'application/octet-stream', buffer: bytes });
  await page.click('#upload');
  await page.waitForSelector('#status.ok, #status.error');
  assert.equal(await page.textContent('#status'), 'Uploaded users/alice/photo.bin');
  const back = Buffer.from(await page.evaluate(() => window.demo.read('users/alice/photo.bin')), 'base64');
  assert.ok(back.equals(bytes), `read back ${back.length} bytes, not the ${bytes.length} uploaded`);
  assert.ok(credentials.length >= 1, 'the page fetched credentials');
  const first = credentials.at(-1);
  assert.equal(first.Prefix, 'users/alice/');
  assert.equal(first.ExpiredTime - first.StartTime, 30, 'a 30 s credential');
  await page.screenshot({ path: path.join(shots, 'webapp-uploaded.png'), fullPage: true });

  // ---- Another user's folder: COS refuses, the page shows the code.
  assert.equal(await page.evaluate(() => window.demo.putAt('users/bob/intruder.txt', 'not yours')), 'AccessDenied');
  assert.match(await page.textContent('#status.error'), /^Upload to users\/bob\/intruder\.txt failed: AccessDenied/);
  await page.screenshot({ path: path.join(shots, 'webapp-access-denied.png'), fullPage: true });

  // ---- After ExpiredTime the SDK asks again; the next upload works with the new credential.
  const expired = Math.max(...credentials.map((c) => c.ExpiredTime));
  const seen = credentials.length;
  await sleep(Math.max(0, (expired + 1) * 1000 - Date.now()));
  await page.setInputFiles('#file', { name: 'second.txt', mimeType: 'text/plain', buffer: Buffer.from('after expiry\n') });
  await page.click('#upload');
  await page.waitForFunction(() => /^(Uploaded users\/alice\/second|Upload failed)/.test(document.querySelector('#status').textContent));
  assert.equal(await page.textContent('#status'), 'Uploaded users/alice/second.txt');
  const fresh = credentials.slice(seen);
  assert.ok(fresh.length >= 1, 'getAuthorization was called again');
  assert.ok(fresh.every((c) => c.StartTime > expired - 30 && c.ExpiredTime > expired), 'a new credential');
  assert.ok(fresh.every((c) => c.TmpSecretId !== first.TmpSecretId));
  assert.equal(Buffer.from(await page.evaluate(() => window.demo.read('users/alice/second.txt')), 'base64').toString(), 'after expiry\n');
  await page.screenshot({ path: path.join(shots, 'webapp-refreshed.png'), fullPage: true });

  // ---- Origin D is not listed: the browser refuses the page the credential answer.
  const other = await newPage();
  await other.goto(`${originD}/`);
  await other.evaluate(([jwt]) => window.demo.signIn(jwt, 'alice'), [facts.sample_jwt]);
  await other.setInputFiles('#file', { name: 'photo.bin', mimeType: 'application/octet-stream', buffer: bytes });
  await other.click('#upload');
  await other.waitForSelector('#status.error');
  assert.equal(await other.textContent('#status'), 'Upload failed: Failed to fetch');
  await waitFor('the CORS refusal in the console', () => cosRefusals.length > 0, 5_000);
  assert.match(cosRefusals[0], new RegExp(`from origin '${originD}' has been blocked by CORS policy`));
  await other.screenshot({ path: path.join(shots, 'webapp-cors-refused.png'), fullPage: true });

  assert.deepEqual(errors, [], 'no other console errors');
});
