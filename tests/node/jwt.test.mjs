// The stock graphql-ws client sending a JWT to the fanwire binary served with
// `[auth.jwt]` (HS256). The client is in its default configuration (`ws` as
// its WebSocket on Node 20, as its README says) plus the one option a
// newcomer adds for credentials, `connectionParams`, in the two shapes
// graphql-ws's docs and recipes show: `{ token }` (the policy's default
// `token_field`) and `{ Authorization: 'Bearer ...' }`. A valid token
// receives events; a wrongly signed or expired one is refused with 4403 and
// the policy's reason, which the client reports in its `closed` event.

import { createHmac } from 'node:crypto';
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

import { guard, startServer, subscribe } from './fanwire.mjs';

const SECRET = 'e2e-node-hs256-secret';
const QUERY = 'subscription($t: ID!) { orderCreated(tenantId: $t) { id cents } }';

/** An HS256 JWT over `claims`, as any JWT library would sign it. */
function sign(claims, secret = SECRET) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

const now = () => Math.floor(Date.now() / 1000);

/** The credential shapes a newcomer puts in `connectionParams`. */
const PARAMS = [
  { name: '{ token }', params: (token) => ({ token }) },
  { name: '{ Authorization: Bearer }', params: (token) => ({ Authorization: `Bearer ${token}` }) },
];

describe('graphql-ws with a JWT against fanwire serve with [auth.jwt]', () => {
  let server;
  let clients;

  /** The stock client; `closes` records its `closed` events (observed, not configured). */
  const client = (connectionParams) => {
    const closes = [];
    const waiters = [];
    const c = createClient({
      url: server.ws,
      webSocketImpl: WebSocket,
      connectionParams,
      on: {
        closed: (event) => {
          const waiter = waiters.shift();
          if (waiter) waiter(event);
          else closes.push(event);
        },
      },
    });
    c.nextClose = () =>
      closes.length
        ? Promise.resolve(closes.shift())
        : guard(new Promise((resolve) => waiters.push(resolve)), 'the socket to close');
    clients.push(c);
    return c;
  };

  beforeEach(async () => {
    clients = [];
    server = await startServer({
      config: `[auth.jwt]\nalgorithm = "HS256"\nsecret = "${SECRET}"\n`,
    });
  });

  afterEach(async () => {
    // A refused client's dispose() rejects with the close event it retries on.
    await Promise.allSettled(clients.map((c) => c.dispose()));
    await server?.stop();
  });

  for (const { name, params } of PARAMS) {
    test(`a valid token in ${name} receives events`, async () => {
      const token = sign({ sub: 'ada', tenant_id: 't-jwt', exp: now() + 3600 });
      const sub = subscribe(client(params(token)), { query: QUERY, variables: { t: 't-jwt' } });
      await server.waitForMetric('fanwire_subscriptions', 1);
      assert.deepEqual(
        await server.publish({ topic: 'orders:t-jwt', data: { id: 'j-1', cents: 42 } }),
        { accepted: 1, deliveries: 1 },
      );
      assert.deepEqual(await sub.next(), { data: { orderCreated: { id: 'j-1', cents: 42 } } });
    });

    for (const [what, token, reason] of [
      [
        'a wrongly signed token',
        () => sign({ sub: 'eve', exp: now() + 3600 }, 'not-the-secret'),
        'Invalid token signature',
      ],
      ['an expired token', () => sign({ sub: 'ada', exp: now() - 600 }), 'Token expired'],
    ]) {
      test(`${what} in ${name} is refused with 4403`, async () => {
        const c = client(params(token()));
        const sub = subscribe(c, { query: QUERY, variables: { t: 't-jwt' } });
        const first = await c.nextClose();
        assert.equal(first.code, 4403, `close ${first.code} ${JSON.stringify(first.reason)}`);
        assert.equal(first.reason, reason);
        // graphql-ws retries 4403 (its source: "might grant access after
        // retry"), five times with backoff, before the sink's error: each
        // attempt is refused the same way.
        const second = await c.nextClose();
        assert.deepEqual([second.code, second.reason], [4403, reason]);
        assert.deepEqual(sub.pending, []);
        assert.equal(await server.metric('fanwire_subscriptions'), 0);
      });
    }
  }
});
