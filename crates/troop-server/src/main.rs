//! `troop-server`: one Troop 0.10.3 compatible session on one TCP port, with the hub's control
//! channel on the same port when `TROOP_CONTROL_SECRET` is set (see CONTROL.md).

mod args;

use anyhow::{bail, Context};
use args::{Args, Command};
use std::net::SocketAddr;
use std::time::Duration;
use tracing::{info, warn};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use troop_server::control::{ControlSecret, SECRET_ENV};
use troop_server::server::{self, Config, Exit};
use troop_server::session::{Limits, PEER_CHARS};

/// The control secret from the environment, if set; refused (without echoing it) if malformed.
fn control_secret() -> anyhow::Result<Option<ControlSecret>> {
    match std::env::var(SECRET_ENV) {
        Ok(value) => Ok(Some(ControlSecret::new(&value)?)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => bail!("{SECRET_ENV} must be hex digits"),
    }
}

fn password_md5(args: &Args) -> anyhow::Result<String> {
    match (&args.password, &args.password_md5) {
        (Some(p), _) => Ok(troop_server::md5_hex(p)),
        (None, Some(h)) if troop_server::is_md5_hex(h) => Ok(h.clone()),
        (None, Some(_)) => {
            bail!("TROOP_PASSWORD_MD5 must be 32 lowercase hex digits (an md5 digest)")
        }
        (None, None) => Ok(troop_server::md5_hex("")),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = match args::parse(std::env::args_os().skip(1), |name| std::env::var_os(name)) {
        Ok(Command::Run(args)) => args,
        Ok(Command::Help) => {
            print!("{}", args::HELP);
            return Ok(());
        }
        Ok(Command::Version) => {
            println!("troop-server {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        Err(e) => {
            eprintln!("error: {e}\n\nFor more information, try '--help'.");
            std::process::exit(2);
        }
    };
    // RUST_LOG as a list of targets and levels ("debug", "troop_server=debug,warn"): the
    // environment filter's regex engine would add 0.65 MB to the binary every session maps.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stdout)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())),
        )
        .with(filter)
        .init();
    if args.max_clients == 0 || args.max_clients > PEER_CHARS.len() {
        bail!("--max-clients must be between 1 and {}", PEER_CHARS.len());
    }
    let password_md5 = password_md5(&args)?;
    let control = control_secret()?;
    let locked = control.is_some() && args.password.is_none() && args.password_md5.is_none();
    if locked {
        info!("control channel enabled; no password: every login is refused until the hub arms the session");
    } else if control.is_some() {
        info!("control channel enabled");
    }
    if !locked && password_md5 == troop_server::md5_hex("") {
        warn!("no password set: anyone who can reach this port can join");
    }
    let config = Config {
        password_md5,
        locked,
        control,
        limits: Limits {
            max_clients: args.max_clients,
            max_document: args.max_document,
            history: args.history.max(1),
            history_bytes: args.history_bytes,
            keepalive_timeout: args.keepalive.then_some(Duration::from_secs(30)),
            ..Limits::default()
        },
        keepalive: args.keepalive,
        idle_exit: args.idle_exit,
        max_message: args.max_message,
        queue: args.queue,
        queue_bytes: args.queue_bytes,
        max_connections: args.max_connections.max(1),
        max_connections_per_address: args.max_connections_per_address.max(1),
        proxy_protocol: args.proxy_protocol,
        ..Config::default()
    };
    let addr = SocketAddr::new(args.bind, args.port);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    info!(%addr, version = troop_server::session::VERSION, "Troop server listening");
    let exit = server::run(listener, config, troop_server::shutdown_signal()).await?;
    match exit {
        Exit::Shutdown => info!("stopped by signal; clients were sent MSG_KILL"),
        Exit::Idle => info!("no client for the idle-exit time; exiting"),
        Exit::Ended => info!("the hub ended the session; clients were sent MSG_KILL"),
    }
    Ok(())
}
