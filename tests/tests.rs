//! Integration tests, compiled as one binary (`autotests = false`).

mod daemon;
mod faults;
mod harness_selftest;
mod util;
mod ship;
mod status_page;
