// A real OpenID Connect provider for the console's browser tests:
// oidc-provider (npm) in-process on plain http on loopback, with its built-in
// development interactions (a login form that takes any password, and a
// consent form), the authorization-code flow (PKCE S256 required) and the
// device flow, and one confidential client, `borealis`.
//
//   const op = await startProvider({ redirectUris: [`${relay.httpUrl}/auth/callback`] });
//   // op.issuer, op.clientId, op.clientSecret, op.signIdToken({ iss: 'https://elsewhere' }) …
//   await logIn(page, 'alice');            // on the provider's login page
//   await approveDevice(page, uri, 'bob'); // verification_uri_complete of a device flow
//
// Whatever is started here is stopped by node:test's `after` too, so a
// failing test leaves nothing listening.

import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { after } from 'node:test';

import { exportJWK, generateKeyPair, importJWK, SignJWT, UnsecuredJWT } from 'jose';

// oidc-provider announces its development defaults (the dev interactions,
// "Node 22 or later") on the console, as NOTICE and WARNING lines, from the
// moment it is imported. They say nothing a test needs; OIDC_PROVIDER_LOG=1
// keeps them.
if (!process.env.OIDC_PROVIDER_LOG) {
  for (const method of ['info', 'warn']) {
    const original = console[method];
    console[method] = (...args) => {
      if (typeof args[0] === 'string' && /^(\x1b\[[0-9;]*m)?oidc-provider (NOTICE|WARNING): /.test(args[0])) return;
      original.apply(console, args);
    };
  }
}
const { default: Provider } = await import('oidc-provider');

/** The people the provider knows (the dev login form takes any password). */
export const ACCOUNTS = Object.freeze({
  alice: Object.freeze({ name: 'Alice Approver', email: 'alice@example.test', groups: Object.freeze(['team-a-approvers']) }),
  bob: Object.freeze({ name: 'Bob Deployer', email: 'bob@example.test', groups: Object.freeze(['team-b-deployers']) }),
});

export const CLIENT_ID = 'borealis';
export const DEVICE_CODE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

// Cookie names of our own: the relay may run on 127.0.0.1 too, and cookies
// are per host, not per port, so oidc-provider's `_session` would be the
// relay's as well.
const COOKIE_NAMES = { session: 'op_session', interaction: 'op_interaction', resume: 'op_interaction_resume' };

const live = new Set();
after(() => Promise.allSettled([...live].map((stop) => stop())));

/**
 * A storage adapter for oidc-provider, in memory and this provider's own.
 * The `Client` model reads the client's metadata as it is now, so redirect
 * URIs may be set after the provider started (oidc-provider revalidates a
 * client whose metadata changed).
 */
function memoryAdapter(clientMetadata) {
  const store = new Map(); // `${model}:${id}` -> { payload, expiresAt }
  const index = new Map(); // `userCode:…` / `uid:…` -> id, `grant:…` -> Set of keys
  const unexpired = (entry) => (entry && entry.expiresAt > Date.now() ? entry.payload : undefined);
  return class Adapter {
    constructor(model) {
      this.model = model;
    }
    key(id) {
      return `${this.model}:${id}`;
    }
    async upsert(id, payload, expiresIn) {
      const key = this.key(id);
      // Kept a minute past its expiry: oidc-provider checks expiry itself (with its clock tolerance).
      store.set(key, { payload, expiresAt: expiresIn ? Date.now() + (expiresIn + 60) * 1000 : Infinity });
      if (payload.grantId) {
        const grant = `grant:${payload.grantId}`;
        if (!index.has(grant)) index.set(grant, new Set());
        index.get(grant).add(key);
      }
      if (payload.userCode) index.set(`userCode:${payload.userCode}`, id);
      if (payload.uid) index.set(`uid:${payload.uid}`, id);
    }
    async find(id) {
      if (this.model === 'Client') return clientMetadata(id);
      return unexpired(store.get(this.key(id)));
    }
    async findByUserCode(userCode) {
      const id = index.get(`userCode:${userCode}`);
      return id === undefined ? undefined : this.find(id);
    }
    async findByUid(uid) {
      const id = index.get(`uid:${uid}`);
      return id === undefined ? undefined : this.find(id);
    }
    async consume(id) {
      const payload = unexpired(store.get(this.key(id)));
      if (payload) payload.consumed = Math.floor(Date.now() / 1000);
    }
    async destroy(id) {
      store.delete(this.key(id));
    }
    async revokeByGrantId(grantId) {
      const grant = `grant:${grantId}`;
      for (const key of index.get(grant) ?? []) store.delete(key);
      index.delete(grant);
    }
  };
}

// oidc-provider's built-in pages @import a web font from fonts.googleapis.com;
// a test machine may have no way out, and a failed load is a console error.
async function noExternalFonts(ctx, next) {
  await next();
  if (typeof ctx.body === 'string' && ctx.body.includes('fonts.googleapis.com')) {
    ctx.body = ctx.body.replace(/@import url\(https:\/\/fonts\.googleapis\.com\/[^)]*\);?/g, '');
  }
}

