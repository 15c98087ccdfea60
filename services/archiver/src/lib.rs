//! The archiver: every event on the bus into Parquet files, partitioned by date and hour, in a
//! local directory or an S3-compatible bucket; and the analytics that read them back.
//!
//! It is one durable consumer (`archiver`) of the event stream. Events are held in memory
//! until a file is due — `roll_max_events`, `roll_max_bytes` or `roll_max_age_secs`,
//! whichever comes first — then written, one file per hour the events fall in, each named by
//! the lowest and highest stream sequence number in it ([`store::FileName`]). A roll is
//! written on a task of its own while the next one fills (one write at a time, so at most two
//! rolls are held). Only once every file of the roll is durable are its events acked. A message may carry one event or an
//! envelope of them (ADR 0016); each event is a row with its message's sequence number.
//!
//! A crash can therefore leave files whose events were never acked. The events come back;
//! at start-up the archiver reads the sequence numbers of the files above the consumer's ack
//! floor (with the event ids in them: an envelope's events can fall into two hours' files,
//! and a crash between the two leaves it half written), and while running remembers what it
//! wrote, and acks such an event without writing it again. So a restart neither loses nor duplicates a row. Events the archiver cannot
//! decode are dead-lettered, with the reason, not dropped.
//!
//! Run one archiver per installation: two would each write their own files, and an event
//! redelivered from one to the other while the first was writing could be archived twice.

pub mod analytics;
mod position;
mod reports;
pub mod store;
pub mod table;
mod telemetry;

use async_nats::jetstream;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use store::{Archive, FileName, S3Options};
use tocsin_bus::{Bus, BusConfig, BusError, Disposition, StreamKind};
use tocsin_model::Event;
use tocsin_runtime::ServiceError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The `[archiver]` section.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiverConfig {
    /// Where the archive is: a directory, or `s3://bucket[/prefix]`.
    pub target: String,
    /// For an `s3://` target.
    pub s3: S3Options,
    /// A roll (one file per hour it covers) is written after this many events…
    pub roll_max_events: usize,
    /// …or once the events held take this many bytes (as they came off the bus)…
    pub roll_max_bytes: usize,
    /// …or when its oldest event has waited this long.
    pub roll_max_age_secs: u64,
    pub ops_listen: String,
}

impl Default for ArchiverConfig {
    fn default() -> Self {
        Self {
            target: "./data/archive".into(),
            s3: S3Options::default(),
            roll_max_events: 100_000,
            roll_max_bytes: 64 * 1024 * 1024,
            roll_max_age_secs: 60,
            ops_listen: "127.0.0.1:9106".into(),
        }
    }
}

tocsin_runtime::service_config!(archiver: ArchiverConfig, ops: ops_listen);

impl ArchiverConfig {
    /// What is wrong with this section, given the `[bus]` one; each problem names its field.
    pub fn check(&self, _bus: &BusConfig) -> Vec<String> {
        let mut p = Vec::new();
        p.extend(self.problems());
        p
    }
}

impl ArchiverConfig {
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Err(e) = Archive::open(&self.target, &self.s3) {
            p.push(e.to_string());
        }
        if !(1..=1_000_000).contains(&self.roll_max_events) {
            p.push(format!(
                "archiver.roll_max_events: must be 1-1000000, got {}",
                self.roll_max_events
            ));
        }
        if self.roll_max_bytes < 1024 {
            p.push("archiver.roll_max_bytes: must be at least 1024".into());
        }
        if !(1..=3600).contains(&self.roll_max_age_secs) {
            p.push(format!(
                "archiver.roll_max_age_secs: must be 1-3600, got {}",
                self.roll_max_age_secs
            ));
        }
        p
    }
}

