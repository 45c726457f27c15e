// Browser sign-in (authorization code + PKCE, OpenID Connect) against the live server with
// openid-client v6, unmodified and with its default strict checks (only
// allowInsecureRequests, for the plain-http test server): discovery(), PKCE S256, nonce,
// state, buildAuthorizationUrl, authorizationCodeGrant (state, RFC 9207 iss, nonce and the
// ID token's claims), fetchUserInfo, refreshTokenGrant, buildEndSessionUrl.
//
// The person in front of the browser is played by fetch (redirect: 'manual') with a small
// cookie jar: the hosted /signin and /signin/consent forms are parsed and posted as a
// browser would post them (hidden request and csrf fields, the csrf cookie).
//
// - a confidential third-party client (client_secret_post, then client_secret_basic):
//   authorize -> /signin -> consent (Allow) -> code; the ID token's claims and RS256
//   signature (JWKS); userinfo; refresh; a second authorization skips sign-in (SSO
//   cookie) and consent (remembered); prompt=login and max_age=0 ask for the password
//   again; a replayed code is refused and revokes what it issued; Deny -> access_denied
//   and prompt=none without consent -> consent_required (another user).
// - a public first-party client (auth method none): no consent screen, a refresh token
//   without offline_access, a loopback redirect on another port, a wrong code_verifier
//   -> invalid_grant, a request without PKCE or with the plain method -> invalid_request.
// - unknown client / unregistered redirect_uri: 400 error page, never a redirect.
// - RP-initiated logout: buildEndSessionUrl -> confirmation page -> POST -> 303 to the
//   registered post_logout_redirect_uri with state; then prompt=none -> login_required;
//   "Sign out of every session" ends the user's tokens.
//
// Env: SIMPLE_API_URL (= the server's JWT_ISSUER), SIMPLE_API_BIN and the DATA_DIR/KEYS_DIR
// of the running server (for its CLI); KEEP_GOING=1 reports every failed check, not the first.
import * as client from 'openid-client';
import * as jose from 'jose';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createServer } from 'node:net';

const base = process.env.SIMPLE_API_URL;
const bin = process.env.SIMPLE_API_BIN;
const started = Math.floor(Date.now() / 1000);
const keepGoing = process.env.KEEP_GOING === '1';
let checks = 0;
const failed = [];
process.on('exit', (code) => {
  if (failed.length) {
    console.error(`openid-client code flow: ${failed.length} FAILED:\n${failed.map((f) => `  - ${f}`).join('\n')}`);
    process.exitCode = code || 1;
  }
});

/** Exits on the first failure; with KEEP_GOING=1 goes on (later checks may then fail too). */
function check(ok, what, detail) {
  if (!ok) {
    console.error(`FAIL openid-client code flow: ${what}\n  ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`);
    failed.push(what);
    if (!keepGoing) process.exit(1);
    return;
  }
  checks += 1;
  console.log(`  ok  ${what}`);
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function register(name, args) {
  const out = spawnSync(bin, ['clients', 'create', '--name', name, ...args], { encoding: 'utf8' });
  check(out.status === 0, `clients create --name ${name} ${args.join(' ')}`, out.stderr);
  return JSON.parse(out.stdout.trim().split('\n').at(-1));
}

// ---------------------------------------------------------------- the "browser"

const ENTITIES = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0' };
function decode(s) {
  return s.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (m, e) => {
    if (e[0] === '#') return String.fromCodePoint(e[1].toLowerCase() === 'x' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
    return ENTITIES[e.toLowerCase()] ?? m;
  });
}
function attrs(tag) {
  const out = {};
  for (const m of tag.matchAll(/([^\s=/>]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+)))?/g)) {
    out[m[1].toLowerCase()] = decode(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return out;
}
/** The forms of a page: action, method, inputs (with their attributes), buttons. */
function forms(html) {
  return [...html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/gi)].map((f) => ({
    ...attrs(f[1]),
    inputs: [...f[2].matchAll(/<input\b([^>]*)>/gi)].map((i) => attrs(i[1])),
    buttons: [...f[2].matchAll(/<button\b([^>]*)>([\s\S]*?)<\/button>/gi)]
      .map((b) => ({ ...attrs(b[1]), text: decode(b[2].replace(/<[^>]*>/g, '')).trim() })),
  }));
}
function formWithAction(html, action) {
  const form = forms(html).find((f) => f.action === action);
  if (!form) check(false, `the page has a <form action="${action}">`, html.slice(0, 2000));
  return form;
}
function input(form, name) {
  return form.inputs.find((i) => i.name === name);
}
function text(html) {
  return decode(html.replace(/<(script|style)\b[\s\S]*?<\/\1>/gi, ' ').replace(/<[^>]*>/g, ' ')).replace(/\s+/g, ' ').trim();
}

