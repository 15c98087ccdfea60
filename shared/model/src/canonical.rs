//! One key per listing, whichever way it arrives: a link reduced to its canonical form, so
//! the same listing linked from two feeds (each with its own tracking parameters) or from a
//! feed and a forwarded alert e-mail deduplicates to one notification.

/// Query parameters that only say where a click came from.
const TRACKING: [&str; 28] = [
    "fbclid",
    "gclid",
    "dclid",
    "gbraid",
    "wbraid",
    "msclkid",
    "yclid",
    "twclid",
    "ttclid",
    "li_fat_id",
    "mc_cid",
    "mc_eid",
    "igshid",
    "_hsenc",
    "_hsmi",
    "mkt_tok",
    "ref",
    "ref_src",
    "ref_url",
    "spm",
    "si",
    "s_cid",
    "cmpid",
    "trk",
    "_ga",
    "_gl",
    "oly_enc_id",
    "oly_anon_id",
];

fn tracking(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.starts_with("utm_") || TRACKING.contains(&n.as_str())
}

/// `url` in canonical form, or None when it is not an http(s) URL: `https`, the host in lower
/// case without `www.`, no default port, no fragment, no tracking parameters, the other
/// parameters sorted by name, no trailing `/` (except the root).
pub fn canonical_url(url: &str) -> Option<String> {
    let u = url::Url::parse(url.trim()).ok()?;
    if !matches!(u.scheme(), "http" | "https") {
        return None;
    }
    let host = u.host_str()?.to_ascii_lowercase();
    let host = host.strip_prefix("www.").unwrap_or(&host).to_owned();
    let port = u.port().filter(|p| *p != 80 && *p != 443);
    let mut params: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| !tracking(k))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    params.sort();
    let path = u.path().trim_end_matches('/').to_owned();
    let mut out = format!("https://{host}");
    if let Some(p) = port {
        out.push_str(&format!(":{p}"));
    }
    out.push_str(if path.is_empty() { "/" } else { &path });
    if !params.is_empty() {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        out.push('?');
        out.push_str(&q);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_same_listing_has_one_form() {
        let one = canonical_url("https://sfbay.example.org/bik/d/road-bike/7712345.html").unwrap();
        for other in [
            "http://SFBay.example.org/bik/d/road-bike/7712345.html",
            "https://www.sfbay.example.org:443/bik/d/road-bike/7712345.html/",
            "https://sfbay.example.org/bik/d/road-bike/7712345.html?utm_source=rss&utm_medium=feed",
            "https://sfbay.example.org/bik/d/road-bike/7712345.html?fbclid=abc#photos",
        ] {
            assert_eq!(
                canonical_url(other).as_deref(),
                Some(one.as_str()),
                "{other}"
            );
        }
        // what names the listing stays, in one order
        assert_eq!(
            canonical_url("https://shop.example/item?id=7&color=red&utm_campaign=x").unwrap(),
            canonical_url("https://shop.example/item?color=red&id=7").unwrap()
        );
        assert_ne!(
            canonical_url("https://shop.example/item?id=7").unwrap(),
            canonical_url("https://shop.example/item?id=8").unwrap()
        );
        assert_eq!(
            canonical_url("http://example.org:8080").as_deref(),
            Some("https://example.org:8080/")
        );
        assert_eq!(canonical_url("mailto:a@example.org"), None);
        assert_eq!(canonical_url("not a url"), None);
    }

    proptest! {
        #[test]
        fn canonical_forms_are_fixed_points(s in "https?://[a-zA-Z0-9.]{1,20}/[a-z0-9/]{0,20}(\\?[a-z_]{1,8}=[a-z0-9]{0,5}(&[a-z_]{1,8}=[a-z0-9]{0,5}){0,3})?") {
            if let Some(c) = canonical_url(&s) {
                prop_assert_eq!(canonical_url(&c), Some(c.clone()));
            }
        }
    }
}
