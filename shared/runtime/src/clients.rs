//! Who a network client is, and how many connections each may hold: an IPv4 address or an
//! IPv6 /64 (one subscriber's network, so walking through one's own /64 is still one client),
//! and a count per client with a guard that gives the slot back when the connection ends. For
//! every listener that takes connections from the internet (the API, the SMTP ingress).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// The client `ip` belongs to.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// Open connections per client, at most `per_client` each.
#[derive(Clone)]
pub struct PerClient {
    per_client: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's slot; dropping it gives the slot back.
pub struct Slot {
    key: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerClient {
    pub fn new(per_client: usize) -> PerClient {
        PerClient {
            per_client,
            open: Arc::default(),
        }
    }

    /// A slot for a connection from `ip`, or `None` when its client holds all of its own.
    pub fn open(&self, ip: IpAddr) -> Option<Slot> {
        let key = client_key(ip);
        let mut open = crate::lock(&self.open);
        let n = open.entry(key).or_default();
        if *n >= self.per_client {
            return None;
        }
        *n += 1;
        Some(Slot {
            key,
            open: self.open.clone(),
        })
    }

    /// Connections open from `ip`'s client.
    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> usize {
        let open = crate::lock(&self.open);
        open.get(&client_key(ip)).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = crate::lock(&self.open);
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_one_client_per_64() {
        let a = client_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = client_key("2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap());
        let c = client_key("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            client_key("::ffff:192.0.2.7".parse().unwrap()),
            client_key("192.0.2.7".parse().unwrap())
        );
        assert_ne!(
            client_key("192.0.2.7".parse().unwrap()),
            client_key("192.0.2.8".parse().unwrap())
        );
    }

    #[test]
    fn a_client_holds_at_most_its_slots_and_gets_them_back() {
        let p = PerClient::new(2);
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let same: IpAddr = "2001:db8::2".parse().unwrap();
        let a = p.open(ip).unwrap();
        let _b = p.open(same).unwrap();
        assert!(p.open(ip).is_none(), "a third from the same /64");
        assert!(p.open("192.0.2.1".parse().unwrap()).is_some());
        drop(a);
        assert_eq!(p.count(ip), 1);
        assert!(p.open(ip).is_some());
    }
}