/** fetch with redirect: 'manual' and a cookie jar (one host, cookies by name). */
class Browser {
  constructor(name) {
    this.name = name;
    this.jar = new Map();
  }

  async request(url, { method = 'GET', form, accept = 'text/html,application/xhtml+xml' } = {}) {
    const headers = { accept };
    if (this.jar.size) headers.cookie = [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ');
    const res = await fetch(url, {
      method,
      redirect: 'manual',
      headers,
      body: form ? new URLSearchParams(form) : undefined,
    });
    const setCookies = {};
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attributes] = line.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      const attr = Object.fromEntries(attributes.map((a) => {
        const i = a.indexOf('=');
        return i < 0 ? [a.toLowerCase(), true] : [a.slice(0, i).toLowerCase(), a.slice(i + 1)];
      }));
      setCookies[name] = { value, attr, line };
      const expired = attr['max-age'] !== undefined ? Number(attr['max-age']) <= 0
        : attr.expires !== undefined && Date.parse(attr.expires) <= Date.now();
      if (expired || value === '') this.jar.delete(name);
      else this.jar.set(name, value);
    }
    const location = res.headers.get('location');
    return {
      url: new URL(url),
      method,
      status: res.status,
      headers: res.headers,
      location: location === null ? null : new URL(location, url),
      body: await res.text(),
      setCookies,
    };
  }
}

function hop(r) {
  return `${r.method} ${r.url.pathname} ${r.status}`;
}

/**
 * A person at the browser: GET url and follow redirects on this server; sign in on /signin,
 * answer the consent page with `decision`. Stops at the first redirect that leaves this
 * server (the client's callback) and returns it with the hops taken, or the page it stopped
 * at (/signin without `email`, consent without `decision`); with `inspect`, each
 * page is handed to it first.
 */
async function drive(browser, url, { email, password, decision = 'allow', inspect = () => {} } = {}) {
  const hops = [];
  let r = await browser.request(url);
  for (let n = 0; n < 12; n += 1) {
    hops.push(hop(r));
    await inspect(r);
    if (r.status >= 300 && r.status < 400) {
      if (r.location.origin !== new URL(base).origin) return { callback: r.location, hops, last: r };
      r = await browser.request(r.location);
    } else if (r.status === 200 && r.url.pathname === '/signin' && r.method === 'GET') {
      if (!email) return { page: r, hops };
      const form = formWithAction(r.body, '/signin');
      r = await browser.request(new URL('/signin', base), {
        method: 'POST',
        form: { email, password, request: input(form, 'request').value, csrf: input(form, 'csrf').value },
      });
    } else if (r.status === 200 && r.url.pathname === '/signin/consent' && r.method === 'GET') {
      if (!decision) return { page: r, hops };
      const form = formWithAction(r.body, '/signin/consent');
      r = await browser.request(new URL('/signin/consent', base), {
        method: 'POST',
        form: { request: input(form, 'request').value, csrf: input(form, 'csrf').value, decision },
      });
    } else {
      return { page: r, hops };
    }
  }
  check(false, 'the sign-in ends within 12 hops', hops);
}

// ---------------------------------------------------------------- helpers

async function signUp(email, password, first, last) {
  const res = await fetch(`${base}/api/v1/users`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password }),
  });
  const user = await res.json();
  check(res.status === 201 && user.email === email, `sign up ${email}`, user);
  if (first) {
    const token = await (await fetch(`${base}/api/v1/auth/token`, {
      method: 'POST',
      body: new URLSearchParams({ grant_type: 'password', username: email, password }),
    })).json();
    const put = await fetch(`${base}/api/v1/users/${user.id}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token.access_token}` },
      body: JSON.stringify({ first_name: first, last_name: last }),
    });
    check(put.status === 200, `${email}: first_name ${first}, last_name ${last}`, await put.text());
  }
  return user;
}

async function me(accessToken) {
  const res = await fetch(`${base}/api/v1/users/me`, { headers: { authorization: `Bearer ${accessToken}` } });
  return { status: res.status, body: await res.text() };
}

function atHash(accessToken) {
  return createHash('sha256').update(accessToken).digest().subarray(0, 16).toString('base64url');
}

/** A fresh authorization request: PKCE verifier and challenge, nonce, state. */
async function newRequest(config, redirectUri, scope, extra = {}) {
  const verifier = client.randomPKCECodeVerifier();
  const nonce = client.randomNonce();
  const state = client.randomState();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope,
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    nonce,
    state,
    ...extra,
  });
  return { url, verifier, nonce, state };
}

/** What openid-client throws for an error answer (or 'nothing' and the result). */
async function thrown(promise) {
  try {
    return { thrown: 'nothing', result: await promise };
  } catch (e) {
    return { thrown: e.constructor.name, error: e.error, status: e.status, description: e.error_description ?? e.message };
  }
}

