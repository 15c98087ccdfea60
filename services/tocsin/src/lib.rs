//! The `tocsin` command's library: running every service in one process (`tocsin up`, the
//! tests, the benchmark), finding and starting a local nats-server, and the HTTP client the
//! CLI uses to talk to the API.

pub mod client;
pub mod demo;

use std::future::Future;
use std::pin::Pin;
use tocsin_runtime::ConfigDoc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Every service's configuration, read from one document and validated together.
#[derive(Clone, Debug)]
pub struct AllConfig {
    pub ingestor: tocsin_ingestor::Config,
    pub router: tocsin_router::Config,
    pub history: tocsin_history::Config,
    pub api: tocsin_api::Config,
    pub delivery: tocsin_delivery::Config,
    pub archiver: tocsin_archiver::Config,
}

/// The sections a tocsin configuration may have.
pub const SECTIONS: [&str; 7] = [
    "bus", "ingestor", "router", "history", "api", "delivery", "archiver",
];

impl AllConfig {
    /// Read every section; report every problem of every section at once, including
    /// sections nobody reads (a typo in a section name).
    pub fn load(doc: &ConfigDoc) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        for s in doc.sections() {
            if !SECTIONS.contains(&s.as_str()) {
                problems.push(format!(
                    "[{s}]: unknown section; expected one of {}",
                    SECTIONS.join(", ")
                ));
            }
        }
        let ingestor = tocsin_ingestor::Config::load(doc);
        let router = tocsin_router::Config::load(doc);
        let history = tocsin_history::Config::load(doc);
        let api = tocsin_api::Config::load(doc);
        let delivery = tocsin_delivery::Config::load(doc);
        let archiver = tocsin_archiver::Config::load(doc);
        for p in [
            &ingestor.as_ref().err(),
            &router.as_ref().err(),
            &history.as_ref().err(),
            &api.as_ref().err(),
            &delivery.as_ref().err(),
            &archiver.as_ref().err(),
        ]
        .into_iter()
        .flatten()
        {
            for line in p.iter() {
                if !problems.contains(line) {
                    problems.push(line.clone());
                }
            }
        }
        match (ingestor, router, history, api, delivery, archiver) {
            (Ok(ingestor), Ok(mut router), Ok(history), Ok(api), Ok(delivery), Ok(archiver))
                if problems.is_empty() =>
            {
                // one process, one API: acknowledgement links follow its public URL unless
                // the router was told otherwise
                if router.router.ack_link_base_url
                    == tocsin_router::RouterConfig::default().ack_link_base_url
                {
                    router.router.ack_link_base_url = api.api.public_url.clone();
                }
                Ok(AllConfig {
                    ingestor,
                    router,
                    history,
                    api,
                    delivery,
                    archiver,
                })
            }
            _ => Err(problems),
        }
    }

    /// Point every service at `url`.
    pub fn set_nats_url(&mut self, url: &str) {
        self.ingestor.bus.url = url.to_owned();
        self.router.bus.url = url.to_owned();
        self.history.bus.url = url.to_owned();
        self.api.bus.url = url.to_owned();
        self.delivery.bus.url = url.to_owned();
        self.archiver.bus.url = url.to_owned();
    }

    /// Connect every service as its own identity among `ids` (ADR 0029).
    pub fn set_nats_identities(&mut self, ids: &[tocsin_bus::credentials::Identity]) {
        use tocsin_bus::Role;
        for id in ids {
            let bus = match id.role {
                Role::Ingestor => &mut self.ingestor.bus,
                Role::Router => &mut self.router.bus,
                Role::History => &mut self.history.bus,
                Role::Api => &mut self.api.bus,
                Role::Delivery => &mut self.delivery.bus,
                Role::Archiver => &mut self.archiver.bus,
                Role::Admin => continue,
            };
            bus.nkey_seed_file = id.seed_file.display().to_string();
        }
    }
}

type ServiceFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// The services `tocsin up` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Ingestor,
    Router,
    History,
    Delivery,
    Api,
    Archiver,
}

impl Service {
    pub const ALL: [Service; 6] = [
        Service::Ingestor,
        Service::Router,
        Service::History,
        Service::Delivery,
        Service::Api,
        Service::Archiver,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Service::Ingestor => "ingestor",
            Service::Router => "router",
            Service::History => "history",
            Service::Delivery => "delivery",
            Service::Api => "api",
            Service::Archiver => "archiver",
        }
    }

    /// This service's `run`, as a future.
    pub fn start(self, cfg: &AllConfig, shutdown: CancellationToken) -> ServiceFuture {
        fn boxed<E: std::fmt::Display>(
            f: impl Future<Output = Result<(), E>> + Send + 'static,
        ) -> ServiceFuture {
            Box::pin(async move { f.await.map_err(|e| e.to_string()) })
        }
        match self {
            Service::Ingestor => boxed(tocsin_ingestor::run(cfg.ingestor.clone(), shutdown)),
            Service::Router => boxed(tocsin_router::run(cfg.router.clone(), shutdown)),
            Service::History => boxed(tocsin_history::run(cfg.history.clone(), shutdown)),
            Service::Delivery => boxed(tocsin_delivery::run(cfg.delivery.clone(), shutdown)),
            Service::Api => boxed(tocsin_api::run(cfg.api.clone(), shutdown)),
            Service::Archiver => boxed(tocsin_archiver::run(cfg.archiver.clone(), shutdown)),
        }
    }
}

