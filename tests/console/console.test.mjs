// The web console in a real browser (Debian's Chromium, driven by
// playwright-core) against a real relay, agent and CLI on loopback.

import assert from 'node:assert/strict';
import http from 'node:http';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import {
  callback,
  cli,
  cliJson,
  createClient,
  eventually,
  launchBrowser,
  newPage,
  repoRoot,
  startAgent,
  startRelay,
} from './harness.mjs';

// Where the screenshots go; `CONSOLE_SCREENSHOTS=docs/console` refreshes the README's.
const SCREENSHOTS = path.resolve(repoRoot, process.env.CONSOLE_SCREENSHOTS || 'target/console-screenshots');
const LIVE_WITHIN_MS = 15_000;

async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOTS, name), fullPage: true });
}

async function signIn(page, relay) {
  await page.goto(`${relay.httpUrl}/sign-in`);
  await page.fill('#token', relay.adminToken);
  await Promise.all([page.waitForURL((url) => url.pathname !== '/sign-in'), page.click('button[type=submit]')]);
}

/** Waits until the first element matching `selector` holds `text`. */
async function waitForText(page, selector, text, timeout = LIVE_WITHIN_MS) {
  try {
    await page.waitForFunction(
      ([selector, text]) => document.querySelector(selector)?.textContent.includes(text),
      [selector, text],
      { timeout },
    );
  } catch (err) {
    const found = await page.evaluate((selector) => document.querySelector(selector)?.textContent, selector);
    throw new Error(`${selector} did not come to hold ${JSON.stringify(text)}; it holds ${JSON.stringify(found)}`, { cause: err });
  }
}

/** Marks the page, so that a later check can tell it was never reloaded. */
async function markPage(page) {
  await page.evaluate(() => {
    window.borealisTestMark = 'not reloaded';
  });
}

async function assertNotReloaded(page) {
  assert.equal(await page.evaluate(() => window.borealisTestMark), 'not reloaded', 'the page was reloaded');
}

/**
 * An external system that takes webhooks (202) and keeps each call's
 * callback URI, so the test decides when and what it calls back.
 */
