//! `meet-webhooks`: see `meet-webhooks --help`, and `cli` in the library for the commands.

/// mimalloc rather than glibc's malloc: a delivery makes a few dozen short-lived allocations
/// across actix, serde and the handler, and glibc's malloc and free were 5% of the receiver's
/// CPU (perf). In interleaved runs mimalloc took 3-4% less CPU per delivery without the inbox
/// and 5-10% less with it, for 10-15 MiB more resident memory. (SQLite, being C, keeps
/// glibc's.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    meet_webhooks::cli::main()
}
