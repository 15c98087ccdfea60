//! `tocsin up`: every service in this process against a local nats-server (or the one given),
//! data under the data directory, an admin token and a demo user created on the first run.

use crate::cli::{ApiArgs, read_trimmed};
use anyhow::{Context, Result, anyhow, bail};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tocsin::client::ApiClient;
use tocsin::{AllConfig, run_all};
use tocsin_runtime::ConfigSource;
use tocsin_runtime::local_nats::{LocalNats, find_binary};

pub(crate) async fn up(
    config: Option<PathBuf>,
    nats_url: Option<String>,
    allow_loopback: bool,
    demo: Option<(u16, Duration)>,
    args: ApiArgs,
) -> Result<ExitCode> {
    tocsin_runtime::init_tracing();
    let demo_every_secs = demo.map(|(_, e)| e.as_secs()).unwrap_or(10);
    let data = args.data_dir.clone();
    private_dir(&data)?;
    let admin_file = data.join("admin-token");
    let admin = match read_trimmed(&admin_file) {
        Some(t) => t,
        None => {
            let t = format!("adm_{}", random_hex(20));
            write_private(&admin_file, &t)?;
            t
        }
    };
    // the server's Web Push identity: browsers' subscriptions are bound to it, so it is kept
    let vapid_file = data.join("vapid-private-key");
    let vapid = match read_trimmed(&vapid_file) {
        Some(k) => k,
        None => {
            let k = tocsin_delivery::webpush::Vapid::generate();
            write_private(&vapid_file, &k)?;
            k
        }
    };
    // the silo count this data directory's installation was made with (ADR 0032)
    let own_nats = nats_url.is_none();
    let silos_file = data.join("silo-count");
    let silos = recorded_silos(&silos_file, own_nats, &data.join("nats"))?;
    let source = local_source(
        ConfigSource::from_process(config),
        &data,
        admin,
        vapid,
        allow_loopback,
        silos,
    );
    let doc = source.load().map_err(|e| anyhow!(e))?;
    let mut cfg = match AllConfig::load(&doc) {
        Ok(c) => c,
        Err(problems) => {
            eprintln!("tocsin up: invalid configuration:");
            for p in problems {
                eprintln!("  - {p}");
            }
            return Ok(ExitCode::from(tocsin_runtime::EXIT_CONFIG));
        }
    };
    let mut nats = None;
    // the operators' identity, for tocsin up's own look at the bus
    let mut admin_seed = cfg.history.bus.nkey_seed_file.clone();
    if let Some(u) = nats_url {
        cfg.set_nats_url(&u);
    } else {
        let url = url::Url::parse(&cfg.router.bus.url)
            .with_context(|| format!("bus.url {} is not a URL", cfg.router.bus.url))?;
        let port = url.port().unwrap_or(4222);
        let binary = find_binary(&std::env::current_dir()?).map_err(|e| anyhow!(e))?;
        // every service as its own identity, allowed only what it does (ADR 0029)
        let ids = tocsin_bus::credentials::ensure_identities(&data.join("nats-auth"))?;
        let bus = &cfg.router.bus;
        let conf = data.join("nats-auth").join("auth.conf");
        write_private(
            &conf,
            &tocsin_bus::credentials::server_config(
                &ids,
                &tocsin_bus::Subjects::new(&bus.prefix),
                bus.silo_count,
            ),
        )?;
        cfg.set_nats_identities(&ids);
        if let Some(admin) = ids.iter().find(|i| i.role == tocsin_bus::Role::Admin) {
            admin_seed = admin.seed_file.display().to_string();
        }
        let local = LocalNats::start_with_args(
            &binary,
            port,
            &data.join("nats"),
            Some(&data.join("nats.log")),
            &["-c".to_owned(), conf.display().to_string()],
        )
        .map_err(|e| anyhow!(e))?;
        eprintln!(
            "nats-server {} on {} (store {}; users in {} silos)",
            binary.display(),
            local.url(),
            data.join("nats").display(),
            cfg.router.bus.silo_count
        );
        cfg.set_nats_url(&local.url());
        nats = Some(local);
    }
    let shutdown = tocsin_runtime::shutdown_on_signal();
    let mut services = run_all(&cfg, &shutdown);
    let api_url = cfg.api.api.public_url.clone();
    let demo_url = if let Some((demo_port, every)) = demo {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", demo_port)).await;
        match listener {
            Ok(l) => {
                tokio::spawn(tocsin::demo::serve(l, every, shutdown.clone()));
                Some(format!("http://127.0.0.1:{demo_port}/search.rdf"))
            }
            Err(e) => {
                eprintln!("demo feed not started: cannot listen on 127.0.0.1:{demo_port}: {e}");
                None
            }
        }
    } else {
        None
    };
    let client = ApiClient::new(&api_url)?;
    let ready = wait_ready(&client, &cfg, &admin_seed).await;
    if let Err(e) = ready {
        shutdown.cancel();
        bail!("tocsin did not become ready: {e:#}");
    }
    // recorded once the services are running, so the silo streams have accepted the count: a
    // count they refused (a file naming another one) is not written down as the installation's
    if own_nats && !silos_file.exists() {
        write_private(&silos_file, &format!("{}\n", cfg.router.bus.silo_count))?;
    }
    let demo_file = data.join("demo-user.json");
    let demo = match std::fs::read_to_string(&demo_file)
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
    {
        Some(v) => v,
        None => {
            let v = client
                .call(
                    Method::POST,
                    "/v1/users",
                    Some(&cfg.api.api.admin_token),
                    Some(&json!({"name": "demo"})),
                )
                .await?;
            write_private(&demo_file, &serde_json::to_string_pretty(&v)?)?;
            v
        }
    };
    println!();
    println!("tocsin is running. Ctrl-C stops it.");
    println!("  web app:        {api_url}/app/   (sign in with the demo user's token)");
    println!("  API:            {api_url}   (OpenAPI: {api_url}/v1/openapi.json)");
    println!(
        "  demo user:      {} (token in {})",
        demo["user_id"].as_str().unwrap_or("?"),
        demo_file.display()
    );
    println!(
        "  private feed:   {}",
        demo["feed"]["atom"].as_str().unwrap_or("?")
    );
    println!(
        "                  {}",
        demo["feed"]["rss"].as_str().unwrap_or("?")
    );
    if !cfg.ingestor.ingestor.smtp_listen.is_empty() {
        println!(
            "  forward e-mail: {}   (SMTP on {})",
            demo["inbound_address"].as_str().unwrap_or("?"),
            cfg.ingestor.ingestor.smtp_listen
        );
    }
    if let Some(d) = &demo_url {
        println!("  demo feed:      {d}   (a new listing every {demo_every_secs}s)");
        println!();
        println!("  try:  tocsin feed add {d} --match bike --price-max 1000 --poll-secs 10");
        println!("        tocsin history");
    }
    println!();
    let mut failed = false;
    while let Some(done) = services.join_next().await {
        match done {
            Ok((name, Ok(()))) => tracing::info!(service = name, "stopped"),
            Ok((name, Err(e))) => {
                eprintln!("tocsin up: the {name} service failed: {e}");
                failed = true;
                shutdown.cancel();
            }
            Err(e) => {
                eprintln!("tocsin up: a service panicked: {e}");
                failed = true;
                shutdown.cancel();
            }
        }
    }
    if let Some(mut n) = nats {
        n.stop(Duration::from_secs(10));
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Ready when the API answers and history serves every silo.
async fn wait_ready(client: &ApiClient, cfg: &AllConfig, admin_seed: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match client.call(Method::GET, "/readyz", None, None).await {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let admin = tocsin_bus::BusConfig {
        nkey_seed_file: admin_seed.to_owned(),
        ..cfg.history.bus.clone()
    };
    let bus = tocsin_bus::Bus::connect(&admin, "up").await?;
    tocsin_history::wait_serving(&bus, Duration::from_secs(60)).await?;
    bus.drain().await;
    Ok(())
}

fn random_hex(bytes: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

/// `tocsin up`'s data directory, made if missing, readable by its owner only (0700): it holds
/// the admin token, the VAPID key, the bus's store and every user's history.
fn private_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private (0700)", path.display()))?;
    }
    Ok(())
}

/// Write a secret readable by its owner only (0600, also when the file was there before).
pub(crate) fn write_private(path: &Path, content: &str) -> Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {} private (0600)", path.display()))?;
    f.write_all(content.as_bytes())?;
    Ok(())
}

/// Silos for an installation `tocsin up` makes on one machine: its streams, consumers, outboxes
/// and history files are per silo, and a machine's few cores batch better in a few of them
/// (ADR 0032).
const ONE_MACHINE_SILOS: u32 = 4;

/// The default `bus.silo_count` for `tocsin up` on this data directory: the count recorded in
/// `file` when the directory's installation was made; for a new installation on its own bus (no
/// `nats_store` yet), [`ONE_MACHINE_SILOS`]; otherwise none, which leaves the built-in default
/// (16), the count of every installation made before the record was kept or whose bus is
/// elsewhere. The configuration file and the environment outrank it; the silo streams refuse a
/// count they were not made for.
fn recorded_silos(file: &Path, own_nats: bool, nats_store: &Path) -> Result<Option<u32>> {
    match std::fs::read_to_string(file) {
        Ok(s) => match s.trim().parse::<u32>() {
            Ok(n) if (1..=4096).contains(&n) => Ok(Some(n)),
            _ => bail!(
                "{} should hold the number of silos this installation was made with (1-4096), \
                     not {:?}; write the number its silo streams were made for (the services \
                     name it if it is wrong)",
                file.display(),
                s.trim()
            ),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok((own_nats && !nats_store.exists()).then_some(ONE_MACHINE_SILOS))
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
    }
}

/// `tocsin up`'s configuration: local defaults (data under `data`, the admin token kept there,
/// loopback feeds and webhooks allowed because the demo feed is on loopback, SMTP on
/// 127.0.0.1:2525) rank below the file and the environment; `--no-loopback-feeds` on the
/// command line outranks both.
fn local_source(
    mut source: ConfigSource,
    data: &Path,
    admin: String,
    vapid: String,
    allow_loopback: bool,
    silos: Option<u32>,
) -> ConfigSource {
    let defaults = [
        (
            "history.data_dir",
            data.join("history").display().to_string(),
        ),
        (
            "archiver.target",
            data.join("archive").display().to_string(),
        ),
        ("api.admin_token", admin),
        // push: ntfy, UnifiedPush and the web app's Web Push
        ("delivery.channels", "webhook,push".to_owned()),
        ("delivery.web_push.vapid_private_key", vapid),
        (
            "delivery.web_push.subject",
            "mailto:tocsin@localhost".to_owned(),
        ),
        ("ingestor.allow_loopback", "true".to_owned()),
        ("delivery.allow_loopback", "true".to_owned()),
        ("ingestor.smtp_listen", "127.0.0.1:2525".to_owned()),
        // one machine, one operator: a source may be checked as often as every 5 s (the
        // walkthrough's demo feed every 10 s)
        ("ingestor.min_poll_interval_secs", "5".to_owned()),
    ];
    source
        .defaults
        .extend(defaults.map(|(k, v)| (k.to_owned(), v)));
    if let Some(n) = silos {
        source
            .defaults
            .insert("bus.silo_count".to_owned(), n.to_string());
    }
    if !allow_loopback {
        for k in [
            "TOCSIN_INGESTOR__ALLOW_LOOPBACK",
            "TOCSIN_DELIVERY__ALLOW_LOOPBACK",
        ] {
            source.env.insert(k.to_owned(), "false".to_owned());
        }
    }
    source
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn the_data_directory_and_its_secrets_are_its_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        let token = data.join("admin-token");
        std::fs::write(&token, "old").unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
        private_dir(&data).unwrap();
        write_private(&token, "adm_new").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&token), 0o600);
        assert_eq!(std::fs::read_to_string(&token).unwrap(), "adm_new");
    }

    #[test]
    fn a_new_installation_takes_four_silos_and_an_existing_one_keeps_its_count() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("silo-count");
        let store = dir.path().join("nats");
        // a new data directory on its own bus: the one-machine count
        assert_eq!(recorded_silos(&file, true, &store).unwrap(), Some(4));
        // on another bus, or with a bus store made before the record was kept: the built-in
        // default, which is what such an installation was made with
        assert_eq!(recorded_silos(&file, false, &store).unwrap(), None);
        std::fs::create_dir(&store).unwrap();
        assert_eq!(recorded_silos(&file, true, &store).unwrap(), None);
        // the record wins wherever the bus is
        std::fs::write(&file, "16\n").unwrap();
        assert_eq!(recorded_silos(&file, true, &store).unwrap(), Some(16));
        assert_eq!(recorded_silos(&file, false, &store).unwrap(), Some(16));
        // and one that is not a number is named, with what to do
        for bad in ["four", "0", "5000"] {
            std::fs::write(&file, bad).unwrap();
            let e = format!("{:#}", recorded_silos(&file, true, &store).unwrap_err());
            assert!(
                e.contains("silo-count") && e.contains(&format!("{bad:?}")),
                "{e}"
            );
            assert!(
                e.contains("the number its silo streams were made for"),
                "{e}"
            );
        }
    }

    #[test]
    fn the_recorded_count_ranks_below_the_file_and_a_missing_one_leaves_sixteen() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tocsin.toml");
        std::fs::write(&file, "[bus]\nsilo_count = 8\n").unwrap();
        let with = |source: ConfigSource| {
            load(local_source(
                source,
                dir.path(),
                String::new(),
                String::new(),
                true,
                Some(4),
            ))
        };
        assert_eq!(with(ConfigSource::default()).router.bus.silo_count, 4);
        let from_file = ConfigSource {
            file: Some(file),
            ..Default::default()
        };
        assert_eq!(with(from_file).router.bus.silo_count, 8);
        let none = local_source(
            ConfigSource::default(),
            dir.path(),
            String::new(),
            String::new(),
            true,
            None,
        );
        assert_eq!(load(none).router.bus.silo_count, 16);
    }

    fn load(source: ConfigSource) -> AllConfig {
        AllConfig::load(&source.load().unwrap()).unwrap()
    }

    #[test]
    fn the_file_outranks_up_s_local_defaults_and_the_environment_outranks_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let file = dir.path().join("tocsin.toml");
        std::fs::write(
            &file,
            "[ingestor]\nsmtp_listen = \"127.0.0.1:2626\"\nallow_loopback = false\n\
             [delivery]\nallow_loopback = false\n\
             [history]\ndata_dir = \"/srv/tocsin/history\"\n\
             [archiver]\ntarget = \"/srv/tocsin/archive\"\n",
        )
        .unwrap();
        let admin = "adm_0123456789abcdef0123".to_owned();
        let with_file = ConfigSource {
            file: Some(file.clone()),
            ..Default::default()
        };
        let cfg = load(local_source(
            with_file,
            &data,
            admin.clone(),
            String::new(),
            true,
            None,
        ));
        assert_eq!(cfg.ingestor.ingestor.smtp_listen, "127.0.0.1:2626");
        assert!(!cfg.ingestor.ingestor.allow_loopback);
        assert!(!cfg.delivery.delivery.allow_loopback);
        assert_eq!(
            cfg.history.history.data_dir,
            PathBuf::from("/srv/tocsin/history")
        );
        assert_eq!(cfg.archiver.archiver.target, "/srv/tocsin/archive");
        // what the file leaves out keeps the local default
        assert_eq!(cfg.api.api.admin_token, admin);

        let nothing = local_source(
            ConfigSource::default(),
            &data,
            admin.clone(),
            String::new(),
            true,
            None,
        );
        let cfg = load(nothing);
        assert_eq!(cfg.ingestor.ingestor.smtp_listen, "127.0.0.1:2525");
        assert!(cfg.ingestor.ingestor.allow_loopback && cfg.delivery.delivery.allow_loopback);
        assert_eq!(cfg.history.history.data_dir, data.join("history"));

        let env_over_file = ConfigSource {
            file: Some(file),
            env: [(
                "TOCSIN_INGESTOR__SMTP_LISTEN".to_owned(),
                "127.0.0.1:2727".to_owned(),
            )]
            .into(),
            ..Default::default()
        };
        let cfg = load(local_source(
            env_over_file,
            &data,
            admin.clone(),
            String::new(),
            true,
            None,
        ));
        assert_eq!(cfg.ingestor.ingestor.smtp_listen, "127.0.0.1:2727");

        let flag = local_source(
            ConfigSource::default(),
            &data,
            admin,
            String::new(),
            false,
            None,
        );
        let cfg = load(flag);
        assert!(!cfg.ingestor.ingestor.allow_loopback && !cfg.delivery.delivery.allow_loopback);
    }
}