/// Run until `shutdown`; what is held is written and acked before it returns.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ServiceError> {
    telemetry::describe();
    let cfg = config.archiver.clone();
    let archive = Archive::open(&cfg.target, &cfg.s3)?;
    if let Archive::Local(root) = &archive {
        // fail now if it cannot be made, not at the first roll; and `tocsin analytics` finds it
        std::fs::create_dir_all(root).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot create archiver.target {}: {e}", root.display()),
            )
        })?;
    }
    let removed = archive.clean_up().await?;
    if removed > 0 {
        info!(
            removed,
            "removed the temporary files of an interrupted write"
        );
    }
    let (bus, ready) = config.connect(&shutdown).await?;
    let mut consumer = consumer(&bus, &cfg).await?;
    let floor = ack_floor(&mut consumer).await?;
    let written = recently_written(&archive, floor).await;
    let _reports = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(reports::serve(
        bus.clone(),
        archive.clone(),
        shutdown.clone(),
    )));
    let mut roll = Roll::new(archive, written);
    ready.set(true);
    info!(target = %roll.archive, "archiver running");
    let mut pull = tocsin_bus::Pull::new(
        consumer.clone(),
        cfg.roll_max_events.min(4096),
        "the event stream",
    );
    let mut retry_at: Option<Instant> = None;
    // the roll being written while the next one fills (one at a time)
    let mut writing: Option<tokio::task::JoinHandle<Written>> = None;
    loop {
        let due = match (roll.oldest, retry_at) {
            (_, Some(r)) => r,
            (Some(o), None) => o + Duration::from_secs(cfg.roll_max_age_secs),
            (None, None) => Instant::now() + Duration::from_secs(3600),
        };
        let full = roll.len() >= cfg.roll_max_events || roll.bytes >= cfg.roll_max_bytes;
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break,
            done = async {
                match writing.as_mut() {
                    Some(w) => w.await,
                    None => std::future::pending().await,
                }
            }, if writing.is_some() => {
                writing = None;
                retry_at = finished(&mut roll, &mut consumer, done).await;
                None
            }
            _ = tokio::time::sleep_until(due) => None,
            // a full roll waits for the one being written before it takes more
            m = pull.next(), if !full => Some(m),
        };
        if let Some(m) = msg {
            roll.take(&bus, m).await;
            while roll.len() < cfg.roll_max_events
                && roll.bytes < cfg.roll_max_bytes
                && let Some(m) = pull.next_ready()
            {
                roll.take(&bus, m).await;
            }
            // what was found already written (after a restart) is acked as far as it may go
            roll.position.ack().await;
        }
        let full = roll.len() >= cfg.roll_max_events || roll.bytes >= cfg.roll_max_bytes;
        let old = roll
            .oldest
            .is_some_and(|o| o.elapsed() >= Duration::from_secs(cfg.roll_max_age_secs));
        // after a failed write, the next try waits for its time (not for the next message)
        let may_write = retry_at.is_none_or(|r| Instant::now() >= r);
        if (full || old || retry_at.is_some()) && may_write && !roll.is_empty() && writing.is_none()
        {
            // written on a task of its own: the next roll fills meanwhile
            let sealed = roll.seal();
            writing = Some(tokio::spawn(sealed.write(roll.archive.clone())));
            retry_at = None;
        }
    }
    if let Some(w) = writing.take() {
        finished(&mut roll, &mut consumer, w.await).await;
    }
    // give back what was pulled but not taken, then write what is held
    let rest = pull
        .stop(cfg.roll_max_events, Duration::from_millis(20))
        .await;
    for m in rest {
        roll.take(&bus, m).await;
    }
    roll.position.ack().await;
    if !roll.is_empty()
        && let Err(e) = roll.write().await
    {
        warn!(error = %e, events = roll.len(), "cannot write the archive at shutdown; the events stay on the bus and are archived at the next start");
        roll.leave_all();
    }
    ready.set(false);
    bus.drain().await;
    info!("archiver stopped");
    Ok(())
}

/// What a roll written on its own task comes back as: its events, and whether their files are
/// durable.
type Written = (Sealed, Result<(), ServiceError>);

