//! The Engine API client both real runtimes share: connected lazily and version-negotiated
//! (a hub started while the engine is down comes up anyway and recovers with it), every call
//! bounded by `engine_timeout`, and bollard's errors sorted by what the hub does about them.

use super::RuntimeError;
use crate::config::Config;
use bollard::Docker;
use std::collections::HashMap;
use std::time::Duration;
use tracing::info;

/// Sorts a bollard error by what the hub does about it.
pub(super) fn classify(e: bollard::errors::Error) -> RuntimeError {
    use bollard::errors::Error as E;
    match e {
        E::DockerResponseServerError { status_code: 404, message } => {
            if message.contains("image") {
                RuntimeError::ImageMissing(message)
            } else {
                RuntimeError::NotFound
            }
        }
        E::DockerResponseServerError { status_code, message } => {
            if message.contains("port is already allocated") || message.contains("address already in use") {
                RuntimeError::PortTaken(0)
            } else {
                RuntimeError::Failed(format!("Docker said {status_code}: {message}"))
            }
        }
        E::RequestTimeoutError => RuntimeError::Unreachable("the engine did not answer in time".into()),
        // Transport failures: the engine is not there (or went away mid-request).
        e @ (E::IOError { .. }
        | E::HyperResponseError { .. }
        | E::HyperLegacyError { .. }
        | E::HttpClientError { .. }
        | E::SocketNotFoundError(_)) => RuntimeError::Unreachable(e.to_string()),
        other => RuntimeError::Failed(other.to_string()),
    }
}

/// An engine call bounded by `limit`: a stalled engine counts as unreachable.
pub(super) async fn timed_within<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, RuntimeError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(classify),
        Err(_) => Err(RuntimeError::Unreachable("the engine did not answer in time".into())),
    }
}

/// Label filters selecting this hub's objects.
pub(super) fn hub_filter(hub_id: &str) -> HashMap<String, Vec<String>> {
    use super::{LABEL_HUB, LABEL_MANAGED};
    HashMap::from([("label".to_string(), vec![format!("{LABEL_HUB}={hub_id}"), format!("{LABEL_MANAGED}=true")])])
}

/// The Engine API client and the configuration a runtime runs with.
pub(super) struct Engine {
    docker: tokio::sync::Mutex<Option<Docker>>,
    config: std::sync::RwLock<Config>,
    /// When a removal last found the engine not answering ([`ENGINE_SILENT_FOR`]).
    silent_since: std::sync::Mutex<Option<tokio::time::Instant>>,
}

/// After a removal finds the engine not answering, the next removals fail at once for this
/// long instead of each waiting out its limit (a SIGTERM of 1,000 sessions would otherwise
/// wait for hours on an engine that deadlocked).
pub(super) const ENGINE_SILENT_FOR: Duration = Duration::from_secs(30);

impl Engine {
    pub(super) fn new(config: Config) -> Engine {
        Engine {
            docker: tokio::sync::Mutex::new(None),
            config: std::sync::RwLock::new(config),
            silent_since: std::sync::Mutex::new(None),
        }
    }

    /// Whether a removal found the engine silent less than [`ENGINE_SILENT_FOR`] ago.
    pub(super) fn silent(&self) -> bool {
        let since = *self.silent_since.lock().unwrap_or_else(|p| p.into_inner());
        since.is_some_and(|t| t.elapsed() < ENGINE_SILENT_FOR)
    }

    /// What a removal found: the engine answered, or it did not.
    pub(super) fn heard(&self, answered: bool) {
        *self.silent_since.lock().unwrap_or_else(|p| p.into_inner()) = (!answered).then(tokio::time::Instant::now);
    }

    pub(super) fn config(&self) -> Config {
        self.config.read().map(|c| c.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    pub(super) fn reconfigure(&self, config: Config) {
        if let Ok(mut c) = self.config.write() {
            *c = config;
        }
    }

    /// An engine call bounded by `engine_timeout`.
    pub(super) async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
    ) -> Result<T, RuntimeError> {
        timed_within(self.config().engine_timeout, f).await
    }

    /// The engine client (DOCKER_HOST, default the local socket), connecting and negotiating
    /// the API version on first use.
    pub(super) async fn client(&self) -> Result<Docker, RuntimeError> {
        let mut cached = self.docker.lock().await;
        if let Some(d) = cached.as_ref() {
            return Ok(d.clone());
        }
        let docker = Docker::connect_with_defaults().map_err(|e| RuntimeError::Unreachable(e.to_string()))?;
        let docker = self.timed(docker.negotiate_version()).await?;
        info!(api = %docker.client_version(), "connected to the Docker engine");
        *cached = Some(docker.clone());
        Ok(docker)
    }
}
