//! `troop-hub`: runs the hub (default), validates hub.yaml (`check`), or talks to a running
//! hub as an operator (`list`, `kill NAME`).

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tracing::{error, info, warn};
use troop_hub::archive::{Archive, ArchiveSettings};
use troop_hub::config::{ArchiveSpec, Config, RuntimeKind};
use troop_hub::hub::Hub;
use troop_hub::runtime::{DockerRuntime, Runtime, RuntimeError, SwarmRuntime};

#[derive(Parser, Debug)]
#[command(version, about = "Hosts Troop live-coding sessions, one container per session")]
struct Args {
    /// The hub's configuration file.
    #[arg(short, long, default_value = "hub.yaml", global = true)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the hub (the default).
    Run,
    /// Validate the configuration file and exit.
    Check,
    /// List the running sessions of a hub on this host.
    List {
        /// The hub's protocol address (default: 127.0.0.1 and the configured listen port).
        #[arg(long)]
        hub: Option<SocketAddr>,
    },
    /// Exit 0 if the hub's /healthz answers 200 (the container HEALTHCHECK).
    Health {
        /// The HTTP address (default: 127.0.0.1 and the configured http_listen port).
        #[arg(long)]
        http: Option<SocketAddr>,
    },
    /// End a session.
    Kill {
        name: String,
        #[arg(long)]
        hub: Option<SocketAddr>,
    },
    /// Work on the archive of past sessions (hub.yaml `archive`).
    Archive {
        #[command(subcommand)]
        action: ArchiveCmd,
    },
}

#[derive(Subcommand, Debug)]
enum ArchiveCmd {
    /// Remove ended sessions older than `keep`, then the oldest while over `max_total_bytes`.
    Prune,
}

fn local_hub(config: &Config, hub: Option<SocketAddr>) -> SocketAddr {
    hub.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], config.listen.port())))
}

fn main() {
    // Before any thread: malloc's settings are the process's.
    let thresholds_fixed = troop_hub::memory::fix_malloc_thresholds();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build();
    match runtime {
        Ok(rt) => rt.block_on(async_main(thresholds_fixed)),
        Err(e) => {
            eprintln!("troop-hub: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    }
}

async fn async_main(thresholds_fixed: bool) {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    tracing::debug!(thresholds_fixed, "malloc: freed memory goes back to the system (src/memory.rs)");
    if let Err(e) = real_main().await {
        eprintln!("troop-hub: {e:#}");
        std::process::exit(1);
    }
}

async fn real_main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = Config::load(&args.config)?;
    match args.command.unwrap_or(Cmd::Run) {
        Cmd::Archive { action: ArchiveCmd::Prune } => {
            let spec = config.archive.as_ref().context("hub.yaml has `archive: off`: there is nothing to prune")?;
            let archive = Archive::open(archive_settings(spec))
                .with_context(|| format!("cannot open the archive at {}", spec.path.display()))?;
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let report = archive.prune(now.as_millis() as u64)?;
            println!("pruned {} sessions ({} bytes of timelines)", report.removed, report.bytes_freed);
            Ok(())
        }
        Cmd::Check => {
            println!("{}: valid", args.config.display());
            Ok(())
        }
        Cmd::List { hub } => {
            print!("{}", troop_hub::admin::list(local_hub(&config, hub)).await?);
            Ok(())
        }
        Cmd::Health { http } => {
            let addr = http.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], config.http_listen.port())));
            troop_hub::admin::health(addr).await
        }
        Cmd::Kill { name, hub } => {
            troop_hub::admin::kill(local_hub(&config, hub), &name).await?;
            println!("killed {name}");
            Ok(())
        }
        Cmd::Run => run(config, args.config).await,
    }
}