async function startExternalSystem() {
  const calls = [];
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      calls.push({ url: req.url, callbackUri: req.headers.location });
      res.writeHead(202).end();
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${server.address().port}`,
    calls,
    waitForCalls: (count) =>
      eventually(`${count} webhook call(s)`, LIVE_WITHIN_MS, () => calls.length >= count && calls),
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

function webhooksYaml(external) {
  return `webhooks:
  - name: smoke-tests
    method: POST
    uriTemplate: http://${external.address}/smoke-tests
    networkMode: direct
    headers:
      - key: Location
        value: '{{armory.callbackUri}}/callback'
`;
}

function writeFile(name, text) {
  const dir = mkdtempSync(path.join(tmpdir(), 'borealis-console-file-'));
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
}

test('signing in: a wrong token is refused, pages redirect to the sign-in, sign-out ends the session', async (t) => {
  const relay = await startRelay();
  t.after(relay.stop);
  const browser = await launchBrowser();
  const { page, consoleErrors, pageErrors } = await newPage(browser);

  // Without a session every page sends the browser to the sign-in, and back after.
  for (const route of ['/agents', '/deployments', '/runs', '/secrets', '/clients', '/']) {
    await page.goto(`${relay.httpUrl}${route}`);
    const url = new URL(page.url());
    assert.equal(url.pathname, '/sign-in', `${route} without a session`);
    assert.equal(url.searchParams.get('next'), route);
  }
  await page.goto(`${relay.httpUrl}/deployments`);
  assert.match(await page.textContent('#token-help'), /admin-token[\s\S]*BOREALIS_ADMIN_TOKEN/);

  const refused = page.waitForResponse((r) => r.url().endsWith('/sign-in') && r.request().method() === 'POST');
  await page.fill('#token', 'not-the-admin-token');
  await page.click('button[type=submit]');
  assert.equal((await refused).status(), 401);
  assert.equal(new URL(page.url()).pathname, '/sign-in');
  assert.match(await page.textContent('[role=alert]'), /not the admin token/);
  assert.deepEqual(await page.context().cookies(), [], 'a refused sign-in sets no cookie');

  await page.fill('#token', relay.adminToken);
  await Promise.all([page.waitForURL(`${relay.httpUrl}/deployments`), page.click('button[type=submit]')]);
  assert.equal(await page.textContent('h1'), 'Deployments');

  const [cookie] = await page.context().cookies();
  assert.equal(cookie.name, 'borealis_console');
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, 'Strict');
  const hours = (cookie.expires * 1000 - Date.now()) / 3_600_000;
  assert.ok(hours > 11.9 && hours <= 12, `the session expires in 12 hours, not ${hours}`);
  assert.equal(await page.evaluate(() => document.cookie), '', 'script cannot read the session cookie');

  // The headers of a signed-in page, of the sign-in page and of an asset.
  for (const route of ['/agents', '/sign-in', '/assets/console.js']) {
    const response = await page.request.get(`${relay.httpUrl}${route}`);
    assert.equal(response.status(), 200, route);
    const headers = response.headers();
    if (route !== '/assets/console.js') assert.equal(headers['cache-control'], 'no-store', route);
    const csp = headers['content-security-policy'];
    assert.match(csp, /default-src 'none'/, route);
    assert.match(csp, /script-src 'self'(;|$)/, route);
    assert.match(csp, /frame-ancestors 'none'/, route);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/, route);
    assert.equal(headers['x-frame-options'], 'DENY', route);
    assert.equal(headers['x-content-type-options'], 'nosniff', route);
  }

  // After signing in, `next` leads only to a path on this site.
  for (const next of ['https://evil.example/', '//evil.example/', '/\t/evil.example', '/\\evil.example']) {
    // Outside the browser, whose session this would replace.
    const reply = await fetch(`${relay.httpUrl}/sign-in`, {
      method: 'POST',
      redirect: 'manual',
      body: new URLSearchParams({ token: relay.adminToken, next }),
    });
    assert.equal(reply.status, 303, next);
    assert.equal(reply.headers.get('location'), '/agents', `next=${JSON.stringify(next)}`);
  }

  await Promise.all([page.waitForURL((url) => url.pathname === '/sign-in'), page.click('text=Sign out')]);
  await page.goto(`${relay.httpUrl}/agents`);
  assert.equal(new URL(page.url()).pathname, '/sign-in', 'signed out');
  // The old cookie, presented again, is refused: sign-out ended the session on the relay.
  const replay = await fetch(`${relay.httpUrl}/agents`, {
    headers: { cookie: `${cookie.name}=${cookie.value}` },
    redirect: 'manual',
  });
  assert.equal(replay.status, 303);
  assert.match(replay.headers.get('location'), /^\/sign-in/);

  assert.deepEqual(pageErrors, []);
  assert.deepEqual(consoleErrors.filter((e) => !e.text.includes('401')), []);
});

test('an agent registered in the browser connects, shows up without a reload, and goes when killed', async (t) => {
  const relay = await startRelay();
  t.after(relay.stop);
  const browser = await launchBrowser();
  const { page, dialogs, consoleErrors, pageErrors } = await newPage(browser);
  await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: relay.httpUrl });
  await signIn(page, relay);
  assert.equal(new URL(page.url()).pathname, '/agents');

  await page.fill('#agent-id', 'edge-1');
  await page.click('text=Register agent');
  await page.waitForSelector('#new-credentials');
  const clientId = (await page.textContent('#client-id')).trim();
  const clientSecret = (await page.textContent('#client-secret')).trim();
  assert.match(clientId, /^agt_/);
  assert.match(clientSecret, /^bsk_/);
  const command = await page.textContent('#start-command');
  assert.ok(command.includes(`--relay ${relay.agentsUrl}`), command);
  assert.ok(command.includes(clientId) && command.includes('--client-secret-file '), command);
  assert.ok(!command.includes(clientSecret), `the secret is not in the command: ${command}`);
  await page.click('button[data-copy=client-secret]');
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), clientSecret, 'Copy copies the secret');

  // A failed registration names the problem and keeps what was typed.
  await page.fill('#agent-id', 'edge 1!');
  await page.evaluate(() => document.querySelector('#agent-id').removeAttribute('pattern'));
  await page.click('text=Register agent');
  assert.match(await page.textContent('[role=alert]'), /invalid agent identifier "edge 1!"/);
  assert.equal(await page.inputValue('#agent-id'), 'edge 1!');
  assert.equal(await page.$('#new-credentials'), null, 'the secret is not shown again');

  await page.goto(`${relay.httpUrl}/agents`);
  await waitForText(page, 'tr[data-agent="edge-1"] .status', 'disconnected');
  await markPage(page);

  const agent = await startAgent({ relay, clientId, clientSecret });
  // The badge's class, not its text: "disconnected" contains "connected".
  await page.waitForSelector('tr[data-agent="edge-1"] .status.ok', { timeout: LIVE_WITHIN_MS });
  assert.equal(await page.textContent('tr[data-agent="edge-1"] .status'), 'connected');
  await page.waitForSelector('tr[data-agent="edge-1"] [data-instance]');
  const instance = await page.textContent('tr[data-agent="edge-1"] [data-instance]');
  for (const fact of ['Version', 'Address', '127.0.0.1', 'Connected since', 'Last heartbeat', 'In flight']) {
    assert.ok(instance.includes(fact), `${fact} in ${instance}`);
  }
  await assertNotReloaded(page);
  await screenshot(page, 'console-agents.png');

  await agent.kill();
  await page.waitForSelector('tr[data-agent="edge-1"] .status.off', { timeout: LIVE_WITHIN_MS });
  assert.equal(await page.textContent('tr[data-agent="edge-1"] .status'), 'disconnected');
  assert.equal(await page.$('tr[data-agent="edge-1"] [data-instance]'), null);
  await assertNotReloaded(page);

  // Revoking asks first, on a page of its own.
  await Promise.all([page.waitForURL(`${relay.httpUrl}/agents/edge-1/revoke`), page.click('tr[data-agent="edge-1"] a:has-text("Revoke")')]);
  await Promise.all([page.waitForURL(`${relay.httpUrl}/agents`), page.click('a.quiet:text-is("Cancel")')]);
  assert.equal((await cliJson(relay, 'agents', 'list')).agents.length, 1, 'cancel revokes nothing');
  await Promise.all([page.waitForURL(`${relay.httpUrl}/agents/edge-1/revoke`), page.click('tr[data-agent="edge-1"] a:has-text("Revoke")')]);
  await Promise.all([page.waitForURL(`${relay.httpUrl}/agents`), page.click('button:has-text("Revoke edge-1")')]);
  assert.equal(await page.$('tr[data-agent="edge-1"]'), null);
  assert.deepEqual((await cliJson(relay, 'agents', 'list')).agents, []);

  assert.deepEqual(dialogs, []);
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(consoleErrors.filter((e) => !e.text.includes('400')), []);
});

test('a deployment approved in the browser progresses to deployed without a reload', async (t) => {
  const relay = await startRelay();
  t.after(relay.stop);
  const external = await startExternalSystem();
  t.after(external.close);
  const client = await createClient(relay, 'ci-system');
  const file = writeFile(
    'deploy.yml',
    `application: shop
targets:
  staging:
    constraints:
      beforeDeployment:
        - pause:
            untilApproved: true
            approvalExpiration: {duration: 2, unit: hours}
  prod:
    constraints:
      dependsOn: [staging]
      beforeDeployment:
        - runWebhook:
            name: smoke-tests
${webhooksYaml(external)}`,
  );
  const started = await cliJson(relay, 'deploy', '-f', file);
  const id = started.id;
  assert.ok(id, JSON.stringify(started));

  const browser = await launchBrowser();
  const { page, dialogs, consoleErrors, pageErrors } = await newPage(browser);
  await page.setViewportSize({ width: 1280, height: 900 });
  await signIn(page, relay);
  await page.click('text=Deployments');
  await waitForText(page, `tr[data-deployment="${id}"]`, 'awaiting approval');
  await Promise.all([page.waitForURL(`${relay.httpUrl}/deployments/${id}`), page.click(`tr[data-deployment="${id}"] a`)]);

  await waitForText(page, '[data-target=staging] .state', 'awaiting approval');
  assert.equal(await page.textContent('[data-target=prod] .state'), 'waiting');
  assert.equal(await page.locator('svg.graph .edge').count(), 1, 'one dependsOn arrow');
  const nodes = await page.locator('svg.graph text.node-name').allTextContents();
  assert.deepEqual(nodes.sort(), ['prod', 'staging']);
  const steps = await page.locator('[data-target=staging] ol.steps li').allTextContents();
  assert.deepEqual(
    steps.map((step) => step.replace(/\s+/g, ' ').replace(/ — .*/, '').trim()),
    ['current beforeDeployment: manual approval', 'pending deploy', 'pending promote'],
  );
  // The headline names what the target waits for, and until when.
  const waiting = await page.textContent('[data-target=staging] [data-waiting]');
  assert.match(waiting, /^Waiting for a manual approval, until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$/, waiting);
  await Promise.all([
    page.waitForURL(`${relay.httpUrl}/deployments/${id}`),
    page.click('[data-target=staging] button:has-text("Approve")'),
  ]);
  await markPage(page);
  // The live feed the page follows, watched beside it: the relay must announce the changes.
  await page.evaluate((id) => {
    window.borealisChanges = 0;
    new EventSource(`/deployments/${id}/live`).addEventListener('change', () => (window.borealisChanges += 1));
  }, id);

  // From here on the page changes only by itself, as the deployment moves on.
  await waitForText(page, '[data-target=staging] .state', 'deployed');
  assert.equal(await page.$('[data-target=staging] .actions'), null, 'nothing is left to approve');
  const [prodCall] = await external.waitForCalls(1);
  await waitForText(page, '[data-target=prod] .runs', 'awaiting callback');
  await waitForText(page, '[data-target=prod] [data-waiting]', 'Waiting for webhook smoke-tests: its callback, until ');
  await screenshot(page, 'console-deployment.png');
  const reply = await callback(relay, prodCall.callbackUri, { success: true, mdMessage: 'prod: **42** tests passed' }, client);
  assert.equal(reply.status, 200, reply.body);
  await waitForText(page, '[data-target=prod] .state', 'deployed');
  await waitForText(page, '#deployment-state', 'succeeded');
  assert.match(await page.textContent('[role=status]#live-status'), /^Updated at /, 'the change was announced');
  assert.equal(await page.textContent('[data-target=prod] .md-message strong'), '42');
  assert.equal(await page.textContent('#events .md-message strong'), '42', 'event messages render as Markdown too');
  assert.ok(await page.evaluate(() => window.borealisChanges) > 0, 'the live feed announced the changes');
  const prodSteps = await page.locator('[data-target=prod] ol.steps li').allTextContents();
  assert.equal(prodSteps.length, 3);
  assert.ok(prodSteps.every((step) => step.trim().startsWith('done')), prodSteps.join(' | '));
  await assertNotReloaded(page);
  const events = await page.textContent('#events');
  assert.match(events, /target staging deployed/);
  // The step's run links back to its deployment.
  await Promise.all([page.waitForURL(/\/runs\//), page.click('[data-target=prod] .runs a')]);
  assert.equal(await page.getAttribute('#run-deployment', 'href'), `/deployments/${id}`);
  await Promise.all([page.waitForURL(`${relay.httpUrl}/deployments/${id}`), page.click('#run-deployment')]);
  // The approval given in the browser is in the audit trail, with its actor.
  await Promise.all([page.waitForURL(`${relay.httpUrl}/audit`), page.click('nav >> text=Audit')]);
  const approved = await page.textContent('tr[data-action="deployment.approve"]');
  assert.match(approved, /admin: the bootstrap admin token \(console\)/, approved);
  assert.match(approved, /allowed/, approved);
  assert.match(approved, new RegExp(`/deployments/${id}/targets/staging/approve`), approved);

  assert.deepEqual(dialogs, []);
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(consoleErrors, []);
});

test('an approval needing two people counts one from the browser and waits; one who may not approve is told why', async (t) => {
  const relay = await startRelay();
  t.after(relay.stop);
  const made = await cli(relay, 'service-accounts', 'create', 'lead', '--team', 'default', '--role', 'approver');
  assert.equal(made.code, 0, made.stderr);
  const lead = made.stdout.split('\n').find((l) => l.startsWith('token: ')).slice('token: '.length).trim();
  const gated = (required) => `application: shop
targets:
  prod:
    constraints:
      beforeDeployment:
        - pause:
            untilApproved: true
            requiredApprovals: ${required}
`;
  const { id } = await cliJson(relay, 'deploy', '-f', writeFile('two.yml', gated(2)));

  const browser = await launchBrowser();
  const { page, dialogs, consoleErrors, pageErrors } = await newPage(browser);
  await signIn(page, relay);
  await page.goto(`${relay.httpUrl}/deployments/${id}`);
  await waitForText(page, '[data-target=prod] .state', 'awaiting approval');
  assert.equal(await page.textContent('[data-target=prod] [data-approvals]'), '0 of 2 approvals: no one yet');
  const approve = '[data-target=prod] button:has-text("Approve")';
  await Promise.all([page.waitForURL(`${relay.httpUrl}/deployments/${id}`), page.click(approve)]);
  await waitForText(page, '[data-target=prod] [data-approvals]', '1 of 2 approvals: the bootstrap admin token (console)');
  assert.equal(await page.textContent('[data-target=prod] .state'), 'awaiting approval', 'one approval is not enough');
  assert.ok(await page.isDisabled(approve), 'the same person cannot approve twice');
  assert.match(await page.textContent('[data-target=prod] .why-disabled'), /You approved it already; it waits for approvals from others/);
  const reason = await page.getAttribute(approve, 'aria-describedby');
  assert.ok(reason && (await page.$(`#${reason}`)), 'the reason is tied to the button');

  // The second person, through the CLI: the target proceeds.
  const second = await cli(relay, 'approve', id, 'prod', { env: { BOREALIS_TOKEN: lead } });
  assert.equal(second.code, 0, second.stderr);
  await waitForText(page, '[data-target=prod] .state', 'deployed');
  assert.match(await page.textContent('#events'), /target prod approved by the bootstrap admin token \(console\), lead \(default\)/);

  // The team forbids approving one's own deployment; the admin token started the next one.
  const forbid = await cli(relay, 'teams', 'update', 'default', '--forbid-self-approval', 'true');
  assert.equal(forbid.code, 0, forbid.stderr);
  const own = await cliJson(relay, 'deploy', '-f', writeFile('one.yml', gated(1)));
  await page.goto(`${relay.httpUrl}/deployments/${own.id}`);
  await waitForText(page, '[data-target=prod] .state', 'awaiting approval');
  assert.ok(await page.isDisabled(approve));
  assert.match(
    await page.textContent('[data-target=prod] .why-disabled'),
    new RegExp(`the bootstrap admin token \\(console\\) started deployment ${own.id} and may not approve it: team "default" forbids approving one's own deployment`),
  );
  assert.ok(!(await page.isDisabled('[data-target=prod] button:has-text("Reject")')), 'rejecting stays open');
  await screenshot(page, 'console-approval-refused.png');

  assert.deepEqual(dialogs, []);
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(consoleErrors, []);
});

