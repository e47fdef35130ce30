//! The route policy: which method and path may be forwarded, with which scopes.
//!
//! ```toml
//! [[routes]]
//! path = "/api/v1/orgs/{org}/comps"
//! methods = ["GET"]
//! scopes = ["comps:read"]
//!
//! [[routes]]
//! path = "/api/v1/orgs/{org}/reports/{report}"
//! methods = ["DELETE"]
//! scopes = ["reports:write"]
//! sensitive = true
//! guard = { url = "http://127.0.0.1:9000/checks/report-delete", timeout_ms = 500 }
//!
//! [[routes]]
//! path = "/status"
//! public = true
//! ```
//!
//! Deny by default: a request that matches no route is refused with 403 and never forwarded.
//! `methods` left out means every method; `scopes` are all required unless `match = "any"`.
//! An `{org}` segment must name the principal's organization. A route naming a scope outside
//! the canonical list, a malformed or conflicting path, or a method twice is a start-up error
//! that names the route.

use std::time::Duration;

use http::Method;
use portcullis_core::{ConfigError, Scope, ScopePolicy};
use serde::Deserialize;

/// Paths the gateway serves itself, outside the policy.
pub const RESERVED_PATHS: &[&str] = &[
    "/healthz",
    "/readyz",
    "/api/v1/api-keys",
    "/api/v1/api-keys/{id}",
    "/webhooks/clerk",
    crate::assertion::JWKS_PATH,
];

/// A route as written in the policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    path: String,
    #[serde(default)]
    methods: Option<Vec<String>>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default, rename = "match")]
    matching: Option<String>,
    #[serde(default)]
    sensitive: bool,
    #[serde(default)]
    public: bool,
    #[serde(default)]
    guard: Option<RawGuard>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGuard {
    url: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// An HTTP callout guard: the gateway POSTs a description of the request and passes it on a
/// 2xx answer; anything else denies, a timeout or a connection failure fails closed (503).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CalloutGuard {
    /// Where to POST.
    pub url: url::Url,
    /// How long to wait (default 1 s).
    pub timeout: Duration,
}

/// A validated route.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Route {
    /// The axum path pattern (`/api/v1/orgs/{org}/comps`).
    pub path: String,
    /// The methods; `None` is every method.
    pub methods: Option<Vec<Method>>,
    /// The scopes required.
    pub scopes: Vec<Scope>,
    /// Whether any one of `scopes` is enough (default: all are needed).
    pub any: bool,
    /// Record the decision durably before forwarding.
    pub sensitive: bool,
    /// Forward without authentication.
    pub public: bool,
    /// An optional callout guard.
    pub guard: Option<CalloutGuard>,
}

impl Route {
    /// Whether this route allows `method`.
    pub fn allows(&self, method: &Method) -> bool {
        self.methods.as_ref().is_none_or(|m| m.contains(method))
    }
}

