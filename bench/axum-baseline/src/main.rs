//! The provider's two reference points, rebuilt for a side-by-side run: a bare axum server
//! that only checks the HMAC signature (`--mode verify`), and one that checks nothing
//! (`--mode floor`, the HTTP floor). The default multi-threaded tokio runtime, as an axum
//! service would run.
//!
//! `cargo run --release --manifest-path bench/axum-baseline/Cargo.toml -- --mode verify --key K --bind 127.0.0.1:5082`

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

#[tokio::main]
async fn main() {
    let mut mode = "floor".to_owned();
    let mut key = String::new();
    let mut bind = "127.0.0.1:5082".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--mode" => mode = value,
            "--key" => key = value,
            "--bind" => bind = value,
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let mac = HmacSha256::new_from_slice(key.as_bytes()).expect("any key length");
    let app = match mode.as_str() {
        "floor" => Router::new().fallback(post(|| async { StatusCode::OK })),
        "verify" => Router::new().fallback(post(move |headers: HeaderMap, body: Bytes| async move {
            if verifies(&mac, &headers, &body) { StatusCode::OK } else { StatusCode::UNAUTHORIZED }
        })),
        other => usage(&format!("--mode {other}: use floor or verify")),
    };
    let listener = tokio::net::TcpListener::bind(&bind).await.unwrap_or_else(|e| {
        eprintln!("error: --bind {bind}: {e} (another server on that port? pick another with --bind)");
        std::process::exit(2)
    });
    eprintln!("axum baseline {mode} listening on {bind}");
    axum::serve(listener, app).await.expect("serve");
}

fn usage(problem: &str) -> ! {
    eprintln!("error: {problem}\nusage: axum-baseline [--mode floor|verify] [--key KEY] [--bind ADDR]");
    std::process::exit(2)
}

fn verifies(mac: &HmacSha256, headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name| headers.get(name).map(|v| v.as_bytes());
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