test('a deployment aborted in the browser asks first, then ends aborted and frees its application', async (t) => {
  const relay = await startRelay();
  t.after(relay.stop);
  const file = writeFile(
    'abort.yml',
    `application: shop
artifacts:
  web: registry.example/shop:1.2.3
targets:
  staging:
    constraints:
      beforeDeployment:
        - pause:
            untilApproved: true
`,
  );
  const started = await cliJson(relay, 'deploy', '-f', file);
  const id = started.id;
  assert.ok(id, JSON.stringify(started));

  const browser = await launchBrowser();
  const { page, dialogs, consoleErrors, pageErrors } = await newPage(browser);
  await signIn(page, relay);
  await page.goto(`${relay.httpUrl}/deployments/${id}`);
  await waitForText(page, '[data-target=staging] .state', 'awaiting approval');
  assert.match(await page.textContent('#artifacts'), /web\s+registry\.example\/shop:1\.2\.3/, 'what is deployed is shown');
  // The link asks first; Cancel leaves the deployment as it was.
  await Promise.all([page.waitForURL(`${relay.httpUrl}/deployments/${id}/abort`), page.click('#abort')]);
  assert.match(await page.textContent('h1'), /Abort the shop deployment\?/);
  await Promise.all([page.waitForURL(`${relay.httpUrl}/deployments/${id}`), page.click('a.quiet:text-is("Cancel")')]);
  assert.equal(await page.textContent('#deployment-state'), 'running');
  await Promise.all([page.waitForURL(`${relay.httpUrl}/deployments/${id}/abort`), page.click('#abort')]);
  await Promise.all([
    page.waitForURL(`${relay.httpUrl}/deployments/${id}`),
    page.click('button:has-text("Abort the deployment")'),
  ]);
  await waitForText(page, '#deployment-state', 'aborted');
  await waitForText(page, '[data-target=staging] .state', 'cancelled');
  assert.equal(await page.$('#abort'), null, 'an ended deployment offers no abort');
  assert.match(await page.textContent('#events'), /aborted in the console/);
  // The application is free for the next deployment at once.
  const next = await cliJson(relay, 'deploy', '-f', file);
  assert.ok(next.id && next.id !== id, JSON.stringify(next));

  assert.deepEqual(dialogs, []);
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(consoleErrors, []);
});