function sameParams(callback, expected) {
  return Object.entries(expected).every(([k, v]) => callback.searchParams.get(k) === v);
}

// ---------------------------------------------------------------- setup

const password = 'correct horse battery staple';
const email = `oc-${Date.now()}@example.com`;
console.log('- a user with a name (for the profile claims)');
const user = await signUp(email, password, 'Ada', 'Lovelace');

const cbPort = await freePort();
const redirectUri = `http://127.0.0.1:${cbPort}/callback`;
const postLogout = `http://127.0.0.1:${cbPort}/logged-out`;
const SCOPE = 'openid profile email offline_access';
console.log('- relying parties registered with the CLI');
const confidential = register('openid-client-rp', ['--scope', SCOPE, '--redirect-uri', redirectUri,
  '--post-logout-redirect-uri', postLogout]);
check(confidential.client_id && confidential.client_secret, 'confidential client: a client_id and a client_secret', confidential);
const publicPort = await freePort();
const publicClient = register('openid-client-native', ['--scope', SCOPE, '--redirect-uri',
  `http://127.0.0.1:${publicPort}/callback`, '--public', '--first-party']);
check(publicClient.client_id && !('client_secret' in publicClient), 'public client: a client_id, no client_secret', publicClient);

console.log('- discovery (OpenID Connect Discovery 1.0)');
const sent = [];
const capture = (url, options) => {
  sent.push({ url: String(url), headers: new Headers(options.headers), body: String(options.body ?? '') });
  return fetch(url, options);
};
/** The last request openid-client sent to the token endpoint. */
const lastTokenRequest = () => sent.filter((r) => r.url === `${base}/api/v1/auth/token`).at(-1);
const config = await client.discovery(new URL(base), confidential.client_id, confidential.client_secret, undefined, {
  execute: [client.allowInsecureRequests],
});
config[client.customFetch] = capture;
const meta = config.serverMetadata();
check(meta.issuer === base, `discovery(): issuer ${meta.issuer} (openid-client checked it against the URL)`, meta);
for (const [k, path] of [['authorization_endpoint', '/api/v1/auth/authorize'], ['token_endpoint', '/api/v1/auth/token'],
  ['userinfo_endpoint', '/api/v1/auth/userinfo'], ['end_session_endpoint', '/api/v1/auth/logout'],
  ['jwks_uri', '/.well-known/jwks.json']]) {
  check(meta[k] === `${base}${path}`, `discovery: ${k} = ${path}`, meta[k]);
}
check(JSON.stringify(meta.code_challenge_methods_supported) === '["S256"]'
  && meta.authorization_response_iss_parameter_supported === true
  && meta.id_token_signing_alg_values_supported?.includes('RS256')
  && meta.subject_types_supported?.includes('public')
  && meta.response_types_supported?.includes('code')
  && meta.grant_types_supported?.includes('authorization_code')
  && ['openid', 'profile', 'email', 'offline_access'].every((s) => meta.scopes_supported?.includes(s)),
'discovery: S256 only, iss parameter, RS256 ID tokens, public subjects, code, the four OIDC scopes', meta);

// ---------------------------------------------------------------- confidential client

console.log('- confidential client, first authorization: sign-in page, consent page, code');
const browser = new Browser('first');
let req = await newRequest(config, redirectUri, SCOPE, { login_hint: email });
check(req.url.searchParams.get('client_id') === confidential.client_id
  && req.url.href.startsWith(`${base}/api/v1/auth/authorize?`), 'buildAuthorizationUrl -> the discovered authorization_endpoint');
