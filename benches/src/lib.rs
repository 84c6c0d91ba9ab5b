//! Fanwire's benchmarks: the pieces of the `loadgen` binary that have no
//! sockets, so they can be unit-tested, plus the criterion micro-benchmarks
//! in `benches/` (which use `fanwire-core` directly).
//!
//! # Layout
//!
//! - [`workload`]: what the load generator sends: subscribe messages and tick events.
//! - [`frame`]: reading `seq` and `ts` out of a server frame without a JSON parser.
//! - [`http`]: a minimal keep-alive HTTP/1.1 client for `POST /publish`.
//! - [`stats`]: duplicate/gap tracking, percentiles, and `/proc` readings.
//!
//! The binary `loadgen` (in `src/bin/`) drives fanwire and the Node baseline
//! identically; `run.sh` runs the scenarios and prints the comparison.

pub mod frame;
pub mod http;
pub mod stats;
pub mod workload;
