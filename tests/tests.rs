//! Integration tests, compiled as one binary (`autotests = false`).

mod daemon;
mod faults;
mod fuzz;
mod harness_selftest;
mod layers;
mod ship;
mod status_page;
mod util;
