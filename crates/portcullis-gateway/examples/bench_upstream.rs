//! The upstream and issuer of `scripts/loadtest`: answers every request with a small fixed body,
//! serves a fresh RS256 key as JWKS, and prints one token of that issuer on standard output.
//!
//! With `--raw ADDR` it also answers at `ADDR` without axum or hyper: each request head is
//! parsed by `httparse` into a stack array and answered with fixed bytes, so that what a request
//! costs it hardly grows with the header lines it carries (about 250 instructions a line, where
//! axum's answer costs 1 000-1 300). The load test's `UPSTREAM=raw` uses it to compare proxies that forward different
//! headers by their own work.
//!
//! `cargo run --release -p portcullis-gateway --example bench_upstream -- 127.0.0.1:9101`

use std::time::{SystemTime, UNIX_EPOCH};

use axum::{Json, Router, routing::get};
use portcullis_gateway::issuer::LocalIssuer;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9101".into());
    let raw = match (args.next().as_deref(), args.next()) {
        (Some("--raw"), Some(raw)) => Some(raw),
        (None, _) => None,
        _ => panic!("usage: bench_upstream ADDR [--raw ADDR]"),
    };
    let listener = TcpListener::bind(&addr).await.expect("the address is free");
    let issuer = format!("http://{}", listener.local_addr().expect("bound"));

    let key = LocalIssuer::generate("bench");
    let jwks = key.jwks();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let token = key.sign(&json!({
        "iss": issuer, "sub": "user_bench", "sid": "sess_bench", "iat": now, "nbf": now,
        "exp": now + 4 * 3600, "org_id": "org_a", "org_role": "org:member",
        "org_permissions": ["org:comps:read"],
    }));
    if let Some(raw) = raw {
        let raw = TcpListener::bind(&raw).await.expect("the address is free");
        tokio::spawn(async move {
            while let Ok((io, _)) = raw.accept().await {
                tokio::spawn(answer_raw(io));
            }
        });
    }
    println!("ISSUER={issuer}");
    println!("TOKEN={token}");

    let app = Router::new()
        .route(
            "/.well-known/jwks.json",
            get(move || async move { Json(jwks) }),
        )
        .fallback(|| async { "ok\n" });
    axum::serve(listener, app).await.expect("the server runs");
}

/// Answers each request without a body on `io` with the axum fallback's response (a fixed
/// date), until the peer closes the connection or sends something else.
async fn answer_raw(mut io: TcpStream) {
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\n\
        content-length: 3\r\ndate: Mon, 07 Dec 2026 00:00:00 GMT\r\n\r\nok\n";
    let _ = io.set_nodelay(true);
    let mut buf = vec![0; 16 * 1024];
    let (mut start, mut end) = (0, 0);
    let mut out = Vec::with_capacity(OK.len());
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[start..end]) {
            Ok(httparse::Status::Complete(len)) => {
                start += len;
                out.extend_from_slice(OK);
                continue;
            }
            Ok(httparse::Status::Partial) => {}
            Err(_) => return,
        }
        if !out.is_empty() {
            if io.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        buf.copy_within(start..end, 0);
        (start, end) = (0, end - start);
        if end == buf.len() {
            return;
        }
        match io.read(&mut buf[end..]).await {
            Ok(n) if n > 0 => end += n,
            _ => return,
        }
    }
}
