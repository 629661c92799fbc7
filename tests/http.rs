//! The HTTP side against a real hub with real Docker: every endpoint's happy path and error
//! statuses, auth, metrics following sessions, live reload of hub.yaml, and the status page in
//! a real headless browser.

mod common;

use common::{eventually, http, metric, TestHub, T};
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use troop_hub::admin::{self, start_session};
use troop_server::client::TroopClient;

const TOKEN: &str = "s3cret-admin-token-4a8e2c9f61d07b35";

async fn hub_with_token(extra: &str) -> TestHub {
    let mut hub = TestHub::new(extra);
    hub.envs.push(("TROOP_HUB_ADMIN_TOKEN".into(), TOKEN.into()));
    hub.start().await
}

#[tokio::test]
async fn sessions_api_happy_paths_errors_and_auth() {
    let hub = hub_with_token("").await;
    let h = hub.http;
    assert_eq!(http(h, "GET", "/healthz", None, None).await.status, 200);
    assert_eq!(http(h, "GET", "/readyz", None, None).await.status, 200);

    // Auth: missing, wrong, right.
    let missing = http(h, "GET", "/api/v1/sessions", None, None).await;
    assert_eq!(missing.status, 401);
    assert!(missing.json()["error"].as_str().unwrap().contains("Bearer"));
    assert_eq!(http(h, "GET", "/api/v1/sessions", Some("nope"), None).await.status, 403);
    assert_eq!(http(h, "GET", "/api/v1/sessions", Some(TOKEN), None).await.json(), json!({"sessions": []}));

    // Bad requests change nothing.
    for (body, status) in [
        ("not json", 400),
        (r#"{"password":"p"}"#, 400),
        (r#"{"name":"bad name","password":"p"}"#, 400),
        (r#"{"name":"ok"}"#, 400),
        (r#"{"name":"ok","password":"p","ttl":"100d"}"#, 400),
    ] {
        let r = http(h, "POST", "/api/v1/sessions", Some(TOKEN), Some(body)).await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
        assert!(r.json()["error"].is_string());
    }
    assert_eq!(http(h, "POST", "/api/v1/sessions", None, Some(r#"{"name":"a","password":"p"}"#)).await.status, 401);
    assert!(hub.containers().is_empty());

    // Start, find, join, conflict.
    let created =
        http(h, "POST", "/api/v1/sessions", Some(TOKEN), Some(r#"{"name":"api","password":"pw","ttl":"10m"}"#)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let port = created.json()["port"].as_u64().unwrap() as u16;
    let found = http(h, "GET", "/api/v1/sessions/api", None, None).await;
    assert_eq!(
        found.json(),
        json!({"name": "api", "host": "127.0.0.1", "port": port, "audience": "password", "locked": false})
    );
    let tcp = admin::request(hub.addr, &json!({"type": "query", "name": "api"}), T).await.unwrap();
    assert_eq!(tcp["result"], json!(["127.0.0.1", port]), "TCP and HTTP agree");
    let session: SocketAddr = ([127, 0, 0, 1], port).into();
    TroopClient::join(session, "alice", "pw", T).await.expect("join the API's session");
    let dup = http(h, "POST", "/api/v1/sessions", Some(TOKEN), Some(r#"{"name":"api","password":"x"}"#)).await;
    assert_eq!(dup.status, 409);
    assert_eq!(http(h, "GET", "/api/v1/sessions/ghost", None, None).await.status, 404);
    assert_eq!(http(h, "GET", "/api/v1/sessions/bad%20name", None, None).await.status, 400);

    let listed = http(h, "GET", "/api/v1/sessions", Some(TOKEN), None).await;
    let s = &listed.json()["sessions"][0];
    assert_eq!(
        (s["name"].as_str(), s["port"].as_u64(), s["state"].as_str()),
        (Some("api"), Some(port as u64), Some("running"))
    );
    assert!(s["container"].as_str().is_some_and(|c| c.len() == 12));
    assert!(!listed.body.contains("\"pw\""), "no password in the listing");
    // One session's whole record, for the admin only.
    let one = http(h, "GET", "/api/v1/sessions/api", Some(TOKEN), None).await.json();
    for field in ["id", "name", "container", "node", "state", "daemon"] {
        assert_eq!(one["session"][field], s[field], "the admin gets the listing's record of it: {field}");
    }
    assert!(one["session"]["performers"].is_array());
    assert_eq!(one["port"].as_u64(), Some(port as u64));
    assert_eq!(http(h, "GET", "/api/v1/sessions/api", None, None).await.json()["session"], json!(null));

    // Config: admin only, no secret.
    let config = http(h, "GET", "/api/v1/config", Some(TOKEN), None).await;
    assert_eq!(config.status, 200);
    assert!(!config.body.contains(TOKEN));
    assert_eq!(config.json()["hub_id"], hub.id.as_str());

    // DELETE ends it; again is 404.
    assert_eq!(http(h, "DELETE", "/api/v1/sessions/api", None, None).await.status, 401);
    assert_eq!(http(h, "DELETE", "/api/v1/sessions/api", Some(TOKEN), None).await.status, 204);
    hub.wait_containers(0).await;
    assert_eq!(http(h, "DELETE", "/api/v1/sessions/api", Some(TOKEN), None).await.status, 404);

    // DELETE of a session owned over TCP tells its owner.
    let mut o = start_session(hub.addr, "tcp-owned", "pw", T).await.unwrap().expect("started");
    assert_eq!(http(h, "DELETE", "/api/v1/sessions/tcp-owned", Some(TOKEN), None).await.status, 204);
    assert_eq!(o.ended(T).await.as_deref(), Some("Session manually killed by admin."));
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let hub = hub_with_token("").await;
    let doc = http(hub.http, "GET", "/api/v1/openapi.json", None, None).await.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "delete", "patch"].into_iter().filter(|m| item[m].is_object()) {
            documented += 1;
            let concrete = path.replace("{name}", "nobody");
            let body = (method == "post").then_some("{}");
            let r = http(hub.http, &method.to_uppercase(), &concrete, Some(TOKEN), body).await;
            assert_ne!(r.status, 405, "{method} {path}");
            assert!(!r.body.contains("No such endpoint"), "{method} {path} is routed: {}", r.body);
        }
    }
    assert_eq!(documented, 40, "every route is documented: {}", doc["paths"]);
    assert!(http(hub.http, "GET", "/nope", None, None).await.json()["error"].is_string());
}

#[tokio::test]
async fn without_a_token_admin_endpoints_say_how_to_set_one() {
    let hub = TestHub::new("").start().await;
    let r = http(hub.http, "GET", "/api/v1/config", Some("anything"), None).await;
    assert_eq!(r.status, 403);
    assert!(r.json()["error"].as_str().unwrap().contains("TROOP_HUB_ADMIN_TOKEN"));
}

#[tokio::test]
async fn readyz_names_a_missing_image_to_the_admin_only() {
    let hub = hub_with_token("image: troop-hub/not-built:latest").await;
    let r = http(hub.http, "GET", "/readyz", None, None).await;
    assert_eq!(r.status, 503);
    let public = r.json()["error"].as_str().unwrap().to_string();
    assert!(public.contains("the session image is missing"), "{public}");
    assert!(!public.contains("not-built"), "strangers get no engine text or names: {public}");
    let r = http(hub.http, "GET", "/readyz", Some(TOKEN), None).await;
    assert_eq!(r.status, 503);
    assert!(r.json()["error"].as_str().unwrap().contains("troop-hub/not-built:latest"), "{}", r.body);
    assert!(hub.log().contains("troop-hub/not-built:latest"), "the hub's log has the details");
}

#[tokio::test]
async fn metrics_follow_sessions() {
    let hub = TestHub::new("").start().await;
    let before = http(hub.http, "GET", "/metrics", None, None).await.body;
    assert_eq!(metric(&before, "troop_hub_sessions_running"), 0.0);
    assert_eq!(metric(&before, "troop_hub_sessions_cap"), 10.0);
    let o = start_session(hub.addr, "m", "pw", T).await.unwrap().expect("started");
    let during = http(hub.http, "GET", "/metrics", None, None).await.body;
    assert_eq!(metric(&during, "troop_hub_sessions_running"), 1.0);
    assert_eq!(metric(&during, "troop_hub_sessions_started_total"), 1.0);
    assert_eq!(metric(&during, "troop_hub_session_start_seconds_count"), 1.0);
    assert_eq!(metric(&during, "troop_hub_ports_free"), 4.0);
    assert_eq!(metric(&during, "troop_hub_requests_total{type=\"server\",outcome=\"ok\"}"), 1.0);
    assert_eq!(metric(&during, "troop_hub_query_seconds_count"), 0.0);
    // A query is timed from its connection accepted to its reply written.
    let answer =
        admin::request(hub.addr, &json!({"type": "query", "name": "m"}), T).await.expect("the query is answered");
    assert_eq!(answer["result"][1], o.port);
    let queried = http(hub.http, "GET", "/metrics", None, None).await.body;
    assert_eq!(metric(&queried, "troop_hub_query_seconds_count"), 1.0);
    assert_eq!(metric(&queried, "troop_hub_query_seconds_bucket{le=\"1\"}"), 1.0);
    drop(o);
    let after = eventually("the end to be counted", T, async || {
        let m = http(hub.http, "GET", "/metrics", None, None).await.body;
        if metric(&m, "troop_hub_sessions_ended_total{reason=\"owner_left\"}") == 1.0 {
            Ok(m)
        } else {
            Err(m)
        }
    })
    .await;
    assert_eq!(metric(&after, "troop_hub_sessions_running"), 0.0);
    let refused = start_session(hub.addr, "bad name", "pw", T).await;
    assert!(refused.is_err() || refused.unwrap().is_err());
}

#[tokio::test]
async fn hub_yaml_reloads_live_raising_and_lowering_the_cap() {
    let hub = hub_with_token("max_sessions: 1").await;
    let _a = start_session(hub.addr, "a", "pw", T).await.unwrap().expect("a starts");
    let full = start_session(hub.addr, "b", "pw", T).await.unwrap();
    assert_eq!(full.err().as_deref(), Some("Max number of running Troop instances reached"));

    let cap =
        || async { http(hub.http, "GET", "/api/v1/config", Some(TOKEN), None).await.json()["max_sessions"].as_u64() };
    let rewrite = |extra: &str| {
        let text = std::fs::read_to_string(hub.config_path()).unwrap();
        let text = text.replace(&hub.extra_yaml, extra);
        std::fs::write(hub.config_path(), text).unwrap();
    };
    // Raise.
    rewrite("max_sessions: 3");
    eventually("the raised cap", T, async || match cap().await {
        Some(3) => Ok(()),
        other => Err(format!("max_sessions {other:?}")),
    })
    .await;
    let _b = start_session(hub.addr, "b", "pw", T).await.unwrap().expect("b starts under the raised cap");
    // Lower below the running count: nothing ends, new starts are refused.
    std::fs::write(
        hub.config_path(),
        std::fs::read_to_string(hub.config_path()).unwrap().replace("max_sessions: 3", "max_sessions: 1"),
    )
    .unwrap();
    eventually("the lowered cap", T, async || match cap().await {
        Some(1) => Ok(()),
        other => Err(format!("max_sessions {other:?}")),
    })
    .await;
    assert_eq!(hub.containers().len(), 2, "lowering the cap ends nothing");
    let c = start_session(hub.addr, "c", "pw", T).await.unwrap();
    assert_eq!(c.err().as_deref(), Some("Max number of running Troop instances reached"));
    // An invalid file is refused; the running config stays.
    let good = std::fs::read_to_string(hub.config_path()).unwrap();
    std::fs::write(hub.config_path(), format!("{good}\nmax_sessions: [not a number\n")).unwrap();
    eventually("the refusal to be counted", T, async || {
        let m = http(hub.http, "GET", "/metrics", None, None).await.body;
        if metric(&m, "troop_hub_config_reloads_total{outcome=\"invalid\"}") >= 1.0 {
            Ok(())
        } else {
            Err(m)
        }
    })
    .await;
    assert_eq!(cap().await, Some(1));
    // A key that needs a restart keeps its running value, with a warning.
    let moved = good.replace(&format!("listen: 127.0.0.1:{}", hub.addr.port()), "listen: 127.0.0.1:1");
    std::fs::write(hub.config_path(), moved).unwrap();
    eventually("the restart-only warning", T, async || {
        let log = hub.log();
        if log.contains("`listen` changes only with a restart") {
            Ok(())
        } else {
            Err(log)
        }
    })
    .await;
    assert!(admin::request(hub.addr, &json!({"type": "query", "name": "a"}), T).await.unwrap()["result"].is_array());
}

#[tokio::test]
async fn api_sessions_end_when_their_ttl_runs_out() {
    let hub = hub_with_token("").await;
    let r =
        http(hub.http, "POST", "/api/v1/sessions", Some(TOKEN), Some(r#"{"name":"short","password":"pw","ttl":2}"#))
            .await;
    assert_eq!(r.status, 201, "{}", r.body);
    hub.wait_containers(0).await;
    assert_eq!(http(hub.http, "GET", "/api/v1/sessions/short", None, None).await.status, 404);
}

#[tokio::test]
async fn the_status_page_counts_sessions_for_strangers_and_lists_them_for_the_admin() {
    let hub = hub_with_token("").await;
    let o = start_session(hub.addr, "stage-left", "pw", T).await.unwrap().expect("started");
    let url = format!("http://{}/", hub.http);
    let out = std::process::Command::new("chromium")
        .args(common::browser::HEADLESS)
        .args(["--dump-dom", &url])
        .output()
        .expect("Debian's chromium is needed for this test (apt-get install chromium; .ci/run installs it)");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && dom.contains("</html>"), "chromium rendered the page: {dom}");
    assert!(!dom.contains("stage-left"), "a stranger does not see session names: {dom}");
    assert!(dom.contains("not listed here"), "{dom}");
    assert!(dom.contains(&format!("run-client.py --hub NAME@127.0.0.1:{}", hub.addr.port())), "{dom}");
    // The cap leaves 9, but the test hub's range has 5 ports: 4 free slots.
    assert!(dom.contains("1 running of 10; 4 free slots"), "{dom}");
    assert!(!dom.contains("pw"), "no password on the page");
    // The admin sees the sessions with their addresses.
    let page = http(hub.http, "GET", "/", Some(TOKEN), None).await.body;
    assert!(page.contains(&format!("<td>stage-left</td><td>127.0.0.1:{}</td>", o.port)), "{page}");
}

#[tokio::test]
async fn readyz_warns_when_dockers_userland_proxy_hides_source_addresses() {
    let hub = TestHub::new("").start().await;
    let o = start_session(hub.addr, "proxy-check", "pw", T).await.unwrap().expect("started");
    // Ground truth, independent of the hub: is a docker-proxy serving this session's port?
    let pattern = format!("docker-proxy.*-host-port {}( |$)", o.port);
    let proxied = std::process::Command::new("pgrep").args(["-f", &pattern]).output().expect("pgrep").status.success();
    // The hub looks beside the start (off its workers): the warning follows it shortly.
    let warnings = eventually("readyz's warnings to match the proxy", T, async || {
        let ready = http(hub.http, "GET", "/readyz", None, None).await;
        assert_eq!(ready.status, 200);
        let warnings = ready.json()["warnings"].as_array().cloned().unwrap_or_default();
        match warnings.is_empty() != proxied {
            true => Ok(warnings),
            false => Err(format!("warnings {warnings:?}, docker-proxy running: {proxied}")),
        }
    })
    .await;
    if proxied {
        assert!(warnings[0].as_str().unwrap().contains("\"userland-proxy\": false"));
        assert!(hub.log().contains("userland proxy"), "logged too");
    }
}

/// A TCP connection to `to` from `from` (another loopback address is another client).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.bind(SocketAddr::from((from, 0))).expect("bind a loopback address");
    socket.connect(to).await.expect("connect to the HTTP port")
}

/// Reads until the peer closes (or `within` passes): what it sent, and whether it closed.
async fn read_to_close(s: &mut tokio::net::TcpStream, within: Duration) -> (String, bool) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let closed = tokio::time::timeout(within, async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

#[tokio::test]
async fn slow_and_silent_http_clients_are_cut_off_and_one_address_cannot_close_the_port() {
    use tokio::io::AsyncWriteExt;
    let hub = TestHub::new("").start().await;
    let rss = || {
        let pid = hub.proc.as_ref().map(|p| p.id()).unwrap_or(0);
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap_or(0))
            })
            .unwrap_or(0)
    };
    let before = rss();
    let cap = troop_hub::http::MAX_PER_ADDRESS;
    // One address opens as many connections as it may: half never finish their headers
    // (slowloris), half never send a byte.
    let attacker = [127, 0, 0, 7];
    let mut held = Vec::new();
    for i in 0..cap {
        let mut s = connect_from(attacker, hub.http).await;
        if i % 2 == 0 {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.expect("send half a request");
        }
        held.push(s);
    }
    // Its next connections are answered, not reset: 503 with Retry-After.
    let mut over = connect_from(attacker, hub.http).await;
    let (answer, closed) = read_to_close(&mut over, T).await;
    assert!(closed, "an over-cap connection is closed after its answer");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(
        answer.contains("Retry-After: 5") && answer.contains("Too many open connections from your address"),
        "{answer}"
    );
    // Everyone else is served meanwhile, and a flood of requests leaves memory bounded.
    assert_eq!(http(hub.http, "GET", "/healthz", None, None).await.status, 200);
    for _ in 0..300 {
        http(hub.http, "GET", "/api/v1/sessions/nobody", None, None).await;
    }
    let after = rss();
    assert!(after < before + 32 * 1024, "hub RSS grew from {before} to {after} KiB");
    // The slow and the silent ones are all closed once the header timeout passes ...
    let deadline = troop_hub::http::HEADER_TIMEOUT + Duration::from_secs(5);
    for (i, s) in held.iter_mut().enumerate() {
        let (_, closed) = read_to_close(s, deadline).await;
        assert!(closed, "connection {i} ({}) stayed open", if i % 2 == 0 { "slow" } else { "silent" });
    }
    // ... and the address is served again.
    let mut again = connect_from(attacker, hub.http).await;
    again.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.expect("send");
    let (answer, _) = read_to_close(&mut again, T).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
}

#[tokio::test]
async fn each_request_is_logged_once_without_query_strings_or_secrets() {
    let hub = hub_with_token("").await;
    let listed = http(hub.http, "GET", "/api/v1/sessions?token=query-secret", Some(TOKEN), None).await;
    assert_eq!(listed.status, 200);
    let body = r#"{"name":"bad name","password":"pw-secret-123"}"#;
    assert_eq!(http(hub.http, "POST", "/api/v1/sessions", Some(TOKEN), Some(body)).await.status, 400);
    let line = |log: &str, method: &str, status: u16| {
        log.lines()
            .filter(|l| l.contains(&format!("method={method} path=/api/v1/sessions}}")))
            .filter(|l| l.contains(&format!("status={status} ")) && l.contains("latency_ms="))
            .count()
    };
    let log = eventually("the request lines", T, async || {
        let log = hub.log();
        if line(&log, "POST", 400) > 0 {
            Ok(log)
        } else {
            Err(log)
        }
    })
    .await;
    assert_eq!((line(&log, "GET", 200), line(&log, "POST", 400)), (1, 1), "{log}");
    for secret in [TOKEN, "query-secret", "pw-secret-123"] {
        assert!(!log.contains(secret), "{secret} is not logged: {log}");
    }
}

/// An engine socket in front of the real one: closed (each connection dropped at once) until
/// `stall` is set, then each new connection is held silent.
fn stalling_engine(path: std::path::PathBuf, stall: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let listener = tokio::net::UnixListener::bind(&path).expect("bind the engine socket");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            if stall.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    drop(client);
                });
            }
        }
    });
}

/// Reads from `s` until `want` has arrived, or it closes (then false), or `within` passes.
async fn read_until(s: &mut tokio::net::TcpStream, want: &str, within: Duration) -> Option<bool> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if String::from_utf8_lossy(&got).contains(want) {
                return true;
            }
        }
    };
    tokio::time::timeout(within, read).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_sigterm_a_start_in_flight_is_answered_and_idle_connections_close() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::AsyncWriteExt;
    common::session_image();
    let mut hub = TestHub::new("engine_timeout: 4s");
    let sock = hub.dir.path().join("engine.sock");
    let stall = std::sync::Arc::new(AtomicBool::new(false));
    stalling_engine(sock.clone(), stall.clone());
    hub.envs.push(("DOCKER_HOST".into(), format!("unix://{}", sock.display())));
    hub.envs.push(("TROOP_HUB_ADMIN_TOKEN".into(), TOKEN.into()));
    let mut hub = hub.start().await;

    // A keep-alive connection, idle after its first answer.
    let mut idle = tokio::net::TcpStream::connect(hub.http).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert_eq!(read_until(&mut idle, r#"{"status":"ok"}"#, T).await, Some(true), "answered, kept open");

    // A start that waits on the (now silent) engine for its engine_timeout, 4 s.
    stall.store(true, Ordering::SeqCst);
    let addr = hub.http;
    let body = r#"{"name":"late","password":"pw"}"#;
    let pending = tokio::spawn(async move { http(addr, "POST", "/api/v1/sessions", Some(TOKEN), Some(body)).await });
    // The hub has the request (it says so in its log) before it is told to stop.
    hub.eventually("the start to be under way", T, async || match hub.log().contains("start requested") {
        true => Ok(()),
        false => Err("not yet".into()),
    })
    .await;
    let term = Instant::now();
    hub.signal("TERM");

    assert_eq!(read_until(&mut idle, "never", Duration::from_secs(3)).await, Some(false), "the idle one closes");
    eventually("new connections to be refused", T, async || match tokio::net::TcpStream::connect(hub.http).await {
        Err(_) => Ok(()),
        Ok(_) => Err("a connection was accepted".into()),
    })
    .await;
    let answer = pending.await.unwrap();
    assert_eq!(answer.status, 503, "the start in flight got its answer: {}\n{}", answer.body, hub.log());
    assert!(answer.json()["error"].is_string());
    assert!(term.elapsed() > Duration::from_secs(2), "answered {:?} after SIGTERM", term.elapsed());
    stall.store(false, Ordering::SeqCst);
    assert_eq!(hub.wait_exit(Duration::from_secs(60)).await, Some(0), "{}", hub.log());
}
