// A state's OpenID Connect provider for the console's tests: panva's oidc-provider
// (OpenID Certified) with its own sign-in page and the gateway's access tokens.
//
//   node identity_provider.mjs <config.json>
//
// The configuration (written by pouch_devtools.oidc_provider) names the issuer (or none:
// https://127.0.0.1:<port>), the port (0: any free one), the TLS server certificate and
// key, the CA whose client certificates the token endpoint binds tokens to, the signing
// key (or none: an ES256 key made at start), the clients, the officers' accounts, the
// gateway's audience (`resource`) and the access tokens' lifetime. Once listening it
// prints one line, `ready <issuer>`, on stdout; everything else goes to stderr.
//
// What it guarantees:
// * Authorization code flow only, PKCE (S256) required of every client, confidential
//   clients authenticated by their secret (client_secret_basic or client_secret_post).
// * An officer signs in with a username and password checked against the configured
//   accounts in constant time; a wrong one signs nobody in. Consent is given for the
//   configured (first-party) clients without asking, for the requested scopes the
//   account is allowed and no others (openid and profile always).
// * Access tokens are RFC 9068 JWTs for the gateway's audience, even when the client
//   sends no `resource`: sub (the officer's id), aud, scope, client_id, iss, iat, exp,
//   jti, cnf["x5t#S256"] of the client certificate verified at the token endpoint (no
//   verified certificate, no token), and pouch_partner_state for a partner's auditor.
// * The JWKS at the discovery's jwks_uri gives every key its kid, alg and use.
//
// Userinfo refuses these access tokens: oidc-provider serves userinfo only to tokens
// without an audience, and every token here is the gateway's. The ID token carries the
// officer's `name` instead.

import * as crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as https from 'node:https';

import Provider, { errors } from 'oidc-provider';
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';

const GATEWAY_SCOPES = [
  'civil:submit',
  'identity:query',
  'representation:request',
  'representation:act',
  'audit:read',
  'admin',
];
const OIDC_SCOPES = ['openid', 'profile'];
const SIGNING_ALG = 'ES256';
const MAX_FORM_BYTES = 16 * 1024;

// The library's own in-memory store, under a name of our own so it does not warn: a test
// provider's codes, sessions and grants are meant to die with its process.
class ProcessMemory extends MemoryAdapter {}

function fail(message) {
  process.stderr.write(`identity provider: ${message}\n`);
  process.exit(2);
}

function loadConfig(path) {
  if (!path) fail('usage: node identity_provider.mjs <config.json>');
  let config;
  try {
    config = JSON.parse(readFileSync(path, 'utf8'));
  } catch (error) {
    fail(`cannot read configuration ${path}: ${error.message}`);
  }
  for (const name of ['tls', 'clients', 'accounts', 'resource']) {
    if (config[name] === undefined) fail(`configuration lacks "${name}"`);
  }
  if (!Number.isInteger(config.port ?? 0)) fail('"port" must be an integer');
  for (const account of config.accounts) {
    const unknown = (account.scopes ?? []).filter((s) => !GATEWAY_SCOPES.includes(s));
    if (unknown.length) fail(`account ${account.username}: unknown scope ${unknown[0]}`);
  }
  return config;
}

async function signingJwk(config) {
  let jwk = config.signing_key;
  if (!jwk) {
    const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    jwk = privateKey.export({ format: 'jwk' });
  }
  if (jwk.kty !== 'EC' || jwk.crv !== 'P-256' || !jwk.d) {
    fail('"signing_key" must be a private P-256 JWK (ES256)');
  }
  const publicMembers = { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y };
  // RFC 7638 thumbprint: the members in lexicographic order, no whitespace.
  const thumbprint = crypto.hash('sha256', JSON.stringify(publicMembers), 'base64url');
  return { ...jwk, kid: jwk.kid ?? thumbprint, alg: SIGNING_ALG, use: 'sig' };
}

// Both sides are hashed first so the comparison takes the same time whatever their lengths.
function sameSecret(given, expected) {
  const a = crypto.hash('sha256', String(given), 'buffer');
  const b = crypto.hash('sha256', String(expected), 'buffer');
  return crypto.timingSafeEqual(a, b);
}

class Accounts {
  constructor(accounts) {
    this.byUsername = new Map(accounts.map((a) => [a.username, a]));
  }

  get(username) {
    return this.byUsername.get(username);
  }

