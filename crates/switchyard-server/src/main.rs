//! `switchyard`: a drop-in replacement for configurable-http-proxy (CHP) 5.3.0. Parses
//! the flags and runs [`switchyard_server::run`] until SIGTERM or SIGINT.

use std::process::ExitCode;

use clap::Parser;
use switchyard_server::{Cli, Env};

/// mimalloc instead of glibc's malloc: a proxied request allocates and frees
/// a few dozen blocks (hyper's 8 KiB read buffers among them, past glibc's
/// per-thread cache), and glibc's general path was a tenth of the process's
/// instructions per request (bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for invalid usage and start-up failures (CHP uses 1 for both).
const EXIT_FAILURE: u8 = 1;

fn main() -> ExitCode {
    // The container image's defaults (its `Containerfile` turns them on): the API on every
    // interface unless told otherwise, the token from a file.
    let image = switchyard_server::image_defaults_on();
    let mut args: Vec<_> = std::env::args_os().collect();
    if image {
        args = switchyard_server::image_args(args);
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_FAILURE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Err(message) = cli.validate() {
        eprintln!("error: {message}");
        return ExitCode::from(EXIT_FAILURE);
    }
    let mut env = Env::from_process();
    if image {
        let file = std::env::var_os(switchyard_server::AUTH_TOKEN_FILE_ENV);
        if let Err(message) = env.token_from_file(file.as_deref()) {
            eprintln!("error: {message}");
            return ExitCode::from(EXIT_FAILURE);
        }
    }
    switchyard_server::init_logging(&cli);
    let runtime = match switchyard_server::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(switchyard_server::run(cli, env)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
