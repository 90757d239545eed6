// People signing in to the console through a real OpenID Connect provider
// (oidc-provider, in this process) in a real browser: each sees and does
// what the role bindings of their groups give them in their teams, and no
// more; another team's deployment does not exist for them.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { cli, cliJson, eventually, launchBrowser, newPage, startRelay } from './harness.mjs';
import { logIn, startProvider } from './oidc.mjs';

function writeFile(name, text) {
  const dir = mkdtempSync(path.join(tmpdir(), 'borealis-people-file-'));
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
}

async function ok(relay, ...args) {
  const out = await cli(relay, ...args);
  assert.equal(out.code, 0, `borealis ${args.join(' ')}: ${out.stderr}`);
  return out;
}

/** A relay whose console people sign in to through `op`; `options` adds to `startRelay`'s. */
async function relayFor(op, options = {}) {
  const relay = await startRelay({
    ...options,
    args: [
      '--oidc-issuer', op.issuer, '--oidc-client-id', op.clientId, '--oidc-scopes', 'openid profile email groups',
      ...(options.args ?? []),
    ],
    env: { BOREALIS_OIDC_CLIENT_SECRET: op.clientSecret },
  });
  op.addRedirectUri(`${relay.httpUrl}/sign-in/oidc/callback`);
  return relay;
}

/** Signs `username` in from the console's sign-in page; ends on `/agents`. */
async function signInAs(page, relay, username) {
  await page.goto(`${relay.httpUrl}/agents`);
  await page.waitForURL(/\/sign-in\?/);
  await Promise.all([page.waitForURL((url) => !url.href.startsWith(relay.httpUrl)), page.click('#sign-in-oidc')]);
  await logIn(page, username);
  await page.waitForURL(`${relay.httpUrl}/agents`);
}

const gated = (application, roles) => `application: ${application}
targets:
  prod:
    constraints:
      beforeDeployment:
        - pause:
            untilApproved: true${roles ? `\n            requiresRoles: [${roles}]` : ''}
`;

