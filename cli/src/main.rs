//! `wgmeshctl` binary: everything is in the library ([`wgmeshctl::main_from`]), so that tests run
//! exactly this code.

use std::process::ExitCode;

fn main() -> ExitCode {
    wgmeshctl::main_from(std::env::args_os())
}