/// A roll's write has finished: its events are acked, or taken back to be written with the
/// next roll. Returns when to try again after a failure.
async fn finished(
    roll: &mut Roll,
    consumer: &mut jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
    done: Result<Written, tokio::task::JoinError>,
) -> Option<Instant> {
    match done {
        Ok((sealed, Ok(()))) => {
            roll.acked(sealed).await;
            if let Ok(f) = ack_floor(consumer).await {
                roll.forget_below(f);
            }
            None
        }
        Ok((sealed, Err(e))) => {
            warn!(error = %e, events = sealed.events, "cannot write the archive; holding the events and trying again in 5 s");
            roll.restore(sealed);
            Some(Instant::now() + Duration::from_secs(5))
        }
        Err(e) => {
            // its events were dropped unsettled: redelivered after ack_wait, none lost
            warn!(error = %e, "the archive's writing task failed; its events come back from the bus");
            roll.in_flight.clear();
            Some(Instant::now() + Duration::from_secs(5))
        }
    }
}

/// The archiver's durable consumer of the event stream.
async fn consumer(
    bus: &Bus,
    cfg: &ArchiverConfig,
) -> Result<jetstream::consumer::Consumer<jetstream::consumer::pull::Config>, BusError> {
    // events are held until their file is written: they must not be redelivered meanwhile;
    // two rolls' worth are pending at most (one being written while the next fills)
    let ack_wait = Duration::from_secs(cfg.roll_max_age_secs + bus.config().ack_wait_secs);
    bus.positional_consumer(
        StreamKind::Events,
        "archiver",
        2 * cfg.roll_max_events as i64,
        ack_wait,
    )
    .await
}

async fn ack_floor(
    consumer: &mut jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
) -> Result<u64, BusError> {
    consumer
        .info()
        .await
        .map(|i| i.ack_floor.stream_sequence)
        .map_err(|e| BusError::Other(format!("cannot read the archiver consumer's state: {e}")))
}

/// The events above `floor` that files in the archive already hold, by stream sequence number
/// and event id: written before a crash, never acked. Files that cannot be read are reported
/// and left out (their events are written again, under the same name when the roll is the
/// same).
pub async fn recently_written(archive: &Archive, floor: u64) -> BTreeMap<u64, BTreeSet<String>> {
    let mut out: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    let listed = match archive.list().await {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "cannot list the archive; events already in it may be written again");
            return out;
        }
    };
    for f in listed {
        let Some(name) = &f.name else { continue };
        if name.last_seq <= floor {
            continue;
        }
        let read = match archive.get(&f.relative).await {
            Ok(bytes) => table::read_seq_ids(bytes).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match read {
            Ok(rows) => {
                for (seq, id) in rows.into_iter().filter(|(s, _)| *s > floor) {
                    out.entry(seq).or_default().insert(id);
                }
            }
            Err(e) => {
                warn!(file = %f.relative, error = %e, "cannot read an archive file written before a restart; its events will be written again")
            }
        }
    }
    if !out.is_empty() {
        info!(
            events = out.len(),
            "events archived before the last stop but not yet acked; they will be acked, not written again"
        );
    }
    out
}

/// Write `rows` (events with their stream sequence numbers, in sequence order) as archive
/// files: one per date and hour they fall in, each named by the sequence range in it. The
/// Parquet encoding runs on a blocking thread. Returns the files and bytes written.
pub async fn write_rows(
    archive: &Archive,
    rows: &[(u64, &Event)],
) -> Result<(usize, usize), ServiceError> {
    let mut files: BTreeMap<(String, String), Vec<(u64, &Event)>> = BTreeMap::new();
    for (seq, event) in rows {
        let name = FileName::new(event.at_ms, 0, 0);
        files
            .entry((name.date, name.hour))
            .or_default()
            .push((*seq, event));
    }
    let mut bytes_written = 0;
    for rows in files.values() {
        let first = rows.first().map(|r| r.0).unwrap_or_default();
        let last = rows.last().map(|r| r.0).unwrap_or_default();
        let name = FileName::new(rows[0].1.at_ms, first, last).relative();
        let batch = table::to_batch(rows).map_err(|e| {
            std::io::Error::other(format!("cannot build the columns of {name}: {e}"))
        })?;
        let encoded = tokio::task::spawn_blocking(move || table::to_parquet(&batch))
            .await
            .map_err(|e| std::io::Error::other(format!("the encoding task failed: {e}")))?;
        let bytes: Bytes =
            encoded.map_err(|e| std::io::Error::other(format!("cannot encode {name}: {e}")))?;
        bytes_written += bytes.len();
        archive.put(&name, bytes).await?;
    }
    Ok((files.len(), bytes_written))
}

