//! Layered configuration: each section's serde defaults, then a caller's local defaults (such
//! as `tocsin up`'s data directory), then a TOML file, then environment variables
//! `TOCSIN_<SECTION>__<KEY>`. The environment is passed in, never read behind the
//! caller's back, so tests give a map instead of setting process variables.

use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::path::PathBuf;

/// Where configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    pub file: Option<PathBuf>,
    /// Variables named `TOCSIN_<SECTION>__<KEY>` (others are ignored).
    pub env: HashMap<String, String>,
    /// Defaults of the caller's own, by dotted key (`history.data_dir`): above each section's
    /// built-in defaults, below the file and the environment.
    pub defaults: HashMap<String, String>,
}

impl ConfigSource {
    /// The file given on the command line and this process's environment.
    pub fn from_process(file: Option<PathBuf>) -> Self {
        Self {
            file,
            env: std::env::vars()
                .filter(|(k, _)| k.starts_with("TOCSIN_"))
                .collect(),
            defaults: HashMap::new(),
        }
    }

    /// Read the file and environment into one document.
    pub fn load(&self) -> Result<ConfigDoc, String> {
        let mut b = config::Config::builder();
        for (k, v) in &self.defaults {
            b = b
                .set_default(k.as_str(), v.as_str())
                .map_err(|e| format!("default {k}: {e}"))?;
        }
        if let Some(f) = &self.file {
            if !f.exists() {
                return Err(format!("config file {} does not exist", f.display()));
            }
            b = b.add_source(config::File::from(f.clone()).format(config::FileFormat::Toml));
        }
        // keys that are not sections (TOCSIN_LOG, TOCSIN_NATS_SERVER…) have no "__"
        let env: HashMap<String, String> = self
            .env
            .iter()
            .filter(|(k, _)| k.contains("__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        b = b.add_source(
            config::Environment::with_prefix("TOCSIN")
                .prefix_separator("_")
                .separator("__")
                // values stay strings; the deserializer converts them to the field's type, so
                // an all-digit token or a silo list like "3" is not mistaken for a number
                .try_parsing(false)
                .source(Some(env)),
        );
        let inner = b.build().map_err(|e| e.to_string())?;
        Ok(ConfigDoc { inner })
    }
}

/// A service's own section of the configuration document.
pub trait Section: DeserializeOwned + Default {
    /// The section's name (`router` for `[router]`).
    const NAME: &'static str;
    /// What is wrong with it, given the shared `[bus]` section; each problem names its field.
    fn problems(&self, bus: &tocsin_bus::BusConfig) -> Vec<String>;

