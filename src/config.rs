//! hub.yaml: every key, its default, validation with errors that name the key, and the
//! environment overrides compose uses (`TROOP_HUB_<KEY>`).

use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{0}")]
    Yaml(String),
    #[error("hub.yaml key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, message: message.into() }
}

/// What a restarted hub does with session containers it finds from before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Orphans {
    /// Keep them running; the owner gets the session back by repeating its `--hub` command.
    Adopt,
    /// Remove them at start.
    Remove,
}

/// Where session servers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// One container per session on the hub's own Docker engine.
    Docker,
    /// One Swarm service per session, placed on the swarm's nodes (the engine must be a manager).
    Swarm,
}

/// Resource limits of each session container.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub memory_bytes: i64,
    pub nano_cpus: i64,
    pub pids: i64,
}

/// An IPv4 or IPv6 network in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.trim().parse::<IpAddr>().ok()?, p.trim().parse::<u8>().ok()?),
            None => {
                let a = s.trim().parse::<IpAddr>().ok()?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix) };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub hub_id: String,
    pub listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub public_host: Option<String>,
    pub ports: (u16, u16),
    pub bind_address: IpAddr,
    pub max_sessions: usize,
    pub max_sessions_per_address: usize,
    pub trusted_networks: Vec<Cidr>,
    pub image: String,
    pub limits: Limits,
    pub network: String,
    pub start_timeout: Duration,
    pub idle_exit: Option<Duration>,
    pub max_session_age: Option<Duration>,
    pub orphans: Orphans,
    pub runtime: RuntimeKind,
    /// The port the Troop server listens on inside its container.
    pub session_port: u16,
    /// The user session containers run as.
    pub user: String,
    /// Concurrent TCP connections to the hub port, in all and from one address.
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    /// Time a connection has to send its request.
    pub request_timeout: Duration,
    /// Docker Engine API calls slower than this count as an unreachable engine.
    pub engine_timeout: Duration,
    /// Extra arguments for the session server, after the hub's own (e.g. ["--keepalive"]).
    pub session_args: Vec<String>,
    /// Whether `GET /api/v1/sessions` answers without the admin token.
    pub public_listing: bool,
    /// A file holding the admin token (env `TROOP_HUB_ADMIN_TOKEN` wins).
    pub admin_token_file: Option<std::path::PathBuf>,
    /// Default and largest ttl of sessions started through the HTTP API.
    pub api_session_ttl: Duration,
    pub api_session_max_ttl: Duration,
}

/// The file as written: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    hub_id: Option<String>,
    listen: Option<String>,
    http_listen: Option<String>,
    public_host: Option<String>,
    ports: Option<serde_yaml::Value>,
    bind_address: Option<String>,
    max_sessions: Option<usize>,
    max_sessions_per_address: Option<usize>,
    trusted_networks: Option<Vec<String>>,
    image: Option<String>,
    limits: Option<RawLimits>,
    network: Option<String>,
    start_timeout: Option<String>,
    idle_exit: Option<serde_yaml::Value>,
    max_session_age: Option<serde_yaml::Value>,
    orphans: Option<Orphans>,
    runtime: Option<RuntimeKind>,
    session_port: Option<u16>,
    user: Option<String>,
    max_connections: Option<usize>,
    max_connections_per_address: Option<usize>,
    request_timeout: Option<String>,
    engine_timeout: Option<String>,
    session_args: Option<Vec<String>>,
    public_listing: Option<bool>,
    admin_token_file: Option<String>,
    api_session_ttl: Option<String>,
    api_session_max_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory: Option<String>,
    cpus: Option<f64>,
    pids: Option<i64>,
}

impl Default for Config {
    fn default() -> Self {
        Config::from_yaml("").unwrap_or_else(|e| unreachable!("defaults are valid: {e}"))
    }
}

