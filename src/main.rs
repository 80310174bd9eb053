//! `meet-webhooks`: see `meet-webhooks --help`, and `cli` in the library for the commands.

fn main() -> std::process::ExitCode {
    meet_webhooks::cli::main()
}
