//! Server-side request forgery guard (R7) for URLs an admin supplies or a
//! provider hands back (Salesforce instance URL, EWS URL): https only, no
//! credentials in the URL, and no private, loopback, link-local or otherwise
//! non-public address, whether written in the URL or found when the host name
//! is resolved. The resolution check runs at connect time, inside the HTTP
//! client's resolver, so a name that resolves differently later (DNS
//! rebinding) is caught too. Redirects are never followed (see `http`).

use std::{
    error::Error as StdError,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use reqwest::{
    Url,
    dns::{Addrs, Name, Resolve, Resolving},
};

/// What the guard lets through beyond public https URLs. Both allowances are
/// off by default; tests against a simulator on loopback turn both on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UrlPolicy {
    /// Accept `http://` URLs.
    pub allow_http: bool,
    /// Accept loopback addresses (127.0.0.0/8, ::1, `localhost`). Private,
    /// link-local and other non-public addresses are refused regardless.
    pub allow_loopback: bool,
}

impl UrlPolicy {
    /// Public https URLs only: what production uses.
    pub const STRICT: UrlPolicy = UrlPolicy {
        allow_http: false,
        allow_loopback: false,
    };

    /// Also plain http on loopback: for tests against local simulators.
    pub const LOCAL_TESTS: UrlPolicy = UrlPolicy {
        allow_http: true,
        allow_loopback: true,
    };
}

/// Why a URL or address was refused. Its text names the host or address,
/// never a query string or credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("URL refused: {reason}")]
pub struct UrlRefused {
    reason: String,
}

impl UrlRefused {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Self { reason: reason.into() }
    }

    /// The refusal carried somewhere in `error`'s chain of sources, if any
    /// (the resolver's refusal reaches the caller inside the HTTP error).
    pub fn find_in<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a UrlRefused> {
        let mut current = Some(error);
        while let Some(error) = current {
            if let Some(refused) = error.downcast_ref::<UrlRefused>() {
                return Some(refused);
            }
            current = error.source();
        }
        None
    }
}

/// The kind of address, for the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddressClass {
    Public,
    Loopback,
    NonPublic(&'static str),
}

impl fmt::Display for AddressClass {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressClass::Public => formatter.write_str("public"),
            AddressClass::Loopback => formatter.write_str("loopback"),
            AddressClass::NonPublic(kind) => formatter.write_str(kind),
        }
    }
}

fn classify_v4(address: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = address.octets();
    if address.is_loopback() {
        AddressClass::Loopback
    } else if address.is_private() {
        AddressClass::NonPublic("private")
    } else if address.is_link_local() {
        AddressClass::NonPublic("link-local")
    } else if a == 0 {
        AddressClass::NonPublic("unspecified (this network)")
    } else if a == 100 && (64..128).contains(&b) {
        AddressClass::NonPublic("shared (carrier-grade NAT)")
    } else if a == 192 && b == 0 && c == 0 {
        AddressClass::NonPublic("IETF protocol assignment")
    } else if address.is_documentation() {
        AddressClass::NonPublic("documentation")
    } else if a == 198 && (b == 18 || b == 19) {
        AddressClass::NonPublic("benchmarking")
    } else if address.is_multicast() {
        AddressClass::NonPublic("multicast")
    } else if a >= 240 {
        AddressClass::NonPublic("reserved")
    } else {
        AddressClass::Public
    }
}

fn classify_v6(address: Ipv6Addr) -> AddressClass {
    if let Some(mapped) = address.to_ipv4_mapped() {
        return classify_v4(mapped);
    }
    let segments = address.segments();
    // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., high, low] = segments;
        return classify_v4(Ipv4Addr::from((u32::from(high) << 16) | u32::from(low)));
    }
    if address.is_loopback() {
        AddressClass::Loopback
    } else if address.is_unspecified() {
        AddressClass::NonPublic("unspecified")
    } else if address.is_unique_local() {
        AddressClass::NonPublic("unique local (private)")
    } else if address.is_unicast_link_local() {
        AddressClass::NonPublic("link-local")
    } else if (segments[0] & 0xffc0) == 0xfec0 {
        AddressClass::NonPublic("site-local")
    } else if address.is_multicast() {
        AddressClass::NonPublic("multicast")
    } else if segments[0] == 0x2001 && segments[1] == 0x0db8 {
        AddressClass::NonPublic("documentation")
    } else if segments[..6] == [0, 0, 0, 0, 0, 0] {
        AddressClass::NonPublic("IPv4-compatible (deprecated)")
    } else {
        AddressClass::Public
    }
}

