// private_key_jwt (RFC 7523 §2.2) against the live server with openid-client v6: its
// PrivateKeyJwt client authentication on a Configuration made from the server's RFC 8414
// metadata — by discovery() when DISCOVERY=1 (the server's JWT_ISSUER must then be its
// URL), else new Configuration(metadata) with the default issuer "simple-api".
//
// Keys are WebCrypto key pairs (jose.generateKeyPair), registered with their public halves
// as SPKI PEM through `simple-api clients create --public-key`. For Ed25519, ES256 (with
// its kid) and RS256: clientCredentialsGrant, the API called with the token,
// tokenIntrospection (active), tokenRevocation, then the token refused and inactive; the
// token request openid-client sent is refused when replayed, and a key the client did not
// register is refused 401 invalid_client.
//
// With CLIENT_KEYS (run.sh's openssl keys), also an ES256 key from a PKCS#8 PEM file.
//
// Env: SIMPLE_API_URL, SIMPLE_API_BIN, DATA_DIR/KEYS_DIR of the running server, DISCOVERY,
// CLIENT_KEYS.
import * as client from 'openid-client';
import * as jose from 'jose';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const base = process.env.SIMPLE_API_URL;
const bin = process.env.SIMPLE_API_BIN;
const discover = process.env.DISCOVERY === '1';
const mode = discover ? 'discovery' : 'Configuration';
const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const dir = mkdtempSync(join(tmpdir(), 'openid-client-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
let checks = 0;

function check(ok, what, detail) {
  if (!ok) {
    console.error(`FAIL openid-client (${mode}): ${what}\n  ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`);
    process.exit(1);
  }
  checks += 1;
  console.log(`  ok  ${what}`);
}

async function register(name, publicKey) {
  const pem = join(dir, `${name}.pub.pem`);
  writeFileSync(pem, await jose.exportSPKI(publicKey));
  const out = spawnSync(bin, ['clients', 'create', '--name', name, '--scope', 'users:read', '--public-key', pem], {
    encoding: 'utf8',
  });
  check(out.status === 0, `${name}: clients create --public-key (SPKI PEM from WebCrypto)`, out.stderr);
  const registered = JSON.parse(out.stdout);
  check(registered.token_endpoint_auth_method === 'private_key_jwt' && !('client_secret' in registered),
    `${name}: registered as private_key_jwt, without a secret`, registered);
  return registered;
}

/** The Configuration openid-client makes from the server's metadata; every form body it sends goes to `sent`. */
async function configure(clientId, auth, sent) {
  let config;
  if (discover) {
    config = await client.discovery(new URL(base), clientId, undefined, auth, {
      execute: [client.allowInsecureRequests],
      algorithm: 'oauth2',
    });
  } else {
    const metadata = await (await fetch(`${base}/.well-known/oauth-authorization-server`)).json();
    config = new client.Configuration(metadata, clientId, undefined, auth);
    client.allowInsecureRequests(config);
  }
  config[client.customFetch] = (url, options) => {
    sent.push(String(options.body ?? ''));
    return fetch(url, options);
  };
  return config;
}

function jwtParts(jwt) {
  const [header, payload] = jwt.split('.').slice(0, 2).map((p) => JSON.parse(Buffer.from(p, 'base64url')));
  return { header, payload };
}

function assertionIn(body) {
  const form = new URLSearchParams(body);
  if (form.get('client_assertion_type') !== ASSERTION_TYPE) {
    check(false, 'the request carried a jwt-bearer client_assertion', body);
  }
  return jwtParts(form.get('client_assertion'));
}

/** What a refused openid-client call was told: status and OAuth error (the body, if only a challenge was thrown). */
async function refusal(promise) {
  try {
    await promise;
  } catch (e) {
    if (e instanceof client.ResponseBodyError) return { status: e.status, error: e.error, thrown: e.name };
    if (e instanceof client.WWWAuthenticateChallengeError) {
      // openid-client throws the challenge (the server's WWW-Authenticate: Basic) before the body.
      const body = await e.response.json();
      return { status: e.status, error: body.error, thrown: e.name };
    }
    throw e;
  }
  return { status: 200, error: undefined, thrown: 'nothing' };
}

async function bearer(token) {
  return (await fetch(`${base}/api/v1/users`, { headers: { authorization: `Bearer ${token}` } })).status;
}

const meta = await (await fetch(`${base}/.well-known/oauth-authorization-server`)).json();
console.log(`- ${mode}: issuer ${meta.issuer}`);

const cases = [
  // name, jose alg, the alg the assertion carries, PrivateKeyJwt options, pass the kid
  // openid-client signs Ed25519 keys as "Ed25519" (RFC 9864) by default...
  { name: 'Ed25519', alg: 'Ed25519', wire: 'Ed25519', kid: false, options: undefined },
  // ...and as the older JOSE name "EdDSA" when told to: the server takes both.
  {
    name: 'EdDSA', alg: 'Ed25519', wire: 'EdDSA', kid: true,
    options: { [client.modifyAssertion]: (header) => { header.alg = 'EdDSA'; } },
  },
  { name: 'ES256', alg: 'ES256', wire: 'ES256', kid: true, options: undefined },
  { name: 'RS256', alg: 'RS256', wire: 'RS256', kid: false, options: undefined },
];
const registered = {};
for (const c of cases) {
  console.log(`- ${c.name}${c.kid ? ' (with its kid)' : ''}`);
  const { publicKey, privateKey } = await jose.generateKeyPair(c.alg, { extractable: true });
  const reg = await register(`openid-client-${c.name}`, publicKey);
  registered[c.name] = { id: reg.client_id, privateKey };
  const key = c.kid ? { key: privateKey, kid: reg.kids[0] } : privateKey;
  const sent = [];
  const config = await configure(reg.client_id, client.PrivateKeyJwt(key, c.options), sent);

  const tokens = await client.clientCredentialsGrant(config, { scope: 'users:read' });
  check(tokens.token_type === 'bearer' && tokens.scope === 'users:read' && tokens.access_token,
    `${c.name}: clientCredentialsGrant -> bearer token, scope users:read`, tokens);
  const tokenRequest = sent.at(-1);
  const { header, payload } = assertionIn(tokenRequest);
  check(header.alg === c.wire && (!c.kid || header.kid === reg.kids[0]) && payload.iss === reg.client_id
    && payload.sub === reg.client_id && payload.aud === meta.issuer && payload.exp - payload.iat === 60 && payload.jti,
  `${c.name}: the assertion: alg ${c.wire}${c.kid ? ', kid' : ''}, iss = sub = client id, aud = issuer, exp 60 s, a jti`,
  { header, payload });
  check(new URLSearchParams(tokenRequest).get('client_id') === reg.client_id,
    `${c.name}: ... with client_id beside it in the body (accepted)`, tokenRequest);

  const access = tokens.access_token;
  check(await bearer(access) === 200, `${c.name}: GET /api/v1/users with the token -> 200`);
  const active = await client.tokenIntrospection(config, access);
  check(active.active === true && active.client_id === reg.client_id && active.scope === 'users:read',
    `${c.name}: tokenIntrospection -> active, client_id, scope`, active);
  await client.tokenRevocation(config, access);
  check(true, `${c.name}: tokenRevocation -> 200`);
  check(await bearer(access) === 401, `${c.name}: the revoked token is refused: GET /api/v1/users -> 401`);
  const inactive = await client.tokenIntrospection(config, access);
  check(inactive.active === false, `${c.name}: the revoked token introspects as inactive`, inactive);

  const replay = await fetch(config.serverMetadata().token_endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: tokenRequest,
  });
  const replayBody = await replay.json();
  check(replay.status === 401 && replayBody.error === 'invalid_client',
    `${c.name}: the token request openid-client sent, replayed by hand -> 401 invalid_client`, replayBody);
}

if (process.env.CLIENT_KEYS) {
  // A key made with openssl (genpkey, PKCS#8 PEM), as the README has it, read with jose.
  console.log('- ES256 key made with openssl, imported with jose.importPKCS8');
  const keys = process.env.CLIENT_KEYS;
  const out = spawnSync(bin, ['clients', 'create', '--name', 'openid-client-openssl', '--scope', 'users:read',
    '--public-key', `${keys}/p256.pub.pem`], { encoding: 'utf8' });
  check(out.status === 0, 'clients create --public-key p256.pub.pem', out.stderr);
  const key = await jose.importPKCS8(readFileSync(`${keys}/p256.pem`, 'utf8'), 'ES256');
  const config = await configure(JSON.parse(out.stdout).client_id, client.PrivateKeyJwt(key), []);
  const { access_token } = await client.clientCredentialsGrant(config, { scope: 'users:read' });
  check(await bearer(access_token) === 200, 'clientCredentialsGrant with the openssl key, and GET /api/v1/users -> 200');
}

console.log('- refusals');
check(['EdDSA', 'Ed25519'].every((alg) => meta.token_endpoint_auth_signing_alg_values_supported.includes(alg)),
  'metadata lists both names of Ed25519 signatures, "EdDSA" and RFC 9864\'s "Ed25519"', meta.token_endpoint_auth_signing_alg_values_supported);
let sent = [];
let config;
let refused;
const stranger = await jose.generateKeyPair('ES256');
for (const [what, id, key] of [
  ['ES256 client signing with a fresh P-256 key it never registered', registered.ES256.id, stranger.privateKey],
  ['ES256 client signing with the RS256 client\'s registered key', registered.ES256.id, registered.RS256.privateKey],
]) {
  sent = [];
  config = await configure(id, client.PrivateKeyJwt(key), sent);
  refused = await refusal(client.clientCredentialsGrant(config, { scope: 'users:read' }));
  check(refused.status === 401 && refused.error === 'invalid_client', `${what} -> 401 invalid_client (${refused.thrown})`, refused);
}
config = await configure(registered.ES256.id, client.PrivateKeyJwt(registered.ES256.privateKey), []);
check((await client.clientCredentialsGrant(config, { scope: 'users:read' })).access_token,
  'ES256 client with its own key (no kid) still gets a token');

console.log(`openid-client (${mode}): ${checks} checks passed`);
