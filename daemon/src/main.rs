//! `wgmeshd` binary: parse the command line, set up logging, run, report errors once.

use std::process::ExitCode;

use clap::Parser as _;
use wgmeshd::cli::{Cli, run};
use wgmeshd::logging;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_level, cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("wgmeshd: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