let seen = {};
let flow = await drive(browser, req.url, {
  email,
  password,
  inspect: (r) => {
    const path = r.url.pathname;
    if (path === '/api/v1/auth/authorize') {
      check(r.status === 303 && r.location.origin === new URL(base).origin && r.location.pathname === '/signin'
        && r.location.searchParams.get('request'), 'GET authorize (not signed in) -> 303 /signin?request=...', hop(r) + ' ' + r.location);
    } else if (path === '/signin' && r.method === 'GET') {
      check(/^text\/html/.test(r.headers.get('content-type') ?? ''), 'GET /signin -> 200 text/html', r.headers.get('content-type'));
      const form = formWithAction(r.body, '/signin');
      check((form.method ?? '').toLowerCase() === 'post', '/signin: <form method="post" action="/signin">', form);
      check(input(form, 'email')?.type === 'email' && input(form, 'password')?.type === 'password'
        && input(form, 'request')?.type === 'hidden' && input(form, 'csrf')?.type === 'hidden',
      '/signin: inputs email (email), password (password), request and csrf (hidden)', form.inputs);
      check(form.buttons.some((b) => b.type === 'submit' && b.text === 'Sign in'), '/signin: a "Sign in" submit button', form.buttons);
      check(/<label\b[^>]*\bfor="email"[^>]*>\s*Email\s*</i.test(r.body) && /<label\b[^>]*\bfor="password"[^>]*>\s*Password\s*</i.test(r.body),
        '/signin: labels "Email" and "Password"');
      const csrf = r.setCookies.simple_api_csrf;
      check(csrf && csrf.value === input(form, 'csrf').value, '/signin: cookie simple_api_csrf = the csrf field', { cookie: csrf, field: input(form, 'csrf') });
      check(csrf.attr.httponly === true && csrf.attr.samesite?.toLowerCase() === 'strict' && csrf.attr.path === '/',
        '/signin: simple_api_csrf is HttpOnly; SameSite=Strict; Path=/', csrf.line);
      check(r.headers.get('cache-control')?.includes('no-store'), '/signin: Cache-Control no-store', r.headers.get('cache-control'));
      check(input(form, 'email').value === email, '/signin: login_hint prefills the email field', input(form, 'email'));
    } else if (path === '/signin' && r.method === 'POST') {
      check(r.status === 303 && r.location.pathname === '/signin/consent' && r.location.searchParams.get('request'),
        'POST /signin -> 303 /signin/consent?request=... (a third-party client)', hop(r) + ' ' + r.location);
      const sso = r.setCookies.simple_api_sso;
      check(sso && sso.attr.httponly === true && sso.attr.samesite?.toLowerCase() === 'lax' && sso.attr.path === '/',
        'POST /signin: sets simple_api_sso; HttpOnly; SameSite=Lax; Path=/', sso?.line ?? r.setCookies);
    } else if (path === '/signin/consent' && r.method === 'GET') {
      const form = formWithAction(r.body, '/signin/consent');
      check(text(r.body).includes('openid-client-rp'), 'consent page names the client (openid-client-rp)', text(r.body));
      seen.consentText = text(r.body);
      check(input(form, 'request')?.type === 'hidden' && input(form, 'csrf')?.type === 'hidden',
        'consent: hidden request and csrf', form.inputs);
      check(['allow', 'deny'].every((v) => form.buttons.some((b) => b.type === 'submit' && b.name === 'decision' && b.value === v)),
        'consent: submit buttons decision=allow ("Allow") and decision=deny ("Deny")', form.buttons);
    } else if (path === '/signin/consent' && r.method === 'POST') {
      check(r.status === 303, 'POST /signin/consent (allow) -> 303', hop(r));
    }
  },
});
check(JSON.stringify(flow.hops) === JSON.stringify(['GET /api/v1/auth/authorize 303', 'GET /signin 200', 'POST /signin 303',
  'GET /signin/consent 200', 'POST /signin/consent 303']), 'hops: authorize, sign-in, consent, back to the client', flow.hops);
console.log(`      consent page text: ${seen.consentText.slice(0, 300)}`);
let callback = flow.callback;
check(callback.href.startsWith(`${redirectUri}?`) && callback.searchParams.get('code')
  && sameParams(callback, { state: req.state, iss: base }), 'redirect to redirect_uri?code=...&state=<ours>&iss=<issuer>', callback.href);

const tokens = await client.authorizationCodeGrant(config, callback, {
  pkceCodeVerifier: req.verifier, expectedNonce: req.nonce, expectedState: req.state,
});
check(true, 'authorizationCodeGrant: openid-client accepted the response (state, iss, nonce, ID token claims)');
const tokenRequest = new URLSearchParams(lastTokenRequest().body);
check(tokenRequest.get('grant_type') === 'authorization_code' && tokenRequest.get('code_verifier') === req.verifier
  && tokenRequest.get('client_secret') === confidential.client_secret && tokenRequest.get('redirect_uri') === redirectUri,
'... sent with client_secret_post, the code_verifier and the redirect_uri', [...tokenRequest.keys()]);
check(tokens.token_type === 'bearer' && tokens.access_token && tokens.refresh_token && tokens.id_token
  && tokens.expires_in > 0 && tokens.scope?.split(' ').sort().join(' ') === 'email offline_access openid profile',
'tokens: bearer access token, refresh token (offline_access), ID token, expires_in, scope = the four', { ...tokens, access_token: '…', refresh_token: '…', id_token: '…' });
const claims = tokens.claims();
const now = Math.floor(Date.now() / 1000);
check(claims.iss === base && (claims.aud === confidential.client_id || (Array.isArray(claims.aud) && claims.aud.includes(confidential.client_id)))
  && claims.sub === user.id && claims.nonce === req.nonce, 'ID token: iss = issuer, aud = client_id, sub = the user id, nonce', claims);
check(claims.at_hash === atHash(tokens.access_token), 'ID token: at_hash = left half of SHA-256(access_token)', claims.at_hash);
check(Number.isInteger(claims.auth_time) && claims.auth_time >= started - 5 && claims.auth_time <= now + 5,
  'ID token: auth_time = the sign-in time', { auth_time: claims.auth_time, started, now });
