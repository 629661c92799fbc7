//! A real browser for the page tests: Debian's headless chromium, driven over the Chrome
//! DevTools Protocol (a WebSocket to the browser, one page's session attached with `flatten`).
//! What the page requests and complains about is recorded from the protocol's events as they
//! pass; chromium's whole process group is killed when the [`Page`] is dropped, also when a
//! test panics.
//!
//! Without chromium the tests that use it fail (they never skip): `apt-get install chromium`
//! (scripts/test installs it).

use super::{TestHub, T};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub const NO_CHROMIUM: &str =
    "Debian's chromium is needed for this test (apt-get install chromium; scripts/test installs it)";

/// The size of the browser window: a projector's.
pub const WIDTH: u32 = 1920;
pub const HEIGHT: u32 = 1080;

/// The code the README's screenshots show: (performer index, text typed), in order.
pub const FRIDAY_JAM: [(usize, &str); 12] = [
    (0, "Clock.bpm = 124\nScale.default = Scale.minor\n\n"),
    (1, "d1 >> play(\"x-o-[--]x-o{-[-o]}\", sample=2, amp=0.9)\n"),
    (1, "d2 >> play(\"  * \", dur=1/2, rate=[1, 2], pan=[-0.6, 0.6])\n\n"),
    (2, "b1 >> bass([0, 3, 5, 4], dur=[3/4, 3/4, 1/2], oct=4, amp=0.8)\n"),
    (0, "p1 >> pluck(P[0:8] + (0, 2), dur=1/4, amp=linvar([0.3, 0.8], 8))\n"),
    (2, "p2 >> blip(var([0, 4, 5, 3], 4), dur=PDur(3, 8), oct=6, sus=1/2)\n\n"),
    (0, "k1 >> keys(p1.pitch + 2, delay=0.25, room=0.6, mix=0.3)\n"),
    (1, "s1 >> space(b1.pitch, dur=8, chop=4, lpf=linvar([500, 3000], 16))\n\n"),
    (2, "Group(p1, p2).every(8, \"stutter\", 4)\n"),
    (0, "d1.every(16, \"trim\", 3)\n\n"),
    (1, "# ben: drop on the next cycle\n"),
    (2, "Master().hpf = var([0, 0, 0, 800], 4)"),
];

/// One browser at a time: with two cores, a second chromium would only add noise to the timing
/// checks.
pub static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What a failed wait shows of a page unless the test names its own description: the address,
/// the body's data attributes and the document on show.
pub const BASIC_STATE: &str = r#"(() => ({
  url: location.href,
  readyState: document.readyState,
  data: document.body && Object.assign({}, document.body.dataset),
  doc: document.getElementById("doc") && document.getElementById("doc").textContent,
}))()"#;

