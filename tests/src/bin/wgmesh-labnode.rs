//! `wgmesh-labnode`: the multi-call test program (`wgmeshd …`, `wgmeshctl …`, `serve`, the
//! traffic helpers); everything is in [`wgmesh_tests::labnode`]. Integration tests of this package
//! find it as `wgmesh_tests::labnode_exe!()`.

use std::process::ExitCode;

fn main() -> ExitCode {
    wgmesh_tests::labnode::main_from(std::env::args_os())
}
