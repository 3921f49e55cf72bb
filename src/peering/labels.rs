//! Labels (AIP-128): platform tags on a peering (tenant, owner reference), checked with the
//! rules Google's APIs use for resource labels, kept to ASCII:
//! - at most [`MAX_LABELS`] labels;
//! - a key is 1 to 63 characters of lowercase letters, digits, `_` and `-`, starting with a
//!   lowercase letter;
//! - a value is 0 to 63 characters of lowercase letters, digits, `_` and `-`.
//!
//! Every violation names `peering.labels[<key>]` (the key shown escaped and cut short when
//! it is not a valid key itself, so a refusal never echoes a megabyte or a control character).

use std::collections::HashMap;

use super::Violation;

/// Most labels on one peering.
pub const MAX_LABELS: usize = 64;
/// Longest key and longest value, in characters.
pub const MAX_LABEL_LEN: usize = 63;

fn allowed(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
}

/// The key as a refusal names it: as is when it has only allowed characters and is short,
/// else escaped and cut.
fn shown(key: &str) -> String {
    if key.len() <= MAX_LABEL_LEN && key.chars().all(allowed) {
        return key.to_owned();
    }
    let escaped: String = key.escape_debug().take(MAX_LABEL_LEN).collect();
    if escaped.len() < key.escape_debug().count() {
        format!("{escaped}...")
    } else {
        escaped
    }
}

/// Every violation of `labels`, naming `{field}[<key>]` (or `field` for the count), in
/// key order.
pub fn check_labels(field: &str, labels: &HashMap<String, String>) -> Vec<Violation> {
    let mut v = Vec::new();
    if labels.len() > MAX_LABELS {
        v.push(Violation::new(
            field,
            format!(
                "has {} labels; at most {MAX_LABELS} are allowed",
                labels.len()
            ),
        ));
        return v;
    }
    let mut keys: Vec<&String> = labels.keys().collect();
    keys.sort();
    for key in keys {
        let value = &labels[key];
        let name = format!("{field}[{}]", shown(key));
        if key.is_empty() {
            v.push(Violation::new(name, "a label key must not be empty"));
        } else if key.chars().count() > MAX_LABEL_LEN {
            v.push(Violation::new(
                name,
                format!("the key is longer than {MAX_LABEL_LEN} characters"),
            ));
        } else if !key.starts_with(|c: char| c.is_ascii_lowercase()) || !key.chars().all(allowed) {
            v.push(Violation::new(
                name,
                "a label key starts with a lowercase letter and has only lowercase letters, \
                 digits, '_' and '-'",
            ));
        } else if value.chars().count() > MAX_LABEL_LEN {
            v.push(Violation::new(
                name,
                format!("the value is longer than {MAX_LABEL_LEN} characters"),
            ));
        } else if !value.chars().all(allowed) {
            v.push(Violation::new(
                name,
                "a label value has only lowercase letters, digits, '_' and '-'",
            ));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn fields(pairs: &[(&str, &str)]) -> Vec<String> {
        check_labels("peering.labels", &labels(pairs))
            .into_iter()
            .map(|v| v.field)
            .collect()
    }

    #[test]
    fn good_labels_pass() {
        assert!(fields(&[("tenant", "team-a"), ("owner_ref", ""), ("a1", "x_1-2")]).is_empty());
        let longest = "a".repeat(63);
        assert!(fields(&[(&longest, &longest)]).is_empty());
    }

    #[test]
    fn each_bad_key_or_value_is_named() {
        let long = "a".repeat(64);
        assert_eq!(
            fields(&[
                ("Tenant", "a"),
                ("1abc", "a"),
                ("", "a"),
                ("ok", "Upper"),
                ("ok2", &long),
                (&long, "a"),
                ("fine", "fine"),
                ("sp ace", "a"),
            ]),
            vec![
                "peering.labels[]",
                "peering.labels[1abc]",
                "peering.labels[Tenant]",
                format!("peering.labels[{}...]", &long[..63]).as_str(),
                "peering.labels[ok]",
                "peering.labels[ok2]",
                "peering.labels[sp ace]",
            ]
        );
    }

    #[test]
    fn odd_keys_are_escaped_and_cut_in_the_field_name() {
        let f = fields(&[("a\u{0}b", "x")]);
        assert_eq!(f, vec!["peering.labels[a\\0b]"]);
        let huge = "x".repeat(10_000);
        let f = fields(&[(&huge, "x")]);
        assert!(f[0].len() < 100, "{}", f[0]);
    }

    #[test]
    fn too_many_labels_is_one_violation() {
        let many: HashMap<String, String> =
            (0..65).map(|i| (format!("k{i}"), String::new())).collect();
        let v = check_labels("peering.labels", &many);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].field, "peering.labels");
    }
}
