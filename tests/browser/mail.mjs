// Accounts by mail in Debian's Chromium, on a server without SMTP_URL (its messages are
// files in OUTBOX):
//   1. password reset: "Forgot your password?" on /signin, the address, then the message as
//      it arrived, rendered (its HTML part) and checked, then the code from its text part
//      on /signin/reset with a new password, then a sign-in with it;
//   2. sign-up and verification: "Create an account" on /signin, the hosted sign-up page,
//      signed in at once; the verification message rendered, its button followed to
//      /signin/verify (the code filled in, used only by the Confirm button); the account
//      page then says the address is confirmed.
// Screenshots (desktop) into SCREENSHOTS/desktop/ and SCREENSHOTS/cards/: forgot.png,
// reset.png, mail-password-reset.png, signup.png, verify.png, mail-verify-email.png.
// Env: SIMPLE_API_URL, OUTBOX, SCREENSHOTS.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { launch, offline } from './chromium.mjs';
import { consoleErrorsOf, inspect, viewports } from './pages_common.mjs';

const base = process.env.SIMPLE_API_URL;
const outbox = process.env.OUTBOX;
const shots = process.env.SCREENSHOTS ?? 'screenshots';
const api = base.replace('//localhost', '//127.0.0.1');
let checks = 0;

function ok(what) {
  checks += 1;
  console.log(`  ok  ${what}`);
}

/** The parts of a MIME message (as lettre writes them) by content type, decoded. */
function mimeParts(raw) {
  const boundary = raw.match(/boundary="?([^";\r\n]+)"?/)?.[1];
  assert.ok(boundary, 'a multipart message');
  const parts = {};
  for (const chunk of raw.split(`--${boundary}`).slice(1, -1)) {
    const [head, ...rest] = chunk.replace(/^\r?\n/, '').split(/\r?\n\r?\n/);
    const body = rest.join('\r\n\r\n');
    const type = head.match(/Content-Type:\s*([^;\r\n]+)/i)?.[1].trim();
    const encoding = (head.match(/Content-Transfer-Encoding:\s*(\S+)/i)?.[1] ?? '7bit').toLowerCase();
    let text = body;
    if (encoding === 'base64') text = Buffer.from(body.replace(/\s+/g, ''), 'base64').toString('utf8');
    if (encoding === 'quoted-printable') {
      text = Buffer.from(body.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/gi, (_, h) => String.fromCharCode(parseInt(h, 16))), 'latin1').toString('utf8');
    }
    parts[type] = text;
  }
  return parts;
}

