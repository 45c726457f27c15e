// The hosted sign-in pages in Debian's Chromium, at a desktop (1280x800) and a phone
// (390x844) viewport: screenshots of each into SCREENSHOTS/<viewport>/ (signin.png with
// login_hint prefilled, signin-error.png after a wrong password, consent.png, logout.png,
// signed-out.png, error.png for an unknown client, mfa.png: the second step of a person with
// a TOTP authenticator, who then signs in with a computed code), and on every page: an <h1>, no inline
// script (no <script> without src, no on* attributes, no CSP violation or page error), every
// visible input labelled, no sideways scrolling; on /signin the response headers
// Content-Security-Policy (frame-ancestors 'none', no 'unsafe-inline' script),
// X-Frame-Options DENY, Referrer-Policy no-referrer, Cache-Control no-store.
// The client's callback (REDIRECT_URI's loopback port) is answered by a small HTTP server here.
// Env: SIMPLE_API_URL, CLIENT_ID (a third-party client registered with --redirect-uri
// REDIRECT_URI), CLIENT_NAME, REDIRECT_URI, SCREENSHOTS (directory).
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { launch, offline } from './chromium.mjs';
import { base32Decode, consoleErrorsOf, inspect, pkcePair, relyingParty, totp, viewports } from './pages_common.mjs';

const base = process.env.SIMPLE_API_URL;
const clientId = process.env.CLIENT_ID;
const clientName = process.env.CLIENT_NAME;
const redirectUri = process.env.REDIRECT_URI;
const shots = process.env.SCREENSHOTS ?? 'screenshots';
const password = 'browser-password-1';
let checks = 0;

function ok(what) {
  checks += 1;
  console.log(`  ok  ${what}`);
}

/** base64url SHA-256 of a random verifier: a real S256 challenge. */
async function challenge() {
  return (await pkcePair()).challenge;
}

async function authorizeUrl(id, hint, extra = {}) {
  return `${base}/api/v1/auth/authorize?${new URLSearchParams({
    response_type: 'code', client_id: id, redirect_uri: redirectUri, scope: 'openid profile email offline_access',
    state: 'state-123', nonce: 'nonce-456', code_challenge: await challenge(), code_challenge_method: 'S256',
    login_hint: hint, ...extra,
  })}`;
}

/** The answer's status, else an error showing the page and what the browser sent. */
async function expectStatus(page, response, status, what) {
  if (response.status() === status) return;
  const request = response.request();
  const headers = await request.allHeaders();
  const text = (await page.locator('body').innerText().catch(() => '')).replace(/\s+/g, ' ').slice(0, 300);
  throw new Error(`${what}: ${request.method()} ${new URL(request.url()).pathname} answered ${response.status()}, not ${status}: "${text}"`
    + ` (the browser sent Origin: ${headers.origin ?? '(none)'})`);
}

