//! What the API asks other services over core NATS request/reply, and their answers: history
//! pages and private feeds (history), feed previews (an ingestor), test messages (delivery).
//! The report the archiver answers is in `analytics.rs`.

use crate::{Destination, Millis, Notification, Priority, TimelineEntry, UserId};
use serde::{Deserialize, Serialize};

/// A history query from the API (request/reply on the silo's query subject).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryQuery {
    pub user: UserId,
    pub limit: u32,
    /// An opaque cursor from a previous page's `next_cursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<Millis>,
    /// Full-text search over title and body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    /// Only notifications from this source id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Only notifications of at least this priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_priority: Option<Priority>,
    /// Only notifications in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<HistoryState>,
}

impl HistoryQuery {
    /// The newest `limit` notifications of `user`, with no filter.
    pub fn newest(user: UserId, limit: u32) -> HistoryQuery {
        HistoryQuery {
            user,
            limit,
            cursor: None,
            since_ms: None,
            until_ms: None,
            q: None,
            source: None,
            min_priority: None,
            state: None,
        }
    }
}

/// Where a notification in history stands, from its timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryState {
    /// Neither acknowledged nor resolved.
    Open,
    Acked,
    Resolved,
}

impl HistoryState {
    pub const ALL: [HistoryState; 3] = [
        HistoryState::Open,
        HistoryState::Acked,
        HistoryState::Resolved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HistoryState::Open => "open",
            HistoryState::Acked => "acked",
            HistoryState::Resolved => "resolved",
        }
    }

    /// The state a timeline shows: resolved over acknowledged over open.
    pub fn of(timeline: &[TimelineEntry]) -> HistoryState {
        if timeline.iter().any(|e| e.kind == "resolved") {
            HistoryState::Resolved
        } else if timeline.iter().any(|e| e.kind == "acked") {
            HistoryState::Acked
        } else {
            HistoryState::Open
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryItem {
    pub notification: Notification,
    pub timeline: Vec<TimelineEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryPage {
    pub items: Vec<HistoryItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A feed to look at before subscribing to it (API → ingestor, request/reply).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedPreviewRequest {
    pub url: String,
    #[serde(default)]
    pub filter: crate::Filter,
    /// The source's extractor, when it is not a feed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<Box<crate::Extract>>,
    /// The source's own headers, with the secret they name (used for this fetch only).
    #[serde(default, skip_serializing_if = "crate::SourceRequest::is_default")]
    pub request: crate::SourceRequest,
}

/// What a feed holds now, and what the filter makes of each item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedPreview {
    pub title: String,
    pub items: Vec<PreviewItem>,
    /// The feed has more items than the preview shows.
    #[serde(default)]
    pub more: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreviewItem {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    pub matches: bool,
    /// Why it would not notify (empty when it would).
    #[serde(default)]
    pub why: String,
}

impl FeedPreview {
    /// The most items a preview shows.
    pub const MAX_ITEMS: usize = 50;
}

/// A test message to one of a user's destinations (API → the delivery instance serving its
/// channel, request/reply): sent now, once, answered with what happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DestinationTest {
    pub user: UserId,
    pub destination: Destination,
}

/// What became of a test message: delivered or not, and the channel's own words.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    pub delivered: bool,
    pub detail: String,
}

/// A request for a user's private feed document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedRequest {
    pub user: UserId,
    pub format: FeedFormat,
    /// The URL the document is served at (its `self` link).
    pub self_url: String,
    pub limit: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedFormat {
    Atom,
    Rss,
}

/// A reply to a request over the bus: the value, or an error for a person.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply<T> {
    Ok(T),
    Err(String),
}
