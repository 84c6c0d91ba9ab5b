//! Fanwire's benchmarks: the pieces of the `loadgen` binary that have no
//! sockets, so they can be unit-tested, plus the criterion micro-benchmarks
//! in `benches/` (which use `fanwire-core` directly).
//!
//! # Layout
//!
//! - [`workload`]: what the load generator sends: subscribe messages and tick events.
//! - [`publishing`]: the publish modes (burst, single, concurrent): which publisher sends which ticks.
//! - [`frame`]: reading `seq` and `ts` out of a server frame without a JSON parser.
//! - [`http`]: a minimal keep-alive HTTP/1.1 client for `POST /publish`.
//! - [`stats`]: duplicate/gap tracking, percentiles, and `/proc` readings.
//! - [`floor`]: the `floor` stand-in server's parsing and frame building.
//!
//! The binary `loadgen` (in `src/bin/`) drives fanwire, the Node baseline
//! and `floor` (also in `src/bin/`: a server that only writes frames, the
//! lower bound on latency) identically; `run.sh` runs the scenarios and
//! prints the comparison.

pub mod floor;
pub mod frame;
pub mod http;
pub mod publishing;
pub mod stats;
pub mod workload;