check(typeof claims.sid === 'string' && claims.sid.length > 0, 'ID token: sid', claims.sid);
check(Array.isArray(claims.amr) && claims.amr.includes('pwd'), 'ID token: amr ["pwd", ...]', claims.amr);
check(claims.email === email && claims.name === 'Ada Lovelace', 'ID token: email and name (scopes email, profile)', claims);
const jwks = jose.createRemoteJWKSet(new URL(meta.jwks_uri));
const verified = await jose.jwtVerify(tokens.id_token, jwks, { issuer: base, audience: confidential.client_id, algorithms: ['RS256'] });
check(verified.protectedHeader.alg === 'RS256' && verified.protectedHeader.kid, 'ID token: RS256 signature verified with the jwks_uri key (jose)', verified.protectedHeader);
const firstIdToken = tokens.id_token;

const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
check(info.sub === user.id && info.email === email && typeof info.email_verified === 'boolean'
  && info.name === 'Ada Lovelace' && info.given_name === 'Ada' && info.family_name === 'Lovelace',
'fetchUserInfo: sub, email, email_verified, name, given_name, family_name', info);
const userinfoPost = await fetch(meta.userinfo_endpoint, { method: 'POST', headers: { authorization: `Bearer ${tokens.access_token}` } });
check(userinfoPost.status === 200 && (await userinfoPost.json()).email === email, 'POST userinfo with the bearer token: the same claims');
let api = await me(tokens.access_token);
check(api.status === 200 && JSON.parse(api.body).email === email, 'GET /api/v1/users/me with the access token -> 200', api);
const noToken = await fetch(meta.userinfo_endpoint);
check(noToken.status === 401, 'userinfo without a token -> 401', noToken.status);

const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
check(refreshed.access_token && refreshed.access_token !== tokens.access_token && refreshed.refresh_token
  && refreshed.refresh_token !== tokens.refresh_token, 'refreshTokenGrant: a new access token and a rotated refresh token',
{ ...refreshed, access_token: '…', refresh_token: '…', id_token: refreshed.id_token ? '…' : undefined });
api = await me(refreshed.access_token);
check(api.status === 200, 'GET /api/v1/users/me with the refreshed access token -> 200', api);
if (refreshed.id_token) {
  const c = refreshed.claims();
  check(c.sub === claims.sub && c.auth_time === claims.auth_time, 'refresh: its ID token has the same sub and auth_time (openid-client checked it)', c);
}

console.log('- second authorization: the SSO cookie skips sign-in, remembered consent skips the consent page');
const configBasic = await client.discovery(new URL(base), confidential.client_id, confidential.client_secret,
  client.ClientSecretBasic(confidential.client_secret), {
    execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks],
  });
configBasic[client.customFetch] = capture;
req = await newRequest(configBasic, redirectUri, SCOPE);
flow = await drive(browser, req.url);
check(JSON.stringify(flow.hops) === '["GET /api/v1/auth/authorize 303"]' && flow.callback.href.startsWith(`${redirectUri}?`)
  && sameParams(flow.callback, { state: req.state, iss: base }), 'GET authorize -> 303 straight to the callback with code, state, iss', flow);
const second = await client.authorizationCodeGrant(configBasic, flow.callback, {
  pkceCodeVerifier: req.verifier, expectedNonce: req.nonce, expectedState: req.state,
});
check(lastTokenRequest().headers.get('authorization')?.startsWith('Basic ') && !new URLSearchParams(lastTokenRequest().body).has('client_secret'),
  'authorizationCodeGrant with client_secret_basic (and enableNonRepudiationChecks: the signature checked against the JWKS)');
const secondClaims = second.claims();
check(secondClaims.sub === claims.sub && secondClaims.auth_time === claims.auth_time && secondClaims.sid === claims.sid
  && secondClaims.nonce === req.nonce, 'second ID token: same sub, auth_time and sid (one session), its own nonce', secondClaims);

console.log('- a replayed code');
const replay = await thrown(client.authorizationCodeGrant(configBasic, flow.callback, {
  pkceCodeVerifier: req.verifier, expectedNonce: req.nonce, expectedState: req.state,
}));
check(replay.thrown === 'ResponseBodyError' && replay.error === 'invalid_grant' && replay.status === 400,
  'the same code again -> 400 invalid_grant (ResponseBodyError)', replay);
const afterReplay = await thrown(client.refreshTokenGrant(configBasic, second.refresh_token));
check(afterReplay.thrown === 'ResponseBodyError' && afterReplay.error === 'invalid_grant',
  '... and the refresh token the first use issued is revoked (invalid_grant)', afterReplay);
