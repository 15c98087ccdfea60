//! A whole deployment from the image (issue 21, item 2): nats-server in a container of its own
//! (JetStream on a volume) and each service in a container of the image built from this run's
//! binary, with its own NATS identity, wired as deploy/compose.yaml wires them — on the host's
//! loopback (`--network host`, free ports), read-only, as user 10001, health-checked through
//! `/readyz`. Notifications published through the API and a feed served from the host reach a
//! webhook on the host; the router's container is killed with SIGKILL mid-flow and started
//! again; every notification arrives once.

use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::process::{Command, Output};
use std::time::Duration;
use tocsin_testkit::{free_port, wait_for, workspace_root};
use tocsin_tests::{FeedServer, Recorder, rdf, tocsin_binary};

const ADMIN: &str = "admin-token-for-the-deployment-test";
const SERVICES: [&str; 6] = [
    "ingestor", "router", "history", "delivery", "api", "archiver",
];

fn podman(args: &[&str]) -> Output {
    tocsin_testkit::podman()
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run podman (make test-tools installs it): {e}"))
}

fn ok(out: Output, what: &str) -> anyhow::Result<String> {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(out.status.success(), "{what}: {text}");
    Ok(text)
}

/// Everything the test made in podman, removed when it ends, failed or not.
#[derive(Default)]
struct Made {
    containers: Vec<String>,
    volumes: Vec<String>,
    images: Vec<String>,
}

impl Drop for Made {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = podman(&["rm", "--force", "--time", "0", c]);
        }
        for v in &self.volumes {
            let _ = podman(&["volume", "rm", "--force", v]);
        }
        for i in &self.images {
            let _ = podman(&["rmi", "--force", i]);
        }
    }
}

/// nats-server's own image: its static binary alone (no registry to pull `nats` from).
fn nats_image(made: &mut Made, tag: &str) -> anyhow::Result<()> {
    let server = tocsin_runtime::local_nats::find_binary(&workspace_root())
        .map_err(|e| anyhow::anyhow!(e))?;
    let buildah = |args: &[&str]| -> anyhow::Result<String> {
        ok(
            Command::new("buildah").args(args).output()?,
            &format!("buildah {args:?}"),
        )
        .map(|s| s.trim().to_owned())
    };
    let ctr = buildah(&["from", "scratch"])?;
    buildah(&["copy", &ctr, &server.display().to_string(), "/nats-server"])?;
    buildah(&["config", "--entrypoint", "[\"/nats-server\"]", &ctr])?;
    buildah(&["commit", "--quiet", &ctr, tag])?;
    buildah(&["rm", &ctr])?;
    made.images.push(tag.to_owned());
    Ok(())
}

struct Api {
    http: reqwest::Client,
    url: String,
}

impl Api {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_from_the_image_survives_a_killed_container() -> anyhow::Result<()> {
    tocsin_runtime::install_crypto();
    let id = std::process::id();
    let mut made = Made::default();
    let tag = format!("localhost/tocsin:deploy-{id}");
    let built = Command::new("bash")
        .arg(workspace_root().join("deploy/image/build.sh"))
        .arg(tocsin_binary()?)
        .arg(&tag)
        .output()?;
    ok(
        built,
        "the image did not build (make test-tools installs buildah, podman, runc, mmdebstrap)",
    )?;
    made.images.push(tag.clone());
    let nats_tag = format!("localhost/tocsin-test-nats:{id}");
    nats_image(&mut made, &nats_tag)?;

