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
use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

fn main() -> std::io::Result<()> {
    let mut mode = "floor".to_owned();
    let mut key = String::new();
    let mut bind = "127.0.0.1:5081".to_owned();
    let mut workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--mode" => mode = value,
            "--key" => key = value,
            "--bind" => bind = value,
            "--workers" => {
                workers = value.parse().unwrap_or_else(|_| usage(&format!("--workers {value}: not a number")))
            }
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let mac = HmacSha256::new_from_slice(key.as_bytes()).expect("any key length");
    let verify = match mode.as_str() {
        "floor" => false,
        "verify" => true,
        other => usage(&format!("--mode {other}: use floor or verify")),
    };
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            let mac = mac.clone();
            App::new().default_service(web::to(move |req: HttpRequest, body: Bytes| {
                let ok = !verify || verifies(&mac, &req, &body);
                async move { if ok { HttpResponse::Ok().finish() } else { HttpResponse::Unauthorized().finish() } }
            }))
        })
        .workers(workers)
        .bind(&bind)
        .unwrap_or_else(|e| usage(&format!("--bind {bind}: {e} (another server on that port? pick another)")));
        eprintln!("baseline {mode} listening on {bind}");
        server.run().await
    })
}

fn usage(problem: &str) -> ! {
    eprintln!("error: {problem}\nusage: baseline [--mode floor|verify] [--key KEY] [--bind ADDR] [--workers N]");
    std::process::exit(2)
}

fn verifies(mac: &HmacSha256, req: &HttpRequest, body: &[u8]) -> bool {
    let header = |name| req.headers().get(name).map(|v| v.as_bytes());
    let (Some(timestamp), Some(signature)) = (header("x-timestamp"), header("x-signature")) else {
        return false;
    };
    let Ok(signature) = hex::decode(signature) else { return false };
    let mut mac = mac.clone();
    mac.update(timestamp);
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}
