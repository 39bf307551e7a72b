//! gRPC load generator for ext_authz servers (certbound, or the always-allow baseline).
//!
//! `setup DIR` writes a throw-away world: a client CA and `--certs` client certificates, a
//! signing key and `--tokens` distinct tokens bound to them (round robin), the JWKS, a
//! certbound config trusting both, and `requests.jsonl` (one token and certificate header per
//! line). `run ADDR DIR` sends CheckRequests built from those lines over `--connections` HTTP/2
//! connections with `--streams` checks in flight for `--duration` seconds, then prints checks/s
//! and latency percentiles (and one JSON line for scripts). `http ADDR DIR` sends every line
//! once as an HTTP/1.1 request through Envoy (certbound inside it as a module sees each token
//! for the first time); `floor DIR` times token verification alone over the tokens in DIR, the
//! floor of a check whose certificate is already cached.
//!
//! ```sh
//! cargo run --release --example loadgen -- setup /tmp/lg --certs 100 --tokens 1000
//! cargo run --release --example loadgen -- run 127.0.0.1:9191 /tmp/lg --streams 64 --duration 10
//! cargo run --release --example loadgen -- http 127.0.0.1:19900 /tmp/lg --connections 16
//! cargo run --release --example loadgen -- floor /tmp/lg --count 2000
//! ```

use std::collections::HashMap;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
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
use certbound_core::defaults;
use certbound_core::fixtures::{bound_claims, jwks, url_encode_pem, Ca, SigningKey};
use certbound_core::token::{self, KeySet, TokenRules};

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
    /// Sends each request in DIR once as an HTTP/1.1 GET to ADDR (Envoy), over `--connections`
    /// keep-alive connections.
    Http {
        addr: String,
        dir: PathBuf,
        #[arg(long, default_value_t = 16)]
        connections: usize,
    },
    /// Times token verification (signature and claims, no cache) on this thread over the first
    /// `--count` tokens in DIR, `--passes` times.
    Floor {
        dir: PathBuf,
        #[arg(long, default_value_t = 2000)]
        count: usize,
        #[arg(long, default_value_t = 5)]
        passes: usize,
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
        Command::Http {
            addr,
            dir,
            connections,
        } => http(&addr, &dir, connections.max(1)),
        Command::Floor { dir, count, passes } => floor(&dir, count.max(1), passes.max(1)),
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
    // Room above the token count: the cache's shards fill unevenly, and a world whose tokens do
    // not all fit would measure evictions instead of a cache holding every token.
    let token_cache_size = (tokens as u64 + tokens as u64 / 4).max(defaults::TOKEN_CACHE_SIZE);
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
token_cache_size = {token_cache_size}
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

/// The (token, certificate header) pairs of DIR/requests.jsonl, the first `limit` (0: all).
fn read_lines(dir: &Path, limit: usize) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(dir.join("requests.jsonl"))
        .with_context(|| format!("{}/requests.jsonl (run `setup` first)", dir.display()))?;
    let mut lines = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let (Some(t), Some(c)) = (v["token"].as_str(), v["cert"].as_str()) else {
            bail!("requests.jsonl: each line needs token and cert");
        };
        lines.push((t.to_string(), c.to_string()));
        if limit > 0 && lines.len() == limit {
            break;
        }
    }
    Ok(lines)
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
    let requests = Arc::new(
        read_lines(dir, limit)?
            .iter()
            .map(|(t, c)| request(t, c))
            .collect::<Vec<_>>(),
    );
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

/// One keep-alive HTTP/1.1 connection, enough of the protocol for Envoy's answers (each has a
/// `content-length`).
struct HttpConn {
    stream: BufReader<TcpStream>,
}

impl HttpConn {
    fn connect(addr: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::new(stream),
        })
    }

    /// The answer's status, and whether the server closes the connection after it.
    fn get(&mut self, token: &str, cert: &str) -> anyhow::Result<(u16, bool)> {
        let head = format!(
            "GET /accounts HTTP/1.1\r\nhost: api.bench.test\r\nuser-agent: loadgen\r\n\
             authorization: Bearer {token}\r\nx-client-cert: {cert}\r\n\r\n"
        );
        self.stream.get_mut().write_all(head.as_bytes())?;
        let mut line = String::new();
        self.stream.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("status line {line:?}"))?;
        let (mut length, mut close) = (None, false);
        loop {
            line.clear();
            if self.stream.read_line(&mut line)? == 0 {
                bail!("connection closed inside the answer's head");
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = Some(value.parse::<usize>()?);
                } else if name.eq_ignore_ascii_case("connection") {
                    close = value.eq_ignore_ascii_case("close");
                }
            }
        }
        let Some(length) = length else {
            bail!("an answer without content-length");
        };
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body)?;
        Ok((status, close))
    }
}

