//! `wgmeshd` binary: everything is in the library ([`wgmeshd::cli::main_from`]), so that tests
//! run exactly this code.

use std::process::ExitCode;

fn main() -> ExitCode {
    wgmeshd::cli::main_from(std::env::args_os())
}
