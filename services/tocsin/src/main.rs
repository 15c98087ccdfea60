//! `tocsin`: run the whole pipeline on one machine (`tocsin up`), and manage users, feeds,
//! history and dead letters through the API.

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tocsin::client::ApiClient;
use tocsin::{AllConfig, run_all};
use tocsin_runtime::ConfigSource;
use tocsin_runtime::local_nats::{LocalNats, find_binary};

#[derive(Parser)]
#[command(
    name = "tocsin",
    version,
    about = "a self-hosted notification pipeline"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args, Clone)]
struct ApiArgs {
    /// The API's URL.
    #[arg(
        long,
        env = "TOCSIN_API_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    api: String,
    /// Your API token (default: the demo user's, from ./data/demo-user.json).
    #[arg(long, env = "TOCSIN_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// The admin token (default: ./data/admin-token, written by `tocsin up`).
    #[arg(
        long,
        env = "TOCSIN_ADMIN_TOKEN",
        global = true,
        hide_env_values = true
    )]
    admin_token: Option<String>,
    /// Where `tocsin up` keeps its data.
    #[arg(long, default_value = "./data", global = true)]
    data_dir: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run everything on this machine: a local nats-server (unless --nats-url) and every
    /// service, data under --data-dir. Creates a demo user on the first run.
    Up {
        /// A configuration file (TOML); TOCSIN_<SECTION>__<KEY> variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Use this NATS server instead of starting one.
        #[arg(long)]
        nats_url: Option<String>,
        /// Refuse feeds on loopback addresses (allowed by default in this local mode so the
        /// demo feed works).
        #[arg(long)]
        no_loopback_feeds: bool,
        /// Also serve the demo feed (a new listing every 10 s) on this port (0: off).
        #[arg(long, default_value_t = 8099)]
        demo_feed_port: u16,
        /// How often the demo feed gains a listing.
        #[arg(long, default_value_t = 10)]
        demo_feed_every_secs: u64,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Check a configuration file and the environment: every problem is listed.
    Config {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Users (admin).
    User {
        #[command(subcommand)]
        cmd: UserCmd,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Your feed subscriptions.
    Feed {
        #[command(subcommand)]
        cmd: FeedCmd,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Where you are reached.
    Dest {
        #[command(subcommand)]
        cmd: DestCmd,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Your escalation policy: show it, set it from a JSON file (see docs/channels.md), or
    /// go back to the default.
    Policy {
        /// A JSON file holding the policy ("-": standard input).
        #[arg(long, conflicts_with = "reset")]
        set: Option<PathBuf>,
        #[arg(long)]
        reset: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Acknowledge a notification: its pending escalation stops on every channel.
    Ack {
        notification_id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Your notifications, newest first.
    History {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Full-text search.
        #[arg(long)]
        search: Option<String>,
        #[arg(long)]
        cursor: Option<String>,
        /// Print the raw JSON page.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Publish a notification to yourself.
    Publish {
        title: String,
        #[arg(long, default_value = "")]
        body: String,
        #[arg(long, default_value_t = 3)]
        priority: u8,
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long)]
        url: Option<String>,
        /// A retried publish with the same key is one notification.
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Dead letters (admin).
    Dlq {
        #[command(subcommand)]
        cmd: DlqCmd,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Serve the demo feed alone.
    DemoFeed {
        #[arg(long, default_value_t = 8099)]
        port: u16,
        #[arg(long, default_value_t = 10)]
        every_secs: u64,
    },
    /// Measure the SMTP ingress (concurrent senders) and the mail parser against a raw
    /// JetStream baseline.
    BenchMail {
        #[arg(long, default_value_t = 5000)]
        messages: usize,
        #[arg(long, default_value_t = 8)]
        senders: usize,
        #[arg(long, default_value_t = 100)]
        users: usize,
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
    /// Report on the event archive per day and channel: notifications ingested, routed,
    /// delivered, failed, escalated and acknowledged, ack rate, delivery latency and time to
    /// ack. Reads the archiver's target from the configuration unless --archive says where.
    Analytics {
        #[arg(long)]
        config: Option<PathBuf>,
        /// A directory, or s3://bucket[/prefix] (default: archiver.target; for `tocsin up`,
        /// <data-dir>/archive).
        #[arg(long)]
        archive: Option<String>,
        /// First day (YYYY-MM-DD, UTC).
        #[arg(long)]
        from: Option<chrono::NaiveDate>,
        /// Last day (YYYY-MM-DD, UTC).
        #[arg(long)]
        to: Option<chrono::NaiveDate>,
        /// A row per user too.
        #[arg(long)]
        by_user: bool,
        /// table, csv or json.
        #[arg(long, default_value = "table")]
        format: tocsin_archiver::analytics::Format,
        /// Where `tocsin up` keeps its data.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Measure the archiver (events/s into Parquet, bytes per event) and an analytics report
    /// over many events, against the raw JetStream consume rate of the same events.
    BenchArchive {
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        #[arg(long, default_value_t = 10_000_000)]
        report_events: usize,
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// Measure how fast the ingestor polls feeds (conditional GETs against a local server)
    /// against plain HTTP requests from one client.
    BenchFeeds {
        #[arg(long, default_value_t = 10_000)]
        feeds: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Subscribers of one feed whose new item is fanned out (0 skips it); e.g. 100000.
        #[arg(long, default_value_t = 0)]
        fanout: usize,
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
    /// Measure escalation timers (held, fired, memory) and publish → XMPP client latency
    /// against raw JetStream baselines (the IM part needs `prosody`).
    BenchReach {
        #[arg(long, default_value_t = 10_000)]
        users: usize,
        /// When the held escalations are due (must exceed the time to route them all).
        #[arg(long, default_value_t = 10)]
        wait_secs: u64,
        #[arg(long, default_value_t = 500)]
        im_messages: usize,
        /// Instant messages per second.
        #[arg(long, default_value_t = 50)]
        im_rate: u64,
        /// Users registered for the memory figure (0 skips it); e.g. 1000000.
        #[arg(long, default_value_t = 0)]
        registered: usize,
        /// How many of the registered users are made active.
        #[arg(long, default_value_t = 100_000)]
        active: usize,
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
    /// Run every benchmark in turn (pipeline burst and fixed rate, feed polling and fan-out,
    /// escalation timers, instant messages, router memory, SMTP ingress, archive) and print
    /// one table, each figure beside the baseline measured in the same run.
    BenchAll {
        /// Small sizes (about a minute) instead of the full ones (about seven minutes).
        #[arg(long)]
        short: bool,
        /// The longest any one part may take (the fan-out and memory parts get at least 900 s
        /// in the full mode).
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// Measure publish → router → history against a raw JetStream baseline.
    Bench {
        #[arg(long, default_value_t = 20_000)]
        notifications: usize,
        #[arg(long, default_value_t = 1000)]
        users: usize,
        #[arg(long, default_value_t = 16)]
        silos: u32,
        #[arg(long, default_value_t = 512)]
        window: usize,
        /// Publishes per second (0: a burst, as fast as the window allows).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Create a user; prints its id, API token and private feed URLs.
    Add {
        #[arg(long, default_value = "")]
        name: String,
    },
}

#[derive(Subcommand)]
enum FeedCmd {
    /// Watch a feed URL.
    Add {
        url: String,
        /// Any of these words (repeatable).
        #[arg(long = "match")]
        any: Vec<String>,
        /// All of these words (repeatable).
        #[arg(long = "all")]
        all: Vec<String>,
        /// None of these words (repeatable).
        #[arg(long = "exclude")]
        exclude: Vec<String>,
        #[arg(long)]
        regex: Option<String>,
        #[arg(long)]
        price_min: Option<f64>,
        #[arg(long)]
        price_max: Option<f64>,
        #[arg(long)]
        category: Option<String>,
        #[arg(long, default_value = "")]
        label: String,
        /// Also deliver the items already in the feed.
        #[arg(long)]
        existing: bool,
    },
    List,
    Rm {
        id: String,
    },
}

#[derive(Subcommand)]
enum DestCmd {
    /// Deliver every notification to a webhook (a signed JSON POST).
    Webhook {
        url: String,
        /// Sign each request with HMAC-SHA256 of this secret (X-Tocsin-Signature).
        #[arg(long, env = "TOCSIN_WEBHOOK_SECRET", hide_env_values = true)]
        secret: Option<String>,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Deliver every notification by e-mail.
    Email {
        address: String,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Reach you by instant message (your JID; accept tocsin's subscription request).
    Xmpp {
        jid: String,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Reach you by SMS (E.164: +15551234567).
    Sms {
        number: String,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Reach you by push: an ntfy topic URL, or a UnifiedPush endpoint with --unifiedpush.
    Push {
        url: String,
        #[arg(long)]
        unifiedpush: bool,
        /// An ntfy access token.
        #[arg(long, env = "TOCSIN_PUSH_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[arg(long, default_value = "")]
        label: String,
    },
    List,
    Rm {
        id: String,
    },
}

#[derive(Subcommand)]
enum DlqCmd {
    List {
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
    Replay {
        seq: u64,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tocsin_runtime::install_crypto();
    let cli = Cli::parse();
    match dispatch(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tocsin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Up {
            config,
            nats_url,
            no_loopback_feeds,
            demo_feed_port,
            demo_feed_every_secs,
            api,
        } => {
            let demo = (demo_feed_port > 0).then(|| {
                (
                    demo_feed_port,
                    Duration::from_secs(demo_feed_every_secs.max(1)),
                )
            });
            up(config, nats_url, !no_loopback_feeds, demo, api).await
        }
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
                source
                    .env
                    .entry("TOCSIN_ARCHIVER__TARGET".into())
                    .or_insert_with(|| data_dir.join("archive").display().to_string());
            }
            let doc = source.load().map_err(|e| anyhow!(e))?;
            let cfg = tocsin_archiver::Config::load(&doc)
                .map_err(|p| anyhow!("invalid configuration:\n  - {}", p.join("\n  - ")))?;
            let target = archive.unwrap_or(cfg.archiver.target);
            let store = tocsin_archiver::store::Archive::open(&target, &cfg.archiver.s3)?;
            let opts = tocsin_archiver::analytics::Options { from, to, by_user };
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
        Cmd::User {
            cmd: UserCmd::Add { name },
            api,
        } => {
            let c = ApiClient::new(&api.api)?;
            let admin = admin_token(&api)?;
            let v = c
                .call(
                    Method::POST,
                    "/v1/users",
                    Some(&admin),
                    Some(&json!({ "name": name })),
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
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
                    for d in v["destinations"].as_array().into_iter().flatten() {
                        println!(
                            "{}  {}  {}",
                            d["id"].as_str().unwrap_or("?"),
                            d["channel"].as_str().unwrap_or("?"),
                            d["address"].as_str().unwrap_or("?")
                        );
                    }
                }
                DestCmd::Rm { id } => {
                    c.call(
                        Method::DELETE,
                        &format!("/v1/destinations/{}", url_escape(&id)),
                        Some(&token),
                        None,
                    )
                    .await?;
                    println!("removed {id}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Policy { set, reset, api } => {
            let c = ApiClient::new(&api.api)?;
            let token = user_token(&api)?;
            if reset {
                c.call(Method::DELETE, "/v1/policy", Some(&token), None)
                    .await?;
                println!("back to the default policy");
            } else if let Some(path) = set {
                let text = if path.as_os_str() == "-" {
                    std::io::read_to_string(std::io::stdin())?
                } else {
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?
                };
                let policy: Value = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", path.display()))?;
                c.call(Method::PUT, "/v1/policy", Some(&token), Some(&policy))
                    .await?;
                println!("policy saved");
            } else {
                let v = c
                    .call(Method::GET, "/v1/policy", Some(&token), None)
                    .await?;
                println!("{}", serde_json::to_string_pretty(&v)?);
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
        Cmd::DemoFeed { port, every_secs } => {
            tocsin_runtime::init_tracing();
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
            println!(
                "demo feed: http://127.0.0.1:{port}/search.rdf (a new listing every {every_secs}s)"
            );
            let token = tocsin_runtime::shutdown_on_signal();
            tocsin::demo::serve(listener, Duration::from_secs(every_secs.max(1)), token).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::BenchReach {
            users,
            wait_secs,
            im_messages,
            im_rate,
            registered,
            active,
            timeout_secs,
        } => {
            let report = tocsin::bench_reach::run(tocsin::bench_reach::ReachBenchOptions {
                users: users.max(1),
                wait_secs: wait_secs.max(1),
                im_messages: im_messages.max(1),
                im_rate: im_rate.max(1),
                registered,
                active,
                timeout: Duration::from_secs(timeout_secs),
            })
            .await?;
            print!("{}", report.table());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::BenchArchive {
            events,
            report_events,
            timeout_secs,
        } => {
            let report = tocsin::bench_archive::run(tocsin::bench_archive::ArchiveBenchOptions {
                events: events.max(1),
                report_events: report_events.max(1),
                timeout: Duration::from_secs(timeout_secs),
            })
            .await?;
            print!("{}", report.table());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::BenchFeeds {
            feeds,
            concurrency,
            seconds,
            fanout,
            timeout_secs,
        } => {
            let report = tocsin::bench_feeds::run(tocsin::bench_feeds::FeedBenchOptions {
                feeds: feeds.max(1),
                concurrency: concurrency.max(1),
                seconds: seconds.max(1),
                fanout,
                timeout: Duration::from_secs(timeout_secs),
            })
            .await?;
            print!("{}", report.table());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::BenchMail {
            messages,
            senders,
            users,
            timeout_secs,
        } => {
            let report = tocsin::bench::run_mail(tocsin::bench::MailBenchOptions {
                messages: messages.max(1),
                senders: senders.max(1),
                users: users.max(1),
                timeout: Duration::from_secs(timeout_secs),
            })
            .await?;
            print!("{}", report.table());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::BenchAll {
            short,
            timeout_secs,
        } => {
            let timeout = Duration::from_secs(timeout_secs);
            let opts = if short {
                tocsin::bench_all::AllOptions::short(timeout)
            } else {
                tocsin::bench_all::AllOptions::full(timeout)
            };
            let report = tocsin::bench_all::run(opts).await?;
            print!("{}", report.table());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bench {
            notifications,
            users,
            silos,
            window,
            rate,
            timeout_secs,
        } => {
            let report = tocsin::bench::run(tocsin::bench::BenchOptions {
                notifications,
                users: users.max(1),
                silo_count: silos.max(1),
                window: window.max(1),
                rate,
                timeout: Duration::from_secs(timeout_secs),
            })
            .await?;
            print!("{}", report.table());
            Ok(ExitCode::SUCCESS)
        }
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
    if body["channel"] == "xmpp" {
        println!("accept the presence subscription request from tocsin in your XMPP client");
    }
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

fn read_trimmed(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn admin_token(api: &ApiArgs) -> Result<String> {
    api.admin_token
        .clone()
        .or_else(|| read_trimmed(&api.data_dir.join("admin-token")))
        .ok_or_else(|| anyhow!("no admin token: pass --admin-token or TOCSIN_ADMIN_TOKEN (tocsin up writes one to {}/admin-token)", api.data_dir.display()))
}

fn user_token(api: &ApiArgs) -> Result<String> {
    if let Some(t) = &api.token {
        return Ok(t.clone());
    }
    let f = api.data_dir.join("demo-user.json");
    let v: Value = std::fs::read_to_string(&f)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .ok_or_else(|| {
            anyhow!(
                "no token: pass --token or TOCSIN_TOKEN (tocsin up writes the demo user's to {})",
                f.display()
            )
        })?;
    v["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("{} has no token", f.display()))
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
            let body = json!({ "url": url, "label": label, "filter": filter, "deliver_existing": existing });
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
            for s in v["sources"].as_array().into_iter().flatten() {
                let status = match (&s["status"]["ok"], s["status"]["error"].as_str()) {
                    (Value::Bool(true), _) => "ok".to_owned(),
                    (_, Some(e)) => format!("error: {e}"),
                    _ => "waiting for first poll".to_owned(),
                };
                println!(
                    "{}  {}  [{}]",
                    s["id"].as_str().unwrap_or("?"),
                    s["url"].as_str().unwrap_or("?"),
                    status
                );
            }
        }
        FeedCmd::Rm { id } => {
            c.call(
                Method::DELETE,
                &format!("/v1/sources/{}", url_escape(&id)),
                Some(&token),
                None,
            )
            .await?;
            println!("removed {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_history(v: &Value) {
    let items = v["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        println!("no notifications yet");
    }
    for i in items {
        let n = &i["notification"];
        let when = n["created_at_ms"].as_i64().unwrap_or(0);
        let when = chrono_like(when);
        println!(
            "{when}  [{}] {}",
            n["source"]["label"].as_str().unwrap_or(""),
            n["title"].as_str().unwrap_or("")
        );
        if let Some(u) = n["url"].as_str() {
            println!("    {u}");
        }
    }
    if let Some(c) = v["next_cursor"].as_str() {
        println!("(more: --cursor {c})");
    }
}

fn chrono_like(ms: i64) -> String {
    let secs = ms / 1000;
    let (d, s) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil date from days since epoch (Howard Hinnant's algorithm)
    let z = d + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        s / 3600,
        (s % 3600) / 60,
        s % 60
    )
}

async fn up(
    config: Option<PathBuf>,
    nats_url: Option<String>,
    allow_loopback: bool,
    demo: Option<(u16, Duration)>,
    args: ApiArgs,
) -> Result<ExitCode> {
    tocsin_runtime::init_tracing();
    let demo_every_secs = demo.map(|(_, e)| e.as_secs()).unwrap_or(10);
    let mut source = ConfigSource::from_process(config);
    let data = args.data_dir.clone();
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    // local defaults: data under --data-dir, an admin token kept there
    let admin_file = data.join("admin-token");
    let admin = match read_trimmed(&admin_file) {
        Some(t) => t,
        None => {
            let t = format!("adm_{}", random_hex(20));
            write_private(&admin_file, &t)?;
            t
        }
    };
    let defaults = [
        (
            "TOCSIN_HISTORY__DATA_DIR",
            data.join("history").display().to_string(),
        ),
        (
            "TOCSIN_ARCHIVER__TARGET",
            data.join("archive").display().to_string(),
        ),
        ("TOCSIN_API__ADMIN_TOKEN", admin.clone()),
        (
            "TOCSIN_INGESTOR__ALLOW_LOOPBACK",
            allow_loopback.to_string(),
        ),
        (
            "TOCSIN_DELIVERY__ALLOW_LOOPBACK",
            allow_loopback.to_string(),
        ),
        ("TOCSIN_INGESTOR__SMTP_LISTEN", "127.0.0.1:2525".to_owned()),
    ];
    for (k, v) in defaults {
        source.env.entry(k.to_owned()).or_insert(v);
    }
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
    if let Some(u) = nats_url {
        cfg.set_nats_url(&u);
    } else {
        let url = url::Url::parse(&cfg.router.bus.url)
            .with_context(|| format!("bus.url {} is not a URL", cfg.router.bus.url))?;
        let port = url.port().unwrap_or(4222);
        let binary = find_binary(&std::env::current_dir()?).map_err(|e| anyhow!(e))?;
        let local = LocalNats::start(
            &binary,
            port,
            &data.join("nats"),
            Some(&data.join("nats.log")),
        )
        .map_err(|e| anyhow!(e))?;
        eprintln!(
            "nats-server {} on {} (store {})",
            binary.display(),
            local.url(),
            data.join("nats").display()
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
    let ready = wait_ready(&client, &cfg).await;
    if let Err(e) = ready {
        shutdown.cancel();
        bail!("tocsin did not become ready: {e:#}");
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
                    Some(&admin),
                    Some(&json!({"name": "demo"})),
                )
                .await?;
            write_private(&demo_file, &serde_json::to_string_pretty(&v)?)?;
            v
        }
    };
    println!();
    println!("tocsin is running. Ctrl-C stops it.");
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
        println!("  try:  tocsin feed add {d} --match bike --price-max 1000");
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
async fn wait_ready(client: &ApiClient, cfg: &AllConfig) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match client.call(Method::GET, "/readyz", None, None).await {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let bus = tocsin_bus::Bus::connect(&cfg.history.bus, "up").await?;
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

fn write_private(path: &Path, content: &str) -> Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(content.as_bytes())?;
    Ok(())
}
