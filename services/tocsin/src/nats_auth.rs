//! `tocsin nats-auth`: every service's NATS identity on disk and the server's authorization
//! block for them, for compose, systemd and (with `--helm`) the Helm charts (ADR 0029).

use anyhow::{Context, Result, anyhow};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tocsin::AllConfig;
use tocsin_bus::credentials::{Identity, authorization, ensure_identities, server_config};
use tocsin_bus::{Role, Subjects};
use tocsin_runtime::ConfigSource;

use crate::up::write_private as write;

pub(crate) fn run(dir: &Path, config: Option<PathBuf>, helm: bool) -> Result<ExitCode> {
    let doc = ConfigSource::from_process(config)
        .load()
        .map_err(|e| anyhow!(e))?;
    let cfg = AllConfig::load(&doc)
        .map_err(|problems| anyhow!("invalid configuration:\n  - {}", problems.join("\n  - ")))?;
    let bus = &cfg.router.bus;
    let subjects = Subjects::new(&bus.prefix);
    let ids = ensure_identities(dir)?;
    let conf = dir.join("auth.conf");
    write(&conf, &server_config(&ids, &subjects, bus.silo_count))?;
    println!(
        "{}: nats-server's authorization block for prefix {:?} and {} silos (`-c` it, or \
         `include` it in your server's configuration)",
        conf.display(),
        bus.prefix,
        bus.silo_count
    );
    for id in &ids {
        println!(
            "{}: {} ({})",
            id.seed_file.display(),
            id.role.name(),
            id.public_key
        );
    }
    // for the systemd units: each reads its own `<service>.env` (EnvironmentFile)
    for id in ids.iter().filter(|i| i.role != Role::Admin) {
        let seed = std::path::absolute(&id.seed_file)
            .with_context(|| format!("cannot resolve {}", id.seed_file.display()))?;
        write(
            &dir.join(format!("{}.env", id.role.name())),
            &format!("TOCSIN_BUS__NKEY_SEED_FILE={}\n", seed.display()),
        )?;
    }
    if helm {
        let values = dir.join("nats-values.json");
        write(
            &values,
            &serde_json::to_string_pretty(&json!({
                "config": {"merge": {"authorization": authorization(&ids, &subjects, bus.silo_count)}}
            }))?,
        )?;
        let secrets = dir.join("secrets.json");
        write(
            &secrets,
            &serde_json::to_string_pretty(&kube_secrets(&ids)?)?,
        )?;
        println!(
            "{}: values for the official NATS chart (helm upgrade nats nats/nats -f …)",
            values.display()
        );
        println!(
            "{}: a Secret per service, tocsin-nats-<service> (kubectl apply -f …; the chart's \
             nats.auth.secretPrefix)",
            secrets.display()
        );
    }
    println!(
        "run this again after changing bus.prefix or bus.silo_count, or upgrading tocsin: the \
         seeds are kept, the permissions are written anew"
    );
    Ok(ExitCode::SUCCESS)
}

/// One Secret per service holding its seed alone (the operators' `admin` is not deployed).
fn kube_secrets(ids: &[Identity]) -> Result<Value> {
    let mut items = Vec::new();
    for id in ids.iter().filter(|i| i.role != Role::Admin) {
        let seed = std::fs::read_to_string(&id.seed_file)
            .with_context(|| format!("cannot read {}", id.seed_file.display()))?;
        items.push(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": format!("tocsin-nats-{}", id.role.name()),
                "labels": {"app.kubernetes.io/name": "tocsin"},
            },
            "type": "Opaque",
            "stringData": {"seed": seed.trim()},
        }));
    }
    Ok(json!({"apiVersion": "v1", "kind": "List", "items": items}))
}
