// Second factors in Debian's Chromium with the DevTools WebAuthn virtual authenticator
// (a CTAP2 platform authenticator with resident keys and user verification), on the
// hosted pages of a server whose PUBLIC_URL is http://localhost:PORT (WebAuthn needs a
// host name; localhost is a secure context):
//   1. sign in with the password; /account: set up an authenticator app (QR code, the
//      code computed here as an app would), see the recovery codes, add a passkey;
//   2. sign out; an authorization code flow of a first-party public client with "Sign in
//      with a passkey" (no email, no password): its ID token's amr says hwk;
//   3. sign out; password, then the passkey as the second factor ("Use a passkey");
//   4. sign out; password, then the authenticator app's code.
// Screenshots (desktop and phone) of each page into SCREENSHOTS/<viewport>/ (and of the
// desktop card alone into SCREENSHOTS/cards/, as tests/browser/screenshots/ has them), with the
// checks pages.mjs makes (an <h1>, no inline script, labelled inputs, fits, security
// headers). Env: SIMPLE_API_URL (http://localhost:PORT), CLIENT_ID (first-party, public,
// scope openid, redirect REDIRECT_URI), REDIRECT_URI, SCREENSHOTS, STORE (a label).
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { launch, offline } from './chromium.mjs';
import { base32Decode, consoleErrorsOf, inspect, pkcePair, relyingParty, totp, viewports } from './pages_common.mjs';

const base = process.env.SIMPLE_API_URL;
const clientId = process.env.CLIENT_ID;
const redirectUri = process.env.REDIRECT_URI;
const shots = process.env.SCREENSHOTS ?? 'screenshots';
const store = process.env.STORE ?? 'file';
const password = 'browser-password-1';
// Node's fetch goes to the same server by IP (localhost may resolve to ::1 first).
const api = base.replace('//localhost', '//127.0.0.1');
let checks = 0;

function ok(what) {
  checks += 1;
  console.log(`  ok  ${what}`);
}


function payload(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());
}

/** Clicks `button` and waits for the navigation it causes: its response. */
async function submitWith(page, button) {
  const navigation = page.waitForNavigation();
  await button.click();
  return navigation;
}

/** pages_common's checks and screenshot, plus (desktop) the card alone into
 *  SCREENSHOTS/cards/, the size the README shows. */
async function check(page, name, viewport, response, consoleErrors) {
  ok(await inspect(page, name, viewport, response, consoleErrors, shots));
  if (viewport === 'desktop') {
    mkdirSync(join(shots, 'cards'), { recursive: true });
    await page.locator('main.card').screenshot({ path: join(shots, 'cards', `${name}.png`) });
  }
}

async function signOut(page) {
  await page.goto(`${base}/api/v1/auth/logout`);
  await submitWith(page, page.getByRole('button', { name: 'Sign out' }));
}

