//! `tocsin-bench mail`: SMTP transactions through the ingestor's ingress against a raw
//! JetStream baseline from the same run, and the mail parser's cost alone.

use crate::common::{BenchNats, Figures, baseline, create_users, figure_rows, figures};
use crate::pipeline::BenchOptions;
use anyhow::{Context, Result, anyhow};
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tocsin_bus::{Bus, BusConfig};
use tocsin_model::UserId;
use tokio_util::sync::CancellationToken;

/// Options of `tocsin-bench mail`.
#[derive(Debug, Clone)]
pub struct MailBenchOptions {
    pub messages: usize,
    pub senders: usize,
    pub users: usize,
    pub timeout: Duration,
}

pub struct MailReport {
    pub baseline: Figures,
    pub ingress: Figures,
    pub parse_us: f64,
    pub options: MailBenchOptions,
}

impl MailReport {
    pub fn table(&self) -> String {
        let o = &self.options;
        let mut s = format!(
            "tocsin-bench mail: {} messages from {} concurrent SMTP senders to {} addresses\n",
            o.messages, o.senders, o.users
        );
        s.push_str(&figure_rows(&[&self.baseline, &self.ingress], 44));
        s.push_str(&format!(
            "{:<44} {:>10.3}\n",
            "ratio ingress/baseline (rate)",
            self.ingress.per_sec / self.baseline.per_sec
        ));
        s.push_str(&format!(
            "{:<44} {:>10.1}\n",
            "parse cost per message (µs, Grafana alert)", self.parse_us
        ));
        s
    }
}

const ALERT: &[u8] = include_bytes!("../../services/ingestor/tests/mail/grafana-alert.eml");

