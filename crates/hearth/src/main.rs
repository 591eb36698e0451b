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