/// Start every service as a task of this process. Each stops when `shutdown` is cancelled;
/// the set yields each service's name and result as it ends.
pub fn run_all(
    cfg: &AllConfig,
    shutdown: &CancellationToken,
) -> JoinSet<(&'static str, Result<(), String>)> {
    let mut set = JoinSet::new();
    for s in Service::ALL {
        let fut = s.start(cfg, shutdown.clone());
        set.spawn(async move { (s.name(), fut.await) });
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_runtime::ConfigSource;

    #[test]
    fn tocsin_up_runs_every_service_of_the_configuration() {
        // every section but the shared [bus] is a service `run_all` starts
        let mut started: Vec<&str> = Service::ALL.iter().map(|s| s.name()).collect();
        let mut sections: Vec<&str> = SECTIONS.into_iter().filter(|s| *s != "bus").collect();
        started.sort_unstable();
        sections.sort_unstable();
        assert_eq!(started, sections);
    }

    fn example() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/tocsin.example.toml")
    }

    #[test]
    fn the_deployment_config_loads_for_every_service() {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/config/tocsin.toml");
        let doc = ConfigSource {
            file: Some(file),
            env: [(
                "TOCSIN_API__ADMIN_TOKEN".to_string(),
                "an-admin-token-from-the-environment".to_string(),
            )]
            .into(),
            ..Default::default()
        }
        .load()
        .unwrap();
        let cfg = AllConfig::load(&doc).unwrap();
        assert_eq!(cfg.router.bus.url, "nats://nats:4222");
        assert_eq!(
            cfg.api.api.admin_token,
            "an-admin-token-from-the-environment"
        );
        assert_eq!(
            cfg.router.router.ack_link_base_url,
            "https://tocsin.example.org"
        );
        assert!(
            cfg.delivery
                .delivery
                .channels
                .contains(&tocsin_model::Channel::Email)
        );
        // the systemd units and the compose file start each service with this file
        let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
        let compose = std::fs::read_to_string(deploy.join("compose.yaml")).unwrap();
        for svc in [
            "ingestor", "router", "history", "delivery", "api", "archiver",
        ] {
            let unit =
                std::fs::read_to_string(deploy.join(format!("systemd/tocsin-{svc}.service")))
                    .unwrap();
            assert!(
                unit.contains(&format!(
                    "ExecStart=/usr/local/bin/tocsin-{svc} --config /etc/tocsin/tocsin.toml"
                )),
                "{svc}"
            );
            assert!(
                compose.contains(&format!(
                    "command: [\"{svc}\", \"--config\", \"/etc/tocsin/tocsin.toml\"]"
                )),
                "{svc}"
            );
        }
    }

    #[test]
    fn the_example_file_loads_and_equals_the_defaults() {
        let doc = ConfigSource {
            file: Some(example()),
            env: Default::default(),
            ..Default::default()
        }
        .load()
        .unwrap();
        let cfg = AllConfig::load(&doc).unwrap();
        let defaults = AllConfig::load(&ConfigDoc::empty()).unwrap();
        assert_eq!(cfg.router, defaults.router);
        assert_eq!(cfg.history, defaults.history);
        assert_eq!(cfg.ingestor, defaults.ingestor);
        assert_eq!(cfg.api, defaults.api);
        assert_eq!(cfg.delivery, defaults.delivery);
        assert_eq!(cfg.archiver, defaults.archiver);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let dir = tempfile_dir();
        let f = dir.join("bad.toml");
        std::fs::write(&f, "[bus]\nsilo_count = 0\n[routr]\nx = 1\n[ingestor]\njitter = 2.0\n[api]\npublic_url = \"nope\"\n").unwrap();
        let doc = ConfigSource {
            file: Some(f),
            env: [
                ("TOCSIN_HISTORY__BATCH".to_string(), "0".to_string()),
                ("TOCSIN_HISTORY__WRITERS".to_string(), "0".to_string()),
            ]
            .into(),
            ..Default::default()
        }
        .load()
        .unwrap();
        let problems = AllConfig::load(&doc).unwrap_err();
        for want in [
            "[routr]: unknown section",
            "bus.silo_count",
            "ingestor.jitter",
            "api.public_url",
            "history.batch",
            "history.writers",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(want)),
                "{want} not in {problems:#?}"
            );
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("tocsin-cfg-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
