//! The JOSE header and the claims, parsed strictly: a claim of the wrong type, or a known member
//! given twice, makes the token invalid.

use serde::{Deserialize, Deserializer, de::IgnoredAny};

/// The protected header. Unknown members are ignored; `jku`, `x5u`, `jwk` and `x5c` are never
/// read, so they can never cause a fetch or supply a key.
#[derive(Deserialize)]
pub(crate) struct Header {
    pub(crate) alg: String,
    #[serde(default)]
    pub(crate) kid: Option<String>,
    #[serde(default)]
    pub(crate) typ: Option<String>,
    /// Any `crit` is refused, even `null`: no extension is understood.
    #[serde(default, deserialize_with = "present")]
    pub(crate) crit: Option<()>,
    /// RFC 7797 unencoded payloads are refused, `b64` in any form.
    #[serde(default, deserialize_with = "present")]
    pub(crate) b64: Option<()>,
}

/// `Some(())` for a member that is there, whatever its value (`null` included).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<()>, D::Error> {
    IgnoredAny::deserialize(d).map(|_| Some(()))
}

/// Only the issuer, to pick the key set when several issuers are configured.
#[derive(Deserialize)]
pub(crate) struct IssuerOnly {
    #[serde(default)]
    pub(crate) iss: Option<IgnoredOrString>,
}

/// A string, or anything else (which selects no issuer).
pub(crate) enum IgnoredOrString {
    String(String),
    Other,
}

impl<'de> Deserialize<'de> for IgnoredOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Ok(match v {
            serde_json::Value::String(s) => Self::String(s),
            _ => Self::Other,
        })
    }
}

/// The claims Portcullis reads. Everything else is ignored.
#[derive(Deserialize)]
pub(crate) struct Claims {
    pub(crate) iss: String,
    pub(crate) sub: String,
    pub(crate) exp: NumericDate,
    #[serde(default)]
    pub(crate) nbf: Option<NumericDate>,
    #[serde(default)]
    pub(crate) iat: Option<NumericDate>,
    #[serde(default)]
    pub(crate) aud: Option<Audience>,
    #[serde(default)]
    pub(crate) azp: Option<String>,
    #[serde(default)]
    pub(crate) sid: Option<String>,
    #[serde(default)]
    pub(crate) jti: Option<String>,
    #[serde(default)]
    pub(crate) v: Option<u64>,
    #[serde(default)]
    pub(crate) sts: Option<String>,
    #[serde(default)]
    pub(crate) fva: Option<[i64; 2]>,
    #[serde(default)]
    pub(crate) act: Option<Act>,
    // Clerk v1.
    #[serde(default)]
    pub(crate) org_id: Option<String>,
    #[serde(default)]
    pub(crate) org_slug: Option<String>,
    #[serde(default)]
    pub(crate) org_role: Option<String>,
    #[serde(default)]
    pub(crate) org_permissions: Option<Vec<String>>,
    // Clerk v2.
    #[serde(default)]
    pub(crate) o: Option<OrgClaim>,
    #[serde(default)]
    pub(crate) fea: Option<String>,
}

/// RFC 8693 `act` (Clerk's impersonation actor).
#[derive(Deserialize)]
pub(crate) struct Act {
    pub(crate) sub: String,
    #[serde(default)]
    pub(crate) iss: Option<String>,
    #[serde(default)]
    pub(crate) sid: Option<String>,
    #[serde(default, rename = "type")]
    pub(crate) kind: Option<String>,
}

/// Clerk v2's compact organization claim.
#[derive(Deserialize)]
pub(crate) struct OrgClaim {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) slg: Option<String>,
    #[serde(default)]
    pub(crate) rol: Option<String>,
    #[serde(default)]
    pub(crate) per: Option<String>,
    #[serde(default)]
    pub(crate) fpm: Option<String>,
}

/// `aud`: one string or an array of strings.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub(crate) fn contains_any(&self, accepted: &[Box<str>]) -> bool {
        match self {
            Self::One(a) => accepted.iter().any(|x| **x == **a),
            Self::Many(list) => list.iter().any(|a| accepted.iter().any(|x| **x == **a)),
        }
    }
}

/// A JSON number of seconds (RFC 7519 NumericDate), integer or not; a string is an error, never
/// "absent" (CVE-2026-25537).
#[derive(Clone, Copy)]
pub(crate) struct NumericDate(pub(crate) i64);

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = NumericDate;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of seconds")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<NumericDate, E> {
                Ok(NumericDate(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<NumericDate, E> {
                Ok(NumericDate(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<NumericDate, E> {
                if v.is_finite() {
                    // Saturating: 1e300 is "far future", -1e300 "long past".
                    Ok(NumericDate(v.floor() as i64))
                } else {
                    Err(E::custom("not a finite number"))
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}
