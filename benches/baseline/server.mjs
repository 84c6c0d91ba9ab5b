// The stock Node stack that fanwire is benchmarked against: graphql-js
// executes each event once per subscriber, graphql-ws speaks
// graphql-transport-ws, ws holds the sockets, and a small in-process PubSub
// feeds one async iterator per subscription (what graphql-subscriptions'
// PubSub does, without its EventEmitter).
//
// It takes the same command line as `fanwire serve`, serves the same schema
// (`@topic(name: "...{arg}")` binds a Subscription field to a topic, the
// event's `data` is the field's value), the same `POST /publish` endpoint,
// and prints the same kind of "listening on http://HOST:PORT" line, so
// benches/run.sh and the load generator drive both identically.
//
//   node server.mjs serve --schema FILE --listen 127.0.0.1:0
//        [--publish-token TOKEN] [--config FILE (accepted, ignored: no limits)]

import { readFileSync } from 'node:fs';
import http from 'node:http';
import { buildSchema } from 'graphql';
import { useServer } from 'graphql-ws/use/ws';
import { WebSocketServer } from 'ws';

function parseArgs(argv) {
  const [command, ...rest] = argv;
  if (command !== 'serve') throw new Error('usage: server.mjs serve --schema FILE --listen HOST:PORT');
  const opts = { listen: '127.0.0.1:0' };
  for (let i = 0; i < rest.length; i += 2) {
    const key = rest[i].replace(/^--/, '');
    if (!['schema', 'listen', 'publish-token', 'config'].includes(key) || rest[i + 1] === undefined) {
      throw new Error(`unknown or incomplete option ${rest[i]}`);
    }
    opts[key] = rest[i + 1];
  }
  if (!opts.schema) throw new Error('--schema is required');
  return opts;
}

/** Topic -> the push functions of the subscriptions listening on it. */
class PubSub {
  #topics = new Map();

  /** Queues `data` for every subscription on `topic`; returns how many. */
  publish(topic, data) {
    const subs = this.#topics.get(topic);
    if (!subs) return 0;
    for (const push of subs) push(data);
    return subs.size;
  }

  /** An async iterator of the events on `topic`, until `return()`. */
  subscribe(topic) {
    let subs = this.#topics.get(topic);
    if (!subs) this.#topics.set(topic, (subs = new Set()));
    let queue = [];
    let head = 0;
    let waiting = null;
    let done = false;
    const push = (value) => {
      if (waiting) {
        const resolve = waiting;
        waiting = null;
        resolve({ value, done: false });
      } else {
        queue.push(value);
      }
    };
    const close = () => {
      if (done) return;
      done = true;
      subs.delete(push);
      if (subs.size === 0 && this.#topics.get(topic) === subs) this.#topics.delete(topic);
      queue = [];
      head = 0;
      if (waiting) waiting({ value: undefined, done: true });
      waiting = null;
    };
    subs.add(push);
    return {
      next() {
        if (head < queue.length) {
          const value = queue[head++];
          // Compact now and then, so a long backlog is not an O(n) shift per event.
          if (head > 1024 && head * 2 > queue.length) {
            queue = queue.slice(head);
            head = 0;
          }
          return Promise.resolve({ value, done: false });
        }
        if (done) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => (waiting = resolve));
      },
      return() {
        close();
        return Promise.resolve({ value: undefined, done: true });
      },
      throw(error) {
        close();
        return Promise.reject(error);
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }
}

/** Binds every Subscription field to its `@topic` (default: its own name). */
function bindTopics(schema, pubsub) {
  const subscription = schema.getSubscriptionType();
  if (!subscription) throw new Error('the schema has no subscription root type');
  for (const field of Object.values(subscription.getFields())) {
    const directive = field.astNode?.directives?.find((d) => d.name.value === 'topic');
    const nameArg = directive?.arguments?.find((a) => a.name.value === 'name');
    const template = nameArg?.value.kind === 'StringValue' ? nameArg.value.value : field.name;
    field.subscribe = (_root, args) =>
      pubsub.subscribe(template.replace(/\{(\w+)\}/g, (_, arg) => String(args[arg])));
    field.resolve = (data) => data;
  }
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function reply(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

async function handlePublish(req, res, pubsub, token) {
  if (token && req.headers.authorization !== `Bearer ${token}`) {
    return reply(res, 401, { error: 'a valid publish token is required' });
  }
  let events;
  try {
    const body = JSON.parse(await readBody(req));
    events = Array.isArray(body) ? body : [body];
  } catch (e) {
    return reply(res, 400, { error: `invalid JSON: ${e.message}` });
  }
  if (!events.every((e) => e && typeof e.topic === 'string' && 'data' in e)) {
    return reply(res, 400, { error: 'each event needs a string "topic" and a "data"' });
  }
  let deliveries = 0;
  for (const event of events) deliveries += pubsub.publish(event.topic, event.data);
  reply(res, 200, { accepted: events.length, deliveries });
}

const opts = parseArgs(process.argv.slice(2));
const schema = buildSchema(readFileSync(opts.schema, 'utf8'));
const pubsub = new PubSub();
bindTopics(schema, pubsub);

const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/publish') {
    handlePublish(req, res, pubsub, opts['publish-token']).catch((e) =>
      reply(res, 500, { error: String(e) }),
    );
  } else {
    reply(res, 404, { error: 'not found' });
  }
});
const wss = new WebSocketServer({ server, path: '/graphql' });
useServer({ schema }, wss);

const [host, port] = [opts.listen.slice(0, opts.listen.lastIndexOf(':')), opts.listen.slice(opts.listen.lastIndexOf(':') + 1)];
server.listen(Number(port), host, () => {
  const { address, port: bound } = server.address();
  console.log(`baseline listening on http://${address}:${bound}`);
});
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(0));
