//! `tocsin nats-auth`: the identities and the server's authorization block an operator deploys
//! with compose, systemd or the Helm charts — what it writes, that nats-server accepts it, and
//! that running it again keeps the seeds.

use serde_json::Value;
use std::process::Command;

fn nats_auth(dir: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tocsin"))
        .args(["nats-auth", "--helm", "--dir"])
        .arg(dir)
        .env("TOCSIN_BUS__SILO_COUNT", "3")
        .output()
        .expect("tocsin runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn nats_auth_writes_what_compose_systemd_and_the_charts_take() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nats-auth");
    let said = nats_auth(&dir);
    assert!(said.contains("3 silos"), "{said}");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let services = [
        "api", "router", "history", "delivery", "ingestor", "archiver",
    ];
    let seeds: Vec<String> = services.iter().map(|s| read(&format!("{s}.nk"))).collect();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["api.nk", "admin.nk", "auth.conf", "secrets.json"] {
            let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
    }
    // each unit's environment file names its own seed
    for s in services {
        let env = read(&format!("{s}.env"));
        assert!(env.trim().ends_with(&format!("/nats-auth/{s}.nk")), "{env}");
        assert!(env.starts_with("TOCSIN_BUS__NKEY_SEED_FILE=/"), "{env}");
    }
    // one Secret per service, holding its seed alone; the operators' stays out
    let secrets: Value = serde_json::from_str(&read("secrets.json")).unwrap();
    let items = secrets["items"].as_array().unwrap();
    assert_eq!(items.len(), 6);
    for (item, (svc, seed)) in items.iter().zip(services.iter().zip(&seeds)) {
        assert_eq!(item["metadata"]["name"], format!("tocsin-nats-{svc}"));
        assert_eq!(item["stringData"]["seed"], seed.trim());
    }
    let values: Value = serde_json::from_str(&read("nats-values.json")).unwrap();
    let users = values["config"]["merge"]["authorization"]["users"]
        .as_array()
        .unwrap();
    assert_eq!(users.len(), 7);
    assert!(
        users
            .iter()
            .all(|u| u["nkey"].as_str().unwrap().starts_with('U'))
    );
    // nats-server takes the block as it is
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let server = tocsin_runtime::local_nats::find_binary(&root).expect("nats-server");
    let check = Command::new(server)
        .arg("-t")
        .arg("-c")
        .arg(dir.join("auth.conf"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // again: the same identities, the permissions written anew
    nats_auth(&dir);
    for (svc, seed) in services.iter().zip(&seeds) {
        assert_eq!(&read(&format!("{svc}.nk")), seed, "{svc}");
    }
}
