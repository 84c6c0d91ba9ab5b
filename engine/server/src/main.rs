//! The `fanwire` binary: `serve` and `check`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fanwire_server::{config::Config, Server};

/// Fanwire: a GraphQL subscription server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve GraphQL subscriptions over WebSocket.
    Serve {
        /// TOML configuration file; flags below override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// SDL schema file.
        #[arg(long)]
        schema: Option<PathBuf>,
        /// Address to listen on, e.g. 127.0.0.1:4000 (port 0 picks one).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Bearer token required by POST /publish.
        #[arg(long)]
        publish_token: Option<String>,
        /// Run the demo event generator (and the demo schema if none is given).
        #[arg(long)]
        demo: bool,
        /// Bus across nodes: nats://HOST:PORT, redis://HOST:PORT or memory.
        #[arg(long, value_name = "URL")]
        bus: Option<String>,
        /// PostgreSQL to take events from, e.g. postgres://postgres@127.0.0.1/app.
        #[arg(long, value_name = "URL")]
        pg_url: Option<String>,
        /// A channel to LISTEN on (repeatable).
        #[arg(long, value_name = "NAME")]
        pg_channel: Vec<String>,
        /// An outbox table to read (see docs/postgres.md).
        #[arg(long, value_name = "TABLE")]
        pg_outbox: Option<String>,
    },
    /// Validate a schema file and list its subscription topics.
    Check {
        /// SDL schema file.
        schema: PathBuf,
    },
}

/// A user's mistake (a bad schema, config or flag) prints its error chain
/// on one line, never a backtrace: those are for panics, which are bugs.
fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Check { schema } => check(schema),
        Command::Serve {
            config,
            schema,
            listen,
            publish_token,
            demo,
            bus,
            pg_url,
            pg_channel,
            pg_outbox,
        } => {
            let mut cfg = match &config {
                Some(path) => Config::load(path)?,
                None => Config::default(),
            };
            cfg.server.schema = schema.or(cfg.server.schema);
            cfg.server.listen = listen.unwrap_or(cfg.server.listen);
            cfg.server.publish_token = publish_token.or(cfg.server.publish_token);
            cfg.demo.enabled |= demo;
            if let Some(url) = bus {
                // The URL picks the kind; names and sizes stay as configured.
                let from_flag = fanwire_bus::BusConfig::from_url(&url)?;
                cfg.bus.kind = from_flag.kind;
                cfg.bus.url = from_flag.url;
            }
            let pg = &mut cfg.sources.postgres;
            pg.url = pg_url.or(pg.url.take());
            pg.channels.extend(pg_channel);
            pg.outbox_table = pg_outbox.or(pg.outbox_table.take());
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the tokio runtime")?
                .block_on(serve(cfg))
        }
    }
}

fn check(path: PathBuf) -> anyhow::Result<()> {
    let sdl = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let schema = fanwire_core::Schema::parse(&sdl)
        .with_context(|| format!("{} is not a valid schema", path.display()))?;
    let mut fields: Vec<&str> = schema.subscription_fields().collect();
    fields.sort_unstable();
    println!(
        "{}: valid; {} subscription field(s)",
        path.display(),
        fields.len()
    );
    for field in fields {
        println!("  {field}");
    }
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if config.server.publish_token.is_none() && !config.server.listen.ip().is_loopback() {
        tracing::warn!("POST /publish has no token and the server listens beyond loopback");
    }
    let server = Server::bind(config).await?;
    let addr = server.local_addr()?;
    // Handlers are installed before the line below announces the server, so
    // a SIGTERM sent as soon as it is read already shuts down gracefully.
    let shutdown = shutdown_signal()?;
    // Tests and scripts read this line to find the port.
    println!("fanwire listening on http://{addr}");
    std::io::stdout().flush()?;
    tracing::info!(%addr, "serving: ws://{addr}/graphql, POST /publish, /metrics, /healthz");
    server.run(shutdown).await;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
