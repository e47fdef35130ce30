//! Clerk session-token claims (v1 and v2) normalized into an organization membership and a list
//! of permissions.
//!
//! Version 2 tokens carry permissions as feature-permission bitmasks (`o.fpm`): the k-th decimal
//! integer of `fpm` is the mask of the k-th feature, and bit *i* (least significant first) grants
//! the i-th name of `o.per`. Clerk's SDKs disagree on which feature "the k-th" is: the JavaScript
//! SDK counts only organization features of `fea`, while the documentation and the Python, Ruby
//! and Java SDKs count positions in the whole `fea` list. [`FpmAlignment`] picks a reading; the
//! default grants only what both readings grant and reports the difference.

use std::collections::BTreeSet;

use portcullis_core::Permissions;

/// Which reading of `fpm` against `fea` to use; see the [module docs](self).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FpmAlignment {
    /// Grant only the permissions both readings grant; report when they differ (the default).
    #[default]
    Intersect,
    /// Count organization features only, as Clerk's JavaScript SDK does.
    OrgFeatures,
    /// Count positions in the whole `fea` list, as Clerk's documentation and its Python, Ruby and
    /// Java SDKs do.
    AllFeatures,
}

/// The longest decimal mask decoded; longer masks grant nothing.
const MAX_MASK_DIGITS: usize = 2048;

/// Permissions decoded from a v2 token.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct V2Permissions {
    /// `feature:permission` names, sorted.
    pub permissions: Permissions<Vec<String>>,
    /// The two readings of `fpm` differed (only with [`FpmAlignment::Intersect`]).
    pub ambiguous: bool,
}

/// Decode the permissions of a v2 token's `o.per` and `o.fpm` against `fea`.
///
/// `per` or `fpm` absent is a missing claim; `fea` absent, or an entry of it without a colon, is a
/// malformed one (nothing granted, no role fallback); a mask that is not decimal digits grants
/// nothing for its feature.
///
/// ```
/// use portcullis_core::Permissions;
/// use portcullis_jwt::clerk::{FpmAlignment, decode_v2};
///
/// let decoded = decode_v2(Some("o:dashboard,o:teams"), Some("manage,read"), Some("3,2"), FpmAlignment::Intersect);
/// assert_eq!(
///     decoded.permissions,
///     Permissions::Listed(vec!["dashboard:manage".into(), "dashboard:read".into(), "teams:read".into()])
/// );
/// ```
pub fn decode_v2(
    fea: Option<&str>,
    per: Option<&str>,
    fpm: Option<&str>,
    alignment: FpmAlignment,
) -> V2Permissions {
    let missing = V2Permissions {
        permissions: Permissions::Missing,
        ambiguous: false,
    };
    let malformed = V2Permissions {
        permissions: Permissions::Malformed,
        ambiguous: false,
    };
    let (Some(per), Some(fpm)) = (per, fpm) else {
        return missing;
    };
    let Some(fea) = fea else {
        return malformed;
    };
    // Every feature is `scope:name`; one without a colon makes the whole list unreadable (Clerk's
    // JavaScript SDK throws), so nothing is granted.
    let mut features = Vec::new();
    for entry in fea.split(',') {
        let Some((scope, name)) = entry.trim().split_once(':') else {
            return malformed;
        };
        features.push((matches!(scope, "o" | "ou" | "uo"), name));
    }
    let perms: Vec<&str> = per.split(',').map(str::trim).collect();
    let masks: Vec<Option<Vec<bool>>> = fpm.split(',').map(|m| mask_bits(m, perms.len())).collect();

    let grant = |feature: &str, mask: &Option<Vec<bool>>, out: &mut BTreeSet<String>| {
        if let Some(bits) = mask {
            for (bit, perm) in bits.iter().zip(&perms) {
                if *bit && !perm.is_empty() {
                    out.insert(format!("{feature}:{perm}"));
                }
            }
        }
    };
    let by_org_features = || {
        let mut out = BTreeSet::new();
        let org_features = features.iter().filter(|(org, _)| *org);
        for ((_, name), mask) in org_features.zip(&masks) {
            grant(name, mask, &mut out);
        }
        out
    };
    let by_all_features = || {
        let mut out = BTreeSet::new();
        for ((org, name), mask) in features.iter().zip(&masks) {
            if *org {
                grant(name, mask, &mut out);
            }
        }
        out
    };
    // Both readings index the same masks when no other feature precedes an organization one.
    let aligned = features
        .iter()
        .skip_while(|(org, _)| *org)
        .all(|(org, _)| !*org);
    let (granted, ambiguous) = match alignment {
        FpmAlignment::OrgFeatures => (by_org_features(), false),
        FpmAlignment::AllFeatures => (by_all_features(), false),
        FpmAlignment::Intersect if aligned => (by_all_features(), false),
        FpmAlignment::Intersect => {
            let a = by_org_features();
            let b = by_all_features();
            let ambiguous = a != b;
            (a.intersection(&b).cloned().collect(), ambiguous)
        }
    };
    // Nothing granted because the readings disagree or a mask is unreadable is not an empty
    // claim: it must never fall back to the role's scopes in non-strict mode.
    let unreadable = masks.iter().any(Option::is_none);
    if granted.is_empty() && (ambiguous || unreadable) {
        return V2Permissions {
            permissions: Permissions::Malformed,
            ambiguous,
        };
    }
    V2Permissions {
        permissions: Permissions::Listed(granted.into_iter().collect()),
        ambiguous,
    }
}

