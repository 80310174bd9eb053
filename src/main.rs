//! `meet-webhooks`: see `meet-webhooks --help`, and `cli` in the library for the commands.

/// mimalloc rather than glibc's malloc: a delivery makes a few dozen short-lived allocations
/// across actix, serde and the handler, and glibc's were 5% of the receiver's CPU (perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    meet_webhooks::cli::main()
}
