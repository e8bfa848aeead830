//! Who the client is, for rate limits: the socket peer's address, or the address a trusted
//! proxy says it forwarded for.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::Request;

/// The client's address, put into each request's extensions (and GraphQL request data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// What rate limits count this client as: its IPv4 address, or the /64 network of its
    /// IPv6 address. One subscriber is routinely given a whole /64, so counting single IPv6
    /// addresses would give an attacker 2^64 fresh budgets. An IPv4-mapped IPv6 address
    /// (a dual-stack socket's view of an IPv4 client) counts as that IPv4 address.
    pub fn rate_limit_key(self) -> String {
        let v6 = match self.0 {
            IpAddr::V4(v4) => return format!("ip:{v4}"),
            IpAddr::V6(v6) => v6,
        };
        match v6.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let network = Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX));
                format!("ip:{network}/64")
            }
        }
    }
}

/// The peer address; when the peer is a trusted proxy, the right-most `X-Forwarded-For`
/// entry that is not itself a trusted proxy (entries further left are the client's to forge).
pub fn client_ip<B>(request: &Request<B>, trusted_proxies: &[IpAddr]) -> Option<ClientIp> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())?;
    if !trusted_proxies.contains(&peer) {
        return Some(ClientIp(peer));
    }
    let forwarded = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    let client = forwarded
        .iter()
        .rev()
        .map(|entry| entry.parse::<IpAddr>())
        .take_while(Result::is_ok)
        .filter_map(Result::ok)
        .find(|ip| !trusted_proxies.contains(ip));
    Some(ClientIp(client.unwrap_or(peer)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(peer: &str, forwarded: Option<&str>) -> Request<()> {
        let mut builder = Request::builder();
        if let Some(value) = forwarded {
            builder = builder.header("x-forwarded-for", value);
        }
        let mut request = builder.body(()).unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        request
    }

    fn ip(text: &str) -> Option<ClientIp> {
        Some(ClientIp(text.parse().unwrap()))
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let key = |text: &str| ClientIp(text.parse().unwrap()).rate_limit_key();
        assert_eq!(key("203.0.113.9"), "ip:203.0.113.9");
        assert_eq!(key("::ffff:203.0.113.9"), "ip:203.0.113.9");
        assert_eq!(key("2001:db8:1:2::1"), "ip:2001:db8:1:2::/64");
        assert_eq!(
            key("2001:db8:1:2:ffff:ffff:ffff:ffff"),
            "ip:2001:db8:1:2::/64"
        );
        assert_eq!(key("2001:db8:1:3::1"), "ip:2001:db8:1:3::/64");
    }

    #[test]
    fn forwarded_for_is_ignored_unless_the_peer_is_trusted() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let spoofed = request("203.0.113.9:5000", Some("1.2.3.4"));
        assert_eq!(client_ip(&spoofed, &[proxy]), ip("203.0.113.9"));
        assert_eq!(client_ip(&spoofed, &[]), ip("203.0.113.9"));
        let proxied = request("10.0.0.1:5000", Some("1.2.3.4, 198.51.100.7"));
        assert_eq!(client_ip(&proxied, &[proxy]), ip("198.51.100.7"));
        let garbage = request("10.0.0.1:5000", Some("not-an-ip"));
        assert_eq!(client_ip(&garbage, &[proxy]), ip("10.0.0.1"));
        let through_two: IpAddr = "10.0.0.2".parse().unwrap();
        let chained = request("10.0.0.1:5000", Some("198.51.100.7, 10.0.0.2"));
        assert_eq!(
            client_ip(&chained, &[proxy, through_two]),
            ip("198.51.100.7")
        );
    }
}