/// Headless chromium in its own process group and profile directory; the whole group is
/// killed and the directory removed on drop, also when a test panics.
struct Chromium {
    proc: Child,
    stderr: Arc<Mutex<VecDeque<String>>>,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// The last lines chromium wrote to stderr (for failure messages).
    fn stderr_tail(&self) -> String {
        self.stderr.lock().unwrap().iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let group = format!("-{}", self.proc.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.proc.wait();
        // The browser's helpers (renderer, GPU, zygote) share its group: wait until every one
        // is gone before the profile directory is removed under them.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let alive = Command::new("kill").args(["-0", "--", &group]).stderr(Stdio::null()).status();
            if !alive.is_ok_and(|s| s.success()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One page in chromium.
pub struct Page {
    ws: Socket,
    session: Option<String>,
    next_id: u64,
    /// Every URL the page requested: documents, scripts, fetches, WebSockets.
    pub requests: Vec<String>,
    /// Exceptions, console errors and warnings, and log errors (CSP violations among them).
    pub complaints: Vec<String>,
    /// A JavaScript expression describing the page, shown when a wait fails.
    state_js: &'static str,
    chromium: Chromium,
}

/// How every test runs Debian's chromium: headless, no sandbox (root in a container), nothing
/// fetched from the network behind the page's back.
pub const HEADLESS: [&str; 7] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

impl Page {
    /// Starts chromium and opens a blank page of WIDTH x HEIGHT; `state_js` describes the page
    /// when a wait fails ([`BASIC_STATE`] or the test's own).
    pub async fn launch(state_js: &'static str) -> Page {
        let profile = tempfile::tempdir().expect("a temp dir for chromium's profile");
        let mut cmd = Command::new("chromium");
        cmd.args(HEADLESS)
            .args(["--disable-default-apps", "--disable-extensions", "--hide-scrollbars", "--remote-debugging-port=0"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--window-size={WIDTH},{HEIGHT}"))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut proc = match cmd.spawn() {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{NO_CHROMIUM}"),
            Err(e) => panic!("{NO_CHROMIUM}: starting it failed: {e}"),
        };
        // Read stderr to its end (chromium blocks when the pipe fills): the DevTools address
        // goes to this test, the last lines are kept for failure messages.
        let err = proc.stderr.take().expect("piped stderr");
        let chromium = Chromium { proc, stderr: Arc::default(), _profile: profile };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let lines = chromium.stderr.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(url.trim().to_string());
                    }
                }
                let mut kept = lines.lock().unwrap();
                if kept.len() == 40 {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        });
        let url = match tokio::time::timeout(T, rx).await {
            Ok(Ok(url)) => url,
            Ok(Err(_)) => panic!("chromium exited without listening for DevTools:\n{}", chromium.stderr_tail()),
            Err(_) => panic!("chromium did not listen for DevTools within {T:?}:\n{}", chromium.stderr_tail()),
        };
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap_or_else(|e| panic!("the DevTools socket {url}: {e}"));
        let mut page =
            Page { ws, session: None, next_id: 0, requests: Vec::new(), complaints: Vec::new(), state_js, chromium };
        let target = page
            .call(
                "Target.createTarget",
                json!({"url": "about:blank", "newWindow": true, "width": WIDTH, "height": HEIGHT}),
            )
            .await;
        let attached =
            page.call("Target.attachToTarget", json!({"targetId": target["targetId"], "flatten": true})).await;
        page.session = Some(attached["sessionId"].as_str().expect("a session id").to_string());
        let metrics = json!({"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": false});
        page.call("Emulation.setDeviceMetricsOverride", metrics).await;
        for domain in ["Page", "Network", "Runtime", "Log"] {
            page.call(&format!("{domain}.enable"), json!({})).await;
        }
        page
    }

    /// Sends one command (to the page once attached) and reads up to its answer; the events
    /// read meanwhile are recorded. Fails the test if chromium refuses it.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params).await.unwrap_or_else(|e| panic!("{method} failed: {e}"))
    }

