//! `hearth`: the binary that ties the store, engine and server together.

mod aws;
mod cli;
mod commands;
mod config;
mod peering;
mod progress;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command, LogFormat};

fn main() -> ExitCode {
    openmp_wait_policy();
    let cli = Cli::parse();
    init_logging(&cli);
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Re-executes this process with libgomp's spin set, unless the operator
/// set it. llama.cpp's CPU threads meet at a barrier after every graph
/// node, and libgomp (its OpenMP runtime) spins there about 3 ms before
/// sleeping, but only 100 times once it manages more threads than there
/// are CPUs. Every loaded model keeps a team of threads, so serving a
/// second model (or holding the old version during a swap) crossed that
/// line and halved decode on this 2-core machine: 50 tok/s instead of 110
/// for the default model, with the other model idle. `ACTIVE` raises the
/// crowded spin to 1,000, which restores full speed, and the explicit
/// count keeps the usual 3 ms otherwise. libgomp reads both once, before
/// `main`, so they must be in the environment the process starts with.
/// A build whose compiler links LLVM's libomp instead would spin forever
/// under `ACTIVE` unless given a block time: its default, 200 ms, is set.
fn openmp_wait_policy() {
    use std::os::unix::process::CommandExt;
    const CHOSEN: [&str; 3] = ["OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"];
    if CHOSEN.iter().any(|v| std::env::var_os(v).is_some()) {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    // Only returns if the exec failed (the binary replaced on disk, say):
    // then this process runs on, with libgomp's defaults.
    let err = command
        .args(args)
        .env("OMP_WAIT_POLICY", "ACTIVE")
        .env("GOMP_SPINCOUNT", "300000")
        .env("KMP_BLOCKTIME", "200")
        .exec();
    eprintln!("warning: could not set OpenMP's wait policy ({err}); several loaded models may decode slower");
}

/// Logs go to stderr so `hearth run` output on stdout stays clean. The server
/// logs at info by default; one-shot commands only warn. llama.cpp's own log
/// (target `llama-cpp-2`) is chatty at info, so it is held to warnings unless
/// asked for; `llama_cpp_2` is the binding's own, mostly about log framing.
fn init_logging(cli: &Cli) {
    let default = match cli.command {
        Command::Serve(_) => "info,llama-cpp-2=warn,llama_cpp_2=error",
        _ => "warn,llama-cpp-2=error,llama_cpp_2=error",
    };
    let filter = cli
        .global
        .log
        .as_deref()
        .map(EnvFilter::try_new)
        .unwrap_or_else(|| Ok(EnvFilter::new(default)))
        .unwrap_or_else(|e| {
            eprintln!("warning: invalid log filter ({e}); using `{default}`");
            EnvFilter::new(default)
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match cli.global.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
