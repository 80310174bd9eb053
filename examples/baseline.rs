//! Reference servers for the load tool, to put the receiver's figures next to the floor they
//! stand on, in the same run: `floor` answers 200 to any POST after reading its body (the HTTP
//! stack and the kernel, nothing else); `verify` also checks the HMAC signature and nothing
//! more (the provider's "bare verifier"). Both run actix-web as the receiver does.
//!
//! ```sh
//! cargo run --release --example baseline -- --mode verify --key secret --bind 127.0.0.1:5081 [--workers 1]
//! ```

use actix_web::web::{self, Bytes};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use clap::{Parser, ValueEnum};
use meet_webhooks_signature::{Key, SIGNATURE_HEADER, TIMESTAMP_HEADER};

#[derive(Parser)]
#[command(about = "A bare actix-web server to measure the receiver against")]
struct Args {
    #[arg(long, value_enum, default_value_t = Mode::Floor)]
    mode: Mode,
    /// The key deliveries are signed with (verify mode).
    #[arg(long, default_value = "")]
    key: String,
    #[arg(long, default_value = "127.0.0.1:5081")]
    bind: String,
    /// HTTP workers (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// 200 to any POST after reading its body.
    Floor,
    /// 200 if the signature verifies, 401 if not; nothing else.
    Verify,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let key = Key::new(args.key.as_bytes());
    let verify = args.mode == Mode::Verify;
    let workers = args.workers.map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), usize::from);
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            let key = key.clone();
            App::new().default_service(web::to(move |req: HttpRequest, body: Bytes| {
                let ok = !verify || verifies(&key, &req, &body);
                async move { if ok { HttpResponse::Ok().finish() } else { HttpResponse::Unauthorized().finish() } }
            }))
        })
        .workers(workers)
        .bind(&args.bind)?;
        eprintln!("baseline listening on {}", args.bind);
        server.run().await
    })
}

fn verifies(key: &Key, req: &HttpRequest, body: &[u8]) -> bool {
    let header = |name| req.headers().get(name).map(|v| v.as_bytes());
    let (Some(timestamp), Some(signature)) = (header(TIMESTAMP_HEADER), header(SIGNATURE_HEADER)) else {
        return false;
    };
    let mut decoded = [0u8; 32];
    hex::decode_to_slice(signature, &mut decoded).is_ok() && key.verifies(timestamp, body, &decoded)
}
