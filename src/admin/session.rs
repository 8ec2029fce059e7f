//! The status page's login cookie: proof that its holder typed `server.admin_token`.
//!
//! The cookie does not carry the token itself: it carries when it was issued and an
//! HMAC-SHA256 of that time keyed by the token. So a leaked cookie is not the API token
//! (it opens the page for [`LIFETIME`], not the JSON API), it expires on the server's clock
//! whatever the browser does, and changing the token (and reloading) logs every page out.
//! It is `HttpOnly` (no script reads it) and `SameSite=Strict` (no other site's request
//! carries it); `Secure` when the login came over HTTPS (a TLS proxy in front).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The cookie's name.
pub const COOKIE: &str = "hookrouter_session";
/// How long a login lasts.
pub const LIFETIME_MS: u64 = 12 * 3600 * 1000;
/// How far in the future an issue time may be (clock steps between two daemons).
const CLOCK_SLACK_MS: u64 = 60_000;

fn signature(token: &str, issued_ms: u64) -> Vec<u8> {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(token.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return Vec::new(),
    };
    mac.update(b"hookrouter status page session\0");
    mac.update(issued_ms.to_string().as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// A fresh cookie value for `token`, issued at `now_ms`.
pub fn issue(token: &str, now_ms: u64) -> String {
    format!(
        "v1.{now_ms}.{}",
        URL_SAFE_NO_PAD.encode(signature(token, now_ms))
    )
}

/// Is `value` a cookie issued for `token` that has not expired at `now_ms`?
pub fn valid(value: &str, token: &str, now_ms: u64) -> bool {
    let mut parts = value.split('.');
    let (Some("v1"), Some(issued), Some(mac), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(issued_ms) = issued.parse::<u64>() else {
        return false;
    };
    if issued_ms > now_ms.saturating_add(CLOCK_SLACK_MS)
        || now_ms.saturating_sub(issued_ms) >= LIFETIME_MS
    {
        return false;
    }
    let Ok(presented) = URL_SAFE_NO_PAD.decode(mac) else {
        return false;
    };
    presented.ct_eq(&signature(token, issued_ms)).into()
}

/// The values of every `name` cookie in the request's `Cookie` headers.
pub fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// The `Set-Cookie` value that logs in with `value`.
pub fn set_cookie(value: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
        LIFETIME_MS / 1000,
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that logs out.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_valid_for_its_token_and_lifetime_only() {
        let now = 1_700_000_000_000;
        let c = issue("s3cret", now);
        assert!(!c.contains("s3cret"));
        assert!(valid(&c, "s3cret", now));
        assert!(valid(&c, "s3cret", now + LIFETIME_MS - 1));
        assert!(!valid(&c, "s3cret", now + LIFETIME_MS));
        assert!(!valid(&c, "other", now), "another token");
        // Issued in the future beyond the slack: forged or a broken clock.
        assert!(!valid(
            &issue("s3cret", now + 2 * CLOCK_SLACK_MS),
            "s3cret",
            now
        ));
        // A changed issue time breaks the signature.
        let forged = c.replacen(&now.to_string(), &(now + 1).to_string(), 1);
        assert!(!valid(&forged, "s3cret", now + 1));
        for junk in [
            "",
            "v1",
            "v1.x.y",
            "v2.1.AAAA",
            "v1.1.!!!",
            &format!("{c}.x"),
        ] {
            assert!(!valid(junk, "s3cret", now), "{junk:?}");
        }
    }

    #[test]
    fn cookies_are_found_among_others_and_the_attributes_are_set() {
        let mut h = HeaderMap::new();
        h.append(
            http::header::COOKIE,
            "a=1; hookrouter_session=x".parse().unwrap(),
        );
        h.append(
            http::header::COOKIE,
            "hookrouter_session=y".parse().unwrap(),
        );
        assert_eq!(cookies(&h, COOKIE).collect::<Vec<_>>(), ["x", "y"]);
        let set = set_cookie("v", false);
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict") && !set.contains("Secure")
        );
        assert!(set_cookie("v", true).ends_with("; Secure"));
        assert!(clear_cookie().contains("Max-Age=0"));
    }
}
