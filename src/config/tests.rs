use super::*;
use std::collections::BTreeSet;

fn yaml_map(c: &Config) -> Mapping {
    match serde_norway::to_value(c).unwrap() {
        Value::Mapping(m) => m,
        other => panic!("a Config serialises as a mapping, not {other:?}"),
    }
}

/// The dotted key paths of a mapping, nested mappings' keys included (`limits.memory`).
fn key_paths(map: &Mapping, prefix: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for (k, v) in map {
        let k = format!("{prefix}{}", k.as_str().expect("keys are strings"));
        if let Value::Mapping(inner) = v {
            keys.extend(key_paths(inner, &format!("{k}.")));
        }
        keys.insert(k);
    }
    keys
}

fn backticked(cell: &str) -> Vec<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

/// README's hub.yaml table: (keys, defaults) of each row between "### hub.yaml" and the next heading.
fn readme_rows() -> Vec<(Vec<String>, Vec<String>)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split_once("\n### hub.yaml\n").expect("README has a ### hub.yaml section").1;
    let section = section.split("\n#").next().unwrap_or(section);
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').collect();
            (backticked(cells[1]), backticked(cells[2]))
        })
        .collect()
}

#[test]
fn an_empty_file_gives_the_documented_defaults() {
    let c = Config::from_yaml("").unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.hub_id, "main");
    assert_eq!(c.listen, "0.0.0.0:57990".parse().unwrap());
    assert_eq!(c.ports, (57991, 58000));
    assert_eq!(c.max_sessions, 10);
    assert_eq!(c.max_sessions_per_address, 1);
    assert_eq!(c.limits, Limits { memory_bytes: 64 << 20, nano_cpus: 500_000_000, pids: 64 });
    assert_eq!(c.idle_exit, Some(Duration::from_secs(600)));
    assert_eq!(c.max_session_age, None);
    assert_eq!(c.orphans, Orphans::Adopt);
    assert_eq!(Config::from_yaml("# nothing but a comment\n").unwrap(), Config::default());
}

#[test]
fn the_shipped_hub_yaml_lists_every_key_with_its_default() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/hub.yaml")).unwrap();
    let shipped: Mapping = serde_norway::from_str(&text).unwrap();
    let expected = key_paths(&yaml_map(&Config::default()), "");
    assert!(expected.contains("session_port") && expected.contains("limits.memory"), "{expected:?}");
    assert_eq!(key_paths(&shipped, ""), expected, "hub.yaml must list every key, limits' included");
    assert_eq!(Config::from_yaml(&text).unwrap(), Config::default(), "hub.yaml's values are the defaults");
}

