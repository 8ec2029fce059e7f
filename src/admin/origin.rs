//! Refuses state-changing requests that a browser sends on behalf of another site.
//!
//! A web page anywhere can make the operator's browser POST a form to
//! `http://127.0.0.1:9091/dead/retry` (a "simple" request needs no CORS preflight), and
//! with the status page's cookie, or with no `admin_token` at all, it would act. Browsers
//! say where such a request comes from, and a page's script cannot change it. The rule is
//! the one Go's `http.CrossOriginProtection` follows: `Sec-Fetch-Site` (every current
//! browser) decides when present, `same-origin` or `none` (typed by the user) passing;
//! without it, an `Origin` header must name the host the request is addressed to. A
//! request that is not a GET or HEAD is checked whatever the path, so the JSON API is
//! covered too. Clients that are not browsers (the CLI, curl, Prometheus) send neither
//! header and are not affected.
//!
//! A second, independent guard ([`check_content_type`]): such a request must also say
//! `Content-Type: application/json`. A cross-site form can only send
//! `application/x-www-form-urlencoded`, `multipart/form-data` or `text/plain`, and a
//! cross-site script sending JSON needs a CORS preflight this listener never grants; so even
//! an old browser that sends neither `Sec-Fetch-Site` nor `Origin` cannot pass. The page's
//! own login and logout forms are the exception (they change nothing in the store: the
//! login needs the token, the logout only ends the session), still under the first check.

use http::{header, HeaderMap, Method};

/// Why a request was taken for a cross-site one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrossSite {
    /// `Sec-Fetch-Site` is not `same-origin` (or `none`, typed by the user).
    #[error("the browser says this request comes from another site (Sec-Fetch-Site: {0})")]
    FetchSite(String),
    /// `Origin` names another host than the one the request is addressed to.
    #[error("the request comes from {origin:?}, not from this admin listener ({host:?})")]
    Origin {
        /// The `Origin` header.
        origin: String,
        /// The `Host` header.
        host: String,
    },
}

/// Does `method` change nothing (so a cross-site request of it does no harm)?
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap_or("(not text)"))
}

/// `host[:port]` of an `Origin` value with the scheme's default port made explicit, or
/// `None` if it is not a URL with a host (`null` from a sandboxed frame or a `file:` page).
fn origin_authority(origin: &str) -> Option<(String, u16)> {
    let url = reqwest::Url::parse(origin).ok()?;
    let host = url.host_str()?.to_ascii_lowercase();
    Some((host, url.port_or_known_default()?))
}

/// `host[:port]` of a `Host` header, with `default_port` when it has none.
fn host_authority(host: &str, default_port: u16) -> Option<(String, u16)> {
    let authority: http::uri::Authority = host.parse().ok()?;
    Some((
        authority.host().to_ascii_lowercase(),
        authority.port_u16().unwrap_or(default_port),
    ))
}

/// `Err` when `method` changes state and the headers show the request was sent by another
/// site's page.
pub fn check(method: &Method, headers: &HeaderMap) -> Result<(), CrossSite> {
    if is_safe(method) {
        return Ok(());
    }
    if let Some(site) = text(headers, header::HeaderName::from_static("sec-fetch-site")) {
        // The browser's own word; `Origin` may then be "null" (a no-referrer policy).
        return match site {
            "same-origin" | "none" => Ok(()),
            _ => Err(CrossSite::FetchSite(site.to_string())),
        };
    }
    let Some(origin) = text(headers, header::ORIGIN) else {
        return Ok(());
    };
    let host = text(headers, header::HOST).unwrap_or("");
    let same = origin_authority(origin)
        .and_then(|(o_host, o_port)| {
            host_authority(host, o_port)
                .map(|(h_host, h_port)| o_host == h_host && o_port == h_port)
        })
        .unwrap_or(false);
    if same {
        Ok(())
    } else {
        Err(CrossSite::Origin {
            origin: origin.to_string(),
            host: host.to_string(),
        })
    }
}

/// A state-changing request without `Content-Type: application/json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a request that changes something must carry Content-Type: application/json, which no cross-site form can send (got {0}); with curl: -H 'Content-Type: application/json'")]
pub struct NotJson(String);

