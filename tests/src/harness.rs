//! The end-to-end harness: a real nats-server on a free loopback port, every service
//! running in this process — or, with [`Settings::processes`], each as its own OS process
//! (`tocsin-<service>` with a configuration file) — each of which can be killed and restarted
//! on its own, the API on a port-0 listener, and a feed server whose documents the test
//! changes.

use anyhow::{Result, anyhow};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tocsin_bus::BusConfig;
use tocsin_testkit::{NatsCluster, NatsServer};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::feeds::FeedServer;

pub const ADMIN: &str = "admin-token-for-tests-0123456789";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Svc {
    Ingestor,
    Router,
    History,
    Delivery,
    /// Router replica `i` of [`Harness::router_replicas`], owning silos by the chart's rule.
    RouterReplica(u32),
    /// History replica `i` of [`Harness::history_replicas`].
    HistoryReplica(u32),
    /// Not started with the others: a test that reads the archive starts it.
    Archiver,
}

/// What a test may change before the services start.
pub struct Settings {
    pub bus: BusConfig,
    pub ingestor: tocsin_ingestor::IngestorConfig,
    pub delivery: tocsin_delivery::DeliveryConfig,
    /// `listen`, `public_url` and `admin_token` are the harness's own.
    pub api: tocsin_api::ApiConfig,
    /// Nodes of a JetStream cluster to run instead of one nats-server (0: one server).
    pub cluster_nodes: usize,
    /// Router and history replicas owning silos by ordinal (0: one instance owning all).
    pub router_replicas: u32,
    pub history_replicas: u32,
    /// Run the ingestor, router, history, delivery and archiver as their own processes (the
    /// binaries of this build, built on first use), so that a kill is SIGKILL of a process.
    pub processes: bool,
    /// Run nats-server with tocsin's authorization block, every service with its own NKey
    /// identity (ADR 0029); `bus.nkey_seed_file` is then the operators' (`admin`) identity.
    pub nats_auth: bool,
    /// Serve NATS over TLS only, with a certificate made for this run (`bus.tls_ca_file`).
    pub nats_tls: bool,
}

/// A started service: a task of this process, or a process of its own.
enum Running {
    Task(CancellationToken, JoinHandle<()>),
    Process(std::process::Child),
}

pub struct Harness {
    /// The one nats-server, unless the test asked for a cluster.
    pub nats: Option<NatsServer>,
    pub cluster: Option<NatsCluster>,
    /// The operators' connection (with the `admin` identity when `nats_auth`).
    pub bus: BusConfig,
    /// Each service's NKey identity, when the server checks them.
    pub identities: Vec<tocsin_bus::credentials::Identity>,
    pub data: tempfile::TempDir,
    pub api_url: String,
    /// Where the API's /readyz and /metrics answer: `api_url`, or `api.ops_listen`'s address.
    pub api_ops_url: String,
    pub feeds: FeedServer,
    pub http: reqwest::Client,
    pub ingestor: tocsin_ingestor::IngestorConfig,
    pub delivery: tocsin_delivery::DeliveryConfig,
    /// The replica count router and history replicas started from now on are told.
    pub router_replicas: u32,
    pub history_replicas: u32,
    /// The archiver's settings (its target is `<data>/archive` unless changed).
    pub archiver: tocsin_archiver::ArchiverConfig,
    running: HashMap<Svc, Running>,
    api: (CancellationToken, JoinHandle<()>),
    processes: bool,
}

