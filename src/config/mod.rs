//! hub.yaml in one place: [`Config`] is the file's serde form (every key optional, defaults in
//! its `Default`), the JSON of `GET /api/v1/config`, and the list of keys that
//! `TROOP_HUB_<KEY>` environment variables override (every top-level key, found by serialising
//! the defaults). Validation then checks what types cannot, with errors that name the
//! key. The shipped hub.yaml and README's table are tested against this type.

mod serde_forms;
#[cfg(test)]
mod tests;

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use serde_norway::{Mapping, Value};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{0}")]
    Yaml(String),
    #[error("hub.yaml key `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("{0}")]
    WeakToken(String),
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

/// What a restarted hub does with session containers it finds from before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Orphans {
    /// Keep them running; the owner gets the session back by repeating its `--hub` command.
    Adopt,
    /// Remove them at start.
    Remove,
}

/// Where session servers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// One container per session on the hub's own Docker engine.
    Docker,
    /// One Swarm service per session, placed on the swarm's nodes (the engine must be a manager).
    Swarm,
}

/// Who may watch a session's audience view (`/s/{name}`) and its live feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Audience {
    /// Whoever knows the session's password (an owner can open their session to everyone).
    Password,
    /// Anyone with the link.
    Public,
    /// No audience view at all (404).
    Off,
}

/// Where and how long sessions' code and timelines are kept (`archive:` in hub.yaml; `off`
/// keeps nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArchiveSpec {
    /// The SQLite database file (its directory is created).
    pub path: PathBuf,
    /// Ended sessions older than this are removed.
    #[serde(with = "humantime_serde")]
    pub keep: Duration,
    /// One session's timeline is cut (keeping its final code) beyond this many bytes.
    #[serde(with = "serde_forms::memory")]
    pub max_session_bytes: i64,
    /// The oldest ended sessions are removed while all together exceed this.
    #[serde(with = "serde_forms::memory")]
    pub max_total_bytes: i64,
}

impl Default for ArchiveSpec {
    fn default() -> Self {
        ArchiveSpec {
            path: PathBuf::from("data/archive.db"),
            keep: Duration::from_secs(30 * 24 * 3600),
            max_session_bytes: 16 << 20,
            max_total_bytes: 1 << 30,
        }
    }
}

/// Resource limits of each session container, written `{memory: 64m, cpus: 0.5, pids: 64}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    #[serde(rename = "memory", with = "serde_forms::memory")]
    pub memory_bytes: i64,
    #[serde(rename = "cpus", with = "serde_forms::cpus")]
    pub nano_cpus: i64,
    pub pids: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { memory_bytes: 64 << 20, nano_cpus: 500_000_000, pids: 64 }
    }
}

/// Warm pool members per node when hub.yaml does not say (suits the default cap of 10).
pub const DEFAULT_WARM_POOL: usize = 2;

