//! Sender authentication for inbound mail: SPF (RFC 7208) for the connecting address and the
//! envelope sender, DKIM (RFC 6376) signatures on the message, with mail-auth (Stalwart's
//! library) over a DNS resolver.
//!
//! A message is *authenticated* when SPF passes for the envelope sender's domain, or a DKIM
//! signature passes whose signing domain (`d=`) is the From header's domain, the envelope
//! sender's, or a parent of either (relaxed alignment, as DMARC has it). Users who ask for it
//! get only authenticated mail; everyone's notifications carry the results as tags
//! (`spf:pass`, `dkim:pass`, …).

use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
};
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator, SpfResult};
use std::net::IpAddr;
use std::time::Duration;

/// What the checks found.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// `pass`, `fail`, `softfail`, `neutral`, `none`, `temperror`, `permerror`.
    pub spf: &'static str,
    /// `pass` (a passing, aligned signature), `fail` (signatures, none passing and aligned),
    /// `none` (no signature).
    pub dkim: &'static str,
    pub authenticated: bool,
}

impl Verdict {
    pub fn tags(&self) -> Vec<String> {
        vec![format!("spf:{}", self.spf), format!("dkim:{}", self.dkim)]
    }

    pub fn describe(&self) -> String {
        format!("SPF {}, DKIM {}", self.spf, self.dkim)
    }
}

pub struct SenderCheck {
    auth: MessageAuthenticator,
}

impl std::fmt::Debug for SenderCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SenderCheck")
    }
}

fn spf_name(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

/// The domain of an address (`ann@Example.org` → `example.org`).
fn domain_of(address: &str) -> Option<String> {
    let a = address.trim().trim_start_matches('<').trim_end_matches('>');
    a.rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
        .filter(|d| !d.is_empty())
}

/// Whether `signer` is `domain` or a parent of it (relaxed alignment).
fn aligned(signer: &str, domain: &str) -> bool {
    let s = signer.trim_end_matches('.').to_ascii_lowercase();
    domain == s || domain.ends_with(&format!(".{s}"))
}

impl SenderCheck {
    /// A checker using the DNS server at `dns` (`host:port`, an IP address), or the system's
    /// resolvers when empty.
    pub fn new(dns: &str) -> Result<SenderCheck, String> {
        let auth = if dns.is_empty() {
            MessageAuthenticator::new_system_conf()
                .map_err(|e| format!("cannot read the system's DNS configuration: {e}"))?
        } else {
            let addr: std::net::SocketAddr = dns.parse().map_err(|_| {
                format!("ingestor.smtp_dns_server: {dns:?} is not ip:port (e.g. 127.0.0.1:53)")
            })?;
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            let server = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
            let mut opts = ResolverOpts::default();
            opts.timeout = Duration::from_secs(5);
            opts.attempts = 2;
            MessageAuthenticator::new(ResolverConfig::from_name_servers(vec![server]), opts)
                .map_err(|e| format!("cannot set up the DNS resolver: {e}"))?
        };
        Ok(SenderCheck { auth })
    }

    /// Check a message that came from `ip`, which greeted with `helo`, with envelope sender
    /// `sender`.
    pub async fn check(&self, ip: IpAddr, helo: &str, sender: &str, raw: &[u8]) -> Verdict {
        let helo = if helo.is_empty() { "unknown" } else { helo };
        let spf = if sender.is_empty() {
            SpfResult::None
        } else {
            self.auth
                .verify_spf(mail_auth::spf::verify::SpfParameters::verify_mail_from(
                    ip, helo, "tocsin", sender,
                ))
                .await
                .result()
        };
        let sender_domain = domain_of(sender);
        let Some(message) = AuthenticatedMessage::parse(raw) else {
            return Verdict {
                spf: spf_name(spf),
                dkim: "none",
                authenticated: spf == SpfResult::Pass,
            };
        };
        let from_domain = domain_of(message.from());
        let outputs = self.auth.verify_dkim(&message).await;
        let mut dkim = if outputs.is_empty() { "none" } else { "fail" };
        for o in &outputs {
            if *o.result() == DkimResult::Pass
                && let Some(sig) = o.signature()
                && [&from_domain, &sender_domain]
                    .into_iter()
                    .flatten()
                    .any(|d| aligned(&sig.d, d))
            {
                dkim = "pass";
            }
        }
        Verdict {
            spf: spf_name(spf),
            dkim,
            authenticated: spf == SpfResult::Pass || dkim == "pass",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_is_relaxed_to_parents_only() {
        assert!(aligned("example.org", "example.org"));
        assert!(aligned("Example.org.", "alerts.example.org"));
        assert!(!aligned("evil-example.org", "example.org"));
        assert!(!aligned("alerts.example.org", "example.org"));
        assert_eq!(
            domain_of("<Ann@Example.ORG>").as_deref(),
            Some("example.org")
        );
        assert_eq!(domain_of(""), None);
    }
}
