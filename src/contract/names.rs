//! How names are compared: the one rule for every tag and channel in the
//! contract (`excluded_tags`, `excluded_channels`, `tags_any`, `channels_any`)
//! and in the provider settings (`ai_tags`, `ai_channels`), and the rule for
//! resolver ids (`ai_agent_ids`). Helpdesks disagree on case (`Phone`, `phone`),
//! tags are free text, and contracts are written by hand: a name matches when
//! it is the same word, whatever its case and the whitespace around it.

use serde::{Deserialize, Serialize};

/// How a contract compares tag and channel names. Part of the contract's terms,
/// and so of its hash: a resolution first decided under one rule keeps it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NameMatching {
    /// Byte for byte, as releases before name folding did. Stored contracts
    /// without `name_matching` were applied this way (see
    /// [`super::ContractTerms::from_stored`]).
    Exact,
    /// Ignoring case and surrounding whitespace ([`same`]).
    #[default]
    Folded,
}

impl NameMatching {
    /// Whether `a` and `b` name the same tag or channel under this rule.
    pub fn same(self, a: &str, b: &str) -> bool {
        match self {
            NameMatching::Exact => a == b,
            NameMatching::Folded => same(a, b),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NameMatching::Exact => "exact",
            NameMatching::Folded => "folded",
        }
    }
}

/// Whether two tag or channel names are the same: equal once surrounding
/// whitespace is trimmed and case is folded (Unicode lower case, plus the few
/// letters whose lower case is not their case fold: `ß`/`ẞ` = `ss`, final `ς` =
/// `σ`, long `ſ` = `s`). Allocates nothing.
pub fn same(a: &str, b: &str) -> bool {
    folded_chars(a).eq(folded_chars(b))
}

/// The form [`same`] compares: `fold(a) == fold(b)` exactly when `same(a, b)`.
pub fn fold(name: &str) -> String {
    folded_chars(name).collect()
}

fn folded_chars(name: &str) -> impl Iterator<Item = char> + '_ {
    name.trim().chars().flat_map(fold_char)
}

fn fold_char(c: char) -> impl Iterator<Item = char> {
    let special = match c {
        'ß' | 'ẞ' => Some("ss"),
        'ς' => Some("σ"),
        'ſ' => Some("s"),
        _ => None,
    };
    let lower = special.is_none().then(|| c.to_lowercase());
    special
        .into_iter()
        .flat_map(str::chars)
        .chain(lower.into_iter().flatten())
}

/// Whether two resolver ids (`ai_agent_ids` against the helpdesk's user, admin,
/// teammate or rule id) are the same. Ids are opaque and some helpdesks' ids
/// differ only by case, so case counts; whitespace around either is ignored (a
/// value pasted with a space or newline). E-mail addresses (Freshdesk identifies
/// agents by e-mail) ignore ASCII case, as mail systems do.
pub fn same_id(configured: &str, seen: &str) -> bool {
    let (a, b) = (configured.trim(), seen.trim());
    if a.contains('@') || b.contains('@') {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// The number of single-character insertions, deletions, substitutions and
/// swaps of two neighbours that turn `a` into `b` (optimal string alignment
/// distance), counted in characters.
pub fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // Three rows of the table: i - 2, i - 1 and i.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut row = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        row[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            row[j] = (prev[j] + 1).min(row[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                row[j] = row[j].min(before[j - 2] + 1);
            }
        }
        std::mem::swap(&mut before, &mut prev);
        std::mem::swap(&mut prev, &mut row);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_surrounding_whitespace_do_not_count() {
        for (a, b) in [
            ("Phone", "phone"),
            ("Phone", "PHONE"),
            ("Spam", "spam "),
            (" spam\t", "SPAM"),
            ("Ärger", "ärger"),
            ("STRASSE", "straße"),
            ("ΣΟΦΟΣ", "σοφος"),
        ] {
            assert!(same(a, b), "{a:?} = {b:?}");
            assert_eq!(fold(a), fold(b), "{a:?} = {b:?}");
        }
    }

    #[test]
    fn different_words_stay_different() {
        for (a, b) in [
            ("spam", "spam_filter"),
            ("spam-filter", "spam_filter"),
            ("web form", "webform"),
            ("phone", ""),
        ] {
            assert!(!same(a, b), "{a:?} != {b:?}");
        }
    }

    #[test]
    fn exact_matching_is_byte_for_byte() {
        assert!(NameMatching::Exact.same("spam", "spam"));
        assert!(!NameMatching::Exact.same("Spam", "spam"));
        assert!(!NameMatching::Exact.same("spam ", "spam"));
        assert!(NameMatching::Folded.same("Spam", "spam "));
    }

    #[test]
    fn ids_keep_case_but_not_padding_and_emails_ignore_case() {
        assert!(same_id(" 8447388090494\n", "8447388090494"));
        assert!(!same_id("tea_6R55A", "tea_6r55a"));
        assert!(same_id("Bot@Acme.example", "bot@acme.example"));
        assert!(!same_id("bot@acme.example", "bot2@acme.example"));
    }

    #[test]
    fn edit_distance() {
        assert_eq!(distance("spam-filter", "spam_filter"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("phone", "phone"), 0);
        assert_eq!(distance("emial", "email"), 1, "a swap is one edit");
        assert_eq!(distance("abc", ""), 3);
    }
}