/** The newest message to `to` that was not in `seen`, waiting up to 15 s. */
async function newMessage(to, seen) {
  for (let i = 0; i < 150; i += 1) {
    const names = existsSync(outbox) ? readdirSync(outbox) : [];
    const fresh = names.filter((n) => n.endsWith('.eml') && !seen.has(n)).sort().reverse();
    for (const name of fresh) {
      const raw = readFileSync(join(outbox, name), 'utf8');
      if (raw.includes(`To: ${to}`)) return raw;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no message to ${to} in ${outbox}`);
}

const browser = await launch();
try {
  const options = viewports.desktop;
  mkdirSync(join(shots, 'desktop'), { recursive: true });
  mkdirSync(join(shots, 'cards'), { recursive: true });
  const email = `reset-${Date.now()}@example.com`;
  const signup = await fetch(`${api}/api/v1/users`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email, password: 'old-password-1' }),
  });
  assert.equal(signup.status, 201, await signup.text());
  const context = await browser.newContext(options);
  const outside = await offline(context, (url) => url.origin === base);
  const page = await context.newPage();
  const consoleErrors = consoleErrorsOf(page);
  const card = async (name) => page.locator('main.card').screenshot({ path: join(shots, 'cards', `${name}.png`) });

  await page.goto(`${base}/signin`);
  let navigation = page.waitForNavigation();
  await page.getByRole('link', { name: 'Forgot your password?' }).click();
  let response = await navigation;
  ok(await inspect(page, 'forgot', 'desktop', response, consoleErrors, shots));
  await card('forgot');
  // (The outbox is made with the first message.)
  const seen = new Set(existsSync(outbox) ? readdirSync(outbox).filter((n) => n.endsWith('.eml')) : []);
  await page.getByLabel('Email').fill(email);
  navigation = page.waitForNavigation();
  await page.getByRole('button', { name: 'Send the code' }).click();
  response = await navigation;
  assert.equal(response.status(), 200);
  await page.getByText('a message with a code is on its way').waitFor();
  ok(await inspect(page, 'reset', 'desktop', response, consoleErrors, shots));
  await card('reset');

  // The message as it arrived: its HTML part in a page of its own, loading nothing.
  const raw = await newMessage(email, seen);
  const parts = mimeParts(raw);
  assert.ok(parts['text/plain'] && parts['text/html'], `text and HTML parts: ${Object.keys(parts)}`);
  const code = parts['text/plain'].split(/\r?\n/).map((l) => l.trim()).find((l) => /^[A-Z2-7]{26}$/.test(l));
  assert.ok(code, `the code alone on a line: ${parts['text/plain']}`);
  assert.ok(parts['text/html'].includes(code), 'the HTML part shows the code too');
  const mailPage = await context.newPage();
  await mailPage.setViewportSize({ width: 720, height: 640 });
  await mailPage.setContent(parts['text/html']);
  assert.ok((await mailPage.locator('body').innerText()).includes(code));
  const link = await mailPage.getByRole('link', { name: 'Choose a new password' }).getAttribute('href');
  assert.ok(link.startsWith(`${base}/signin/reset?email=`), `the link opens the reset page: ${link}`);
  await mailPage.screenshot({ path: join(shots, 'desktop', 'mail-password-reset.png'), fullPage: true });
  await mailPage.screenshot({ path: join(shots, 'cards', 'mail-password-reset.png'), fullPage: true });
  ok('the message: multipart text + HTML, the code alone on a line, a link to /signin/reset -> mail-password-reset.png');

  // The link, then the code and a new password.
  await page.goto(link);
  await page.getByLabel('Code').fill(code);
  await page.getByLabel('New password').fill('new-password-2');
  navigation = page.waitForNavigation();
  await page.getByRole('button', { name: 'Set the new password' }).click();
  response = await navigation;
  assert.equal(response.status(), 200);
  await page.getByRole('heading', { name: 'Password changed' }).waitFor();
  ok(await inspect(page, 'password-changed', 'desktop', response, consoleErrors, shots));
  const grant = await fetch(`${api}/api/v1/auth/token`, {
    method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'password', username: email, password: 'new-password-2' }),
  });
  assert.equal(grant.status, 200, 'the new password signs in');
  assert.deepEqual(outside, [], 'nothing loaded from other hosts');
  ok('code from the message + new password on /signin/reset -> the new password signs in');
  await context.close();

  // 2. The hosted sign-up, and the address verified from the message.
  const fresh = await browser.newContext(options);
  const outside2 = await offline(fresh, (url) => url.origin === base);
  const tab = await fresh.newPage();
  const errors2 = consoleErrorsOf(tab);
  const card2 = async (name) => tab.locator('main.card').screenshot({ path: join(shots, 'cards', `${name}.png`) });
  const newcomer = `newcomer-${Date.now()}@example.com`;
  const before = new Set(readdirSync(outbox).filter((n) => n.endsWith('.eml')));
  await tab.goto(`${base}/signin`);
  navigation = tab.waitForNavigation();
  await tab.getByRole('link', { name: 'Create an account' }).click();
  response = await navigation;
  ok(await inspect(tab, 'signup', 'desktop', response, errors2, shots));
  await tab.getByLabel('Email').fill(newcomer);
  await tab.getByLabel('Password').fill('newcomer-password-1');
  await tab.getByLabel('First name').fill('Ada');
  await card2('signup');
  navigation = tab.waitForNavigation();
  await tab.getByRole('button', { name: 'Create the account' }).click();
  response = await navigation;
  assert.equal(response.status(), 200);
  await tab.getByText(`You are signed in as ${newcomer}`).waitFor();
  ok('the hosted sign-up page creates the account and signs in');

  const welcome = mimeParts(await newMessage(newcomer, before));
  const verifyCode = welcome['text/plain'].split(/\r?\n/).map((l) => l.trim()).find((l) => /^[A-Z2-7]{26}$/.test(l));
  assert.ok(verifyCode, `the code alone on a line: ${welcome['text/plain']}`);
  const letter = await fresh.newPage();
  await letter.setViewportSize({ width: 720, height: 640 });
  await letter.setContent(welcome['text/html']);
  const confirmLink = await letter.getByRole('link', { name: 'Confirm my address' }).getAttribute('href');
  assert.ok(confirmLink.startsWith(`${base}/signin/verify?email=`) && confirmLink.includes(`code=${verifyCode}`), confirmLink);
  await letter.screenshot({ path: join(shots, 'desktop', 'mail-verify-email.png'), fullPage: true });
  await letter.screenshot({ path: join(shots, 'cards', 'mail-verify-email.png'), fullPage: true });
  ok('the verification message: the code alone on a line, a button to /signin/verify -> mail-verify-email.png');

  // Opening the link fills the form in and uses nothing; the button confirms.
  response = await tab.goto(confirmLink);
  assert.equal(await tab.getByLabel('Code').inputValue(), verifyCode);
  ok(await inspect(tab, 'verify', 'desktop', response, errors2, shots));
  await card2('verify');
  let account = await (await fetch(`${api}/api/v1/auth/token`, {
    method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'password', username: newcomer, password: 'newcomer-password-1' }),
  })).json();
  let me = await (await fetch(`${api}/api/v1/users/me`, { headers: { authorization: `Bearer ${account.access_token}` } })).json();
  assert.equal(me.email_verified, false, 'opening the link verified nothing');
  navigation = tab.waitForNavigation();
  await tab.getByRole('button', { name: 'Confirm' }).click();
  response = await navigation;
  assert.equal(response.status(), 200);
  await tab.getByText('Your email address is confirmed').waitFor();
  me = await (await fetch(`${api}/api/v1/users/me`, { headers: { authorization: `Bearer ${account.access_token}` } })).json();
  assert.equal(me.email_verified, true);
  await tab.goto(`${base}/account`);
  await tab.getByText('Confirmed.', { exact: true }).waitFor();
  assert.deepEqual(outside2, [], 'nothing loaded from other hosts');
  ok('the Confirm button (not the link) verifies the address; the account page says so');
  await fresh.close();
  console.log(`accounts by mail in Chromium: ${checks} checks passed`);
} finally {
  await browser.close();
}
