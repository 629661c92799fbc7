//! How lifecycles end: why a session ended (and the sentence its owner gets), and why a
//! request was refused (the one sentence the client gets), with their metrics labels.

use crate::registry::RegistryError;
use crate::runtime::{RuntimeError, StartError};

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    OwnerLeft,
    OwnerKilled,
    AdminKilled,
    ContainerExited(String),
    Idle,
    MaxAge,
    Expired,
    HubShutdown,
}

impl EndReason {
    /// The sentence the owner gets in an `error` frame, if it should get one.
    pub fn owner_message(&self) -> Option<String> {
        match self {
            EndReason::OwnerLeft | EndReason::OwnerKilled => None,
            EndReason::AdminKilled => Some("Session manually killed by admin.".into()),
            EndReason::ContainerExited(why) => Some(format!("The session has ended: {why}.")),
            EndReason::Idle => Some("The session has ended: nobody was connected for the idle time.".into()),
            EndReason::Expired => Some("The session's time to live ran out.".into()),
            EndReason::MaxAge => Some("The session reached the hub's maximum session age and was ended.".into()),
            EndReason::HubShutdown => Some("Troop Hub Service has been manually terminated".into()),
        }
    }

    /// The sentence every performer's Troop console shows (MSG_KILL), naming who or what
    /// ended the session; `None` when its server is already gone.
    pub fn performer_message(&self) -> Option<String> {
        let why = match self {
            EndReason::OwnerLeft | EndReason::OwnerKilled => "its owner left",
            EndReason::AdminKilled => "an admin ended it",
            EndReason::ContainerExited(_) => return None,
            EndReason::Idle => "nobody was playing for the idle time",
            EndReason::MaxAge => "it reached the hub's time limit for sessions",
            EndReason::Expired => "its time to live ran out",
            EndReason::HubShutdown => "the hub is shutting down",
        };
        Some(format!("Troop Hub: the session has ended: {why}."))
    }

    /// The sentence the session's audience view shows.
    pub fn audience_message(&self) -> Option<String> {
        match self {
            EndReason::ContainerExited(why) => Some(format!("Troop Hub: the session has ended: {why}.")),
            other => other.performer_message(),
        }
    }

    /// Why it ended, as the archive keeps it ("its owner left").
    pub fn archive_reason(&self) -> String {
        match self {
            EndReason::ContainerExited(why) => why.clone(),
            other => other
                .performer_message()
                .and_then(|m| {
                    m.strip_prefix("Troop Hub: the session has ended: ").map(|s| s.trim_end_matches('.').to_string())
                })
                .unwrap_or_else(|| self.label().to_string()),
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            EndReason::OwnerLeft => "owner_left",
            EndReason::OwnerKilled => "owner_killed",
            EndReason::AdminKilled => "deleted",
            EndReason::ContainerExited(_) => "container_exited",
            EndReason::Idle => "idle",
            EndReason::MaxAge | EndReason::Expired => "max_age",
            EndReason::HubShutdown => "hub_shutdown",
        }
    }
}

/// A request the hub refuses; `Display` is the one sentence the client gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    #[error("{0}")]
    Registry(#[from] RegistryError),
    #[error("The session image {0} is missing on the hub's Docker engine; the operator must build it (images/troop-server/build-local.sh)")]
    ImageMissing(String),
    #[error("The hub cannot reach its Docker engine right now; try again in a moment")]
    EngineDown,
    #[error("The session failed to start: {0}")]
    StartFailed(String),
    #[error("Daemon sessions can only be started from a trusted address")]
    DaemonNotTrusted,
    /// Too many wrong passwords for an adopted session (its owner re-claiming it).
    #[error("{0}")]
    Refused(crate::gate::Refused),
}

impl HubError {
    /// The metrics label of a failed start.
    pub fn label(&self) -> &'static str {
        match self {
            HubError::Registry(RegistryError::Full) => "cap",
            HubError::Registry(RegistryError::AddressLimit) => "address_limit",
            HubError::Registry(RegistryError::NameTaken) => "name_taken",
            HubError::Registry(RegistryError::NoPort) => "no_port",
            HubError::Registry(RegistryError::NoNode) => "no_node",
            HubError::ImageMissing(_) => "image_missing",
            HubError::EngineDown => "docker_unreachable",
            HubError::StartFailed(_) => "start_failed",
            HubError::DaemonNotTrusted => "not_trusted",
            HubError::Refused(_) => "password_limit",
        }
    }

    pub(super) fn shutting_down() -> HubError {
        HubError::StartFailed("the hub is shutting down".into())
    }

    pub(super) fn ended_while_starting() -> HubError {
        HubError::StartFailed("it was ended while starting".into())
    }
}

impl From<RuntimeError> for HubError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::ImageMissing(image) => HubError::ImageMissing(image),
            RuntimeError::Unreachable(_) => HubError::EngineDown,
            RuntimeError::PortTaken(_) => HubError::Registry(RegistryError::NoPort),
            // The engine's own words go to the hub's log, not to clients.
            _ => HubError::StartFailed("the container engine refused to run it (details in the hub's log)".into()),
        }
    }
}

impl From<StartError> for HubError {
    fn from(e: StartError) -> Self {
        match e {
            StartError::PortTaken(_) => HubError::Registry(RegistryError::NoPort),
            // The runtime's sentence for people; its details (node ids, Swarm's words) are logged.
            StartError::NodeFailed { public, .. } => HubError::StartFailed(public.into()),
            StartError::NotReady(why) => HubError::StartFailed(why),
            StartError::Cancelled => HubError::ended_while_starting(),
            StartError::Engine(e) => e.into(),
        }
    }
}
