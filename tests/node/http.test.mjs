// The HTTP side of the fanwire binary: /publish (auth, body errors, batches),
// /healthz and /metrics, as any HTTP client sees them.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { startServer } from './fanwire.mjs';

const TOKEN = 's3cret-token';

describe('HTTP endpoints', () => {
  let server;

  before(async () => {
    server = await startServer({ publishToken: TOKEN });
  });

  after(async () => {
    await server?.stop();
  });

  test('GET /healthz answers 200', async () => {
    const res = await fetch(`${server.http}/healthz`);
    assert.equal(res.status, 200);
    await res.arrayBuffer();
  });

  test('GET /metrics is Prometheus text with the subscription gauge', async () => {
    const res = await fetch(`${server.http}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain|^application\/openmetrics-text/);
    const text = await res.text();
    assert.match(text, /^# TYPE fanwire_subscriptions gauge$/m);
    assert.match(text, /^fanwire_subscriptions 0$/m);
    assert.match(text, /^fanwire_projections_total \d+$/m);
  });

  test('POST /publish without the token is 401', async () => {
    const event = { topic: 'orders:t-http', data: { id: '1' } };
    assert.equal((await server.publishRaw(event, { token: null })).status, 401);
    assert.equal((await server.publishRaw(event, { token: 'wrong' })).status, 401);
  });

  test('POST /publish with a bad body is 400 with an error', async () => {
    for (const body of ['{not json', '{"data": 1}', '42', '[{"topic": 5, "data": null}]']) {
      const { status, body: reply } = await server.publishRaw(body);
      assert.equal(status, 400, `body ${body}`);
      assert.equal(typeof reply.error, 'string', `body ${body} -> ${JSON.stringify(reply)}`);
      assert.ok(reply.error.length > 0);
    }
  });

  test('POST /publish accepts one event or a batch', async () => {
    assert.deepEqual(
      await server.publish({ topic: 'orders:t-http', data: { id: '1' }, id: 'evt-1' }),
      { accepted: 1, deliveries: 0 },
    );
    assert.deepEqual(
      await server.publish([
        { topic: 'orders:t-http', data: { id: '2' } },
        { topic: 'prices:XNYS:ACME', data: null },
        { topic: 'anything', data: [1, 'two', { three: 3 }] },
      ]),
      { accepted: 3, deliveries: 0 },
    );
  });
});
