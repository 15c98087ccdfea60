//! Who may do what on the bus: one NATS identity per service, and the subjects each may publish
//! and subscribe to, derived from the contract's names (ADR 0029). `tocsin nats-auth` writes
//! them into nats-server's `authorization` block; [`Role::manages`] is the client's side of the
//! same rule (a service creates or changes only the streams and buckets it owns).

use crate::{StreamKind, Subjects};

/// A service's identity on the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Api,
    Router,
    History,
    Delivery,
    Ingestor,
    Archiver,
    /// Operators' tools (`tocsin dlq`, `tocsin up`'s own checks), tests and benchmarks: every
    /// permission.
    Admin,
}

/// The KV buckets of the contract and the service that creates and configures each.
pub const BUCKETS: [(&str, Role); 11] = [
    ("avatars", Role::Router),
    ("seen", Role::Router),
    ("addresses", Role::Router),
    ("timers", Role::Router),
    ("leases", Role::Router),
    ("feeds", Role::Ingestor),
    ("imap", Role::Ingestor),
    ("keys", Role::Delivery),
    ("progress", Role::Delivery),
    ("sent", Role::Delivery),
    ("topics", Role::Api),
];

/// What one identity may publish and subscribe to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

impl Role {
    pub const SERVICES: [Role; 6] = [
        Role::Api,
        Role::Router,
        Role::History,
        Role::Delivery,
        Role::Ingestor,
        Role::Archiver,
    ];

    /// The role of the service named `name` (`Bus::connect`'s name); any other name is a tool.
    pub fn of(name: &str) -> Role {
        match name {
            "api" => Role::Api,
            "router" => Role::Router,
            "history" => Role::History,
            "delivery" => Role::Delivery,
            "ingestor" => Role::Ingestor,
            "archiver" => Role::Archiver,
            _ => Role::Admin,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Router => "router",
            Role::History => "history",
            Role::Delivery => "delivery",
            Role::Ingestor => "ingestor",
            Role::Archiver => "archiver",
            Role::Admin => "admin",
        }
    }

    /// The prefix of this identity's reply subjects: its own, so that no other service may
    /// subscribe to the answers it gets.
    pub fn inbox_prefix(self) -> String {
        format!("_INBOX_{}", self.name())
    }

    /// Whether this role creates and configures `stream` (others only create it when missing).
    pub fn manages_stream(self, stream: StreamKind) -> bool {
        self == Role::Admin
            || self
                == match stream {
                    StreamKind::Silo(_) => Role::Router,
                    StreamKind::History => Role::History,
                    StreamKind::Ingest => Role::Ingestor,
                    StreamKind::Delivery => Role::Delivery,
                    StreamKind::DeadLetter => Role::Api,
                    StreamKind::Events => Role::Archiver,
                }
    }

    /// Whether this role creates and configures bucket `name` (`avatars`, …).
    pub fn manages_bucket(self, name: &str) -> bool {
        self == Role::Admin || BUCKETS.iter().any(|(b, r)| *b == name && *r == self)
    }

    /// This role's permissions for an installation with these names and `silo_count` silos.
    pub fn permissions(self, s: &Subjects, silo_count: u32) -> Permissions {
        let mut p = Grants::new(s, silo_count, self);
        let pre = s.prefix();
        match self {
            Role::Admin => {
                return Permissions {
                    publish: vec![">".into()],
                    subscribe: vec![">".into()],
                };
            }
            Role::Api => {
                p.owns_stream(StreamKind::DeadLetter);
                p.pub_(&format!(
                    "$JS.API.STREAM.MSG.GET.{}",
                    s.stream(StreamKind::DeadLetter)
                ));
                p.pub_(&format!(
                    "$JS.API.STREAM.MSG.DELETE.{}",
                    s.stream(StreamKind::DeadLetter)
                ));
                p.reads("avatars");
                p.reads("addresses");
                p.reads("keys");
                p.reads("leases");
                p.writes("topics");
                for kind in ["notify", "cmd", "reply", "ack", "resolve", "ping"] {
                    p.pub_(&format!("{pre}.silo.*.*.{kind}"));
                }
                p.pub_(&format!("{pre}.events.*"));
                p.pub_(&format!("{pre}.ingest.topic.*"));
                p.pub_(&format!("{pre}.rpc.>"));
                // a dead letter is replayed to the subject it came from, on any stream but
                // the dead letters' own
                for all in [s.silos_all(), s.history_all(), s.ingest_all()] {
                    p.pub_(&all);
                }
                p.pub_(&s.delivery_all());
                p.pub_(&s.events_all());
                p.sub(&format!("{pre}.live.*"));
            }
            Role::Router => {
                for k in 0..silo_count {
                    p.consumes(StreamKind::Silo(k));
                    p.owns_stream(StreamKind::Silo(k));
                }
                for b in ["avatars", "seen", "addresses", "timers", "leases"] {
                    p.writes(b);
                }
                p.pub_(&s.silos_all());
                p.pub_(&s.history_all());
                p.pub_(&format!("{pre}.delivery.*"));
                p.pub_(&format!("{pre}.events.*"));
                p.pub_(&s.ingest_subscriptions());
                p.pub_(&s.ingest_imap());
                // a command's answer goes to the API's inbox named in the command
                p.pub_(&format!("{}.>", Role::Api.inbox_prefix()));
            }
            Role::History => {
                p.consumes(StreamKind::History);
                p.owns_stream(StreamKind::History);
                p.sub(&format!("{pre}.rpc.history.>"));
                p.pub_(&format!("{pre}.live.*"));
            }
            Role::Delivery => {
                p.consumes(StreamKind::Delivery);
                p.owns_stream(StreamKind::Delivery);
                p.writes("keys");
                p.writes("progress");
                p.writes("sent");
                p.reads("addresses");
                p.pub_(&format!("{pre}.delivery.*.parked"));
                p.pub_(&s.history_all());
                p.pub_(&format!("{pre}.events.*"));
                for kind in ["status", "outcome", "presence", "reply"] {
                    p.pub_(&format!("{pre}.silo.*.*.{kind}"));
                }
                p.sub(&format!("{pre}.rpc.delivery.>"));
            }
            Role::Ingestor => {
                p.consumes(StreamKind::Ingest);
                p.owns_stream(StreamKind::Ingest);
                p.writes("feeds");
                p.writes("imap");
                p.reads("avatars");
                for kind in ["notify", "status", "refused"] {
                    p.pub_(&format!("{pre}.silo.*.*.{kind}"));
                }
                p.pub_(&format!("{pre}.events.*"));
                p.sub(&format!("{pre}.rpc.ingest.>"));
            }
            Role::Archiver => {
                p.consumes(StreamKind::Events);
                p.owns_stream(StreamKind::Events);
                p.sub(&format!("{pre}.rpc.archiver.>"));
            }
        }
        p.done()
    }
}

