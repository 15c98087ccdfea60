//! The management commands: users, feeds, destinations, policy, acks, history, publishing,
//! dead letters, analytics over the archive and the configuration check — each a call to the
//! API (or a read of the archive) with its result printed for a person.

use crate::cli::{
    ApiArgs, Cmd, DestCmd, DlqCmd, FeedCmd, SilenceCmd, UserCmd, admin_token, user_token,
};
use crate::print::print_history;
use anyhow::{Context, Result, anyhow};
use reqwest::Method;
use serde_json::{Value, json};
use std::process::ExitCode;
use tocsin::AllConfig;
use tocsin::client::ApiClient;
use tocsin_runtime::ConfigSource;

/// Run one management command (every command but `up` and `demo-feed`).
pub(crate) async fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Analytics {
            config,
            archive,
            from,
            to,
            by_user,
            format,
            data_dir,
        } => {
            let mut source = ConfigSource::from_process(config.clone());
            if config.is_none() {
                // like `tocsin up`: the archive under the data directory
                source.defaults.insert(
                    "archiver.target".into(),
                    data_dir.join("archive").display().to_string(),
                );
            }
            let doc = source.load().map_err(|e| anyhow!(e))?;
            let cfg = tocsin_archiver::Config::load(&doc)
                .map_err(|p| anyhow!("invalid configuration:\n  - {}", p.join("\n  - ")))?;
            let target = archive.unwrap_or(cfg.archiver.target);
            let store = tocsin_archiver::store::Archive::open(&target, &cfg.archiver.s3)?;
            let opts = tocsin_archiver::analytics::Options {
                from,
                to,
                by_user,
                user: None,
            };
            let report = tocsin_archiver::analytics::report(&store, &opts).await?;
            print!(
                "{}",
                tocsin_archiver::analytics::render(&report, format, by_user)
            );
            for s in &report.skipped {
                if format != tocsin_archiver::analytics::Format::Table {
                    eprintln!("skipped {}: {}", s.file, s.reason);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::VapidKey => {
            let private = tocsin_delivery::webpush::Vapid::generate();
            let public = tocsin_delivery::webpush::Vapid::new(&private, "mailto:unused@localhost")
                .map_err(|e| anyhow!(e))?
                .public_key();
            println!("TOCSIN_DELIVERY__WEB_PUSH__VAPID_PRIVATE_KEY={private}");
            eprintln!("public key (served at /v1/push/key): {public}");
            eprintln!(
                "keep the private key secret; changing it ends every browser's push subscription"
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Config { config } => {
            let doc = ConfigSource::from_process(config)
                .load()
                .map_err(|e| anyhow!(e))?;
            match AllConfig::load(&doc) {
                Ok(_) => {
                    println!("configuration is valid");
                    Ok(ExitCode::SUCCESS)
                }
                Err(problems) => {
                    eprintln!("invalid configuration:");
                    for p in problems {
                        eprintln!("  - {p}");
                    }
                    Ok(ExitCode::from(tocsin_runtime::EXIT_CONFIG))
                }
            }
        }
        Cmd::User { cmd, api } => {
            let c = ApiClient::new(&api.api)?;
            let admin = admin_token(&api)?;
            let (method, path, body) = match &cmd {
                UserCmd::Add { name } => (
                    Method::POST,
                    "/v1/users".to_owned(),
                    Some(json!({ "name": name })),
                ),
                UserCmd::List => (Method::GET, "/v1/users".to_owned(), None),
                UserCmd::Delete { user_id } => {
                    (Method::DELETE, format!("/v1/users/{user_id}"), None)
                }
            };
            let v = c.call(method, &path, Some(&admin), body.as_ref()).await?;
            match cmd {
                UserCmd::Delete { user_id } => println!("deleted {user_id}"),
                _ => println!("{}", serde_json::to_string_pretty(&v)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Feed { cmd, api } => feed(cmd, api).await,
        Cmd::Dest { cmd, api } => {
            let c = ApiClient::new(&api.api)?;
            let token = user_token(&api)?;
            match cmd {
                DestCmd::Webhook { url, secret, label } => {
                    let body = json!({ "channel": "webhook", "address": url, "secret": secret, "label": label });
                    add_destination(&c, &token, body).await?;
                }
                DestCmd::Email { address, label } => {
                    let body = json!({ "channel": "email", "address": address, "label": label });
                    add_destination(&c, &token, body).await?;
                }
                DestCmd::Xmpp { jid, label } => {
                    let body = json!({ "channel": "xmpp", "address": jid, "label": label });
                    add_destination(&c, &token, body).await?;
                }
                DestCmd::Sms { number, label } => {
                    let body = json!({ "channel": "sms", "address": number, "label": label });
                    add_destination(&c, &token, body).await?;
                }
                DestCmd::Push {
                    url,
                    unifiedpush,
                    token: push_token,
                    label,
                } => {
                    let format = if unifiedpush { "unifiedpush" } else { "ntfy" };
                    let body = json!({ "channel": "push", "address": url, "push_format": format, "secret": push_token, "label": label });
                    add_destination(&c, &token, body).await?;
                }
                DestCmd::List => {
                    let v = c
                        .call(Method::GET, "/v1/destinations", Some(&token), None)
                        .await?;
                    crate::print::print_destinations(&v);
                }
                DestCmd::Rm { id } => remove(&c, &token, "/v1/destinations", &id).await?,
                DestCmd::Verify { id, code } => {
                    let path = format!("/v1/destinations/{id}/verify");
                    let body = match &code {
                        Some(code) => json!({ "code": code }),
                        None => json!({}),
                    };
                    c.call(Method::POST, &path, Some(&token), Some(&body))
                        .await?;
                    match code {
                        Some(_) => println!("destination {id} confirmed"),
                        None => println!("a new code was sent to destination {id}"),
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Policy {
            set,
            reset,
            name,
            api,
        } => {
            let c = ApiClient::new(&api.api)?;
            let token = user_token(&api)?;
            let endpoint = format!(
                "/v1/policies/{}",
                url_escape(name.as_deref().unwrap_or("default"))
            );
            let shown = name.as_deref().unwrap_or("default");
            if reset {
                c.call(Method::DELETE, &endpoint, Some(&token), None)
                    .await?;
                println!("policy {shown}: back to the built-in one (or removed)");
            } else if let Some(path) = set {
                let policy = read_json(&path)?;
                c.call(Method::PUT, &endpoint, Some(&token), Some(&policy))
                    .await?;
                println!("policy {shown} saved");
            } else {
                let endpoint = if name.is_some() {
                    &endpoint
                } else {
                    "/v1/policies"
                };
                let v = c.call(Method::GET, endpoint, Some(&token), None).await?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Hook {
            format,
            label,
            mapping,
            api,
        } => {
            let c = ApiClient::new(&api.api)?;
            let token = user_token(&api)?;
            let mut body = json!({"kind": "hook", "format": format, "label": label});
            if let Some(path) = mapping {
                body["mapping"] = read_json(&path)?;
            }
            let v = c
                .call(Method::POST, "/v1/sources", Some(&token), Some(&body))
                .await?;
            println!(
                "hook {}: send to this URL (it is shown only now):\n{}",
                v["source"]["id"].as_str().unwrap_or_default(),
                v["hook_url"].as_str().unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::MailRules { set, reset, api } => {
            let c = ApiClient::new(&api.api)?;
            let token = user_token(&api)?;
            let body = if reset {
                Some(json!({"rules": []}))
            } else if let Some(path) = set {
                Some(read_json(&path)?)
            } else {
                None
            };
            let v = match body {
                Some(b) => {
                    c.call(Method::PUT, "/v1/inbound/rules", Some(&token), Some(&b))
                        .await?
                }
                None => {
                    c.call(Method::GET, "/v1/inbound/rules", Some(&token), None)
                        .await?
                }
            };
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Heartbeat {
            label,
            every,
            grace,
            api,
        } => {
            let c = ApiClient::new(&api.api)?;
            let token = user_token(&api)?;
            let secs = |what: &str, v: &str| {
                let zero = v.trim() == "0";
                zero.then_some(0)
                    .or_else(|| tocsin_model::parse_duration(v))
                    .with_context(|| {
                        format!("--{what} {v:?} is not a duration like 90s, 10m, 1h or 1d")
                    })
            };
            let body = json!({"kind": "heartbeat", "label": label,
                "period_secs": secs("every", &every)?, "grace_secs": secs("grace", &grace)?});
            let v = c
                .call(Method::POST, "/v1/sources", Some(&token), Some(&body))
                .await?;
            println!(
                "heartbeat {}: request this URL after each run (it is shown only now):\n{}",
                v["source"]["id"].as_str().unwrap_or_default(),
                v["ping_url"].as_str().unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Silence { cmd, api } => {
            let c = ApiClient::new(&api.api)?;
            let token = user_token(&api)?;
            match cmd {
                SilenceCmd::Add {
                    source,
                    tag,
                    key,
                    duration,
                    comment,
                } => {
                    let body = json!({"source": source, "tag": tag, "key": key,
                        "for": duration, "comment": comment});
                    let v = c
                        .call(Method::POST, "/v1/silences", Some(&token), Some(&body))
                        .await?;
                    let s = &v["silence"];
                    println!(
                        "{}: silenced until {}",
                        s["id"].as_str().unwrap_or_default(),
                        tocsin_model::text::utc_minute(s["ends_at_ms"].as_i64().unwrap_or(0))
                    );
                }
                SilenceCmd::List => {
                    let v = c
                        .call(Method::GET, "/v1/silences", Some(&token), None)
                        .await?;
                    for s in v["silences"].as_array().into_iter().flatten() {
                        let matcher: Vec<String> = ["source", "tag", "key"]
                            .iter()
                            .filter_map(|f| s[f].as_str().map(|v| format!("{f} {v}")))
                            .collect();
                        println!(
                            "{}\t{}\t{} → {}{}",
                            s["id"].as_str().unwrap_or_default(),
                            matcher.join(", "),
                            tocsin_model::text::utc_minute(s["starts_at_ms"].as_i64().unwrap_or(0)),
                            tocsin_model::text::utc_minute(s["ends_at_ms"].as_i64().unwrap_or(0)),
                            if s["active"] == true {
                                ""
                            } else {
                                " (not begun)"
                            }
                        );
                    }
                }
                SilenceCmd::Rm { id } => remove(&c, &token, "/v1/silences", &id).await?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Ack {
            notification_id,
            api,
        } => {
            let c = ApiClient::new(&api.api)?;
            let token = user_token(&api)?;
            c.call(
                Method::POST,
                &format!("/v1/notifications/{}/ack", url_escape(&notification_id)),
                Some(&token),
                None,
            )
            .await?;
            println!("acknowledged {notification_id}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::History {
            limit,
            search,
            cursor,
            json: raw,
            api,
        } => {
            let c = ApiClient::new(&api.api)?;
            let token = user_token(&api)?;
            let mut path = format!("/v1/history?limit={limit}");
            if let Some(q) = search {
                path.push_str(&format!("&q={}", url_escape(&q)));
            }
            if let Some(cur) = cursor {
                path.push_str(&format!("&cursor={}", url_escape(&cur)));
            }
            let v = c.call(Method::GET, &path, Some(&token), None).await?;
            if raw {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_history(&v);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Publish {
            title,
            body,
            priority,
            tags,
            url,
            key,
            api,
        } => {
            let c = ApiClient::new(&api.api)?;
            let token = user_token(&api)?;
            let mut req =
                json!({ "title": title, "body": body, "priority": priority, "tags": tags });
            if let Some(u) = url {
                req["click_url"] = json!(u);
            }
            if let Some(k) = key {
                req["idempotency_key"] = json!(k);
            }
            let v = c
                .call(Method::POST, "/v1/publish", Some(&token), Some(&req))
                .await?;
            println!("published {}", v["id"].as_str().unwrap_or("?"));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Dlq { cmd, api } => {
            let c = ApiClient::new(&api.api)?;
            let admin = admin_token(&api)?;
            let v = match cmd {
                DlqCmd::List { from } => {
                    c.call(
                        Method::GET,
                        &format!("/v1/admin/dead-letters?from={from}"),
                        Some(&admin),
                        None,
                    )
                    .await?
                }
                DlqCmd::Replay { seq } => {
                    c.call(
                        Method::POST,
                        &format!("/v1/admin/dead-letters/{seq}/replay"),
                        Some(&admin),
                        None,
                    )
                    .await?
                }
            };
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Up { .. }
        | Cmd::DemoFeed { .. }
        | Cmd::NatsAuth { .. }
        | Cmd::Entrypoint { .. }
        | Cmd::Probe { .. } => Err(anyhow!("not a management command")),
    }
}

async fn add_destination(c: &ApiClient, token: &str, body: Value) -> Result<()> {
    let v = c
        .call(Method::POST, "/v1/destinations", Some(token), Some(&body))
        .await?;
    println!(
        "reaching you at {} as destination {}",
        v["destination"]["address"].as_str().unwrap_or("?"),
        v["destination"]["id"].as_str().unwrap_or("?")
    );
    let mut unserved = false;
    if let Some(hint) = v["verification"].as_str() {
        let id = v["destination"]["id"].as_str().unwrap_or("?");
        println!("{hint}");
        if hint.starts_with("a code was sent") {
            println!("(or: tocsin dest verify {id} CODE)");
        } else {
            println!("(a code later: tocsin dest verify {id})");
            unserved = hint.starts_with("no code was sent");
        }
    }
    if body["channel"] == "xmpp" && !unserved {
        println!("accept the presence subscription request from tocsin in your XMPP client");
    }
    Ok(())
}

/// A JSON document from `path` ("-": standard input).
fn read_json(path: &std::path::Path) -> Result<Value> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// `DELETE <collection>/<id>`, and say so.
async fn remove(c: &ApiClient, token: &str, collection: &str, id: &str) -> Result<()> {
    c.call(
        Method::DELETE,
        &format!("{collection}/{}", url_escape(id)),
        Some(token),
        None,
    )
    .await?;
    println!("removed {id}");
    Ok(())
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn feed(cmd: FeedCmd, api: ApiArgs) -> Result<ExitCode> {
    let c = ApiClient::new(&api.api)?;
    let token = user_token(&api)?;
    match cmd {
        FeedCmd::Add {
            url,
            any,
            all,
            exclude,
            regex,
            price_min,
            price_max,
            category,
            label,
            existing,
            poll_secs,
            prices,
            reposts,
        } => {
            let mut filter = json!({ "any": any, "all": all, "exclude": exclude });
            if let Some(r) = regex {
                filter["regex"] = json!(r);
            }
            if let Some(p) = price_min {
                filter["price_min"] = json!(p);
            }
            if let Some(p) = price_max {
                filter["price_max"] = json!(p);
            }
            if let Some(cat) = category {
                filter["category"] = json!(cat);
            }
            let mut body = json!({ "url": url, "label": label, "filter": filter, "deliver_existing": existing });
            if let Some(s) = poll_secs {
                body["poll_interval_secs"] = json!(s);
            }
            if let Some(p) = prices {
                body["listing"]["prices"] = json!(p);
            }
            if let Some(r) = reposts {
                body["listing"]["reposts"] = json!(r);
            }
            let v = c
                .call(Method::POST, "/v1/sources", Some(&token), Some(&body))
                .await?;
            println!(
                "watching {} as source {}",
                v["source"]["url"].as_str().unwrap_or("?"),
                v["source"]["id"].as_str().unwrap_or("?")
            );
        }
        FeedCmd::List => {
            let v = c
                .call(Method::GET, "/v1/sources", Some(&token), None)
                .await?;
            crate::print::print_sources(&v);
        }
        FeedCmd::Rm { id } => remove(&c, &token, "/v1/sources", &id).await?,
        FeedCmd::AddJson { file } => {
            let body = read_json(&file)?;
            let v = c
                .call(Method::POST, "/v1/sources", Some(&token), Some(&body))
                .await?;
            println!(
                "{}  {}",
                v["source"]["id"].as_str().unwrap_or("?"),
                v["source"]["url"].as_str().unwrap_or("?")
            );
            for field in ["hook_url", "ping_url"] {
                if let Some(u) = v[field].as_str() {
                    println!("{field}: {u}   (shown once)");
                }
            }
        }
        FeedCmd::Preview { file } => {
            let body = read_json(&file)?;
            let v = c
                .call(
                    Method::POST,
                    "/v1/sources/preview",
                    Some(&token),
                    Some(&body),
                )
                .await?;
            for i in v["items"].as_array().into_iter().flatten() {
                match i["matches"].as_bool() {
                    Some(true) => println!("notify   {}", i["title"].as_str().unwrap_or("")),
                    _ => println!(
                        "skip     {}  ({})",
                        i["title"].as_str().unwrap_or(""),
                        i["why"].as_str().unwrap_or("")
                    ),
                }
            }
        }
        FeedCmd::Export => {
            let opml = c
                .send(Method::GET, "/v1/sources/opml", Some(&token), |r| r)
                .await?;
            print!("{opml}");
        }
        FeedCmd::Import { file } => {
            let doc =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let text = c
                .send(Method::POST, "/v1/sources/opml", Some(&token), |r| {
                    r.header("content-type", "text/x-opml").body(doc)
                })
                .await?;
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            for s in v["added"].as_array().into_iter().flatten() {
                println!(
                    "added    {}  {}",
                    s["id"].as_str().unwrap_or("?"),
                    s["url"].as_str().unwrap_or("?")
                );
            }
            for s in v["skipped"].as_array().into_iter().flatten() {
                println!(
                    "skipped  {}  ({})",
                    s["url"].as_str().unwrap_or("?"),
                    s["reason"].as_str().unwrap_or("?")
                );
            }
        }
        FeedCmd::Set {
            id,
            priority,
            mute_minutes,
            policy,
            group_minutes,
            digest,
            at,
            tz,
            count,
        } => {
            let mut body = json!({});
            if let Some(every) = digest {
                body["digest"] = json!({ "every": every });
                for (k, v) in [
                    ("at", at.map(|a| json!(a))),
                    ("tz", tz.map(|t| json!(t))),
                    ("count", count.map(|n| json!(n))),
                ] {
                    if let Some(v) = v {
                        body["digest"][k] = v;
                    }
                }
            }
            if let Some(p) = policy {
                body["policy"] = json!(p);
            }
            if let Some(m) = group_minutes {
                body["group_secs"] = json!(m.saturating_mul(60));
            }
            if let Some(p) = priority {
                body["priority"] = json!(p);
            }
            if let Some(m) = mute_minutes {
                let until = tocsin_model::now_ms()
                    .saturating_add(i64::try_from(m.saturating_mul(60_000)).unwrap_or(i64::MAX));
                body["muted_until_ms"] = json!(until);
            }
            let v = c
                .call(
                    Method::PUT,
                    &format!("/v1/sources/{}/settings", url_escape(&id)),
                    Some(&token),
                    Some(&body),
                )
                .await?;
            let settings = &v["source"]["settings"];
            println!(
                "source {id}: priority {}, {}",
                settings["priority"]
                    .as_u64()
                    .map_or("as its items say".to_owned(), |p| p.to_string()),
                match settings["muted_until_ms"].as_i64() {
                    Some(t) => format!(
                        "muted until {}",
                        chrono::DateTime::from_timestamp_millis(t)
                            .map_or_else(|| t.to_string(), |d| d.to_rfc3339())
                    ),
                    None => "not muted".to_owned(),
                },
            );
            if let Some(p) = settings["policy"].as_str() {
                println!("source {id}: follows policy {p}");
            }
            if settings["digest"].is_object() {
                println!("source {id}: digest {}", settings["digest"]);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
