//! Integration tests, compiled as one binary (`autotests = false`).

mod harness_selftest;
mod util;