impl Config {
    /// Reads and validates a file, then applies environment overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && path == Path::new("hub.yaml") => String::new(),
            Err(source) => return Err(ConfigError::Read { path: path.display().to_string(), source }),
        };
        Config::from_yaml_with_env(&text, |k| std::env::var(k).ok())
    }

    /// Parses and validates YAML text (no environment overrides).
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml_with_env(text, |_| None)
    }

    /// Parses YAML, lets `env("TROOP_HUB_<KEY>")` override single top-level keys, validates.
    pub fn from_yaml_with_env(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut value: serde_yaml::Value = if text.trim().is_empty() {
            serde_yaml::Value::Mapping(Default::default())
        } else {
            serde_yaml::from_str(text).map_err(|e| ConfigError::Yaml(format!("hub.yaml is not valid YAML: {e}")))?
        };
        if value.is_null() {
            value = serde_yaml::Value::Mapping(Default::default());
        }
        let map = value
            .as_mapping_mut()
            .ok_or_else(|| ConfigError::Yaml("hub.yaml must be a mapping of keys to values".into()))?;
        for key in OVERRIDABLE {
            // An empty variable (compose passes every key, set or not) overrides nothing.
            if let Some(v) = env(&format!("TROOP_HUB_{}", key.to_uppercase())).filter(|v| !v.trim().is_empty()) {
                let parsed: serde_yaml::Value =
                    serde_yaml::from_str(&v).unwrap_or(serde_yaml::Value::String(v.clone()));
                map.insert(serde_yaml::Value::String((*key).into()), parsed);
            }
        }
        let raw: Raw = serde_yaml::from_value(value).map_err(|e| ConfigError::Yaml(format!("hub.yaml: {e}")))?;
        raw.validate()
    }

    /// The admin token: env `TROOP_HUB_ADMIN_TOKEN`, else the first line of `admin_token_file`.
    pub fn admin_token(&self) -> Result<Option<secrecy::SecretString>, ConfigError> {
        if let Some(t) = std::env::var("TROOP_HUB_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()) {
            return Ok(Some(t.into()));
        }
        let Some(path) = &self.admin_token_file else { return Ok(None) };
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Ok(text.lines().next().map(|l| l.trim().to_string()).filter(|t| !t.is_empty()).map(Into::into))
    }

    /// The configuration as JSON for `GET /api/v1/config` (holds no secret: the token file's
    /// path is shown, never its content).
    pub fn to_json(&self) -> serde_json::Value {
        let d = |d: Option<Duration>| d.map(|d| humantime::format_duration(d).to_string());
        serde_json::json!({
            "hub_id": self.hub_id,
            "listen": self.listen.to_string(),
            "http_listen": self.http_listen.to_string(),
            "public_host": self.public_host,
            "ports": format!("{}-{}", self.ports.0, self.ports.1),
            "bind_address": self.bind_address.to_string(),
            "max_sessions": self.max_sessions,
            "max_sessions_per_address": self.max_sessions_per_address,
            "trusted_networks": self.trusted_networks.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "image": self.image,
            "limits": {
                "memory_bytes": self.limits.memory_bytes,
                "cpus": self.limits.nano_cpus as f64 / 1e9,
                "pids": self.limits.pids,
            },
            "network": self.network,
            "start_timeout": d(Some(self.start_timeout)),
            "idle_exit": d(self.idle_exit),
            "max_session_age": d(self.max_session_age),
            "orphans": match self.orphans { Orphans::Adopt => "adopt", Orphans::Remove => "remove" },
            "runtime": match self.runtime { RuntimeKind::Docker => "docker", RuntimeKind::Swarm => "swarm" },
            "request_timeout": d(Some(self.request_timeout)),
            "engine_timeout": d(Some(self.engine_timeout)),
            "session_args": self.session_args,
            "max_connections": self.max_connections,
            "max_connections_per_address": self.max_connections_per_address,
            "public_listing": self.public_listing,
            "admin_token_file": self.admin_token_file.as_ref().map(|p| p.display().to_string()),
            "admin_token": "***",
            "api_session_ttl": d(Some(self.api_session_ttl)),
            "api_session_max_ttl": d(Some(self.api_session_max_ttl)),
        })
    }

    /// Number of ports in the session range.
    pub fn port_count(&self) -> usize {
        usize::from(self.ports.1 - self.ports.0) + 1
    }

    /// True if `ip` may use admin requests (kill, list, daemon sessions) and is exempt from
    /// the per-address limit. Loopback is always trusted.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        ip.is_loopback() || self.trusted_networks.iter().any(|n| n.contains(ip))
    }
}

/// Top-level keys that `TROOP_HUB_<KEY>` may override.
const OVERRIDABLE: &[&str] = &[
    "hub_id",
    "listen",
    "http_listen",
    "public_host",
    "ports",
    "bind_address",
    "max_sessions",
    "max_sessions_per_address",
    "image",
    "network",
    "start_timeout",
    "idle_exit",
    "max_session_age",
    "orphans",
    "runtime",
    "public_listing",
    "admin_token_file",
];

fn duration(key: &'static str, s: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(s.trim())
        .map_err(|e| invalid(key, format!("`{s}` is not a duration like 15s or 10m ({e})")))
}