api = await me(second.access_token);
check(api.status === 401, '... and its access token too: GET /api/v1/users/me -> 401', api);
api = await me(refreshed.access_token);
check(api.status === 200, '... while the first authorization\'s tokens still work', api);

console.log('- prompt=login and max_age=0 ask for the password again');
// A second or more after the sign-in (auth_time has whole seconds)...
await new Promise((resolve) => { setTimeout(resolve, Math.max(0, (claims.auth_time + 2) * 1000 - Date.now())); });
for (const extra of [{ prompt: 'login' }, { max_age: '0' }, { max_age: '1' }]) {
  req = await newRequest(config, redirectUri, SCOPE, extra);
  const r = await browser.request(req.url);
  check(r.status === 303 && r.location.pathname === '/signin', `${new URLSearchParams(extra)}: GET authorize (signed in ${Math.round(Date.now() / 1000) - claims.auth_time} s ago) -> 303 /signin`, `${hop(r)} ${r.location}`);
}
req = await newRequest(config, redirectUri, SCOPE, { max_age: '0' });
flow = await drive(browser, req.url, { email, password });
check(JSON.stringify(flow.hops) === JSON.stringify(['GET /api/v1/auth/authorize 303', 'GET /signin 200', 'POST /signin 303'])
  && flow.callback, 'max_age=0: sign in again -> straight back to the client (consent remembered)', flow.hops);
const reauth = await client.authorizationCodeGrant(config, flow.callback, {
  pkceCodeVerifier: req.verifier, expectedNonce: req.nonce, expectedState: req.state, maxAge: 60,
});
check(reauth.claims().auth_time > claims.auth_time, 'max_age: a new auth_time (openid-client checked it against maxAge)', reauth.claims());
// ...and right after a sign-in (within the same second, most likely): OIDC Core 3.1.2.1
// makes max_age=0 equivalent to prompt=login, and prompt=login means this request must be
// answered by a new authentication, however recent the last one was.
for (const extra of [{ prompt: 'login' }, { max_age: '0' }]) {
  req = await newRequest(config, redirectUri, SCOPE, extra);
  const r = await browser.request(req.url);
  check(r.status === 303 && r.location.pathname === '/signin',
    `${new URLSearchParams(extra)} right after a sign-in (${(Date.now() / 1000 - reauth.claims().auth_time).toFixed(2)} s after auth_time) -> 303 /signin`, `${hop(r)} ${r.location}`);
}

console.log('- unknown client, unregistered redirect_uri: an error page, never a redirect');
const authorize = meta.authorization_endpoint;
const challenge = await client.calculatePKCECodeChallenge(client.randomPKCECodeVerifier());
const q = (o) => `${authorize}?${new URLSearchParams({ response_type: 'code', scope: 'openid', state: 's', code_challenge: challenge, code_challenge_method: 'S256', ...o })}`;
for (const [what, url] of [
  ['unknown client_id', q({ client_id: 'no-such-client', redirect_uri: redirectUri })],
  ['unregistered redirect_uri (another path)', q({ client_id: confidential.client_id, redirect_uri: `http://127.0.0.1:${cbPort}/elsewhere` })],
  ['unregistered redirect_uri (another host)', q({ client_id: confidential.client_id, redirect_uri: 'https://attacker.example/callback' })],
]) {
  const json = await browser.request(url, { accept: 'application/json' });
  let body;
  try { body = JSON.parse(json.body); } catch { body = json.body; }
  check(json.status === 400 && json.location === null && typeof body?.error === 'string', `${what} (Accept: application/json) -> 400 {"error": ...}, no Location`, { status: json.status, location: json.location?.href, body });
  const html = await browser.request(url);
  check(html.status === 400 && html.location === null && /^text\/html/.test(html.headers.get('content-type') ?? '')
    && /class="[^"]*\berror\b/.test(html.body) && /<h1\b/.test(html.body), `${what} (Accept: text/html) -> 400 HTML error page`,
  { status: html.status, type: html.headers.get('content-type'), body: html.body.slice(0, 500) });
}

console.log('- Deny, and prompt=none without consent (another user)');
const email2 = `oc-deny-${Date.now()}@example.com`;
await signUp(email2, password);
const browser2 = new Browser('deny');
req = await newRequest(config, redirectUri, SCOPE);
flow = await drive(browser2, req.url, { email: email2, password, decision: 'deny' });
check(flow.callback && sameParams(flow.callback, { error: 'access_denied', state: req.state, iss: base }) && !flow.callback.searchParams.has('code'),
  'consent Deny -> redirect_uri?error=access_denied&state&iss', flow.callback?.href ?? flow);