#[test]
fn the_readme_table_lists_every_key_with_its_default() {
    let rows = readme_rows();
    let listed: BTreeSet<String> = rows.iter().flat_map(|(keys, _)| keys.clone()).collect();
    let keys: BTreeSet<String> = defaults().keys().filter_map(|k| k.as_str().map(str::to_string)).collect();
    assert_eq!(listed, keys, "README's hub.yaml table lists exactly the keys of Config");
    // Where a row gives one default per key (`public_host` says "detected"), it is the default.
    for (keys, values) in rows.iter().filter(|(k, v)| k.len() == v.len()) {
        for (key, value) in keys.iter().zip(values) {
            let c = Config::from_yaml(&format!("{key}: {value}")).unwrap();
            assert_eq!(c, Config::default(), "README's default of `{key}` is `{value}`");
        }
    }
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
fn every_rule_names_its_key() {
    for (yaml, key) in [
        ("ports: 0-10", "ports"),
        ("ports: [1, 2]", "ports"),
        ("ports: 70000", "ports"),
        ("limits: {memory: 1m}", "limits.memory"),
        ("limits: {cpus: 0}", "limits.cpus"),
        ("limits: {cpus: 65}", "limits.cpus"),
        ("limits: {pids: 4}", "limits.pids"),
        ("start_timeout: 50ms", "start_timeout"),
        ("idle_exit: soon", "idle_exit"),
        ("hub_id: ''", "hub_id"),
        ("hub_id: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "hub_id"),
        ("network: 'a/b'", "network"),
        ("image: ' '", "image"),
        ("listen: nowhere", "listen"),
        ("bind_address: somewhere", "bind_address"),
        ("orphans: keep", "orphans"),
        ("max_connections: 0", "max_connections"),
        ("max_connections_per_address: 0", "max_connections_per_address"),
        ("session_args: [--password, x]", "session_args"),
        ("api_session_ttl: 48h", "api_session_ttl"),
        ("limits: {memroy: 64m}", "limits.memroy"),
    ] {
        let e = Config::from_yaml(yaml).unwrap_err().to_string();
        assert!(e.contains(&format!("hub.yaml key `{key}`")), "{yaml}: {e}");
    }
}

#[test]
fn values_are_read_in_every_documented_form() {
    let c =
        Config::from_yaml("ports: 58000\nlimits: {memory: 1g, cpus: 2, pids: 8}\ntrusted_networks: 10.0.0.1").unwrap();
    assert_eq!(c.ports, (58000, 58000));
    assert_eq!(c.limits, Limits { memory_bytes: 1 << 30, nano_cpus: 2_000_000_000, pids: 8 });
    assert_eq!(c.trusted_networks, vec!["10.0.0.1/32".parse::<IpNet>().unwrap()]);
    for (memory, bytes) in [("8192k", 8 << 20), ("64MB", 64 << 20), ("67108864", 64 << 20), ("100663296", 96 << 20)] {
        let c = Config::from_yaml(&format!("limits: {{memory: {memory}}}")).unwrap();
        assert_eq!(c.limits.memory_bytes, bytes, "{memory}");
    }
    let c =
        Config::from_yaml("idle_exit: null\npublic_host: ''\nadmin_token_file: ''\ntrusted_networks: ['::1']").unwrap();
    assert_eq!((c.idle_exit, c.public_host, c.admin_token_file), (None, None, None));
    assert_eq!(c.trusted_networks, vec!["::1/128".parse::<IpNet>().unwrap()]);
    // What serialises reads back as the same configuration.
    let odd = Config::from_yaml("limits: {memory: 7000001, cpus: 0.25}\nmax_session_age: 90m").unwrap();
    let text = serde_norway::to_string(&odd).unwrap();
    assert_eq!(Config::from_yaml(&text).unwrap(), odd, "{text}");
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

/// A valid value other than the default for every key.
const EXAMPLES: &[(&str, &str)] = &[
    ("hub_id", "second"),
    ("listen", "127.0.0.1:47990"),
    ("public_host", "troop.example.org"),
    ("ports", "60000-60009"),
    ("bind_address", "127.0.0.1"),
    ("front_door", "on"),
    ("max_sessions", "3"),
    ("max_sessions_per_address", "2"),
    ("warm_pool", "4"),
    ("trusted_networks", "[10.0.0.0/8, 192.168.1.5]"),
    ("runtime", "swarm"),
    ("image", "registry.example.org/troop-server:1"),
    ("control_channel", "false"),
    ("limits", "{memory: 128m, cpus: 1, pids: 32}"),
    ("network", "other-sessions"),
    ("start_timeout", "30s"),
    ("idle_exit", "null"),
    ("max_session_age", "12h"),
    ("orphans", "remove"),
    ("session_port", "57000"),
    ("user", "1000:1000"),
    ("request_timeout", "5s"),
    ("max_connections", "256"),
    ("max_connections_per_address", "8"),
    ("engine_timeout", "20s"),
    ("session_args", "[--keepalive]"),
    ("public_listing", "true"),
    ("admin_token_file", "/run/secrets/admin_token"),
    ("api_session_ttl", "2h"),
    ("api_session_max_ttl", "48h"),
    ("http_listen", "127.0.0.1:8081"),
    ("audience", "off"),
    ("audience_viewers_per_session", "50"),
    ("audience_viewers_total", "500"),
    ("browser_seats", "off"),
    ("browser_seats_total", "20"),
    ("trusted_proxies", "[10.0.0.0/8]"),
    ("archive", "off"),
    ("sessions_per_network", "500"),
];

#[test]
fn every_key_can_be_overridden_from_the_environment() {
    let default = yaml_map(&Config::default());
    for key in default.keys().filter_map(Value::as_str) {
        let (_, value) = EXAMPLES.iter().find(|(k, _)| *k == key).unwrap_or_else(|| panic!("no example for `{key}`"));
        let var = format!("TROOP_HUB_{}", key.to_uppercase());
        let c = Config::from_yaml_with_env("", |k| (k == var).then(|| value.to_string()))
            .unwrap_or_else(|e| panic!("{var}={value}: {e}"));
        let (got, from_file) = (yaml_map(&c), yaml_map(&Config::from_yaml(&format!("{key}: {value}")).unwrap()));
        assert_ne!(got[key], default[key], "{var}={value} took no effect");
        assert_eq!(got, from_file, "{var}={value} acts like `{key}: {value}` in hub.yaml");
    }
}

#[test]
fn numbers_stay_text_for_text_keys_and_the_token_is_no_key() {
    let c = Config::from_yaml_with_env("", |k| match k {
        "TROOP_HUB_USER" => Some("1000".into()),
        "TROOP_HUB_HUB_ID" => Some("2".into()),
        "TROOP_HUB_PORTS" => Some("58000".into()),
        "TROOP_HUB_ADMIN_TOKEN" => Some("s3cret".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!((c.user.as_str(), c.hub_id.as_str(), c.ports), ("1000", "2", (58000, 58000)));
    assert!(!c.to_json().to_string().contains("s3cret"));
}

#[test]
fn the_api_shows_the_file_form_with_the_token_masked() {
    let c = Config::from_yaml("admin_token_file: /run/secrets/admin_token\nmax_session_age: 1h").unwrap();
    let json = c.to_json();
    assert_eq!(json["admin_token"], "***");
    assert_eq!(json["admin_token_file"], "/run/secrets/admin_token");
    assert_eq!(json["max_session_age"], "1h");
    assert_eq!(json["idle_exit"], "10m");
    assert_eq!(json["ports"], "57991-58000");
    assert_eq!(json["limits"], serde_json::json!({"memory": "64m", "cpus": 0.5, "pids": 64}));
    assert_eq!(json["trusted_networks"], serde_json::json!(["127.0.0.0/8"]));
    assert_eq!((json["session_port"].as_u64(), json["user"].as_str()), (Some(57890), Some("65534:65534")));
    assert_eq!(json["hub_id"], "main");
    assert_eq!(json.as_object().map(|o| o.len()), Some(defaults().len() + 1), "every key and admin_token");
}

#[test]
fn trust_covers_loopback_and_listed_networks() {
    let c = Config::from_yaml("trusted_networks: [10.1.0.0/16, 192.168.1.5, 'fd00::/8']").unwrap();
    assert!(c.is_trusted("127.0.0.1".parse().unwrap()));
    assert!(c.is_trusted("::1".parse().unwrap()));
    assert!(c.is_trusted("::ffff:10.1.2.3".parse().unwrap()));
    assert!(c.is_trusted("192.168.1.5".parse().unwrap()));
    assert!(c.is_trusted("fd12::1".parse().unwrap()));
    assert!(!c.is_trusted("192.168.1.6".parse().unwrap()));
    assert!(!c.is_trusted("10.2.0.1".parse().unwrap()));
}

#[test]
fn the_archive_is_a_mapping_or_off() {
    assert_eq!(Config::from_yaml("archive: off").unwrap().archive, None);
    assert_eq!(Config::from_yaml("archive: false").unwrap().archive, None);
    let some = Config::from_yaml("archive: {path: /var/lib/troop-hub/a.db, keep: 7d}").unwrap().archive.unwrap();
    assert_eq!(some.path, PathBuf::from("/var/lib/troop-hub/a.db"));
    assert_eq!((some.keep, some.max_session_bytes), (Duration::from_secs(7 * 86400), 16 << 20));
    let off = yaml_map(&Config::from_yaml("archive: off").unwrap());
    assert_eq!(off[&Value::from("archive")], Value::from("off"), "written back as off");
    for (yaml, key) in [
        ("archive: maybe", "archive"),
        ("archive: {keep: 1s}", "archive.keep"),
        ("archive: {max_session_bytes: 2g}", "archive.max_total_bytes"),
        ("archive: {colour: red}", "archive"),
    ] {
        let e = Config::from_yaml(yaml).unwrap_err().to_string();
        assert!(e.contains(key), "{yaml}: {e}");
    }
}

#[test]
fn an_archive_too_small_for_its_live_sessions_is_refused_naming_the_fix() {
    let err =
        Config::from_yaml("max_sessions: 100\narchive: {max_session_bytes: 16m, max_total_bytes: 1g}").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("archive.max_total_bytes") && text.contains("1600 MiB") && text.contains("raise it"),
        "{text}"
    );
    assert!(Config::from_yaml("max_sessions: 100\narchive: {max_session_bytes: 16m, max_total_bytes: 2g}").is_ok());
}

#[test]
fn a_relative_archive_path_is_taken_from_the_state_dir_or_hub_yamls_folder() {
    let resolved = |hub_yaml: &str, state: Option<&str>| {
        let mut c = Config::from_yaml("archive: {path: data/archive.db}").unwrap();
        c.resolve_paths(Path::new(hub_yaml), state.map(PathBuf::from));
        c.archive.map(|a| a.path).unwrap_or_default()
    };
    assert_eq!(resolved("/etc/troop-hub/hub.yaml", None), PathBuf::from("/etc/troop-hub/data/archive.db"));
    assert_eq!(
        resolved("/etc/troop-hub/hub.yaml", Some("/var/lib/troop-hub")),
        PathBuf::from("/var/lib/troop-hub/data/archive.db")
    );
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(resolved("hub.yaml", None), cwd.join("data/archive.db"), "hub.yaml in the working directory");
    let mut c = Config::from_yaml("archive: {path: /srv/a.db}").unwrap();
    c.resolve_paths(Path::new("/etc/hub.yaml"), Some(PathBuf::from("/x")));
    assert_eq!(c.archive.map(|a| a.path), Some(PathBuf::from("/srv/a.db")), "absolute paths stay");
}
