//! The container image (issue 21): built here from the binary this test run built, on a base
//! made by mmdebstrap from Debian's packages (no registry), and run with podman and runc —
//! read-only, as user 10001, every service and the CLI behind one entrypoint.

use std::process::{Command, Output};

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `podman run --rm --read-only --network none IMAGE args…` (testkit's podman: runc and the
/// repository's containers.conf); the data
/// directory on volume `data` (podman gives a new volume the image's owner of the directory,
/// user 10001).
fn podman_run(image: &str, data: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = tocsin_testkit::podman();
    cmd.args(["run", "--rm", "--read-only"])
        .args(["--network", "none"])
        .args(["--volume", &format!("{data}:/var/lib/tocsin")]);
    for (k, v) in env {
        cmd.arg("--env").arg(format!("{k}={v}"));
    }
    run(cmd.arg(image).args(args))
}

/// The image and volume a test made, removed when it ends, failed or not.
struct Made {
    image: String,
    volume: String,
}

impl Drop for Made {
    fn drop(&mut self) {
        let _ = tocsin_testkit::podman()
            .args(["volume", "rm", "--force", &self.volume])
            .output();
        let _ = tocsin_testkit::podman()
            .args(["rmi", "--force", &self.image])
            .output();
    }
}

#[test]
fn the_image_builds_without_a_registry_and_runs_every_service_read_only() {
    let tag = format!("localhost/tocsin:test-{}", std::process::id());
    let made = Made {
        image: tag.clone(),
        volume: format!("tocsin-test-{}", std::process::id()),
    };
    let data = made.volume.as_str();
    let built = run(Command::new("bash")
        .arg(root().join("deploy/image/build.sh"))
        .arg(env!("CARGO_BIN_EXE_tocsin"))
        .arg(&tag));
    assert!(
        built.status.success(),
        "the image did not build (buildah, podman, runc and mmdebstrap come with \
         `make test-tools`): {}",
        text(&built)
    );
    eprintln!("{}", text(&built).trim());
    let inspect = run(tocsin_testkit::podman().args([
        "image",
        "inspect",
        &tag,
        "--format",
        "{{.Config.User}} {{json .Config.Entrypoint}}",
    ]));
    assert_eq!(
        text(&inspect).trim(),
        "10001:10001 [\"/usr/local/bin/tocsin\",\"entrypoint\"]"
    );

    // its SBOM, in the image, names every crate in the binary, the bus client among them
    let copy = tempfile::tempdir().unwrap();
    let ctr = format!("tocsin-sbom-{}", std::process::id());
    let created = run(tocsin_testkit::podman().args(["create", "--name", &ctr, &tag]));
    assert!(created.status.success(), "{}", text(&created));
    let copied = run(tocsin_testkit::podman().args([
        "cp",
        &format!("{ctr}:/usr/share/doc/tocsin/sbom.cdx.json"),
        &copy.path().display().to_string(),
    ]));
    let _ = run(tocsin_testkit::podman().args(["rm", "--force", &ctr]));
    assert!(copied.status.success(), "{}", text(&copied));
    let sbom: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(copy.path().join("sbom.cdx.json")).expect("the SBOM"),
    )
    .expect("the SBOM is JSON");
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    let crates = sbom["components"].as_array().expect("components");
    assert!(
        crates.iter().any(|c| c["name"] == "async-nats"),
        "{}",
        crates.len()
    );
    assert!(crates.iter().all(|c| {
        c["purl"]
            .as_str()
            .is_some_and(|p| p.starts_with("pkg:cargo/"))
    }));
    // the CLI, and the configuration every service loads
    let version = podman_run(&tag, data, &[], &["tocsin", "--version"]);
    assert!(version.status.success(), "{}", text(&version));
    assert!(text(&version).starts_with("tocsin "), "{}", text(&version));
    let config = podman_run(
        &tag,
        data,
        &[],
        &[
            "tocsin",
            "config",
            "--config",
            "/etc/tocsin/tocsin.example.toml",
        ],
    );
    assert!(config.status.success(), "{}", text(&config));
    // each service starts as itself, and without its bus says so and exits
    for service in [
        "ingestor", "router", "history", "delivery", "api", "archiver",
    ] {
        let out = podman_run(
            &tag,
            data,
            &[("TOCSIN_BUS__CONNECT_TIMEOUT_SECS", "1")],
            &[service],
        );
        assert!(!out.status.success(), "{service} ran without NATS");
        assert!(
            text(&out).contains(&format!("tocsin-{service}"))
                && text(&out).contains("cannot connect to nats"),
            "{service}: {}",
            text(&out)
        );
    }
    // a wrong name is told how to use the image
    let usage = podman_run(&tag, data, &[], &["routr"]);
    assert_eq!(usage.status.code(), Some(64), "{}", text(&usage));
    assert!(
        text(&usage).contains("usage: IMAGE ingestor|router"),
        "{}",
        text(&usage)
    );
}