/// Write the files of `held` (events by message sequence) and count them.
async fn write_held(
    archive: &Archive,
    held: &BTreeMap<u64, (Vec<Event>, tocsin_bus::Inbound)>,
) -> Result<(), ServiceError> {
    let started = Instant::now();
    let rows: Vec<(u64, &Event)> = held
        .iter()
        .flat_map(|(s, (events, _))| events.iter().map(move |e| (*s, e)))
        .collect();
    let (files, bytes) = write_rows(archive, &rows).await?;
    metrics::counter!(crate::telemetry::FILES).increment(files as u64);
    metrics::counter!(crate::telemetry::BYTES).increment(bytes as u64);
    debug!(
        events = rows.len(),
        files,
        bytes,
        ms = started.elapsed().as_millis() as u64,
        "archived"
    );
    Ok(())
}

/// The events in a message: one, or an envelope of them.
fn decode_events(payload: &Bytes) -> Result<Vec<Event>, BusError> {
    if !tocsin_bus::envelope::is_envelope(payload) {
        return tocsin_bus::decode(payload, "event").map(|e| vec![e]);
    }
    tocsin_bus::envelope::records(payload)?
        .iter()
        .enumerate()
        .map(|(i, r)| {
            tocsin_bus::decode(&r.payload, "event").map_err(|e| match r.id.is_empty() {
                true => e,
                false => BusError::Other(format!("record {i} ({}): {e}", r.id)),
            })
        })
        .collect()
}

/// The events held for the next files.
struct Roll {
    archive: Archive,
    /// By stream sequence: a redelivered message replaces its earlier delivery.
    held: BTreeMap<u64, (Vec<Event>, tocsin_bus::Inbound)>,
    /// The events in `held`.
    events: usize,
    bytes: usize,
    oldest: Option<Instant>,
    /// Messages written whole but perhaps not yet acked (above the ack floor).
    written: BTreeSet<u64>,
    /// Events found in the archive at start-up, by message: written before the last stop.
    found: BTreeMap<u64, BTreeSet<String>>,
    /// Messages of the roll being written on its own task.
    in_flight: BTreeSet<u64>,
    /// How far the consumer may be acked.
    position: position::Position,
}

/// A roll taken out to be written while the next fills: its messages, unacked until their
/// files are durable.
struct Sealed {
    held: BTreeMap<u64, (Vec<Event>, tocsin_bus::Inbound)>,
    events: usize,
    bytes: usize,
}

impl Sealed {
    /// Write its files (its events stay held either way).
    async fn write(self, archive: Archive) -> Written {
        let result = write_held(&archive, &self.held).await;
        (self, result)
    }
}

impl Roll {
    fn new(archive: Archive, found: BTreeMap<u64, BTreeSet<String>>) -> Roll {
        Roll {
            archive,
            held: BTreeMap::new(),
            events: 0,
            bytes: 0,
            oldest: None,
            written: BTreeSet::new(),
            found,
            in_flight: BTreeSet::new(),
            position: position::Position::default(),
        }
    }

    fn len(&self) -> usize {
        self.events
    }

    fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    async fn take(&mut self, bus: &Bus, msg: tocsin_bus::Inbound) {
        let Ok(info) = msg.message().info() else {
            msg.settle(bus, Disposition::Reject("not a JetStream message".into()))
                .await;
            return;
        };
        let seq = info.stream_sequence;
        if self.in_flight.contains(&seq) {
            // redelivered while its roll is being written: that roll acks it, or it comes back
            // once more and is then known as written
            debug!(seq, "being archived; leaving this delivery");
            msg.leave();
            return;
        }
        if self.written.contains(&seq) {
            debug!(seq, "already archived; acking it again");
            self.position.settle(seq, msg.into_positioned());
            return;
        }
        let mut events = match decode_events(&msg.message().payload) {
            Ok(e) => e,
            Err(e) => {
                warn!(subject = %msg.message().subject, seq, error = %e, "an event that cannot be archived; dead-lettering it");
                metrics::counter!(crate::telemetry::REJECTED).increment(1);
                // set aside, then settled by position (a Term would settle all before it)
                match bus.set_aside(msg.message(), &e.to_string()).await {
                    Ok(()) => self.position.settle(seq, msg.into_positioned()),
                    Err(e) => {
                        // held back until it is redelivered and set aside
                        warn!(seq, error = %e, "cannot dead-letter an event; it is tried again after ack_wait");
                        self.position.open(seq);
                        msg.leave();
                    }
                }
                return;
            }
        };
        if let Some(ids) = self.found.get(&seq) {
            // written before the last stop, in part or whole: only the rest is written now
            events.retain(|e| !ids.contains(&e.id));
            if events.is_empty() {
                debug!(seq, "already archived; acking it again");
                self.position.settle(seq, msg.into_positioned());
                return;
            }
        }
        let size = msg.message().payload.len();
        let count = events.len();
        self.position.open(seq);
        match self.held.insert(seq, (events, msg)) {
            // a redelivery of a message already held: the newer delivery is acked with the roll
            Some((older_events, older)) => {
                self.events -= older_events.len();
                older.leave();
            }
            None => self.bytes += size,
        }
        self.events += count;
        self.oldest.get_or_insert_with(Instant::now);
    }

    /// Write every file of this roll, then ack its events.
    async fn write(&mut self) -> Result<(), ServiceError> {
        self.write_files().await?;
        self.ack_all().await;
        Ok(())
    }

    /// Write every file of this roll (the events stay held).
    async fn write_files(&mut self) -> Result<(), ServiceError> {
        write_held(&self.archive, &self.held).await
    }

    /// Ack every held event (its file is durable) and remember it as written.
    async fn ack_all(&mut self) {
        let sealed = self.seal();
        self.acked(sealed).await;
    }

    /// Take the held events out to be written while the next roll fills.
    fn seal(&mut self) -> Sealed {
        let held = std::mem::take(&mut self.held);
        self.in_flight.extend(held.keys().copied());
        let sealed = Sealed {
            held,
            events: self.events,
            bytes: self.bytes,
        };
        self.events = 0;
        self.bytes = 0;
        self.oldest = None;
        sealed
    }

    /// A sealed roll's files are durable: settle its events, ack as far as that allows (one
    /// ack for the roll), and remember them as written.
    async fn acked(&mut self, sealed: Sealed) {
        for (seq, (_, msg)) in sealed.held {
            self.position.settle(seq, msg.into_positioned());
            self.in_flight.remove(&seq);
            self.written.insert(seq);
            self.found.remove(&seq);
        }
        self.position.ack().await;
        metrics::counter!(crate::telemetry::EVENTS).increment(sealed.events as u64);
    }

    /// A sealed roll could not be written: its events are held again, to be written with
    /// what came since.
    fn restore(&mut self, sealed: Sealed) {
        for (seq, entry) in sealed.held {
            self.in_flight.remove(&seq);
            self.held.insert(seq, entry);
        }
        self.events += sealed.events;
        self.bytes += sealed.bytes;
        self.oldest.get_or_insert_with(Instant::now);
    }

    /// Leave every held event on the bus, unacked: redelivered at the next start.
    fn leave_all(&mut self) {
        for (_, (_, msg)) in std::mem::take(&mut self.held) {
            msg.leave();
        }
        self.events = 0;
        self.bytes = 0;
        self.oldest = None;
    }

    fn forget_below(&mut self, floor: u64) {
        self.written = self.written.split_off(&(floor + 1));
        self.found = self.found.split_off(&(floor + 1));
    }
}

#[cfg(test)]
mod tests;
