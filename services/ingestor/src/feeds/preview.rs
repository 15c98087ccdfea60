//! Feed previews for the web app: fetch a URL now (through the same guarded fetcher as every
//! poll, counted against the same concurrent-fetch limit), parse it off the async workers,
//! and say for each item whether the filter lets it through and why not.

use crate::feeds::Shared;
use crate::feeds::fetch::Fetched;
use std::sync::Arc;
use tocsin_model::{FeedPreview, FeedPreviewRequest, Item, PreviewItem, Reply};
use tokio_util::sync::CancellationToken;

/// Answer previews on `<p>.rpc.ingest.preview` until `shutdown`.
pub(crate) async fn serve(shared: Arc<Shared>, shutdown: CancellationToken) {
    let subject = shared.bus.subjects().ingest_rpc("preview");
    let bus = shared.bus.clone();
    tocsin_bus::rpc::serve(
        bus,
        subject,
        "ingestor",
        "feed preview",
        shutdown,
        move |req| {
            let shared = shared.clone();
            async move { preview(&shared, req).await }
        },
    )
    .await
}

async fn preview(shared: &Shared, req: FeedPreviewRequest) -> Reply<FeedPreview> {
    let filter = match req.filter.compile() {
        Ok(f) => f,
        Err(errors) => {
            let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
            return Reply::Err(format!("filter: {}", all.join("; ")));
        }
    };
    let Ok(_permit) = shared.fetch_permits.clone().acquire_owned().await else {
        return Reply::Err("the ingestor is stopping".into());
    };
    let accept = req.extract.as_deref().map_or(
        crate::feeds::fetch::FEED_TYPES,
        tocsin_model::Extract::accept,
    );
    let extra = match req.request.render(req.request.secret.as_deref()) {
        Ok(extra) => extra,
        Err(e) => return Reply::Err(e),
    };
    let bytes = match shared
        .fetcher
        .fetch_accepting(&req.url, None, None, accept, &extra)
        .await
    {
        Ok(Fetched::Body { bytes, .. }) => bytes,
        Ok(Fetched::NotModified) => {
            return Reply::Err("the server answered 304 to a plain GET".into());
        }
        Err(e) => return Reply::Err(format!("cannot fetch {}: {e}", req.url)),
    };
    let (extract, page) = (req.extract.clone(), req.url.clone());
    let judged = tokio::task::spawn_blocking(move || {
        let parsed = crate::feeds::extract::parse(&bytes, extract.as_deref(), &page)?;
        let more = parsed.items.len() > FeedPreview::MAX_ITEMS;
        let items = parsed
            .items
            .iter()
            .take(FeedPreview::MAX_ITEMS)
            .map(|i| {
                let why = filter.why_not(&Item {
                    title: &i.title,
                    text: &i.text,
                    categories: &i.categories,
                });
                PreviewItem {
                    title: i.title.clone(),
                    link: i.link.clone(),
                    matches: why.is_none(),
                    why: why.unwrap_or_default(),
                }
            })
            .collect();
        Ok::<_, String>(FeedPreview {
            title: parsed.title,
            items,
            more,
        })
    })
    .await;
    match judged {
        Ok(Ok(p)) => Reply::Ok(p),
        Ok(Err(e)) => Reply::Err(format!("{} cannot be read: {e}", req.url)),
        Err(e) => Reply::Err(format!("the document could not be processed ({e})")),
    }
}
