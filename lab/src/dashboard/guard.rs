//! The dashboard's guard against other sites, one middleware layer in front of every route.
//!
//! The dashboard stops services, publishes records and moves offsets, and it listens on a port
//! any web page the user opens can reach. Two rules keep those pages out:
//!
//! - **Every request** must name, in its `Host` header, an address the dashboard is served as: an
//!   IP address (`127.0.0.1`, `[::1]`, the machine's own), `localhost`, the name given to
//!   `--host`, or a name given to `--dashboard-allowed-hosts`. That is the defence against DNS
//!   rebinding, where a page of `evil.example` makes its own name resolve to 127.0.0.1 and then
//!   reads the dashboard as "same origin": its requests still say `Host: evil.example`. An IP
//!   address cannot be rebound, so any is accepted; the port is not checked (a forwarded or
//!   mapped port changes it, and no attacker chooses it), as Jupyter and webpack-dev-server do.
//! - **A state-changing request** (every method but GET, HEAD, OPTIONS and TRACE) is refused when
//!   a browser says it comes from another site: an `Origin` header that is not the address the
//!   request was made to (its `Host`) nor an allowed name, `Origin: null`, or `Sec-Fetch-Site`
//!   other than `same-origin` or `none`. A request without them (curl, the `lab` commands) passes,
//!   as Kafka UIs and Jupyter allow. And a body an HTML form can send (`text/plain`,
//!   `application/x-www-form-urlencoded`, `multipart/form-data`) is refused whatever the headers
//!   say, so that a cross-site form post gets nowhere even from a browser that sends no `Origin`;
//!   the dashboard's actions take JSON or no body.
//!
//! A refusal is a 403 problem+json that says which rule refused it.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::uri::Authority;
use axum::http::{HeaderMap, Method, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use saga_shared::http::ApiError;

/// The names the dashboard is served as, besides IP addresses and `localhost`.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    names: Vec<String>,
}

/// A `--dashboard-allowed-hosts` entry that is not a host name.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a host name (give a name such as lab.example, or lab.example:8080)")]
pub struct BadHostName(String);

impl Guard {
    /// Accepts IP addresses, `localhost` and `names` (host names, a port after them is ignored).
    pub fn new<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Result<Guard, BadHostName> {
        let mut guard = Guard::default();
        for name in names {
            let name = name.as_ref().trim();
            if name.is_empty() {
                continue;
            }
            let host = host_of(name).ok_or_else(|| BadHostName(name.to_owned()))?;
            if host.parse::<IpAddr>().is_err() && host != "localhost" {
                guard.names.push(host);
            }
        }
        Ok(guard)
    }

    /// Whether `host` (a host name or IP address, no port) is one the dashboard is served as.
    fn serves(&self, host: &str) -> bool {
        host.parse::<IpAddr>().is_ok()
            || host == "localhost"
            || self.names.iter().any(|n| n == host)
    }

    /// Why `request` is refused, if it is.
    fn refusal(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<String> {
        if headers.get_all(header::HOST).iter().nth(1).is_some() {
            return Some("the request names more than one host".into());
        }
        // HTTP/1.1 sends `Host`; HTTP/2 the URI's authority.
        let host = match headers.get(header::HOST) {
            Some(value) => value.to_str().ok().map(str::to_owned),
            None => uri.authority().map(|a| a.as_str().to_owned()),
        };
        let Some(host) = host else {
            return Some("the request names no host (no Host header)".into());
        };
        let Some(host_name) = host_of(&host).filter(|h| self.serves(h)) else {
            return Some(format!(
                "the dashboard is not served as {host:?}; start the lab with \
                 --dashboard-allowed-hosts (or LAB_DASHBOARD_ALLOWED_HOSTS) naming it"
            ));
        };
        if matches!(
            *method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        ) {
            return None;
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            if !self.same_site_origin(origin, &host, &host_name) {
                return Some(format!(
                    "a request from another site (Origin {origin:?}) cannot change the lab"
                ));
            }
        }
        if let Some(site) = headers.get("sec-fetch-site") {
            let site = site.to_str().unwrap_or("");
            if site != "same-origin" && site != "none" {
                return Some(format!(
                    "a request from another site (Sec-Fetch-Site {site:?}) cannot change the lab"
                ));
            }
        }
        if let Some(kind) = headers.get(header::CONTENT_TYPE) {
            let essence = kind
                .to_str()
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if matches!(
                essence.as_str(),
                "text/plain" | "application/x-www-form-urlencoded" | "multipart/form-data"
            ) {
                return Some(format!(
                    "a form's body ({essence}) cannot change the lab; send JSON \
                     (Content-Type: application/json) or no body"
                ));
            }
        }
        None
    }

    /// Whether `origin` is the address the request was made to (`host`, its name `host_name`),
    /// or one of the names the dashboard was told it is served as.
    fn same_site_origin(&self, origin: &str, host: &str, host_name: &str) -> bool {
        let Ok(uri) = origin.parse::<Uri>() else {
            return false;
        };
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return false; // `null`, or not a URL
        };
        let default_port = match scheme {
            "http" => 80,
            "https" => 443,
            _ => return false,
        };
        let Some(origin_name) = host_of(authority.as_str()) else {
            return false;
        };
        if self.names.contains(&origin_name) {
            return true;
        }
        let host_port = host
            .parse::<Authority>()
            .ok()
            .and_then(|a| a.port_u16())
            .unwrap_or(default_port);
        origin_name == host_name && authority.port_u16().unwrap_or(default_port) == host_port
    }
}