    /// Where the service serves `/healthz`, `/readyz` and `/metrics` (empty: nowhere).
    fn ops_listen(&self) -> &str;
}

/// A loaded configuration document.
#[derive(Debug, Clone)]
pub struct ConfigDoc {
    inner: config::Config,
}

impl ConfigDoc {
    /// Section `name`, or its defaults when absent. Errors name the section and field.
    pub fn section<T: DeserializeOwned + Default>(&self, name: &str) -> Result<T, String> {
        let value = match self.inner.get::<config::Value>(name) {
            Ok(v) => v,
            Err(config::ConfigError::NotFound(_)) => return Ok(T::default()),
            Err(e) => return Err(format!("[{name}]: {e}")),
        };
        // through serde_path_to_error so that the message names the field, whatever the source
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                format!("[{name}]: {}", e.inner())
            } else {
                format!("{name}.{path}: {}", e.inner())
            }
        })
    }

    /// A service's sections: the shared `bus` one and its own, `check`ed together once both
    /// parse. Every problem found is returned, each naming its section and field.
    pub fn service_sections<B, S>(
        &self,
        name: &str,
        check: impl FnOnce(&B, &S) -> Vec<String>,
    ) -> Result<(B, S), Vec<String>>
    where
        B: DeserializeOwned + Default,
        S: DeserializeOwned + Default,
    {
        match (self.section::<B>("bus"), self.section::<S>(name)) {
            (Ok(b), Ok(s)) => {
                let problems = check(&b, &s);
                if problems.is_empty() {
                    Ok((b, s))
                } else {
                    Err(problems)
                }
            }
            (b, s) => Err(b.err().into_iter().chain(s.err()).collect()),
        }
    }

    /// The shared `[bus]` section and `S`'s, each checked; every problem of both is returned.
    pub fn service<S: Section>(&self) -> Result<(tocsin_bus::BusConfig, S), Vec<String>> {
        self.service_sections(S::NAME, |b: &tocsin_bus::BusConfig, s: &S| {
            let mut p = b.problems();
            p.extend(s.problems(b));
            p
        })
    }

    /// The top-level section names present, to report ones nobody reads.
    pub fn sections(&self) -> Vec<String> {
        self.inner
            .clone()
            .try_deserialize::<HashMap<String, serde_json::Value>>()
            .map(|m| m.into_keys().collect())
            .unwrap_or_default()
    }

    /// An empty document: every section at its defaults.
    pub fn empty() -> Self {
        ConfigSource::default().load().expect("empty config loads")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, Default, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct S {
        listen: String,
        limit: u32,
    }

    #[test]
    fn file_then_env_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[svc]\nlisten = \"a\"\nlimit = 3\n").unwrap();
        let src = ConfigSource {
            file: Some(f),
            env: [("TOCSIN_SVC__LIMIT".to_string(), "7".to_string())].into(),
            ..Default::default()
        };
        let doc = src.load().unwrap();
        assert_eq!(
            doc.section::<S>("svc").unwrap(),
            S {
                listen: "a".into(),
                limit: 7
            }
        );
        assert_eq!(doc.section::<S>("absent").unwrap(), S::default());
    }

    #[test]
    fn unknown_fields_and_bad_types_name_the_field() {
        let src = ConfigSource {
            file: None,
            env: [("TOCSIN_SVC__LIMT".to_string(), "7".to_string())].into(),
            ..Default::default()
        };
        let e = src.load().unwrap().section::<S>("svc").unwrap_err();
        assert!(e.contains("limt"), "{e}");
        let src = ConfigSource {
            file: None,
            env: [("TOCSIN_SVC__LIMIT".to_string(), "many".to_string())].into(),
            ..Default::default()
        };
        let e = src.load().unwrap().section::<S>("svc").unwrap_err();
        assert!(e.starts_with("svc.limit:"), "{e}");
    }

    #[test]
    fn env_strings_take_the_field_type() {
        #[derive(Debug, Deserialize, Default, PartialEq)]
        #[serde(deny_unknown_fields, default)]
        struct T {
            token: String,
            n: u32,
            on: bool,
            ratio: f64,
        }
        let env = [
            ("TOCSIN_T__TOKEN", "12345"),
            ("TOCSIN_T__N", "7"),
            ("TOCSIN_T__ON", "true"),
            ("TOCSIN_T__RATIO", "0.5"),
        ];
        let src = ConfigSource {
            file: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let t: T = src.load().unwrap().section("t").unwrap();
        assert_eq!(
            t,
            T {
                token: "12345".into(),
                n: 7,
                on: true,
                ratio: 0.5
            }
        );
    }

    #[test]
    fn local_defaults_rank_below_the_file_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[svc]\nlisten = \"from-file\"\n").unwrap();
        let defaults: HashMap<String, String> = [
            ("svc.listen".to_string(), "local".to_string()),
            ("svc.limit".to_string(), "5".to_string()),
        ]
        .into();
        let src = ConfigSource {
            file: Some(f.clone()),
            env: HashMap::new(),
            defaults: defaults.clone(),
        };
        let s: S = src.load().unwrap().section("svc").unwrap();
        assert_eq!(
            s,
            S {
                listen: "from-file".into(),
                limit: 5
            }
        );
        let src = ConfigSource {
            file: Some(f),
            env: [("TOCSIN_SVC__LIMIT".to_string(), "9".to_string())].into(),
            defaults,
        };
        let s: S = src.load().unwrap().section("svc").unwrap();
        assert_eq!(s.limit, 9);
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let src = ConfigSource {
            file: Some("/nonexistent/tocsin.toml".into()),
            env: HashMap::new(),
            ..Default::default()
        };
        assert!(src.load().unwrap_err().contains("does not exist"));
    }
}
