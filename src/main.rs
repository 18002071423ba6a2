//! `orderflow`: one binary whose subcommands start each role of the platform.

mod bench;
mod bench_all;
mod bench_reads;
mod bench_saga;
mod bench_store;
mod cli;
mod devdb;
mod lag;
mod ops;
mod token;
mod verify;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
