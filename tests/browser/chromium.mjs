// What every browser scenario shares: Debian's Chromium (never a downloaded browser),
// launched headless, and an offline guard that refuses (and remembers) anything not
// served by the hosts a scenario allows.
import { chromium } from 'playwright-core';

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
           '--disable-component-update', '--no-first-run', '--disable-sync'],
  });
}

/** Lets through what `allowed(url)` accepts (default: loopback); returns the list of the
 *  rest, refused. `target` is a Page or a BrowserContext. */
export async function offline(target, allowed = (url) => ['127.0.0.1', 'localhost'].includes(url.hostname)) {
  const outside = [];
  await target.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (allowed(url)) return route.continue();
    outside.push(url.href);
    return route.abort();
  });
  return outside;
}

/** Swagger UI's "Try it out" on GET /api/v1/users/{id} with `me`: the answer's status,
 *  body and curl line, the response in view (for a screenshot). */
export async function tryGetMe(page) {
  const op = page.locator('#operations-Users-getUser');
  await op.locator('.opblock-summary').first().click();
  await op.getByRole('button', { name: 'Try it out' }).click();
  await op.locator('input[placeholder="id"]').fill('me');
  await op.getByRole('button', { name: 'Execute' }).click();
  const live = op.locator('.live-responses-table');
  await live.waitFor({ timeout: 10_000 });
  const status = (await live.locator('.response .response-col_status').first().innerText()).trim();
  const body = await live.locator('.response .response-col_description').first().innerText();
  const curl = await op.locator('.curl-command').innerText().catch(() => '');
  await live.scrollIntoViewIfNeeded();
  return { status, body, curl };
}
