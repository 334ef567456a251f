//! Integration tests: the real application against real PostgreSQL and NATS (one binary, as
//! zero2prod's `tests/api/`). Each test owns a database, a stream and a subject prefix, so
//! tests run in parallel and can be rerun.

// In tests a failed expectation is the failure we want to see.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod auth;
mod backup;
pub(crate) mod bad_input;
mod chaos;
mod commands;
mod dashboard;
mod docs;
mod harness;
mod import;
mod layering;
pub(crate) mod manifests;
pub(crate) mod market;
mod openapi;
mod privileges;
pub(crate) mod queries;
mod relay;
mod security;
mod seed;
mod stream_privacy;
mod traces;
