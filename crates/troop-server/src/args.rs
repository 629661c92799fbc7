//! The server's command line (`troop-server --help`), read with lexopt. clap's parser and help
//! formatting were 0.16 MiB of a 2.2 MB binary that every idle session keeps resident
//! (BENCHMARKS.md); this is the same interface without them.

use lexopt::{Arg, Parser, ValueExt};
use std::ffi::OsString;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Command {
    Run(Args),
    Help,
    Version,
}

/// The server's settings from its flags and the two password variables.
#[derive(Debug, PartialEq)]
pub struct Args {
    pub port: u16,
    pub bind: IpAddr,
    pub password: Option<String>,
    pub password_md5: Option<String>,
    pub keepalive: bool,
    pub idle_exit: Option<Duration>,
    pub max_clients: usize,
    pub max_message: usize,
    pub max_document: usize,
    pub queue: usize,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub queue_bytes: usize,
    pub history: usize,
    pub history_bytes: usize,
    pub proxy_protocol: bool,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            port: 57890,
            bind: IpAddr::from([0, 0, 0, 0]),
            password: None,
            password_md5: None,
            keepalive: false,
            idle_exit: None,
            max_clients: 62,
            max_message: 1 << 20,
            max_document: 4 << 20,
            queue: 4096,
            max_connections: 256,
            max_connections_per_address: 64,
            queue_bytes: 16 << 20,
            history: 8192,
            history_bytes: 16 << 20,
            proxy_protocol: false,
        }
    }
}

pub const HELP: &str = "\
A Troop 0.10.3 compatible session server.

Usage: troop-server [OPTIONS]

Options:
  -p, --port <PORT>            TCP port to listen on [default: 57890]
      --bind <ADDRESS>         Address to listen on [default: 0.0.0.0]
      --proxy-protocol         Take a connection's source from a PROXY protocol v2 header
                               when it starts with one (behind the hub's front door only:
                               whoever reaches the port can name any address)
  -P, --password <PASSWORD>    Session password (standalone use; prefer TROOP_PASSWORD_MD5,
                               which keeps it off command lines). Empty means no password, as
                               upstream [env: TROOP_PASSWORD]
  -k, --keepalive              Ping clients every second and drop joined clients silent for 30 s
      --idle-exit <TIME>       Exit with status 0 once no client has been logged in for this
                               long (e.g. 10m)
      --max-clients <N>        Client ids handed out over the session's life (at most 62, one
                               per peer colour) [default: 62]
      --max-message <BYTES>    Largest single message; a client sending more is dropped
                               [default: 1048576]
      --max-document <BYTES>   Largest document; an operation that would exceed it is refused
                               [default: 4194304]
      --queue <N>              Messages queued to one client before it is dropped as too slow
                               [default: 4096]
      --queue-bytes <BYTES>    Bytes queued to one client before it is dropped as too slow
                               [default: 16777216]
      --max-connections <N>    Open connections at most (more are closed at once) [default: 256]
      --max-connections-per-address <N>
                               Open connections from one address at most [default: 64]
      --history <N>            Operations kept for transforming late operations [default: 8192]
      --history-bytes <BYTES>  Bytes of operations kept for transforming late operations
                               [default: 16777216]
  -h, --help                   Print help
  -V, --version                Print version

Environment:
  TROOP_PASSWORD_MD5     md5 hex of the password, as Troop clients send it
  TROOP_CONTROL_SECRET   enables the hub's control channel (32 or more hex digits; never a
                         flag). Without a password the server then starts locked: every login
                         is refused until the hub arms the session. See CONTROL.md.
  RUST_LOG               log levels, e.g. debug or troop_server=debug,warn
";

/// Reads `args` (without the program name) and, for the password options not given as flags,
/// `env`. A flag wins over its variable; a variable set to "" counts as given (no password).
/// Errors are one line and never contain a password.
pub fn parse(
    args: impl IntoIterator<Item = OsString>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<Command, String> {
    let mut a = Args::default();
    let mut parser = Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Arg::Short('h') | Arg::Long("help") => return Ok(Command::Help),
            Arg::Short('V') | Arg::Long("version") => return Ok(Command::Version),
            Arg::Short('k') | Arg::Long("keepalive") => a.keepalive = true,
            Arg::Short('P') | Arg::Long("password") => a.password = Some(text(&mut parser, "--password")?),
            Arg::Long("password-md5") => a.password_md5 = Some(text(&mut parser, "--password-md5")?),
            Arg::Short('p') | Arg::Long("port") => a.port = parsed(&mut parser, "--port")?,
            Arg::Long("bind") => a.bind = parsed(&mut parser, "--bind")?,
            Arg::Long("proxy-protocol") => a.proxy_protocol = true,
            Arg::Long("idle-exit") => {
                let value = text(&mut parser, "--idle-exit")?;
                let idle = humantime::parse_duration(&value).map_err(|e| invalid("--idle-exit", &value, e))?;
                a.idle_exit = Some(idle);
            }
            Arg::Long("max-clients") => a.max_clients = parsed(&mut parser, "--max-clients")?,
            Arg::Long("max-message") => a.max_message = parsed(&mut parser, "--max-message")?,
            Arg::Long("max-document") => a.max_document = parsed(&mut parser, "--max-document")?,
            Arg::Long("queue") => a.queue = parsed(&mut parser, "--queue")?,
            Arg::Long("queue-bytes") => a.queue_bytes = parsed(&mut parser, "--queue-bytes")?,
            Arg::Long("max-connections") => a.max_connections = parsed(&mut parser, "--max-connections")?,
            Arg::Long("max-connections-per-address") => {
                a.max_connections_per_address = parsed(&mut parser, "--max-connections-per-address")?
            }
            Arg::Long("history") => a.history = parsed(&mut parser, "--history")?,
            Arg::Long("history-bytes") => a.history_bytes = parsed(&mut parser, "--history-bytes")?,
            other => return Err(other.unexpected().to_string()),
        }
    }
    if a.password.is_none() {
        a.password = from_env(&env, "TROOP_PASSWORD")?;
    }
    if a.password_md5.is_none() {
        a.password_md5 = from_env(&env, "TROOP_PASSWORD_MD5")?;
    }
    Ok(Command::Run(a))
}