async fn run(config: Config, path: PathBuf) -> anyhow::Result<()> {
    // SIGTERM and SIGINT are caught from here on (registered now, not at a first poll): one
    // that comes while the hub is still adopting (seconds, with 1,000 sessions) stops it
    // gently once that is done.
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
    let admin_token = config.admin_token()?;
    // Every session holds files open in the hub: a range it could not hold stops it here.
    let open_files = troop_hub::open_files::raise();
    if let Some(warning) = troop_hub::open_files::check(&config, open_files).map_err(anyhow::Error::msg)? {
        warn!("{warning}");
    }
    // Both front doors first: a port in use stops the hub before it creates anything on the
    // engine (connections wait in the accept queue until recovery is done).
    let listener = troop_hub::accept::listen(config.listen)
        .with_context(|| format!("cannot listen on {} (hub.yaml `listen`)", config.listen))?;
    let http_listener = troop_hub::accept::listen(config.http_listen)
        .with_context(|| format!("cannot listen on {} (hub.yaml `http_listen`)", config.http_listen))?;
    let runtime: Arc<dyn Runtime> = match config.runtime {
        RuntimeKind::Docker => Arc::new(DockerRuntime::new(config.clone())),
        RuntimeKind::Swarm => Arc::new(SwarmRuntime::new(config.clone())),
    };
    match runtime.prepare().await {
        Ok(()) => {}
        // The engine answers but is not what hub.yaml asks for: say so and stop.
        Err(RuntimeError::Misconfigured(why)) => anyhow::bail!(why),
        Err(e @ RuntimeError::ImageMissing(_)) => {
            warn!(error = %e, "sessions cannot start until the image exists")
        }
        Err(e) => {
            warn!(error = %e, "the Docker engine is not ready; sessions cannot start until it is")
        }
    }
    let hub = Hub::new(config.clone(), runtime);
    if let Some(spec) = &config.archive {
        let settings = archive_settings(spec);
        let path = settings.path.display().to_string();
        let archive = tokio::task::spawn_blocking(move || Archive::open(settings)).await?.with_context(|| {
            format!("cannot open the archive at {path} (hub.yaml `archive`; `archive: off` keeps none)")
        })?;
        info!(path = %path, "archive open: every session's code and timeline are kept");
        hub.set_archive(archive);
    }
    hub.refresh_nodes().await;
    if admin_token.is_none() {
        warn!("no admin token: the HTTP admin endpoints answer 403 (set TROOP_HUB_ADMIN_TOKEN or admin_token_file)");
    }
    hub.set_admin_token(admin_token);
    if let Err(e) = hub.recover().await {
        warn!(error = %e, "could not look for sessions left from before");
    }
    tokio::spawn(hub.clone().archive_upkeep());
    info!(
        listen = %config.listen,
        public_host = %hub.public_host(),
        ports = %format!("{}-{}", config.ports.0, config.ports.1),
        hub_id = %config.hub_id,
        runtime = ?config.runtime,
        "Troop hub listening"
    );
    tokio::spawn(hub.clone().watch_engine());
    tokio::spawn(hub.clone().enforce_deadlines());
    tokio::spawn(hub.clone().watch_nodes());
    tokio::spawn(hub.clone().keep_pool());
    tokio::spawn(troop_hub::memory::trim_every(troop_hub::memory::TRIM_EVERY, hub.shutdown_token()));
    info!(http = %config.http_listen, "HTTP API, metrics and status page listening");
    // The HTTP front door drains and stops once the hub begins shutting down.
    let http = tokio::spawn(troop_hub::http::serve(http_listener, hub.clone(), hub.shutdown_token()));
    tokio::spawn(troop_hub::reload::watch(hub.clone(), path));
    let server = tokio::spawn(troop_hub::tcp::serve(listener, hub.clone()));
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    info!("stopping: ending every session");
    hub.shutdown().await;
    if let Err(e) = server.await {
        error!(error = %e, "the protocol server task failed");
    }
    // (Requests in flight are answered first: at most http::DRAIN_TIMEOUT.)
    if let Err(e) = http.await {
        error!(error = %e, "the HTTP server task failed");
    }
    info!("stopped");
    Ok(())
}

/// The archive's settings from hub.yaml's `archive`.
fn archive_settings(spec: &ArchiveSpec) -> ArchiveSettings {
    ArchiveSettings {
        path: spec.path.clone(),
        keep: spec.keep,
        max_session_bytes: spec.max_session_bytes.max(0) as u64,
        max_total_bytes: spec.max_total_bytes.max(0) as u64,
    }
}
