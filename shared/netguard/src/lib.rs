//! Which network addresses a URL that a user supplied may reach.
//!
//! Feed URLs, webhook and push endpoints and WebSub hubs come from users; requesting them must
//! not let anyone reach the server's own network (SSRF). Every such request goes through one
//! type, [`GuardedClient`]: it checks the URL's literal host before the request
//! ([`check_url`]: an IP written in the URL never goes through a resolver), resolves names
//! through [`GuardedResolver`] (which drops every address the policy refuses, and the
//! connection uses what is left: no second resolution), and checks every redirect. There is
//! no way to get the unguarded client out of it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Which addresses user-supplied URLs may point at.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AddressPolicy {
    /// Loopback (127.0.0.0/8, ::1): for tests and the local demo.
    pub allow_loopback: bool,
    /// Private, link-local, CGNAT and unique-local ranges.
    pub allow_private: bool,
}

impl AddressPolicy {
    /// Why `ip` may not be fetched, if it may not.
    pub fn refuse(&self, ip: IpAddr) -> Option<&'static str> {
        let ip = canonical(ip);
        if ip.is_loopback() {
            return (!self.allow_loopback).then_some("a loopback address");
        }
        if ip.is_unspecified() || ip.is_multicast() {
            return Some("an unspecified or multicast address");
        }
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                // TEST-NET-1/2/3, benchmarking (198.18.0.0/15) and the old 6to4 relay anycast
                // (192.88.99.0/24) never reach a real server on the internet
                let reserved = v4.is_broadcast()
                    || o[0] == 0
                    || o[0] >= 240
                    || (o[0], o[1], o[2]) == (192, 0, 2)
                    || (o[0], o[1], o[2]) == (198, 51, 100)
                    || (o[0], o[1], o[2]) == (203, 0, 113)
                    || (o[0], o[1], o[2]) == (192, 88, 99)
                    || (o[0] == 198 && (o[1] & 0xfe) == 18);
                if reserved {
                    return Some("a reserved address");
                }
                let private = v4.is_private()
                    || v4.is_link_local()
                    || (o[0] == 100 && (o[1] & 0xc0) == 64)
                    || (o[0] == 192 && o[1] == 0 && o[2] == 0);
                (private && !self.allow_private)
                    .then_some("a private, link-local or metadata address")
            }
            IpAddr::V6(v6) => {
                let s = v6.segments();
                // documentation (2001:db8::/32), benchmarking (2001:2::/48), the deprecated
                // site-local range (fec0::/10)
                if (s[0] == 0x2001 && s[1] == 0xdb8)
                    || (s[0] == 0x2001 && s[1] == 2 && s[2] == 0)
                    || (s[0] & 0xffc0) == 0xfec0
                {
                    return Some("a reserved address");
                }
                let private = v6.is_unique_local() || v6.is_unicast_link_local();
                (private && !self.allow_private).then_some("a private or link-local address")
            }
        }
    }
}

/// IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible, NAT64 (`64:ff9b::/96`), 6to4
/// (`2002:aabb:ccdd::/48`) and Teredo (`2001:0::/32`, the client's address inverted in the
/// last 32 bits) addresses judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            let o = v6.octets();
            if s[0] == 0x2002 {
                return IpAddr::V4(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
            }
            if s[0] == 0x2001 && s[1] == 0 {
                return IpAddr::V4(Ipv4Addr::new(!o[12], !o[13], !o[14], !o[15]));
            }
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let o = v6.octets();
                return IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            if s[..6] == [0, 0, 0, 0, 0, 0]
                && v6 != Ipv6Addr::LOCALHOST
                && v6 != Ipv6Addr::UNSPECIFIED
            {
                let o = v6.octets();
                return IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            IpAddr::V6(v6)
        }
        v4 => v4,
    }
}

