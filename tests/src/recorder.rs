//! An HTTP endpoint on loopback that records every request it gets (webhooks, push, Twilio's
//! API) and can be told to fail for a while.

use anyhow::{Result, anyhow};
use axum::http::{HeaderMap, StatusCode, header};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One request a [`Recorder`] took.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub at: Instant,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The status it was answered with.
    pub status: u16,
}

impl Recorded {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A form field of an `application/x-www-form-urlencoded` body.
    pub fn form(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(&self.body)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// An HTTP server that records every POST and answers each path as the test says (200 `{}`
/// unless told otherwise): a stand-in for Twilio, ntfy, UnifiedPush and webhook receivers.
#[derive(Clone)]
pub struct Recorder {
    pub base: String,
    state: Arc<Mutex<RecorderState>>,
}

#[derive(Default)]
struct RecorderState {
    seen: Vec<Recorded>,
    answers: HashMap<String, (u16, String)>,
}

impl Recorder {
    pub async fn start() -> Result<Recorder> {
        let state: Arc<Mutex<RecorderState>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let st = state.clone();
        let app = axum::Router::new().fallback(axum::routing::post(
            move |uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let st = st.clone();
                async move {
                    let mut s = st.lock().unwrap();
                    let path = uri.path().to_owned();
                    let (status, answer) =
                        s.answers.get(&path).cloned().unwrap_or((200, "{}".into()));
                    s.seen.push(Recorded {
                        at: Instant::now(),
                        path: path.clone(),
                        headers,
                        body: body.to_vec(),
                        status,
                    });
                    let body = answer;
                    (
                        StatusCode::from_u16(status).unwrap(),
                        [(header::CONTENT_TYPE, "application/json")],
                        body,
                    )
                }
            },
        ));
        tokio::spawn(async move { axum::serve(listener, app).await.map_err(|e| anyhow!(e)) });
        Ok(Recorder { base, state })
    }

    /// Answer `path` with `status` and `body` from now on.
    pub fn answer(&self, path: &str, status: u16, body: &str) {
        self.state
            .lock()
            .unwrap()
            .answers
            .insert(path.to_owned(), (status, body.to_owned()));
    }

    /// Every request to `path` so far.
    pub fn requests(&self, path: &str) -> Vec<Recorded> {
        self.state
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}
