//! The one-command path: `tocsin up` starts its own nats-server and every service, creates
//! the demo user, watches the demo feed through the CLI, and stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tocsin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tocsin"))
}

/// `tocsin up` as a child that is stopped (SIGTERM, then SIGKILL) even when the test fails,
/// so that neither it nor its nats-server outlives the test.
struct Up(std::process::Child);

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.0.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn tocsin_up_runs_the_walkthrough_and_stops_on_sigterm() {
    let data = std::env::temp_dir().join(format!("tocsin-up-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let (nats, api, demo, smtp) = (free_port(), free_port(), free_port(), free_port());
    let api_url = format!("http://127.0.0.1:{api}");
    let mut up = Up(tocsin()
        .args([
            "up",
            "--demo-feed-port",
            &demo.to_string(),
            "--demo-feed-every-secs",
            "1",
            "--data-dir",
        ])
        .arg(&data)
        .env("TOCSIN_BUS__URL", format!("nats://127.0.0.1:{nats}"))
        .env("TOCSIN_API__LISTEN", format!("127.0.0.1:{api}"))
        .env("TOCSIN_API__PUBLIC_URL", &api_url)
        .env("TOCSIN_INGESTOR__OPS_LISTEN", "")
        .env("TOCSIN_INGESTOR__SMTP_LISTEN", format!("127.0.0.1:{smtp}"))
        .env("TOCSIN_ROUTER__OPS_LISTEN", "")
        .env("TOCSIN_HISTORY__OPS_LISTEN", "")
        .env("TOCSIN_DELIVERY__OPS_LISTEN", "")
        .env("TOCSIN_INGESTOR__POLL_INTERVAL_SECS", "1")
        .env("TOCSIN_INGESTOR__HOST_MIN_INTERVAL_MS", "0")
        .env("TOCSIN_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn tocsin up"));
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
    let feed = format!("http://127.0.0.1:{demo}/search.rdf");
    cli(&[
        "feed",
        "add",
        &feed,
        "--match",
        "bike",
        "--price-max",
        "1000",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let history = loop {
        let h = cli(&["history"]);
        if h.contains("road bike") {
            break h;
        }
        assert!(Instant::now() < deadline, "no match reached history: {h}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(!history.contains("sofa"), "{history}");
    assert!(!history.contains("$1,250"), "{history}");

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
    let _ = std::fs::remove_dir_all(&data);
}
