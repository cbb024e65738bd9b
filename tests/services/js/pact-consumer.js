#!/usr/bin/env node
// Consumer side of the order-service -> user-service contract.
//
// The consumer under test is the real order-service binary: for each
// interaction it is started against the Pact mock server (as its
// USER_SERVICE_URL) and sent POST /orders, so the pact records what the C
// code actually asks user-service, not what a JS stand-in would ask.
//
// env: ORDER_SERVICE_BIN, ORDERS_DB_URL, REDIS_URL, PACT_DIR
// Prints TAP; exit 0 iff both interactions and the pact file are ok.
//
// Pact's JS logger and its Rust core both write to stdout, which must carry
// only TAP; so the work runs in a child process (this script again, with
// PACT_WORKER set) whose stdout goes to our stderr, and reports its results
// over the IPC channel.
'use strict';

const { spawn } = require('child_process');
const fs = require('fs');
const http = require('http');
const net = require('net');
const path = require('path');

const CONSUMER = 'order-service';
const { runInWorker, env, PROVIDER, KNOWN, MISSING } = require('./pact-worker');

const ORDER_SERVICE_BIN = env('ORDER_SERVICE_BIN');
const PACT_DIR = path.resolve(env('PACT_DIR'));
const PACT_FILE = path.join(PACT_DIR, `${CONSUMER}-${PROVIDER}.json`);

// A port the kernel just handed out and we released; order-service binds it
// right after (a race with other processes is possible but unlikely).
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// Minimal HTTP client (http rather than fetch: fetch is "experimental" on
// Node 18 and prints a warning).
function request(method, url, body) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = http.request(url, {
      method,
      headers: data ? { 'Content-Type': 'application/json', 'Content-Length': data.length } : {},
      timeout: 10000,
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${url} timed out`)));
    req.on('error', reject);
    req.end(data);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Starts order-service against the mock server, runs fn(baseUrl), then
// SIGTERMs it and waits for its exit (it drains; SIGKILL after 15 s).
async function withOrderService(userServiceUrl, fn) {
  const port = await freePort();
  // Its stdout and stderr (JSON logs) go to our stderr: stdout is TAP.
  const child = spawn(ORDER_SERVICE_BIN, [], {
    stdio: ['ignore', 2, 2],
    env: {
      ...process.env,
      PORT: String(port),
      LISTEN_ADDR: '127.0.0.1',
      USER_SERVICE_URL: userServiceUrl,
      // REDIS_URL is passed through; without ORDERS_DB_URL, order-service
      // keeps its default database (docs/services.md).
      ...(process.env.ORDERS_DB_URL ? { DB_URL: process.env.ORDERS_DB_URL } : {}),
      CONSUMER_NAME: `pact-${process.pid}`,
    },
  });
  let exited = null;
  // 'error' (it could not be started) ends it as well as 'exit' does.
  const exit = new Promise((resolve) => {
    child.on('exit', (code, signal) => resolve((exited = { code, signal })));
    child.on('error', (error) => resolve((exited = { error: error.message })));
  });
  const base = `http://127.0.0.1:${port}`;
  try {
    await (async () => {
      for (const deadline = Date.now() + 15000; ;) {
        if (exited) throw new Error(`order-service ${ORDER_SERVICE_BIN} ended before it was healthy: ${JSON.stringify(exited)}`);
        const res = await request('GET', `${base}/health`).catch(() => null);
        if (res && res.status === 200) return;
        if (Date.now() > deadline) throw new Error('order-service was not healthy within 15 s');
        await sleep(100);
      }
    })();
    return await fn(base);
  } finally {
    if (!exited) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15000);
      await exit;
      clearTimeout(timer);
    }
  }
}

// One interaction: declare it, let order-service make the call, check what
// order-service answered its own client. The callback returns the answer
// rather than throwing on a wrong status: executeTest then rejects with the
// mock server's mismatches, which say more than the status does.
async function interaction(pact, { state, description, userId, response, expectStatus }) {
  pact
    .given(state)
    .uponReceiving(description)
    .withRequest({ method: 'GET', path: `/users/${userId}`, headers: { Accept: 'application/json' } })
    .willRespondWith(response);
  const res = await pact.executeTest((mock) => withOrderService(mock.url, (base) =>
    request('POST', `${base}/orders`, { user_id: userId, total_cents: 1000, currency: 'EUR' })));
  if (res.status !== expectStatus) {
    throw new Error(`POST /orders answered ${res.status}, expected ${expectStatus}: ${res.body}`);
  }
}

async function work() {
  // Loaded here, in the worker only: see the top of the file.
  const { PactV3, MatchersV3 } = require('@pact-foundation/pact');
  const { like, regex } = MatchersV3;
  fs.mkdirSync(PACT_DIR, { recursive: true });
  // PactV3 merges into an existing file; start from none so that the file
  // holds exactly this run's interactions.
  fs.rmSync(PACT_FILE, { force: true });
  const pact = new PactV3({ consumer: CONSUMER, provider: PROVIDER, dir: PACT_DIR, logLevel: 'error' });

  const cases = [
    {
      state: `user ${KNOWN} exists`,
      description: 'a request for an existing user',
      userId: KNOWN,
      response: {
        status: 200,
        headers: { 'Content-Type': 'application/json' },
        body: {
          id: KNOWN,
          name: like('Ada Lovelace'),
          email: like('ada@example.com'),
          role: regex('^(user|admin)$', 'user'),
        },
      },
      expectStatus: 201,
    },
    {
      state: `no user ${MISSING}`,
      description: 'a request for a user that does not exist',
      userId: MISSING,
      // order-service only looks at the status; the pact pins nothing else.
      response: { status: 404 },
      expectStatus: 422,
    },
  ];

  const results = [];
  for (const c of cases) {
    try {
      await interaction(pact, c);
      results.push({ ok: true, desc: `${c.description}: GET /users/${c.userId} (order-service answers ${c.expectStatus})` });
    } catch (e) {
      results.push({ ok: false, desc: `${c.description}: GET /users/${c.userId} (order-service answers ${c.expectStatus})`, notes: String(e.message || e).split('\n') });
    }
  }

  // The pact file: written, and with both interactions.
  let notes = [];
  try {
    const doc = JSON.parse(fs.readFileSync(PACT_FILE, 'utf8'));
    const n = (doc.interactions || []).length;
    if (n !== cases.length) notes = [`${PACT_FILE} has ${n} interactions, expected ${cases.length}`];
  } catch (e) {
    notes = [e.message];
  }
  results.push({ ok: notes.length === 0, desc: `pact file ${PACT_FILE} written`, notes });

  return results;
}

runInWorker(__filename, work, 'pact consumer run');