const browser = await launch();
const rp = await relyingParty(redirectUri);
const { callbacks } = rp;
try {
  for (const [viewport, options] of Object.entries(viewports)) {
    console.log(`- ${viewport} (${options.viewport.width}x${options.viewport.height})`);
    mkdirSync(join(shots, viewport), { recursive: true });
    // A user of its own: consent is remembered per user and client.
    const email = `pages-${viewport}-${Date.now()}@example.com`;
    const signup = await fetch(`${base}/api/v1/users`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email, password }),
    });
    assert.equal(signup.status, 201, `sign up ${email}: ${await signup.text()}`);

    const context = await browser.newContext(options);
    const outside = await offline(context, (url) => url.origin === new URL(base).origin || url.href.startsWith(redirectUri));
    const page = await context.newPage();
    const consoleErrors = consoleErrorsOf(page);

    // error.png: an unknown client -> 400 error page (HTML for a browser), no redirect.
    let response = await page.goto(await authorizeUrl('no-such-client', email));
    await expectStatus(page, response, 400, 'unknown client');
    assert.equal(new URL(page.url()).pathname, '/api/v1/auth/authorize', 'unknown client: no redirect');
    assert.ok(await page.locator('.error').count() >= 1, 'the error page has class "error" on its message');
    ok(await inspect(page, 'error', viewport, response, consoleErrors, shots));

    // signin.png: authorize -> 303 /signin, the email prefilled from login_hint.
    response = await page.goto(await authorizeUrl(clientId, email));
    assert.equal(new URL(page.url()).pathname, '/signin', `authorize -> /signin (${page.url()})`);
    await expectStatus(page, response, 200, 'the sign-in page');
    assert.equal(await page.getByLabel('Email').inputValue(), email, 'login_hint prefills the Email field');
    assert.equal(await page.getByLabel('Password').getAttribute('type'), 'password');
    ok(await inspect(page, 'signin', viewport, response, consoleErrors, shots));

    // signin-error.png: a wrong password -> 401, the form again with an error message.
    await page.getByLabel('Password').fill('not-the-password');
    let navigation = page.waitForNavigation();
    await page.getByRole('button', { name: 'Sign in' }).click();
    response = await navigation;
    await expectStatus(page, response, 401, 'wrong password');
    assert.ok(await page.getByLabel('Password').count() === 1 && await page.getByRole('button', { name: 'Sign in' }).count() === 1,
      'wrong password: the form again');
    const message = page.locator('.error, [role="alert"]');
    assert.ok(await message.count() >= 1 && (await message.first().innerText()).trim(), 'wrong password: an error message (.error or role=alert)');
    ok(await inspect(page, 'signin-error', viewport, response, consoleErrors, shots));
    console.log(`      message: ${(await message.first().innerText()).trim()}`);

    // consent.png: the right password -> the consent page naming the client and the scopes.
    await page.getByLabel('Email').fill(email);
    await page.getByLabel('Password').fill(password);
    const consentResponse = page.waitForResponse((r) => new URL(r.url()).pathname === '/signin/consent' && r.request().method() === 'GET');
    await page.getByRole('button', { name: 'Sign in' }).click();
    response = await consentResponse;
    await page.waitForURL((u) => u.pathname === '/signin/consent');
    await page.waitForLoadState();
    const consentText = await page.locator('body').innerText();
    assert.ok(consentText.includes(clientName), `consent names the client ${clientName}: ${consentText}`);
    assert.ok(await page.getByRole('button', { name: 'Allow' }).count() === 1 && await page.getByRole('button', { name: 'Deny' }).count() === 1,
      'consent: Allow and Deny');
    ok(await inspect(page, 'consent', viewport, response, consoleErrors, shots));
    console.log(`      consent: ${consentText.replace(/\s+/g, ' ').slice(0, 300)}`);
    navigation = page.waitForURL((u) => u.href.startsWith(redirectUri)).catch((e) => {
      // e.g. a CSP form-action that does not allow the redirect after the form's POST
      throw new Error(`Allow did not take the browser to ${redirectUri}: ${e.message}; console: ${JSON.stringify(consoleErrors)}`
        + ' (Chromium applies the consent page\'s CSP form-action to the redirect that answers the POST: it must allow the client\'s redirect_uri)');
    });
    await page.getByRole('button', { name: 'Allow' }).click();
    await navigation;
    const cb = callbacks.at(-1);
    assert.ok(cb?.searchParams.get('code') && cb.searchParams.get('state') === 'state-123' && cb.searchParams.get('iss') === base,
      `Allow -> the client's redirect_uri with code, state, iss: ${cb}`);
    ok(`${viewport}: Allow -> ${cb.origin}${cb.pathname}?code=…&state=state-123&iss=${base}`);

    // logout.png: the confirmation page, with its "Sign out of every session" checkbox.
    response = await page.goto(`${base}/api/v1/auth/logout`);
    await expectStatus(page, response, 200, 'logout confirmation');
    const everywhere = page.getByLabel('Sign out of every session');
    assert.equal(await everywhere.getAttribute('type'), 'checkbox', 'a "Sign out of every session" checkbox');
    assert.equal(await everywhere.isChecked(), false, '"Sign out of every session" is not ticked by default');
    ok(await inspect(page, 'logout', viewport, response, consoleErrors, shots));

    // signed-out.png: Sign out -> the signed-out page (no post_logout_redirect_uri given).
    navigation = page.waitForNavigation();
    await page.getByRole('button', { name: 'Sign out' }).click();
    response = await navigation;
    await expectStatus(page, response, 200, 'Sign out');
    assert.ok(!(await context.cookies(base)).some((c) => c.name === 'simple_api_sso'), 'the SSO cookie is gone');
    ok(await inspect(page, 'signed-out', viewport, response, consoleErrors, shots));

    // Signed out for real: authorizing again asks for the password.
    await page.goto(await authorizeUrl(clientId, email));
    assert.equal(new URL(page.url()).pathname, '/signin', 'after signing out, authorize -> /signin again');
    assert.deepEqual(outside, [], 'the pages loaded nothing from other hosts');
    ok(`${viewport}: signed out (authorize asks for the password again), nothing loaded from other hosts`);

    // mfa.png: the same person with a TOTP authenticator (enrolled through the API, the
    // code computed here as an app would) signs in: password, then the code.
    const grant = await fetch(`${base}/api/v1/auth/token`, {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'password', username: email, password }),
    });
    const token = (await grant.json()).access_token;
    const auth = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    const begun = await (await fetch(`${base}/api/v1/users/me/mfa/totp`, {
      method: 'POST', headers: auth, body: JSON.stringify({ current_password: password }),
    })).json();
    const secret = base32Decode(begun.secret);
    const step = Math.floor(Date.now() / 30000);
    const confirm = await fetch(`${base}/api/v1/users/me/mfa/totp/confirm`, {
      method: 'POST', headers: auth, body: JSON.stringify({ code: totp(secret, step) }),
    });
    assert.equal(confirm.status, 200, `confirming the enrolment: ${await confirm.text()}`);
    await page.goto(await authorizeUrl(clientId, email));
    await page.getByLabel('Password').fill(password);
    navigation = page.waitForNavigation();
    await page.getByRole('button', { name: 'Sign in' }).click();
    response = await navigation;
    await expectStatus(page, response, 200, 'the second step');
    await page.getByRole('heading', { name: 'Two-step verification' }).waitFor();
    ok(await inspect(page, 'mfa', viewport, response, consoleErrors, shots));
    await page.getByLabel('Authentication code').fill(totp(secret, step + 1));
    const before = callbacks.length;
    await page.getByRole('button', { name: 'Verify' }).click();
    await page.waitForURL((url) => url.href.startsWith(redirectUri), { timeout: 10_000 });
    assert.equal(callbacks.length, before + 1, 'the client got its answer');
    assert.ok(callbacks.at(-1).searchParams.get('code'), 'a code after the second factor');
    ok(`${viewport}: password, then the TOTP code -> back to the client with a code`);
    await context.close();
  }
  console.log(`hosted pages: ${checks} checks passed (screenshots in ${shots})`);
} finally {
  await browser.close();
  rp.close();
}
