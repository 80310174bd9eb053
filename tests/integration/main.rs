//! End-to-end tests: real servers on 127.0.0.1:0, real HTTP. One test binary (link once).
//!
//! These run against whatever spec the crate was built from, so `.ci/run` runs them once per
//! spec fixture (`MEET_WEBHOOKS_SPEC=tests/fixtures/<stage>/openapi.yaml`).

mod binary;
mod cluster;
mod common;
mod console;
mod contract;
mod crash;
mod delivery;
mod framing;
mod fuzz;
mod hostile;
mod inbox;
mod order;
mod postgres;
mod readme;
mod verification;