impl Drop for Harness {
    /// A failed test leaves no service process behind.
    fn drop(&mut self) {
        for (_, r) in self.running.drain() {
            if let Running::Process(mut c) = r {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn task(
    token: CancellationToken,
    f: impl std::future::Future<Output = ()> + Send + 'static,
) -> Running {
    Running::Task(token, tokio::spawn(f))
}

/// Build the service binaries of this test's profile once per test process (`cargo test`
/// builds only the test harnesses).
fn build_service_binaries() -> Result<()> {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let mut cmd = std::process::Command::new(env!("CARGO"));
            cmd.args(["build", "-q"]);
            // and the multi-call `tocsin` the image is built from (tests/tests/deployment.rs):
            // one selection for every test, so cargo resolves features once
            cmd.args(["-p", "tocsin"]);
            for p in ["ingestor", "router", "history", "delivery", "archiver"] {
                cmd.args(["-p", &format!("tocsin-{p}")]);
            }
            match cmd.status() {
                Ok(s) if s.success() => Ok(()),
                Ok(s) => Err(format!("cargo build of the service binaries failed: {s}")),
                Err(e) => Err(format!("cannot run cargo: {e}")),
            }
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// The `tocsin` binary of this build, built first if need be (the image's one binary).
pub fn tocsin_binary() -> Result<std::path::PathBuf> {
    build_service_binaries()?;
    built("tocsin").ok_or_else(|| anyhow!("no tocsin binary beside this test"))
}

/// The binary `name` of this build: beside the test executable's directory (`target/<profile>`).
fn built(name: &str) -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `tocsin-<bin>` of this build.
fn service_binary(bin: &str) -> std::path::PathBuf {
    built(&format!("tocsin-{bin}")).unwrap_or_else(|| panic!("no tocsin-{bin} beside this test"))
}

impl Harness {
    pub async fn start(name: &str) -> Result<Harness> {
        Self::start_with(name, |_| {}).await
    }

    /// Start everything; `tweak` adjusts the ingestor's settings first.
    /// Start everything; `tweak` adjusts the settings first.
    pub async fn start_with(name: &str, tweak: impl FnOnce(&mut Settings)) -> Result<Harness> {
        tocsin_runtime::install_crypto();
        if std::env::var_os("TOCSIN_TEST_LOG").is_some() {
            // TOCSIN_TEST_LOG=1 RUST_LOG=tocsin_delivery=debug cargo test …: the services' logs
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(tocsin_runtime::init_tracing);
        }
        let bus = BusConfig {
            prefix: tocsin_testkit::unique_prefix(name),
            silo_count: 4,
            ack_wait_secs: 2,
            max_deliver: 4,
            ..Default::default()
        };
        let ingestor = tocsin_ingestor::IngestorConfig {
            ops_listen: String::new(),
            poll_interval_secs: 1,
            jitter: 0.0,
            host_min_interval_ms: 0,
            per_host_concurrency: 4,
            allow_loopback: true,
            fetch_timeout_secs: 5,
            max_backoff_secs: 2,
            ..Default::default()
        };
        let delivery = tocsin_delivery::DeliveryConfig {
            ops_listen: String::new(),
            allow_loopback: true,
            webhook_timeout_secs: 5,
            shutdown_grace_secs: 5,
            ..Default::default()
        };
        let mut settings = Settings {
            bus,
            ingestor,
            delivery,
            api: tocsin_api::ApiConfig {
                command_timeout_secs: 15,
                query_timeout_secs: 10,
                // tests poll the API fast from one address; the limits have their own test
                rate_per_ip_per_minute: 0,
                rate_per_user_per_minute: 0,
                // the tests' numbers are North American (+1555…)
                sms_allowed_prefixes: vec!["+1".into()],
                // destinations are confirmed by their codes in tests/tests/trust.rs; the
                // other tests' destinations get notifications at once
                verify_destinations: false,
                ..Default::default()
            },
            cluster_nodes: 0,
            router_replicas: 0,
            history_replicas: 0,
            processes: false,
            nats_auth: true,
            nats_tls: false,
        };
        tweak(&mut settings);
        let Settings {
            mut bus,
            ingestor,
            delivery,
            api,
            cluster_nodes,
            router_replicas,
            history_replicas,
            processes,
            nats_auth,
            nats_tls,
        } = settings;
        if processes {
            build_service_binaries()?;
        }
        let mut data = tempfile::tempdir()?;
        if std::env::var_os("TOCSIN_TEST_KEEP").is_some() {
            // TOCSIN_TEST_KEEP=1: the run's directory (configurations, the service processes'
            // logs, nats-server's log and store) stays for a look afterwards
            data.disable_cleanup(true);
            eprintln!("{name}: kept in {}", data.path().display());
        }
        let mut server_conf = String::new();
        let identities = if nats_auth {
            let ids = tocsin_bus::credentials::ensure_identities(&data.path().join("nats-auth"))?;
            server_conf.push_str(&tocsin_bus::credentials::server_config(
                &ids,
                &tocsin_bus::Subjects::new(&bus.prefix),
                bus.silo_count,
            ));
            // what the server refuses is logged, and `shutdown` looks
            server_conf.push_str(&format!(
                "log_file: {:?}\n",
                data.path().join("nats.log").display().to_string()
            ));
            ids
        } else {
            Vec::new()
        };
        if nats_tls {
            let (crt, key) = crate::test_certificate(data.path())?;
            server_conf.push_str(&format!(
                "tls: {{cert_file: {:?}, key_file: {:?}}}\n",
                crt.display().to_string(),
                key.display().to_string()
            ));
            bus.tls_ca_file = crt.display().to_string();
        }
        let auth_conf = (!server_conf.is_empty())
            .then(|| -> Result<std::path::PathBuf> {
                let conf = data.path().join("nats.conf");
                std::fs::write(&conf, &server_conf)?;
                Ok(conf)
            })
            .transpose()?;
        let seed_of = |role: tocsin_bus::Role| -> String {
            identities
                .iter()
                .find(|i| i.role == role)
                .map(|i| i.seed_file.display().to_string())
                .unwrap_or_default()
        };
        bus.nkey_seed_file = seed_of(tocsin_bus::Role::Admin);
        let (nats, cluster) = if cluster_nodes > 0 {
            let c = NatsCluster::start_with_config(cluster_nodes, auth_conf.as_deref())?;
            bus.url = c.url();
            (None, Some(c))
        } else {
            let n = NatsServer::start_with_config(auth_conf.as_deref())?;
            bus.url = n.url();
            (Some(n), None)
        };
        let feeds = FeedServer::start().await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let api_url = format!("http://{}", listener.local_addr()?);
        let api_ops_url = match api.ops_listen.as_str() {
            "" => api_url.clone(),
            ops => format!("http://{ops}"),
        };
        let api_cfg = tocsin_api::Config {
            bus: BusConfig {
                nkey_seed_file: seed_of(tocsin_bus::Role::Api),
                ..bus.clone()
            },
            api: tocsin_api::ApiConfig {
                listen: String::new(),
                public_url: api_url.clone(),
                admin_token: ADMIN.into(),
                ..api
            },
        };
        let token = CancellationToken::new();
        let t = token.clone();
        let api = tokio::spawn(async move {
            if let Err(e) = tocsin_api::serve(api_cfg, listener, t).await {
                panic!("api failed: {e}");
            }
        });
        let archiver = tocsin_archiver::ArchiverConfig {
            target: data.path().join("archive").display().to_string(),
            roll_max_age_secs: 1,
            ops_listen: String::new(),
            ..Default::default()
        };
        let mut h = Harness {
            nats,
            cluster,
            bus,
            identities,
            data,
            api_url,
            api_ops_url,
            feeds,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()?,
            ingestor,
            delivery,
            router_replicas,
            history_replicas,
            archiver,
            running: HashMap::new(),
            api: (token, api),
            processes,
        };
        let mut services = vec![Svc::Ingestor, Svc::Delivery];
        match router_replicas {
            0 => services.push(Svc::Router),
            n => services.extend((0..n).map(Svc::RouterReplica)),
        }
        match history_replicas {
            0 => services.push(Svc::History),
            n => services.extend((0..n).map(Svc::HistoryReplica)),
        }
        for s in services {
            h.start_service(s);
        }
        h.wait_ready().await?;
        Ok(h)
    }

    /// The bus settings of a service with `role`'s identity.
    pub fn bus_as(&self, role: tocsin_bus::Role) -> BusConfig {
        let mut bus = self.bus.clone();
        if let Some(id) = self.identities.iter().find(|i| i.role == role) {
            bus.nkey_seed_file = id.seed_file.display().to_string();
        }
        bus
    }

    pub fn start_service(&mut self, s: Svc) {
        let t = CancellationToken::new();
        let token = t.clone();
        let bus = self.bus_as(match s {
            Svc::Router | Svc::RouterReplica(_) => tocsin_bus::Role::Router,
            Svc::History | Svc::HistoryReplica(_) => tocsin_bus::Role::History,
            Svc::Delivery => tocsin_bus::Role::Delivery,
            Svc::Ingestor => tocsin_bus::Role::Ingestor,
            Svc::Archiver => tocsin_bus::Role::Archiver,
        });
        let running = match s {
            Svc::Router | Svc::RouterReplica(_) => {
                let (ordinal, count) = match s {
                    Svc::RouterReplica(i) => (Some(i), self.router_replicas),
                    _ => (None, 1),
                };
                let cfg = tocsin_router::Config {
                    bus,
                    router: tocsin_router::RouterConfig {
                        replica_ordinal: ordinal,
                        replica_count: count,
                        // a killed router's silos move on within 3 s
                        silo_lease_secs: 3,
                        ops_listen: String::new(),
                        shutdown_grace_secs: 5,
                        // evict idle avatars quickly, so every test also exercises
                        // eviction and reactivation
                        avatar_idle_secs: 1,
                        ack_link_base_url: self.api_url.clone(),
                        ..Default::default()
                    },
                };
                if self.processes {
                    self.process(s, "router", &cfg.bus, &cfg.router)
                } else {
                    task(t, async move {
                        tocsin_router::run(cfg, token).await.expect("router")
                    })
                }
            }
            Svc::History | Svc::HistoryReplica(_) => {
                let (ordinal, count) = match s {
                    Svc::HistoryReplica(i) => (Some(i), self.history_replicas),
                    _ => (None, 1),
                };
                let cfg = tocsin_history::Config {
                    bus,
                    history: tocsin_history::HistoryConfig {
                        replica_ordinal: ordinal,
                        replica_count: count,
                        ops_listen: String::new(),
                        // a volume per replica, as in the chart
                        data_dir: match s {
                            Svc::HistoryReplica(i) => self.data.path().join(format!("history-{i}")),
                            _ => self.data.path().join("history"),
                        },
                        ..Default::default()
                    },
                };
                if self.processes {
                    self.process(s, "history", &cfg.bus, &cfg.history)
                } else {
                    task(t, async move {
                        tocsin_history::run(cfg, token).await.expect("history")
                    })
                }
            }
            Svc::Delivery => {
                let cfg = tocsin_delivery::Config {
                    bus,
                    delivery: self.delivery.clone(),
                };
                if self.processes {
                    self.process(s, "delivery", &cfg.bus, &cfg.delivery)
                } else {
                    task(t, async move {
                        tocsin_delivery::run(cfg, token).await.expect("delivery")
                    })
                }
            }
            Svc::Archiver => {
                let cfg = tocsin_archiver::Config {
                    bus,
                    archiver: self.archiver.clone(),
                };
                if self.processes {
                    self.process(s, "archiver", &cfg.bus, &cfg.archiver)
                } else {
                    task(t, async move {
                        tocsin_archiver::run(cfg, token).await.expect("archiver")
                    })
                }
            }
            Svc::Ingestor => {
                let cfg = tocsin_ingestor::Config {
                    bus,
                    ingestor: self.ingestor.clone(),
                };
                if self.processes {
                    self.process(s, "ingestor", &cfg.bus, &cfg.ingestor)
                } else {
                    task(t, async move {
                        tocsin_ingestor::run(cfg, token).await.expect("ingestor")
                    })
                }
            }
        };
        self.running.insert(s, running);
    }

    /// `tocsin-<bin>` as a process of its own, configured by a file of `[bus]` and its section;
    /// its output goes to `<data>/<service>.log`.
    fn process<T: serde::Serialize>(
        &self,
        s: Svc,
        bin: &str,
        bus: &BusConfig,
        section: &T,
    ) -> Running {
        let name = format!("{s:?}").to_lowercase().replace(['(', ')'], "");
        let mut doc = toml::Table::new();
        doc.insert(
            "bus".into(),
            toml::Value::try_from(bus).expect("bus as TOML"),
        );
        doc.insert(
            bin.into(),
            toml::Value::try_from(section).expect("section as TOML"),
        );
        let file = self.data.path().join(format!("{name}.toml"));
        std::fs::write(&file, toml::to_string(&doc).expect("TOML")).expect("config file");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.path().join(format!("{name}.log")))
            .expect("log file");
        let child = std::process::Command::new(service_binary(bin))
            .arg("--config")
            .arg(&file)
            // TOCSIN_TEST_SERVICE_LOG=info,tocsin_delivery=debug: what the processes log
            .env(
                "TOCSIN_LOG",
                std::env::var("TOCSIN_TEST_SERVICE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tocsin-{bin}: {e}"));
        Running::Process(child)
    }

    /// Kill a service abruptly: its process gets SIGKILL, or its task is dropped mid-flight;
    /// nothing is settled either way.
    pub async fn kill(&mut self, s: Svc) {
        match self.running.remove(&s) {
            Some(Running::Task(_, h)) => {
                h.abort();
                let _ = h.await;
            }
            Some(Running::Process(mut c)) => {
                let _ = c.kill();
                let _ = tokio::task::spawn_blocking(move || c.wait()).await;
            }
            None => {}
        }
    }

    /// Stop a service gracefully (SIGTERM for a process) and wait for it.
    pub async fn stop(&mut self, s: Svc) {
        match self.running.remove(&s) {
            Some(Running::Task(t, h)) => {
                t.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(20), h).await;
            }
            Some(Running::Process(mut c)) => {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &c.id().to_string()])
                    .status();
                let deadline = Instant::now() + Duration::from_secs(20);
                while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let _ = c.kill();
                let _ = c.wait();
            }
            None => {}
        }
    }

    pub async fn shutdown(mut self) {
        let mut order: Vec<Svc> = self.running.keys().copied().collect();
        order.sort_by_key(|s| match s {
            Svc::Ingestor => 0,
            Svc::Router | Svc::RouterReplica(_) => 1,
            Svc::History | Svc::HistoryReplica(_) => 2,
            Svc::Delivery => 3,
            Svc::Archiver => 4,
        });
        for s in order {
            self.stop(s).await;
        }
        self.api.0.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.api.1).await;
        // every service did only what its identity allows: the server refused nothing
        if let Ok(log) = std::fs::read_to_string(self.data.path().join("nats.log")) {
            let refused: Vec<&str> = log
                .lines()
                .filter(|l| l.contains(" Violation - Subject"))
                .collect();
            assert!(
                refused.is_empty(),
                "nats-server refused what a service did (shared/bus/src/permissions.rs lacks \
                 it):\n{}",
                refused.join("\n")
            );
        }
    }

