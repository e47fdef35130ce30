//! The key format: `<prefix>_<type>_<body><checksum>`.
//!
//! The body is 32 bytes from the OS CSPRNG in base62 (43 characters); the checksum is the CRC32
//! of everything before it, in base62 (6 characters), as GitHub's token format does. A parser can
//! therefore tell a real key from a typo or noise without any lookup, and a secret scanner can
//! match `pc_sk_[0-9A-Za-z]{49}` precisely. The checksum is no security control: anyone can
//! compute one.

use std::fmt;

use portcullis_core::ConfigError;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Base62 characters of the 32-byte body.
pub const BODY_LEN: usize = 43;
/// Base62 characters of the CRC32 checksum.
pub const CHECKSUM_LEN: usize = 6;
/// The type of a service-account secret key.
pub const SECRET_KEY: &str = "sk";

/// A deployment's key format: its prefix (default `pc`).
///
/// ```
/// use portcullis_apikey::KeyFormat;
///
/// let format = KeyFormat::default();
/// let key = format.generate();
/// assert!(key.expose().starts_with("pc_sk_"));
/// assert!(format.parse(key.expose()).is_ok());
///
/// // One changed character fails the checksum, before any hashing or I/O.
/// let mut typo = key.expose().to_owned();
/// let last = typo.pop().unwrap();
/// typo.push(if last == 'a' { 'b' } else { 'a' });
/// assert!(format.parse(&typo).is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct KeyFormat {
    prefix: Box<str>,
}

impl Default for KeyFormat {
    fn default() -> Self {
        Self {
            prefix: "pc".into(),
        }
    }
}

impl fmt::Debug for KeyFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFormat")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl KeyFormat {
    /// A format with this prefix: 1 to 16 characters of `a-z` and `0-9`.
    pub fn new(prefix: &str) -> Result<Self, ConfigError> {
        let ok = (1..=16).contains(&prefix.len())
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(Self {
                prefix: prefix.into(),
            })
        } else {
            Err(ConfigError::new(
                "api_keys.prefix",
                "a key prefix is 1 to 16 characters of a-z and 0-9",
            ))
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The length of every key of this format.
    pub fn key_len(&self) -> usize {
        self.prefix.len() + 1 + SECRET_KEY.len() + 1 + BODY_LEN + CHECKSUM_LEN
    }

    /// A new secret key from the OS CSPRNG.
    pub fn generate(&self) -> PlaintextKey {
        let mut body = [0u8; 32];
        aws_lc_rs::rand::fill(&mut body).expect("the OS CSPRNG works");
        let mut key = String::with_capacity(self.key_len());
        key.push_str(&self.prefix);
        key.push('_');
        key.push_str(SECRET_KEY);
        key.push('_');
        key.push_str(&base62(&body, BODY_LEN));
        let checksum = checksum(key.as_bytes());
        key.push_str(std::str::from_utf8(&checksum).expect("base62 is ASCII"));
        PlaintextKey(key.into_boxed_str())
    }

    /// Whether `s` starts like a key of this format (`<prefix>_`): a cheap routing test.
    pub fn looks_like(&self, s: &str) -> bool {
        s.len() > self.prefix.len()
            && s.as_bytes()[self.prefix.len()] == b'_'
            && s.starts_with(&*self.prefix)
    }

    /// Check the shape and checksum of `s`.
    pub fn parse<'a>(&self, s: &'a str) -> Result<ParsedKey<'a>, MalformedKey> {
        if s.len() != self.key_len() || !s.is_ascii() {
            return Err(MalformedKey(()));
        }
        let head_len = self.prefix.len() + 1 + SECRET_KEY.len() + 1;
        let (head, tail) = s.split_at(head_len);
        let expected_head = head
            .strip_prefix(&*self.prefix)
            .and_then(|h| h.strip_prefix('_'))
            .and_then(|h| h.strip_prefix(SECRET_KEY))
            .is_some_and(|h| h == "_");
        if !expected_head || !tail.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(MalformedKey(()));
        }
        let (signed, sum) = s.split_at(s.len() - CHECKSUM_LEN);
        if checksum(signed.as_bytes()) != sum.as_bytes() {
            return Err(MalformedKey(()));
        }
        Ok(ParsedKey { key: s, head_len })
    }
}

/// A key whose shape and checksum are right (it may still be unknown, expired or revoked).
#[derive(Clone, Copy)]
pub struct ParsedKey<'a> {
    key: &'a str,
    head_len: usize,
}

impl<'a> ParsedKey<'a> {
    /// The whole key. Never log it.
    pub fn expose(&self) -> &'a str {
        self.key
    }

    /// The display start: `<prefix>_sk_` and the first four characters of the body.
    pub fn start(&self) -> &'a str {
        &self.key[..self.head_len + 4]
    }

    /// The last four characters.
    pub fn last4(&self) -> &'a str {
        &self.key[self.key.len() - 4..]
    }
}

