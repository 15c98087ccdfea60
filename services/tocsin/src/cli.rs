//! The command line: every subcommand and its arguments, and where the API tokens come from.

use anyhow::{Result, anyhow};
use clap::{Args, Parser, Subcommand};
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "tocsin",
    version,
    about = "a self-hosted notification pipeline"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Cmd,
}

#[derive(Args, Clone)]
pub(crate) struct ApiArgs {
    /// The API's URL.
    #[arg(
        long,
        env = "TOCSIN_API_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub(crate) api: String,
    /// Your API token (default: the demo user's, from ./data/demo-user.json).
    #[arg(long, env = "TOCSIN_TOKEN", global = true, hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// The admin token (default: ./data/admin-token, written by `tocsin up`).
    #[arg(
        long,
        env = "TOCSIN_ADMIN_TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub(crate) admin_token: Option<String>,
    /// Where `tocsin up` keeps its data.
    #[arg(long, default_value = "./data", global = true)]
    pub(crate) data_dir: PathBuf,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
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
    /// Make every service's NATS identity (an NKey seed file each, kept if it exists) and
    /// nats-server's authorization block allowing each only what it does (ADR 0029).
    NatsAuth {
        /// Where the seeds (`<service>.nk`, 0600) and `auth.conf` go.
        #[arg(long, default_value = "./nats-auth")]
        dir: PathBuf,
        /// The configuration whose `bus.prefix` and `bus.silo_count` the permissions name.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also write `secrets.json` (a Kubernetes Secret per service, for the chart's
        /// `nats.auth`) and `nats-values.json` (the official NATS chart's values).
        #[arg(long)]
        helm: bool,
    },
    /// Exit 0 if URL answers 200 within the timeout: a container's health check
    /// (`tocsin probe http://127.0.0.1:9102/readyz`; the image has no shell or curl).
    Probe {
        url: String,
        #[arg(long, default_value_t = 3)]
        timeout_secs: u64,
    },
    /// The container image's entrypoint: `entrypoint <service> [--config FILE]` runs that
    /// service, `entrypoint tocsin <command>` the CLI.
    #[command(hide = true)]
    Entrypoint {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Check a configuration file and the environment: every problem is listed.
    Config {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Make a VAPID key pair for Web Push: the private key for
    /// TOCSIN_DELIVERY__WEB_PUSH__VAPID_PRIVATE_KEY, and the public key browsers will see.
    VapidKey,
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
    /// Your escalation policies: show them, set one from a JSON file (see docs/channels.md),
    /// or go back to the built-in one. `default` is what everything follows unless its source
    /// names another; `feeds` (built in: `default` without SMS) is what feed items follow.
    Policy {
        /// A JSON file holding the policy ("-": standard input).
        #[arg(long, conflicts_with = "reset")]
        set: Option<PathBuf>,
        /// Back to the built-in policy (`default`, `feeds`), or remove a named one.
        #[arg(long)]
        reset: bool,
        /// Which policy (default: `default`; with no --set or --reset and no name, all of them).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// A hook: its own secret URL for Alertmanager, Grafana or any program's JSON (prints the
    /// URL, shown only now). Its notifications are the source's (`tocsin feed set ID …`).
    Hook {
        /// `alertmanager`, `grafana` or `json`.
        #[arg(long)]
        format: String,
        #[arg(long, default_value = "")]
        label: String,
        /// For `json`: a JSON file holding the mapping (see docs/alerts.md; "-": standard input).
        #[arg(long)]
        mapping: Option<PathBuf>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Your e-mail rules (what forwarded mail means: priority, alert key, resolve): show them,
    /// set them from a JSON file (`{"rules": [...]}`, see docs/alerts.md), or remove them.
    MailRules {
        /// A JSON file holding the rules ("-": standard input).
        #[arg(long, conflicts_with = "reset")]
        set: Option<PathBuf>,
        #[arg(long)]
        reset: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// A heartbeat (dead-man's switch): prints the URL a cron job requests after each run;
    /// when a period passes without it, you are told, and the next request resolves that.
    Heartbeat {
        /// What it watches (`nightly backup`).
        label: String,
        /// How often it is pinged at least: `10m`, `1h`, `1d`.
        #[arg(long)]
        every: String,
        /// How late a ping may be: `5m` (the default).
        #[arg(long, default_value = "5m")]
        grace: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Silences: "not now" for a source, a tag or an alert key (history only, urgent included).
    Silence {
        #[command(subcommand)]
        cmd: SilenceCmd,
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
}

#[derive(Subcommand)]
pub(crate) enum UserCmd {
    /// Create a user; prints its id, API token and private feed URLs.
    Add {
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List the first 1,000 users.
    List,
    /// Delete a user and everything of theirs (sources, destinations, history, timers), at once.
    Delete { user_id: String },
}

#[derive(Subcommand)]
pub(crate) enum SilenceCmd {
    /// Silence what matches every option given (at least one), for a while; escalations under
    /// way that it matches stop.
    Add {
        /// A source: its id or label (a feed's label, an ntfy topic, Alertmanager's receiver).
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        tag: Option<String>,
        /// An alert's dedup key, or a prefix ending in `*`.
        #[arg(long)]
        key: Option<String>,
        /// How long: `90m`, `2h`, `3d` (at most 30 days).
        #[arg(long = "for", default_value = "1h")]
        duration: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// The silences not yet over.
    List,
    Rm {
        id: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum FeedCmd {
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
        /// Check the feed this often, in seconds (default: the ingestor's interval, 300 s;
        /// never more often than its min_poll_interval_secs).
        #[arg(long)]
        poll_secs: Option<u64>,
        /// What a listing's price change tells: drops (default), changes, off.
        #[arg(long)]
        prices: Option<String>,
        /// What a repost of a recent listing does: drop (default), mark, keep.
        #[arg(long)]
        reposts: Option<String>,
    },
    List,
    Rm {
        id: String,
    },
    /// Add any kind of source from a JSON file: the body of POST /v1/sources (a JSON API, a
    /// web page, a page to watch; the recipes in docs/sources.md are such files).
    AddJson {
        file: PathBuf,
    },
    /// What a source in a JSON file would notify now (a feed, a JSON API, a web page).
    Preview {
        file: PathBuf,
    },
    /// Print your feeds as OPML (what feed readers import).
    Export,
    /// Watch every feed an OPML file lists (a feed reader's export); new items only.
    Import {
        file: PathBuf,
    },
    /// Set how a source's notifications are treated (what is not given goes back to the
    /// default: the items' own priority, not muted, the policy for its kind).
    Set {
        id: String,
        /// Every notification from the source gets this priority (1-5).
        #[arg(long)]
        priority: Option<u8>,
        /// Keep its notifications in history without reaching anyone for this many minutes
        /// (urgent ones still get through).
        #[arg(long)]
        mute_minutes: Option<u64>,
        /// The escalation policy its notifications follow (see `tocsin policy`).
        #[arg(long)]
        policy: Option<String>,
        /// Group its notifications: the first at once, the rest of this many minutes in one
        /// summary when the window ends.
        #[arg(long)]
        group_minutes: Option<u64>,
        /// Gather its notifications into one message: every `hour`, every `day` (at --at,
        /// local time in --tz), or at a `count` (--count); urgent ones still go out at once.
        #[arg(long)]
        digest: Option<String>,
        /// A daily digest's time, HH:MM (default 08:00).
        #[arg(long, requires = "digest")]
        at: Option<String>,
        /// The digest's time zone (IANA, default UTC).
        #[arg(long, requires = "digest")]
        tz: Option<String>,
        /// How many make a digest (or send an hourly or daily one early).
        #[arg(long, requires = "digest")]
        count: Option<u32>,
    },
}

#[derive(Subcommand)]
pub(crate) enum DestCmd {
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
    /// Confirm an SMS, e-mail or XMPP destination with the code sent to it; without a code,
    /// send a new one.
    Verify {
        id: String,
        code: Option<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum DlqCmd {
    List {
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
    Replay {
        seq: u64,
    },
}

pub(crate) fn read_trimmed(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

pub(crate) fn admin_token(api: &ApiArgs) -> Result<String> {
    api.admin_token
        .clone()
        .or_else(|| read_trimmed(&api.data_dir.join("admin-token")))
        .ok_or_else(|| anyhow!("no admin token: pass --admin-token or TOCSIN_ADMIN_TOKEN (tocsin up writes one to {}/admin-token)", api.data_dir.display()))
}

pub(crate) fn user_token(api: &ApiArgs) -> Result<String> {
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