test("a callback's mdMessage renders bold and links, and nothing in it runs", async (t) => {
  const relay = await startRelay();
  t.after(relay.stop);
  const external = await startExternalSystem();
  t.after(external.close);
  const client = await createClient(relay, 'scanner');
  const file = writeFile('hooks.yml', `application: shop\ntargets:\n  staging: {}\n${webhooksYaml(external)}`);
  const run = await cliJson(relay, 'webhook', 'run', '-f', file, '--name', 'smoke-tests', '--environment', 'staging');
  const [call] = await external.waitForCalls(1);
  const message = [
    '**bold** and [the report](https://reports.example/run/7)',
    '<script>window.borealisXss = "script"; alert("script")</script>',
    '<img src=x onerror="window.borealisXss = \'img\'; alert(\'img\')">',
    '[click me](javascript:alert("link"))',
    '<a href="https://ok.example" onclick="alert(\'click\')">raw link</a>',
    '<iframe src="https://evil.example"></iframe><style>body{display:none}</style>',
  ].join('\n\n');
  assert.equal((await callback(relay, call.callbackUri, { success: false, mdMessage: message }, client)).status, 200);

  const browser = await launchBrowser();
  const { page, dialogs, consoleErrors, pageErrors } = await newPage(browser);
  await page.setViewportSize({ width: 1280, height: 900 });
  await signIn(page, relay);
  await page.goto(`${relay.httpUrl}/runs`);
  await waitForText(page, `tr[data-run="${run.id}"]`, 'failed');
  await page.click(`tr[data-run="${run.id}"] a`);
  await page.waitForSelector('#md-message');
  // The request it sent, as recorded.
  const sent = await page.textContent('#request');
  assert.ok(sent.includes(`POST http://${external.address}${call.url}`), sent);
  assert.match(sent, /webhook-id: /, sent);
  assert.match(sent, /Location: http:\/\/127\.0\.0\.1:\d+\/callbacks\/[^/]+\/callback/, sent);

  assert.equal(await page.textContent('#md-message strong'), 'bold');
  const link = page.locator('#md-message a', { hasText: 'the report' });
  assert.equal(await link.getAttribute('href'), 'https://reports.example/run/7');
  assert.equal(await link.getAttribute('rel'), 'noopener noreferrer');
  assert.equal(await page.locator('#md-message a', { hasText: 'raw link' }).getAttribute('onclick'), null);
  for (const gone of ['script', 'img', 'iframe', 'style', '[onerror]', '[onclick]', 'a[href^="javascript:"]']) {
    assert.equal(await page.locator(`#md-message ${gone}`).count(), 0, `${gone} in the message`);
  }
  assert.doesNotMatch(await page.innerHTML('#md-message'), /javascript:|onerror|<script/i);
  // The link whose javascript: target was removed goes nowhere when clicked.
  await page.click('#md-message a:has-text("click me")');
  assert.equal(new URL(page.url()).pathname, `/runs/${run.id}`);
  assert.equal(await page.evaluate(() => window.borealisXss), undefined, 'no script ran');
  assert.deepEqual(dialogs, [], 'no dialog opened');
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(consoleErrors, [], 'no console error (a CSP violation would be one)');

  const attempts = await page.textContent('#attempts');
  assert.match(attempts, /202/);
  await screenshot(page, 'console-run.png');
});

