// graphql-ws (the reference client) against the fanwire binary:
// subscribe, projected results, complete, validation errors, fan-out.

import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { connect, guard, startServer, subscribe } from './fanwire.mjs';

const TOKEN = 'node-e2e-token';

describe('graphql-transport-ws with graphql-ws', () => {
  // A fresh server per test, so one failure cannot leave state behind for the next.
  let server;
  let clients;
  const client = (options) => {
    const c = connect(server, options);
    clients.push(c);
    return c;
  };

  beforeEach(async () => {
    clients = [];
    server = await startServer({ publishToken: TOKEN });
  });

  afterEach(async () => {
    await Promise.all(clients.map((c) => c.dispose()));
    await server?.stop();
  });

  test('projects aliases, nested selections, __typename and variables', async () => {
    const c = client();
    const sub = subscribe(c, {
      query: `subscription OnOrder($tenant: ID!) {
        orderCreated(tenantId: $tenant) {
          __typename
          orderId: id
          cents
          status
          buyer: customer { name }
          items { sku qty }
        }
      }`,
      variables: { tenant: 't-proj' },
    });
    await server.waitForMetric('fanwire_subscriptions', 1);

    // Another tenant's topic: nobody listens there.
    assert.deepEqual(
      await server.publish({ topic: 'orders:t-other', data: { id: 'x', cents: 1 } }),
      { accepted: 1, deliveries: 0 },
    );
    assert.deepEqual(
      await server.publish({
        topic: 'orders:t-proj',
        data: {
          id: 'o-1',
          cents: 1999,
          status: 'PAID',
          note: 'not selected',
          internal: { secret: true },
          customer: { name: 'Ada', email: 'ada@example.com' },
          items: [
            { sku: 'A-1', qty: 2, weight: 3 },
            { sku: 'B-7', qty: 1 },
          ],
        },
      }),
      { accepted: 1, deliveries: 1 },
    );
    assert.deepEqual(
      await server.publish([
        {
          topic: 'orders:t-proj',
          data: { id: 'o-2', cents: 5, status: 'SHIPPED', customer: { name: 'Bo' }, items: [] },
        },
      ]),
      { accepted: 1, deliveries: 1 },
    );

    assert.deepEqual(await sub.next(), {
      data: {
        orderCreated: {
          __typename: 'Order',
          orderId: 'o-1',
          cents: 1999,
          status: 'PAID',
          buyer: { name: 'Ada' },
          items: [
            { sku: 'A-1', qty: 2 },
            { sku: 'B-7', qty: 1 },
          ],
        },
      },
    });
    assert.deepEqual(await sub.next(), {
      data: {
        orderCreated: {
          __typename: 'Order',
          orderId: 'o-2',
          cents: 5,
          status: 'SHIPPED',
          buyer: { name: 'Bo' },
          items: [],
        },
      },
    });

    sub.dispose();
    await sub.completed();
    await server.waitForMetric('fanwire_subscriptions', 0);
    assert.deepEqual(sub.pending, []);
  });

  test('binds the topic from variables and argument defaults', async () => {
    const c = client();
    const query = `subscription Px($symbol: String!, $venue: String) {
      priceChanged(symbol: $symbol, venue: $venue) { symbol last: price }
    }`;
    const byDefault = subscribe(c, {
      query: `subscription Px($symbol: String!) { priceChanged(symbol: $symbol) { symbol last: price } }`,
      variables: { symbol: 'ACME' },
    });
    const inLondon = subscribe(c, { query, variables: { symbol: 'ACME', venue: 'XLON' } });
    await server.waitForMetric('fanwire_subscriptions', 2);

    assert.deepEqual(
      await server.publish([
        { topic: 'prices:XLON:ACME', data: { symbol: 'ACME', price: 7.25 } },
        { topic: 'prices:XNYS:ACME', data: { symbol: 'ACME', price: 12.5 } },
      ]),
      { accepted: 2, deliveries: 2 },
    );
    assert.deepEqual(await byDefault.next(), {
      data: { priceChanged: { symbol: 'ACME', last: 12.5 } },
    });
    assert.deepEqual(await inLondon.next(), {
      data: { priceChanged: { symbol: 'ACME', last: 7.25 } },
    });

    byDefault.dispose();
    inLondon.dispose();
    await Promise.all([byDefault.completed(), inLondon.completed()]);
    await server.waitForMetric('fanwire_subscriptions', 0);
  });

  test('complete from the client ends the subscription on the server', async () => {
    let onClosed;
    const closed = new Promise((resolve) => (onClosed = resolve));
    const c = client({ on: { closed: (event) => onClosed(event) } });
    const sub = subscribe(c, {
      query: 'subscription { orderCreated(tenantId: "t-done") { id } }',
    });
    await server.waitForMetric('fanwire_subscriptions', 1);
    assert.deepEqual(
      await server.publish({ topic: 'orders:t-done', data: { id: 'first' } }),
      { accepted: 1, deliveries: 1 },
    );
    assert.deepEqual(await sub.next(), { data: { orderCreated: { id: 'first' } } });

    sub.dispose();
    await sub.completed();
    await server.waitForMetric('fanwire_subscriptions', 0);
    assert.deepEqual(
      await server.publish({ topic: 'orders:t-done', data: { id: 'after-complete' } }),
      { accepted: 1, deliveries: 0 },
    );
    assert.deepEqual(sub.pending, []);

    // With nothing left, the lazy client closes with 1000; the server must
    // answer the close handshake (a dropped socket shows up here as 1006).
    const event = await guard(closed, 'the client to close its idle socket');
    assert.equal(event.code, 1000, `close code ${event.code}`);
    assert.equal(event.wasClean, true);
  });

  test('a validation error reaches sink.error and leaves the connection usable', async () => {
    // Not lazy: the socket stays open while no subscription is live, so the
    // second subscribe below proves that the same connection survived the error.
    const c = client({ lazy: false });
    const query = 'subscription {\n  orderCreated(tenantId: "t-bad") {\n    id\n    nope\n  }\n}';
    const bad = subscribe(c, { query });
    const errors = await bad.error();

    assert.ok(Array.isArray(errors), `sink.error got ${JSON.stringify(errors)}`);
    assert.equal(errors.length, 1, JSON.stringify(errors));
    const [err] = errors;
    assert.match(err.message, /nope/);
    assert.match(err.message, /Order/);
    assert.deepEqual(err.locations, [{ line: 4, column: 5 }]);
    assert.equal(err.extensions?.code, 'GRAPHQL_VALIDATION_FAILED');
    assert.equal(await server.metric('fanwire_subscriptions'), 0);

    // Same client, same socket: a valid subscribe still works.
    const good = subscribe(c, {
      query: 'subscription { orderCreated(tenantId: "t-bad") { id } }',
    });
    await server.waitForMetric('fanwire_subscriptions', 1);
    assert.deepEqual(
      await server.publish({ topic: 'orders:t-bad', data: { id: 'ok' } }),
      { accepted: 1, deliveries: 1 },
    );
    assert.deepEqual(await good.next(), { data: { orderCreated: { id: 'ok' } } });
    assert.deepEqual(c.closes, [], 'the socket must not have closed');

    good.dispose();
    await good.completed();
    await server.waitForMetric('fanwire_subscriptions', 0);
  });

  test('a variable of the wrong type is an error for that subscribe', async () => {
    const c = client();
    const bad = subscribe(c, {
      query: 'subscription ($t: ID!) { orderCreated(tenantId: $t) { id } }',
      variables: {},
    });
    const errors = await bad.error();
    assert.ok(Array.isArray(errors), `sink.error got ${JSON.stringify(errors)}`);
    assert.equal(errors.length, 1, JSON.stringify(errors));
    assert.match(errors[0].message, /\bt\b/);
    assert.equal(errors[0].extensions?.code, 'BAD_USER_INPUT');
    assert.equal(await server.metric('fanwire_subscriptions'), 0);
  });

  test('two clients with identical subscriptions both receive each event', async () => {
    const query = 'subscription { orderCreated(tenantId: "t-fan") { id total: cents } }';
    const first = subscribe(client(), { query });
    const second = subscribe(client(), { query });
    await server.waitForMetric('fanwire_subscriptions', 2);

    const projectionsBefore = await server.metric('fanwire_projections_total');
    assert.deepEqual(
      await server.publish({ topic: 'orders:t-fan', data: { id: 'f-1', cents: 300, status: 'PENDING' } }),
      { accepted: 1, deliveries: 2 },
    );
    const expected = { data: { orderCreated: { id: 'f-1', total: 300 } } };
    assert.deepEqual(await first.next(), expected);
    assert.deepEqual(await second.next(), expected);
    // Identical subscriptions form one group: one projection serves both.
    assert.equal(await server.metric('fanwire_projections_total'), projectionsBefore + 1);

    first.dispose();
    second.dispose();
    await Promise.all([first.completed(), second.completed()]);
    await server.waitForMetric('fanwire_subscriptions', 0);
  });
});
