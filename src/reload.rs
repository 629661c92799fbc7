//! Live configuration: hub.yaml is re-read when it changes (checked every second, which also
//! works through bind mounts where inotify does not) and on SIGHUP. A valid file applies to
//! new sessions at once; an invalid one is refused and the running configuration stays.

use crate::config::Config;
use crate::hub::Hub;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// What identifies a version of the file: its contents.
fn fingerprint(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

/// Re-reads and applies the file now. Returns false if it was refused.
pub fn reload(hub: &Hub, path: &Path) -> bool {
    match Config::load(path) {
        Ok(new) => {
            if let Err(why) = crate::open_files::check(&new, crate::open_files::current()) {
                warn!("hub.yaml refused: {why}; the running configuration stays");
                hub.metrics.reload("invalid");
                return false;
            }
            let token = match new.admin_token() {
                Ok(t) => t,
                Err(e) => {
                    warn!(error = %e, "hub.yaml refused: the admin token cannot be used; the running configuration stays");
                    hub.metrics.reload("invalid");
                    return false;
                }
            };
            for w in hub.apply_config(new) {
                warn!("{w}");
            }
            hub.set_admin_token(token);
            hub.metrics.reload("applied");
            let c = hub.config();
            info!(max_sessions = c.max_sessions, per_address = c.max_sessions_per_address, image = %c.image, "configuration reloaded");
            true
        }
        Err(e) => {
            warn!(error = %e, "hub.yaml refused; the running configuration stays");
            hub.metrics.reload("invalid");
            false
        }
    }
}

/// Watches `path` and SIGHUP until the hub stops.
pub async fn watch(hub: Arc<Hub>, path: PathBuf) {
    let shutdown = hub.shutdown_token();
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut last = fingerprint(&path);
    loop {
        let hangup = async {
            match hup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hangup => {
                info!("SIGHUP: reloading hub.yaml");
                last = fingerprint(&path);
                reload(&hub, &path);
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                let now = fingerprint(&path);
                if now != last {
                    last = now;
                    reload(&hub, &path);
                }
            }
        }
    }
}
