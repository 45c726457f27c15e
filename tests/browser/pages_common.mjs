// What the hosted-page scenarios share (pages.mjs, passkeys.mjs): the checks every page
// gets, with its screenshot, and an authenticator app's TOTP code.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { createServer } from 'node:http';
import { join } from 'node:path';

const headerProblems = (h) => {
  const problems = [];
  const csp = h['content-security-policy'] ?? '';
  if (!/frame-ancestors\s+'none'/.test(csp)) problems.push(`CSP without frame-ancestors 'none': ${csp}`);
  const script = (csp.match(/(?:^|;)\s*script-src\s+([^;]*)/) ?? csp.match(/(?:^|;)\s*default-src\s+([^;]*)/) ?? [])[1];
  if (script === undefined) problems.push(`CSP restricts no script (no script-src/default-src): ${csp}`);
  else if (/'unsafe-inline'|'unsafe-eval'|\*/.test(script)) problems.push(`CSP script sources allow inline/eval/any: ${script}`);
  if ((h['x-frame-options'] ?? '').toUpperCase() !== 'DENY') problems.push(`X-Frame-Options: ${h['x-frame-options']}`);
  if ((h['referrer-policy'] ?? '').toLowerCase() !== 'no-referrer') problems.push(`Referrer-Policy: ${h['referrer-policy']}`);
  if (!(h['cache-control'] ?? '').includes('no-store')) problems.push(`Cache-Control: ${h['cache-control']}`);
  return problems;
};

/** The checks every hosted page gets; `response` is the navigation that produced it. */
export async function inspect(page, name, viewport, response, consoleErrors, shots) {
  const where = `${viewport}/${name}`;
  assert.ok(/^text\/html/.test(response.headers()['content-type'] ?? ''), `${where}: text/html (${response.headers()['content-type']})`);
  assert.ok(await page.locator('h1').count() >= 1, `${where}: an <h1>`);
  const inline = await page.evaluate(() => ({
    scripts: [...document.querySelectorAll('script')].filter((s) => !s.src).map((s) => s.textContent.slice(0, 80)),
    handlers: [...document.querySelectorAll('*')].flatMap((el) => [...el.attributes]
      .filter((a) => /^on/i.test(a.name) || /^\s*javascript:/i.test(a.value)).map((a) => `<${el.tagName.toLowerCase()} ${a.name}>`)),
  }));
  assert.deepEqual(inline, { scripts: [], handlers: [] }, `${where}: no inline script`);
  const unlabelled = await page.evaluate(() => [...document.querySelectorAll('input, select, textarea')]
    .filter((el) => el.type !== 'hidden' && el.type !== 'submit' && el.type !== 'button')
    .filter((el) => !(el.labels?.length && [...el.labels].some((l) => l.textContent.trim()))
      && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby'))
    .map((el) => el.outerHTML));
  assert.deepEqual(unlabelled, [], `${where}: every input has a label`);
  const sideways = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(sideways <= 0, `${where}: no horizontal scrolling (${sideways}px too wide)`);
  assert.deepEqual(consoleErrors.splice(0), [], `${where}: no console errors (CSP violations included)`);
  const problems = headerProblems(response.headers());
  assert.deepEqual(problems, [], `${where}: security headers`);
  const file = join(shots, viewport, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return `${where}: h1, no inline script, inputs labelled, fits, CSP/X-Frame-Options/Referrer-Policy/no-store -> ${file}`;
}

/** RFC 4648 base32 (no padding) to bytes. */
export function base32Decode(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0, value = 0;
  const out = [];
  for (const c of text.replace(/=+$/, '')) {
    value = (value << 5) | alphabet.indexOf(c);
    bits += 5;
    if (bits >= 8) { out.push((value >>> (bits - 8)) & 0xff); bits -= 8; }
  }
  return Buffer.from(out);
}

/** RFC 6238 TOTP (HMAC-SHA1, 6 digits) of time step `step`, as an authenticator app computes it. */
export function totp(secret, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = createHmac('sha1', secret).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  return String((mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000).padStart(6, '0');
}

/** The desktop and phone viewports every page is checked at. */
export const viewports = {
  desktop: { viewport: { width: 1280, height: 800 } },
  phone: { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 },
};

/** The relying party's side: its redirect_uri (a loopback port) answers with a page and
 *  remembers each URL it was called with (`callbacks`); `close()` ends it. */
export async function relyingParty(redirectUri) {
  const callbacks = [];
  const server = createServer((req, res) => {
    callbacks.push(new URL(req.url, redirectUri));
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><title>client</title><h1>The client got its answer</h1>');
  });
  await new Promise((resolve) => { server.listen(Number(new URL(redirectUri).port), '127.0.0.1', resolve); });
  return { callbacks, close: () => server.close() };
}

/** A PKCE pair (RFC 7636): a random verifier and its S256 challenge. */
export async function pkcePair() {
  const verifier = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString('base64url');
  const challenge = Buffer.from(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier))).toString('base64url');
  return { verifier, challenge };
}

/** Collects `page`'s console errors and page errors (CSP violations among them) for
 *  `inspect`. Chromium logs a 400 or 401 answer itself: those are expected. */
export function consoleErrorsOf(page) {
  const errors = [];
  page.on('console', (m) => {
    if (m.type() === 'error' && !/^Failed to load resource: the server responded with a status of 40[01]/.test(m.text())) {
      errors.push(m.text());
    }
  });
  page.on('pageerror', (e) => errors.push(e.message));
  return errors;
}