/**
 * Starts oidc-provider on http://127.0.0.1:<port>.
 *
 * options:
 *   redirectUris: [string]          the client's redirect URIs, which may also be set later (with none the
 *                                   client may only use the device flow)
 *   postLogoutRedirectUris: [string]
 *   accounts: { id: { name, email, groups } }   added to (or replacing) alice and bob
 *   groupsWithoutScope: boolean     put `groups` in every ID token, not only when scope `groups` is asked
 *   skipConsent: boolean            grant every scope asked without showing the consent form
 *   ttl: { IdToken, AccessToken, … } seconds, over the defaults below
 *
 * Returns {
 *   issuer, clientId, clientSecret, port,
 *   metadata (the discovery document), authorizationEndpoint, tokenEndpoint,
 *   deviceAuthorizationEndpoint, userinfoEndpoint, jwksUri, endSessionEndpoint,
 *   privateJwk, publicJwk, jwks ({ keys: [publicJwk] }),
 *   accounts (live: change a person's groups or add a person mid-test),
 *   signIdToken(claims, { alg, kid, key, header }),
 *   redirectUris(), setRedirectUris([uri]), addRedirectUri(uri), setPostLogoutRedirectUris([uri]),
 *   provider (the oidc-provider instance), stop()
 * }.
 */