/// SMTP transactions through the ingress (accepted = on the bus), against a raw JetStream
/// baseline from the same run, and the parser's cost alone.
pub async fn run(opts: MailBenchOptions) -> Result<MailReport> {
    let parse_us = {
        let n = 5000;
        let started = Instant::now();
        for _ in 0..n {
            std::hint::black_box(tocsin_ingestor::mail::parse::parse(std::hint::black_box(
                ALERT,
            )));
        }
        started.elapsed().as_secs_f64() * 1e6 / n as f64
    };
    let nats = BenchNats::start()?;
    let url = nats.url.clone();
    let base_opts = BenchOptions {
        notifications: opts.messages,
        users: opts.users,
        silo_count: 16,
        window: 512,
        rate: 0,
        timeout: opts.timeout,
        warm: 0,
    };
    let baseline = baseline(&url, &base_opts).await.context("baseline")?;

    let bus_cfg = BusConfig {
        url: url.clone(),
        prefix: "benchmail".into(),
        silo_count: 16,
        ..Default::default()
    };
    let smtp_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let shutdown = CancellationToken::new();
    let router = tocsin_router::Config {
        bus: bus_cfg.clone(),
        router: tocsin_router::RouterConfig {
            ops_listen: String::new(),
            ..Default::default()
        },
    };
    let ingestor = tocsin_ingestor::Config {
        bus: bus_cfg.clone(),
        ingestor: tocsin_ingestor::IngestorConfig {
            ops_listen: String::new(),
            smtp_listen: format!("127.0.0.1:{smtp_port}"),
            smtp_per_address_per_minute: 0,
            smtp_max_connections: opts.senders.max(1) * 2,
            // every sender is on loopback: one client
            smtp_max_connections_per_client: opts.senders.max(1) * 2,
            ..Default::default()
        },
    };
    let r = tokio::spawn(tocsin_router::run(router, shutdown.clone()));
    let i = tokio::spawn(tocsin_ingestor::run(ingestor, shutdown.clone()));
    let bus = Bus::connect(&bus_cfg, "bench").await?;
    bus.ensure_streams().await?;
    let users: Vec<UserId> = (0..opts.users)
        .map(|n| UserId::parse(&format!("mail{n}")).expect("valid"))
        .collect();
    let secret = |u: &UserId| format!("s{u}");
    create_users(
        &bus,
        &users,
        |u| tocsin_model::hash_token(&secret(u)),
        512,
        opts.timeout,
    )
    .await?;
    let addresses: Vec<String> = users
        .iter()
        .map(|u| format!("{u}.{}@bench.test", secret(u)))
        .collect();
    // wait for the SMTP listener
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", smtp_port))
        .await
        .is_err()
    {
        if i.is_finished() {
            shutdown.cancel();
            let result = i.await?;
            return Err(anyhow!("the ingestor stopped: {:?}", result.err()));
        }
        anyhow::ensure!(Instant::now() < deadline, "the SMTP ingress did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let per_sender = opts.messages.div_ceil(opts.senders.max(1));
    let addresses = Arc::new(addresses);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..opts.senders.max(1) {
        let addresses = addresses.clone();
        let total = opts.messages;
        tasks.spawn(async move {
            // one connection per sender, reused, with TCP_NODELAY and pipelining as production
            // MTAs do
            let mut smtp = SmtpClient::connect(smtp_port).await?;
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            let mut sent = 0;
            for k in 0..per_sender {
                let n = s * per_sender + k;
                if n >= total {
                    break;
                }
                let to = &addresses[n % addresses.len()];
                let raw = format!(
                    "From: Grafana <alerts@grafana.example.org>\r\nTo: {to}\r\nSubject: [FIRING:1] DiskSpaceLow db{n}\r\nMessage-ID: <bench-{n}@grafana.example.org>\r\nX-Priority: 1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nValue: A=97.3\r\nsummary = /var is 97% full on db{n}\r\nSource: https://grafana.example.org/alerting/{n}/view\r\n"
                );
                let t = Instant::now();
                smtp.send("alerts@grafana.example.org", to, &raw).await?;
                hist.record(t.elapsed().as_micros().max(1) as u64)?;
                sent += 1;
            }
            smtp.quit().await;
            Ok::<_, anyhow::Error>((sent, hist))
        });
    }
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let mut sent = 0;
    while let Some(done) = tasks.join_next().await {
        let (n, h) = done??;
        sent += n;
        hist.add(h)?;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    let _ = r.await;
    let _ = i.await;
    Ok(MailReport {
        baseline,
        ingress: figures(
            "tocsin SMTP ingress (250 = on the bus)",
            sent,
            elapsed,
            &hist,
        ),
        parse_us,
        options: opts,
    })
}

/// A minimal SMTP client for the benchmark: one transaction at a time on one connection.
struct SmtpClient {
    r: tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl SmtpClient {
    async fn connect(port: u16) -> Result<Self> {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        let mut c = Self {
            r: tokio::io::BufReader::new(r),
            w,
        };
        c.expect("220").await?;
        c.command("EHLO bench.test\r\n", "250").await?;
        Ok(c)
    }

    async fn expect(&mut self, code: &str) -> Result<()> {
        use tokio::io::AsyncBufReadExt;
        loop {
            let mut line = String::new();
            anyhow::ensure!(
                self.r.read_line(&mut line).await? > 0,
                "the server closed the connection"
            );
            anyhow::ensure!(
                line.starts_with(code),
                "expected {code}, got {}",
                line.trim()
            );
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(());
            }
        }
    }

    async fn command(&mut self, line: &str, code: &str) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        self.w.write_all(line.as_bytes()).await?;
        self.expect(code).await
    }

    /// One transaction, its envelope pipelined (RFC 2920, which the ingress offers) as
    /// production MTAs send it: two round trips, not four.
    async fn send(&mut self, from: &str, to: &str, data: &str) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let envelope = format!("MAIL FROM:<{from}>\r\nRCPT TO:<{to}>\r\nDATA\r\n");
        self.w.write_all(envelope.as_bytes()).await?;
        self.expect("250").await?;
        self.expect("250").await?;
        self.expect("354").await?;
        self.command(&format!("{data}.\r\n"), "250").await
    }

    async fn quit(&mut self) {
        let _ = self.command("QUIT\r\n", "221").await;
    }
}