/// The page's own forms, exempt from [`check_content_type`].
const FORMS: [&str; 2] = ["/login", "/logout"];

/// `Err` when `method` changes state (on any path but the page's login and logout forms)
/// and the request does not say `Content-Type: application/json` (parameters allowed).
pub fn check_content_type(method: &Method, path: &str, headers: &HeaderMap) -> Result<(), NotJson> {
    if is_safe(method) || FORMS.contains(&path) {
        return Ok(());
    }
    let Some(value) = text(headers, header::CONTENT_TYPE) else {
        return Err(NotJson("none".into()));
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(NotJson(format!("{value:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn same_origin_and_non_browser_requests_pass_cross_site_ones_do_not() {
        let post = Method::POST;
        let host = ("host", "127.0.0.1:9091");
        // The CLI and curl: no browser headers.
        assert_eq!(check(&post, &headers(&[host])), Ok(()));
        // The page itself.
        let own = [
            host,
            ("origin", "http://127.0.0.1:9091"),
            ("sec-fetch-site", "same-origin"),
        ];
        assert_eq!(check(&post, &headers(&own)), Ok(()));
        // A form posted under `Referrer-Policy: no-referrer` says Origin: null.
        let own_form = [host, ("origin", "null"), ("sec-fetch-site", "same-origin")];
        assert_eq!(check(&post, &headers(&own_form)), Ok(()));
        // The browser's header decides: a matching Origin does not excuse a cross-site one.
        let mixed = [
            host,
            ("origin", "http://127.0.0.1:9091"),
            ("sec-fetch-site", "cross-site"),
        ];
        assert!(check(&post, &headers(&mixed)).is_err());
        // Behind a TLS proxy that keeps the Host header.
        let proxied = [
            ("host", "ops.example.com"),
            ("origin", "https://ops.example.com"),
        ];
        assert_eq!(check(&post, &headers(&proxied)), Ok(()));
        // Another site, by either header.
        assert!(matches!(
            check(&post, &headers(&[host, ("sec-fetch-site", "cross-site")])),
            Err(CrossSite::FetchSite(_))
        ));
        // Same site, other port (another local app): still another origin.
        assert!(matches!(
            check(&post, &headers(&[host, ("sec-fetch-site", "same-site")])),
            Err(CrossSite::FetchSite(_))
        ));
        for origin in ["https://evil.example", "http://127.0.0.1:8080", "null"] {
            assert!(
                matches!(
                    check(&post, &headers(&[host, ("origin", origin)])),
                    Err(CrossSite::Origin { .. })
                ),
                "{origin}"
            );
        }
        // Reading is never refused.
        assert_eq!(
            check(
                &Method::GET,
                &headers(&[host, ("sec-fetch-site", "cross-site")])
            ),
            Ok(())
        );
        assert!(check(
            &Method::DELETE,
            &headers(&[host, ("origin", "https://evil.example")])
        )
        .is_err());
    }

    #[test]
    fn a_state_change_needs_a_json_content_type_that_no_form_can_send() {
        let post = Method::POST;
        let json = headers(&[("content-type", "application/json")]);
        assert_eq!(check_content_type(&post, "/reload", &json), Ok(()));
        let with_charset = headers(&[("content-type", "Application/JSON; charset=utf-8")]);
        assert_eq!(
            check_content_type(&post, "/dead/retry", &with_charset),
            Ok(())
        );
        for simple in [
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/json-seq",
        ] {
            let h = headers(&[("content-type", simple)]);
            assert!(
                check_content_type(&post, "/reload", &h).is_err(),
                "{simple}"
            );
        }
        // A bodiless `fetch(..., {method: "POST", mode: "no-cors"})` sends none at all.
        assert!(check_content_type(&Method::DELETE, "/dead/x", &HeaderMap::new()).is_err());
        assert_eq!(
            check_content_type(&Method::GET, "/queue", &HeaderMap::new()),
            Ok(())
        );
        // The page's own forms.
        let form = headers(&[("content-type", "application/x-www-form-urlencoded")]);
        assert_eq!(check_content_type(&post, "/login", &form), Ok(()));
        assert_eq!(
            check_content_type(&post, "/logout", &HeaderMap::new()),
            Ok(())
        );
    }
}