/// The lowest `n` bits of a decimal mask of any size, least significant first; `None` unless the
/// mask (trimmed, as Clerk's SDKs trim) is only ASCII digits.
fn mask_bits(mask: &str, n: usize) -> Option<Vec<bool>> {
    let digits = mask.trim();
    if digits.is_empty()
        || digits.len() > MAX_MASK_DIGITS
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    // Little-endian base 2^32 limbs, built by multiply-and-add: exact at any size.
    let mut limbs: Vec<u32> = Vec::with_capacity(digits.len() / 9 + 1);
    for d in digits.bytes() {
        let mut carry = u64::from(d - b'0');
        for limb in &mut limbs {
            let v = u64::from(*limb) * 10 + carry;
            *limb = v as u32;
            carry = v >> 32;
        }
        if carry > 0 {
            limbs.push(carry as u32);
        }
    }
    Some(
        (0..n)
            .map(|i| limbs.get(i / 32).is_some_and(|l| (l >> (i % 32)) & 1 == 1))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(p: V2Permissions) -> (Vec<String>, bool) {
        match p.permissions {
            Permissions::Listed(v) => (v, p.ambiguous),
            other => panic!("expected a list, got {other:?}"),
        }
    }

    fn decode(fea: &str, per: &str, fpm: &str) -> (Vec<String>, bool) {
        listed(decode_v2(
            Some(fea),
            Some(per),
            Some(fpm),
            FpmAlignment::Intersect,
        ))
    }

    #[test]
    fn docs_example() {
        let (p, amb) = decode("o:dashboard,o:teams", "manage,read", "3,2");
        assert_eq!(p, ["dashboard:manage", "dashboard:read", "teams:read"]);
        assert!(!amb);
    }

    #[test]
    fn js_case_3() {
        let (p, _) = decode(
            "o:repositories,o:projects",
            "read,create,update,delete,revoke",
            "7,21",
        );
        assert_eq!(
            p,
            [
                "projects:read",
                "projects:revoke",
                "projects:update",
                "repositories:create",
                "repositories:read",
                "repositories:update"
            ]
        );
    }

    #[test]
    fn precision_beyond_u64() {
        let per: Vec<String> = (0..54).map(|i| format!("permission_{i}")).collect();
        let per = per.join(",");
        let (p, _) = decode("o:feature", &per, "9007199254740993");
        assert_eq!(p, ["feature:permission_0", "feature:permission_53"]);
        let (p, _) = decode("o:feature", &per, "18014398509481984");
        assert!(p.is_empty());
        // 2^200 + 1 with 201 permissions: exact far beyond u128.
        let per: Vec<String> = (0..201).map(|i| format!("p{i}")).collect();
        let two_200_plus_1 = "1606938044258990275541962092341162602522202993782792835301377";
        let (p, _) = decode("o:f", &per.join(","), two_200_plus_1);
        assert_eq!(p, ["f:p0", "f:p200"]);
    }

    #[test]
    fn malformed_masks_grant_nothing_for_their_feature() {
        for bad in ["-1", "1.5", "1e3", "0x3", "", "3 3", "١"] {
            let (p, _) = decode("o:a,o:b", "read", &format!("{bad},1"));
            assert_eq!(p, ["b:read"], "{bad:?}");
        }
        // Clerk's SDKs trim entries and accept leading zeros; so do we, deliberately.
        assert_eq!(decode("o:a", "read", " 01").0, ["a:read"]);
    }

    #[test]
    fn zero_masks_keep_alignment() {
        let (p, _) = decode(
            "o:repositories,o:impersonation,o:billing",
            "manage,read,update",
            "6,0,3",
        );
        assert_eq!(
            p,
            [
                "billing:manage",
                "billing:read",
                "repositories:read",
                "repositories:update"
            ]
        );
    }

    #[test]
    fn more_or_fewer_masks_than_features() {
        assert_eq!(decode("o:a,o:b", "read", "1").0, ["a:read"]);
        assert_eq!(decode("o:a", "read", "1,1,1").0, ["a:read"]);
    }

    #[test]
    fn alignment_ambiguity_is_intersected_and_reported() {
        let fea = "o:reservations,u:dashboard,uo:support-chat,o:impersonation";
        let js = listed(decode_v2(
            Some(fea),
            Some("read,manage"),
            Some("2,3"),
            FpmAlignment::OrgFeatures,
        ))
        .0;
        assert_eq!(
            js,
            [
                "reservations:manage",
                "support-chat:manage",
                "support-chat:read"
            ]
        );
        let docs = listed(decode_v2(
            Some(fea),
            Some("read,manage"),
            Some("2,3"),
            FpmAlignment::AllFeatures,
        ))
        .0;
        assert_eq!(docs, ["reservations:manage"]);
        let (both, ambiguous) = decode(fea, "read,manage", "2,3");
        assert_eq!(both, ["reservations:manage"]);
        assert!(ambiguous);
    }

    #[test]
    fn missing_and_malformed() {
        assert_eq!(
            decode_v2(Some("o:a"), None, Some("1"), FpmAlignment::Intersect).permissions,
            Permissions::Missing
        );
        assert_eq!(
            decode_v2(Some("o:a"), Some("read"), None, FpmAlignment::Intersect).permissions,
            Permissions::Missing
        );
        assert_eq!(
            decode_v2(None, Some("read"), Some("1"), FpmAlignment::Intersect).permissions,
            Permissions::Malformed
        );
        assert_eq!(
            decode_v2(
                Some("o:a,broken"),
                Some("read"),
                Some("1"),
                FpmAlignment::Intersect
            )
            .permissions,
            Permissions::Malformed
        );
    }

    #[test]
    fn nothing_from_ambiguity_or_bad_masks_is_malformed_not_empty() {
        let get = |fea, fpm| {
            decode_v2(Some(fea), Some("read"), Some(fpm), FpmAlignment::Intersect).permissions
        };
        assert_eq!(get("u:x,o:a", "0,1"), Permissions::Malformed);
        assert_eq!(get("o:a", "-1"), Permissions::Malformed);
        assert_eq!(
            get("o:a", "0"),
            Permissions::Listed(vec![]),
            "an explicit zero mask is empty"
        );
        assert_eq!(
            get("o:a,o:b", "x,1"),
            Permissions::Listed(vec!["b:read".into()])
        );
    }

    #[test]
    fn user_features_grant_nothing() {
        assert!(decode("u:a", "read", "1").0.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_intersection_is_within_both_readings(
            fea in "[a-z:,ou ]{0,40}",
            per in "[a-z, ]{0,30}",
            fpm in "[0-9, x.-]{0,60}",
        ) {
            let get = |a| decode_v2(Some(&fea), Some(&per), Some(&fpm), a).permissions;
            let both = get(FpmAlignment::Intersect);
            if let (Permissions::Listed(i), Permissions::Listed(js), Permissions::Listed(docs)) =
                (both, get(FpmAlignment::OrgFeatures), get(FpmAlignment::AllFeatures))
            {
                proptest::prop_assert!(i.iter().all(|p| js.contains(p) && docs.contains(p)));
            }
        }
    }
}
