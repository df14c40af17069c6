//! Integration tests, compiled as one binary (`autotests = false`).

mod adaptation;
mod alerts;
mod cli;
mod dashboard_schema;
mod dashboards;
mod delivery;
mod durability;
mod faults;
mod fuzz;
mod harness_selftest;
mod influx_v1;
mod install;
mod layers;
mod lifecycle;
mod low_rate;
mod packaging;
mod retrain;
mod scale_out;
mod scenarios;
mod sink_rate;
mod status_page;
mod systemd;
mod util;
