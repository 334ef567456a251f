//! What public surfaces show: the public stream, the live feed, and reads by callers who
//! may not see a listing's private fields.
//!
//! - **Who acted** is not public: `user:NAME` and `api-key:NAME:ID` become `user` and
//!   `api-key`; system actors (`system:seed`, `system:import`) and `anonymous` name no one
//!   and stay.
//! - **Media URLs** must be safe to follow: an absolute `https` URL (`http` where an
//!   installation allows it) without credentials, to a public host, in normal form. New
//!   commands are checked against [`check_media_url`] at their edge; events stored before
//!   that check keep their value (they must load, replay and rebuild unchanged), and
//!   wherever one is served a value that fails the check is replaced by `null`
//!   ([`redact_media`]). The check reads the URL, not DNS: a public name that resolves to
//!   a private address passes it, so whatever fetches media URLs server-side must check
//!   the address it connects to as well.
//!
//! These are pure functions on JSON values: one definition for every surface.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::Value;

use crate::listing::remove_private_fields;

/// The actor a public surface shows for a stored actor.
pub fn public_actor(actor: &str) -> &str {
    match actor.split_once(':') {
        Some(("user", _)) => "user",
        Some(("api-key", _)) => "api-key",
        Some(("system", _)) => actor,
        // Already public (a redacted envelope redacted again stays the same).
        None if matches!(actor, "anonymous" | "user" | "api-key") => actor,
        // Anything else could name someone.
        _ => "user",
    }
}

/// Hosts that name the local machine or a private network, whatever DNS says.
const PRIVATE_SUFFIXES: &[&str] = &[
    "localhost",
    ".localhost",
    ".local",
    ".localdomain",
    ".internal",
    ".intranet",
    ".lan",
    ".home",
    ".corp",
    ".home.arpa",
    // Kubernetes service names (`name.namespace.svc`, `….svc.cluster.local`).
    ".svc",
];

fn public_ipv4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || a >= 240
        || (a == 100 && (64..128).contains(&b))
        || (a == 198 && (18..20).contains(&b))
        || (a == 192 && b == 0))
}

fn public_ipv6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return public_ipv4(v4);
    }
    let segments = ip.segments();
    let first = segments[0];
    // IPv4-compatible `::a.b.c.d` (deprecated, but routed to the IPv4 address by some
    // stacks).
    if segments[..6].iter().all(|s| *s == 0) {
        return false;
    }
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0
        || (first == 0x2001 && segments[1] == 0x0db8)
        || first == 0x2002
        || (first == 0x0100 && segments[1..4].iter().all(|s| *s == 0))
        || first == 0x0064)
}

/// Whether an address is reachable on the public internet (not loopback, private,
/// link-local such as the cloud metadata address 169.254.169.254, or reserved).
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_ipv4(v4),
        IpAddr::V6(v6) => public_ipv6(v6),
    }
}

/// A media URL in normal form, or why it is refused.
pub fn check_media_url(raw: &str, allow_http: bool) -> Result<String, String> {
    if raw.trim() != raw || raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain spaces or control characters".to_owned());
    }
    let url = url::Url::parse(raw)
        .map_err(|_| "must be an absolute URL (https://host/path)".to_owned())?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        _ if allow_http => return Err("must be an https or http URL".to_owned()),
        _ => return Err("must be an https URL".to_owned()),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry a user name or password".to_owned());
    }
    match url.host() {
        Some(url::Host::Domain(domain)) => {
            let domain = domain.trim_end_matches('.');
            if !domain.contains('.') || PRIVATE_SUFFIXES.iter().any(|s| domain.ends_with(s)) {
                return Err("must name a public host".to_owned());
            }
        }
        Some(url::Host::Ipv4(ip)) if public_ipv4(ip) => {}
        Some(url::Host::Ipv6(ip)) if public_ipv6(ip) => {}
        Some(_) => return Err("must name a public host, not a private address".to_owned()),
        None => return Err("must name a host".to_owned()),
    }
    Ok(url.to_string())
}

/// Whether a stored media URL may be served: it passes the check (with `http` allowed:
/// installations may have allowed it) and is already in normal form.
pub fn is_servable_media_url(raw: &str) -> bool {
    check_media_url(raw, true).is_ok_and(|normal| normal == raw)
}

fn redact_url(slot: &mut Value) {
    if slot.as_str().is_some_and(|url| !is_servable_media_url(url)) {
        *slot = Value::Null;
    }
}

