#!/usr/bin/env node
// Provider side of the order-service -> user-service contract: replays the
// pact file(s) in PACT_DIR against a running user-service.
//
// env: PACT_DIR, USER_SERVICE_URL, USERS_DB_URL (psql puts user-service
// into each interaction's provider state through its database).
// Prints TAP, one point per pact file; exit 0 iff all verify.
//
// Pact's JS logger and its Rust verifier both write to stdout, which must
// carry only TAP; so the work runs in a child process (this script again,
// with PACT_WORKER set) whose stdout goes to our stderr, and reports its
// results over the IPC channel.
'use strict';

const { execFileSync } = require('child_process');
const fs = require('fs');
const http = require('http');
const path = require('path');

const { runInWorker, env, PROVIDER, KNOWN, MISSING } = require('./pact-worker');

const PACT_DIR = path.resolve(env('PACT_DIR'));
const USER_SERVICE_URL = env('USER_SERVICE_URL');
const USERS_DB_URL = env('USERS_DB_URL');

// One SQL statement through psql; a failure rejects the state change (the
// verifier then fails the interaction) with psql's own message.
function sql(statement) {
  try {
    execFileSync('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', USERS_DB_URL, '-c', statement],
      { stdio: ['ignore', 'ignore', 'pipe'], timeout: 10000 });
  } catch (e) {
    // The verifier only reports "state change failed"; say why.
    const msg = String(e.stderr || e.message).trim();
    console.error(`pact-provider.js: ${msg}`);
    throw new Error(msg);
  }
}

// The state names are the consumer's (pact-consumer.js).
const stateHandlers = {
  [`user ${KNOWN} exists`]: async () => {
    sql(`INSERT INTO users (id, name, email, role) VALUES ('${KNOWN}', 'Ada Lovelace', 'ada-pact@example.com', 'user') ON CONFLICT DO NOTHING`);
  },
  [`no user ${MISSING}`]: async () => {
    sql(`DELETE FROM users WHERE id = '${MISSING}'`);
  },
};

// The pact files in PACT_DIR whose provider is user-service.
function pactFiles() {
  return fs.readdirSync(PACT_DIR).filter((f) => f.endsWith('.json')).sort()
    .map((f) => path.join(PACT_DIR, f))
    .filter((f) => {
      try {
        return JSON.parse(fs.readFileSync(f, 'utf8')).provider.name === PROVIDER;
      } catch (e) {
        return false;
      }
    });
}

// GET /health must answer 200: the verifier's proxy crashes the process on
// a refused connection (and the verifier then waits minutes), so a provider
// that is not up fails here, at once and clearly.
function healthy() {
  return new Promise((resolve) => {
    const req = http.get(new URL('/health', USER_SERVICE_URL), { timeout: 5000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200 ? null : `GET /health answered ${res.statusCode}`);
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (e) => resolve(`GET /health: ${e.message}`));
  });
}

async function work() {
  // Loaded here, in the worker only: see the top of the file.
  const { Verifier } = require('@pact-foundation/pact');
  const files = pactFiles();
  if (files.length === 0) return [{ ok: false, desc: `pact files for ${PROVIDER} in ${PACT_DIR}`, notes: ['none found'] }];
  const down = await healthy();
  if (down) return [{ ok: false, desc: `${PROVIDER} at ${USER_SERVICE_URL} is up`, notes: [down] }];
  const results = [];
  // One verification per file, so that each file is its own TAP point.
  for (const file of files) {
    const desc = `${PROVIDER} at ${USER_SERVICE_URL} honours ${path.basename(file)}`;
    try {
      await new Verifier({
        provider: PROVIDER,
        providerBaseUrl: USER_SERVICE_URL,
        pactUrls: [file],
        stateHandlers,
        logLevel: 'warn',
      }).verifyProvider();
      results.push({ ok: true, desc });
    } catch (e) {
      // The details (which interaction, which mismatch) are in the
      // verifier's report, on stderr.
      results.push({ ok: false, desc, notes: [...String(e.message || e).split('\n'), 'see the verifier report on stderr'] });
    }
  }
  return results;
}

runInWorker(__filename, work, 'pact provider verification');