/// An option's value as text; the error never echoes it (it may be a password).
fn text(parser: &mut Parser, option: &str) -> Result<String, String> {
    parser
        .value()
        .map_err(|e| e.to_string())?
        .string()
        .map_err(|_| format!("the value of '{option}' is not valid UTF-8"))
}

/// An option's value parsed as `T` (a number, an address).
fn parsed<T: FromStr>(parser: &mut Parser, option: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    let value = text(parser, option)?;
    value.parse().map_err(|e| invalid(option, &value, e))
}

fn invalid(option: &str, value: &str, error: impl std::fmt::Display) -> String {
    format!("invalid value '{value}' for '{option}': {error}")
}

fn from_env(env: &impl Fn(&str) -> Option<OsString>, name: &str) -> Result<Option<String>, String> {
    env(name).map(|v| v.into_string().map_err(|_| format!("{name} is not valid UTF-8"))).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Command, String> {
        let env: Vec<(String, OsString)> = env.iter().map(|(k, v)| (k.to_string(), OsString::from(v))).collect();
        parse(args.iter().map(OsString::from), |name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    fn args(cmd: Result<Command, String>) -> Args {
        match cmd {
            Ok(Command::Run(a)) => a,
            other => panic!("not a run: {other:?}"),
        }
    }

    #[test]
    fn no_flags_give_the_defaults() {
        assert_eq!(args(run(&[], &[])), Args::default());
    }

    #[test]
    fn every_spelling_of_a_value_is_read() {
        for argv in [&["--port", "5"][..], &["--port=5"], &["-p", "5"], &["-p5"], &["-p=5"]] {
            assert_eq!(args(run(argv, &[])).port, 5, "{argv:?}");
        }
        let a = args(run(
            &[
                "-k",
                "--bind",
                "127.0.0.1",
                "--idle-exit",
                "10m",
                "--max-clients=3",
                "--max-message",
                "7",
                "--max-document",
                "8",
                "--queue",
                "9",
                "--queue-bytes",
                "10",
                "--max-connections",
                "11",
                "--max-connections-per-address",
                "12",
                "--history",
                "13",
                "--history-bytes",
                "14",
                "--proxy-protocol",
            ],
            &[],
        ));
        let want = Args {
            keepalive: true,
            bind: IpAddr::from([127, 0, 0, 1]),
            idle_exit: Some(Duration::from_secs(600)),
            max_clients: 3,
            max_message: 7,
            max_document: 8,
            queue: 9,
            queue_bytes: 10,
            max_connections: 11,
            max_connections_per_address: 12,
            history: 13,
            history_bytes: 14,
            proxy_protocol: true,
            ..Args::default()
        };
        assert_eq!(a, want);
    }

    #[test]
    fn a_flag_wins_over_its_variable_and_an_empty_variable_counts() {
        let a = args(run(&["-P", "flag"], &[("TROOP_PASSWORD", "env"), ("TROOP_PASSWORD_MD5", "")]));
        assert_eq!(a.password.as_deref(), Some("flag"));
        assert_eq!(a.password_md5.as_deref(), Some(""));
        let a = args(run(&[], &[("TROOP_PASSWORD", "")]));
        assert_eq!(a.password.as_deref(), Some(""));
        assert_eq!(args(run(&["--password-md5", "abc"], &[])).password_md5.as_deref(), Some("abc"));
    }

    #[test]
    fn help_and_version_stop_parsing() {
        assert_eq!(run(&["--port", "1", "-h", "--bogus"], &[]), Ok(Command::Help));
        assert_eq!(run(&["--help"], &[]), Ok(Command::Help));
        assert_eq!(run(&["-V"], &[]), Ok(Command::Version));
    }

    #[test]
    fn bad_input_is_one_clear_line() {
        let err = |argv: &[&str]| run(argv, &[]).expect_err("refused");
        assert_eq!(err(&["--port", "abc"]), "invalid value 'abc' for '--port': invalid digit found in string");
        assert_eq!(err(&["--port"]), "missing argument for option '--port'");
        assert_eq!(err(&["--bogus=1"]), "invalid option '--bogus'");
        assert_eq!(err(&["extra"]), "unexpected argument \"extra\"");
        assert!(err(&["--idle-exit", "soon"]).starts_with("invalid value 'soon' for '--idle-exit'"));
        assert!(err(&["--keepalive=yes"]).contains("--keepalive"));
        for e in [err(&["--control-secret", "0123456789abcdef0123456789abcdef"]), err(&["--bind", "nowhere"])] {
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn a_password_is_never_echoed() {
        use std::os::unix::ffi::OsStringExt;
        let bad = OsString::from_vec(b"pw-\xff-secret".to_vec());
        let e = parse([OsString::from("--password"), bad.clone()], |_| None).expect_err("refused");
        assert!(!e.contains("secret"), "{e}");
        let e = parse(std::iter::empty(), |_| Some(bad.clone())).expect_err("refused");
        assert!(!e.contains("secret"), "{e}");
    }
}
