//! Text normalisation shared by the analyses: the same words in another
//! case, order of whitespace or punctuation compare equal; "critical tokens"
//! (numbers, ports, versions, flags, hostnames, environment names) are kept
//! apart so that entries differing in one of them are never called equal.

use std::collections::BTreeSet;

/// Words that carry no meaning for comparison.
const STOPWORDS: &[&str] = &[
    "a", "an", "the", "and", "or", "of", "to", "in", "on", "for", "is", "are", "be", "it", "its",
    "this", "that", "with", "as", "at", "by", "we", "our", "you", "your", "should", "always",
    "please", "use", "uses", "using", "do", "does", "when", "from", "into", "than", "then", "so",
    "must", "will", "can", "not",
];

/// Environment and stage words that make two otherwise equal facts different.
const ENVIRONMENTS: &[&str] = &[
    "prod",
    "production",
    "staging",
    "stage",
    "dev",
    "development",
    "test",
    "testing",
    "qa",
    "local",
    "canary",
    "preview",
    "sandbox",
    "eu",
    "us",
    "asia",
];

/// Lower-cases, strips Markdown emphasis/code marks and punctuation (except
/// inside tokens such as `8080`, `v1.2`, `--flag`, `db.example.com`), and
/// folds whitespace to single spaces.
pub fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for tok in raw_tokens(text) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&tok);
    }
    out
}

/// True for a character that separates tokens (whitespace, list and
/// bracket punctuation, quotes, Markdown emphasis). `.`, `:`, `=`, `-`, `/`
/// are not separators: they hold hosts, versions, flags and key=value
/// together.
pub(crate) fn is_token_separator(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            ',' | ';'
                | '('
                | ')'
                | '['
                | ']'
                | '{'
                | '}'
                | '"'
                | '`'
                | '*'
                | '|'
                | '<'
                | '>'
                | '!'
                | '?'
        )
}

/// Trims a separator-free segment to its token: punctuation at the ends
/// goes, punctuation inside stays (v1.2, a.b.com, --flag, x=y). Returns the
/// byte offset of the token in `seg` and the token (not lower-cased), or
/// `None` when nothing alphanumeric is left.
pub(crate) fn trim_token(seg: &str) -> Option<(usize, &str)> {
    const ENDS: [char; 6] = ['.', ':', '\'', '_', '~', '#'];
    let front = seg.trim_start_matches(ENDS);
    let t = front.trim_end_matches(ENDS).trim_end_matches('-');
    if t.is_empty() || !t.chars().any(char::is_alphanumeric) {
        None
    } else {
        Some((seg.len() - front.len(), t))
    }
}

/// The tokens of a text after normalisation, in order.
pub fn raw_tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(is_token_separator)
        .filter_map(|t| trim_token(t).map(|(_, t)| t.to_lowercase()))
}

/// True for a word [`words`] leaves out.
pub fn is_stopword(word: &str) -> bool {
    STOPWORDS.contains(&word)
}

/// Content words: normalised tokens without stopwords.
pub fn words(text: &str) -> Vec<String> {
    raw_tokens(text)
        .filter(|t| !STOPWORDS.contains(&t.as_str()))
        .collect()
}

/// True when a token pins a fact down: it contains a digit (numbers, ports,
/// versions, sizes, durations), is a flag (`-x`, `--flag`), has an inner `.`,
/// `/`, `:` or `=` (hostnames, paths, key=value, image:tag), or names an
/// environment.
pub fn is_critical(token: &str) -> bool {
    token.chars().any(|c| c.is_ascii_digit())
        || token.starts_with('-')
        || token.contains(['.', '/', ':', '='])
        || ENVIRONMENTS.contains(&token)
}

/// The set of critical tokens of a text.
pub fn critical_tokens(text: &str) -> BTreeSet<String> {
    raw_tokens(text).filter(|t| is_critical(t)).collect()
}

/// Word shingles of length `k` over the content words (a single shingle of
/// all words when there are fewer than `k`).
pub fn shingles(text: &str, k: usize) -> BTreeSet<String> {
    let w = words(text);
    let k = k.max(1);
    if w.len() <= k {
        return std::iter::once(w.join(" "))
            .filter(|s| !s.is_empty())
            .collect();
    }
    w.windows(k).map(|s| s.join(" ")).collect()
}

/// Jaccard similarity of two sets (1.0 for two empty sets).
pub fn jaccard<T: Ord>(a: &BTreeSet<T>, b: &BTreeSet<T>) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let inter = a.intersection(b).count();
    let union = a.len() + b.len() - inter;
    inter as f64 / union as f64
}

/// Jaccard similarity of the content-word sets of two texts.
pub fn word_jaccard(a: &str, b: &str) -> f64 {
    let a: BTreeSet<String> = words(a).into_iter().collect();
    let b: BTreeSet<String> = words(b).into_iter().collect();
    jaccard(&a, &b)
}

/// Cuts a text to at most `max` characters on a char boundary, adding `…`.
pub fn clip(text: &str, max: usize) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut s: String = one_line.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_folds_case_and_punctuation() {
        assert_eq!(
            normalise("  Use **UTC** for  timestamps. "),
            "use utc for timestamps"
        );
        assert_eq!(normalise("Port is 8080."), "port is 8080");
        assert_eq!(
            normalise("Pass `--dry-run` to kubectl!"),
            "pass --dry-run to kubectl"
        );
    }

    #[test]
    fn critical_tokens_keep_numbers_flags_hosts_envs() {
        let c = critical_tokens("Deploy to prod on db.example.com port 5432 with --force");
        let v: Vec<_> = c.into_iter().collect();
        assert_eq!(v, vec!["--force", "5432", "db.example.com", "prod"]);
        assert!(critical_tokens("The API listens on 8080").contains("8080"));
        assert!(!critical_tokens("Use UTC everywhere").contains("utc"));
    }

    #[test]
    fn jaccard_of_shingles() {
        let a = shingles("always run the migrations before deploying the api", 2);
        let b = shingles("Always run the migrations before deploying the API.", 2);
        assert_eq!(jaccard(&a, &b), 1.0);
        let c = shingles("never deploy on fridays", 2);
        assert!(jaccard(&a, &c) < 0.1);
    }

    #[test]
    fn clip_is_char_safe() {
        assert_eq!(clip("héllo wörld", 5), "héll…");
        assert_eq!(clip("a\n b", 10), "a b");
    }
}
