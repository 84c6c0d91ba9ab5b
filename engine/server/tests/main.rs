//! The `fanwire-server` integration tests, one binary for all of them (one
//! link of wasmtime and the bus clients instead of one per file). Each
//! module is one area, and test names read `<module>::<test>`:
//!
//! - `cli`: the `fanwire` binary itself (check, startup errors, flags, SIGTERM);
//! - `embedded`: a server around an engine the embedding program built;
//! - `fanout`: grouping, slow-consumer isolation and limits;
//! - `http`: publish errors, auth, health and metrics;
//! - `jwt`: the native JWT connection policy;
//! - `nodes`: several `fanwire` processes over the real NATS and Redis;
//! - `plugins`: WASM plugins in a running host;
//! - `postgres_source`: the PostgreSQL source against the real PostgreSQL;
//! - `resolvers`: component resolvers (`[[resolvers]]`) in a running host;
//! - `shutdown`: on SIGTERM the binary flushes what is queued before the 1001;
//! - `sighup`: plugin reload on SIGHUP, sent to a child `fanwire` process
//!   (never to this one, which runs every other test);
//! - `websocket`: both subprotocols' exact frames and close codes;
//! - `common`, `services`: the helpers (an in-process server and a real
//!   client; the real services and `fanwire` processes).

mod common;
mod services;

mod cli;
mod embedded;
mod fanout;
mod http;
mod jwt;
mod nodes;
mod plugins;
mod postgres_source;
mod resolvers;
mod shutdown;
mod sighup;
mod websocket;
