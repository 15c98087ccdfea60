//! The services' NATS identities on disk: one NKey seed file per service (mode 0600, in a 0700
//! directory), made once and kept, and the nats-server `authorization` block that lets each
//! public key do what [`Role::permissions`] says and nothing else (ADR 0029).

use crate::permissions::Role;
use crate::{BusError, Subjects};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// One identity: its role, where its seed is, and its public key (`U…`).
#[derive(Debug, Clone)]
pub struct Identity {
    pub role: Role,
    pub seed_file: PathBuf,
    pub public_key: String,
}

/// Every service's identity and the operators' (`admin`), read from `dir` or made there the
/// first time (`<role>.nk`). Existing seeds are kept, so servers configured earlier stay valid.
pub fn ensure_identities(dir: &Path) -> Result<Vec<Identity>, BusError> {
    let io = |what: &str, e: std::io::Error| {
        BusError::Other(format!(
            "nats credentials in {}: {what}: {e}",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(|e| io("cannot create the directory", e))?;
    private(dir, 0o700).map_err(|e| io("cannot make the directory private", e))?;
    let mut out = Vec::new();
    for role in Role::SERVICES.into_iter().chain([Role::Admin]) {
        let seed_file = dir.join(format!("{}.nk", role.name()));
        let pair = if seed_file.exists() {
            read_seed(&seed_file)?
        } else {
            let pair = nkeys::KeyPair::new_user();
            let seed = pair
                .seed()
                .map_err(|e| BusError::Other(format!("cannot make an nkey: {e}")))?;
            write_private(&seed_file, &seed).map_err(|e| io("cannot write a seed", e))?;
            pair
        };
        out.push(Identity {
            role,
            seed_file,
            public_key: pair.public_key(),
        });
    }
    Ok(out)
}

/// The key pair in a seed file (`SU…`, as `tocsin nats-auth` or `nsc` writes it).
pub fn read_seed(path: &Path) -> Result<nkeys::KeyPair, BusError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        BusError::Other(format!(
            "bus.nkey_seed_file {}: cannot read it: {e}",
            path.display()
        ))
    })?;
    let seed = text.trim();
    nkeys::KeyPair::from_seed(seed).map_err(|e| {
        BusError::Other(format!(
            "bus.nkey_seed_file {}: not an NKey user seed (it should hold one line starting \
             with SU, as `tocsin nats-auth` writes it): {e}",
            path.display()
        ))
    })
}

/// The `authorization` block, as JSON (which nats-server's configuration reads as is): each
/// identity's public key with its publish and subscribe allow-lists, and `allow_responses`
/// so a service answers the requests it serves.
pub fn authorization(ids: &[Identity], subjects: &Subjects, silo_count: u32) -> Value {
    let users: Vec<Value> = ids
        .iter()
        .map(|id| {
            let p = id.role.permissions(subjects, silo_count);
            json!({
                "nkey": id.public_key,
                "permissions": {
                    "publish": {"allow": p.publish},
                    "subscribe": {"allow": p.subscribe},
                    "allow_responses": true,
                },
            })
        })
        .collect();
    json!({ "users": users })
}

/// A nats-server configuration file holding only the authorization block; give it with `-c`
/// (the port, JetStream and store come from the command line) or `include` it.
pub fn server_config(ids: &[Identity], subjects: &Subjects, silo_count: u32) -> String {
    let names: Vec<&str> = ids.iter().map(|i| i.role.name()).collect();
    format!(
        "# tocsin's services on NATS, one NKey identity each (docs/adr/0029). Written by\n\
         # `tocsin nats-auth` for prefix {:?} and {silo_count} silos; users in order: {}.\n\
         authorization: {}\n",
        subjects.prefix(),
        names.join(", "),
        serde_json::to_string_pretty(&authorization(ids, subjects, silo_count)).unwrap_or_default()
    )
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")
}

fn private(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_made_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("creds");
        let first = ensure_identities(&d).unwrap();
        assert_eq!(first.len(), 7);
        let again = ensure_identities(&d).unwrap();
        for (a, b) in first.iter().zip(&again) {
            assert_eq!(a.public_key, b.public_key);
            assert!(a.public_key.starts_with('U'));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&d), 0o700);
            assert_eq!(mode(&first[0].seed_file), 0o600);
        }
        let conf = server_config(&first, &Subjects::new("t"), 2);
        assert!(conf.contains(&first[0].public_key));
        assert!(conf.contains("\"$JS.ACK.T_SILO_1.>\""), "{conf}");
    }

    #[test]
    fn a_bad_seed_file_says_what_it_should_hold() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.nk");
        std::fs::write(&f, "not a seed").unwrap();
        let e = read_seed(&f).unwrap_err().to_string();
        assert!(e.contains("starting with SU"), "{e}");
    }
}
