//! gRPC load generator for ext_authz servers (certbound, or the always-allow baseline).
//!
//! `setup DIR` writes a throw-away world: a client CA and `--certs` client certificates, a
//! signing key and `--tokens` distinct tokens bound to them (round robin), the JWKS, a
//! certbound config trusting both, and `requests.jsonl` (one token and certificate header per
//! line). `run ADDR DIR` sends CheckRequests built from those lines over `--connections` HTTP/2
//! connections with `--streams` checks in flight for `--duration` seconds, then prints checks/s
//! and latency percentiles (and one JSON line for scripts).
//!
//! ```sh
//! cargo run --release --example loadgen -- setup /tmp/lg --certs 100 --tokens 1000
//! cargo run --release --example loadgen -- run 127.0.0.1:9191 /tmp/lg --streams 64 --duration 10
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Address, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use serde_json::json;

use certbound_core::clock::now_unix;
use certbound_core::fixtures::{bound_claims, jwks, url_encode_pem, Ca, SigningKey};

const ISS: &str = "https://idp.bench.test";
const AUD: &str = "https://api.bench.test";

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Alg {
    Es256,
    Rs256,
}

#[derive(Subcommand)]
enum Command {
    /// Writes keys, certificates, tokens, a certbound config and requests.jsonl to DIR.
    Setup {
        dir: PathBuf,
        #[arg(long, default_value_t = 100)]
        certs: usize,
        #[arg(long, default_value_t = 1000)]
        tokens: usize,
        #[arg(long, value_enum, default_value_t = Alg::Rs256)]
        alg: Alg,
        /// certbound's gRPC and admin ports in the written config.
        #[arg(long, default_value = "127.0.0.1:9191")]
        grpc_listen: String,
        #[arg(long, default_value = "127.0.0.1:9192")]
        admin_listen: String,
    },
    /// Loads an ext_authz server at ADDR with the requests in DIR.
    Run {
        addr: String,
        dir: PathBuf,
        #[arg(long, default_value_t = 64)]
        streams: usize,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Use only the first N requests of requests.jsonl (0: all).
        #[arg(long, default_value_t = 0)]
        limit: usize,
        /// Send each request once, in order, instead of for `duration` (fills caches).
        #[arg(long)]
        once: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup {
            dir,
            certs,
            tokens,
            alg,
            grpc_listen,
            admin_listen,
        } => setup(&dir, certs, tokens, alg, &grpc_listen, &admin_listen),
        Command::Run {
            addr,
            dir,
            streams,
            connections,
            duration,
            limit,
            once,
        } => {
            run(
                &addr,
                &dir,
                streams.max(1),
                connections.max(1),
                Duration::from_secs(duration),
                limit,
                once,
            )
            .await
        }
    }
}

fn setup(
    dir: &std::path::Path,
    certs: usize,
    tokens: usize,
    alg: Alg,
    grpc_listen: &str,
    admin_listen: &str,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let now = now_unix();
    let root = Ca::root("loadgen root")?;
    let inter = root.intermediate("loadgen intermediate")?;
    let key = match alg {
        Alg::Es256 => SigningKey::es256("bench")?,
        Alg::Rs256 => SigningKey::rs256("bench")?,
    };
    let leaves = (0..certs.max(1))
        .map(|i| inter.client(&format!("client-{i}"), now - 3600, now + 7 * 86_400))
        .collect::<Result<Vec<_>, _>>()?;
    let headers: Vec<String> = leaves
        .iter()
        .map(|l| url_encode_pem(&(l.pem.clone() + &inter.pem)))
        .collect();
    let mut out = String::new();
    for i in 0..tokens.max(1) {
        let leaf = &leaves[i % leaves.len()];
        let mut claims = bound_claims(ISS, AUD, &format!("client-{}", i % leaves.len()), leaf, now);
        claims["exp"] = json!(now + 7 * 86_400);
        claims["jti"] = json!(format!("t{i}"));
        let line =
            json!({ "token": key.sign("at+jwt", &claims)?, "cert": headers[i % leaves.len()] });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    std::fs::write(dir.join("requests.jsonl"), out)?;
    std::fs::write(dir.join("jwks.json"), jwks(&[&key]).to_string())?;
    std::fs::write(dir.join("client-ca.pem"), &root.pem)?;
    std::fs::write(
        dir.join("certbound.toml"),
        format!(
            r#"grpc_listen = "{grpc_listen}"
admin_listen = "{admin_listen}"
issuer = "{ISS}"
jwks_file = "jwks.json"
audience = ["{AUD}"]
proof_of_possession_mtls = "strict"
trusted_ips = ["127.0.0.1"]
[proof_of_possession_mtls_from_header]
certificate_header_name = "x-client-cert"
certificate_header_format = "url_encoded"
ca_certificates = ["client-ca.pem"]
revocation_check_mode = "SKIP"
"#
        ),
    )?;
    eprintln!(
        "wrote {} tokens over {} certificates to {}",
        tokens.max(1),
        leaves.len(),
        dir.display()
    );
    Ok(())
}

fn request(token: &str, cert: &str) -> CheckRequest {
    let headers: HashMap<String, String> = [
        (":authority", "api.bench.test"),
        (":method", "GET"),
        (":path", "/accounts"),
        ("authorization", &format!("Bearer {token}")),
        ("x-client-cert", cert),
        ("user-agent", "loadgen"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let source = attribute_context::Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "127.0.0.1".into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(40000)),
                ..Default::default()
            })),
        }),
        ..Default::default()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(source),
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: "GET".into(),
                    path: "/accounts".into(),
                    host: "api.bench.test".into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    allowed: u64,
    denied: u64,
    errors: u64,
}

