//! Keys are stored only as `HMAC-SHA256(server secret, key)`, with the secret's version so that
//! the secret can be rotated: a key found under a previous version is re-hashed on its next use.

use std::{fmt, sync::Arc};

use aws_lc_rs::hmac;
use portcullis_core::ConfigError;

/// The stored form of a key.
pub type Digest = [u8; 32];

/// The shortest server secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// Hashes keys with the current server secret, and knows previous ones during a rotation.
///
/// ```
/// use portcullis_apikey::KeyHasher;
///
/// let old = KeyHasher::new(1, &[7; 32]).unwrap();
/// let rotated = KeyHasher::new(2, &[9; 32]).unwrap().previous(1, &[7; 32]).unwrap();
/// let key = "pc_sk_example";
/// assert_ne!(old.digest(key), rotated.digest(key));
/// assert!(rotated.digests(key).any(|(version, d)| version == 1 && d == old.digest(key)));
/// ```
#[derive(Clone)]
pub struct KeyHasher {
    /// The current secret first.
    secrets: Arc<[(u16, hmac::Key)]>,
}

impl KeyHasher {
    /// Hash with `secret` (at least [`MIN_SECRET_LEN`] bytes), known as `version`.
    pub fn new(version: u16, secret: &[u8]) -> Result<Self, ConfigError> {
        Ok(Self {
            secrets: vec![(version, key(secret)?)].into(),
        })
    }

    /// Also recognize digests made with an earlier `secret`, known as `version`.
    pub fn previous(self, version: u16, secret: &[u8]) -> Result<Self, ConfigError> {
        if self.secrets.iter().any(|(v, _)| *v == version) {
            return Err(ConfigError::new(
                "api_keys.secret",
                format!("secret version {version} is given twice"),
            ));
        }
        let mut secrets = self.secrets.to_vec();
        secrets.push((version, key(secret)?));
        Ok(Self {
            secrets: secrets.into(),
        })
    }

    /// The version of the current secret.
    pub fn current_version(&self) -> u16 {
        self.secrets[0].0
    }

    /// The digest of `key` under the current secret.
    pub fn digest(&self, key: &str) -> Digest {
        digest(&self.secrets[0].1, key)
    }

    /// The digests of `key` under every known secret, current first.
    pub fn digests<'a>(&'a self, key: &'a str) -> impl Iterator<Item = (u16, Digest)> + 'a {
        self.secrets.iter().map(move |(v, k)| (*v, digest(k, key)))
    }
}

fn key(secret: &[u8]) -> Result<hmac::Key, ConfigError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(ConfigError::new(
            "api_keys.secret",
            format!("the key-hashing secret must be at least {MIN_SECRET_LEN} bytes"),
        ));
    }
    Ok(hmac::Key::new(hmac::HMAC_SHA256, secret))
}

fn digest(key: &hmac::Key, plaintext: &str) -> Digest {
    let tag = hmac::sign(key, plaintext.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let versions: Vec<u16> = self.secrets.iter().map(|(v, _)| *v).collect();
        f.debug_struct("KeyHasher")
            .field("versions", &versions)
            .finish_non_exhaustive()
    }
}