    // the configuration every container reads, and each service's identity
    let dir = tempfile::tempdir()?;
    let nats_port = free_port();
    let api_port = free_port();
    let ops: HashMap<&str, u16> = SERVICES.iter().map(|s| (*s, free_port())).collect();
    let api_url = format!("http://127.0.0.1:{api_port}");
    let config = format!(
        r#"[bus]
url = "nats://127.0.0.1:{nats_port}"
prefix = "deploy{id}"
silo_count = 4
[ingestor]
ops_listen = "127.0.0.1:{ingestor}"
smtp_listen = ""
allow_loopback = true
poll_interval_secs = 1
min_poll_interval_secs = 1
jitter = 0.0
[router]
ops_listen = "127.0.0.1:{router}"
ack_link_base_url = "{api_url}"
[history]
ops_listen = "127.0.0.1:{history}"
data_dir = "/var/lib/tocsin/history"
[delivery]
ops_listen = "127.0.0.1:{delivery}"
allow_loopback = true
channels = ["webhook"]
[api]
listen = "127.0.0.1:{api_port}"
ops_listen = "127.0.0.1:{api}"
public_url = "{api_url}"
[archiver]
ops_listen = "127.0.0.1:{archiver}"
target = "/var/lib/tocsin/archive"
"#,
        ingestor = ops["ingestor"],
        router = ops["router"],
        history = ops["history"],
        delivery = ops["delivery"],
        api = ops["api"],
        archiver = ops["archiver"],
    );
    let config_file = dir.path().join("tocsin.toml");
    std::fs::write(&config_file, &config)?;
    let auth = dir.path().join("nats-auth");
    ok(
        Command::new(tocsin_binary()?)
            .args(["nats-auth", "--dir"])
            .arg(&auth)
            .arg("--config")
            .arg(&config_file)
            .output()?,
        "tocsin nats-auth",
    )?;
    for svc in SERVICES {
        // the image's user reads its own seed (0600)
        std::os::unix::fs::chown(auth.join(format!("{svc}.nk")), Some(10001), Some(10001))?;
    }

    // nats-server, JetStream on a volume
    let nats_name = format!("tocsin-deploy-{id}-nats");
    let nats_volume = format!("tocsin-deploy-{id}-nats");
    made.volumes.push(nats_volume.clone());
    made.containers.push(nats_name.clone());
    ok(
        podman(&[
            "run",
            "--detach",
            "--network",
            "host",
            "--name",
            &nats_name,
            "--volume",
            &format!("{nats_volume}:/data"),
            "--volume",
            &format!("{}:/auth/auth.conf:ro", auth.join("auth.conf").display()),
            &nats_tag,
            "-js",
            "-sd",
            "/data",
            "-a",
            "127.0.0.1",
            "-p",
            &nats_port.to_string(),
            "-c",
            "/auth/auth.conf",
        ]),
        "nats-server's container",
    )?;

