// The admin pages in real headless Chromium against the real `stsgate dev` binary.
//
// An admin signs in, creates an app with keys and JWT settings, writes a policy (meeting a
// validation error on the way) and checks the preview; a JWT for that app gets credentials
// through the public API; an auditor signs in, finds that issuance in the log by subject,
// downloads the CSV, and is refused an edit page. Screenshots go to target/screenshots/.
//
// Needs what support.mjs says.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { jwt as signJwt, launchChromium, shots, signIn, startDev, waitFor } from './support.mjs';

const APP = 'e2e-photos';
const SUBJECT = 'e2e-user';
const HS_SECRET = crypto.randomBytes(30).toString('base64url');
const ISSUER = 'https://idp.e2e.test';
const AUDIENCE = 'e2e-mobile';
const AUDITOR = 'e2e-auditor';
const AUDITOR_PASSWORD = 'auditor-' + crypto.randomBytes(9).toString('base64url');

const jwt = (claims, secret = HS_SECRET) => signJwt(claims, secret);

test('admin and auditor pages in headless Chromium', { timeout: 300_000 }, async (t) => {
  const dev = await startDev();
  t.after(dev.stop);
  const { facts } = dev;
  const admin = facts.admin_url;
  const context = await launchChromium(t, { acceptDownloads: true });
  const errors = [];
  const newPage = async () => {
    const page = await context.newPage();
    // A CSP violation or a script error would show up here.
    // (Refused loads are expected: the 422 form, the auditor's 403s.)
    page.on('console', (m) => {
      if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text());
    });
    page.on('pageerror', (e) => errors.push(String(e)));
    return page;
  };

  // ---- The admin: sign in, create the app with its keys.
  const page = await newPage();
  await signIn(page, admin, facts.admin_user, facts.admin_password);
  assert.match(await page.textContent('h1'), /Dashboard/);

  await page.click('text=Apps');
  await page.click('text=New app');
  await page.fill('input[name=slug]', APP);
  await page.fill('input[name=name]', 'E2E photos');
  await page.fill('input[name=region]', facts.region);
  await page.fill('input[name=bucket]', facts.bucket);
  await page.check('input[name=mode][value=federation_token]');
  await page.fill('input[name=secret_id]', facts.emulator_secret_id);
  await page.fill('input[name=secret_key]', facts.emulator_secret_key);
  await page.fill('input[name=sts_endpoint]', `${facts.emulator_url}/`);
  await page.fill('input[name=duration_default]', '900');
  await page.fill('input[name=duration_max]', '3600');
  await page.fill('input[name=rate_subject_per_minute]', '60');
  await page.fill('input[name=rate_app_per_second]', '100');
  await Promise.all([page.waitForURL(`${admin}/apps/${APP}?notice=created`), page.click('button:has-text("Create app")')]);
  let body = await page.textContent('main');
  assert.match(body, /Created\./);
  assert.ok(!body.includes(facts.emulator_secret_key), 'the SecretKey is never shown');
  assert.ok(!body.includes(facts.emulator_secret_id), 'the SecretId is masked');

  // ---- JWT settings: HS256 with a secret, issuer and audience.
  await page.click('text=JWT settings');
  await page.fill('input[name=issuer]', ISSUER);
  await page.fill('textarea[name=audiences]', AUDIENCE);
  await page.uncheck('input[name=algorithms][value=RS256]');
  await page.check('input[name=algorithms][value=HS256]');
  await page.fill('input[name=hs_secret]', HS_SECRET);
  await page.fill('input[name=user_claim]', 'sub');
  await page.fill('input[name=leeway_seconds]', '30');
  await Promise.all([page.waitForURL(`${admin}/apps/${APP}?notice=saved`), page.click('button:has-text("Save JWT settings")')]);
  body = await page.textContent('main');
  assert.match(body, /HS secret stored/);
  assert.ok(!body.includes(HS_SECRET));

  // ---- The policy: upload and read in the user's prefix, plus listing it.
  await page.click('text=Policy editor');
  for (const a of ['PostObject', 'HeadObject', 'InitiateMultipartUpload', 'UploadPart',
    'CompleteMultipartUpload', 'AbortMultipartUpload', 'ListParts']) {
    await page.uncheck(`input[name=st0_actions][value="name/cos:${a}"]`);
  }
  await page.check('input[name=st0_actions][value="name/cos:PutObject"]');
  await page.check('input[name=st0_actions][value="name/cos:GetObject"]');
  // A mistake first: a variable not followed by `/`.
  await page.fill('textarea[name=st0_resources]', 'users/${sub}*');
  await page.fill('textarea[name=st0_conditions]', '{"numeric_less_than_equal": {"cos:content-length": 10485760}}');
  await page.click('button:has-text("Add statement")');
  await page.waitForSelector('#st-1');
  await page.check('input[name=st1_actions][value="name/cos:GetBucket"]');
  await page.fill('textarea[name=st1_resources]', '/');
  await page.fill('textarea[name=st1_conditions]', '{"string_like": {"cos:prefix": "users/${sub}/*"}}');
  await page.fill('input[name=note]', 'e2e: put/get own prefix, list it');
  await page.click('#save-policy');
  await page.waitForSelector('.alert');
  const fieldError = await page.textContent('#st-0 .field-error');
  assert.match(fieldError, /line 1 “users\/\$\{sub\}\*”: put a \/ right after \$\{sub\}/);
  assert.equal(await page.inputValue('textarea[name=st1_resources]'), '/', 'the draft is kept');
  await page.fill('textarea[name=st0_resources]', 'users/${sub}/*');

  // The preview: a hostile subject is refused with its reason, a real JWT renders.
  await page.fill('#preview-input', '{"sub": "../alice"}');
  await page.waitForSelector('#preview-refusal');
  assert.match(await page.textContent('#preview-refusal'), /refused with 403.*\$\{sub_hash\}/s);
  const userJwt = jwt({ sub: SUBJECT, iss: ISSUER, aud: AUDIENCE, iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + 600 });
  await page.fill('#preview-input', userJwt);
  await page.waitForFunction(() => document.querySelector('#preview-policy')?.textContent.includes('users/e2e-user/*'));
  const preview = await page.textContent('#preview-result');
  assert.match(preview, /NOT verified/);
  assert.match(preview, /qcs::cos:ap-guangzhou:uid\/1250000000:examplebucket-1250000000\/users\/e2e-user\/\*/);
  assert.match(preview, /cos:content-length/);
  await Promise.all([page.waitForURL(`${admin}/apps/${APP}/policy?notice=policy_saved`), page.click('#save-policy')]);
  assert.match(await page.textContent('main'), /Active version: v1/);
  // The saved policy, previewed once more for the screenshot.
  await page.fill('#preview-input', userJwt);
  await page.waitForFunction(() => document.querySelector('#preview-policy')?.textContent.includes('users/e2e-user/*'));
  await page.screenshot({ path: path.join(shots, 'policy-editor.png') });

  // ---- The public API gives this app's users credentials for their own prefix.
  const res = await fetch(`${facts.api_url}/v1/apps/${APP}/credentials`, { headers: { Authorization: `Bearer ${userJwt}` } });
  const creds = await res.json();
  assert.equal(res.status, 200, JSON.stringify(creds));
  assert.equal(creds.prefix, `users/${SUBJECT}/`);
  const tmpSecretId = creds.credentials.tmpSecretId;
  assert.ok(tmpSecretId);

  // Screenshots at both widths; at 390 px no page scrolls sideways.
  const noSideScroll = async (p, what) => {
    const { scroll, inner } = await p.evaluate(() => ({
      scroll: document.documentElement.scrollWidth, inner: window.innerWidth,
    }));
    assert.ok(scroll <= inner, `${what}: the page scrolls sideways at ${inner} px (${scroll} px wide)`);
  };
  const both = async (p, url, name) => {
    await p.setViewportSize({ width: 1400, height: 1000 });
    await p.goto(url);
    await p.screenshot({ path: path.join(shots, `${name}-1400.png`), fullPage: true });
    await p.setViewportSize({ width: 390, height: 844 });
    await p.goto(url);
    await noSideScroll(p, url);
    await p.screenshot({ path: path.join(shots, `${name}-390.png`), fullPage: true });
    await p.setViewportSize({ width: 1400, height: 1000 });
  };

  // ---- Item 1: a grant beyond the home prefix is refused unless marked shared, with a reason.
  await page.goto(`${admin}/apps/${APP}/policy`);
  await page.click('button:has-text("Add statement")');
  await page.waitForSelector('#st-2');
  await page.check('input[name=st2_actions][value="name/cos:GetObject"]');
  await page.fill('textarea[name=st2_resources]', '*');
  // Item 5: the field is marked while typing, before any Save.
  await page.waitForSelector('#st-2 textarea[name=st2_resources].invalid + .field-error');
  assert.match(await page.textContent('#st-2 .field-error'), /outside the user's home prefix users\/\$\{sub\}\//);
  await page.click('#save-policy');
  await page.waitForSelector('.alert');
  assert.match(await page.textContent('#st-2'), /mark the statement as shared by every user/);
  await page.screenshot({ path: path.join(shots, 'item1-refused-1400.png'), fullPage: true });
  await page.check('input[name=st2_shared]');
  await page.fill('input[name=st2_shared_reason]', 'e2e: a public catalogue every user reads');
  await page.fill('#preview-input', `{"sub": "${SUBJECT}"}`);
  await page.waitForSelector('#preview-shared');
  assert.match(await page.textContent('#preview-shared'), /Statement 3 is shared by every user: e2e: a public catalogue/);
  await page.screenshot({ path: path.join(shots, 'item1-preview-shared-1400.png'), fullPage: true });
  await Promise.all([page.waitForURL(`${admin}/apps/${APP}/policy?notice=policy_saved`), page.click('#save-policy')]);
  await both(page, `${admin}/apps/${APP}/policy/versions`, 'item1-versions');
  assert.match(await page.textContent('table.versions'), /Statement 3 is shared by every user: e2e: a public catalogue/);
  await both(page, `${admin}/apps/${APP}/policy`, 'item1-policy-editor');

  // JWT settings with public keys need an issuer and an audience: errors on those fields.
  await page.goto(`${admin}/apps/${APP}/jwt`);
  await page.fill('input[name=issuer]', '');
  await page.fill('textarea[name=audiences]', '');
  await page.check('input[name=algorithms][value=RS256]');
  await page.click('button:has-text("Save JWT settings")');
  await page.waitForSelector('.alert');
  const claimsBox = await page.textContent('fieldset:has(legend:has-text("Claims"))');
  assert.match(claimsBox, /the identity provider's issuer/);
  assert.match(claimsBox, /at least one audience/);
  assert.match(await page.textContent('fieldset:has(legend:has-text("Allowed algorithms"))'), /RS256 is allowed.*untick it/s);
  await page.screenshot({ path: path.join(shots, 'item1-jwt-errors-1400.png'), fullPage: true });

  // ---- Item 8: the integration card and the token test (the real verifier: a bad signature fails).
  await both(page, `${admin}/apps/${APP}`, 'item8-app-integration');
  const card = await page.textContent('#integration');
  assert.ok(card.includes(`${facts.api_url}/v1/apps/${APP}/credentials`), card);
  assert.match(card, new RegExp(`iss: exactly ${ISSUER.replace(/[.]/g, '\\.')}`));
  assert.match(card, /cos-js-sdk-v5/);
  assert.match(card, /CosS3Client/);
  assert.equal(await page.locator('button.copy[data-copy="int-curl"]').isVisible(), true, 'the script shows the copy buttons');
  await page.goto(`${admin}/apps/${APP}/jwt`);
  await page.fill('textarea[name=token]', userJwt);
  await Promise.all([page.waitForLoadState(), page.click('button:has-text("Test this token")')]);
  assert.match(await page.textContent('#token-verdict'), /This token would get credentials/);
  assert.equal(await page.inputValue('textarea[name=token]'), '', 'the token is not shown again');
  const forged = jwt({ sub: SUBJECT, iss: ISSUER, aud: AUDIENCE, exp: Math.floor(Date.now() / 1000) + 600 }, 'a-different-secret-of-enough-length-0123');
  await page.fill('textarea[name=token]', forged);
  await Promise.all([page.waitForLoadState(), page.click('button:has-text("Test this token")')]);
  assert.match(await page.textContent('#token-verdict'), /refused: 401 invalid_token:bad_signature/);
  await page.screenshot({ path: path.join(shots, 'item8-token-test-1400.png'), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await noSideScroll(page, 'token test');
  await page.screenshot({ path: path.join(shots, 'item8-token-test-390.png'), fullPage: true });
  await page.setViewportSize({ width: 1400, height: 1000 });

  // ---- Item 10: bugs. Blocking again keeps the reason; subjects are exact, spaces shown.
  await page.goto(`${admin}/apps/${APP}/blocks`);
  await page.fill('form[action$="/blocks/confirm"] input[name=subject]', ' mallory ');
  await page.fill('form[action$="/blocks/confirm"] input[name=reason]', 'abuse');
  await Promise.all([page.waitForURL(/\/blocks\/confirm\?/), page.click('button:has-text("Block…")')]);
  assert.match(await page.textContent('.confirm'), /␣mallory␣/);
  await page.screenshot({ path: path.join(shots, 'item10-confirm-block-1400.png'), fullPage: true });
  await Promise.all([page.waitForURL(/notice=blocked/), page.click('button:has-text("Block this subject")')]);
  await page.goto(`${admin}/apps/${APP}/blocks/confirm?subject=+mallory+`);
  assert.match(await page.textContent('.confirm'), /already blocked.*its reason is kept/s);
  await Promise.all([page.waitForURL(/notice=already_blocked/), page.click('button:has-text("Block this subject")')]);
  assert.match(await page.textContent('table.data'), /abuse/);
  await both(page, `${admin}/apps/${APP}/blocks?notice=already_blocked`, 'item10-blocks');

  // The change log records the version that became active, in words.
  await page.goto(`${admin}/changes?action=template.save`);
  assert.match(await page.textContent('table.data tbody tr'), /Policy saved.*active_version\s*1\s*→\s*2/s);
  await both(page, `${admin}/changes`, 'item10-changes');

  // The diff is single-spaced: one rendered line per line.
  await page.goto(`${admin}/apps/${APP}/policy/diff?from=1&to=2`);
  const diff = await page.evaluate(() => {
    const pre = document.querySelector('pre.diff');
    return { spans: pre.querySelectorAll('span').length, lines: pre.innerText.replace(/\n$/, '').split('\n').length };
  });
  assert.equal(diff.lines, diff.spans, 'no blank line between diff lines');
  await both(page, `${admin}/apps/${APP}/policy/diff?from=1&to=2`, 'item10-diff');

  // The dashboard's _unknown "log" link shows its filter.
  await fetch(`${facts.api_url}/v1/apps/no-such-app/credentials`, { headers: { Authorization: `Bearer ${userJwt}` } });
  await waitFor('the _unknown row on the dashboard', async () => {
    await page.goto(`${admin}/?window=1h`);
    return (await page.locator('tr:has(code:has-text("_unknown"))').count()) > 0;
  }, 15_000);
  await Promise.all([page.waitForURL(/\/log\?app=_unknown/), page.click('tr:has(code:has-text("_unknown")) a:has-text("log")')]);
  assert.equal(await page.inputValue('select[name=app]'), '_unknown');
  assert.match(await page.textContent('#log-count'), /1 matching request/);
  await both(page, `${admin}/log?app=_unknown`, 'item10-log-unknown');

  // ---- Item 2: every page at 390 px: a folded menu, no sideways scrolling.
  await both(page, `${admin}/`, 'item2-dashboard');
  await both(page, `${admin}/log`, 'item2-log');
  for (const p of ['/apps', '/apps/_new', `/apps/${APP}/edit`, `/apps/${APP}/jwt`, `/apps/${APP}/policy/try`,
    `/apps/${APP}/blocks/remove?subject_b64=IG1hbGxvcnkg`, '/users', '/users/1/password', '/account']) {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(`${admin}${p}`);
    await noSideScroll(page, p);
  }
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${admin}/`);
  const header = await page.evaluate(() => document.querySelector('header.topbar').getBoundingClientRect().height);
  assert.ok(header <= 64, `the phone header is ${header} px tall`);
  assert.equal(await page.locator('nav[aria-label=Main] a:has-text("Apps")').isVisible(), false, 'folded');
  await page.click('summary:has-text("Menu")');
  assert.equal(await page.locator('nav[aria-label=Main] a:has-text("Apps")').isVisible(), true, 'unfolds without a script');
  await page.screenshot({ path: path.join(shots, 'item2-menu-open-390.png') });
  await page.setViewportSize({ width: 1400, height: 1000 });

  // ---- The admin creates an auditor, then signs out.
  await page.click('nav >> text=Users');
  await page.fill('form[action="/users"] input[name=username]', AUDITOR);
  await page.selectOption('form[action="/users"] select[name=role]', 'auditor');
  await page.fill('form[action="/users"] input[name=password]', AUDITOR_PASSWORD);
  await Promise.all([page.waitForURL(`${admin}/users?notice=user_created`), page.click('button:has-text("Create user")')]);
  assert.match(await page.textContent('main'), new RegExp(AUDITOR));
  await Promise.all([page.waitForURL(/\/login$/), page.click('button:has-text("Sign out")')]);

  // ---- The auditor: dashboard, then the log by subject, then the CSV.
  const auditor = await newPage();
  await signIn(auditor, admin, AUDITOR, AUDITOR_PASSWORD);
  const row = auditor.locator('table.data tbody tr', { hasText: APP });
  assert.match(await row.textContent(), /E2E photos/);
  assert.equal((await row.locator('td.num').first().textContent()).trim(), '1', 'one credential issued');
  assert.equal(await auditor.locator('nav >> text=Users').count(), 0, 'no user admin for auditors');
  await auditor.screenshot({ path: path.join(shots, 'dashboard.png') });

  await auditor.click('nav >> text=Issuance log');
  await auditor.fill('input[name=subject]', SUBJECT);
  await Promise.all([auditor.waitForURL(/\/log\?/), auditor.click('button:has-text("Search")')]);
  const found = await auditor.textContent('table.log tbody');
  assert.ok(found.includes(tmpSecretId), 'the issuance is in the log');
  assert.match(found, /issued/);
  await auditor.screenshot({ path: path.join(shots, 'log.png') });
  const [download] = await Promise.all([auditor.waitForEvent('download'), auditor.click('text=Export CSV')]);
  const csvPath = path.join(dev.dir, 'export.csv');
  await download.saveAs(csvPath);
  const csv = fs.readFileSync(csvPath, 'utf8');
  const lines = csv.trim().split(/\r?\n/);
  assert.match(lines[0], /^"id","at","app","subject","outcome",/); // every cell quoted
  assert.equal(lines.length, 2, csv);
  assert.ok(lines[1].includes(tmpSecretId) && lines[1].includes(`,"${APP}","${SUBJECT}","issued",`), lines[1]);
  for (const secret of [creds.credentials.tmpSecretKey, creds.credentials.sessionToken, userJwt, HS_SECRET,
    facts.emulator_secret_key]) {
    assert.ok(!csv.includes(secret), 'no secret in the export');
  }

  // ---- The auditor cannot open an edit page (the server refuses, whatever the UI shows).
  for (const p of [`/apps/${APP}/edit`, `/apps/${APP}/policy`, `/apps/${APP}/jwt`]) {
    const resp = await auditor.goto(`${admin}${p}`);
    assert.equal(resp.status(), 403, p);
    assert.match(await auditor.textContent('main'), /can only read/);
  }
  // /users explains itself to an auditor instead of sending them to an admin.
  const usersResp = await auditor.goto(`${admin}/users`);
  assert.equal(usersResp.status(), 200);
  assert.doesNotMatch(await auditor.textContent('main'), /Ask an admin/);
  // Auditors may try the active policy (read-only preview).
  await auditor.goto(`${admin}/apps/${APP}/policy/try`);
  await auditor.fill('textarea[name=preview_input]', `{"sub": "${SUBJECT}"}`);
  await Promise.all([auditor.waitForLoadState(), auditor.click('button:has-text("Preview")')]);
  assert.match(await auditor.textContent('.preview-panel'), new RegExp(`users/${SUBJECT}/`));
  const appPage = await auditor.goto(`${admin}/apps/${APP}`);
  assert.equal(appPage.status(), 200);
  assert.equal(await auditor.locator('text=Edit settings').count(), 0);

  assert.deepEqual(errors, [], 'no console errors (CSP violations, script errors)');
});