test("alice approves in her team; bob sees none of it and may not approve", async (t) => {
  const op = await startProvider({ skipConsent: true });
  t.after(op.stop);
  const relay = await relayFor(op);
  t.after(relay.stop);
  for (const team of ['team-a', 'team-b']) await ok(relay, 'teams', 'create', team);
  await ok(relay, '--team', 'team-a', 'role-bindings', 'create', '--group', 'team-a-approvers', '--role', 'approver');
  await ok(relay, '--team', 'team-b', 'role-bindings', 'create', '--group', 'team-b-deployers', '--role', 'deployer');
  for (const team of ['team-a', 'team-b']) {
    await ok(relay, '--team', team, 'agents', 'create', `${team}-rna`);
    await ok(relay, '--team', team, 'secrets', 'set', `${team}-token`, { input: 'a value of sixteen+' });
  }
  // Team a's approval asks for the group alice is in: a provider group counts as a role.
  const a = await cliJson(relay, '--team', 'team-a', 'deploy', '-f', writeFile('a.yml', gated('shop', 'team-a-approvers')));
  const b = await cliJson(relay, '--team', 'team-b', 'deploy', '-f', writeFile('b.yml', gated('books')));
  assert.equal(a.team, 'team-a');

  const browser = await launchBrowser();
  // Alice.
  const alice = await newPage(browser);
  await signInAs(alice.page, relay, 'alice');
  assert.equal(await alice.page.textContent('#signed-in-as'), 'Alice Approver');
  assert.match(await alice.page.textContent('#team'), /team-a/);
  const agents = await alice.page.textContent('main');
  assert.match(agents, /team-a-rna/);
  assert.doesNotMatch(agents, /team-b-rna/);
  await alice.page.goto(`${relay.httpUrl}/secrets`);
  assert.match(await alice.page.textContent('main'), /team-a-token/);
  assert.doesNotMatch(await alice.page.textContent('main'), /team-b-token/);
  await alice.page.goto(`${relay.httpUrl}/deployments`);
  assert.ok(await alice.page.$(`tr[data-deployment="${a.id}"]`), 'her team deployment is listed');
  assert.equal(await alice.page.$(`tr[data-deployment="${b.id}"]`), null, "team b's is not");
  // Another team's deployment by its URL does not exist for her.
  const elsewhere = await alice.page.goto(`${relay.httpUrl}/deployments/${b.id}`);
  assert.equal(elsewhere.status(), 404);
  // She approves her team's.
  await alice.page.goto(`${relay.httpUrl}/deployments/${a.id}`);
  const approve = '[data-target=prod] button:has-text("Approve")';
  assert.ok(!(await alice.page.isDisabled(approve)));
  await Promise.all([alice.page.waitForURL(`${relay.httpUrl}/deployments/${a.id}`), alice.page.click(approve)]);
  await eventually('the approved target deploys', 15_000, async () => {
    const shown = await cliJson(relay, 'deployments', 'show', a.id);
    return shown.state === 'succeeded' ? shown : undefined;
  });
  const shown = await cliJson(relay, 'deployments', 'show', a.id);
  assert.ok(shown.events.some((e) => e.message === 'target prod approved by Alice Approver'), JSON.stringify(shown.events));
  // The audit trail names her.
  const trail = await cliJson(relay, 'audit', '--team', 'team-a');
  const approved = trail.entries.find((e) => e.action === 'deployment.approve');
  assert.deepEqual(approved.actor, { kind: 'user', id: 'alice', name: 'Alice Approver' });

  // Bob.
  const bob = await newPage(browser);
  await signInAs(bob.page, relay, 'bob');
  assert.equal(await bob.page.textContent('#signed-in-as'), 'Bob Deployer');
  const bobAgents = await bob.page.textContent('main');
  assert.match(bobAgents, /team-b-rna/);
  assert.doesNotMatch(bobAgents, /team-a-rna/);
  const notHis = await bob.page.goto(`${relay.httpUrl}/deployments/${a.id}`);
  assert.equal(notHis.status(), 404, "team a's deployment does not exist for bob");
  // His own team's: a deployer may not approve; the button says why.
  await bob.page.goto(`${relay.httpUrl}/deployments/${b.id}`);
  assert.ok(await bob.page.isDisabled(approve));
  assert.match(
    await bob.page.textContent('[data-target=prod] .why-disabled'),
    /this needs the approve permission in team "team-b" \(a role that grants it: approver, admin\); you hold deployer/,
  );
  // A form posted anyway (its own session's CSRF token) is refused.
  const forged = await bob.page.evaluate(async ({ id }) => {
    const csrf = document.querySelector('input[name=csrf]').value;
    const reply = await fetch(`/deployments/${id}/targets/prod/approve`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `csrf=${encodeURIComponent(csrf)}`,
      redirect: 'manual',
    });
    return reply.status;
  }, { id: b.id });
  assert.equal(forged, 403);
  const still = await cliJson(relay, 'deployments', 'show', b.id);
  assert.equal(still.targets[0].state, 'awaiting_approval');
  // Team pages a deployer may not change: the secrets form is refused.
  const secrets = await bob.page.goto(`${relay.httpUrl}/audit`);
  assert.equal(secrets.status(), 403, 'the audit trail is for team admins');

  for (const who of [alice, bob]) {
    assert.deepEqual(who.dialogs, []);
    assert.deepEqual(who.pageErrors, []);
  }
});

test('a sign-in that comes back with another state, or none started, is refused and signs no one in', async (t) => {
  const op = await startProvider({ skipConsent: true });
  t.after(op.stop);
  const relay = await relayFor(op);
  t.after(relay.stop);
  const browser = await launchBrowser();
  const { page } = await newPage(browser, { watch: false });
  await page.goto(`${relay.httpUrl}/agents`);
  // A sign-in started for real (its sealed cookie set), then a callback
  // with another state than the one it left with: refused before the code
  // is even taken to the provider.
  const asked = [];
  page.on('request', (request) => asked.push(request.url()));
  await Promise.all([page.waitForURL((url) => !url.href.startsWith(relay.httpUrl)), page.click('#sign-in-oidc')]);
  // The state it left with, as the authorization request carried it.
  const state = asked.map((url) => new URL(url).searchParams.get('state')).find(Boolean);
  assert.ok(state, asked.join('\n'));
  const reply = await page.goto(`${relay.httpUrl}/sign-in/oidc/callback?code=any&state=${encodeURIComponent(`${state}x`)}`);
  assert.equal(reply.status(), 401);
  assert.match(await page.textContent('#sign-in-error'), /state does not match/);
  const agents = await page.goto(`${relay.httpUrl}/agents`);
  assert.match(agents.url(), /\/sign-in\?/, 'no session');

  // A callback with no sign-in started (no cookie) is refused too.
  const { page: fresh } = await newPage(browser, { watch: false });
  const unstarted = await fresh.goto(`${relay.httpUrl}/sign-in/oidc/callback?code=abc&state=def`);
  assert.equal(unstarted.status(), 401);
  assert.match(await fresh.textContent('#sign-in-error'), /expired or was started elsewhere/);
});

