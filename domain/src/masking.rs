//! Masking of personal data for readers who may not see it in clear (tokens without
//! `ocart_view_personal_data`). One rule per kind of value; every rule works on characters,
//! never bytes, so a value with multi-byte characters is masked without splitting one.

/// The kind of personal value being masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersonalKind {
    /// `ann@example.com` → `a***@example.com`: the first character of the part before the
    /// last `@`, then the domain.
    Email,
    /// `+14155550123` → `+1******0123`: the `+` and first digit (the start of the country
    /// code), each other character but the last four as `*`. Values of fewer than seven
    /// characters are masked whole.
    Phone,
    /// `Ann Example` → `A***`: the first character only.
    Name,
}

/// `value` masked by the rule of `kind`. An empty value stays empty.
pub fn mask(kind: PersonalKind, value: &str) -> String {
    let first = |s: &str| s.chars().next().map(String::from).unwrap_or_default();
    match kind {
        PersonalKind::Email => match value.rsplit_once('@') {
            Some((local, domain)) if !local.is_empty() => {
                format!("{}***@{domain}", first(local))
            }
            Some((_, domain)) => format!("***@{domain}"),
            None if value.is_empty() => String::new(),
            None => format!("{}***", first(value)),
        },
        PersonalKind::Phone => {
            let chars: Vec<char> = value.chars().collect();
            let n = chars.len();
            if n < 7 {
                return "*".repeat(n);
            }
            chars
                .iter()
                .enumerate()
                .map(|(i, c)| if i < 2 || i >= n - 4 { *c } else { '*' })
                .collect()
        }
        PersonalKind::Name if value.is_empty() => String::new(),
        PersonalKind::Name => format!("{}***", first(value.trim_start())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_rules() {
        use PersonalKind::*;
        let rows: &[(&str, PersonalKind, &str, &str)] = &[
            (
                "an email keeps the first character and the domain",
                Email,
                "ann@example.com",
                "a***@example.com",
            ),
            (
                "a one-character local part shows only that character",
                Email,
                "a@example.com",
                "a***@example.com",
            ),
            (
                "an email splits at the last @",
                Email,
                "\"a@b\"@example.com",
                "\"***@example.com",
            ),
            (
                "a multi-byte first character is kept whole",
                Email,
                "élodie@exemple.fr",
                "é***@exemple.fr",
            ),
            (
                "a value without @ shows only its first character",
                Email,
                "not-an-email",
                "n***",
            ),
            (
                "an empty local part shows only the domain",
                Email,
                "@example.com",
                "***@example.com",
            ),
            ("an empty email stays empty", Email, "", ""),
            (
                "a phone keeps + and the first digit, and the last four",
                Phone,
                "+14155550123",
                "+1******0123",
            ),
            (
                "a long phone masks every middle digit",
                Phone,
                "+447911123456",
                "+4*******3456",
            ),
            ("a short phone is masked whole", Phone, "+12345", "******"),
            (
                "a phone with multi-byte characters is masked by character",
                Phone,
                "+١٢٣٤٥٦٧٨٩",
                "+١****٦٧٨٩",
            ),
            (
                "a name keeps its first character",
                Name,
                "Ann Example",
                "A***",
            ),
            (
                "a multi-byte name keeps its first character",
                Name,
                "Ørjan Ås",
                "Ø***",
            ),
            ("an empty name stays empty", Name, "", ""),
        ];
        for (rule, kind, value, masked) in rows {
            assert_eq!(mask(*kind, value), *masked, "{rule}");
        }
    }
}
