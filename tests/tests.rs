//! Integration tests, compiled as one binary (`autotests = false`).

mod daemon;
mod harness_selftest;
mod util;