/** The claims of a JWT, unverified: to re-sign them changed. */
function claimsOf(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());
}

test("an ID token that is not the provider's, not for the relay, expired, unsigned, forged or replayed signs no one in", async (t) => {
  const op = await startProvider({ skipConsent: true });
  t.after(op.stop);
  const relay = await relayFor(op);
  t.after(relay.stop);
  await ok(relay, 'role-bindings', 'create', '--group', 'team-a-approvers', '--role', 'viewer');
  const { generateKeyPair, exportJWK } = await import('jose');
  const { privateKey: foreign } = await generateKeyPair('RS256', { extractable: true });
  const foreignJwk = await exportJWK(foreign);
  // The provider's token endpoint answers as it does, then the answer's ID
  // token is swapped for the one `tamper` makes of it (when set).
  let tamper = null;
  op.provider.use(async (ctx, next) => {
    await next();
    if (tamper && ctx.method === 'POST' && ctx.path.endsWith('/token') && ctx.body?.id_token) {
      ctx.body = { ...ctx.body, id_token: await tamper(ctx.body.id_token) };
    }
  });
  const browser = await launchBrowser();
  /** A sign-in as alice in a fresh context: the page it ends on. */
  async function signIn() {
    const { page } = await newPage(browser, { watch: false });
    await page.goto(`${relay.httpUrl}/agents`);
    await Promise.all([page.waitForURL((url) => !url.href.startsWith(relay.httpUrl)), page.click('#sign-in-oidc')]);
    await logIn(page, 'alice');
    await page.waitForURL((url) => url.href.startsWith(relay.httpUrl));
    await page.waitForLoadState('load');
    return page;
  }
  async function refused(why, expected) {
    const page = await signIn();
    const said = await page.$('#sign-in-error');
    assert.ok(said, `${why}: signed in anyway, at ${page.url()}`);
    assert.match(await said.textContent(), expected, why);
    const after = await page.goto(`${relay.httpUrl}/agents`);
    assert.match(after.url(), /\/sign-in\?/, `${why}: no session`);
    await page.context().close();
  }
  // A real sign-in first: its nonce is replayed below.
  let earlier = null;
  tamper = async (token) => {
    earlier = claimsOf(token);
    return token;
  };
  const fine = await signIn();
  await fine.waitForURL(`${relay.httpUrl}/agents`);
  assert.equal(await fine.textContent('#signed-in-as'), 'Alice Approver');

  const now = Math.floor(Date.now() / 1000);
  const changed = (overrides, options) => async (token) => op.signIdToken({ ...claimsOf(token), ...overrides }, options);
  const cases = [
    ['a wrong issuer', changed({ iss: 'http://127.0.0.1:1/elsewhere' }), /not acceptable: the ID token/],
    ['a wrong audience', changed({ aud: 'someone-else' }), /not acceptable: the ID token/],
    ['an expired token', changed({ iat: now - 1200, exp: now - 600 }), /not acceptable: the ID token/],
    ['a signature by another key', changed({}, { key: foreignJwk }), /not acceptable: the ID token/],
    ['alg none', changed({}, { alg: 'none' }), /not acceptable: the ID token/],
    ['a nonce of an earlier sign-in', async (token) => op.signIdToken({ ...claimsOf(token), nonce: earlier.nonce }), /not acceptable: the ID token/],
  ];
  for (const [why, swap, expected] of cases) {
    tamper = swap;
    await refused(why, expected);
  }
  tamper = null;

  // A code used twice: the callback of a sign-in, replayed with the sign-in's own cookie.
  const { page } = await newPage(browser, { watch: false });
  const seen = [];
  page.on('request', (request) => seen.push(request.url()));
  await page.goto(`${relay.httpUrl}/agents`);
  await Promise.all([page.waitForURL((url) => !url.href.startsWith(relay.httpUrl)), page.click('#sign-in-oidc')]);
  const sealed = (await page.context().cookies()).find((c) => c.name === 'borealis_sign_in');
  await logIn(page, 'alice');
  await page.waitForURL(`${relay.httpUrl}/agents`);
  const callback = seen.find((url) => url.includes('/sign-in/oidc/callback?'));
  assert.ok(callback && sealed, seen.join('\n'));
  const { page: replay } = await newPage(browser, { watch: false });
  await replay.context().addCookies([sealed]);
  const again = await replay.goto(callback);
  assert.equal(again.status(), 401);
  assert.match(await replay.textContent('#sign-in-error'), /refused the sign-in: its token endpoint answered 400/);

  // Every refusal is in the audit trail.
  const trail = await cliJson(relay, 'audit', '--action', 'console.sign-in');
  assert.ok(trail.entries.filter((e) => e.outcome === 'unauthenticated').length >= cases.length + 1, JSON.stringify(trail.entries));
});