  // An unknown username costs the same comparison as a known one.
  authenticate(username, password) {
    const account = this.byUsername.get(username);
    const matches = sameSecret(password, account ? account.password : crypto.randomUUID());
    return account && matches ? account : undefined;
  }
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;color:#1a1a1a;background:#fff}
label{display:block;margin-top:1rem;font-weight:600}
input{display:block;width:100%;box-sizing:border-box;padding:.5rem;margin-top:.25rem;font-size:1rem}
button{margin-top:1.5rem;padding:.6rem 1.2rem;font-size:1rem;color:#fff;background:#0b4f8a;border:0}
button.secondary{color:#0b4f8a;background:#fff;border:1px solid #0b4f8a}
.error{color:#a3120a;border-left:4px solid #a3120a;padding-left:.5rem}
</style>
</head>
<body>
<main>
${body}
</main>
</body>
</html>`;
}

function loginPage(uid, { username = '', error = false } = {}) {
  const alert = error
    ? '<p class="error" id="sign-in-error" role="alert">The username or password is wrong.</p>'
    : '';
  const describedBy = error ? ' aria-describedby="sign-in-error" aria-invalid="true"' : '';
  return page('Sign in', `<h1>Sign in</h1>
${alert}
<form method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="on">
<label for="username">Username</label>
<input id="username" name="username" type="text" autocomplete="username" required value="${escapeHtml(username)}"${describedBy}>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required${describedBy}>
<button type="submit">Sign in</button>
</form>`);
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_FORM_BYTES) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function send(res, status, html) {
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    'x-frame-options': 'DENY',
    // No form-action: a browser applies it to the redirects that follow the sign-in
    // form, and those end at the client's redirect_uri, on another origin.
    'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
  });
  res.end(html);
}

// The grant an officer consents to: the requested OIDC scopes of openid/profile, and of
// the gateway's scopes those the account is allowed; everything else is rejected, so
// the consent prompt does not come back for it.
async function consent(provider, details, accounts, resource) {
  const account = accounts.get(details.session.accountId);
  const allowed = new Set(account ? account.scopes : []);
  const missing = details.prompt.details;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
  if (missing.missingOIDCScope) {
    const granted = missing.missingOIDCScope.filter((s) => OIDC_SCOPES.includes(s));
    const refused = missing.missingOIDCScope.filter((s) => !OIDC_SCOPES.includes(s));
    if (granted.length) grant.addOIDCScope(granted.join(' '));
    if (refused.length) grant.rejectOIDCScope(refused.join(' '));
  }
  if (missing.missingOIDCClaims) {
    grant.addOIDCClaims(missing.missingOIDCClaims.filter((c) => ['sub', 'name'].includes(c)));
  }
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    const granted = indicator === resource ? scopes.filter((s) => allowed.has(s)) : [];
    const refused = scopes.filter((s) => !granted.includes(s));
    if (granted.length) grant.addResourceScope(indicator, granted.join(' '));
    if (refused.length) grant.rejectResourceScope(indicator, refused.join(' '));
  }
  return grant.save();
}

async function interaction(provider, accounts, resource, req, res) {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt } = details;
  const url = new URL(req.url, 'https://provider.invalid');
  if (prompt.name === 'login') {
    if (req.method === 'POST' && url.pathname === `/interaction/${uid}/login`) {
      const form = await readForm(req);
      const account = accounts.authenticate(form.get('username') ?? '', form.get('password') ?? '');
      if (!account) {
        send(res, 200, loginPage(uid, { username: form.get('username') ?? '', error: true }));
        return;
      }
      await provider.interactionFinished(
        req,
        res,
        { login: { accountId: account.username } },
        { mergeWithLastSubmission: false },
      );
      return;
    }
    send(res, 200, loginPage(uid));
    return;
  }
  if (prompt.name === 'consent') {
    const grantId = await consent(provider, details, accounts, resource);
    await provider.interactionFinished(
      req,
      res,
      { consent: { grantId } },
      { mergeWithLastSubmission: true },
    );
    return;
  }
  send(res, 400, page('Sign-in failed', '<h1>Sign-in failed</h1><p>This step is not supported.</p>'));
}

function configuration(config, jwk, accounts, certificateOf) {
  const resource = config.resource;
  return {
    clients: config.clients.map((c) => ({
      client_id: c.client_id,
      client_secret: c.client_secret,
      redirect_uris: c.redirect_uris,
      post_logout_redirect_uris: c.post_logout_redirect_uris ?? [],
      token_endpoint_auth_method: c.token_endpoint_auth_method ?? 'client_secret_basic',
      grant_types: ['authorization_code'],
      response_types: ['code'],
      id_token_signed_response_alg: SIGNING_ALG,
      tls_client_certificate_bound_access_tokens: true,
    })),
    adapter: ProcessMemory,
    clientDefaults: { id_token_signed_response_alg: SIGNING_ALG },
    jwks: { keys: [jwk] },
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    claims: { openid: ['sub'], profile: ['name'] },
    scopes: OIDC_SCOPES,
    responseTypes: ['code'],
    pkce: { methods: ['S256'], required: () => true },
    clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
    enabledJWA: { idTokenSigningAlgValues: [SIGNING_ALG] },
    clientBasedCORS: () => false,
    async findAccount(_ctx, sub) {
      const account = accounts.get(sub);
      if (!account) return undefined;
      return {
        accountId: sub,
        async claims() {
          return { sub, name: account.name };
        },
      };
    },
    async extraTokenClaims(_ctx, token) {
      const account = accounts.get(token.accountId);
      return account?.partner_state ? { pouch_partner_state: account.partner_state } : undefined;
    },
    interactions: { url: (_ctx, i) => `/interaction/${i.uid}` },
    ttl: { AccessToken: config.access_token_ttl ?? 600 },
    features: {
      devInteractions: { enabled: false },
      userinfo: { enabled: true },
      mTLS: {
        enabled: true,
        certificateBoundAccessTokens: true,
        getCertificate: certificateOf,
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, _client, oneOf) => oneOf ?? resource,
        useGrantedResource: async () => true,
        async getResourceServerInfo(_ctx, indicator) {
          if (indicator !== resource) throw new errors.InvalidTarget();
          return {
            scope: GATEWAY_SCOPES.join(' '),
            audience: resource,
            accessTokenTTL: config.access_token_ttl ?? 600,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: SIGNING_ALG } },
          };
        },
      },
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          ctx.body = page('Sign out', `<h1>Sign out</h1>
<p>Do you want to sign out?</p>
${form}
<button type="submit" form="op.logoutForm" name="logout" value="yes">Sign out</button>
<button type="submit" form="op.logoutForm" class="secondary">Stay signed in</button>`);
        },
        async postLogoutSuccessSource(ctx) {
          ctx.body = page('Signed out', '<h1>Signed out</h1><p>You are signed out.</p>');
        },
      },
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      const lines = Object.entries(out)
        .map(([k, v]) => `<dt>${escapeHtml(k)}</dt><dd>${escapeHtml(v)}</dd>`)
        .join('');
      ctx.body = page('Sign-in failed', `<h1>Sign-in failed</h1><dl>${lines}</dl>`);
    },
  };
}

// The client certificate the TLS stack verified against the configured CA, or none: an
// unverified certificate must not bind a token.
function verifiedCertificate(ctx) {
  const socket = ctx.req.socket;
  if (!socket.authorized) return undefined;
  return socket.getPeerX509Certificate() ?? undefined;
}

async function main() {
  const config = loadConfig(process.argv[2]);
  const accounts = new Accounts(config.accounts);
  const jwk = await signingJwk(config);
  const tls = config.tls;
  let handle = (_req, res) => {
    res.writeHead(503);
    res.end();
  };
  const server = https.createServer(
    {
      cert: readFileSync(tls.cert),
      key: readFileSync(tls.key),
      ca: readFileSync(tls.client_ca),
      requestCert: true,
      rejectUnauthorized: false,
    },
    (req, res) => handle(req, res),
  );
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port ?? 0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  const issuer = config.issuer ?? `https://127.0.0.1:${port}`;
  const provider = new Provider(issuer, configuration(config, jwk, accounts, verifiedCertificate));
  const oidc = provider.callback();
  handle = (req, res) => {
    if (!req.url.startsWith('/interaction/')) {
      oidc(req, res);
      return;
    }
    interaction(provider, accounts, config.resource, req, res).catch((error) => {
      process.stderr.write(`identity provider: interaction failed: ${error.name}: ${error.message}\n`);
      if (!res.headersSent) {
        send(res, 400, page('Sign-in failed', '<h1>Sign-in failed</h1><p>Start signing in again.</p>'));
      }
    });
  };
  process.on('SIGTERM', () => process.exit(0));
  // stdout carries the ready line alone: whoever started the provider may stop reading
  // it (`pouch demo --keep` exits), so the library's own notices go to stderr.
  console.log = console.error;
  console.info = console.error;
  process.stdout.on('error', () => {});
  process.stdout.write(`ready ${issuer}\n`);
}

main().catch((error) => fail(`${error.name}: ${error.message}`));