/// The configuration: hub.yaml's keys, in the file's order. Durations are humantime (`15s`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Labels this hub's containers; hubs with different ids on one engine never meet.
    pub hub_id: String,
    /// The Troop hub protocol.
    pub listen: SocketAddr,
    /// The host given to clients; `None` (or empty): detected from the outbound route.
    pub public_host: Option<String>,
    /// Session ports, inclusive: `57991-58000`, or one port.
    #[serde(with = "serde_forms::port_range")]
    pub ports: (u16, u16),
    /// Host address the session ports bind to.
    pub bind_address: IpAddr,
    /// The hub itself listens on each session's port and relays performers' bytes to its
    /// container, which publishes nothing (no iptables rules or docker-proxy per session;
    /// performers' addresses reach the server in a PROXY v2 header). Docker runtime with the
    /// control channel only. A hub restart cuts performers' connections (they rejoin).
    #[serde(with = "serde_forms::on_off")]
    pub front_door: bool,
    pub max_sessions: usize,
    pub max_sessions_per_address: usize,
    /// Session servers kept started and locked, ready to be armed for a new session (per
    /// node under swarm); they count against `max_sessions`. 0 turns the pool off; it needs
    /// `control_channel`. Unset: [`DEFAULT_WARM_POOL`] with a control channel, else 0.
    pub warm_pool: Option<usize>,
    /// Networks that may kill/list/start daemon sessions (loopback always may).
    #[serde(deserialize_with = "serde_forms::networks")]
    pub trusted_networks: Vec<IpNet>,
    pub runtime: RuntimeKind,
    pub image: String,
    /// The session image speaks the hub's control channel (troop-server does; upstream Troop's
    /// image does not: then the password md5 goes in its environment and sessions end by
    /// SIGTERM, without the hub's sentence or live insight).
    pub control_channel: bool,
    pub limits: Limits,
    /// The sessions' bridge network (swarm: the name prefix of each session's overlay).
    pub network: String,
    /// Containers per bridge network: past that the hub adds `NETWORK-2`, `NETWORK-3`... (a
    /// Linux bridge takes at most 1,023 ports).
    pub sessions_per_network: usize,
    #[serde(with = "humantime_serde")]
    pub start_timeout: Duration,
    /// The session server exits after this long with nobody logged in (`None`: never).
    #[serde(with = "humantime_serde::option")]
    pub idle_exit: Option<Duration>,
    #[serde(with = "humantime_serde::option")]
    pub max_session_age: Option<Duration>,
    pub orphans: Orphans,
    /// The port the Troop server listens on inside its container.
    pub session_port: u16,
    /// The user session containers run as.
    pub user: String,
    /// Time a connection has to send its request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Concurrent TCP connections to the hub port, in all and from one address.
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    /// Docker Engine API calls slower than this count as an unreachable engine.
    #[serde(with = "humantime_serde")]
    pub engine_timeout: Duration,
    /// Extra arguments for the session server, after the hub's own (e.g. ["--keepalive"]).
    pub session_args: Vec<String>,
    /// Whether `GET /api/v1/sessions` answers without the admin token.
    pub public_listing: bool,
    /// A file holding the admin token (env `TROOP_HUB_ADMIN_TOKEN` wins).
    pub admin_token_file: Option<PathBuf>,
    /// Default and largest ttl of sessions started through the HTTP API.
    #[serde(with = "humantime_serde")]
    pub api_session_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub api_session_max_ttl: Duration,
    /// The HTTP API, metrics and status page.
    pub http_listen: SocketAddr,
    /// Who may watch sessions in a browser (`/s/{name}`).
    pub audience: Audience,
    /// Viewers of one session at once, and of all sessions together.
    pub audience_viewers_per_session: usize,
    pub audience_viewers_total: usize,
    /// Whether performers may play from a browser (`/s/{name}/play`); each session's owner
    /// can also turn them off for that session.
    #[serde(with = "serde_forms::on_off")]
    pub browser_seats: bool,
    /// Browser seats of all sessions together.
    pub browser_seats_total: usize,
    /// Reverse proxies whose `X-Forwarded-For` names the client, for per-address limits on
    /// password attempts.
    pub trusted_proxies: Vec<IpNet>,
    /// Every session's code and timeline, kept after it ends; `None` (`archive: off`) keeps nothing.
    #[serde(with = "serde_forms::archive")]
    pub archive: Option<ArchiveSpec>,
}

impl Default for Config {
    fn default() -> Self {
        let everywhere = Ipv4Addr::UNSPECIFIED;
        Config {
            hub_id: "main".into(),
            listen: SocketAddr::from((everywhere, 57990)),
            public_host: None,
            ports: (57991, 58000),
            bind_address: everywhere.into(),
            front_door: false,
            max_sessions: 10,
            max_sessions_per_address: 1,
            warm_pool: None,
            trusted_networks: vec![Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8).into()],
            runtime: RuntimeKind::Docker,
            image: "troop-hub/troop-server:latest".into(),
            control_channel: true,
            limits: Limits::default(),
            network: "troop-hub-sessions".into(),
            sessions_per_network: 1000,
            start_timeout: Duration::from_secs(15),
            idle_exit: Some(Duration::from_secs(600)),
            max_session_age: None,
            orphans: Orphans::Adopt,
            session_port: 57890,
            user: "65534:65534".into(),
            request_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_connections_per_address: 32,
            engine_timeout: Duration::from_secs(10),
            session_args: Vec::new(),
            public_listing: false,
            admin_token_file: None,
            api_session_ttl: Duration::from_secs(3600),
            api_session_max_ttl: Duration::from_secs(24 * 3600),
            http_listen: SocketAddr::from((everywhere, 8080)),
            audience: Audience::Password,
            audience_viewers_per_session: 200,
            audience_viewers_total: 2000,
            browser_seats: true,
            browser_seats_total: 500,
            trusted_proxies: Vec::new(),
            archive: Some(ArchiveSpec::default()),
        }
    }
}