/// Builds one role's lists from what it does (each subject once, in the order granted).
struct Grants<'a> {
    s: &'a Subjects,
    role: Role,
    out: Permissions,
    seen: std::collections::HashSet<(bool, String)>,
}

impl<'a> Grants<'a> {
    /// What every service may do: answer requests it gets (`allow_responses` in the server's
    /// config), read its own inbox, look at the contract's streams and create one that is
    /// missing, and dead-letter.
    fn new(s: &'a Subjects, silo_count: u32, role: Role) -> Self {
        let mut g = Grants {
            s,
            role,
            out: Permissions::default(),
            seen: Default::default(),
        };
        g.sub(&format!("{}.>", role.inbox_prefix()));
        g.pub_("$JS.API.INFO");
        let mut streams: Vec<String> = (0..silo_count)
            .map(|k| s.stream(StreamKind::Silo(k)))
            .collect();
        for kind in [
            StreamKind::History,
            StreamKind::Ingest,
            StreamKind::Delivery,
            StreamKind::DeadLetter,
            StreamKind::Events,
        ] {
            streams.push(s.stream(kind));
        }
        for name in streams {
            g.pub_(&format!("$JS.API.STREAM.INFO.{name}"));
            g.pub_(&format!("$JS.API.STREAM.CREATE.{name}"));
        }
        g.pub_(&s.dead_letter_all());
        g
    }

    fn pub_(&mut self, subject: &str) {
        if self.seen.insert((true, subject.to_owned())) {
            self.out.publish.push(subject.to_owned());
        }
    }

    fn sub(&mut self, subject: &str) {
        if self.seen.insert((false, subject.to_owned())) {
            self.out.subscribe.push(subject.to_owned());
        }
    }

    /// Pull from durable consumers of `stream` (made and read by this role) and ack.
    fn consumes(&mut self, stream: StreamKind) {
        let name = self.s.stream(stream);
        self.consumer_api(&name);
        self.pub_(&format!("$JS.ACK.{name}.>"));
    }

    fn consumer_api(&mut self, stream: &str) {
        for op in ["CREATE", "DURABLE.CREATE", "INFO", "MSG.NEXT", "DELETE"] {
            self.pub_(&format!("$JS.API.CONSUMER.{op}.{stream}"));
            self.pub_(&format!("$JS.API.CONSUMER.{op}.{stream}.>"));
        }
    }

    fn owns_stream(&mut self, stream: StreamKind) {
        let name = self.s.stream(stream);
        self.pub_(&format!("$JS.API.STREAM.UPDATE.{name}"));
    }

    /// Read bucket `b`: get, batched get, watch and list keys (an ordered consumer of its own,
    /// with flow control), and create it if missing; configure it if this role owns it.
    fn reads(&mut self, b: &str) {
        let bucket = self.s.bucket(b);
        let stream = format!("KV_{bucket}");
        self.pub_(&format!("$JS.API.STREAM.INFO.{stream}"));
        self.pub_(&format!("$JS.API.STREAM.CREATE.{stream}"));
        if self.role.manages_bucket(b) {
            self.pub_(&format!("$JS.API.STREAM.UPDATE.{stream}"));
        }
        self.pub_(&format!("$JS.API.DIRECT.GET.{stream}"));
        self.pub_(&format!("$JS.API.DIRECT.GET.{stream}.>"));
        self.pub_(&format!("$JS.API.STREAM.MSG.GET.{stream}"));
        self.consumer_api(&stream);
        self.pub_(&format!("$JS.FC.{stream}.>"));
    }

    /// Read and write bucket `b` (puts, revision-checked updates, deletes and purges).
    fn writes(&mut self, b: &str) {
        self.reads(b);
        let bucket = self.s.bucket(b);
        self.pub_(&format!("$KV.{bucket}.>"));
    }

    fn done(self) -> Permissions {
        self.out
    }
}
