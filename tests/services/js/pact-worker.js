'use strict';
// Shared by the Pact scripts: the contract's names and ids, env(), and the
// worker runner. Pact's JS logger and its Rust core both write
// to stdout, which must carry nothing but TAP. So a script re-runs itself as
// a worker process whose stdout goes to stderr; the worker sends its
// results back over IPC and the parent prints them as TAP.
const { fork } = require('child_process');

function printTap(results) {
  console.log(`1..${results.length}`);
  results.forEach((r, i) => {
    console.log(`${r.ok ? 'ok' : 'not ok'} ${i + 1} - ${r.desc}`);
    for (const n of r.notes || []) console.log(`# ${n}`);
  });
  process.exit(results.every((r) => r.ok) ? 0 : 1);
}

// work(): a promise of [{ok, desc, notes}]; label names the run in failures.
function runInWorker(filename, work, label) {
  if (process.env.PACT_WORKER) {
    work()
      .catch((e) => [{ ok: false, desc: label, notes: String(e.stack || e).split('\n') }])
      .then((results) => process.send(results, () => process.exit(0)));
    return;
  }
  let results = null;
  // PACT_DO_NOT_TRACK: no usage statistics sent from test runs.
  const child = fork(filename, process.argv.slice(2), {
    env: { PACT_DO_NOT_TRACK: 'true', ...process.env, PACT_WORKER: '1' },
    stdio: ['ignore', 2, 2, 'ipc'],
  });
  child.on('message', (r) => { results = r; });
  child.on('exit', (code, signal) => {
    if (!results) results = [{ ok: false, desc: label, notes: [`the worker ended (${signal || `exit ${code}`}) without a report; see stderr`] }];
    printTap(results);
  });
}

// A required environment variable; without it the script fails as TAP.
function env(name) {
  const v = process.env[name];
  if (!v) {
    console.log(`1..1\nnot ok 1 - ${name} is set`);
    process.exit(1);
  }
  return v;
}

module.exports = {
  runInWorker,
  env,
  PROVIDER: 'user-service',
  KNOWN: '5d1d3bd0-0000-4000-8000-000000000001', // the user that exists
  MISSING: '5d1d3bd0-0000-4000-8000-0000000000ff', // the one that does not
};