fn classify(address: IpAddr) -> AddressClass {
    match address {
        IpAddr::V4(address) => classify_v4(address),
        IpAddr::V6(address) => classify_v6(address),
    }
}

/// Checks one address against `policy`.
pub fn check_address(address: IpAddr, policy: UrlPolicy) -> Result<(), UrlRefused> {
    match classify(address) {
        AddressClass::Public => Ok(()),
        AddressClass::Loopback if policy.allow_loopback => Ok(()),
        class => Err(UrlRefused::new(format!("{address} is a {class} address"))),
    }
}

/// Checks what can be checked without resolving: the scheme, credentials in
/// the URL, and the host when it is an address or `localhost`. Names are
/// checked when they are resolved, at connect time.
pub fn check_url(url: &Url, policy: UrlPolicy) -> Result<(), UrlRefused> {
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_http => {}
        "http" => return Err(UrlRefused::new("plain http is not allowed, use https")),
        other => return Err(UrlRefused::new(format!("scheme {other:?} is not allowed"))),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlRefused::new("credentials in the URL are not allowed"));
    }
    let Some(host) = url.host_str() else {
        return Err(UrlRefused::new("the URL has no host"));
    };
    // The URL parser has already normalized addresses (`127.1` is
    // `127.0.0.1`, IPv6 is bracketed), so a host that parses as an address is one.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(address) = bare.parse::<IpAddr>() {
        return check_address(address, policy);
    }
    let domain = host.trim_end_matches('.').to_ascii_lowercase();
    if (domain == "localhost" || domain.ends_with(".localhost")) && !policy.allow_loopback {
        return Err(UrlRefused::new(format!("{domain} is a loopback name")));
    }
    Ok(())
}

/// Resolves names with the system resolver and refuses the whole answer when
/// any address in it is refused by the policy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GuardedResolver {
    pub policy: UrlPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addresses.is_empty() {
                return Err(format!("{host} resolved to no address").into());
            }
            for address in &addresses {
                check_address(address.ip(), policy)
                    .map_err(|refused| UrlRefused::new(format!("{host} resolves to {}", refused.reason)))?;
            }
            let addresses: Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str, policy: UrlPolicy) -> bool {
        check_url(&Url::parse(url).unwrap(), policy).is_err()
    }

    #[test]
    fn public_https_urls_pass_and_http_needs_the_allowance() {
        assert!(!refused("https://example.my.salesforce.com", UrlPolicy::STRICT));
        assert!(!refused("https://93.184.216.34/services", UrlPolicy::STRICT));
        assert!(refused("http://example.my.salesforce.com", UrlPolicy::STRICT));
        assert!(!refused(
            "http://example.my.salesforce.com",
            UrlPolicy {
                allow_http: true,
                allow_loopback: false
            }
        ));
        assert!(refused("ftp://example.com", UrlPolicy::LOCAL_TESTS));
        assert!(refused("https://user:pass@example.com", UrlPolicy::STRICT));
    }

    #[test]
    fn non_public_addresses_are_refused_even_with_the_loopback_allowance() {
        for url in [
            "https://10.0.0.1",
            "https://172.16.5.4",
            "https://192.168.1.1",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1",
            "https://0.0.0.0",
            "https://[fd00::1]",
            "https://[fe80::1]",
            "https://[::ffff:10.0.0.1]",
            "https://[::ffff:169.254.169.254]",
            "https://[64:ff9b::a00:1]",
            "https://[::]",
        ] {
            assert!(refused(url, UrlPolicy::LOCAL_TESTS), "{url}");
        }
    }

    #[test]
    fn loopback_passes_only_with_its_allowance() {
        for url in [
            "https://127.0.0.1:8443",
            "https://127.1.2.3",
            "https://[::1]",
            "https://localhost",
            "https://[::ffff:127.0.0.1]",
        ] {
            assert!(refused(url, UrlPolicy::STRICT), "{url}");
            assert!(!refused(url, UrlPolicy::LOCAL_TESTS), "{url}");
        }
    }

    #[test]
    fn a_refusal_is_found_inside_a_chain_of_errors() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] UrlRefused);
        let error = Outer(UrlRefused::new("why"));
        assert_eq!(UrlRefused::find_in(&error).unwrap().reason, "why");
    }
}