/// Check every route, naming the first bad one.
pub fn validate_routes(
    raw: Vec<RawRoute>,
    policy: &ScopePolicy,
) -> Result<Vec<Route>, ConfigError> {
    let mut matcher = matchit::Router::<usize>::new();
    let mut routes: Vec<Route> = Vec::with_capacity(raw.len());
    for reserved in RESERVED_PATHS {
        matcher
            .insert(*reserved, usize::MAX)
            .expect("the reserved paths do not conflict");
    }
    for (i, raw) in raw.into_iter().enumerate() {
        let name = format!("routes[{i}] (path `{}`)", raw.path);
        let err = |message: String| ConfigError::new(name.clone(), message);
        if !raw.path.starts_with('/') {
            return Err(err("the path must start with /".into()));
        }
        if raw.path.contains(['?', '#', ' ']) || raw.path.contains("//") {
            return Err(err("the path must be a plain path pattern".into()));
        }
        // The org check finds `{org}` by its position (OrgContextLayer::path_template).
        if raw
            .path
            .split('/')
            .any(|s| s.contains("{org}") && s != "{org}" && !s.contains("{{"))
        {
            return Err(err("`{org}` must be a whole path segment".into()));
        }
        let methods = match raw.methods {
            None => None,
            Some(list) if list.is_empty() => {
                return Err(err(
                    "`methods` is empty: leave it out for every method".into()
                ));
            }
            Some(list) => {
                let mut methods = Vec::with_capacity(list.len());
                for m in list {
                    let method = Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                        .ok()
                        .filter(|m| axum::routing::MethodFilter::try_from(m.clone()).is_ok())
                        .ok_or_else(|| {
                            err(format!(
                                "`{m}` is not one of GET HEAD POST PUT PATCH DELETE OPTIONS TRACE CONNECT"
                            ))
                        })?;
                    if methods.contains(&method) {
                        return Err(err(format!("method {method} is listed twice")));
                    }
                    methods.push(method);
                }
                Some(methods)
            }
        };
        let mut scopes = Vec::with_capacity(raw.scopes.len());
        for s in &raw.scopes {
            let scope = Scope::new(s).map_err(|_| err(format!("`{s}` is not a scope")))?;
            if !policy.canonical().contains(&scope) {
                return Err(err(format!(
                    "scope `{s}` is not in the canonical list ({})",
                    policy
                        .canonical()
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                )));
            }
            scopes.push(scope);
        }
        let any = match raw.matching.as_deref() {
            None | Some("all") => false,
            Some("any") => true,
            Some(other) => return Err(err(format!("match `{other}` is not all or any"))),
        };
        if raw.public && (!scopes.is_empty() || raw.sensitive || raw.guard.is_some()) {
            return Err(err(
                "a public route is forwarded without authentication: it cannot have scopes, sensitive or a guard".into(),
            ));
        }
        if any && scopes.is_empty() {
            return Err(err("match = \"any\" needs scopes".into()));
        }
        let guard = raw
            .guard
            .map(|g| {
                let url = url::Url::parse(&g.url)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| err(format!("guard url `{}` is not an http(s) URL", g.url)))?;
                let timeout = Duration::from_millis(g.timeout_ms.unwrap_or(1000));
                if timeout.is_zero() || timeout > Duration::from_secs(30) {
                    return Err(err("guard timeout_ms must be 1..=30000".into()));
                }
                Ok(CalloutGuard { url, timeout })
            })
            .transpose()?;

        // Same path as an earlier route: methods must not overlap.
        if let Some(earlier) = routes.iter().find(|r| r.path == raw.path) {
            let overlap = match (&earlier.methods, &methods) {
                (Some(a), Some(b)) => a.iter().find(|m| b.contains(m)).map(|m| m.to_string()),
                _ => Some("every method".into()),
            };
            if let Some(m) = overlap {
                return Err(err(format!(
                    "{m} on this path is already covered by an earlier route"
                )));
            }
        } else {
            match matcher.insert(raw.path.clone(), i) {
                Ok(()) => {}
                Err(e) => {
                    let reserved = RESERVED_PATHS.contains(&raw.path.as_str());
                    return Err(err(if reserved {
                        "the gateway serves this path itself".into()
                    } else {
                        format!("malformed or conflicting path: {e}")
                    }));
                }
            }
        }
        routes.push(Route {
            path: raw.path,
            methods,
            scopes,
            any,
            sensitive: raw.sensitive,
            public: raw.public,
            guard,
        });
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<Vec<Route>, ConfigError> {
        #[derive(Deserialize)]
        struct F {
            routes: Vec<RawRoute>,
        }
        let f: F = toml::from_str(toml).unwrap();
        validate_routes(f.routes, &ScopePolicy::builder().build().unwrap())
    }

    #[test]
    fn a_good_policy_parses() {
        let routes = parse(
            r#"
            [[routes]]
            path = "/api/v1/orgs/{org}/comps"
            methods = ["GET", "head"]
            scopes = ["comps:read"]
            [[routes]]
            path = "/api/v1/orgs/{org}/comps"
            methods = ["POST"]
            scopes = ["comps:write", "comps:read"]
            match = "any"
            sensitive = true
            guard = { url = "http://127.0.0.1:1/check", timeout_ms = 200 }
            [[routes]]
            path = "/status"
            public = true
            "#,
        )
        .unwrap();
        assert_eq!(routes.len(), 3);
        assert!(routes[0].allows(&Method::HEAD) && !routes[0].allows(&Method::POST));
        assert!(routes[1].any && routes[1].sensitive);
        assert_eq!(
            routes[1].guard.as_ref().unwrap().timeout,
            Duration::from_millis(200)
        );
        assert!(routes[2].public && routes[2].allows(&Method::DELETE));
    }

    #[test]
    fn bad_routes_are_named() {
        let cases = [
            ("path = \"no-slash\"", "must start with /"),
            ("path = \"/a\"\nscopes = [\"pizza:eat\"]", "canonical"),
            ("path = \"/a\"\nscopes = [\"NOT A SCOPE\"]", "not a scope"),
            ("path = \"/a/{b\"", "malformed"),
            ("path = \"/a\"\nmethods = [\"G E T\"]", "is not one of"),
            ("path = \"/a\"\nmethods = [\"PURGE\"]", "is not one of"),
            ("path = \"/a\"\nmethods = []", "empty"),
            (
                "path = \"/a\"\npublic = true\nscopes = [\"comps:read\"]",
                "public",
            ),
            ("path = \"/healthz\"", "serves this path itself"),
            ("path = \"/orgs/{org}.json\"", "whole path segment"),
            ("path = \"/api/v1/api-keys\"", "serves this path itself"),
            (
                "path = \"/a\"\nmatch = \"some\"\nscopes = [\"comps:read\"]",
                "all or any",
            ),
            ("path = \"/a\"\nguard = { url = \"ftp://x\" }", "guard url"),
        ];
        for (route, message) in cases {
            let toml = format!("[[routes]]\npath = \"/ok\"\n[[routes]]\n{route}\n");
            let err = parse(&toml).unwrap_err();
            assert!(err.key().starts_with("routes[1]"), "{route}: {err}");
            assert!(err.to_string().contains(message), "{route}: {err}");
        }
    }

    #[test]
    fn overlapping_routes_are_refused() {
        let err = parse(
            "[[routes]]\npath = \"/a\"\nmethods = [\"GET\"]\n[[routes]]\npath = \"/a\"\nmethods = [\"POST\", \"GET\"]\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("GET"), "{err}");
        let err =
            parse("[[routes]]\npath = \"/a\"\n[[routes]]\npath = \"/a\"\nmethods = [\"POST\"]\n")
                .unwrap_err();
        assert!(err.to_string().contains("already covered"), "{err}");
        let err =
            parse("[[routes]]\npath = \"/a/{x}\"\n[[routes]]\npath = \"/a/{y}\"\n").unwrap_err();
        assert!(err.to_string().contains("conflicting"), "{err}");
    }
}