#[derive(Default)]
struct HttpTally {
    ok: u64,
    non2xx: u64,
    errors: u64,
}

fn http(addr: &str, dir: &Path, connections: usize) -> anyhow::Result<()> {
    let lines = Arc::new(read_lines(dir, 0)?);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (lines, next, addr) = (lines.clone(), next.clone(), addr.to_string());
            std::thread::spawn(move || -> anyhow::Result<HttpTally> {
                let mut conn = HttpConn::connect(&addr)?;
                let mut tally = HttpTally::default();
                while let Some((token, cert)) = lines.get(next.fetch_add(1, Ordering::Relaxed)) {
                    match conn.get(token, cert) {
                        Ok((status, close)) => {
                            if (200..300).contains(&status) {
                                tally.ok += 1;
                            } else {
                                tally.non2xx += 1;
                            }
                            if close {
                                conn = HttpConn::connect(&addr)?;
                            }
                        }
                        Err(_) => {
                            tally.errors += 1;
                            conn = HttpConn::connect(&addr)?;
                        }
                    }
                }
                Ok(tally)
            })
        })
        .collect();
    let mut all = HttpTally::default();
    for worker in workers {
        let t = worker
            .join()
            .map_err(|_| anyhow::anyhow!("an HTTP worker panicked"))??;
        all.ok += t.ok;
        all.non2xx += t.non2xx;
        all.errors += t.errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let requests = all.ok + all.non2xx;
    println!(
        "{addr}: {requests} requests in {elapsed:.1} s ({:.0}/s, {connections} connections); 2xx {}, other {}, errors {}",
        requests as f64 / elapsed,
        all.ok,
        all.non2xx,
        all.errors
    );
    println!(
        "{}",
        json!({
            "addr": addr, "requests": requests, "seconds": elapsed, "connections": connections,
            "ok": all.ok, "non2xx": all.non2xx, "errors": all.errors,
        })
    );
    Ok(())
}

/// CPU time this thread has run, from the scheduler's own account (nanoseconds): wall time
/// would count the time other processes on a shared core took.
fn thread_cpu_ns() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("/proc/thread-self/schedstat")
}

fn floor(dir: &Path, count: usize, passes: usize) -> anyhow::Result<()> {
    let lines = read_lines(dir, count)?;
    let jwks_json = std::fs::read(dir.join("jwks.json"))?;
    let alg = serde_json::from_slice::<serde_json::Value>(&jwks_json)?["keys"][0]["alg"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    let keys = KeySet::from_jwks_json(&jwks_json)?;
    // The rules certbound applies under the config `setup` writes.
    let audiences = vec![AUD.to_string()];
    let types: Vec<String> = defaults::ACCESS_TOKEN_TYPES
        .iter()
        .map(|t| t.to_string())
        .collect();
    let rules = TokenRules {
        issuer: ISS,
        audiences: &audiences,
        leeway: defaults::LEEWAY_SECS,
        accepted_types: &types,
        max_bytes: defaults::limits::MAX_TOKEN_BYTES,
        max_json_depth: defaults::limits::MAX_JSON_DEPTH,
    };
    let now = now_unix();
    let mut per_pass = Vec::with_capacity(passes);
    // The first pass is not counted: it pays for page faults and cold instruction caches.
    for pass in 0..=passes {
        let t0 = thread_cpu_ns()?;
        for (t, _) in &lines {
            token::verify(black_box(t), &keys, &rules, now)?;
        }
        let us = (thread_cpu_ns()? - t0) as f64 / 1000.0 / lines.len() as f64;
        if pass > 0 {
            per_pass.push(us);
        }
    }
    per_pass.sort_by(f64::total_cmp);
    let median = per_pass[per_pass.len() / 2];
    println!(
        "{alg} token verification: {median:.1} us of CPU (median of {passes} passes over {} tokens; {:.1}-{:.1})",
        lines.len(),
        per_pass[0],
        per_pass[per_pass.len() - 1]
    );
    println!(
        "{}",
        json!({
            "alg": alg, "tokens": lines.len(), "passes": passes,
            "verify_us": median, "verify_us_min": per_pass[0],
            "verify_us_max": per_pass[per_pass.len() - 1],
        })
    );
    Ok(())
}