let denied = await thrown(client.authorizationCodeGrant(config, flow.callback, { pkceCodeVerifier: req.verifier, expectedNonce: req.nonce, expectedState: req.state }));
check(denied.thrown === 'AuthorizationResponseError' && denied.error === 'access_denied', 'authorizationCodeGrant -> AuthorizationResponseError access_denied', denied);
req = await newRequest(config, redirectUri, SCOPE, { prompt: 'none' });
flow = await drive(browser2, req.url);
check(flow.callback && sameParams(flow.callback, { error: 'consent_required', state: req.state, iss: base }),
  'prompt=none, signed in but no consent -> error=consent_required', flow.callback?.href ?? flow);
req = await newRequest(config, redirectUri, SCOPE);
flow = await drive(browser2, req.url, { decision: null });
check(flow.page?.url.pathname === '/signin/consent' && JSON.stringify(flow.hops) === '["GET /api/v1/auth/authorize 303","GET /signin/consent 200"]',
  'a Deny is not remembered: the next authorization shows the consent page (no sign-in)', flow.hops);

// ---------------------------------------------------------------- public client

console.log('- public first-party client (token_endpoint_auth_method none)');
const publicConfig = await client.discovery(new URL(base), publicClient.client_id, undefined, client.None(), {
  execute: [client.allowInsecureRequests],
});
publicConfig[client.customFetch] = capture;
const loopback = `http://127.0.0.1:${await freePort()}/callback`;
const browser3 = new Browser('public');
req = await newRequest(publicConfig, loopback, 'openid email');
flow = await drive(browser3, req.url, { email, password });
check(JSON.stringify(flow.hops) === JSON.stringify(['GET /api/v1/auth/authorize 303', 'GET /signin 200', 'POST /signin 303'])
  && flow.callback?.href.startsWith(`${loopback}?`) && sameParams(flow.callback, { state: req.state, iss: base }),
'authorize -> sign in -> straight back (first-party: no consent), to a loopback redirect on another port', flow.hops.concat(flow.callback?.href));
const pub = await client.authorizationCodeGrant(publicConfig, flow.callback, {
  pkceCodeVerifier: req.verifier, expectedNonce: req.nonce, expectedState: req.state,
});
const pubRequest = lastTokenRequest();
const pubForm = new URLSearchParams(pubRequest.body);
check(pubForm.get('client_id') === publicClient.client_id && !pubForm.has('client_secret') && !pubRequest.headers.has('authorization')
  && pubForm.get('code_verifier') === req.verifier, 'authorizationCodeGrant with None(): client_id and code_verifier, no secret', [...pubForm.keys()]);
const pubAud = [pub.claims().aud].flat();
check(pub.id_token && pub.refresh_token && pub.scope?.split(' ').sort().join(' ') === 'email openid'
  && pubAud.length === 1 && pubAud[0] === publicClient.client_id,
'tokens: ID token for the public client, and a refresh token without offline_access (first-party)', { scope: pub.scope, refresh: !!pub.refresh_token, aud: pub.claims().aud });
const pubInfo = await client.fetchUserInfo(publicConfig, pub.access_token, pub.claims().sub);
check(pubInfo.email === email && !('given_name' in pubInfo) && !('family_name' in pubInfo),
  'fetchUserInfo with scope "openid email": email, no profile claims', pubInfo);
const pubRefreshed = await client.refreshTokenGrant(publicConfig, pub.refresh_token);
check(pubRefreshed.access_token && pubRefreshed.refresh_token, 'refreshTokenGrant with None() -> new tokens', !!pubRefreshed.refresh_token);

req = await newRequest(publicConfig, loopback, 'openid email');
flow = await drive(browser3, req.url);
check(flow.callback?.searchParams.get('code'), 'another authorization (SSO) -> a code');
const wrong = await thrown(client.authorizationCodeGrant(publicConfig, flow.callback, {
  pkceCodeVerifier: client.randomPKCECodeVerifier(), expectedNonce: req.nonce, expectedState: req.state,
}));
check(wrong.thrown === 'ResponseBodyError' && wrong.error === 'invalid_grant' && wrong.status === 400,
  'a wrong code_verifier -> 400 invalid_grant (ResponseBodyError)', wrong);

for (const [what, extra] of [['without code_challenge', { code_challenge: '', code_challenge_method: '' }],
  ['code_challenge_method=plain', { code_challenge: 'a'.repeat(43), code_challenge_method: 'plain' }]]) {
  req = await newRequest(publicConfig, loopback, 'openid email');
  const url = new URL(req.url);
  for (const [k, v] of Object.entries(extra)) { if (v) url.searchParams.set(k, v); else url.searchParams.delete(k); }
  flow = await drive(browser3, url);
  check(flow.callback && sameParams(flow.callback, { error: 'invalid_request', state: req.state, iss: base }) && !flow.callback.searchParams.has('code'),
    `authorize ${what} -> redirect with error=invalid_request, state, iss`, flow.callback?.href ?? flow);
}

// ---------------------------------------------------------------- logout