test('borealis login signs a person in through the device flow; the CLI then acts as them', async (t) => {
  const { spawn } = await import('node:child_process');
  const { statSync } = await import('node:fs');
  const { binary } = await import('./harness.mjs');
  const { approveDevice } = await import('./oidc.mjs');
  const op = await startProvider({ skipConsent: true });
  t.after(op.stop);
  const relay = await relayFor(op);
  t.after(relay.stop);
  await ok(relay, 'teams', 'create', 'team-b');
  await ok(relay, '--team', 'team-b', 'role-bindings', 'create', '--group', 'team-b-deployers', '--role', 'deployer');
  const home = mkdtempSync(path.join(tmpdir(), 'borealis-login-'));
  const env = { ...process.env, BOREALIS_RELAY: relay.httpUrl, XDG_CONFIG_HOME: home };
  delete env.BOREALIS_ADMIN_TOKEN;
  delete env.BOREALIS_TOKEN;

  const login = spawn(binary('borealis'), ['login'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => login.kill('SIGKILL'));
  let stdout = '';
  let stderr = '';
  login.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
  login.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
  const exited = new Promise((resolve) => login.on('close', resolve));
  const link = await eventually('borealis login shows the link', 15_000, async () => stderr.match(/open (http\S+)/)?.[1]);
  assert.match(stderr, /enter the code \S+/);

  const browser = await launchBrowser();
  const { page } = await newPage(browser, { watch: false });
  await approveDevice(page, link, 'bob');
  assert.equal(await exited, 0, stderr);
  assert.match(stdout, /signed in as Bob Deployer until /);
  const kept = path.join(home, 'borealis', 'logins.json');
  assert.equal(statSync(kept).mode & 0o777, 0o600, 'only the user may read the kept token');
  const stored = JSON.parse(readFileSync(kept, 'utf8'))[relay.httpUrl];
  assert.match(stored.token, /^bpt_/);

  // The CLI now acts as bob: a deployment in his team, started by him.
  const run = (args) =>
    new Promise((resolve) => {
      const child = spawn(binary('borealis'), args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.setEncoding('utf8').on('data', (d) => (out += d));
      child.stderr.setEncoding('utf8').on('data', (d) => (err += d));
      child.on('close', (code) => resolve({ code, out, err }));
    });
  const deployed = await run(['--json', 'deploy', '-f', writeFile('b.yml', gated('books'))]);
  assert.equal(deployed.code, 0, deployed.err);
  const started = JSON.parse(deployed.out);
  assert.equal(started.team, 'team-b');
  assert.equal(started.startedBy, 'Bob Deployer');
  // He holds no approve permission: refused, naming it.
  const refused = await run(['approve', started.id, 'prod']);
  assert.notEqual(refused.code, 0);
  assert.match(refused.err, /needs the approve permission \(a role that grants it: approver, admin\); Bob Deployer holds deployer/);
  // Signed out, the CLI has no token left to send.
  const out = await run(['logout']);
  assert.equal(out.code, 0, out.err);
  const after = await run(['deployments', 'list']);
  assert.notEqual(after.code, 0);
  assert.match(after.err, /no token/);
});

/** Makes a personal token on the console's Personal tokens page; returns it (shown once). */
async function makeToken(page, relay, description) {
  await page.goto(`${relay.httpUrl}/tokens`);
  await page.fill('#token-description', description);
  await page.selectOption('#token-lifetime', '1');
  await Promise.all([page.waitForSelector('#personal-token'), page.click('button:has-text("Make token")')]);
  const token = (await page.textContent('#personal-token')).trim();
  assert.match(token, /^bpt_[0-9a-f]{16}_/);
  return token;
}

test('with the admin token off, a person in the admin group runs the organization; people make, use and revoke their own tokens', async (t) => {
  const { existsSync, rmSync } = await import('node:fs');
  const op = await startProvider({
    skipConsent: true,
    accounts: { carol: { name: 'Carol Admin', email: 'carol@example.test', groups: ['platform-admins'] } },
  });
  t.after(op.stop);
  const browser = await launchBrowser();
  // First with the admin token: a console session signed in with it, and its file in the data dir.
  const dataDir = mkdtempSync(path.join(tmpdir(), 'borealis-admin-off-'));
  t.after(() => rmSync(dataDir, { recursive: true, force: true }));
  const before = await relayFor(op, { adminToken: null, dataDir });
  const token = readFileSync(path.join(dataDir, 'admin-token'), 'utf8').trim();
  const admin = await newPage(browser, { watch: false });
  await admin.page.goto(`${before.httpUrl}/sign-in`);
  await admin.page.fill('#token', token);
  await Promise.all([admin.page.waitForURL(`${before.httpUrl}/agents`), admin.page.click('button[type=submit]')]);
  assert.equal((await cli(before, 'teams', 'list', { env: { BOREALIS_ADMIN_TOKEN: token } })).code, 0, 'the token works');
  await before.stop();

  // Then the same state, the admin token off: the file's token is refused, and the session ended.
  const relay = await relayFor(op, {
    adminToken: null,
    dataDir,
    args: ['--oidc-admin-group', 'platform-admins', '--disable-admin-token'],
  });
  t.after(relay.stop);
  assert.ok(existsSync(path.join(dataDir, 'admin-token')), 'the file is still there');
  const noAdmin = await cli(relay, 'teams', 'list', { env: { BOREALIS_ADMIN_TOKEN: token } });
  assert.notEqual(noAdmin.code, 0);
  assert.match(noAdmin.stderr, /wrong token/);
  const ended = await admin.page.goto(`${relay.httpUrl}/agents`);
  assert.match(new URL(ended.url()).pathname, /^\/sign-in/, 'the admin session signed in before has ended');
  const form = await fetch(`${relay.httpUrl}/sign-in`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: `token=${encodeURIComponent(token)}&next=/agents`,
    redirect: 'manual',
  });
  assert.equal(form.status, 401);
  assert.match(await form.text(), /The admin token is turned off on this relay/);

  // Carol, in the admin group, signs in; the page offers no admin token.
  const carol = await newPage(browser);
  await carol.page.goto(`${relay.httpUrl}/agents`);
  await carol.page.waitForURL(/\/sign-in\?/);
  assert.equal(await carol.page.$('#token'), null, 'no admin token field');
  await Promise.all([carol.page.waitForURL((url) => !url.href.startsWith(relay.httpUrl)), carol.page.click('#sign-in-oidc')]);
  await logIn(carol.page, 'carol');
  await carol.page.waitForURL(`${relay.httpUrl}/agents`);
  // She makes a token for her automation and, with it, a team and its bindings.
  const carols = await makeToken(carol.page, relay, 'platform automation');
  const asCarol = { env: { BOREALIS_TOKEN: carols } };
  await ok(relay, 'teams', 'create', 'team-a', asCarol);
  await ok(relay, '--team', 'team-a', 'role-bindings', 'create', '--group', 'team-a-approvers', '--role', 'approver', asCarol);
  const made = (await cliJson(relay, 'audit', '--action', 'team.create', asCarol)).entries[0];
  assert.deepEqual(made.actor, { kind: 'user', id: 'carol', name: 'Carol Admin' });

  // Alice makes a token in the console and keeps it for the CLI.
  const alice = await newPage(browser);
  await signInAs(alice.page, relay, 'alice');
  const alices = await makeToken(alice.page, relay, 'laptop');
  assert.ok(await alice.page.$('tr[data-token] >> text=laptop'), 'listed');
  const home = mkdtempSync(path.join(tmpdir(), 'borealis-token-login-'));
  const asAlice = { env: { XDG_CONFIG_HOME: home } };
  const kept = await cli(relay, 'login', '--with-token', { ...asAlice, input: `${alices}\n` });
  assert.equal(kept.code, 0, kept.stderr);
  assert.match(kept.stdout, /signed in as Alice Approver until /);
  const hers = await cliJson(relay, 'personal-tokens', 'list', asAlice);
  assert.deepEqual(hers.personalTokens.map((p) => [p.description, p.state, p.person.id]), [['laptop', 'live', 'alice']]);
  // She is no organization admin: no team, no one else's tokens.
  const noTeam = await cli(relay, 'teams', 'create', 'team-z', asAlice);
  assert.match(noTeam.stderr, /needs the organization permission/);
  const notAll = await cli(relay, 'personal-tokens', 'list', '--all', asAlice);
  assert.match(notAll.stderr, /only an organization admin may reach another person's personal tokens/);
  const notHers = await cli(relay, 'personal-tokens', 'revoke', carols.split('_')[1], asAlice);
  assert.match(notHers.stderr, /no live personal token "[0-9a-f]{16}" that you may revoke/);

  // She revokes it in the console; the CLI is refused from then on.
  const id = alices.split('_')[1];
  await alice.page.goto(`${relay.httpUrl}/tokens`);
  await Promise.all([alice.page.waitForURL(`${relay.httpUrl}/tokens/${id}/revoke`), alice.page.click(`tr[data-token="${id}"] a:has-text("Revoke")`)]);
  await Promise.all([alice.page.waitForURL(`${relay.httpUrl}/tokens`), alice.page.click('button:has-text("Revoke the token")')]);
  assert.match(await alice.page.textContent(`tr[data-token="${id}"]`), /revoked/);
  const refused = await cli(relay, 'personal-tokens', 'list', asAlice);
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /the personal token of Alice Approver was revoked/);

  // Carol sees every person's, alice's revoked one among them, and the trail names who did what.
  const everyone = await cliJson(relay, 'personal-tokens', 'list', '--all', asCarol);
  const states = Object.fromEntries(everyone.personalTokens.map((p) => [p.description, `${p.person.id} ${p.state}`]));
  assert.deepEqual(states, { laptop: 'alice revoked', 'platform automation': 'carol live' });
  const revoked = (await cliJson(relay, 'audit', '--action', 'personal-token.revoke', asCarol)).entries[0];
  assert.deepEqual(revoked.actor, { kind: 'user', id: 'alice', name: 'Alice Approver' });
  assert.equal(revoked.outcome, 'allowed');
  // Each token made is in the trail by its id, as its person, and under no team.
  const tokensMade = (await cliJson(relay, 'audit', '--action', 'personal-token.create', asCarol)).entries;
  assert.deepEqual(
    tokensMade.map((e) => [e.actor.id, e.object, e.team ?? null]).sort(),
    [['alice', `/tokens/${id}`, null], ['carol', `/tokens/${carols.split('_')[1]}`, null]],
  );
  // Alice leaves: an admin revokes every live token of hers (none is left, and carol's stay);
  // then carol revokes all of her own at once.
  const gone = await cliJson(relay, 'personal-tokens', 'revoke-all', '--person', 'alice', asCarol);
  assert.deepEqual(gone, { person: 'alice', revoked: 0 });
  const live = await cliJson(relay, 'personal-tokens', 'list', '--all', '--live', asCarol);
  assert.deepEqual(live.personalTokens.map((p) => p.description), ['platform automation']);
  const own = await cliJson(relay, 'personal-tokens', 'revoke-all', asCarol);
  assert.deepEqual(own, { person: 'carol', revoked: 1 });
  const after = await cli(relay, 'teams', 'list', asCarol);
  assert.match(after.stderr, /the personal token of Carol Admin was revoked/);
});
