// The stock-client matrix's clients: each one set up as its README shows a
// newcomer, in its default configuration (no subprotocol named, no retry or
// keep-alive tuning). On Node 20 there is no global WebSocket, so the
// graphql-ws based clients get `ws` as their README says for Node; that is
// the only option passed.
//
// Every client here has one shape: `open(url, request)` connects, subscribes
// and returns a Session whose `next()` resolves with the next result and
// whose `close()` unsubscribes (a `complete` frame, or `stop` on the legacy
// protocol), closes the socket and resolves with the close code the client
// saw. The browser is a Page instead: `openPage(url)` loads a page that
// subscribes by itself and reports each item the page adds to its list.
//
// Used by matrix.test.mjs (the binary) and by matrix-client.mjs, which
// python/tests/test_client_matrix.py runs against the Python serving modes.

import { createRequire } from 'node:module';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { existsSync } from 'node:fs';

import { ApolloClient, InMemoryCache, gql } from '@apollo/client';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { Client as UrqlClient, cacheExchange, fetchExchange, subscriptionExchange } from '@urql/core';
import { createClient } from 'graphql-ws';
import puppeteer from 'puppeteer-core';
import { SubscriptionClient } from 'subscriptions-transport-ws';
import WebSocket from 'ws';

/** How long any single wait may take before the cell fails. */
export const GUARD_MS = 20_000;

/** The subscription every cell runs; each serving mode's schema has this field. */
export const QUERY = 'subscription OnOrder($t: ID!) { orderCreated(tenantId: $t) { id cents } }';

/** Rejects with `what` if `promise` does not settle within the guard. */
export function guard(promise, what, ms = GUARD_MS) {
  let timer;
  const fail = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`gave up waiting for ${what}`)), ms);
  });
  return Promise.race([promise, fail]).finally(() => clearTimeout(timer));
}

/** The installed version of an npm package (what the lock file pinned). */
export function versionOf(name) {
  const require = createRequire(import.meta.url);
  return require(`${name}/package.json`).version;
}

/** A queue of results that a client pushes into and a test takes from. */
class Inbox {
  #items = [];
  #waiters = [];
  #failure = null;

  push(value) {
    const waiter = this.#waiters.shift();
    if (waiter) waiter.resolve(value);
    else this.#items.push(value);
  }