/// Resolves names and drops every address the policy refuses; a name with nothing left
/// fails to resolve, with the reason.
pub struct GuardedResolver(pub AddressPolicy);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut reason = None;
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match policy.refuse(a.ip()) {
                    Some(r) => {
                        reason = Some(r);
                        false
                    }
                    None => true,
                })
                .collect();
            if allowed.is_empty() {
                let why = reason.unwrap_or("no address");
                return Err(format!("{host} resolves to {why}; refused").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A TCP connection on a user's behalf to `host:port` (a name or a literal address), to an
/// address the policy allows, within `timeout`: for protocols other than HTTP (IMAP). Returns
/// the stream and the address it reached.
pub async fn connect(
    host: &str,
    port: u16,
    policy: AddressPolicy,
    timeout: std::time::Duration,
) -> Result<(tokio::net::TcpStream, IpAddr), String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name = bare.trim_end_matches('.').to_ascii_lowercase();
    if (name == "localhost" || name.ends_with(".localhost")) && !policy.allow_loopback {
        return Err(format!("{host} is a loopback address; refused"));
    }
    let attempt = async {
        let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((bare, port))
                .await
                .map_err(|e| format!("cannot resolve {host}: {e}"))?
                .collect(),
        };
        let mut last = format!("{host} has no address");
        for a in addrs {
            if let Some(why) = policy.refuse(a.ip()) {
                last = format!("{host} is {why}; refused");
                continue;
            }
            match tokio::net::TcpStream::connect(a).await {
                Ok(s) => return Ok((s, a.ip())),
                Err(e) => last = format!("cannot connect to {a}: {e}"),
            }
        }
        Err(last)
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("connecting to {host}:{port} timed out"))?
}

/// Whether `ip` is on this machine or its own network (loopback, private, link-local):
/// where plain text may go.
pub fn is_local(ip: IpAddr) -> bool {
    AddressPolicy::default().refuse(ip).is_some()
        && AddressPolicy {
            allow_loopback: true,
            allow_private: true,
        }
        .refuse(ip)
        .is_none()
}

/// Check a URL's literal host (an IP in the URL never goes through the resolver).
pub fn check_url(url: &reqwest::Url, policy: AddressPolicy) -> Result<(), String> {
    match url.host() {
        Some(url::Host::Ipv4(v4)) => match policy.refuse(IpAddr::V4(v4)) {
            Some(why) => Err(format!("{url} points at {why}; refused")),
            None => Ok(()),
        },
        Some(url::Host::Ipv6(v6)) => match policy.refuse(IpAddr::V6(v6)) {
            Some(why) => Err(format!("{url} points at {why}; refused")),
            None => Ok(()),
        },
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            if (d == "localhost" || d.ends_with(".localhost")) && !policy.allow_loopback {
                Err(format!("{url} points at a loopback address; refused"))
            } else {
                Ok(())
            }
        }
        None => Err(format!("{url} has no host")),
    }
}

/// An error and every error under it, `: `-separated (reqwest's own say only "builder error").
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// The one client for requests made on a user's behalf (see the crate's documentation).
#[derive(Clone, Debug)]
pub struct GuardedClient {
    client: reqwest::Client,
    policy: AddressPolicy,
}

impl GuardedClient {
    /// A client enforcing `policy` (at most `max_redirects` redirects, each checked);
    /// `configure` sets what else the caller needs (timeouts, user agent, compression).
    pub fn build(
        policy: AddressPolicy,
        max_redirects: usize,
        configure: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
    ) -> Result<GuardedClient, String> {
        let client = configure(client_builder(policy, max_redirects))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", with_causes(&e)))?;
        Ok(GuardedClient { client, policy })
    }

    /// A request to `url`, or why it may not be made (the URL is not one, or its literal host
    /// is refused).
    pub fn request(
        &self,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::RequestBuilder, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid URL {url}: {e}"))?;
        check_url(&parsed, self.policy)?;
        Ok(self.client.request(method, parsed))
    }

    /// [`GuardedClient::request`] with GET.
    pub fn get(&self, url: &str) -> Result<reqwest::RequestBuilder, String> {
        self.request(reqwest::Method::GET, url)
    }