    /// Wait until the routers have handled and settled everything sent to every silo (each
    /// avatar's batch made durable and acked): a kill after this finds no routing half done.
    pub async fn wait_routers_settled(&self) -> Result<()> {
        let bus = tocsin_bus::Bus::connect(&self.bus, "harness").await?;
        for silo in 0..bus.config().silo_count {
            let stream = bus.subjects().stream(tocsin_bus::StreamKind::Silo(silo));
            let what = format!("silo {silo}'s messages settled by its router");
            tocsin_testkit::wait_for(Duration::from_secs(30), &what, || async {
                let mut c: async_nats::jetstream::consumer::PullConsumer = bus
                    .jetstream()
                    .get_stream(&stream)
                    .await
                    .ok()?
                    .get_consumer("router")
                    .await
                    .ok()?;
                let info = c.info().await.ok()?;
                (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
            })
            .await?;
        }
        bus.drain().await;
        Ok(())
    }

    /// Wait until the API answers, history serves queries for every silo, and the SMTP
    /// ingress (when it has an address) takes connections: the ingestor binds it only after
    /// its own setup, which a busy machine can leave behind the API's.
    pub async fn wait_ready(&self) -> Result<()> {
        tocsin_testkit::wait_for(
            Duration::from_secs(30),
            "the api to answer /readyz",
            || async {
                let r = self
                    .http
                    .get(format!("{}/readyz", self.api_ops_url))
                    .send()
                    .await
                    .ok()?;
                r.status().is_success().then_some(())
            },
        )
        .await?;
        let bus = tocsin_bus::Bus::connect(&self.bus, "harness").await?;
        tocsin_history::wait_serving(&bus, Duration::from_secs(30)).await?;
        // delivery has said which channels it serves: the API sends a destination's code only
        // for those
        let keys = bus.kv("keys").await?;
        for c in &self.delivery.channels {
            let key = format!("channel.{}", c.as_str());
            tocsin_testkit::wait_for(
                Duration::from_secs(30),
                &format!("delivery to serve {}", c.as_str()),
                || async { keys.get(key.as_str()).await.ok().flatten().map(drop) },
            )
            .await?;
        }
        bus.drain().await;
        let smtp = self.ingestor.smtp_listen.as_str();
        if !smtp.is_empty() {
            tocsin_testkit::wait_for(
                Duration::from_secs(30),
                "the SMTP ingress to take connections",
                || async { tokio::net::TcpStream::connect(smtp).await.ok().map(drop) },
            )
            .await?;
        }
        Ok(())
    }
}
