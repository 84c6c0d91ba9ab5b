// The stock-client matrix against the standalone binary (`fanwire serve`):
// every client of clients.mjs in its default configuration, and the demo
// page at `/` in headless Chromium. Each cell connects, subscribes, receives
// one published event with the right data and closes cleanly, on a server
// of its own. The Python serving modes run the same clients from
// python/tests/test_client_matrix.py (through matrix-client.mjs).

import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { CLEAN_CLOSE, CLIENTS, QUERY, expectedOrder, openPage, versionOf } from './clients.mjs';
import { DEMO_SCHEMA, startServer } from './fanwire.mjs';

describe('stock clients against fanwire serve', () => {
  let server;
  let session;

  beforeEach(async () => {
    session = undefined;
    // The demo schema: it has `orderCreated` for the clients and `tick` for the demo page.
    server = await startServer({ schema: DEMO_SCHEMA });
  });

  afterEach(async () => {
    await session?.close().catch(() => {});
    await server?.stop();
  });

  for (const client of CLIENTS) {
    test(`${client.name} ${versionOf(client.packageName)}`, async () => {
      session = client.open(server.ws, { query: QUERY, variables: { t: 'matrix' } });
      await server.waitForMetric('fanwire_subscriptions', 1);

      const order = { id: 'm-1', cents: 1999 };
      assert.deepEqual(
        await server.publish({ topic: 'orders:matrix', data: { ...order, status: 'PAID' } }),
        { accepted: 1, deliveries: 1 },
      );
      assert.deepEqual(await session.next(), expectedOrder(client, order));

      const closed = session;
      session = undefined;
      const code = await closed.close();
      assert.ok(CLEAN_CLOSE.includes(code), `closed with ${code}`);
      await server.waitForMetric('fanwire_subscriptions', 0);
      await server.waitForMetric('fanwire_connections', 0);
    });
  }

  test(`the demo page in Chromium (puppeteer-core ${versionOf('puppeteer-core')})`, async () => {
    session = await openPage(`${server.http}/`);
    // The page subscribes on load and logs that first.
    assert.match(await session.next(), /subscribed as 1$/);
    await server.waitForMetric('fanwire_subscriptions', 1);

    const tick = { seq: 7, value: 4.5, at: 'matrix' };
    assert.deepEqual(
      await server.publish({ topic: 'ticks:demo', data: tick }),
      { accepted: 1, deliveries: 1 },
    );
    assert.ok((await session.next()).endsWith(`  ${JSON.stringify({ data: { tick } })}`));
    assert.equal(await session.page.$eval('#count', (el) => el.textContent), '1');
    assert.deepEqual(session.problems, []);

    const closed = session;
    session = undefined;
    await closed.close();
    await server.waitForMetric('fanwire_connections', 0);
  });
});