    /// [`GuardedClient::request`] with POST.
    pub fn post(&self, url: &str) -> Result<reqwest::RequestBuilder, String> {
        self.request(reqwest::Method::POST, url)
    }
}

/// A reqwest client builder whose resolver and redirect policy enforce `policy` (at most
/// `max_redirects` redirects, each checked). Only [`GuardedClient`] builds on it.
fn client_builder(policy: AddressPolicy, max_redirects: usize) -> reqwest::ClientBuilder {
    let redirect = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= max_redirects {
            return attempt.error(format!("more than {max_redirects} redirects"));
        }
        if let Err(e) = check_url(attempt.url(), policy) {
            return attempt.error(format!("redirect refused: {e}"));
        }
        attempt.follow()
    });
    reqwest::Client::builder()
        .redirect(redirect)
        .dns_resolver(Arc::new(GuardedResolver(policy)))
        .no_proxy()
}

/// The error chain of a reqwest error as one line, and whether the guard refused it.
pub fn describe(e: &reqwest::Error) -> (String, bool) {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    let msg = msg.split_whitespace().collect::<Vec<_>>().join(" ");
    let refused = msg.contains("refused;") || msg.contains("redirect refused");
    (msg, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_refused() {
        let p = AddressPolicy::default();
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
            // 6to4 of 127.0.0.1 and of 169.254.169.254, Teredo of 10.0.0.1
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "2001:0:4136:e378:8000:63bf:f5ff:fffe",
            // TEST-NET, benchmarking, documentation
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.19.255.1",
            "2001:db8::1",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            assert!(p.refuse(ip).is_some(), "{a} allowed");
        }
        for a in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "8.8.8.8",
        ] {
            assert!(p.refuse(a.parse().unwrap()).is_none(), "{a} refused");
        }
        let lo = AddressPolicy {
            allow_loopback: true,
            allow_private: false,
        };
        assert!(lo.refuse("127.0.0.1".parse().unwrap()).is_none());
        assert!(lo.refuse("10.0.0.1".parse().unwrap()).is_some());
    }

    #[tokio::test]
    async fn tcp_connections_reach_only_allowed_addresses() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let t = std::time::Duration::from_secs(5);
        for host in ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "2130706433"] {
            let refused = connect(host, port, AddressPolicy::default(), t).await;
            assert!(refused.is_err(), "{host}");
        }
        let lo = AddressPolicy {
            allow_loopback: true,
            allow_private: false,
        };
        let (_s, ip) = connect("127.0.0.1", port, lo, t).await.unwrap();
        assert!(is_local(ip));
        assert!(!is_local("93.184.216.34".parse().unwrap()));
    }

    #[test]
    fn literal_hosts_are_checked() {
        let p = AddressPolicy::default();
        for u in [
            "http://127.0.0.1/x",
            "http://[::1]/",
            "http://localhost:80/",
            "http://2130706433/",
            "http://0x7f.1/",
        ] {
            let url = reqwest::Url::parse(u).unwrap();
            assert!(check_url(&url, p).is_err(), "{u}");
        }
        assert!(check_url(&reqwest::Url::parse("https://example.org/").unwrap(), p).is_ok());
    }

    #[test]
    fn the_guarded_client_checks_every_url_before_a_request_exists() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let guarded = GuardedClient::build(AddressPolicy::default(), 3, |b| b).unwrap();
        for u in [
            "http://127.0.0.1:9/x",
            "http://[::1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://2130706433/",
            "http://localhost/",
            "not a url",
        ] {
            assert!(guarded.post(u).is_err(), "{u}");
            assert!(guarded.get(u).is_err(), "{u}");
        }
        assert!(guarded.post("https://example.org/hook").is_ok());
        let local = AddressPolicy {
            allow_loopback: true,
            allow_private: false,
        };
        let local = GuardedClient::build(local, 3, |b| b).unwrap();
        assert!(local.post("http://127.0.0.1:9/x").is_ok());
        assert!(local.post("http://10.0.0.1/x").is_err());
    }
}
