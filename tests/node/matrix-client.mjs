// One cell's client side, for a test in another language (the Python serving
// modes' matrix, python/tests/test_client_matrix.py). Usage:
//
//   node matrix-client.mjs CLIENT WS_URL VARIABLES_JSON   (CLIENT: a name from clients.mjs)
//   node matrix-client.mjs browser PAGE_URL
//
// It prints JSON lines on stdout: first `{"client", "version", "typename",
// "cleanClose"}`, then `{"result": ...}` for each result the client receives
// (`{"item": "..."}` for each list item the page adds). A line `close` on
// stdin (or its end) unsubscribes and closes; then it prints
// `{"closed": CODE}` and exits 0. Any failure goes to stderr, exit 1.

import { createInterface } from 'node:readline';

import { CLEAN_CLOSE, CLIENTS, QUERY, openPage, versionOf } from './clients.mjs';

function emit(line) {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

/** Resolves when stdin says `close` or ends. */
function closeRequested() {
  return new Promise((resolve) => {
    const lines = createInterface({ input: process.stdin });
    lines.on('line', (line) => {
      if (line.trim() === 'close') resolve();
    });
    lines.on('close', resolve);
  });
}

/** Forwards what `next` yields until `stop` settles; rethrows a client failure. */
async function forward(next, key, stop) {
  let stopped = false;
  stop.then(() => (stopped = true));
  while (!stopped) {
    const value = await Promise.race([next().then((v) => ({ v }), (e) => ({ e })), stop.then(() => null)]);
    if (value === null) return;
    if ('e' in value) {
      // The guard's "gave up waiting" only means nothing arrived yet.
      if (/^gave up waiting/.test(value.e.message)) continue;
      throw value.e;
    }
    emit({ [key]: value.v });
  }
}

async function main() {
  const [name, url, variables] = process.argv.slice(2);
  if (!name || !url) throw new Error('usage: node matrix-client.mjs CLIENT URL [VARIABLES_JSON]');
  const stop = closeRequested();

  if (name === 'browser') {
    emit({ client: 'browser', version: versionOf('puppeteer-core'), typename: false, cleanClose: [null] });
    const page = await openPage(url);
    try {
      await forward(page.next, 'item', stop);
      if (page.problems.length) throw new Error(`the page failed: ${page.problems.join('; ')}`);
    } finally {
      await page.close();
    }
    emit({ closed: null });
    return;
  }

  const client = CLIENTS.find((c) => c.name === name);
  if (!client) throw new Error(`unknown client ${name}; one of ${CLIENTS.map((c) => c.name).join(', ')}, browser`);
  emit({
    client: client.name,
    version: versionOf(client.packageName),
    typename: client.typename,
    cleanClose: CLEAN_CLOSE,
  });
  const session = client.open(url, { query: QUERY, variables: JSON.parse(variables ?? '{}') });
  await forward(session.next, 'result', stop);
  emit({ closed: await session.close() });
}

main().then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`matrix-client: ${error.stack ?? error}\n`);
    process.exit(1);
  },
);
