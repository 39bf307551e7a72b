//! The `certbound` command: CLI, logging, listeners, signals, exit codes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use certbound::config::Config;
use certbound::server::{self, Listeners};

#[derive(Parser)]
#[command(
    name = "certbound",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("BUILD_COMMIT"), ")"),
    about = "Envoy ext_authz server for RFC 8705 certificate-bound access tokens"
)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "CERTBOUND_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve ext_authz on grpc_listen and /metrics, /healthz, /readyz on admin_listen.
    Serve {
        #[arg(long, env = "CERTBOUND_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration and exit 0, or name every offending key and exit 2.
    CheckConfig {
        #[arg(long, env = "CERTBOUND_CONFIG")]
        config: PathBuf,
    },
    /// Print the RFC 8705 x5t#S256 of a PEM or DER certificate.
    Thumbprint { file: PathBuf },
    /// Print the configuration's JSON Schema (draft 2020-12), to validate a certbound.toml
    /// (as JSON) in an editor or CI; with --markdown, the configuration reference generated
    /// from it (docs/configuration.md).
    ConfigSchema {
        #[arg(long)]
        markdown: bool,
    },
    /// Turn a decK file's openid-connect plugins into a certbound configuration, Envoy routes
    /// that pick its policies, and a report of what could not be carried over.
    ImportKong {
        /// The decK declarative file (`_format_version: "3.0"`).
        file: PathBuf,
        /// Where to write certbound.toml, envoy-routes.yaml, import-report.txt and CA files.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// An address or CIDR range of the TLS terminators allowed to set the certificate
        /// header (certbound's `trusted_ips`; Kong keeps them in kong.conf). Repeatable.
        #[arg(long = "trusted-ip")]
        trusted_ips: Vec<String>,
    },
    /// Generate throw-away keys and certificates, serve with them, and show an allowed and a
    /// denied Check.
    Demo {
        #[arg(long, default_value = certbound_core::defaults::GRPC_LISTEN)]
        grpc_listen: SocketAddr,
        #[arg(long, default_value = certbound_core::defaults::ADMIN_LISTEN)]
        admin_listen: SocketAddr,
        /// Where to write the material (default: a new temporary folder).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let result = match cli.command {
        Command::Serve { config } => run_serve(config),
        Command::CheckConfig { config } => check_config(config),
        Command::Thumbprint { file } => thumbprint(file),
        Command::ConfigSchema { markdown } => config_schema(markdown),
        Command::ImportKong {
            file,
            out,
            trusted_ips,
        } => import_kong(file, out, trusted_ips),
        Command::Demo {
            grpc_listen,
            admin_listen,
            dir,
        } => run_demo(grpc_listen, admin_listen, dir),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("certbound: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run_serve(path: PathBuf) -> anyhow::Result<ExitCode> {
    let config = match load_and_check(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("certbound: {}: {e}", path.display());
            return Ok(ExitCode::from(2));
        }
    };
    let loaded = server::FileStates::of(&config.files);
    config.log_warnings();
    // A panic inside a check is answered with a deny (grpc.rs); the default hook would still
    // print its message, which may quote request data (a token, a header). Keep the location.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(%location, "panic; its message is withheld as it may quote request data");
    }));
    runtime()?.block_on(async {
        let listeners = Listeners::bind(config.grpc_listen, config.admin_listen).await?;
        // Listening for SIGHUP before saying "serving": a SIGHUP that came first would end the
        // process (its default action) instead of reloading.
        let (trigger, rx) = tokio::sync::mpsc::unbounded_channel();
        forward_sighup(trigger);
        tracing::info!(
            grpc = %listeners.grpc.local_addr()?,
            admin = %listeners.admin.local_addr()?,
            "certbound serving"
        );
        let reload = server::Reload {
            path,
            poll_interval: Some(std::time::Duration::from_secs(2)),
            trigger: rx,
            loaded,
        };
        server::serve_with_reload(config, listeners, shutdown_signal(), Some(reload)).await?;
        tracing::info!("certbound stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// SIGHUP asks for a configuration reload. The handler is installed before this returns.
fn forward_sighup(trigger: tokio::sync::mpsc::UnboundedSender<()>) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!(
                "cannot listen for SIGHUP; the config is still reloaded when its files change"
            );
            return;
        };
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                if trigger.send(()).is_err() {
                    return;
                }
            }
        });
    }
}