  fail(error) {
    this.#failure = error instanceof Error ? error : new Error(describe(error));
    for (const waiter of this.#waiters.splice(0)) waiter.reject(this.#failure);
  }

  next(what) {
    if (this.#items.length) return Promise.resolve(this.#items.shift());
    if (this.#failure) return Promise.reject(this.#failure);
    let waiter;
    const taken = new Promise((resolve, reject) => this.#waiters.push((waiter = { resolve, reject })));
    // A waiter that gave up must not swallow the item that comes after it.
    return guard(taken, what).finally(() => {
      const at = this.#waiters.indexOf(waiter);
      if (at >= 0) this.#waiters.splice(at, 1);
    });
  }
}

/** Readable text for what a client's error callback receives (an Error, a CloseEvent, a GraphQL error list). */
function describe(error) {
  if (error instanceof Error) return error.message;
  if (error && typeof error === 'object' && 'code' in error) {
    return `socket closed with ${error.code} ${JSON.stringify(error.reason ?? '')}`;
  }
  return JSON.stringify(error);
}

/** A graphql-ws client that records how its socket closed. */
function graphqlWsClient(url) {
  let onClosed;
  const closed = new Promise((resolve) => (onClosed = resolve));
  const client = createClient({
    url,
    webSocketImpl: WebSocket,
    on: { closed: (event) => onClosed(event.code) },
  });
  return { client, closed };
}

/** `graphql-ws`'s own `createClient` and `subscribe` with a sink. */
function openGraphqlWs(url, request) {
  const { client, closed } = graphqlWsClient(url);
  const inbox = new Inbox();
  const unsubscribe = client.subscribe(request, {
    next: (result) => inbox.push(result),
    error: (error) => inbox.fail(error),
    complete: () => {},
  });
  return {
    next: () => inbox.next('a result from graphql-ws'),
    async close() {
      unsubscribe();
      await client.dispose();
      return guard(closed, 'the graphql-ws socket to close');
    },
  };
}

/** Apollo Client with `GraphQLWsLink`, as Apollo's subscriptions page shows. */
function openApollo(url, request) {
  const { client: wsClient, closed } = graphqlWsClient(url);
  const apollo = new ApolloClient({
    link: new GraphQLWsLink(wsClient),
    cache: new InMemoryCache(),
  });
  const inbox = new Inbox();
  const subscription = apollo
    .subscribe({ query: gql(request.query), variables: request.variables })
    .subscribe({
      next: (result) => (result.error ? inbox.fail(result.error) : inbox.push(result)),
      error: (error) => inbox.fail(error),
    });
  return {
    next: () => inbox.next('a result from Apollo Client'),
    async close() {
      subscription.unsubscribe();
      apollo.stop();
      await wsClient.dispose();
      return guard(closed, 'the Apollo (graphql-ws) socket to close');
    },
  };
}

/** urql (`@urql/core`) with `subscriptionExchange` over graphql-ws, exchanges as urql's subscriptions page lists them. */
function openUrql(url, request) {
  const { client: wsClient, closed } = graphqlWsClient(url);
  const urql = new UrqlClient({
    // urql wants an HTTP url for queries; the subscription goes over wsClient.
    url: url.replace(/^ws/, 'http'),
    exchanges: [
      cacheExchange,
      fetchExchange,
      subscriptionExchange({
        forwardSubscription(operation) {
          const input = { ...operation, query: operation.query || '' };
          return {
            subscribe(sink) {
              const unsubscribe = wsClient.subscribe(input, sink);
              return { unsubscribe };
            },
          };
        },
      }),
    ],
  });
  const inbox = new Inbox();
  const { unsubscribe } = urql.subscription(request.query, request.variables).subscribe((result) => {
    if (result.error) inbox.fail(new Error(result.error.message));
    else inbox.push({ data: result.data });
  });
  return {
    next: () => inbox.next('a result from urql'),
    async close() {
      unsubscribe();
      await wsClient.dispose();
      return guard(closed, 'the urql (graphql-ws) socket to close');
    },
  };
}

/** The legacy `subscriptions-transport-ws` `SubscriptionClient` (subprotocol `graphql-ws`). */
function openLegacy(url, request) {
  const client = new SubscriptionClient(url, {}, WebSocket);
  const inbox = new Inbox();
  const subscription = client.request(request).subscribe({
    next: (result) => inbox.push(result),
    error: (error) => inbox.fail(error),
  });
  return {
    next: () => inbox.next('a result from subscriptions-transport-ws'),
    async close() {
      // close() drops its own handlers, so listen on the socket itself.
      const socket = client.client;
      const closed =
        socket && socket.readyState !== WebSocket.CLOSED
          ? new Promise((resolve) => socket.once('close', (code) => resolve(code)))
          : Promise.resolve(undefined);
      subscription.unsubscribe();
      client.close();
      return guard(closed, 'the subscriptions-transport-ws socket to close');
    },
  };
}

/**
 * The clients of the matrix. `typename`: the client adds `__typename` to
 * every selection set (Apollo's cache does), so the server must project it.
 */
export const CLIENTS = [
  { name: 'graphql-ws', packageName: 'graphql-ws', typename: false, open: openGraphqlWs },
  { name: 'apollo', packageName: '@apollo/client', typename: true, open: openApollo },
  { name: 'urql', packageName: '@urql/core', typename: false, open: openUrql },
  {
    name: 'subscriptions-transport-ws',
    packageName: 'subscriptions-transport-ws',
    typename: false,
    open: openLegacy,
  },
];

/**
 * The close codes of a clean close: graphql-ws' `dispose` closes with 1000;
 * the legacy client sends `connection_terminate` and closes with no code, and
 * the server answers with 1000 or echoes the empty close (1005). Anything
 * else (1006: the socket dropped without a close frame; 4xxx) is a failure.
 */
export const CLEAN_CLOSE = [1000, 1005];

/** The result a client should see for an order event `{id, cents}`. */
export function expectedOrder(client, { id, cents }) {
  const order = client.typename ? { __typename: 'Order', id, cents } : { id, cents };
  return { data: { orderCreated: order } };
}

/** Debian's Chromium; the test scripts install it when missing. */
export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

/**
 * Loads `url` in headless Chromium (a fresh profile) and reports every list
 * item the page adds (the demo page's `#log`, the examples' `#orders`).
 * `texts.next()` resolves with the next item's text; `close()` closes the
 * browser, which closes the page's socket.
 */
export async function openPage(url) {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium (tests/node/setup.sh does)`);
  }
  const profile = await mkdtemp(join(tmpdir(), 'fanwire-chromium-'));
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
      `--user-data-dir=${profile}`,
    ],
  });
  try {
    const page = await browser.newPage();
    const texts = new Inbox();
    const problems = [];
    page.on('pageerror', (error) => problems.push(error.message));
    await page.exposeFunction('fanwireReport', (text) => texts.push(text));
    // Installed before the page's own script runs, so no item can be missed.
    await page.evaluateOnNewDocument(() => {
      new MutationObserver((records) => {
        for (const record of records) {
          for (const node of record.addedNodes) {
            if (node.nodeName === 'LI') window.fanwireReport(node.textContent);
          }
        }
      }).observe(document, { childList: true, subtree: true });
    });
    const response = await guard(page.goto(url), `Chromium to load ${url}`);
    if (!response.ok()) throw new Error(`GET ${url} answered ${response.status()}`);
    return {
      page,
      problems,
      /** Resolves with the text of the next list item the page adds. */
      next: () => texts.next(`the page at ${url} to show an item`),
      async close() {
        await browser.close();
        await rm(profile, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await browser.close();
    await rm(profile, { recursive: true, force: true });
    throw error;
  }
}
