// The test OpenID provider (oidc.mjs) on its own, no relay: the
// authorization-code flow with PKCE and the device flow in Chromium, as the
// relay will run them.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { test } from 'node:test';

import { createLocalJWKSet, decodeJwt, jwtVerify } from 'jose';

import { eventually, launchBrowser, newPage } from './harness.mjs';
import { approveDevice, DEVICE_CODE_GRANT, logIn, startProvider } from './oidc.mjs';

/** A client's redirect target on loopback: keeps each request's query, answers 200. */
async function startRedirectTarget() {
  const hits = [];
  const server = http.createServer((req, res) => {
    hits.push(new URL(req.url, 'http://127.0.0.1'));
    res.writeHead(200, { 'content-type': 'text/html' }).end('<!DOCTYPE html><title>client</title><p>signed in</p>');
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}/callback`,
    hits,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

const basic = (op) => `Basic ${Buffer.from(`${encodeURIComponent(op.clientId)}:${encodeURIComponent(op.clientSecret)}`).toString('base64')}`;

async function tokenRequest(op, params) {
  const reply = await fetch(op.tokenEndpoint, {
    method: 'POST',
    headers: { authorization: basic(op) },
    body: new URLSearchParams(params),
  });
  return { status: reply.status, body: await reply.json() };
}

test('authorization code with PKCE: alice logs in, the ID token carries her name and groups', async (t) => {
  // No redirect URI yet: it is known once the client listens, as with a relay on port 0.
  const op = await startProvider();
  t.after(() => op.stop());
  assert.match(op.issuer, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.equal(op.metadata.issuer, op.issuer);
  assert.deepEqual(op.metadata.code_challenge_methods_supported, ['S256']);
  const client = await startRedirectTarget();
  t.after(() => client.close());
  op.addRedirectUri(client.url);

  const verifier = randomBytes(32).toString('base64url');
  const authUrl = (extra) => {
    const url = new URL(op.authorizationEndpoint);
    url.search = new URLSearchParams({
      client_id: op.clientId,
      response_type: 'code',
      redirect_uri: client.url,
      scope: 'openid profile email groups',
      state: 'state-123',
      nonce: 'nonce-456',
      ...extra,
    });
    return url.href;
  };

  // Without PKCE the provider refuses, back at the redirect URI.
  const refused = await fetch(authUrl({}), { redirect: 'manual' });
  assert.equal(refused.status, 303);
  const refusal = new URL(refused.headers.get('location'));
  assert.equal(refusal.searchParams.get('error'), 'invalid_request');
  assert.match(refusal.searchParams.get('error_description'), /PKCE/);

  const browser = await launchBrowser();
  const { page, consoleErrors, pageErrors, dialogs } = await newPage(browser);
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  await page.goto(authUrl({ code_challenge: challenge, code_challenge_method: 'S256' }));
  await logIn(page, 'alice');
  assert.equal(new URL(page.url()).origin + new URL(page.url()).pathname, client.url);
  const hit = await eventually('the redirect reaches the client', 10_000, () => client.hits.find((u) => u.searchParams.has('code')));
  assert.equal(hit.searchParams.get('state'), 'state-123');
  assert.equal(hit.searchParams.get('iss'), op.issuer);
  assert.deepEqual({ consoleErrors, pageErrors, dialogs }, { consoleErrors: [], pageErrors: [], dialogs: [] });

  // A wrong verifier does not redeem the code; the right one does (once).
  const code = hit.searchParams.get('code');
  const exchange = (codeVerifier) =>
    tokenRequest(op, { grant_type: 'authorization_code', code, redirect_uri: client.url, code_verifier: codeVerifier });
  const wrong = await exchange(randomBytes(32).toString('base64url'));
  assert.equal(wrong.status, 400);
  assert.equal(wrong.body.error, 'invalid_grant');
  const tokens = await exchange(verifier);
  assert.equal(tokens.status, 200, JSON.stringify(tokens.body));
  assert.ok(tokens.body.access_token && tokens.body.refresh_token, JSON.stringify(tokens.body));

  const { payload, protectedHeader } = await jwtVerify(tokens.body.id_token, createLocalJWKSet(op.jwks), {
    issuer: op.issuer,
    audience: 'borealis',
    algorithms: ['RS256'],
  });
  assert.equal(protectedHeader.kid, op.privateJwk.kid);
  assert.equal(payload.sub, 'alice');
  assert.equal(payload.name, 'Alice Approver');
  assert.equal(payload.email, 'alice@example.test');
  assert.deepEqual(payload.groups, ['team-a-approvers']);
  assert.equal(payload.nonce, 'nonce-456');
  assert.ok(payload.exp - payload.iat >= 300, `ID token lifetime ${payload.exp - payload.iat} s`);

  // The published JWKS is the key the test holds (and no private part of it).
  const published = await (await fetch(op.jwksUri)).json();
  assert.deepEqual(published.keys.map((k) => [k.kid, k.n, 'd' in k]), [[op.privateJwk.kid, op.privateJwk.n, false]]);

  // signIdToken: the provider's own key, valid by default, any claim overridden.
  const minted = await op.signIdToken({ sub: 'alice', groups: ['x'] });
  assert.equal((await jwtVerify(minted, createLocalJWKSet(op.jwks), { issuer: op.issuer, audience: 'borealis' })).payload.sub, 'alice');
  const elsewhere = await op.signIdToken({ sub: 'alice', iss: 'http://127.0.0.1:1' });
  await assert.rejects(jwtVerify(elsewhere, createLocalJWKSet(op.jwks), { issuer: op.issuer, audience: 'borealis' }), /"iss" claim/);
  const expired = await op.signIdToken({ sub: 'alice', exp: Math.floor(Date.now() / 1000) - 3600 });
  await assert.rejects(jwtVerify(expired, createLocalJWKSet(op.jwks), { issuer: op.issuer, audience: 'borealis' }), /"exp" claim/);
  assert.equal(decodeJwt(await op.signIdToken({ aud: undefined })).aud, undefined);
});

test('device flow: bob approves in the browser, the polled ID token carries his groups', async (t) => {
  const op = await startProvider(); // no redirect URI: the device flow needs none
  t.after(() => op.stop());

  const started = await fetch(op.deviceAuthorizationEndpoint, {
    method: 'POST',
    headers: { authorization: basic(op) },
    body: new URLSearchParams({ scope: 'openid profile email groups' }),
  });
  assert.equal(started.status, 200);
  const device = await started.json();
  assert.ok(device.device_code && device.user_code && device.verification_uri_complete, JSON.stringify(device));
  assert.ok(device.verification_uri_complete.startsWith(`${op.issuer}/`));

  const poll = () => tokenRequest(op, { grant_type: DEVICE_CODE_GRANT, device_code: device.device_code });
  const pending = await poll();
  assert.equal(pending.status, 400);
  assert.equal(pending.body.error, 'authorization_pending');

  const browser = await launchBrowser();
  const { page, consoleErrors, pageErrors } = await newPage(browser);
  await approveDevice(page, device.verification_uri_complete, 'bob');
  assert.deepEqual({ consoleErrors, pageErrors }, { consoleErrors: [], pageErrors: [] });

  const tokens = await eventually('the device code yields tokens', 15_000, async () => {
    const reply = await poll();
    if (reply.status === 200) return reply.body;
    assert.equal(reply.body.error, 'authorization_pending', JSON.stringify(reply.body));
    return null;
  });
  const verifyOptions = { issuer: op.issuer, audience: 'borealis', algorithms: ['RS256'] };
  const { payload } = await jwtVerify(tokens.id_token, createLocalJWKSet(op.jwks), verifyOptions);
  assert.equal(payload.sub, 'bob');
  assert.equal(payload.name, 'Bob Deployer');
  assert.deepEqual(payload.groups, ['team-b-deployers']);

  // A refresh brings a fresh ID token with the groups as they are now.
  op.accounts.bob.groups = ['team-b-deployers', 'team-a-approvers'];
  const refreshed = await tokenRequest(op, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token });
  assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
  const again = await jwtVerify(refreshed.body.id_token, createLocalJWKSet(op.jwks), verifyOptions);
  assert.deepEqual(again.payload.groups, ['team-b-deployers', 'team-a-approvers']);

  // The device code is spent: polling again is a replay, which revokes the grant and its refresh token.
  assert.equal((await poll()).body.error, 'invalid_grant');
  const revoked = await tokenRequest(op, { grant_type: 'refresh_token', refresh_token: refreshed.body.refresh_token ?? tokens.refresh_token });
  assert.equal(revoked.body.error, 'invalid_grant');
});

test('options: no consent form, groups without the groups scope; the secret in the form works too', async (t) => {
  const client = await startRedirectTarget();
  t.after(() => client.close());
  const op = await startProvider({
    redirectUris: [client.url],
    skipConsent: true,
    groupsWithoutScope: true,
  });
  t.after(() => op.stop());

  const browser = await launchBrowser();
  const { page } = await newPage(browser);
  const verifier = randomBytes(32).toString('base64url');
  const url = new URL(op.authorizationEndpoint);
  url.search = new URLSearchParams({
    client_id: op.clientId,
    response_type: 'code',
    redirect_uri: client.url,
    scope: 'openid',
    state: 's',
    code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
  });
  // Each prompt is a page of its own at /interaction/<uid>: the login form, and no consent form after it.
  const promptPages = [];
  page.on('request', (r) => {
    if (r.isNavigationRequest() && r.method() === 'GET' && new URL(r.url()).pathname.startsWith('/interaction/')) promptPages.push(r.url());
  });
  await page.goto(url.href);
  await logIn(page, 'alice');
  assert.equal(promptPages.length, 1, promptPages.join('\n'));
  const code = client.hits.find((u) => u.searchParams.has('code'))?.searchParams.get('code');
  assert.ok(code, 'no code at the redirect target');

  // client_secret_post: the client registered client_secret_basic, and oidc-provider takes either.
  const form = { grant_type: 'authorization_code', code, redirect_uri: client.url, code_verifier: verifier };
  const reply = await fetch(op.tokenEndpoint, {
    method: 'POST',
    body: new URLSearchParams({ ...form, client_id: op.clientId, client_secret: op.clientSecret }),
  });
  const tokens = await reply.json();
  assert.equal(reply.status, 200, JSON.stringify(tokens));
  const { payload } = await jwtVerify(tokens.id_token, createLocalJWKSet(op.jwks), { issuer: op.issuer, audience: 'borealis' });
  assert.deepEqual(payload.groups, ['team-a-approvers']);
  assert.equal(payload.name, undefined, 'no profile scope, no name');
});