export async function startProvider(options = {}) {
  const clientSecret = randomBytes(24).toString('base64url');
  let redirectUris = [...(options.redirectUris ?? [])];
  let postLogoutRedirectUris = [...(options.postLogoutRedirectUris ?? [])];
  const accounts = {};
  for (const [id, account] of Object.entries({ ...ACCOUNTS, ...options.accounts })) {
    accounts[id] = { ...account, groups: [...(account.groups ?? [])] };
  }

  // The ID token's signing key, ours, so that a test may sign with it too.
  const kid = `test-${randomBytes(6).toString('hex')}`;
  const { privateKey } = await generateKeyPair('RS256', { modulusLength: 2048, extractable: true });
  const privateJwk = { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };
  const { d, p, q, dp, dq, qi, ...publicJwk } = privateJwk;

  // The port comes first: the issuer names it.
  const server = http.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const port = server.address().port;
  const issuer = `http://127.0.0.1:${port}`;

  const clientMetadata = (id) => {
    if (id !== CLIENT_ID) return undefined;
    // Until it has a redirect URI the client may only use the device flow
    // (oidc-provider refuses a code-flow client without one).
    const codeFlow = redirectUris.length > 0;
    return {
      client_id: CLIENT_ID,
      client_secret: clientSecret,
      client_name: 'Borealis',
      application_type: 'web',
      redirect_uris: redirectUris,
      post_logout_redirect_uris: postLogoutRedirectUris,
      grant_types: [...(codeFlow ? ['authorization_code'] : []), DEVICE_CODE_GRANT, 'refresh_token'],
      response_types: codeFlow ? ['code'] : [],
      // oidc-provider 9 takes the secret in the form (client_secret_post) as well.
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'RS256',
    };
  };

  const configuration = {
    adapter: memoryAdapter(clientMetadata),
    jwks: { keys: [privateJwk] },
    cookies: { keys: [randomBytes(32).toString('base64url')], names: COOKIE_NAMES },
    async findAccount(_ctx, id) {
      if (!Object.hasOwn(accounts, id)) return undefined;
      return {
        accountId: id,
        async claims() {
          const account = accounts[id];
          if (!account) return { sub: id };
          return {
            sub: id,
            name: account.name,
            preferred_username: id,
            email: account.email,
            email_verified: true,
            groups: [...account.groups],
          };
        },
      };
    },
    // Which claims a scope brings; `groups` is a scope of its own.
    claims: {
      openid: options.groupsWithoutScope ? ['sub', 'groups'] : ['sub'],
      profile: ['name', 'preferred_username'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
    // The claims of the scopes asked go in the ID token, not only in userinfo.
    conformIdTokenClaims: false,
    // PKCE (S256, the only method oidc-provider 9 knows) for every authorization request.
    pkce: { required: () => true },
    // A refresh token whenever the client may use one, offline_access or not.
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    features: {
      devInteractions: { enabled: true },
      deviceFlow: { enabled: true },
      revocation: { enabled: true },
      userinfo: { enabled: true },
      rpInitiatedLogout: { enabled: true },
    },
    ttl: {
      AuthorizationCode: 60,
      AccessToken: 600,
      IdToken: 600,
      DeviceCode: 600,
      RefreshToken: 3600,
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
      ...options.ttl,
    },
    clientBasedCORS: () => false,
  };
  if (options.skipConsent) {
    // A grant holding whatever was asked, so the consent prompt never comes up.
    configuration.loadExistingGrant = async (ctx) => {
      const { Grant } = ctx.oidc.provider;
      const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      const existing = grantId && (await Grant.find(grantId));
      if (existing) return existing;
      const grant = new Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
      grant.addOIDCScope(configuration.scopes.join(' '));
      await grant.save();
      return grant;
    };
  }

  let provider;
  try {
    provider = new Provider(issuer, configuration);
  } catch (err) {
    server.close();
    throw err;
  }
  provider.use(noExternalFonts);
  const handle = provider.callback();
  server.on('request', (req, res) => {
    // A browser asks for one; a 404 would be a console error on the provider's pages.
    if (req.url === '/favicon.ico') res.writeHead(204).end();
    else handle(req, res);
  });

  const stop = async () => {
    live.delete(stop);
    server.closeAllConnections();
    await new Promise((resolve) => server.close(() => resolve()));
  };
  live.add(stop);

  let metadata;
  try {
    const reply = await fetch(`${issuer}/.well-known/openid-configuration`);
    if (reply.status !== 200) throw new Error(`discovery answered ${reply.status}: ${await reply.text()}`);
    metadata = await reply.json();
  } catch (err) {
    await stop();
    throw err;
  }

  /**
   * An ID token signed with the provider's own key (or `key`), valid unless
   * `claims` says otherwise: iss, aud, iat, exp (10 minutes) are filled in,
   * and a claim set to undefined is left out. `alg: 'none'` makes an unsigned
   * one; an HS* alg signs with the client secret unless `key` is given.
   * `key` may be a JWK or a jose key; `kid: null` leaves the kid out.
   */
  async function signIdToken(claims = {}, { alg = 'RS256', kid: keyId = kid, key, header = {} } = {}) {
    const now = Math.floor(Date.now() / 1000);
    const payload = { iss: issuer, aud: CLIENT_ID, iat: now, exp: now + 600, ...claims };
    for (const name of Object.keys(payload)) if (payload[name] === undefined) delete payload[name];
    if (alg === 'none') return new UnsecuredJWT(payload).encode();
    let signingKey = key;
    if (signingKey && !(signingKey instanceof Uint8Array) && typeof signingKey === 'object' && 'kty' in signingKey) {
      signingKey = await importJWK(signingKey, alg);
    }
    if (!signingKey) signingKey = alg.startsWith('HS') ? new TextEncoder().encode(clientSecret) : privateKey;
    const protectedHeader = { alg, ...(keyId ? { kid: keyId } : {}), ...header };
    return new SignJWT(payload).setProtectedHeader(protectedHeader).sign(signingKey);
  }

  return {
    issuer,
    port,
    clientId: CLIENT_ID,
    clientSecret,
    metadata,
    authorizationEndpoint: metadata.authorization_endpoint,
    tokenEndpoint: metadata.token_endpoint,
    deviceAuthorizationEndpoint: metadata.device_authorization_endpoint,
    userinfoEndpoint: metadata.userinfo_endpoint,
    jwksUri: metadata.jwks_uri,
    endSessionEndpoint: metadata.end_session_endpoint,
    privateJwk,
    publicJwk,
    jwks: { keys: [publicJwk] },
    accounts,
    signIdToken,
    redirectUris: () => [...redirectUris],
    setRedirectUris: (uris) => {
      redirectUris = [...uris];
    },
    addRedirectUri: (uri) => {
      if (!redirectUris.includes(uri)) redirectUris = [...redirectUris, uri];
    },
    setPostLogoutRedirectUris: (uris) => {
      postLogoutRedirectUris = [...uris];
    },
    provider,
    stop,
  };
}

// --- In the browser -------------------------------------------------------

const STEP_MS = 15_000;

// The dev interaction forms: each posts a hidden `prompt` (login or consent).
const PROMPT = 'form input[name=prompt]';
const LOGIN_FIELD = 'form input[name=login]';
const PASSWORD_FIELD = 'form input[name=password]';
const SUBMIT = (prompt) => `form:has(input[name=prompt][value=${prompt}]) button[type=submit]`;
// The device flow's confirmation page: Continue (not the [ Abort ] button of the same form).
const DEVICE_CONFIRM = 'button[type=submit][form="op.deviceConfirmForm"]:not([name=abort])';

async function pageText(page) {
  return page.evaluate(() => document.body?.innerText ?? '').catch(() => '(no page)');
}

// Clicks and waits until the page has gone elsewhere and loaded.
async function submit(page, selector, what) {
  const before = page.url();
  await page.click(selector, { timeout: STEP_MS });
  try {
    await page.waitForURL((url) => url.href !== before, { waitUntil: 'load', timeout: STEP_MS });
  } catch (err) {
    throw new Error(`${what}: still on ${page.url()} after ${STEP_MS} ms; the page says:\n${await pageText(page)}`, { cause: err });
  }
}

// The prompt of the provider's form on the page, or null; a page that
// navigates while it is read (a client moving on by itself) has none.
async function currentPrompt(page) {
  try {
    return await page.evaluate((selector) => document.querySelector(selector)?.value ?? null, PROMPT);
  } catch (err) {
    if (!/Execution context was destroyed|navigation/.test(String(err?.message))) throw err;
    return null;
  }
}

// Answers the provider's prompts on the loaded page until none is left.
// With a username the login form must come up; with none it must not.
async function answerPrompts(page, username) {
  let loggedIn = false;
  const provider = new URL(page.url()).origin;
  for (let step = 0; step < 4; step++) {
    // Back at the client (which may move on by itself at once): no prompt is left.
    if (loggedIn && new URL(page.url()).origin !== provider) return;
    const prompt = await currentPrompt(page);
    if (prompt === 'login') {
      if (username == null) throw new Error(`the provider asks for a login, but no username was given; at ${page.url()}`);
      if (loggedIn) throw new Error(`the provider asks for a login again after logging in ${username}; the page says:\n${await pageText(page)}`);
      await page.fill(LOGIN_FIELD, username);
      await page.fill(PASSWORD_FIELD, 'any-password');
      await submit(page, SUBMIT('login'), `logging in ${username}`);
      loggedIn = true;
    } else if (prompt === 'consent') {
      await submit(page, SUBMIT('consent'), 'consenting');
    } else {
      if (username != null && !loggedIn) {
        throw new Error(`no login form came up for ${username} (already signed in at the provider? use a fresh browser context); at ${page.url()}`);
      }
      return;
    }
  }
  throw new Error(`the provider kept prompting; at ${page.url()}:\n${await pageText(page)}`);
}

/**
 * On the provider's login page (or on its way there): logs `username` in
 * with any password, then consents if asked, and returns once the browser
 * has left the provider's forms (at the client's redirect URI, say).
 */
export async function logIn(page, username) {
  try {
    await page.locator(PROMPT).first().waitFor({ state: 'attached', timeout: STEP_MS });
  } catch (err) {
    throw new Error(`no login form of the provider within ${STEP_MS} ms; at ${page.url()}:\n${await pageText(page)}`, { cause: err });
  }
  await page.waitForLoadState('load');
  await answerPrompts(page, username);
}

/**
 * Approves a device-flow request in the browser: opens its
 * verification_uri_complete, confirms the user code, logs `username` in
 * (null: the page's context is signed in at the provider already), consents
 * if asked, and waits for the provider's success page.
 */
export async function approveDevice(page, verificationUriComplete, username) {
  await page.goto(verificationUriComplete);
  // The page posts the user code itself, then shows the code to confirm.
  try {
    await page.locator(DEVICE_CONFIRM).waitFor({ timeout: STEP_MS });
  } catch (err) {
    throw new Error(`no device confirmation form within ${STEP_MS} ms; at ${page.url()}:\n${await pageText(page)}`, { cause: err });
  }
  await submit(page, DEVICE_CONFIRM, 'confirming the user code');
  await answerPrompts(page, username);
  const heading = await page.locator('h1').first().textContent({ timeout: STEP_MS }).catch(() => null);
  if (heading?.trim() !== 'Sign-in Success') {
    throw new Error(`the device flow did not end on the success page; at ${page.url()}:\n${await pageText(page)}`);
  }
}
