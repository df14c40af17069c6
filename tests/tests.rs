//! Integration tests, compiled as one binary (`autotests = false`).

mod daemon;
mod faults;
mod fuzz;
mod harness_selftest;
mod ship;
mod status_page;
mod util;
