//! Which phone numbers this server sends SMS to (every message is paid by the operator): the
//! country prefixes the operator allows (none until listed), never premium-rate or satellite
//! ranges, built in and the operator's own. Pure.

/// Ranges that cost far more than a message, blocked whatever is allowed: premium and
/// audiotext services (NANP 900 and 976, UK 09 and 087, France 089, Germany 0900 and 0137,
/// Australia 190), the international premium rate service (+979) and satellite and
/// international networks (+8816, +8817, +881, +882, +883).
pub const PREMIUM: &[&str] = &[
    "+1900", "+1976", "+449", "+4487", "+3389", "+49900", "+49137", "+61190", "+979", "+881",
    "+882", "+883",
];

/// What is wrong with a list of prefixes (`+` and 1-15 digits each), for the config check.
pub fn problems(field: &str, prefixes: &[String]) -> Option<String> {
    let bad: Vec<&String> = prefixes
        .iter()
        .filter(|p| {
            let digits = p.strip_prefix('+').unwrap_or("");
            !(1..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit())
        })
        .collect();
    (!bad.is_empty())
        .then(|| format!("api.{field}: {bad:?} are not number prefixes like \"+1\" or \"+4479\""))
}

/// Whether SMS may go to `number` (E.164, validated), with a reason for a refusal that tells
/// the user what to do.
pub fn allowed(number: &str, allowed: &[String], blocked: &[String]) -> Result<(), String> {
    let starts = |p: &str| number.starts_with(p);
    if let Some(p) = PREMIUM
        .iter()
        .copied()
        .chain(blocked.iter().map(String::as_str))
        .find(|p| starts(p))
    {
        return Err(format!(
            "{number} is in a range this server does not text ({p}…: premium-rate or otherwise blocked)"
        ));
    }
    if allowed.is_empty() {
        return Err(
            "this server sends SMS to no country yet: its operator lists the allowed prefixes in api.sms_allowed_prefixes".into(),
        );
    }
    if !allowed.iter().any(|p| starts(p)) {
        return Err(format!(
            "this server sends SMS only to numbers starting {}",
            allowed.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_countries_and_never_premium_ranges() {
        let us = vec!["+1".to_owned()];
        assert!(allowed("+15551234567", &us, &[]).is_ok());
        let e = allowed("+447700900123", &us, &[]).unwrap_err();
        assert!(e.contains("only to numbers starting +1"), "{e}");
        let e = allowed("+19005550123", &us, &[]).unwrap_err();
        assert!(e.contains("+1900"), "{e}");
        let own = vec!["+1555".to_owned()];
        assert!(
            allowed("+15551234567", &us, &own).is_err(),
            "the operator's own block"
        );
        let e = allowed("+15551234567", &[], &[]).unwrap_err();
        assert!(e.contains("api.sms_allowed_prefixes"), "{e}");
        assert!(
            allowed("+881612345678", &["+8".into()], &[]).is_err(),
            "satellite"
        );
    }

    #[test]
    fn prefixes_are_checked_in_the_config() {
        assert_eq!(
            problems("sms_allowed_prefixes", &["+1".into(), "+44".into()]),
            None
        );
        let p = problems(
            "sms_allowed_prefixes",
            &["1".into(), "+".into(), "+4x".into()],
        );
        assert!(p.unwrap().contains("\"1\", \"+\", \"+4x\""));
    }
}
