//! The provider's two reference points, rebuilt for a side-by-side run: a bare axum server
//! that only checks the HMAC signature (`--mode verify`), and one that checks nothing
//! (`--mode floor`, the HTTP floor). The default multi-threaded tokio runtime, as an axum
//! service would run.
//!
//! And the durable floor (`--mode durable --file F`): verify, append the delivery to a file,
//! answer after the group `fdatasync` that made it durable, nothing else. No receiver that
//! acknowledges only what is on disk can be faster on this disk; meet-webhooks' inbox is
//! measured against it.
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
    let mut file = std::env::temp_dir().join("axum-baseline-durable.log");
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--mode" => mode = value,
            "--key" => key = value,
            "--bind" => bind = value,
            "--file" => file = value.into(),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let mac = HmacSha256::new_from_slice(key.as_bytes()).expect("any key length");
    let app = match mode.as_str() {
        "floor" => Router::new().fallback(post(|| async { StatusCode::OK })),
        "verify" => Router::new().fallback(post(move |headers: HeaderMap, body: Bytes| async move {
            if verifies(&mac, &headers, &body) { StatusCode::OK } else { StatusCode::UNAUTHORIZED }
        })),
        "durable" => {
            let log = Log::open(&file);
            Router::new().fallback(post(move |headers: HeaderMap, body: Bytes| async move {
                if !verifies(&mac, &headers, &body) {
                    return StatusCode::UNAUTHORIZED;
                }
                let timestamp = headers.get("x-timestamp").map(|v| v.as_bytes()).unwrap_or_default();
                let record = [timestamp, b".", &body, b"\n"].concat();
                if log.append(record).await { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
            }))
        }
        other => usage(&format!("--mode {other}: use floor, verify or durable")),
    };
    let listener = tokio::net::TcpListener::bind(&bind).await.unwrap_or_else(|e| {
        eprintln!("error: --bind {bind}: {e} (another server on that port? pick another with --bind)");
        std::process::exit(2)
    });
    eprintln!("axum baseline {mode} listening on {bind}");
    axum::serve(listener, app).await.expect("serve");
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "error: {problem}\nusage: axum-baseline [--mode floor|verify|durable] [--key KEY] [--bind ADDR] [--file F]"
    );
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

/// An append-only file with group commit: one writer thread takes every record waiting,
/// writes them, `fdatasync`s once, then answers them all.
#[derive(Clone)]
struct Log {
    records: std::sync::mpsc::Sender<(Vec<u8>, tokio::sync::oneshot::Sender<bool>)>,
}

impl Log {
    fn open(path: &std::path::Path) -> Self {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap_or_else(|e| {
            eprintln!("error: --file {}: {e}", path.display());
            std::process::exit(2)
        });
        let (records, waiting) = std::sync::mpsc::channel::<(Vec<u8>, tokio::sync::oneshot::Sender<bool>)>();
        std::thread::spawn(move || {
            while let Ok(first) = waiting.recv() {
                let mut batch = vec![first];
                batch.extend(waiting.try_iter());
                let written =
                    batch.iter().all(|(record, _)| file.write_all(record).is_ok()) && file.sync_data().is_ok();
                for (_, done) in batch {
                    let _ = done.send(written);
                }
            }
        });
        Self { records }
    }

    async fn append(&self, record: Vec<u8>) -> bool {
        let (done, durable) = tokio::sync::oneshot::channel();
        self.records.send((record, done)).is_ok() && durable.await.unwrap_or(false)
    }
}