    // every service in its own container of the image, as compose runs them
    let start = |svc: &str| -> anyhow::Result<()> {
        let name = format!("tocsin-deploy-{id}-{svc}");
        let probe = format!(
            "[\"/usr/local/bin/tocsin\",\"probe\",\"http://127.0.0.1:{}/readyz\"]",
            ops[svc]
        );
        let mut args: Vec<String> = [
            "run",
            "--detach",
            "--network",
            "host",
            "--read-only",
            "--name",
            &name,
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--health-cmd",
            &probe,
            "--health-interval",
            "disable",
            "--env",
            "TOCSIN_BUS__NKEY_SEED_FILE=/run/tocsin/nats.nk",
            "--env",
            &format!("TOCSIN_API__ADMIN_TOKEN={ADMIN}"),
            "--env",
            "TOCSIN_LOG=warn",
            "--volume",
            &format!("{}:/etc/tocsin/tocsin.toml:ro", config_file.display()),
            "--volume",
            &format!(
                "{}:/run/tocsin/nats.nk:ro",
                auth.join(format!("{svc}.nk")).display()
            ),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if matches!(svc, "history" | "archiver") {
            let volume = format!("tocsin-deploy-{id}-{svc}");
            args.extend(["--volume".to_owned(), format!("{volume}:/var/lib/tocsin")]);
        }
        args.extend([
            tag.clone(),
            svc.to_owned(),
            "--config".into(),
            "/etc/tocsin/tocsin.toml".into(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(podman(&args), &format!("the {svc} container"))?;
        Ok(())
    };
    for svc in SERVICES {
        made.containers.push(format!("tocsin-deploy-{id}-{svc}"));
        if matches!(svc, "history" | "archiver") {
            made.volumes.push(format!("tocsin-deploy-{id}-{svc}"));
        }
        start(svc)?;
    }
    let healthy = |svc: &'static str| {
        let name = format!("tocsin-deploy-{id}-{svc}");
        async move {
            wait_for(
                Duration::from_secs(60),
                &format!("{svc}'s container healthy"),
                || {
                    let name = name.clone();
                    async move {
                        podman(&["healthcheck", "run", &name])
                            .status
                            .success()
                            .then_some(())
                    }
                },
            )
            .await
        }
    };
    for svc in SERVICES {
        if let Err(e) = healthy(svc).await {
            let logs = podman(&["logs", &format!("tocsin-deploy-{id}-{svc}")]);
            anyhow::bail!("{e}: {}", String::from_utf8_lossy(&logs.stderr));
        }
    }

    // a user with a webhook on the host, a feed on the host, and notifications published
    let api = Api {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()?,
        url: api_url.clone(),
    };
    let (status, user) = api
        .call(
            Method::POST,
            "/v1/users",
            ADMIN,
            Some(json!({"name": "dana"})),
        )
        .await?;
    anyhow::ensure!(status == 201, "POST /v1/users: {status} {user}");
    let token = user["token"].as_str().unwrap_or_default().to_owned();
    let hooks = Recorder::start().await?;
    let (status, v) = api
        .call(
            Method::POST,
            "/v1/destinations",
            &token,
            Some(json!({"channel": "webhook", "address": hooks.url("/hook")})),
        )
        .await?;
    anyhow::ensure!(status == 201, "POST /v1/destinations: {status} {v}");
    let (status, v) = api
        .call(
            Method::PUT,
            "/v1/policy",
            &token,
            Some(json!({"steps": [{"channels": ["webhook"]}]})),
        )
        .await?;
    anyhow::ensure!(status == 200, "PUT /v1/policy: {status} {v}");
    let feeds = FeedServer::start().await?;
    feeds.set("listings.rdf", rdf(&[]), "application/rss+xml");
    let (status, v) = api
        .call(
            Method::POST,
            "/v1/sources",
            &token,
            Some(json!({"url": feeds.url("listings.rdf"), "label": "bikes"})),
        )
        .await?;
    anyhow::ensure!(status == 201, "POST /v1/sources: {status} {v}");
    // its first poll finds nothing: the listings added later are new
    wait_for(Duration::from_secs(30), "the feed's first poll", || async {
        (!feeds.requests("listings.rdf").is_empty()).then_some(())
    })
    .await?;

    let mut published = Vec::new();
    let router = format!("tocsin-deploy-{id}-router");
    for i in 0..40 {
        if i == 20 {
            // the router dies mid-flow and comes back on the same bus
            ok(
                podman(&["kill", "--signal", "KILL", &router]),
                "kill -9 the router",
            )?;
            ok(podman(&["start", &router]), "start the router again")?;
        }
        let (status, v) = api
            .call(
                Method::POST,
                "/v1/publish",
                &token,
                Some(json!({"title": format!("published {i}")})),
            )
            .await?;
        anyhow::ensure!(status == 202, "POST /v1/publish: {status} {v}");
        published.push(v["id"].as_str().unwrap_or_default().to_owned());
        if i == 10 {
            let items: Vec<(String, String)> = (0..5)
                .map(|k| (format!("l{k}"), format!("listing {k}")))
                .collect();
            let items: Vec<(&str, &str, &str)> = items
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str(), ""))
                .collect();
            feeds.set("listings.rdf", rdf(&items), "application/rss+xml");
        }
    }
    healthy("router").await?;

    // every notification at the webhook once: the 40 published and the feed's 5 listings
    let by_id = || {
        let mut n: HashMap<String, usize> = HashMap::new();
        for r in hooks.requests("/hook") {
            // the job's id: `<notification>:<destination>`
            if let Some(job) = r.headers.get("x-tocsin-id").and_then(|v| v.to_str().ok()) {
                let notification = job.split(':').next().unwrap_or(job);
                *n.entry(notification.to_owned()).or_default() += 1;
            }
        }
        n
    };
    wait_for(
        Duration::from_secs(60),
        "45 notifications at the webhook",
        || async { (by_id().len() >= 45).then_some(()) },
    )
    .await?;
    let seen = by_id();
    for n in &published {
        assert_eq!(seen.get(n), Some(&1), "notification {n}: {seen:?}");
    }
    assert_eq!(seen.len(), 45, "{seen:?}");
    assert!(seen.values().all(|c| *c == 1), "delivered twice: {seen:?}");
    Ok(())
}