/// Loads and validates `path`, then builds its services once, so a setting only the build can
/// refuse (a client the TLS library will not make) fails here with exit 2, not later.
fn load_and_check(path: &std::path::Path) -> Result<Config, certbound::config::ConfigError> {
    let config = Config::load(path)?;
    config.build(&|_| None)?;
    Ok(config)
}

fn check_config(path: PathBuf) -> anyhow::Result<ExitCode> {
    match load_and_check(&path) {
        Ok(c) => {
            println!(
                "{}: ok ({} policy, grpc {}, admin {})",
                path.display(),
                c.policies.named.len() + 1,
                c.grpc_listen,
                c.admin_listen
            );
            for w in &c.warnings {
                eprintln!("warning: `{}`: {}", w.key, w.message);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            Ok(ExitCode::from(2))
        }
    }
}

fn thumbprint(file: PathBuf) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let der = if bytes.starts_with(b"-----BEGIN") || bytes.windows(11).any(|w| w == b"-----BEGIN ")
    {
        CertificateDer::from_pem_slice(&bytes)
            .with_context(|| format!("{} holds no PEM certificate", file.display()))?
            .as_ref()
            .to_vec()
    } else {
        bytes
    };
    x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow::anyhow!("{} is not an X.509 certificate: {e}", file.display()))?;
    println!("{}", certbound_core::cert::x5t_s256(&der));
    Ok(ExitCode::SUCCESS)
}

fn config_schema(markdown: bool) -> anyhow::Result<ExitCode> {
    if markdown {
        print!("{}", certbound::config::schema::reference());
    } else {
        let schema = certbound::config::schema::json_schema();
        println!("{}", serde_json::to_string_pretty(&schema)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn import_kong(file: PathBuf, out: PathBuf, trusted_ips: Vec<String>) -> anyhow::Result<ExitCode> {
    let source =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let env = |name: &str| std::env::var(name).ok();
    let options = certbound::kong::Options { trusted_ips };
    let import = match certbound::kong::import(&source, &env, &options) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("certbound: {}: {e}", file.display());
            return Ok(ExitCode::from(2));
        }
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let report = import.report();
    let mut written = Vec::new();
    let outputs = [
        (PathBuf::from("certbound.toml"), import.toml.clone()),
        (PathBuf::from("envoy-routes.yaml"), import.envoy.clone()),
        (PathBuf::from("import-report.txt"), report.clone()),
    ];
    for (name, text) in outputs.iter().chain(import.files.iter()) {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        written.push(path.display().to_string());
    }
    println!("wrote {}", written.join(", "));
    print!("{report}");
    println!(
        "next: certbound check-config --config {}",
        out.join("certbound.toml").display()
    );
    Ok(ExitCode::SUCCESS)
}

fn run_demo(grpc: SocketAddr, admin: SocketAddr, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let dir = match dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("certbound-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    runtime()?.block_on(async {
        // Bind first so `--grpc-listen 127.0.0.1:0` works and the printed addresses are real.
        let listeners = Listeners::bind(grpc, admin).await?;
        let grpc = listeners.grpc.local_addr()?;
        let admin = listeners.admin.local_addr()?;
        let demo = certbound::demo::generate(&dir, grpc, admin)?;
        let config = Config::load(&demo.config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
        let serving = tokio::spawn(server::serve(config, listeners, shutdown_signal()));
        println!("certbound demo: serving ext_authz on {grpc}, metrics on http://{admin}/metrics");
        println!("material in {}", dir.display());
        let token = format!("Bearer {}", demo.alice_token);
        let allowed = certbound::demo::check(grpc, &[("authorization", &token), ("x-client-cert", &demo.alice_header)]).await?;
        println!(
            "\n1. alice's token with alice's certificate: {} (HTTP {}), upstream gets {:?}",
            if allowed.allowed { "ALLOW" } else { "DENY" },
            allowed.http_status,
            allowed.upstream_headers
        );
        let stolen = certbound::demo::check(grpc, &[("authorization", &token), ("x-client-cert", &demo.bob_header)]).await?;
        println!(
            "2. alice's token replayed with bob's certificate: {} (HTTP {})\n   WWW-Authenticate: {}",
            if stolen.allowed { "ALLOW" } else { "DENY" },
            stolen.http_status,
            stolen.www_authenticate.unwrap_or_default()
        );
        println!(
            "\nTry it yourself: {dir}/alice.token, {dir}/alice.header and {dir}/bob.header hold the values;\n\
             point Envoy's ext_authz filter at {grpc} (docs/deploy-envoy.md has the snippet). Ctrl-C stops.",
            dir = dir.display()
        );
        serving.await??;
        Ok(ExitCode::SUCCESS)
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
