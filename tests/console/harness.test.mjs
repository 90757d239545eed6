// The harness itself, on what the relay serves today: a relay, an agent
// the CLI registered, and the browser on /healthz.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  callback,
  cli,
  cliJson,
  createClient,
  eventually,
  launchBrowser,
  newPage,
  startAgent,
  startRelay,
  startWebhookReceiver,
} from './harness.mjs';

test('relay, CLI, agent and browser work together', async (t) => {
  const relay = await startRelay();
  t.after(() => relay.stop());

  const created = await cli(relay, 'agents', 'create', 'edge-1');
  assert.equal(created.code, 0, created.stderr);
  const clientId = created.stdout.match(/^client_id: (\S+)$/m)?.[1];
  const clientSecret = created.stdout.match(/^client_secret: (\S+)$/m)?.[1];
  assert.ok(clientId && clientSecret, created.stdout);

  const agent = await startAgent({ relay, clientId, clientSecret });
  t.after(() => agent.kill());
  const { agents } = await cliJson(relay, 'agents', 'list');
  const edge = agents.find((a) => a.agentId === 'edge-1');
  assert.equal(edge?.connected, true, JSON.stringify(agents));
  assert.equal(edge.instances.length, 1);

  await agent.kill();
  // The relay notices a silent agent within 2¾ heartbeats (1 s here).
  await eventually('the relay drops the killed agent', 10_000, async () => {
    const list = await cliJson(relay, 'agents', 'list');
    return list.agents.find((a) => a.agentId === 'edge-1')?.connected === false;
  });

  const browser = await launchBrowser();
  t.after(() => browser.close());
  const { page, dialogs, pageErrors } = await newPage(browser);
  const reply = await page.goto(`${relay.httpUrl}/healthz`);
  assert.equal(reply.status(), 200);
  assert.equal((await page.textContent('body')).trim(), 'ok');
  // Not consoleErrors: Chromium logs the 404 of /favicon.ico as one.
  assert.deepEqual(dialogs, []);
  assert.deepEqual(pageErrors, []);
});

test('webhook receiver records requests; callback gets a token first', async (t) => {
  const relay = await startRelay();
  t.after(() => relay.stop());
  const receiver = await startWebhookReceiver();
  t.after(() => receiver.close());

  const sent = await fetch(`${receiver.url}/hook?x=1`, { method: 'POST', body: '{"a":1}' });
  assert.equal(sent.status, 200);
  assert.deepEqual(await sent.json(), {});
  const [request] = await receiver.waitFor(1);
  assert.equal(request.method, 'POST');
  assert.equal(request.url, '/hook?x=1');
  assert.equal(request.body, '{"a":1}');

  // No run has this callback URI: the token is good, the relay answers 404.
  const { clientId, clientSecret } = await createClient(relay, 'ci-system');
  const reply = await callback(relay, `${relay.httpUrl}/callbacks/no-such-run`, { success: true }, { clientId, clientSecret });
  assert.equal(reply.status, 404, reply.body);
});
