// Swagger UI's authorizationCode (PKCE) flow in Debian's Chromium, as a person would use it:
// /docs -> Authorize -> the authorizationCode section (client_id prefilled by initOAuth)
// -> tick the scopes -> its Authorize opens a popup on our /signin page -> email, password,
// "Sign in" -> the popup lands on /docs/oauth2-redirect.html and closes (the built-in docs
// client is first-party: no consent) -> the modal shows Logout for the scheme -> "Try it
// out" on GET /api/v1/users/{id} with `me` -> 200 with the email.
// Env: SIMPLE_API_URL, TEST_EMAIL, TEST_PASSWORD, SCREENSHOT (path of the PNG to save).
import assert from 'node:assert/strict';
import { launch, offline, tryGetMe } from './chromium.mjs';

const base = process.env.SIMPLE_API_URL;
const email = process.env.TEST_EMAIL;
const password = process.env.TEST_PASSWORD;
const screenshot = process.env.SCREENSHOT ?? 'swagger-ui-code.png';
const WANTED = ['openid', 'profile', 'email', 'offline_access'];

const browser = await launch();
try {
  // A context of its own: no cookies or stored authorization from the password-flow run.
  const context = await browser.newContext({ viewport: { width: 1280, height: 1600 } });
  const outside = await offline(context);
  const errors = [];
  const tokenRequests = [];
  const visited = []; // every navigation in the context (the popup's included), redirects too
  context.on('request', (request) => {
    if (request.url().startsWith(`${base}/api/v1/auth/token`)) tokenRequests.push(request.postData() ?? '');
    if (request.isNavigationRequest()) visited.push(request.url());
  });
  const page = await context.newPage();
  page.on('pageerror', (e) => errors.push(`docs: ${e.message}`));

  await page.goto(`${base}/docs`);
  await page.getByRole('button', { name: 'Authorize' }).first().click();
  const clientIdInput = page.locator('#client_id_authorizationCode');
  await clientIdInput.waitFor({ timeout: 10_000 });
  // The authorizationCode flow's own section of the modal (each flow has one; "Flow: ...").
  const section = page.locator('.auth-container')
    .filter({ has: page.locator('p.flow code', { hasText: /^authorizationCode\b/ }) });
  assert.equal(await section.count(), 1, 'one modal section holds the authorizationCode flow');
  assert.equal(await section.locator('#client_id_authorizationCode').count(), 1, 'its client_id field is in that section');
  const clientId = await clientIdInput.inputValue();
  assert.ok(clientId.length > 0, 'initOAuth prefills the client_id of the authorizationCode flow');
  console.log(`  ok  authorizationCode section, client_id prefilled (${clientId})`);

  // Tick the OpenID scopes it lists (all of them if it lists none of these).
  const boxes = section.locator('.scopes input[type="checkbox"]');
  const names = [];
  for (let i = 0; i < await boxes.count(); i += 1) names.push(await boxes.nth(i).getAttribute('data-value'));
  const ticked = names.filter((n) => WANTED.includes(n));
  if (ticked.length === 0) {
    await section.getByText('select all').click();
    ticked.push(...names);
  } else {
    // The checkbox inputs are hidden behind styled labels: click the labels.
    for (const n of ticked) {
      const box = section.locator(`.scopes input[type="checkbox"][data-value="${n}"]`);
      if (!(await box.isChecked())) await section.locator(`label[for="${await box.getAttribute('id')}"]`).click();
    }
  }
  for (const n of ticked) {
    assert.ok(await section.locator(`.scopes input[type="checkbox"][data-value="${n}"]`).isChecked(), `scope ${n} ticked`);
  }
  console.log(`  ok  scopes listed: ${names.join(' ')}; ticked: ${ticked.join(' ')}`);

  // Its Authorize opens a popup window on our sign-in page.
  const popupPromise = context.waitForEvent('page', { timeout: 10_000 });
  await section.locator('button', { hasText: /^Authorize$/ }).click();
  const popup = await popupPromise;
  popup.on('pageerror', (e) => errors.push(`popup: ${e.message}`));
  await popup.waitForURL((url) => url.pathname === '/signin', { timeout: 10_000 });
  const authorizeUrl = new URL(visited.find((u) => u.startsWith(`${base}/api/v1/auth/authorize?`)) ?? popup.url());
  console.log(`  ok  the popup opened our sign-in page: ${popup.url().split('?')[0]}`);
  await popup.getByLabel('Email').fill(email);
  await popup.getByLabel('Password').fill(password);
  const closed = popup.waitForEvent('close', { timeout: 15_000 });
  await popup.getByRole('button', { name: 'Sign in' }).click();
  await closed;
  console.log(`  ok  signed in; the popup went ${visited.map((u) => new URL(u).pathname).join(' -> ')} and closed`);
  const redirect = visited.map((u) => new URL(u)).find((u) => u.pathname.endsWith('oauth2-redirect.html'));
  assert.ok(redirect, `the popup came back to /docs/oauth2-redirect.html: ${visited.join(' , ')}`);
  assert.equal(`${redirect.origin}${redirect.pathname}`, `${base}/docs/oauth2-redirect.html`);
  assert.ok(redirect.searchParams.get('code') && redirect.searchParams.get('state') && redirect.searchParams.get('iss') === base,
    `code, state, iss on the redirect: ${redirect.search}`);
  console.log('  ok  back to /docs/oauth2-redirect.html with code, state, iss');

  // The modal: the authorizationCode section now offers Logout (the scheme is authorized).
  await section.locator('button', { hasText: /^Logout$/ }).waitFor({ timeout: 10_000 });
  const exchange = tokenRequests.map((b) => new URLSearchParams(b)).find((b) => b.get('grant_type') === 'authorization_code');
  assert.ok(exchange, `Swagger UI exchanged the code at the token endpoint: ${tokenRequests.join(' | ')}`);
  assert.ok(exchange.get('code_verifier') && exchange.get('client_id') === clientId, 'the exchange carried the PKCE code_verifier and the client_id');
  assert.equal(authorizeUrl.searchParams.get('code_challenge_method'), 'S256', `PKCE S256 in ${authorizeUrl}`);
  console.log('  ok  code exchanged with its PKCE code_verifier; the modal shows Logout for oauth2');
  await page.locator('.modal-ux .close-modal').click();

  const { status, body, curl } = await tryGetMe(page);
  await page.screenshot({ path: screenshot, fullPage: false });
  assert.equal(status, '200', `Try it out answered ${status}: ${body.slice(0, 300)}`);
  assert.ok(body.includes(email), `the response does not show ${email}: ${body.slice(0, 300)}`);
  assert.ok(/Authorization: Bearer /i.test(curl), `the request carried the bearer token: ${curl.slice(0, 300)}`);
  assert.deepEqual(outside, [], 'Swagger UI or the sign-in page tried to load something from other hosts');
  assert.deepEqual(errors, [], 'page errors');
  console.log(`swagger-ui: authorizationCode + PKCE sign-in in a popup, then Try it out OK (screenshot: ${screenshot})`);
} finally {
  await browser.close();
}