/// Replaces media URLs that are not safe to follow by `null`, in a listing's state (its
/// `Media` list) or a media event's data.
pub fn redact_media(value: &mut Value) {
    let Some(object) = value.as_object_mut() else {
        return;
    };
    if let Some(url) = object.get_mut("MediaURL") {
        redact_url(url);
    }
    if let Some(media) = object.get_mut("Media").and_then(Value::as_array_mut) {
        for item in media {
            if let Some(url) = item.get_mut("MediaURL") {
                redact_url(url);
            }
        }
    }
}

/// A listing's state or an event's data as a reader gets it: private fields only if
/// `with_private` (the listing's agent, administrators), unsafe media URLs never.
pub fn served(value: &mut Value, with_private: bool) {
    if !with_private {
        remove_private_fields(value);
    }
    redact_media(value);
}

/// The public form of a published envelope (as JSON): private fields removed from `Data`,
/// unsafe media URLs replaced, the actor reduced to its kind. One message per event still:
/// redaction changes a message, never drops it.
pub fn redact_public(envelope: &mut Value) {
    if let Some(data) = envelope.get_mut("Data") {
        served(data, false);
    }
    if let Some(actor) = envelope.get_mut("Actor")
        && let Some(text) = actor.as_str()
    {
        let public = public_actor(text).to_owned();
        *actor = Value::String(public);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_lose_their_names() {
        assert_eq!(public_actor("user:alice"), "user");
        assert_eq!(public_actor("api-key:importer:6f1c"), "api-key");
        assert_eq!(public_actor("system:seed"), "system:seed");
        assert_eq!(public_actor("anonymous"), "anonymous");
        assert_eq!(public_actor("alice"), "user");
        for public in ["user", "api-key", "system:seed", "anonymous"] {
            assert_eq!(public_actor(public_actor(public)), public, "idempotent");
        }
    }

    #[test]
    fn unsafe_media_urls_are_refused_with_a_reason() {
        for bad in [
            "\"><script>alert(1)</script>",
            "https://user:pass@example.com/a.jpg",
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.5/a.jpg",
            "https://127.0.0.1/a.jpg",
            "https://[::1]/a.jpg",
            "https://[fd00::1]/a.jpg",
            "https://[::7f00:1]/a.jpg",
            "https://[2002:7f00:1::]/a.jpg",
            "https://[fec0::1]/a.jpg",
            "https://api.default.svc/a.jpg",
            "https://api.default.svc.cluster.local/a.jpg",
            "https://0x7f.1/a.jpg",
            "https://localhost/a.jpg",
            "https://printer.local/a.jpg",
            "https://intranet/a.jpg",
            " https://example.com/a.jpg",
            "https://example.com/a b.jpg",
            "javascript:alert(1)",
            "ftp://example.com/a.jpg",
            "http://example.com/a.jpg",
            "data:image/png;base64,AAAA",
        ] {
            assert!(check_media_url(bad, false).is_err(), "{bad} was accepted");
        }
        assert!(check_media_url("http://example.com/a.jpg", true).is_ok());
    }

    #[test]
    fn safe_media_urls_are_normalised() {
        assert_eq!(
            check_media_url("https://Photos.Example.COM:443/a/../b.jpg", false).as_deref(),
            Ok("https://photos.example.com/b.jpg")
        );
        assert_eq!(
            check_media_url("https://example.com/%22%3E.jpg", false).as_deref(),
            Ok("https://example.com/%22%3E.jpg")
        );
        assert!(check_media_url("https://93.184.216.34/a.jpg", false).is_ok());
    }

    #[test]
    fn served_values_are_redacted_not_dropped() {
        let mut envelope = serde_json::json!({
            "Actor": "user:alice",
            "EventType": "MediaAdded",
            "Data": {"MediaURL": "https://169.254.169.254/x", "PrivateRemarks": "p"},
        });
        redact_public(&mut envelope);
        assert_eq!(envelope["Actor"], "user");
        assert_eq!(envelope["Data"]["MediaURL"], Value::Null);
        assert!(envelope["Data"].get("PrivateRemarks").is_none());
        let mut state = serde_json::json!({"Media": [
            {"MediaURL": "https://example.com/a.jpg"},
            {"MediaURL": " https://example.com/b.jpg"},
        ]});
        redact_media(&mut state);
        assert_eq!(state["Media"][0]["MediaURL"], "https://example.com/a.jpg");
        assert_eq!(state["Media"][1]["MediaURL"], Value::Null);
    }
}
