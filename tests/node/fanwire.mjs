// Shared harness for the Node end-to-end suite: starts the `fanwire` binary
// named by FANWIRE_BIN on an ephemeral port, publishes over HTTP, reads
// metrics, and wraps the stock graphql-ws client.
//
// Every wait here is bounded only as a failure guard: a test waits for a
// state (a frame, a metric value, an exit), never for a span of time.

import { spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';

import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

export const SCHEMA = fileURLToPath(new URL('../fixtures/schema.graphql', import.meta.url));

/** The schema of `fanwire serve --demo`, which the page at `/` subscribes with. */
export const DEMO_SCHEMA = fileURLToPath(
  new URL('../../engine/server/src/demo/schema.graphql', import.meta.url),
);

/** How long any single wait may take before the test fails. */
export const GUARD_MS = 20_000;

/** The binary under test; throws with a clear message when it is not there. */
export function fanwireBin() {
  const bin = process.env.FANWIRE_BIN;
  if (!bin) {
    throw new Error(
      'FANWIRE_BIN is not set: point it at the fanwire binary, e.g. ' +
        'FANWIRE_BIN=$CARGO_TARGET_DIR/debug/fanwire npm test',
    );
  }
  try {
    accessSync(bin, constants.X_OK);
  } catch (err) {
    throw new Error(`FANWIRE_BIN=${bin} is not an executable file (${err.code})`);
  }
  return bin;
}

/** Rejects with `what` if `promise` does not settle within the guard. */
export function guard(promise, what, ms = GUARD_MS) {
  let timer;
  const fail = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`gave up waiting for ${what}`)), ms);
  });
  return Promise.race([promise, fail]).finally(() => clearTimeout(timer));
}

/**
 * Starts `fanwire serve` and resolves once it reports its port.
 * `config`: the text of a TOML config file to serve with (the flags win).
 * @param {{publishToken?: string, schema?: string, config?: string}} [options]
 */
export async function startServer({ publishToken, schema = SCHEMA, config } = {}) {
  const bin = fanwireBin();
  const args = ['serve', '--schema', schema, '--listen', '127.0.0.1:0'];
  if (publishToken) args.push('--publish-token', publishToken);
  if (config !== undefined) {
    const dir = mkdtempSync(join(tmpdir(), 'fanwire-e2e-'));
    writeFileSync(join(dir, 'fanwire.toml'), config);
    args.push('--config', join(dir, 'fanwire.toml'));
  }
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });

  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });

  const lines = createInterface({ input: child.stdout });
  const port = await guard(
    new Promise((resolve, reject) => {
      lines.on('line', (line) => {
        const m = /^fanwire listening on http:\/\/127\.0\.0\.1:(\d+)\s*$/.exec(line);
        if (m) resolve(Number(m[1]));
      });
      child.once('error', reject);
      exited.then(({ code, signal }) =>
        reject(new Error(`fanwire exited before listening (code ${code}, signal ${signal}):\n${stderr}`)),
      );
    }),
    'fanwire to print its listening line',
  ).catch((err) => {
    child.kill('SIGKILL');
    throw err;
  });
  // Keep draining stdout so the child never blocks on a full pipe.
  lines.on('line', () => {});

  return new Server(child, port, exited, publishToken, () => stderr);
}

export class Server {
  constructor(child, port, exited, publishToken, stderr) {
    this.child = child;
    this.port = port;
    this.exited = exited;
    this.publishToken = publishToken;
    this.stderr = stderr;
    this.http = `http://127.0.0.1:${port}`;
    this.ws = `ws://127.0.0.1:${port}/graphql`;
  }

  /** POSTs to /publish, answered once the events are fanned out (`?wait=dispatched`, so the
   * reply counts `deliveries`); resolves to `{status, body}` with the parsed JSON body. */
  async publishRaw(body, { token = this.publishToken, contentType = 'application/json' } = {}) {
    const headers = { 'content-type': contentType };
    if (token) headers.authorization = `Bearer ${token}`;
    const res = await guard(
      fetch(`${this.http}/publish?wait=dispatched`, {
        method: 'POST',
        headers,
        body: typeof body === 'string' ? body : JSON.stringify(body),
      }),
      'POST /publish',
    );
    const text = await res.text();
    let parsed;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = text;
    }
    return { status: res.status, body: parsed };
  }

  /** Publishes events and returns the server's `{accepted, deliveries}`; fails on non-200. */
  async publish(events) {
    const { status, body } = await this.publishRaw(events);
    if (status !== 200) {
      throw new Error(`POST /publish answered ${status}: ${JSON.stringify(body)}`);
    }
    return body;
  }

  /** The value of one unlabelled Prometheus sample, or undefined. */
  async metric(name) {
    const res = await guard(fetch(`${this.http}/metrics`), 'GET /metrics');
    if (res.status !== 200) throw new Error(`GET /metrics answered ${res.status}`);
    const text = await res.text();
    for (const line of text.split('\n')) {
      const [sample, value] = line.trim().split(/\s+/);
      if (sample === name) return Number(value);
    }
    return undefined;
  }

  /** Polls /metrics until `name` equals `expected`. */
  async waitForMetric(name, expected) {
    let last;
    const deadline = Date.now() + GUARD_MS;
    while (Date.now() < deadline) {
      last = await this.metric(name);
      if (last === expected) return;
      await sleep(20);
    }
    throw new Error(`metric ${name} stayed at ${last}, expected ${expected}`);
  }

  /** Sends SIGTERM and resolves to `{code, signal}` once the process exits. */
  async terminate() {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGTERM');
    }
    return guard(this.exited, 'fanwire to exit after SIGTERM');
  }

  /** Stops the server whatever state it is in; for `after` hooks. */
  async stop() {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    try {
      await this.terminate();
    } catch {
      this.child.kill('SIGKILL');
      await this.exited;
    }
  }
}

/** A stock graphql-ws client for `server`, with no retries so failures surface. */
export function connect(server, options = {}) {
  const closes = [];
  const client = createClient({
    url: server.ws,
    webSocketImpl: WebSocket,
    retryAttempts: 0,
    ...options,
    on: {
      closed: (event) => closes.push(event),
      ...options.on,
    },
  });
  client.closes = closes;
  return client;
}

/**
 * Subscribes through `client.subscribe` and records what reaches the sink.
 * `next()` resolves with the next result, `error()` and `completed()` with
 * the sink's terminal call, `dispose()` unsubscribes (a `complete` frame).
 */
export function subscribe(client, payload) {
  const results = [];
  const waiters = [];
  let settleError;
  let settleComplete;
  const error = new Promise((resolve) => (settleError = resolve));
  const completed = new Promise((resolve) => (settleComplete = resolve));
  const dispose = client.subscribe(payload, {
    next(value) {
      const waiter = waiters.shift();
      if (waiter) waiter(value);
      else results.push(value);
    },
    error(err) {
      settleError(err);
    },
    complete() {
      settleComplete();
    },
  });
  return {
    dispose,
    /** Resolves with what the sink's error() received. */
    error: () => guard(error, 'sink.error'),
    /** Resolves when the sink's complete() is called. */
    completed: () => guard(completed, 'sink.complete'),
    next() {
      if (results.length) return Promise.resolve(results.shift());
      return guard(new Promise((resolve) => waiters.push(resolve)), 'a next result');
    },
    /** Results that arrived and were not taken with next(). */
    pending: results,
  };
}