impl Config {
    /// Reads a file (a missing default `hub.yaml` is empty), applies environment overrides, validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && path == Path::new("hub.yaml") => String::new(),
            Err(source) => return Err(ConfigError::Read { path: path.display().to_string(), source }),
        };
        let mut config = Config::from_yaml_with_env(&text, |k| std::env::var(k).ok())?;
        config.resolve_paths(path, std::env::var_os("TROOP_HUB_STATE_DIR").map(PathBuf::from));
        Ok(config)
    }

    /// A relative `archive.path` is taken from `state_dir` (env `TROOP_HUB_STATE_DIR`) if
    /// given, else from the folder hub.yaml is in, never from wherever the hub was started: a
    /// hub restarted from another folder opens the same archive.
    pub fn resolve_paths(&mut self, hub_yaml: &Path, state_dir: Option<PathBuf>) {
        let Some(archive) = self.archive.as_mut().filter(|a| a.path.is_relative()) else { return };
        let base = state_dir.unwrap_or_else(|| hub_yaml.parent().map(Path::to_path_buf).unwrap_or_default());
        let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
        let base = std::path::absolute(&base).unwrap_or(base);
        archive.path = base.join(&archive.path);
    }

    /// Parses and validates YAML text (no environment overrides).
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml_with_env(text, |_| None)
    }

    /// Parses YAML, lets `env("TROOP_HUB_<KEY>")` override single top-level keys, validates.
    pub fn from_yaml_with_env(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let parsed = if text.trim().is_empty() { Ok(Value::Null) } else { serde_norway::from_str::<Value>(text) };
        let mut map = match parsed {
            Ok(Value::Null) => Mapping::new(),
            Ok(Value::Mapping(map)) => map,
            Ok(_) => return Err(ConfigError::Yaml("hub.yaml must be a mapping of keys to values".into())),
            Err(e) => return Err(ConfigError::Yaml(format!("hub.yaml is not valid YAML: {e}"))),
        };
        apply_env(&mut map, env);
        let config: Config = serde_path_to_error::deserialize(Value::Mapping(map)).map_err(serde_error)?;
        config.validate()
    }

    /// The admin token: env `TROOP_HUB_ADMIN_TOKEN`, else the first line of `admin_token_file`.
    /// A token of fewer than 128 bits is refused ([`crate::gate::secret::check_token_strength`]).
    pub fn admin_token(&self) -> Result<Option<secrecy::SecretString>, ConfigError> {
        let token = match std::env::var("TROOP_HUB_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()) {
            Some(t) => Some(t),
            None => {
                let Some(path) = &self.admin_token_file else { return Ok(None) };
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
                text.lines().next().map(|l| l.trim().to_string()).filter(|t| !t.is_empty())
            }
        };
        if let Some(t) = &token {
            crate::gate::secret::check_token_strength(t).map_err(ConfigError::WeakToken)?;
        }
        Ok(token.map(Into::into))
    }

    /// The configuration as JSON for `GET /api/v1/config`: hub.yaml's form, plus
    /// `"admin_token": "***"`. It holds no secret: the token file's path is shown, never its
    /// content, and the token is no field of `Config`.
    pub fn to_json(&self) -> serde_json::Value {
        // Cannot fail: every field serialises as a string, number, list or string-keyed map.
        let mut json = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = json.as_object_mut() {
            map.insert("admin_token".into(), "***".into());
        }
        json
    }

    /// Number of ports in the session range.
    pub fn port_count(&self) -> usize {
        usize::from(self.ports.1 - self.ports.0) + 1
    }

    /// True if `ip` may use admin requests (kill, list, daemon sessions) and is exempt from
    /// the per-address limit. Loopback is always trusted; a v4-mapped v6 peer is its v4 address.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_loopback() || self.trusted_networks.iter().any(|n| n.contains(&ip))
    }

    /// Pool members to keep per node (see `warm_pool`).
    pub fn pool_size(&self) -> usize {
        match self.control_channel {
            true => self.warm_pool.unwrap_or(DEFAULT_WARM_POOL),
            false => 0,
        }
    }

    /// Checks what the types do not, and reads an empty `public_host` or `admin_token_file` as
    /// unset.
    fn validate(mut self) -> Result<Config, ConfigError> {
        let ensure = |ok: bool, key: &str, message: &str| if ok { Ok(()) } else { Err(invalid(key, message)) };
        let name =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        ensure(
            name(&self.hub_id) && self.hub_id.len() <= 48,
            "hub_id",
            "use 1 to 48 characters from A-Z a-z 0-9 . _ -",
        )?;
        ensure(name(&self.network), "network", "use characters from A-Z a-z 0-9 . _ -")?;
        ensure(
            (1..=1000).contains(&self.sessions_per_network),
            "sessions_per_network",
            "must be 1 to 1000 (a Linux bridge takes at most 1,023 ports)",
        )?;
        let (first, last) = self.ports;
        ensure(first >= 1 && first <= last, "ports", "the range must be FIRST-LAST with 1 <= FIRST <= LAST")?;
        ensure(!self.image.trim().is_empty(), "image", "must name an image")?;
        ensure(
            self.warm_pool.unwrap_or(0) == 0 || self.control_channel,
            "warm_pool",
            "needs control_channel: true (a pool member is armed over it); set warm_pool: 0 for this image",
        )?;
        ensure(
            !self.front_door || (self.runtime == RuntimeKind::Docker && self.control_channel),
            "front_door",
            "needs runtime: docker and control_channel: true (Swarm and upstream Troop's image publish their ports)",
        )?;
        ensure(self.start_timeout >= Duration::from_millis(100), "start_timeout", "must be at least 100ms")?;
        ensure(self.max_connections >= 1, "max_connections", "must be at least 1")?;
        ensure(self.max_connections_per_address >= 1, "max_connections_per_address", "must be at least 1")?;
        ensure(
            self.api_session_ttl <= self.api_session_max_ttl,
            "api_session_ttl",
            "must not be longer than api_session_max_ttl",
        )?;
        ensure(
            !self.session_args.iter().any(|a| a.to_ascii_lowercase().contains("password")),
            "session_args",
            "must not carry a password (the hub passes it as an md5 in the environment)",
        )?;
        ensure(
            self.audience_viewers_per_session >= 1,
            "audience_viewers_per_session",
            "must be at least 1 (audience: off turns the view off)",
        )?;
        ensure(
            self.audience_viewers_total >= 1,
            "audience_viewers_total",
            "must be at least 1 (audience: off turns the view off)",
        )?;
        ensure(
            self.browser_seats_total >= 1,
            "browser_seats_total",
            "must be at least 1 (browser_seats: off turns seats off)",
        )?;
        if let Some(a) = &self.archive {
            ensure(!a.path.as_os_str().is_empty(), "archive.path", "must name a file (or write archive: off)")?;
            ensure(a.max_session_bytes >= 64 << 10, "archive.max_session_bytes", "must be a size of at least 64k")?;
            ensure(
                a.max_total_bytes >= a.max_session_bytes,
                "archive.max_total_bytes",
                "must be at least max_session_bytes",
            )?;
            ensure(a.keep >= Duration::from_secs(60), "archive.keep", "must be at least 1m")?;
            // Live sessions alone must fit, or pruning would have to delete what just ended.
            let live_max = (self.max_sessions as i64).saturating_mul(a.max_session_bytes);
            ensure(
                a.max_total_bytes >= live_max,
                "archive.max_total_bytes",
                &format!(
                    "must hold max_sessions ({}) x archive.max_session_bytes ({} MiB) = {} MiB: raise it, or lower one of those",
                    self.max_sessions,
                    a.max_session_bytes >> 20,
                    live_max >> 20
                ),
            )?;
        }
        let Limits { memory_bytes, nano_cpus, pids } = self.limits;
        ensure(memory_bytes >= 6 << 20, "limits.memory", "must be a size of at least 6m (like 64m)")?;
        ensure(
            nano_cpus > 0 && nano_cpus <= 64_000_000_000,
            "limits.cpus",
            "must be a number of CPUs above 0 and at most 64, like 0.5",
        )?;
        ensure(pids >= 8, "limits.pids", "must be at least 8")?;
        self.public_host = self.public_host.filter(|h| !h.trim().is_empty() && h != "null");
        self.admin_token_file = self.admin_token_file.filter(|f| !f.as_os_str().is_empty());
        Ok(self)
    }
}