    /// [`Page::call`], chromium's refusal returned (a page navigating away, say); a socket
    /// that fails or a command not answered within T still fails the test.
    pub async fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            command["sessionId"] = json!(s);
        }
        if let Err(e) = self.ws.send(Message::text(command.to_string())).await {
            panic!("sending {method} to chromium: {e}\n{}", self.chromium.stderr_tail());
        }
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let text = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => t,
                Ok(Some(Ok(_))) => continue,
                Ok(other) => panic!("the DevTools socket ended ({other:?}):\n{}", self.chromium.stderr_tail()),
                Err(_) => panic!("chromium did not answer {method} within {T:?}:\n{}", self.chromium.stderr_tail()),
            };
            let m: Value = serde_json::from_str(text.as_str()).expect("DevTools messages are JSON");
            if m["id"] == id {
                return match m.get("error") {
                    Some(e) => Err(e.clone()),
                    None => Ok(m["result"].clone()),
                };
            }
            self.event(&m);
        }
    }

    fn event(&mut self, m: &Value) {
        let p = &m["params"];
        match m["method"].as_str().unwrap_or_default() {
            "Network.requestWillBeSent" => self.requests.push(p["request"]["url"].as_str().unwrap_or("?").into()),
            "Network.webSocketCreated" => self.requests.push(p["url"].as_str().unwrap_or("?").into()),
            "Runtime.exceptionThrown" => {
                let d = &p["exceptionDetails"];
                self.complaints.push(format!("exception: {} {}", d["text"], d["exception"]["description"]));
            }
            "Runtime.consoleAPICalled" if matches!(p["type"].as_str(), Some("error" | "warning" | "assert")) => {
                let args: Vec<String> = p["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| a.get("value").unwrap_or(&a["description"]).to_string())
                    .collect();
                self.complaints.push(format!("console.{}: {}", p["type"].as_str().unwrap_or("?"), args.join(" ")));
            }
            "Log.entryAdded" if matches!(p["entry"]["level"].as_str(), Some("error" | "warning")) => {
                let e = &p["entry"];
                self.complaints.push(format!("log {} {}: {} ({})", e["source"], e["level"], e["text"], e["url"]));
            }
            _ => {}
        }
    }

    /// Navigates and waits until the document has loaded.
    pub async fn open(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({"url": url})).await;
        assert!(r.get("errorText").is_none(), "opening {url}: {r}");
        self.wait_for("document.readyState === 'complete'", Instant::now() + T, "the page loads").await;
    }

    /// The value of a JavaScript expression in the page (awaited if it is a promise).
    pub async fn eval(&mut self, js: &str) -> Value {
        self.try_eval(js).await.unwrap_or_else(|e| panic!("{js} failed: {e}"))
    }

    /// [`Page::eval`], a throw or chromium's refusal (no page to run it in, mid-navigation)
    /// returned as text.
    pub async fn try_eval(&mut self, js: &str) -> Result<Value, String> {
        let params = json!({"expression": js, "returnByValue": true, "awaitPromise": true});
        let r = self.try_call("Runtime.evaluate", params).await.map_err(|e| format!("chromium refused: {e}"))?;
        if let Some(e) = r.get("exceptionDetails") {
            let text = e["exception"]["description"].as_str().map_or_else(|| e["text"].to_string(), str::to_string);
            return Err(format!("threw: {text}"));
        }
        Ok(r["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    /// Polls `condition` every 50 ms until it is true; fails at `deadline` with the page's
    /// state. Returns when it held. A page that cannot answer (navigating from one document
    /// to the next) counts as the condition not holding yet.
    pub async fn wait_for(&mut self, condition: &str, deadline: Instant, what: &str) -> Instant {
        loop {
            let last_error = match self.try_eval(&format!("!!({condition})")).await {
                Ok(Value::Bool(true)) => return Instant::now(),
                Ok(_) => None,
                Err(e) => Some(e),
            };
            if Instant::now() >= deadline {
                let state = self.try_eval(self.state_js).await;
                panic!(
                    "{what}: `{condition}` did not hold in time{}\npage: {state:#?}\nrequests: {:#?}\ncomplaints: {:#?}",
                    last_error.map(|e| format!(" (last try: {e})")).unwrap_or_default(),
                    self.requests,
                    self.complaints
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types text into the focused element as a keyboard would.
    pub async fn type_text(&mut self, text: &str) {
        self.call("Input.insertText", json!({"text": text})).await;
    }

    /// Clicks the middle of the first element matching `selector` with the mouse, as a person
    /// would: the element is scrolled into view and must be the one under the pointer there
    /// (not covered, not hidden, not of zero size).
    pub async fn click(&mut self, selector: &str) {
        let at = self
            .eval(&format!(
                r#"(sel => {{
                  const e = document.querySelector(sel);
                  if (!e) return {{ missing: true }};
                  e.scrollIntoView({{ block: "center", inline: "center" }});
                  const r = e.getBoundingClientRect(), x = r.left + r.width / 2, y = r.top + r.height / 2;
                  const top = document.elementFromPoint(x, y);
                  return {{ x, y, w: r.width, h: r.height, hit: !!top && (top === e || e.contains(top)),
                           top: top && top.outerHTML.slice(0, 120) }};
                }})({})"#,
                js(selector)
            ))
            .await;
        let usable = at["hit"] == json!(true) && at["w"].as_f64() > Some(0.0) && at["h"].as_f64() > Some(0.0);
        assert!(usable, "{selector} cannot be clicked: {at}");
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            let event = json!({"type": kind, "x": at["x"], "y": at["y"], "button": "left", "clickCount": 1});
            self.call("Input.dispatchMouseEvent", event).await;
        }
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&mut self) -> Vec<u8> {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"})).await;
        base64_decode(r["data"].as_str().expect("the screenshot's data"))
    }
}

/// A JavaScript string literal.
pub fn js(s: &str) -> String {
    Value::from(s).to_string()
}

pub fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()) {
        acc = (acc << 6) | u32::from(value(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Asserts that the page fetched only from the hub and complained about nothing.
pub fn assert_clean(page: &Page, hub: &TestHub) {
    let http = format!("http://{}/", hub.http);
    let ws = format!("ws://{}/", hub.http);
    let outside: Vec<&String> = page
        .requests
        .iter()
        .filter(|u| !(u.starts_with(&http) || u.starts_with(&ws) || u.starts_with("data:") || *u == "about:blank"))
        .collect();
    assert!(outside.is_empty(), "requests outside the hub: {outside:?} (all: {:?})", page.requests);
    assert!(page.complaints.is_empty(), "the page complained: {:#?}", page.complaints);
}