async fn run(
    addr: &str,
    dir: &std::path::Path,
    streams: usize,
    connections: usize,
    duration: Duration,
    limit: usize,
    once: bool,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(dir.join("requests.jsonl"))
        .with_context(|| format!("{}/requests.jsonl (run `setup` first)", dir.display()))?;
    let mut requests = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let (Some(t), Some(c)) = (v["token"].as_str(), v["cert"].as_str()) else {
            bail!("requests.jsonl: each line needs token and cert");
        };
        requests.push(request(t, c));
        if limit > 0 && requests.len() == limit {
            break;
        }
    }
    let requests = Arc::new(requests);
    let mut channels = Vec::new();
    for _ in 0..connections {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connect {addr}"))?;
        channels.push(channel);
    }
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for t in 0..streams {
        let mut client = AuthorizationClient::new(channels[t % connections].clone());
        let requests = requests.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut i = t;
            loop {
                if once {
                    if i >= requests.len() {
                        break;
                    }
                } else if Instant::now() >= deadline {
                    break;
                }
                let req = requests[i % requests.len()].clone();
                i += streams;
                let sent = Instant::now();
                let answer = client.check(req).await;
                let us = sent.elapsed().as_micros().min(u32::MAX as u128) as u32;
                tally.latencies_us.push(us);
                match answer {
                    Ok(r) if r.get_ref().status.as_ref().is_some_and(|s| s.code == 0) => {
                        tally.allowed += 1
                    }
                    Ok(_) => tally.denied += 1,
                    Err(_) => tally.errors += 1,
                }
            }
            tally
        }));
    }
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await?;
        all.latencies_us.extend(t.latencies_us);
        all.allowed += t.allowed;
        all.denied += t.denied;
        all.errors += t.errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.latencies_us.sort_unstable();
    let pct = |p: f64| -> u32 {
        let l = &all.latencies_us;
        if l.is_empty() {
            return 0;
        }
        l[((p / 100.0 * l.len() as f64).ceil() as usize).clamp(1, l.len()) - 1]
    };
    let checks = all.latencies_us.len() as f64;
    println!(
        "{addr}: {:.0} checks/s over {elapsed:.1} s ({} streams, {} connections, {} distinct requests); allowed {}, denied {}, errors {}; latency p50 {} us, p99 {} us, p99.9 {} us",
        checks / elapsed,
        streams,
        connections,
        requests.len(),
        all.allowed,
        all.denied,
        all.errors,
        pct(50.0),
        pct(99.0),
        pct(99.9)
    );
    println!(
        "{}",
        json!({
            "addr": addr, "checks_per_s": checks / elapsed, "seconds": elapsed,
            "streams": streams, "connections": connections, "distinct": requests.len(),
            "allowed": all.allowed, "denied": all.denied, "errors": all.errors,
            "p50_us": pct(50.0), "p99_us": pct(99.0), "p999_us": pct(99.9),
        })
    );
    Ok(())
}
