// SIGTERM shuts fanwire down gracefully: connected graphql-ws clients see
// close code 1001 (going away) and the process exits cleanly.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';

import { connect, guard, startServer, subscribe } from './fanwire.mjs';

let server;
let client;

after(async () => {
  await client?.dispose();
  await server?.stop();
});

test('SIGTERM closes live connections with 1001', async () => {
  server = await startServer();
  let onClosed;
  const closed = new Promise((resolve) => (onClosed = resolve));
  client = connect(server, { on: { closed: (event) => onClosed(event) } });

  const sub = subscribe(client, {
    query: 'subscription { orderCreated(tenantId: "t-bye") { id } }',
  });
  await server.waitForMetric('fanwire_subscriptions', 1);
  assert.deepEqual(
    await server.publish({ topic: 'orders:t-bye', data: { id: 'before' } }),
    { accepted: 1, deliveries: 1 },
  );
  assert.deepEqual(await sub.next(), { data: { orderCreated: { id: 'before' } } });

  const exit = await server.terminate();
  const event = await guard(closed, 'the client to see the socket close');
  assert.equal(event.code, 1001, `close code ${event.code} reason ${JSON.stringify(event.reason)}`);
  // With no retries, the live subscription ends with that close event.
  const err = await sub.error();
  assert.equal(err.code, 1001);
  assert.deepEqual(exit, { code: 0, signal: null });
});