/// The host of `authority` (`name`, `name:port`, `1.2.3.4:80`, `[::1]:80`), lower case, without
/// brackets or a trailing dot; none if it is not an authority or carries user info.
fn host_of(authority: &str) -> Option<String> {
    if authority.contains('@') {
        return None;
    }
    let parsed: Authority = authority.parse().ok()?;
    let host = parsed.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

/// The middleware: refuses with a 403 problem what [`Guard`] refuses, passes the rest on.
pub async fn check(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    match guard.refusal(req.method(), req.uri(), req.headers()) {
        None => next.run(req).await,
        Some(reason) => {
            tracing::warn!(method = %req.method(), uri = %req.uri(), %reason, "dashboard: request refused");
            ApiError::Forbidden(reason).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn refused(guard: &Guard, method: Method, pairs: &[(&str, &str)]) -> bool {
        guard
            .refusal(&method, &Uri::from_static("/api/x"), &headers(pairs))
            .is_some()
    }

    #[test]
    fn hosts_are_ip_addresses_localhost_and_the_names_given() {
        let g = Guard::new(["lab.example:8080", "Saga.Local"]).unwrap();
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST:9000",
            "[::1]:8080",
            "192.168.1.5",
            "lab.example",
            "saga.local:80",
            "localhost.",
        ] {
            assert!(!refused(&g, Method::GET, &[("host", ok)]), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "127.0.0.1.nip.io:8080",
            "localhost.evil.example",
            "user@localhost:8080",
            "",
        ] {
            assert!(refused(&g, Method::GET, &[("host", bad)]), "{bad}");
        }
        assert!(refused(&g, Method::GET, &[]), "no host");
        let mut two = headers(&[("host", "127.0.0.1:8080")]);
        two.append(header::HOST, "evil.example".parse().unwrap());
        assert!(
            g.refusal(&Method::GET, &Uri::from_static("/"), &two)
                .is_some(),
            "two hosts"
        );
        assert!(Guard::new(["http://x/y"]).is_err());
    }

    #[test]
    fn a_change_from_another_site_is_refused_and_from_its_own_page_or_no_browser_passes() {
        let g = Guard::new(["lab.example"]).unwrap();
        let host = ("host", "127.0.0.1:8080");
        let pass = |pairs: &[(&str, &str)]| !refused(&g, Method::POST, pairs);
        assert!(pass(&[host]), "no Origin: curl, the lab commands");
        assert!(pass(&[host, ("origin", "http://127.0.0.1:8080")]));
        assert!(pass(&[host, ("sec-fetch-site", "same-origin")]));
        assert!(pass(&[host, ("content-type", "application/json")]));
        assert!(pass(&[host, ("origin", "https://lab.example")]), "a proxy");
        assert!(pass(&[
            ("host", "lab.example"),
            ("origin", "http://lab.example")
        ]));
        assert!(!pass(&[host, ("origin", "http://evil.example")]));
        assert!(!pass(&[host, ("origin", "http://127.0.0.1:3000")]), "port");
        assert!(!pass(&[host, ("origin", "http://localhost:8080")]), "name");
        assert!(!pass(&[host, ("origin", "null")]));
        assert!(!pass(&[host, ("sec-fetch-site", "cross-site")]));
        assert!(!pass(&[host, ("sec-fetch-site", "same-site")]));
        assert!(!pass(&[host, ("content-type", "text/plain;charset=UTF-8")]));
        assert!(!pass(&[
            host,
            ("content-type", "application/x-www-form-urlencoded")
        ]));
        assert!(!pass(&[
            host,
            ("content-type", "multipart/form-data; boundary=x")
        ]));
        // Reading is not changing: a foreign Origin on a GET is the browser's business (no
        // CORS header lets the page read the answer).
        assert!(!refused(
            &g,
            Method::GET,
            &[host, ("origin", "http://evil.example")]
        ));
    }
}