test('a form posted from another origin is refused', async (t) => {
  const relay = await startRelay();
  t.after(relay.stop);
  // Another site on another loopback port: same site for cookies, another origin.
  const attacker = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' }).end(`<!doctype html>
<form method="post" action="${relay.httpUrl}/agents"><input name="id" value="planted"></form>
<script>document.forms[0].submit()</script>`);
  });
  await new Promise((resolve) => attacker.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => attacker.close(resolve)));

  const browser = await launchBrowser();
  const { page } = await newPage(browser);
  await signIn(page, relay);
  const refused = page.waitForResponse((r) => r.url() === `${relay.httpUrl}/agents` && r.request().method() === 'POST');
  await page.goto(`http://127.0.0.1:${attacker.address().port}/`);
  const response = await refused;
  assert.equal(response.status(), 403);
  const sent = await response.request().allHeaders();
  assert.ok(sent.cookie?.includes('borealis_console='), 'the browser did send the session cookie');
  assert.deepEqual((await cliJson(relay, 'agents', 'list')).agents, [], 'nothing was registered');

  // The session's own token, from another origin, is refused too (the Origin check).
  await page.goto(`${relay.httpUrl}/agents`);
  const csrf = await page.inputValue('input[name=csrf] >> nth=0');
  const [cookie] = await page.context().cookies();
  const forged = await fetch(`${relay.httpUrl}/agents`, {
    method: 'POST',
    redirect: 'manual',
    headers: { cookie: `${cookie.name}=${cookie.value}`, origin: 'http://evil.example', 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ csrf, id: 'planted' }),
  });
  assert.equal(forged.status, 403);
  // Same origin, no Origin header: the CSRF token alone decides.
  const other = await startRelay(); // another relay: a genuine token of another session
  t.after(other.stop);
  const { page: otherPage } = await newPage(browser);
  await signIn(otherPage, other);
  const otherCsrf = await otherPage.inputValue('input[name=csrf] >> nth=0');
  const secondSession = await newPage(browser);
  await signIn(secondSession.page, relay);
  const secondCsrf = await secondSession.page.inputValue('input[name=csrf] >> nth=0');
  assert.notEqual(secondCsrf, csrf, 'each session has its own token');
  for (const [what, fields] of [
    ['no token', { id: 'planted' }],
    ['an empty token', { csrf: '', id: 'planted' }],
    ['a wrong token', { csrf: csrf.slice(0, -2) + (csrf.endsWith('AA') ? 'BB' : 'AA'), id: 'planted' }],
    ["another session's token", { csrf: secondCsrf, id: 'planted' }],
    ["another relay's token", { csrf: otherCsrf, id: 'planted' }],
  ]) {
    const reply = await fetch(`${relay.httpUrl}/agents`, {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie: `${cookie.name}=${cookie.value}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(fields),
    });
    assert.equal(reply.status, 403, what);
    assert.match(await reply.text(), /security token is missing or wrong/, what);
  }
  assert.deepEqual((await cliJson(relay, 'agents', 'list')).agents, [], 'nothing was registered');

  // And the same form from the console itself goes through.
  await page.fill('#agent-id', 'genuine');
  await page.click('text=Register agent');
  await page.waitForSelector('#new-credentials');
  assert.deepEqual((await cliJson(relay, 'agents', 'list')).agents.map((a) => a.agentId), ['genuine']);
});

test('pages fit a phone and follow the dark scheme', async (t) => {
  const relay = await startRelay();
  t.after(relay.stop);
  assert.equal((await cli(relay, 'agents', 'create', 'edge-with-a-rather-long-identifier')).code, 0);
  // A deployment and a run, so their pages have content to fit.
  const external = await startExternalSystem();
  t.after(external.close);
  const file = writeFile(
    'fit.yml',
    `application: shop\ntargets:\n  staging:\n    constraints:\n      beforeDeployment:\n        - pause:\n            untilApproved: true\n  production-eu-west:\n    constraints:\n      dependsOn: [staging]\n${webhooksYaml(external)}`,
  );
  const deployment = await cliJson(relay, 'deploy', '-f', file);
  const run = await cliJson(relay, 'webhook', 'run', '-f', file, '--name', 'smoke-tests', '--environment', 'staging');
  await external.waitForCalls(1);
  const browser = await launchBrowser();
  const { page } = await newPage(browser);
  await signIn(page, relay);
  for (const [width, height] of [[1280, 800], [390, 844]]) {
    await page.setViewportSize({ width, height });
    for (const route of ['/agents', '/deployments', '/runs', '/providers', '/secrets', '/clients', `/deployments/${deployment.id}`, `/runs/${run.id}`]) {
      await page.goto(`${relay.httpUrl}${route}`);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `${route} at ${width} px scrolls sideways by ${overflow} px`);
    }
  }
  const background = async (scheme) => {
    await page.emulateMedia({ colorScheme: scheme });
    return page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  };
  assert.notEqual(await background('dark'), await background('light'));
  // The first Tab reaches the skip link; the navigation follows.
  await page.goto(`${relay.httpUrl}/agents`);
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Skip to content');
});

test('the deployments list filters by state and application and pages through older ones', async (t) => {
  const relay = await startRelay();
  t.after(relay.stop);
  // Four that succeed at once (no steps), of two applications, and one that fails
  // (its webhook's destination is refused in direct mode).
  const ids = {};
  for (const [n, app] of [[1, 'shop'], [2, 'api'], [3, 'shop'], [4, 'api']]) {
    const file = writeFile(`ok-${n}.yml`, `application: ${app}\ntargets:\n  prod: {}\n`);
    ids[n] = (await cliJson(relay, 'deploy', '-f', file, '--wait')).id;
  }
  const failing = writeFile(
    'failing.yml',
    `application: api
targets:
  prod:
    constraints:
      beforeDeployment:
        - runWebhook: {name: check}
webhooks:
  - {name: check, method: POST, uriTemplate: 'http://127.0.0.1:9/', networkMode: direct}
`,
  );
  const out = await cli(relay, '--json', 'deploy', '-f', failing, '--wait');
  assert.equal(out.code, 1, out.stderr);
  ids[5] = JSON.parse(out.stdout).id;

  const browser = await launchBrowser();
  const { page, dialogs, consoleErrors, pageErrors } = await newPage(browser);
  await signIn(page, relay);
  const shown = async () => page.locator('tr[data-deployment]').evaluateAll((rows) => rows.map((r) => r.dataset.deployment));

  // Two a page, newest first; Older goes back in time and nothing is shown twice.
  await page.goto(`${relay.httpUrl}/deployments?limit=2`);
  assert.deepEqual(await shown(), [ids[5], ids[4]]);
  const seen = [...(await shown())];
  while ((await page.locator('a[rel=next]').count()) > 0) {
    await Promise.all([page.waitForURL(/after=/), page.click('a[rel=next]')]);
    seen.push(...(await shown()));
  }
  assert.deepEqual(seen, [ids[5], ids[4], ids[3], ids[2], ids[1]]);

  // The filter form.
  await page.goto(`${relay.httpUrl}/deployments`);
  await page.selectOption('select[name=state]', 'failed');
  await Promise.all([page.waitForURL(/state=failed/), page.click('form.filters button')]);
  assert.deepEqual(await shown(), [ids[5]]);
  await page.selectOption('select[name=state]', '');
  await page.fill('input[name=application]', 'shop');
  await Promise.all([page.waitForURL(/application=shop/), page.click('form.filters button')]);
  assert.deepEqual(await shown(), [ids[3], ids[1]]);
  assert.equal(await page.inputValue('input[name=application]'), 'shop', 'the filter stays filled in');
  await page.fill('input[name=application]', 'nothing-like-it');
  await Promise.all([page.waitForURL(/application=nothing/), page.click('form.filters button')]);
  assert.match(await page.textContent('main'), /No deployment matches/);
  await Promise.all([page.waitForURL(`${relay.httpUrl}/deployments`), page.click('text=Show all, newest first')]);
  assert.equal((await shown()).length, 5);

  // The runs list filters the same way: the failing deployment's run.
  await page.goto(`${relay.httpUrl}/runs?state=failed&webhook=check`);
  assert.equal(await page.locator('tr[data-run]').count(), 1);
  await page.goto(`${relay.httpUrl}/runs?state=succeeded`);
  assert.match(await page.textContent('main'), /No run matches/);
  assert.deepEqual(dialogs, []);
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(consoleErrors, []);
});

test('metric providers are defined, refused with the reason, and deleted after a confirmation', async (t) => {
  const relay = await startRelay();
  t.after(relay.stop);
  const browser = await launchBrowser();
  const { page, dialogs, consoleErrors, pageErrors } = await newPage(browser);
  await signIn(page, relay);

  await page.click('nav >> text=Metric providers');
  await page.fill('#provider-name', 'prom');
  await page.fill('#provider-url', 'http://prometheus.internal:9090');
  await page.fill('#provider-headers', 'Authorization: Bearer {{secrets.prom_token}}');
  await page.click('button:has-text("Define provider")');
  await page.waitForSelector('tr[data-provider="prom"]');
  assert.match(await page.textContent('[role=status]'), /prom/);
  assert.match(await page.textContent('tr[data-provider="prom"]'), /direct.*Authorization/s);
  const listed = await cliJson(relay, 'providers', 'list');
  assert.deepEqual(listed.providers.map((p) => [p.name, p.url]), [['prom', 'http://prometheus.internal:9090']]);

  // Credentials in the URL are refused, saying how to send them instead; what was typed stays.
  await page.fill('#provider-name', 'leaky');
  await page.fill('#provider-url', 'http://user:pass@prometheus.internal:9090');
  await page.click('button:has-text("Define provider")');
  assert.match(await page.textContent('[role=alert]'), /holds credentials/);
  assert.equal(await page.inputValue('#provider-name'), 'leaky');
  assert.ok(!(await page.content()).includes('user:pass'), 'the credentials are not shown back');

  await Promise.all([page.waitForURL(`${relay.httpUrl}/providers/prom/delete`), page.click('tr[data-provider="prom"] a')]);
  await Promise.all([page.waitForURL(`${relay.httpUrl}/providers`), page.click('button:has-text("Delete prom")')]);
  assert.match(await page.textContent('main'), /No metric provider is defined/);
  assert.deepEqual((await cliJson(relay, 'providers', 'list')).providers, []);

  assert.deepEqual(dialogs, []);
  assert.deepEqual(pageErrors, []);
  // The refused form's page is a 400: the browser says so, nothing else.
  assert.deepEqual(consoleErrors.filter((e) => !e.text.includes('400')), []);
});

test('secrets are set and deleted by name, and a callback client shows its secret once', async (t) => {
  const relay = await startRelay();
  t.after(relay.stop);
  const browser = await launchBrowser();
  const { page, dialogs, consoleErrors, pageErrors } = await newPage(browser);
  await signIn(page, relay);

  await page.click('nav >> text=Secrets');
  const value = 'hunter2-the-secret-value-4f9a';
  await page.fill('#secret-name', 'ci-token');
  await page.fill('#secret-value', value);
  await page.click('text=Store secret');
  await page.waitForSelector('tr[data-secret="ci-token"]');
  assert.match(await page.textContent('[role=status]'), /ci-token/);
  assert.ok(!(await page.content()).includes(value), 'the value is not on the page');
  const listed = await cliJson(relay, 'secrets', 'list');
  assert.deepEqual(listed.secrets.map((s) => s.name), ['ci-token']);

  await page.fill('#secret-name', 'bad name!');
  await page.fill('#secret-value', value);
  await page.click('text=Store secret');
  assert.match(await page.textContent('[role=alert]'), /bad name!/);
  assert.equal(await page.inputValue('#secret-value'), '', 'a refused value is not sent back');
  assert.ok(!(await page.content()).includes(value));

  await Promise.all([
    page.waitForURL(`${relay.httpUrl}/secrets/ci-token/delete`),
    page.click('tr[data-secret="ci-token"] a:has-text("Delete")'),
  ]);
  assert.equal((await cliJson(relay, 'secrets', 'list')).secrets.length, 1, 'deleting asks first');
  await Promise.all([page.waitForURL(`${relay.httpUrl}/secrets`), page.click('button:has-text("Delete ci-token")')]);
  assert.equal(await page.$('tr[data-secret="ci-token"]'), null);
  assert.deepEqual((await cliJson(relay, 'secrets', 'list')).secrets, []);

  await page.click('nav >> text=Callback clients');
  await page.fill('#client-name', 'scanner');
  await page.click('text=Create client');
  const clientId = (await page.textContent('#client-id')).trim();
  const clientSecret = (await page.textContent('#client-secret')).trim();
  // The credentials work: the relay issues a token for them.
  const token = await fetch(`${relay.httpUrl}/oauth/token`, {
    method: 'POST',
    body: new URLSearchParams({ grant_type: 'client_credentials', client_id: clientId, client_secret: clientSecret }),
  });
  assert.equal(token.status, 200);
  await page.goto(`${relay.httpUrl}/clients`);
  assert.ok((await page.textContent('tr[data-client="scanner"]')).includes(clientId));
  assert.ok(!(await page.content()).includes(clientSecret), 'the secret is shown once only');
  await Promise.all([page.waitForURL(`${relay.httpUrl}/clients/scanner/revoke`), page.click('tr[data-client="scanner"] a:has-text("Revoke")')]);
  await Promise.all([page.waitForURL(`${relay.httpUrl}/clients`), page.click('button:has-text("Revoke scanner")')]);
  assert.equal(await page.$('tr[data-client="scanner"]'), null);
  const refused = await fetch(`${relay.httpUrl}/oauth/token`, {
    method: 'POST',
    body: new URLSearchParams({ grant_type: 'client_credentials', client_id: clientId, client_secret: clientSecret }),
  });
  assert.notEqual(refused.status, 200, 'a revoked client gets no token');

  assert.deepEqual(dialogs, []);
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(consoleErrors.filter((e) => !e.text.includes('400')), []);
});

test('over TLS (HTTP/2) forms work and the session cookie is Secure', async (t) => {
  // A self-signed certificate for 127.0.0.1, made with openssl.
  const dir = mkdtempSync(path.join(tmpdir(), 'borealis-console-tls-'));
  const [cert, key] = [path.join(dir, 'cert.pem'), path.join(dir, 'key.pem')];
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
  ], { stdio: 'ignore' });
  const relay = await startRelay({ args: ['--tls-cert', cert, '--tls-key', key] });
  t.after(relay.stop);
  assert.match(relay.httpUrl, /^https:/);
  const browser = await launchBrowser();
  const { page, consoleErrors, pageErrors } = await newPage(browser, { context: { ignoreHTTPSErrors: true } });
  await signIn(page, relay);
  assert.equal(await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol), 'h2');
  const [cookie] = await page.context().cookies();
  assert.equal(cookie.secure, true);

  // HTTP/2 carries no Host header: the Origin check must read the request's authority.
  await page.fill('#agent-id', 'edge-tls');
  const created = page.waitForResponse((r) => r.url() === `${relay.httpUrl}/agents` && r.request().method() === 'POST');
  await page.click('text=Register agent');
  assert.equal((await created).status(), 201);
  assert.ok((await page.textContent('#start-command')).includes(`--relay ${relay.agentsUrl}`));
  await Promise.all([page.waitForURL((url) => url.pathname === '/sign-in'), page.click('text=Sign out')]);
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(consoleErrors, []);
});

test('repeated wrong sign-ins are held off with a page that says how long', async (t) => {
  const relay = await startRelay({ args: ['--auth-failures-per-minute', '3'] });
  t.after(relay.stop);
  const browser = await launchBrowser();
  const { page } = await newPage(browser);
  await page.goto(`${relay.httpUrl}/sign-in`);
  const statuses = [];
  for (let i = 0; i < 4; i += 1) {
    await page.fill('#token', `wrong-token-${i}`);
    const reply = page.waitForResponse((r) => r.url().endsWith('/sign-in') && r.request().method() === 'POST');
    await page.click('button[type=submit]');
    statuses.push((await reply).status());
    if (statuses.at(-1) === 429) break;
  }
  assert.deepEqual(statuses, [401, 401, 401, 429]);
  const held = await page.evaluate(() => document.body.innerText);
  assert.match(held, /Too Many Requests[\s\S]*try again in \d+ s/);
  // Another wrong token is held off too, with a page and Retry-After...
  const signIn = (token) =>
    fetch(`${relay.httpUrl}/sign-in`, { method: 'POST', redirect: 'manual', body: new URLSearchParams({ token }) });
  const wrong = await signIn('wrong-again');
  assert.equal(wrong.status, 429);
  assert.ok(Number(wrong.headers.get('retry-after')) >= 1);
  assert.match(wrong.headers.get('content-type'), /text\/html/);
  // ...but the right token is never refused for it: no one can lock the
  // operator out by failing in their name.
  const right = await signIn(relay.adminToken);
  assert.equal(right.status, 303);
  assert.match(right.headers.get('set-cookie') ?? '', /HttpOnly/);
});