/// A duration that may be `null` / absent (meaning off).
fn optional_duration(
    key: &'static str,
    v: Option<serde_yaml::Value>,
    default: Option<Duration>,
) -> Result<Option<Duration>, ConfigError> {
    match v {
        None => Ok(default),
        Some(serde_yaml::Value::Null) => Ok(None),
        Some(serde_yaml::Value::String(s)) if s == "null" || s.is_empty() => Ok(None),
        Some(serde_yaml::Value::String(s)) => duration(key, &s).map(Some),
        Some(other) => Err(invalid(key, format!("expected a duration like 10m or null, got {other:?}"))),
    }
}

/// `64m`, `1g`, `512k`, or plain bytes.
fn memory(s: &str) -> Option<i64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.trim_end_matches('b');
    let (num, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1i64 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.trim().parse::<i64>().ok()?.checked_mul(mult)
}

fn socket(key: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| invalid(key, format!("`{s}` is not an address like 0.0.0.0:57990")))
}

impl Raw {
    fn validate(self) -> Result<Config, ConfigError> {
        let hub_id = self.hub_id.unwrap_or_else(|| "main".into());
        if hub_id.is_empty()
            || hub_id.len() > 48
            || !hub_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(invalid("hub_id", "use 1 to 48 characters from A-Z a-z 0-9 . _ -"));
        }
        let ports = match self.ports {
            None => (57991, 58000),
            Some(serde_yaml::Value::String(s)) => {
                let (a, b) = s.split_once('-').ok_or_else(|| invalid("ports", "write a range like 57991-58000"))?;
                let a: u16 = a.trim().parse().map_err(|_| invalid("ports", format!("`{a}` is not a port")))?;
                let b: u16 = b.trim().parse().map_err(|_| invalid("ports", format!("`{b}` is not a port")))?;
                (a, b)
            }
            Some(serde_yaml::Value::Number(n)) => {
                let p = n.as_u64().and_then(|p| u16::try_from(p).ok()).ok_or_else(|| invalid("ports", "not a port"))?;
                (p, p)
            }
            Some(other) => return Err(invalid("ports", format!("write a range like 57991-58000, not {other:?}"))),
        };
        if ports.0 == 0 || ports.0 > ports.1 {
            return Err(invalid("ports", "the range must be FIRST-LAST with 1 <= FIRST <= LAST"));
        }
        let limits = self.limits.unwrap_or_default();
        let memory_bytes = match limits.memory {
            None => 64 << 20,
            Some(m) => memory(&m)
                .filter(|b| *b >= 6 << 20)
                .ok_or_else(|| invalid("limits.memory", format!("`{m}` is not a size of at least 6m (like 64m)")))?,
        };
        let cpus = limits.cpus.unwrap_or(0.5);
        if !(cpus > 0.0 && cpus <= 64.0) {
            return Err(invalid("limits.cpus", "must be a number of CPUs above 0, like 0.5"));
        }
        let pids = limits.pids.unwrap_or(64);
        if pids < 8 {
            return Err(invalid("limits.pids", "must be at least 8"));
        }
        let mut trusted_networks = Vec::new();
        for n in self.trusted_networks.unwrap_or_else(|| vec!["127.0.0.0/8".into()]) {
            trusted_networks.push(
                Cidr::parse(&n)
                    .ok_or_else(|| invalid("trusted_networks", format!("`{n}` is not a CIDR like 10.0.0.0/8")))?,
            );
        }
        let image = self.image.unwrap_or_else(|| "troop-hub/troop-server:latest".into());
        if image.trim().is_empty() {
            return Err(invalid("image", "must name an image"));
        }
        let network = self.network.unwrap_or_else(|| "troop-hub-sessions".into());
        if network.is_empty() || !network.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
            return Err(invalid("network", "use characters from A-Z a-z 0-9 . _ -"));
        }
        let public_host = self.public_host.filter(|h| !h.trim().is_empty() && h != "null");
        let start_timeout = duration("start_timeout", self.start_timeout.as_deref().unwrap_or("15s"))?;
        if start_timeout < Duration::from_millis(100) {
            return Err(invalid("start_timeout", "must be at least 100ms"));
        }
        let max_sessions = self.max_sessions.unwrap_or(10);
        let api_session_ttl = duration("api_session_ttl", self.api_session_ttl.as_deref().unwrap_or("1h"))?;
        let api_session_max_ttl =
            duration("api_session_max_ttl", self.api_session_max_ttl.as_deref().unwrap_or("24h"))?;
        if api_session_ttl > api_session_max_ttl {
            return Err(invalid("api_session_ttl", "must not be longer than api_session_max_ttl"));
        }
        Ok(Config {
            hub_id,
            listen: socket("listen", self.listen.as_deref().unwrap_or("0.0.0.0:57990"))?,
            http_listen: socket("http_listen", self.http_listen.as_deref().unwrap_or("0.0.0.0:8080"))?,
            public_host,
            ports,
            bind_address: self
                .bind_address
                .as_deref()
                .unwrap_or("0.0.0.0")
                .parse()
                .map_err(|_| invalid("bind_address", "must be an IP address like 0.0.0.0"))?,
            max_sessions,
            max_sessions_per_address: self.max_sessions_per_address.unwrap_or(1),
            trusted_networks,
            image,
            limits: Limits { memory_bytes, nano_cpus: (cpus * 1e9) as i64, pids },
            network,
            start_timeout,
            idle_exit: optional_duration("idle_exit", self.idle_exit, Some(Duration::from_secs(600)))?,
            max_session_age: optional_duration("max_session_age", self.max_session_age, None)?,
            orphans: self.orphans.unwrap_or(Orphans::Adopt),
            runtime: self.runtime.unwrap_or(RuntimeKind::Docker),
            session_port: self.session_port.unwrap_or(57890),
            user: self.user.unwrap_or_else(|| "65534:65534".into()),
            max_connections: self.max_connections.unwrap_or(1024).max(1),
            max_connections_per_address: self.max_connections_per_address.unwrap_or(32).max(1),
            request_timeout: duration("request_timeout", self.request_timeout.as_deref().unwrap_or("10s"))?,
            engine_timeout: duration("engine_timeout", self.engine_timeout.as_deref().unwrap_or("10s"))?,
            session_args: match self.session_args.unwrap_or_default() {
                args if args.iter().any(|a| a.to_ascii_lowercase().contains("password")) => {
                    return Err(invalid(
                        "session_args",
                        "must not carry a password (the hub passes it as an md5 in the environment)",
                    ));
                }
                args => args,
            },
            public_listing: self.public_listing.unwrap_or(false),
            admin_token_file: self.admin_token_file.filter(|f| !f.is_empty()).map(Into::into),
            api_session_ttl,
            api_session_max_ttl,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_documented_defaults() {
        let c = Config::from_yaml("").unwrap();
        assert_eq!(c.hub_id, "main");
        assert_eq!(c.listen, "0.0.0.0:57990".parse().unwrap());
        assert_eq!(c.ports, (57991, 58000));
        assert_eq!(c.max_sessions, 10);
        assert_eq!(c.max_sessions_per_address, 1);
        assert_eq!(c.limits, Limits { memory_bytes: 64 << 20, nano_cpus: 500_000_000, pids: 64 });
        assert_eq!(c.idle_exit, Some(Duration::from_secs(600)));
        assert_eq!(c.max_session_age, None);
        assert_eq!(c.orphans, Orphans::Adopt);
    }

    #[test]
    fn the_shipped_hub_yaml_lists_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/hub.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(Config::from_yaml(&text).unwrap(), Config::default());
    }

    #[test]
    fn errors_name_the_key() {
        for (yaml, key) in [
            ("ports: 58000-57991", "ports"),
            ("limits: {memory: lots}", "limits.memory"),
            ("start_timeout: soon", "start_timeout"),
            ("trusted_networks: [10.0.0.0/99]", "trusted_networks"),
            ("hub_id: 'a b'", "hub_id"),
        ] {
            let e = Config::from_yaml(yaml).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{yaml}: {e}");
        }
        let e = Config::from_yaml("max_sesions: 3").unwrap_err().to_string();
        assert!(e.contains("max_sesions"), "unknown keys are named: {e}");
    }

    #[test]
    fn environment_overrides_single_keys() {
        let c = Config::from_yaml_with_env("max_sessions: 3", |k| match k {
            "TROOP_HUB_PUBLIC_HOST" => Some("troop.example.org".into()),
            "TROOP_HUB_MAX_SESSIONS" => Some("7".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.public_host.as_deref(), Some("troop.example.org"));
        assert_eq!(c.max_sessions, 7);
        let c = Config::from_yaml_with_env("max_sessions: 3\nports: 100-200", |_| Some(String::new())).unwrap();
        assert_eq!((c.max_sessions, c.ports), (3, (100, 200)), "empty variables keep the file's values");
    }

    #[test]
    fn trust_covers_loopback_and_listed_networks() {
        let c = Config::from_yaml("trusted_networks: [10.1.0.0/16]").unwrap();
        assert!(c.is_trusted("127.0.0.1".parse().unwrap()));
        assert!(c.is_trusted("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!c.is_trusted("10.2.0.1".parse().unwrap()));
    }
}