impl fmt::Debug for ParsedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ParsedKey({}…{})", self.start(), self.last4())
    }
}

/// A plaintext key, shown once at creation. Its `Debug` and `Display` never show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct PlaintextKey(Box<str>);

impl PlaintextKey {
    /// The secret itself, to hand to its owner once. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PlaintextKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlaintextKey(<redacted>)")
    }
}

/// A string that is not a key of the format (wrong prefix, type, length, characters or checksum).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MalformedKey(());

impl fmt::Display for MalformedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not an API key of this format")
    }
}

impl std::error::Error for MalformedKey {}

/// The CRC32 of `signed` in base62, left-padded with `0` (what `base62` makes of its four
/// big-endian bytes), without allocating: it is checked on every request.
fn checksum(signed: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut n = crc32fast::hash(signed);
    let mut digits = [b'0'; CHECKSUM_LEN];
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    digits
}

/// `bytes` as a big-endian number in base62, left-padded with `0` to `len` characters.
fn base62(bytes: &[u8], len: usize) -> String {
    let mut n = bytes.to_vec();
    let mut digits = vec![b'0'; len];
    for slot in digits.iter_mut().rev() {
        let mut rem = 0u32;
        for byte in &mut n {
            let cur = (rem << 8) | u32::from(*byte);
            *byte = (cur / 62) as u8;
            rem = cur % 62;
        }
        *slot = BASE62[rem as usize];
    }
    String::from_utf8(digits).expect("base62 is ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base62_is_fixed_width() {
        assert_eq!(base62(&[0; 4], 6), "000000");
        assert_eq!(base62(&[0, 0, 0, 61], 6), "00000z");
        assert_eq!(base62(&[0, 0, 0, 62], 6), "000010");
        assert_eq!(base62(&u32::MAX.to_be_bytes(), 6), "4gfFC3");
        assert_eq!(base62(&[0xff; 32], BODY_LEN).len(), BODY_LEN);
    }

    #[test]
    fn checksum_is_the_base62_of_the_crc() {
        for signed in [&b""[..], b"pc_sk_", b"acme_sk_0123456789", &[0xff; 64]] {
            let crc = crc32fast::hash(signed);
            assert_eq!(
                &checksum(signed)[..],
                base62(&crc.to_be_bytes(), CHECKSUM_LEN).as_bytes()
            );
        }
    }

    #[test]
    fn generate_and_parse() {
        let f = KeyFormat::new("acme").unwrap();
        let k = f.generate();
        assert_eq!(k.expose().len(), f.key_len());
        let p = f.parse(k.expose()).unwrap();
        assert_eq!(p.start(), &k.expose()[..12]);
        assert!(p.start().starts_with("acme_sk_"));
        assert_eq!(format!("{k:?}"), "PlaintextKey(<redacted>)");
        assert!(f.looks_like(k.expose()));
        assert!(!f.looks_like("eyJhbGciOi.x.y"));
        assert!(
            KeyFormat::default().parse(k.expose()).is_err(),
            "another prefix"
        );
        assert_ne!(f.generate(), k);
    }

    #[test]
    fn malformed() {
        let f = KeyFormat::default();
        let k = f.generate();
        let good = k.expose();
        let mut cases = vec![
            String::new(),
            good[..good.len() - 1].to_owned(),
            format!("{good}x"),
            good.replacen("pc_sk_", "pc_rk_", 1),
            good.replacen("pc_", "xx_", 1),
            "x".repeat(10 * 1024),
            format!("{}é", &good[..good.len() - 2]),
        ];
        let mut flipped = good.to_owned().into_bytes();
        flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
        cases.push(String::from_utf8(flipped).unwrap());
        for bad in cases {
            assert!(f.parse(&bad).is_err(), "{bad}");
        }
        assert!(KeyFormat::new("Bad_").is_err());
        assert!(KeyFormat::new("").is_err());
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(s in ".{0,120}") {
            let _ = KeyFormat::default().parse(&s);
        }

        #[test]
        fn a_changed_character_never_passes(pos in 0usize..55, c in "[0-9A-Za-z_é]") {
            let format = KeyFormat::default();
            let key = format.generate();
            let mut chars: Vec<char> = key.expose().chars().collect();
            let pos = pos % chars.len();
            let c = c.chars().next().unwrap();
            proptest::prop_assume!(chars[pos] != c);
            chars[pos] = c;
            let changed: String = chars.into_iter().collect();
            proptest::prop_assert!(format.parse(&changed).is_err());
        }
    }
}
