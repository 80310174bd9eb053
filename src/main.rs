//! `meet-webhooks`: see `meet-webhooks --help`, and `meet_webhooks_runtime::cli` for the commands.

use meet_webhooks::Receiver;
use meet_webhooks::handler::ServiceHandler;

/// mimalloc rather than glibc's malloc: a delivery makes a few dozen short-lived allocations
/// across actix, serde and the handler, and glibc's malloc and free were 5% of the receiver's
/// CPU (`bench/results/figures-in-code.md`, mimalloc). (SQLite, being C, keeps glibc's.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // The handler is built with the Meet REST API's settings (`--meet-url`), when given.
    meet_webhooks_runtime::cli::main(|meet| Receiver::new(ServiceHandler::new(meet)))
}