/// Every top-level key with its default, in hub.yaml's form.
fn defaults() -> Mapping {
    match serde_norway::to_value(Config::default()) {
        Ok(Value::Mapping(map)) => map,
        // Unreachable (a struct serialises as a mapping); the tests would fail on no keys.
        _ => Mapping::new(),
    }
}

/// Sets each top-level key whose `TROOP_HUB_<KEY>` is set and not empty (compose passes every
/// variable, set or not). The value is read as YAML (`[10.0.0.0/8]`, `{memory: 128m}`, `null`),
/// else taken as text; a bare number or boolean stays text where the default is text
/// (`TROOP_HUB_USER=1000`, `TROOP_HUB_HUB_ID=2`). `TROOP_HUB_ADMIN_TOKEN` is no key: see
/// [`Config::admin_token`].
fn apply_env(map: &mut Mapping, env: impl Fn(&str) -> Option<String>) {
    for (key, default) in defaults() {
        let Some(key) = key.as_str() else { continue };
        let Some(text) = env(&format!("TROOP_HUB_{}", key.to_uppercase())).filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        let value = match serde_norway::from_str::<Value>(&text) {
            Ok(Value::Number(_) | Value::Bool(_)) if default.is_string() => Value::String(text),
            Ok(value) => value,
            Err(_) => Value::String(text),
        };
        map.insert(Value::String(key.into()), value);
    }
}

/// A serde error as a `ConfigError` naming the key path (`limits.memory`), if there is one.
fn serde_error(e: serde_path_to_error::Error<serde_norway::Error>) -> ConfigError {
    use serde_path_to_error::Segment;
    let key: Vec<&str> = e
        .path()
        .iter()
        .map_while(|s| match s {
            Segment::Map { key } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    let key = key.join(".");
    let message = e.into_inner().to_string();
    if key.is_empty() {
        ConfigError::Yaml(format!("hub.yaml: {message}"))
    } else {
        ConfigError::Invalid { key, message }
    }
}
