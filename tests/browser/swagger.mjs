// Drives Swagger UI in Debian's Chromium, as a person would: Authorize with the OAuth2
// password flow, then "Try it out" on GET /api/v1/users/{id} with `me`.
// Env: SIMPLE_API_URL, TEST_EMAIL, TEST_PASSWORD, SCREENSHOT (path of the PNG to save).
import assert from 'node:assert/strict';
import { launch, offline, tryGetMe } from './chromium.mjs';

const base = process.env.SIMPLE_API_URL;
const email = process.env.TEST_EMAIL;
const password = process.env.TEST_PASSWORD;
const screenshot = process.env.SCREENSHOT ?? 'swagger-ui.png';

const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1600 } });
  // Offline proof: anything but this server is refused, and remembered.
  const outside = await offline(page);

  await page.goto(`${base}/docs`);
  await page.getByRole('button', { name: 'Authorize' }).first().click();
  // The password flow's own form: its fields, then the first Authorize button after them.
  await page.locator('#oauth_username').fill(email);
  await page.locator('#oauth_password').fill(password);
  await page.locator('xpath=//input[@id="oauth_password"]/following::button[normalize-space()="Authorize"][1]').click();
  await page.locator('xpath=//input[@id="oauth_password" or @id="oauth_username"]/preceding::h4[contains(., "password")][1]')
    .waitFor({ timeout: 5_000 }).catch(() => {});
  await page.getByRole('button', { name: 'Logout' }).first().waitFor({ timeout: 10_000 });
  await page.locator('.modal-ux .close-modal').click();

  // persistAuthorization: a reload keeps the login.
  await page.reload();
  const { status, body } = await tryGetMe(page);
  await page.screenshot({ path: screenshot, fullPage: false });
  assert.equal(status, '200', `Try it out answered ${status}: ${body.slice(0, 300)}`);
  assert.ok(body.includes(email), `the response does not show ${email}: ${body.slice(0, 300)}`);
  assert.deepEqual(outside, [], 'Swagger UI tried to load assets from other hosts');
  console.log(`swagger-ui: Authorize + Try it out OK (screenshot: ${screenshot})`);
} finally {
  await browser.close();
}