console.log('- RP-initiated logout (buildEndSessionUrl)');
let logoutState = client.randomState();
const endSession = client.buildEndSessionUrl(config, { id_token_hint: firstIdToken, post_logout_redirect_uri: postLogout, state: logoutState });
check(endSession.href.startsWith(`${base}/api/v1/auth/logout?`) && endSession.searchParams.get('client_id') === confidential.client_id,
  'buildEndSessionUrl -> end_session_endpoint with id_token_hint, client_id, post_logout_redirect_uri, state', endSession.href);
let r = await browser.request(endSession);
check(r.status === 200 && /^text\/html/.test(r.headers.get('content-type') ?? ''), 'GET logout (signed in) -> 200 confirmation page', hop(r));
const logoutForm = formWithAction(r.body, '/api/v1/auth/logout');
const everywhere = input(logoutForm, 'everywhere');
check((logoutForm.method ?? '').toLowerCase() === 'post' && input(logoutForm, 'request')?.type === 'hidden'
  && input(logoutForm, 'csrf')?.type === 'hidden' && everywhere?.type === 'checkbox' && everywhere.value === '1'
  && text(r.body).includes('Sign out of every session') && logoutForm.buttons.some((b) => b.type === 'submit' && b.text === 'Sign out'),
'confirmation: POST form, hidden request and csrf, checkbox everywhere=1 "Sign out of every session", "Sign out"', logoutForm);
r = await browser.request(new URL('/api/v1/auth/logout', base), {
  method: 'POST', form: { request: input(logoutForm, 'request').value, csrf: input(logoutForm, 'csrf').value },
});
check(r.status === 303 && `${r.location.origin}${r.location.pathname}` === postLogout && r.location.searchParams.get('state') === logoutState,
  'POST logout -> 303 post_logout_redirect_uri?state=<ours>', `${hop(r)} ${r.location}`);
check(!browser.jar.has('simple_api_sso'), 'POST logout clears the simple_api_sso cookie', r.setCookies);

req = await newRequest(config, redirectUri, SCOPE, { prompt: 'none' });
flow = await drive(browser, req.url);
check(flow.callback && sameParams(flow.callback, { error: 'login_required', state: req.state, iss: base }),
  'then authorize with prompt=none -> error=login_required, state, iss', flow.callback?.href ?? flow);
const loginRequired = await thrown(client.authorizationCodeGrant(config, flow.callback, { pkceCodeVerifier: req.verifier, expectedNonce: req.nonce, expectedState: req.state }));
check(loginRequired.thrown === 'AuthorizationResponseError' && loginRequired.error === 'login_required',
  'authorizationCodeGrant -> AuthorizationResponseError login_required', loginRequired);
logoutState = client.randomState();
r = await browser.request(client.buildEndSessionUrl(config, { id_token_hint: firstIdToken, post_logout_redirect_uri: postLogout, state: logoutState }));
check(r.status === 303 && `${r.location.origin}${r.location.pathname}` === postLogout && r.location.searchParams.get('state') === logoutState,
  'GET logout when not signed in -> 303 straight to post_logout_redirect_uri?state', `${hop(r)} ${r.location}`);
r = await browser.request(client.buildEndSessionUrl(config, { post_logout_redirect_uri: 'https://attacker.example/bye', state: 'x' }));
check(!(r.status >= 300 && r.status < 400 && r.location?.hostname === 'attacker.example'),
  'GET logout with an unregistered post_logout_redirect_uri: no redirect there', `${hop(r)} ${r.location}`);

console.log('- "Sign out of every session" (public client, no post_logout_redirect_uri)');
r = await browser3.request(client.buildEndSessionUrl(publicConfig, {}));
check(r.status === 200, 'GET logout?client_id=... (signed in) -> 200 confirmation page', hop(r));
const form3 = formWithAction(r.body, '/api/v1/auth/logout');
r = await browser3.request(new URL('/api/v1/auth/logout', base), {
  method: 'POST', form: { request: input(form3, 'request').value, csrf: input(form3, 'csrf').value, everywhere: '1' },
});
check(r.status === 200 && /<h1\b/.test(r.body) && !browser3.jar.has('simple_api_sso'), 'POST logout everywhere=1 -> 200 signed-out page, SSO cookie cleared', `${hop(r)} ${text(r.body).slice(0, 200)}`);
const gone = await thrown(client.refreshTokenGrant(publicConfig, pubRefreshed.refresh_token));
check(gone.thrown === 'ResponseBodyError' && gone.error === 'invalid_grant', '... the user\'s refresh tokens are revoked (invalid_grant)', gone);
api = await me(pubRefreshed.access_token);
check(api.status === 401, '... and access tokens refused: GET /api/v1/users/me -> 401', api);

console.log(`openid-client code flow: ${checks} checks passed${failed.length ? `, ${failed.length} failed` : ''}`);
