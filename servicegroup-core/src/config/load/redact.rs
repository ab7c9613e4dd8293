//! Keeping database passwords out of error messages.
//!
//! Two layers: [`redact_text`] masks anything shaped like `scheme://user:PASSWORD@host`
//! or `password=PASSWORD` anywhere in a message, and [`Secrets`] remembers the
//! passwords of every URL the sources hold and masks them verbatim, for URLs too
//! odd for the first rule (a `/` or `@` in an unencoded password).

use figment::value::{Dict, Value};

const MASK: &str = "***";

/// Passwords seen in the configuration sources, masked in every error message.
#[derive(Debug, Default)]
pub(super) struct Secrets {
    passwords: Vec<String>,
}

impl Secrets {
    /// Remembers the passwords of every URL-like string value in `dict`.
    pub(super) fn collect(&mut self, dict: &Dict) {
        for value in dict.values() {
            self.collect_value(value);
        }
    }

    fn collect_value(&mut self, value: &Value) {
        match value {
            Value::String(_, s) => {
                for password in passwords_in(s) {
                    // Masking one or two characters everywhere would garble the message
                    // without hiding anything the structural rule does not already hide.
                    if password.chars().count() >= 3 && !self.passwords.contains(&password) {
                        self.passwords.push(password);
                    }
                }
            }
            Value::Dict(_, d) => self.collect(d),
            Value::Array(_, items) => items.iter().for_each(|v| self.collect_value(v)),
            _ => {}
        }
    }

    /// The message with every known password and every URL password masked.
    pub(super) fn scrub(&self, message: &str) -> String {
        let mut out = message.to_owned();
        // Longest first, so a password containing another is masked whole.
        let mut passwords: Vec<&String> = self.passwords.iter().collect();
        passwords.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for password in passwords {
            out = out.replace(password.as_str(), MASK);
        }
        redact_text(&out)
    }
}

/// Candidate passwords in a URL-like string: the userinfo password by the usual
/// rule and by the most generous one (up to the last `@`), and `password=` values.
fn passwords_in(s: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(scheme_end) = s.find("://") {
        let rest = &s[scheme_end + 3..];
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        for userinfo_end in [rest[..authority_end].rfind('@'), rest.rfind('@')]
            .into_iter()
            .flatten()
        {
            if let Some(colon) = rest[..userinfo_end].find(':') {
                found.push(rest[colon + 1..userinfo_end].to_owned());
            }
        }
    }
    let lower = s.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("password=") {
        let start = from + i + "password=".len();
        let end = s[start..].find(['&', '#']).map_or(s.len(), |e| start + e);
        found.push(s[start..end].to_owned());
        from = start;
    }
    found
}

/// Masks `scheme://user:PASSWORD@host` and `password=PASSWORD` anywhere in `text`.
pub(super) fn redact_text(text: &str) -> String {
    let stops = |c: char| matches!(c, '/' | '?' | '#' | '"' | '\'' | '`') || c.is_whitespace();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail.find(stops).unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority
            .rfind('@')
            .and_then(|at| authority[..at].find(':').map(|colon| (colon, at)))
        {
            Some((colon, at)) => {
                out.push_str(&authority[..=colon]);
                out.push_str(MASK);
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);

    let lower = out.to_ascii_lowercase();
    let mut masked = String::with_capacity(out.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(i) = lower[from..].find("password=") {
        let start = from + i + "password=".len();
        let end = out[start..]
            .find(|c: char| matches!(c, '&' | '#' | '"' | '\'' | '`') || c.is_whitespace())
            .map_or(out.len(), |e| start + e);
        masked.push_str(&out[copied..start]);
        masked.push_str(MASK);
        copied = end;
        from = end;
    }
    masked.push_str(&out[copied..]);
    masked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_text_are_masked() {
        assert_eq!(
            redact_text("found string \"postgres://nova:s3cret@db:5432/nova\", expected u32"),
            "found string \"postgres://nova:***@db:5432/nova\", expected u32"
        );
        assert_eq!(
            redact_text("mysql://u@h/x?charset=utf8&password=hunter2 and more"),
            "mysql://u@h/x?charset=utf8&password=*** and more"
        );
        assert_eq!(redact_text("no url here"), "no url here");
        assert_eq!(
            redact_text("sqlite:///C:\\x\\y.db"),
            "sqlite:///C:\\x\\y.db"
        );
    }

    #[test]
    fn known_passwords_are_masked_verbatim() {
        let mut dict = Dict::new();
        dict.insert(
            "url".into(),
            Value::from("postgres://nova:pa/ss@word@db/nova"),
        );
        let mut secrets = Secrets::default();
        secrets.collect(&dict);
        let shown = secrets.scrub("bad: pa/ss@word.");
        assert_eq!(shown, "bad: ***.");
    }
}
