//! `orderflow`: one binary whose subcommands start each role of the platform.

mod bench;
mod cli;
mod devdb;

fn main() -> std::process::ExitCode {
    cli::main()
}