const browser = await launch();
const rp = await relyingParty(redirectUri);
const { callbacks } = rp;
try {
  for (const [viewport, options] of Object.entries(viewports)) {
    console.log(`- ${store} store, ${viewport}`);
    mkdirSync(join(shots, viewport), { recursive: true });
    const email = `passkeys-${store}-${viewport}-${Date.now()}@example.com`;
    const signup = await fetch(`${api}/api/v1/users`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email, password }),
    });
    assert.equal(signup.status, 201, `sign up: ${await signup.text()}`);

    const context = await browser.newContext(options);
    const outside = await offline(context, (url) => url.origin === base || url.href.startsWith(redirectUri));
    const page = await context.newPage();
    const consoleErrors = consoleErrorsOf(page);
    // The virtual authenticator: a platform passkey provider that verifies its user.
    const cdp = await context.newCDPSession(page);
    await cdp.send('WebAuthn.enable', { enableUI: false });
    const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: {
        protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true,
        isUserVerified: true, automaticPresenceSimulation: true,
      },
    });

    // 1. Password sign-in, then the account page.
    await page.goto(`${base}/signin`);
    await page.getByLabel('Email').fill(email);
    await page.getByLabel('Password').fill(password);
    await submitWith(page, page.getByRole('button', { name: 'Sign in', exact: true }));
    await page.getByRole('link', { name: 'Manage how you sign in' }).click();
    await page.waitForURL((u) => u.pathname === '/account');
    let response = await page.reload();
    await check(page, 'account', viewport, response, consoleErrors);

    // An authenticator app: QR code and key, then a code computed from the key.
    await page.locator('#totp-password').fill(password);
    response = await submitWith(page, page.getByRole('button', { name: 'Set up an authenticator app' }));
    assert.equal(response.status(), 200, 'TOTP setup page');
    assert.equal(await page.locator('.qr svg').count(), 1, 'a QR code');
    await check(page, 'totp-setup', viewport, response, consoleErrors);
    const secret = base32Decode((await page.locator('p.fine code').innerText()).trim());
    await page.getByLabel('Then enter the 6-digit code it shows').fill(totp(secret, Math.floor(Date.now() / 30000)));
    response = await submitWith(page, page.getByRole('button', { name: 'Turn on' }));
    assert.equal(await page.locator('ul.codes li').count(), 10, 'ten recovery codes shown once');
    await check(page, 'recovery-codes', viewport, response, consoleErrors);
    await page.getByRole('link', { name: 'Done' }).click();
    await page.waitForURL((u) => u.pathname === '/account');

    // A passkey: name and password, then the browser creates it.
    await page.getByLabel('Name').fill('This laptop');
    await page.locator('#pk-password').fill(password);
    response = await submitWith(page, page.getByRole('button', { name: 'Add a passkey' }));
    const create = page.getByRole('button', { name: 'Create the passkey' });
    await create.waitFor();
    await check(page, 'passkey-create', viewport, response, consoleErrors);
    response = await submitWith(page, create);
    assert.equal(response.status(), 200, `passkey added: ${await page.locator('body').innerText()}`);
    await page.getByText('The passkey is added.').waitFor();
    assert.ok((await page.locator('ul.keys').innerText()).includes('This laptop'), 'the passkey is listed');
    await check(page, 'account-enrolled', viewport, response, consoleErrors);
    const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
    assert.equal(credentials.length, 1, 'the authenticator holds one credential');
    assert.equal(credentials[0].isResidentCredential, true, 'a discoverable credential (passkey)');
    assert.equal(credentials[0].rpId, new URL(base).hostname, 'for RP id = PUBLIC_URL host');
    ok(`${viewport}: authenticator app and passkey set up on /account (rpId ${credentials[0].rpId}, discoverable)`);

    // 2. Signed out: "Sign in with a passkey" in an authorization code flow.
    await signOut(page);
    const { verifier, challenge } = await pkcePair();
    const authorize = `${base}/api/v1/auth/authorize?${new URLSearchParams({
      response_type: 'code', client_id: clientId, redirect_uri: redirectUri, scope: 'openid',
      state: 's', nonce: 'n', code_challenge: challenge, code_challenge_method: 'S256',
    })}`;
    response = await page.goto(authorize);
    assert.equal(new URL(page.url()).pathname, '/signin');
    const withPasskey = page.getByRole('button', { name: 'Sign in with a passkey' });
    await withPasskey.waitFor();
    await check(page, 'signin-passkey', viewport, response, consoleErrors);
    const before = callbacks.length;
    await withPasskey.click();
    await page.waitForURL((u) => u.href.startsWith(redirectUri), { timeout: 10_000 });
    assert.equal(callbacks.length, before + 1);
    const code = callbacks.at(-1).searchParams.get('code');
    const exchanged = await fetch(`${api}/api/v1/auth/token`, {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier, client_id: clientId,
      }),
    });
    const tokens = await exchanged.json();
    assert.equal(exchanged.status, 200, JSON.stringify(tokens));
    const id = payload(tokens.id_token);
    assert.ok(id.amr.includes('hwk') && id.amr.includes('user') && !id.amr.includes('pwd'), `amr: ${id.amr}`);
    assert.equal(id.acr, 'mfa');
    ok(`${viewport}: "Sign in with a passkey" -> code -> ID token amr ${JSON.stringify(id.amr)}, acr ${id.acr}`);

    // 3. Signed out: the password, then the passkey as the second factor.
    await signOut(page);
    await page.goto(`${base}/signin`);
    await page.getByLabel('Email').fill(email);
    await page.getByLabel('Password').fill(password);
    response = await submitWith(page, page.getByRole('button', { name: 'Sign in', exact: true }));
    const usePasskey = page.getByRole('button', { name: 'Use a passkey' });
    await usePasskey.waitFor();
    assert.equal(await page.getByLabel('Authentication code').count(), 1, 'the code field too (TOTP is on)');
    await check(page, 'mfa-passkey', viewport, response, consoleErrors);
    response = await submitWith(page, usePasskey);
    await page.getByText('You are signed in as').waitFor();
    const sso = (await context.cookies(base)).find((c) => c.name === 'simple_api_sso');
    assert.deepEqual(payload(sso.value).amr, ['pwd', 'hwk', 'user', 'mfa']);
    ok(`${viewport}: password, then "Use a passkey" -> signed in, amr pwd+hwk+user+mfa`);

    // 4. Signed out: the password, then the authenticator app's code (computed here).
    await signOut(page);
    await page.goto(`${base}/signin`);
    await page.getByLabel('Email').fill(email);
    await page.getByLabel('Password').fill(password);
    await submitWith(page, page.getByRole('button', { name: 'Sign in', exact: true }));
    // The next step's code: the one confirming the enrolment may be this step's.
    await page.getByLabel('Authentication code').fill(totp(secret, Math.floor(Date.now() / 30000) + 1));
    await submitWith(page, page.getByRole('button', { name: 'Verify' }));
    await page.getByText('You are signed in as').waitFor();
    const withCode = (await context.cookies(base)).find((c) => c.name === 'simple_api_sso');
    assert.deepEqual(payload(withCode.value).amr, ['pwd', 'otp', 'mfa']);
    ok(`${viewport}: password, then the authenticator app's code -> signed in, amr pwd+otp+mfa`);
    assert.deepEqual(outside, [], 'nothing loaded from other hosts');
    await context.close();
  }
  console.log(`second factors in Chromium (${store} store): ${checks} checks passed`);
} finally {
  await browser.close();
  rp.close();
}
