//! One module per subcommand. Only `cmd/` wires components together: the
//! layers below it never start a task, open a socket or read the config
//! file themselves.

pub mod check_config;
pub mod exit;
pub mod replay;
pub mod run;
pub mod simulate;
pub mod tap;
