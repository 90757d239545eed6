// Helpers for the console's browser tests: the real binaries as child
// processes (as tests/src/process.rs starts them), a webhook receiver, and
// Debian's Chromium driven by playwright-core.
//
// Whatever a helper starts is tracked: `cleanup()` stops it all, and this
// module registers it with node:test's `after`, so a failing test leaves
// nothing behind. Tests may stop things earlier with `t.after(() => x.stop())`.

import { spawn } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** The admin token every relay started here accepts (the relay wants 16+ characters). */
export const ADMIN_TOKEN = 'console-test-admin-token';

const READY_WITHIN_MS = 20_000;

// Everything still running, each with a synchronous last-resort kill for process exit.
const live = new Set();

/** Stops everything the helpers started and has not been stopped yet. */
export async function cleanup() {
  const items = [...live].reverse();
  await Promise.allSettled(items.map((item) => item.stop()));
}

after(cleanup);
process.on('exit', () => {
  for (const item of live) item.kill?.();
});

function track(stop, kill) {
  const item = { stop: () => (live.delete(item), stop()), kill };
  live.add(item);
  return item.stop;
}

/** Path of a workspace binary in target/debug (or $CARGO_TARGET_DIR/debug). */
export function binary(name) {
  const target = process.env.CARGO_TARGET_DIR ? path.resolve(process.env.CARGO_TARGET_DIR) : path.join(repoRoot, 'target');
  const file = path.join(target, 'debug', name);
  if (!existsSync(file)) throw new Error(`${file} is missing: build the binaries first (scripts/test.sh does)`);
  return file;
}

// The binaries read BOREALIS_* (and the agent proxy variables) from the
// environment: none of the caller's may leak in.
function childEnv(extra = {}) {
  const env = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key.startsWith('BOREALIS_') || /^(https?|all|no)_proxy$/i.test(key)) continue;
    env[key] = value;
  }
  return { ...env, ...extra };
}

/** `key=value` from a text log line, or `"key": value` from a JSON one. */
export function field(line, key) {
  try {
    const record = JSON.parse(line);
    if (record && key in record) return String(record[key]);
  } catch {}
  const match = line.match(new RegExp(`(?:^|\\s)${key}=(\\S+)`));
  if (!match) throw new Error(`no ${key}= in ${JSON.stringify(line)}`);
  return match[1];
}

// A child whose stdout and stderr lines are kept in memory.
function spawnLogged(name, file, args, env) {
  const child = spawn(file, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines = [];
  const waiters = new Set();
  for (const stream of [child.stdout, child.stderr]) {
    let rest = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => {
      const parts = (rest + chunk).split('\n');
      rest = parts.pop();
      for (const line of parts) {
        lines.push(line);
        for (const waiter of waiters) waiter();
      }
    });
  }
  // A file that cannot be run is an 'error' event, maybe with no 'exit'.
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal }));
    child.on('error', (err) => resolve({ error: err.message }));
  });
  let status = null;
  exited.then((s) => {
    status = s;
    for (const waiter of waiters) waiter();
  });

  const log = () => lines.join('\n');

  /** Resolves with the first line holding `needle`; rejects on exit or timeout. */
  function waitForLine(needle, withinMs = READY_WITHIN_MS) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => finish(new Error(`${name} did not log ${JSON.stringify(needle)} within ${withinMs} ms; log:\n${log()}`)), withinMs);
      const check = () => {
        const line = lines.find((l) => l.includes(needle));
        if (line !== undefined) finish(null, line);
        else if (status) finish(new Error(`${name} exited (${JSON.stringify(status)}) before logging ${JSON.stringify(needle)}; log:\n${log()}`));
      };
      function finish(err, line) {
        clearTimeout(timer);
        waiters.delete(check);
        err ? reject(err) : resolve(line);
      }
      waiters.add(check);
      check();
    });
  }

  /** Sends `signal` and waits for the exit; SIGKILL after `graceMs`. */
  async function signalAndWait(signal, graceMs = 15_000) {
    if (!status) {
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    }
    return status;
  }

  const killNow = () => {
    if (!status) child.kill('SIGKILL');
  };
  return { child, lines, log, waitForLine, signalAndWait, killNow, exited };
}

/**
 * Starts borealis-relay on loopback with a fresh data dir and a known admin
 * token; direct webhooks may reach 127.0.0.0/8.
 * options: { adminToken, args: [extra flags], env: {extra variables} }.
 */
