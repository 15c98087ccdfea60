//! The one-command path: `tocsin up` starts its own nats-server and every service, creates
//! the demo user, watches the demo feed through the CLI, delivers a match to a webhook, reports
//! it in `tocsin analytics`, and stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tocsin_testkit::{Graceful, free_port};

fn tocsin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tocsin"))
}

/// A webhook receiver: answers every request 200 and counts the POSTs.
fn webhook() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let posts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = posts.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().map_while(Result::ok) {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // headers, then Content-Length bytes of body
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .and_then(|v| v.trim().parse::<usize>().ok())
                        })
                        .unwrap_or(0);
                    if req.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            if req.starts_with(b"POST") {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}");
        }
    });
    (url, posts)
}

#[test]
fn tocsin_up_runs_the_walkthrough_and_stops_on_sigterm() {
    let data = std::env::temp_dir().join(format!("tocsin-up-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let (nats, api, demo, smtp) = (free_port(), free_port(), free_port(), free_port());
    let api_url = format!("http://127.0.0.1:{api}");
    let mut up = Graceful(
        tocsin()
            .args(["up", "--demo-feed-port", &demo.to_string(), "--data-dir"])
            .arg(&data)
            .env("TOCSIN_BUS__URL", format!("nats://127.0.0.1:{nats}"))
            .env("TOCSIN_API__LISTEN", format!("127.0.0.1:{api}"))
            .env("TOCSIN_API__PUBLIC_URL", &api_url)
            .env("TOCSIN_INGESTOR__OPS_LISTEN", "")
            .env("TOCSIN_INGESTOR__SMTP_LISTEN", format!("127.0.0.1:{smtp}"))
            .env("TOCSIN_ROUTER__OPS_LISTEN", "")
            .env("TOCSIN_HISTORY__OPS_LISTEN", "")
            .env("TOCSIN_DELIVERY__OPS_LISTEN", "")
            .env("TOCSIN_ARCHIVER__OPS_LISTEN", "")
            .env("TOCSIN_ARCHIVER__ROLL_MAX_AGE_SECS", "1")
            .env("TOCSIN_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tocsin up"),
    );
    let stdout = up.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut banner = Vec::new();
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("tocsin up did not print its banner in time");
        banner.push(line.clone());
        if line.contains("demo feed:") {
            break;
        }
    }
    let text = banner.join("\n");
    assert!(text.contains(&api_url), "{text}");
    assert!(text.contains("private feed:"), "{text}");
    assert!(text.contains("forward e-mail:"), "{text}");

    let cli = |args: &[&str]| {
        let out = tocsin()
            .args(args)
            .arg("--api")
            .arg(&api_url)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .expect("run the cli");
        assert!(
            out.status.success(),
            "tocsin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (hook, posts) = webhook();
    cli(&["dest", "webhook", &hook]);
    let feed = format!("http://127.0.0.1:{demo}/search.rdf");
    // the README's walkthrough, with its timings: the demo feed gains a listing every 10 s,
    // the source asks to be checked every 10 s, and `sleep 30` is enough to see a new bike
    let watching = cli(&[
        "feed",
        "add",
        &feed,
        "--match",
        "bike",
        "--price-max",
        "1000",
        "--label",
        "bikes",
        "--poll-secs",
        "10",
    ]);
    let added = Instant::now();
    let source = watching
        .split_whitespace()
        .last()
        .expect("the new source's id")
        .to_owned();
    // the README says 30 s; a busy CI machine gets 15 s more before this fails
    let deadline = added + Duration::from_secs(45);
    let history = loop {
        let h = cli(&["history"]);
        if h.contains("bike") {
            break h;
        }
        assert!(Instant::now() < deadline, "no match reached history: {h}");
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!(
        "the first bike reached history {:?} after `tocsin feed add`",
        added.elapsed()
    );
    assert!(!history.contains("sofa"), "{history}");
    // each notification says which policy it followed and why
    assert!(
        history.contains("policy feeds (what feeds follow)"),
        "{history}"
    );
    assert!(!history.contains("$1,250"), "{history}");
    // delivered to the webhook, and archived: analytics reports it
    let deadline = Instant::now() + Duration::from_secs(60);
    while posts.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "nothing was delivered to the webhook"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // the source's settings, from the CLI
    let set = cli(&[
        "feed",
        "set",
        &source,
        "--priority",
        "2",
        "--mute-minutes",
        "60",
    ]);
    assert!(
        set.contains(&format!("source {source}: priority 2, muted until ")),
        "{set}"
    );
    // the bus takes only the services' identities (ADR 0029): seeds kept private, and a
    // client without credentials refused by the server
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for role in [
            "api", "router", "history", "delivery", "ingestor", "archiver", "admin",
        ] {
            let seed = data.join("nats-auth").join(format!("{role}.nk"));
            let mode = std::fs::metadata(&seed)
                .expect("a seed per service")
                .permissions();
            assert_eq!(mode.mode() & 0o777, 0o600, "{}", seed.display());
        }
    }
    {
        use std::io::{BufRead, Write};
        let conn = std::net::TcpStream::connect(("127.0.0.1", nats)).expect("nats port");
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut lines = std::io::BufReader::new(conn.try_clone().unwrap()).lines();
        let info = lines.next().expect("INFO").expect("INFO line");
        assert!(info.contains("\"auth_required\":true"), "{info}");
        (&conn)
            .write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n")
            .unwrap();
        let answer = lines.next().expect("an answer").expect("an answer line");
        assert!(answer.contains("Authorization Violation"), "{answer}");
    }
    // issue 17's commands: a named policy the source follows, a silence, a heartbeat, a hook,
    // e-mail rules
    let file = |name: &str, json: &str| {
        let path = data.join(name);
        std::fs::write(&path, json).expect("write a file");
        path.to_string_lossy().into_owned()
    };
    let pager = file("pager.json", r#"{"steps": [{"channels": ["webhook"]}]}"#);
    cli(&["policy", "--name", "pager", "--set", &pager]);
    let set = cli(&[
        "feed",
        "set",
        &source,
        "--policy",
        "pager",
        "--group-minutes",
        "5",
    ]);
    assert!(set.contains("follows policy pager"), "{set}");
    let policies = cli(&["policy"]);
    assert!(policies.contains(r#""name": "pager""#), "{policies}");
    let silenced = cli(&["silence", "add", "--source", "bikes", "--for", "2h"]);
    let silence = silenced.split(':').next().unwrap_or_default().to_owned();
    assert!(silenced.contains("silenced until"), "{silenced}");
    assert!(cli(&["silence", "list"]).contains("source bikes"));
    assert!(cli(&["silence", "rm", &silence]).contains("removed"));
    let heartbeat = cli(&["heartbeat", "nightly backup", "--every", "1h"]);
    assert!(heartbeat.contains("/v1/heartbeats/"), "{heartbeat}");
    let mapping = file("mapping.json", r#"{"title": "{{ /name }}"}"#);
    let hook = cli(&["hook", "--format", "json", "--mapping", &mapping]);
    assert!(hook.contains("/v1/hooks/"), "{hook}");
    let rules = file(
        "rules.json",
        r#"{"rules": [{"subject": "^\\[RESOLVED\\] (?P<key>.+)$", "resolve": true}]}"#,
    );
    assert!(cli(&["mail-rules", "--set", &rules]).contains("RESOLVED"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = tocsin()
            .args(["analytics", "--format", "csv", "--data-dir"])
            .arg(&data)
            .output()
            .expect("run tocsin analytics");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let csv = String::from_utf8_lossy(&out.stdout).into_owned();
        // day,channel,ingested,matched,filtered_out,routed,attempts,delivered,…
        let delivered = csv
            .lines()
            .filter(|l| l.split(',').nth(1) == Some("webhook"))
            .filter_map(|l| l.split(',').nth(7)?.parse::<u64>().ok())
            .sum::<u64>();
        if delivered > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "analytics never showed a delivery: {csv}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    Command::new("kill")
        .arg("-TERM")
        .arg(up.0.id().to_string())
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = up.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "tocsin up did not stop within 60s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "tocsin up exited with {status}");
    // a new installation on one machine took 4 silos, recorded for its later starts (ADR 0032)
    let recorded = std::fs::read_to_string(data.join("silo-count")).expect("the recorded count");
    assert_eq!(recorded, "4\n");
    let mut stores: Vec<String> = std::fs::read_dir(data.join("history"))
        .expect("history's data directory")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".db"))
        .collect();
    stores.sort();
    assert_eq!(stores, ["silo-0.db", "silo-1.db", "silo-2.db", "silo-3.db"]);
    let _ = std::fs::remove_dir_all(&data);
}
