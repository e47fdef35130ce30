//! Reading the one bearer credential of a request (RFC 6750 §2.1).

use http::{HeaderMap, header::AUTHORIZATION};

use crate::AuthError;

/// The longest credential accepted, in bytes; longer ones are refused before any decoding.
pub const MAX_CREDENTIAL_LEN: usize = 8 * 1024;

/// The credential of the request's `Authorization: Bearer …` header.
///
/// - No `Authorization` header: [`AuthError::MissingCredential`].
/// - Two headers, another scheme, no scheme, an empty or oversized credential, or characters
///   outside RFC 6750's `b64token`: [`AuthError::InvalidRequest`].
///
/// The scheme is case-insensitive (RFC 9110 §11.1) and may be followed by several spaces.
/// Credentials are never read from the query string or from cookies.
///
/// ```
/// use http::HeaderMap;
/// use portcullis_core::{AuthError, bearer_credential};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("authorization", "Bearer abc.def.ghi".parse().unwrap());
/// assert_eq!(bearer_credential(&headers).unwrap(), "abc.def.ghi");
///
/// headers.insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
/// assert!(matches!(bearer_credential(&headers), Err(AuthError::InvalidRequest { .. })));
/// ```
pub fn bearer_credential(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthError::MissingCredential)?;
    if values.next().is_some() {
        return Err(AuthError::invalid_request(
            "more than one Authorization header",
        ));
    }
    if value.len() > MAX_CREDENTIAL_LEN + "Bearer ".len() {
        return Err(AuthError::invalid_request("the credential is too large"));
    }
    let value = value
        .to_str()
        .map_err(|_| AuthError::invalid_request("the Authorization header is not ASCII"))?;
    let Some((scheme, rest)) = value.split_once(' ') else {
        return Err(AuthError::invalid_request(
            "the Authorization header must be `Bearer <credential>`",
        ));
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::invalid_request(
            "the Authorization scheme must be Bearer",
        ));
    }
    let credential = rest.trim_start_matches(' ');
    if credential.is_empty() {
        return Err(AuthError::invalid_request("the bearer credential is empty"));
    }
    if !is_b64token(credential) {
        return Err(AuthError::invalid_request(
            "the bearer credential is malformed",
        ));
    }
    Ok(credential)
}

/// RFC 6750 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn parse(values: &[&[u8]]) -> Result<String, AuthError> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        }
        bearer_credential(&h).map(str::to_owned)
    }

    #[test]
    fn accepted() {
        assert_eq!(parse(&[b"Bearer a.b.c"]).unwrap(), "a.b.c");
        assert_eq!(parse(&[b"bearer a.b.c"]).unwrap(), "a.b.c");
        assert_eq!(parse(&[b"BEARER   pc_sk_abc"]).unwrap(), "pc_sk_abc");
        assert_eq!(parse(&[b"Bearer abc=="]).unwrap(), "abc==");
    }

    #[test]
    fn refused() {
        assert_eq!(parse(&[]).unwrap_err(), AuthError::MissingCredential);
        for bad in [
            &[&b"Bearer a"[..], b"Bearer b"][..],
            &[b"Bearer"],
            &[b"Bearer "],
            &[b"a.b.c"],
            &[b"Basic dXNlcjpwYXNz"],
            &[b"Bearer a b"],
            &[b"Bearer a,Bearer b"],
            &[b"Bearer ===="],
            &[b"Bearer \xc3\xa9t\xc3\xa9"],
            &[b"Bearer a\tb"],
        ] {
            assert!(
                matches!(parse(bad), Err(AuthError::InvalidRequest { .. })),
                "{bad:?}"
            );
        }
        let big = format!("Bearer {}", "a".repeat(MAX_CREDENTIAL_LEN + 1));
        assert!(matches!(
            parse(&[big.as_bytes()]),
            Err(AuthError::InvalidRequest { .. })
        ));
    }
}