export async function startRelay(options = {}) {
  // `adminToken: null`: none (a relay with the admin token turned off).
  const adminToken = options.adminToken === null ? null : (options.adminToken ?? ADMIN_TOKEN);
  // `dataDir`: one the test made and keeps (a restart on the same state); else a new one, removed at stop.
  const dataDir = options.dataDir ?? (await mkdtemp(path.join(tmpdir(), 'borealis-console-')));
  const args = [
    '--data-dir', dataDir,
    '--listen', '127.0.0.1:0',
    '--agent-listen', '127.0.0.1:0',
    '--direct-allow', '127.0.0.0/8',
    // As in process.rs: a lost agent is noticed within seconds.
    '--heartbeat-interval', '1s',
    '--shutdown-grace', '5s',
    ...(options.args ?? []),
  ];
  const env = childEnv({
    BOREALIS_LOG: 'info,borealis_relay=debug',
    ...(adminToken === null ? {} : { BOREALIS_ADMIN_TOKEN: adminToken }),
    ...options.env,
  });
  const proc = spawnLogged('relay', binary('borealis-relay'), args, env);
  const removeDir = () => options.dataDir || rmSync(dataDir, { recursive: true, force: true });
  const stop = track(
    async () => {
      await proc.signalAndWait('SIGTERM');
      removeDir();
    },
    () => (proc.killNow(), removeDir()),
  );
  let ready;
  try {
    ready = await proc.waitForLine('relay ready');
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    httpUrl: field(ready, 'http'),
    agentsUrl: field(ready, 'agents'),
    adminToken,
    dataDir,
    pid: proc.child.pid,
    log: proc.log,
    /** SIGTERM, wait for the exit, remove the data dir. */
    stop,
  };
}

/**
 * Starts borealis-agent against `relay` with a health listener on loopback,
 * and waits until its /readyz says it holds a session.
 * `args` defaults to `--allow 127.0.0.0/8` (the agent refuses to start without a rule).
 */
export async function startAgent({ relay, clientId, clientSecret, args = ['--allow', '127.0.0.0/8'], env = {} }) {
  const proc = spawnLogged(
    'agent',
    binary('borealis-agent'),
    ['--relay', relay.agentsUrl, '--client-id', clientId, '--health-listen', '127.0.0.1:0', ...args],
    // The secret from the environment, as the docs say: never on the command line.
    childEnv({ BOREALIS_LOG: 'info,borealis_agent=debug', BOREALIS_CLIENT_SECRET: clientSecret, ...env }),
  );
  const kill = track(() => proc.signalAndWait('SIGKILL'), proc.killNow);
  try {
    const line = await proc.waitForLine('health listener ready');
    const healthUrl = `http://${field(line, 'addr')}`;
    await eventually('the agent is connected', READY_WITHIN_MS, async () => {
      if (proc.child.exitCode !== null || proc.child.signalCode !== null) throw new Error(`the agent exited; log:\n${proc.log()}`);
      const reply = await fetch(`${healthUrl}/readyz`).catch(() => null);
      return reply?.ok;
    });
    return {
      pid: proc.child.pid,
      healthUrl,
      log: proc.log,
      /** SIGKILL and wait for the exit. */
      kill,
      /** SIGTERM (the agent drains) and wait for the exit. */
      stop: () => proc.signalAndWait('SIGTERM'),
    };
  } catch (err) {
    await kill();
    throw err;
  }
}

/** Polls `probe` every 50 ms until it returns something truthy; rejects after `withinMs`. */
export async function eventually(what, withinMs, probe) {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${withinMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * Runs the `borealis` CLI against `relay` with its admin token (as
 * BOREALIS_RELAY and BOREALIS_ADMIN_TOKEN). A last argument
 * `{ input: 'text' }` is fed to its standard input; `{ env: {...} }` adds
 * variables (BOREALIS_TOKEN, say).
 * Returns { code, stdout, stderr }.
 */
export function cli(relay, ...args) {
  const options = typeof args.at(-1) === 'object' ? args.pop() : {};
  const admin = relay.adminToken === null ? {} : { BOREALIS_ADMIN_TOKEN: relay.adminToken };
  const env = childEnv({ BOREALIS_RELAY: relay.httpUrl, ...admin, ...options.env });
  return new Promise((resolve, reject) => {
    const child = spawn(binary('borealis'), args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? `signal ${signal}`, stdout, stderr });
    });
    child.stdin.end(options.input ?? '');
  });
}

/** `cli` with `--json`; throws unless it exits 0, returns its stdout parsed. */
export async function cliJson(relay, ...args) {
  const out = await cli(relay, '--json', ...args);
  if (out.code !== 0) throw new Error(`borealis ${args.join(' ')} exited ${out.code}: ${out.stderr}`);
  return JSON.parse(out.stdout);
}

// `borealis agents|clients create` prints `key: value` lines (process.rs parses them the same way).
async function createCredentials(relay, kind, id) {
  const out = await cli(relay, kind, 'create', id);
  if (out.code !== 0) throw new Error(`borealis ${kind} create ${id} exited ${out.code}: ${out.stderr}`);
  const value = (key) => {
    const line = out.stdout.split('\n').find((l) => l.startsWith(`${key}: `));
    if (!line) throw new Error(`no ${key} in ${JSON.stringify(out.stdout)}`);
    return line.slice(key.length + 2).trim();
  };
  return { clientId: value('client_id'), clientSecret: value('client_secret') };
}

/** Registers agent identifier `id`; returns { clientId, clientSecret }. */
export const createAgent = (relay, id) => createCredentials(relay, 'agents', id);

/** Callback credentials for an external system; returns { clientId, clientSecret }. */
export const createClient = (relay, name) => createCredentials(relay, 'clients', name);

/**
 * A plain HTTP server on loopback that records every request
 * ({ method, url, headers, body }) and answers 200 `{}`.
 */
export async function startWebhookReceiver() {
  const requests = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => (body += chunk));
    req.on('end', () => {
      requests.push({ method: req.method, url: req.url, headers: req.headers, body });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const close = track(() => {
    server.closeAllConnections();
    return new Promise((resolve) => server.close(() => resolve()));
  });
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    /** Resolves with the requests once there are at least `count`. */
    waitFor: (count = 1, withinMs = 15_000) =>
      eventually(`${count} webhook request(s) received`, withinMs, () => requests.length >= count && requests),
    close,
  };
}

/**
 * Calls back as an external system would: a client-credentials token from
 * the relay's /oauth/token (a plain form POST), then POST `body` as JSON to
 * `${callbackUri}/callback` (callbackUri is `{{armory.callbackUri}}`; one
 * already ending in /callback is used as it is). Returns { status, body }.
 */
export async function callback(relay, callbackUri, body, { clientId, clientSecret }) {
  const tokenReply = await fetch(`${relay.httpUrl}/oauth/token`, {
    method: 'POST',
    body: new URLSearchParams({ grant_type: 'client_credentials', client_id: clientId, client_secret: clientSecret }),
  });
  if (tokenReply.status !== 200) throw new Error(`token request: ${tokenReply.status} ${await tokenReply.text()}`);
  const { access_token: token } = await tokenReply.json();
  const url = callbackUri.endsWith('/callback') ? callbackUri : `${callbackUri}/callback`;
  const reply = await fetch(url, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: reply.status, body: await reply.text() };
}

/** Headless Debian Chromium ($CHROMIUM_PATH or /usr/bin/chromium); no sandbox, as we run as root. */
export async function launchBrowser() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ['--no-sandbox'],
  });
  track(() => browser.close());
  return browser;
}

/**
 * A page in a fresh browser context. With `watch` (the default) it also
 * collects what must not happen on a page: `dialogs` (alert/confirm/prompt,
 * each dismissed), `consoleErrors` (console messages of type error) and
 * `pageErrors` (uncaught exceptions). `context` takes Playwright's context options.
 * Returns { page, dialogs, consoleErrors, pageErrors }.
 */
export async function newPage(browser, { watch = true, context: contextOptions = {} } = {}) {
  const context = await browser.newContext(contextOptions);
  const page = await context.newPage();
  const dialogs = [];
  const consoleErrors = [];
  const pageErrors = [];
  if (watch) {
    page.on('dialog', (dialog) => {
      dialogs.push({ type: dialog.type(), message: dialog.message() });
      dialog.dismiss().catch(() => {});
    });
    page.on('console', (message) => {
      if (message.type() === 'error') consoleErrors.push({ text: message.text(), url: message.location().url });
    });
    page.on('pageerror', (error) => pageErrors.push(error.message));
  }
  return { page, dialogs, consoleErrors, pageErrors };
}
